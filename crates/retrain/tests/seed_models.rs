//! The seed tutorial's steps, with the exact numbers Keras 3 prints for them.

use retrain::layers::{
    Batch, BatchNorm, Context, Dense, Flatten, GlobalAveragePooling2d, Layer, LayerRef, Preprocess,
    PreprocessMode,
};
use retrain::model::{summary, Sequential, SummaryOptions};
use retrain::zoo::{vgg, Pooling, ZooOptions};
use retrain::{default_device, Shape, Tensor};
use std::sync::Arc;

fn counts(model: &dyn Layer) -> (usize, usize, usize) {
    let total = model.param_count();
    let trainable: usize = model.trainable_variables().iter().map(|v| v.numel()).sum();
    (total, trainable, total - trainable)
}

fn no_top() -> ZooOptions {
    ZooOptions {
        include_top: false,
        ..ZooOptions::default()
    }
}

#[test]
fn vgg16_with_top_has_keras_parameter_count() {
    let model = vgg::vgg16(&ZooOptions::default()).unwrap();
    assert_eq!(counts(&model), (138_357_544, 138_357_544, 0));
    let text = summary(&model, SummaryOptions::default());
    assert!(
        text.contains(" Total params: 138,357,544 (527.79 MB)"),
        "{text}"
    );
    assert!(text.contains("│ fc1 (Dense)"));
    assert!(text.contains("(None, 7, 7, 512)"));
    assert!(text.contains("(None, 25088)"));
    assert_eq!(
        vgg::vgg19(&ZooOptions::default()).unwrap().param_count(),
        143_667_240
    );
}

#[test]
fn frozen_vgg16_layers_minus_predictions_plus_dense5() {
    let vgg = vgg::vgg16(&ZooOptions::default()).unwrap();
    let mut model = Sequential::from_layers(None, vgg.layers()).unwrap();
    let popped = model.pop().unwrap();
    assert_eq!(popped.name(), "predictions");
    for layer in model.layers() {
        layer.set_trainable(false);
    }
    model.add(Arc::new(Dense::new(5))).unwrap();
    assert_eq!(counts(&model), (134_281_029, 20_485, 134_260_544));
    // Weights are shared, not copied: freezing through the new model froze the original's layers.
    assert!(!vgg.get_layer("fc1").unwrap().trainable());
    let text = summary(
        &model,
        SummaryOptions {
            show_trainable: true,
            ..SummaryOptions::default()
        },
    );
    assert!(
        text.contains("Trainable params: 20,485 (80.02 KB)"),
        "{text}"
    );
    assert!(text.contains("Non-trainable params: 134,260,544"), "{text}");
    let dense_row = text.lines().rev().find(|l| l.contains("(Dense)")).unwrap();
    assert!(
        dense_row.contains("(None, 5)") && dense_row.contains(" Y "),
        "{dense_row}"
    );
}

#[test]
fn vgg16_without_top_accepts_any_size() {
    let base = vgg::vgg16(&no_top()).unwrap();
    assert_eq!(counts(&base), (14_714_688, 14_714_688, 0));
    let text = summary(&base, SummaryOptions::default());
    assert!(text.contains("(None, None, None, 512)"), "{text}");
}

#[test]
fn preprocess_frozen_base_gap_dense5_is_one_functional_row() {
    let base = vgg::vgg16(&no_top()).unwrap();
    base.set_trainable(false);
    let mut model = Sequential::new(None).with_input(Shape::image(Some(224), Some(224), 3));
    let layers: Vec<LayerRef> = vec![
        Arc::new(Preprocess::new(None, PreprocessMode::Caffe)),
        Arc::new(base),
        Arc::new(GlobalAveragePooling2d::new(None)),
        Arc::new(Dense::new(5)),
    ];
    for layer in layers {
        model.add(layer).unwrap();
    }
    assert_eq!(counts(&model), (14_717_253, 2_565, 14_714_688));
    let text = summary(
        &model,
        SummaryOptions {
            show_trainable: true,
            ..SummaryOptions::default()
        },
    );
    let row = text
        .lines()
        .find(|l| l.contains("vgg16 (Functional)"))
        .unwrap();
    assert!(row.contains("(None, 7, 7, 512)") && row.contains("14,714,688") && row.contains(" N "));
    let expanded = summary(
        &model,
        SummaryOptions {
            show_trainable: true,
            expand_nested: true,
        },
    );
    assert!(expanded.contains("└ block5_conv3 (Conv2D)"), "{expanded}");
}

#[test]
fn the_same_base_and_head_run_on_two_image_sizes() {
    let device = default_device();
    let base = vgg::vgg16(&ZooOptions {
        include_top: false,
        pooling: Pooling::Avg,
        ..ZooOptions::default()
    })
    .unwrap();
    base.set_trainable(false);
    let mut model = Sequential::new(None);
    model.add(Arc::new(base)).unwrap();
    model.add(Arc::new(Dense::new(5))).unwrap();
    for size in [64, 96] {
        let x = Tensor::<4>::ones([1, 3, size, size], &device);
        let out = model.predict(x).unwrap();
        assert_eq!(out.dims(), vec![1, 5]);
    }
    let too_small = model.predict(Tensor::<4>::ones([1, 3, 16, 16], &device));
    let err = too_small.unwrap_err().to_string();
    assert!(
        err.contains("block5_pool") && err.contains("smaller"),
        "{err}"
    );
}

#[test]
fn flatten_after_unknown_size_is_a_build_error() {
    let base = vgg::vgg16(&no_top()).unwrap();
    let mut model = Sequential::new(None);
    model.add(Arc::new(base)).unwrap();
    let err = model
        .add(Arc::new(Flatten::new(None)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown height or width"), "{err}");
    assert_eq!(
        model.layers().len(),
        1,
        "a failed add leaves the model unchanged"
    );
}

#[test]
fn dense_is_lazy_until_its_first_input() {
    let device = default_device();
    let dense = Dense::new(5);
    assert!(dense.variables().is_empty());
    let x = Tensor::<2>::ones([3, 2], &device);
    let out = dense
        .forward(Batch::Vectors(x.clone()), &mut Context::inference(&device))
        .map(|_| ());
    assert!(
        out.is_err(),
        "forward on an unbuilt layer is an error, not a panic"
    );
    let y = dense
        .call(Batch::Vectors(x), &mut Context::inference(&device))
        .unwrap();
    assert_eq!(y.dims(), vec![3, 5], "calling the layer builds it");
    let vars = dense.variables();
    let described: Vec<(String, Vec<usize>)> = vars
        .iter()
        .map(|v| {
            (
                v.path().rsplit('/').next().unwrap().to_string(),
                v.shape().to_vec(),
            )
        })
        .collect();
    assert_eq!(
        described,
        vec![
            ("kernel".to_string(), vec![2, 5]),
            ("bias".to_string(), vec![5])
        ]
    );
    assert_eq!(dense.trainable_variables().len(), 2);
    let err = dense.build(Shape::Vector(3)).unwrap_err().to_string();
    assert!(err.contains("built for 2"), "{err}");
}

#[test]
fn batch_norm_weight_lists_follow_keras() {
    let bn = BatchNorm::new(None);
    bn.build(Shape::Vector(4)).unwrap();
    let names = |vars: Vec<retrain::variable::Variable>| -> Vec<String> {
        vars.iter()
            .map(|v| v.path().rsplit('/').next().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        names(bn.variables()),
        ["gamma", "beta", "moving_mean", "moving_variance"]
    );
    assert_eq!(names(bn.trainable_variables()), ["gamma", "beta"]);
    assert_eq!(
        names(bn.non_trainable_variables()),
        ["moving_mean", "moving_variance"]
    );
    assert_eq!(counts(&bn), (16, 8, 8));
    bn.set_trainable(false);
    assert!(bn.trainable_variables().is_empty());
    assert_eq!(names(bn.non_trainable_variables()).len(), 4);
    assert_eq!(counts(&bn), (16, 0, 16));
}

fn values(batch: Batch) -> Vec<f32> {
    let data = match batch {
        Batch::Maps(t) => t.into_data(),
        Batch::Vectors(t) => t.into_data(),
    };
    data.convert::<f32>().try_into_vec::<f32>().unwrap()
}

#[test]
fn frozen_batch_norm_uses_moving_statistics_even_while_training() {
    let device = default_device();
    let x = || {
        Batch::Vectors(Tensor::<2>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 2.0, 3.0, 4.0], [2, 2]),
            &device,
        ))
    };
    let bn = BatchNorm::new(None);
    bn.build(Shape::Vector(2)).unwrap();
    let moving_mean = bn.variables()[2].clone();

    // Trainable, training: batch statistics, moving mean moves by (1 - 0.99) * batch mean.
    let out = values(
        bn.forward(x(), &mut Context::training(&device, false))
            .unwrap(),
    );
    assert!(
        (out[0] + 1.0).abs() < 1e-2 && (out[2] - 1.0).abs() < 1e-2,
        "{out:?}"
    );
    let mm = moving_mean.to_vec(&device);
    assert!(
        (mm[0] - 0.02).abs() < 1e-6 && (mm[1] - 0.03).abs() < 1e-6,
        "{mm:?}"
    );

    // Frozen, training: inference mode, nothing updated.
    bn.set_trainable(false);
    let out = values(
        bn.forward(x(), &mut Context::training(&device, true))
            .unwrap(),
    );
    let expected: Vec<f32> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .enumerate()
        .map(|(i, v)| (v - mm[i % 2]) / (1.0f32 + 1e-3).sqrt())
        .collect();
    for (a, b) in out.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5, "{out:?} vs {expected:?}");
    }
    assert_eq!(moving_mean.to_vec(&device), mm);
}

#[test]
fn preprocess_modes_match_keras_preprocess_input() {
    let device = default_device();
    let pixel = || {
        Batch::Maps(Tensor::<4>::from_data(
            burn::tensor::TensorData::new(vec![10.0f32, 20.0, 30.0], [1, 3, 1, 1]),
            &device,
        ))
    };
    let run = |mode: PreprocessMode, x: Batch| {
        values(
            Preprocess::new(None, mode)
                .forward(x, &mut Context::inference(&device))
                .unwrap(),
        )
    };
    // Keras: vgg16.preprocess_input on RGB (10, 20, 30) -> BGR minus the caffe means.
    let caffe = run(PreprocessMode::Caffe, pixel());
    for (a, b) in caffe.iter().zip([-73.939f32, -96.779, -113.68]) {
        assert!((a - b).abs() < 1e-4, "{caffe:?}");
    }
    let tf_input = Batch::Maps(Tensor::<4>::from_data(
        burn::tensor::TensorData::new(vec![0.0f32, 127.5, 255.0], [1, 3, 1, 1]),
        &device,
    ));
    let tf = run(PreprocessMode::Tf, tf_input);
    for (a, b) in tf.iter().zip([-1.0f32, 0.0, 1.0]) {
        assert!((a - b).abs() < 1e-6, "{tf:?}");
    }
    let torch = run(PreprocessMode::Torch, pixel());
    let expected = [
        (10.0 / 255.0 - 0.485) / 0.229,
        (20.0 / 255.0 - 0.456) / 0.224,
        (30.0 / 255.0 - 0.406) / 0.225,
    ];
    for (a, b) in torch.iter().zip(expected) {
        assert!((a - b as f32).abs() < 1e-5, "{torch:?}");
    }
}

#[test]
fn named_intermediate_layers_as_outputs() {
    let device = default_device();
    let model = vgg::vgg16(&ZooOptions::default()).unwrap();
    let extractor = model
        .feature_extractor(&["block4_pool", "block5_pool"])
        .unwrap();
    let shapes: Vec<String> = extractor
        .output_shapes()
        .into_iter()
        .map(|s| s.unwrap().to_string())
        .collect();
    assert_eq!(shapes, ["(None, 14, 14, 512)", "(None, 7, 7, 512)"]);
    let x = Batch::Maps(Tensor::<4>::ones([1, 3, 64, 64], &device));
    let outs = extractor.run(x, &mut Context::inference(&device)).unwrap();
    assert_eq!(outs[0].dims(), vec![1, 512, 4, 4]);
    assert_eq!(outs[1].dims(), vec![1, 512, 2, 2]);
    let err = model
        .feature_extractor(&["block9_pool"])
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("block9_pool") && err.contains("block5_pool"),
        "{err}"
    );
}

//! EfficientNet-Lite0 with the real ImageNet weights against PyTorch reference tensors.

mod common;

use burn::tensor::TensorData;
use common::{fixture, lite0_weights, max_abs_diff};
use retrain::layers::{ActivationKind, Batch, Context, Precision};
use retrain::model::Sequential;
use retrain::train::features::{inference_layers, run_inference, run_layers};
use retrain::zoo::{self, ZooOptions};
use retrain::{default_device, Tensor};

fn to_vec(batch: Batch) -> (Vec<usize>, Vec<f32>) {
    let dims = batch.dims();
    let data = match batch {
        Batch::Maps(t) => t.into_data(),
        Batch::Vectors(t) => t.into_data(),
    };
    (dims, data.convert::<f32>().try_into_vec::<f32>().unwrap())
}

/// EfficientNet-Lite0 with the shared weights, ending in logits like the reference.
fn lite0_with_logits(device: &retrain::Device) -> Sequential {
    let entry = zoo::entry("efficientnet_lite0").unwrap();
    let options = ZooOptions {
        classifier_activation: ActivationKind::Linear,
        ..ZooOptions::default()
    };
    zoo::load_pretrained(entry, &options, &lite0_weights(), device).unwrap()
}

#[test]
fn lite0_matches_pytorch_on_feature_map_pooled_and_logits() {
    let device = default_device();
    let model = lite0_with_logits(&device);

    let (shape, input) = fixture("input");
    assert_eq!(shape, vec![4, 3, 224, 224]);
    let input = Tensor::<4>::from_data(TensorData::new(input, [4, 3, 224, 224]), &device);

    let (dims, logits) = to_vec(model.predict(input.clone()).unwrap());
    assert_eq!(dims, vec![4, 1000]);
    let (_, expected) = fixture("logits");
    let logits_diff = max_abs_diff(&logits, &expected);
    assert!(logits_diff <= 1e-3, "logits differ by {logits_diff}");

    // The same layers without the classifier (shared, not copied) give the feature map.
    let layers = model.layers();
    let base = Sequential::from_layers(Some("base"), &layers[..layers.len() - 3]).unwrap();
    let (dims, feature_map) = to_vec(base.predict(input).unwrap());
    assert_eq!(dims, vec![4, 1280, 7, 7]);
    let (_, expected) = fixture("feature_map");
    let map_diff = max_abs_diff(&feature_map, &expected);
    assert!(map_diff <= 1e-3, "feature map differs by {map_diff}");

    let pooled: Vec<f32> = feature_map
        .chunks(49)
        .map(|c| c.iter().sum::<f32>() / 49.0)
        .collect();
    let (_, expected) = fixture("pooled");
    let pooled_diff = max_abs_diff(&pooled, &expected);
    assert!(
        pooled_diff <= 1e-4,
        "pooled features differ by {pooled_diff}"
    );
    eprintln!(
        "max abs diff: logits {logits_diff:e}, feature map {map_diff:e}, pooled {pooled_diff:e}"
    );
}

#[test]
fn lite0_with_batch_norm_folded_still_matches_pytorch() {
    let device = default_device();
    let model = lite0_with_logits(&device);
    let layers = inference_layers(&model, &device).unwrap();
    let batch_norms = |ls: &[retrain::layers::LayerRef]| {
        ls.iter()
            .flat_map(|l| {
                let subs = l.sublayers();
                if subs.is_empty() {
                    vec![l.clone()]
                } else {
                    subs
                }
            })
            .filter(|l| l.class_name() == "BatchNormalization")
            .count()
    };
    assert_eq!(batch_norms(&layers), 0, "every BatchNorm is folded");
    assert_eq!(
        batch_norms(model.layers()),
        2 + 16 * 3 - 1,
        "the model itself is unchanged"
    );

    let (_, input) = fixture("input");
    let input = Tensor::<4>::from_data(TensorData::new(input, [4, 3, 224, 224]), &device);
    let out = run_layers(
        &layers,
        Batch::Maps(input),
        &mut Context::inference(&device),
    )
    .unwrap();
    let (_, logits) = to_vec(out);
    let (_, expected) = fixture("logits");
    let diff = max_abs_diff(&logits, &expected);
    eprintln!("folded: logits max abs diff {diff:e}");
    assert!(diff <= 1e-3, "folded logits differ by {diff}");
}

/// With the products in bf16 (weights and inputs rounded, sums in f32) the logits move by
/// about what bf16's 8-bit mantissa allows, and every image keeps PyTorch's f32 top class.
#[test]
fn lite0_in_bf16_stays_close_to_pytorch_f32() {
    let device = default_device();
    let model = lite0_with_logits(&device);
    let layers = inference_layers(&model, &device).unwrap();
    let (_, input) = fixture("input");
    let input = Tensor::<4>::from_data(TensorData::new(input, [4, 3, 224, 224]), &device);
    let run = |precision: Precision| {
        let out = run_inference(&layers, Batch::Maps(input.clone()), &device, precision);
        to_vec(out.unwrap()).1
    };
    let (f32_logits, bf16_logits) = (run(Precision::F32), run(Precision::Bf16));
    let (_, expected) = fixture("logits");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    let f32_diff = max_abs_diff(&f32_logits, &expected);
    let bf16_diff = max_abs_diff(&bf16_logits, &expected);
    eprintln!("logits max abs diff: f32 {f32_diff:e}, bf16 {bf16_diff:e} (largest logit {scale})");
    let top = |logits: &[f32]| -> Vec<usize> {
        logits
            .chunks(1000)
            .map(|row| {
                (0..row.len())
                    .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(top(&bf16_logits), top(&expected), "top classes");
    assert!(bf16_diff > 10.0 * f32_diff, "bf16 rounding took effect");
    assert!(
        bf16_diff <= 0.05 * scale,
        "bf16 logits differ by {bf16_diff}"
    );
}

//! The zoo architectures against Keras 3 (tools/keras_parity_fixtures.py): every
//! variable filled from the same formula of its Keras path and index, the same input, outputs
//! equal to 1e-4 relative, both from the model as built and from its inference plan (BatchNorm
//! folded, also inside residual graphs, and the CPU kernels).

use burn::tensor::{Tensor, TensorData};
use retrain::default_device;
use retrain::layers::{Batch, Context, Layer, LayerKind, LayerRef};
use retrain::model::Sequential;
use retrain::train::features::{inference_layers, run_layers};
use retrain::variable::Variable;
use retrain::weights::safetensors::SafetensorsFile;
use retrain::weights::TensorSource;
use retrain::zoo::{self, Pooling, ZooOptions};
use std::path::PathBuf;

fn phase(path: &str) -> f64 {
    let h = path
        .bytes()
        .enumerate()
        .fold(0u64, |h, (i, b)| (h + (i as u64 + 1) * b as u64) % 997);
    h as f64 * 0.013
}

/// The fixture formula: the value at index `k` (row-major, Keras layout) of `path`.
fn formula(path: &str, keras_shape: &[usize], k: usize) -> f32 {
    let s = (k as f64 * 0.61 + phase(path)).sin();
    let kind = path.rsplit('/').next().unwrap();
    let v = match kind {
        "kernel" => {
            let fan_in = if keras_shape.len() == 4 {
                let depthwise =
                    keras_shape[3] == 1 && (path.contains("depthwise") || path.contains("dwconv"));
                keras_shape[0] * keras_shape[1] * if depthwise { 1 } else { keras_shape[2] }
            } else {
                keras_shape[0]
            };
            s * (3.0 / fan_in as f64).sqrt()
        }
        "bias" | "beta" | "moving_mean" => 0.1 * s,
        "gamma" => 1.0 + 0.1 * s,
        "moving_variance" => 1.0 + 0.5 * s * s,
        other => panic!("no formula for {other}"),
    };
    v as f32
}

/// Fill a variable in retrain's layout (convolutions OIHW, depthwise [C, 1, kh, kw]) from the
/// formula in Keras's layout (HWIO, depthwise [kh, kw, C, 1]).
fn fill(variable: &Variable) {
    let path = variable.path();
    let shape = variable.shape().to_vec();
    let values: Vec<f32> = match shape[..] {
        [o, i, kh, kw] => {
            let depthwise = i == 1 && (path.contains("depthwise") || path.contains("dwconv"));
            let keras = if depthwise {
                vec![kh, kw, o, 1]
            } else {
                vec![kh, kw, i, o]
            };
            let mut out = Vec::with_capacity(o * i * kh * kw);
            for oo in 0..o {
                for ii in 0..i {
                    for h in 0..kh {
                        for w in 0..kw {
                            let k = if depthwise {
                                (h * kw + w) * o + oo
                            } else {
                                ((h * kw + w) * i + ii) * o + oo
                            };
                            out.push(formula(path, &keras, k));
                        }
                    }
                }
            }
            out
        }
        _ => (0..variable.numel())
            .map(|k| formula(path, &shape, k))
            .collect(),
    };
    variable.assign_data(values, &default_device());
}

fn fixture(name: &str) -> (Tensor<4>, Vec<usize>, Vec<f32>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/keras/parity_{name}.safetensors"));
    let file = SafetensorsFile::open(&path).unwrap();
    let input_shape = file.shape("input").unwrap();
    let input = Tensor::from_data(
        TensorData::new(file.read("input").unwrap(), input_shape.clone()),
        &default_device(),
    );
    (
        input,
        file.shape("output").unwrap(),
        file.read("output").unwrap(),
    )
}

/// The pooled features of `model` for `input`: dimensions and values.
/// BatchNorm layers among `layers` and everything inside them.
/// How many layers of `layers` and their sublayers are of the kind `is`.
fn count(layers: &[LayerRef], is: fn(&LayerKind) -> bool) -> usize {
    layers
        .iter()
        .map(|l| usize::from(is(&l.spec().kind)) + count(&l.sublayers(), is))
        .sum()
}

fn pooled(out: Batch) -> (Vec<usize>, Vec<f32>) {
    let dims = out.dims();
    match out {
        Batch::Vectors(t) => (
            dims,
            t.into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap(),
        ),
        Batch::Maps(_) => panic!("pooled output expected"),
    }
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

fn check(name: &str) {
    let (input, out_shape, expected) = fixture(name);
    let size = input.dims()[2];
    let model: Sequential = (zoo::entry(name).unwrap().build)(&ZooOptions {
        include_top: false,
        input: Some([size, size]),
        pooling: Pooling::Avg,
        ..ZooOptions::default()
    })
    .unwrap();
    for variable in model.variables() {
        fill(&variable);
    }
    let device = default_device();
    let plan = inference_layers(&model, &device).unwrap();
    let batch_norm = |k: &LayerKind| matches!(k, LayerKind::BatchNorm(_));
    assert_eq!(
        count(&plan, batch_norm),
        0,
        "{name}: every BatchNorm is folded"
    );
    // Zero paddings fold into the convolution after them (ResNet50 keeps the one before its
    // max pooling).
    let zero_padding = |k: &LayerKind| matches!(k, LayerKind::ZeroPadding2d { .. });
    let kept = usize::from(name == "resnet50");
    if name == "resnet50" || name.starts_with("mobilenet_v2") {
        assert!(
            count(model.layers(), zero_padding) > kept,
            "{name} pads as built"
        );
    }
    assert_eq!(count(&plan, zero_padding), kept, "{name}: paddings folded");
    let as_built = model.forward(Batch::Maps(input.clone()), &mut Context::inference(&device));
    let planned = run_layers(&plan, Batch::Maps(input), &mut Context::inference(&device));
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(scale > 1e-3, "{name}: a degenerate fixture");
    for (how, out) in [("as built", as_built), ("inference plan", planned)] {
        let (dims, got) = pooled(out.unwrap());
        assert_eq!(dims, out_shape);
        let diff = max_difference(&got, &expected);
        eprintln!("{name} {how}: max |difference| {diff:e}, max |output| {scale:e}");
        assert!(
            diff <= 1e-4 * scale,
            "{name} {how}: max difference {diff:e} against max |output| {scale:e}"
        );
    }
    // The two images give different features: the comparison is not of constants.
    let half = expected.len() / 2;
    assert!(expected[..half] != expected[half..]);
}

#[test]
fn resnet50_matches_keras() {
    check("resnet50");
}

#[test]
fn inception_v3_matches_keras() {
    check("inception_v3");
}

#[test]
fn vgg19_matches_keras() {
    check("vgg19");
}

#[test]
fn efficientnet_lite_family_matches_keras_layers() {
    // Keras has no EfficientNet-Lite: the tool writes it with Keras layers (TF "same" padding,
    // depthwise convolutions, BatchNorm 1e-3, ReLU6) and Keras EfficientNet names.
    for k in 0..5 {
        check(&format!("efficientnet_lite{k}"));
    }
}

#[test]
fn mobilenet_v2_matches_keras() {
    check("mobilenet_v2");
}

#[test]
fn mobilenet_v2_035_matches_keras() {
    check("mobilenet_v2_035");
}

#[test]
fn keras_hdf5_weights_in_both_layouts_reproduce_keras() {
    let (input, _, expected) = fixture("mobilenet_v2_035");
    let size = input.dims()[2];
    let options = ZooOptions {
        include_top: false,
        input: Some([size, size]),
        pooling: Pooling::Avg,
        ..ZooOptions::default()
    };
    let entry = zoo::entry("mobilenet_v2_035").unwrap();
    for file in [
        "mobilenet_v2_035_notop.weights.h5",
        "mobilenet_v2_035_notop_keras2.h5",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keras")
            .join(file);
        let model = zoo::load_pretrained(entry, &options, &path, &default_device()).unwrap();
        let out = model.forward(
            Batch::Maps(input.clone()),
            &mut Context::inference(&default_device()),
        );
        let diff = max_difference(&pooled(out.unwrap()).1, &expected);
        assert!(diff < 1e-5, "{file}: max difference {diff:e}");
    }
}

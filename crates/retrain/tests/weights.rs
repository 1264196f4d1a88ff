//! Weight files: PyTorch zip and legacy checkpoints, safetensors, retrain's own files, and the
//! refusal of anything that is code rather than data.

mod common;

use common::{lite0_weights, scratch_dir};
use retrain::layers::{Batch, Dense, Layer};
use retrain::model::{load_model, save_model, Sequential};
use retrain::weights::{self, load_into, pytorch::PytorchFile, NameMap, TensorSource, Transform};
use retrain::zoo::{self, ZooOptions};
use retrain::{default_device, Error, Shape, Tensor};
use std::path::PathBuf;
use std::sync::Arc;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/weights")
        .join(name)
}

fn linear_map(layer: &str) -> NameMap {
    let mut map = NameMap::new();
    map.map(format!("{layer}/kernel"), "fc.weight", Transform::Transpose);
    map.map(format!("{layer}/bias"), "fc.bias", Transform::Identity);
    map
}

#[test]
fn zip_and_legacy_checkpoints_load_into_a_dense_layer() {
    let device = default_device();
    for file in ["linear_zip.pth", "linear_legacy.pth"] {
        let source = weights::open(&data(file)).unwrap();
        let mut keys = source.keys();
        keys.sort();
        assert_eq!(keys, ["fc.bias", "fc.weight"], "{file}");
        let dense = Dense::new(3);
        dense.build(Shape::Vector(2)).unwrap();
        load_into(&dense, source.as_ref(), &linear_map(dense.name()), &device).unwrap();
        // PyTorch y = x W^T + b with W = [[1,2],[3,4],[5,6]], b = [0.5,-0.5,0.25], x = [1, 10].
        let x = Tensor::<2>::from_data(
            burn::tensor::TensorData::new(vec![1.0f32, 10.0], [1, 2]),
            &device,
        );
        let y = dense
            .forward(
                Batch::Vectors(x),
                &mut retrain::layers::Context::inference(&device),
            )
            .unwrap()
            .into_vectors("test")
            .unwrap()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(y, vec![21.5, 42.5, 65.25], "{file}");
    }
}

#[test]
fn pickles_that_call_code_are_refused_before_anything_runs() {
    let marker = PathBuf::from("/tmp/retrain-pickle-marker");
    let _ = std::fs::remove_file(&marker);
    for (file, global) in [
        ("os_system_legacy.pth", "system"),
        ("os_system_zip.pth", "system"),
        ("eval_protocol4.pkl", "builtins.eval"),
    ] {
        let err = match weights::open(&data(file)) {
            Ok(_) => panic!("{file} was accepted"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::UnsafePickle { .. }), "{file}: {err}");
        let text = err.to_string();
        assert!(text.contains(global) && text.contains(file), "{text}");
    }
    assert!(!marker.exists(), "a pickle ran a command");
}

fn lite0_tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let file = PytorchFile::open(&lite0_weights()).unwrap();
    let mut keys = file.keys();
    keys.sort();
    keys.into_iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .map(|k| {
            let shape = file.shape(&k).unwrap();
            let values = file.read(&k).unwrap();
            (k, shape, values)
        })
        .collect()
}

fn load_lite0_from(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    name: &str,
) -> retrain::Result<Sequential> {
    let path = scratch_dir("lite0-weights").join(name);
    std::fs::write(
        &path,
        weights::safetensors::to_bytes(tensors, None).unwrap(),
    )
    .unwrap();
    let entry = zoo::entry("efficientnet_lite0").unwrap();
    zoo::load_pretrained(entry, &ZooOptions::default(), &path, &default_device())
}

#[test]
fn lite0_weights_load_and_mismatches_name_the_tensor() {
    let source = PytorchFile::open(&lite0_weights()).unwrap();
    assert_eq!(source.keys().len(), 296);
    let tensors = lite0_tensors();
    load_lite0_from(&tensors, "ok.safetensors").unwrap();

    let mut wrong_shape = tensors.clone();
    let t = wrong_shape
        .iter_mut()
        .find(|t| t.0 == "_blocks.3._project_conv.weight")
        .unwrap();
    t.1 = vec![144, 40, 1, 1];
    let err = load_lite0_from(&wrong_shape, "shape.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("_blocks.3._project_conv.weight")
            && err.contains("[144, 40, 1, 1]")
            && err.contains("[40, 144, 1, 1]"),
        "{err}"
    );

    let missing: Vec<_> = tensors
        .iter()
        .filter(|t| t.0 != "_bn1.running_var")
        .cloned()
        .collect();
    let err = load_lite0_from(&missing, "missing.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("_bn1.running_var") && err.contains("top_bn/moving_variance"),
        "{err}"
    );

    let mut extra = tensors.clone();
    extra.push(("_head2.weight".into(), vec![2], vec![0.0, 1.0]));
    let err = load_lite0_from(&extra, "extra.safetensors")
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("_head2.weight"), "{err}");
}

#[test]
fn a_failed_load_leaves_the_model_untouched() {
    let device = default_device();
    let dense = Dense::new(3);
    dense.build(Shape::Vector(2)).unwrap();
    let before = dense.variables()[0].to_vec(&device);
    let source = weights::open(&data("linear_zip.pth")).unwrap();
    let mut wrong = NameMap::new();
    wrong.map(
        format!("{}/kernel", dense.name()),
        "fc.weight",
        Transform::Identity,
    );
    wrong.map(
        format!("{}/bias", dense.name()),
        "fc.bias",
        Transform::Identity,
    );
    let err = load_into(&dense, source.as_ref(), &wrong, &device).unwrap_err();
    assert!(matches!(err, Error::TensorShape { .. }), "{err}");
    assert_eq!(dense.variables()[0].to_vec(&device), before);
}

#[test]
fn retrain_models_round_trip_through_safetensors_and_json() {
    let device = default_device();
    let base = zoo::vgg::vgg16(&ZooOptions {
        include_top: false,
        input: Some([32, 32]),
        pooling: zoo::Pooling::Avg,
        ..ZooOptions::default()
    })
    .unwrap();
    base.set_trainable(false);
    let mut model = Sequential::new(Some("ants_bees"));
    model.add(Arc::new(base)).unwrap();
    model.add(Arc::new(Dense::new(2))).unwrap();
    let x =
        Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &device) * 255.0;
    let before = model.predict(x.clone()).unwrap().into_vectors("m").unwrap();

    let dir = scratch_dir("roundtrip");
    save_model(&model, &dir, None, &["ants".into(), "bees".into()], &device).unwrap();
    let (loaded, file) = load_model(&dir, &device).unwrap();
    assert_eq!(file.class_names, ["ants", "bees"]);
    assert_eq!(loaded.param_count(), model.param_count());
    let trainable: usize = loaded.trainable_variables().iter().map(|v| v.numel()).sum();
    assert_eq!(
        trainable,
        512 * 2 + 2,
        "frozen flags survive the round trip"
    );
    let after = loaded.predict(x).unwrap().into_vectors("m").unwrap();
    let diff = (before - after).abs().max().into_scalar::<f32>();
    assert_eq!(diff, 0.0);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn broken_files_are_errors_naming_the_file() {
    let dir = scratch_dir("broken");
    for (name, bytes) in [
        ("empty.pth", &b""[..]),
        ("text.safetensors", b"hello world, not weights"),
        (
            "lying.safetensors",
            b"\xff\xff\xff\xff\x00\x00\x00\x00{\"a\":1}",
        ),
        ("truncated.pth", b"\x80\x02\x8a\x0a"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = match weights::open(&path) {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn checkpoints_whose_sizes_lie_are_errors_not_crashes() {
    for file in ["huge_storage_legacy.pth", "short_data_zip.pth"] {
        let outcome = weights::open(&data(file)).and_then(|source| source.verify());
        let err = outcome.expect_err(file).to_string();
        assert!(err.contains(file), "{err}");
    }
}

#[test]
fn crafted_headers_and_deep_nesting_are_errors_not_crashes() {
    for file in [
        "offsets_past_end.safetensors",
        "negative_shape.safetensors",
        "overflowing_shape.safetensors",
        "shape_and_size_disagree.safetensors",
        "huge_header.safetensors",
        "deep_nesting.safetensors",
        "deep_nesting_zip.pth",
    ] {
        let outcome = weights::open(&data(file)).and_then(|source| source.verify());
        let err = outcome.expect_err(file).to_string();
        assert!(err.contains(file), "{err}");
    }
}

//! Training on a small synthetic image folder: the frozen-prefix cache changes nothing but speed,
//! an interrupted run resumes to the same result, and a run directory is complete.

mod common;

use common::scratch_dir;
use image::{Rgb, RgbImage};
use retrain::data::folder::{decode_samples, ImageFolder, SplitRule};
use retrain::layers::{
    ActivationKind, BatchNorm, Conv2d, Conv2dConfig, Dense, GlobalAveragePooling2d, Layer,
    LayerRef, Merge, Padding, Preprocess, PreprocessMode,
};
use retrain::model::{input, Apply, Sequential};
use retrain::train::evaluate::evaluate;
use retrain::train::report::{confusion_png, curves_png};
use retrain::train::run::RunDir;
use retrain::train::{fit, Event, FitConfig, Flow, TrainingSet};
use retrain::zoo::{Interpolation, PretrainedConfig};
use retrain::{default_device, Shape};
use std::path::Path;
use std::sync::Arc;

/// Two classes: warm images with a bright blob, cool images with a dark one; 12 each.
fn synthetic_folder(root: &Path) {
    for (class, base) in [("cool", [40u8, 80, 200]), ("warm", [210u8, 120, 40])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..12u32 {
            let img = RgbImage::from_fn(40, 36, |x, y| {
                let noise = ((x * 7 + y * 13 + i * 31) % 23) as u8;
                let blob = (x as i32 - (10 + i as i32)).pow(2) + (y as i32 - 18).pow(2) < 40;
                let c = if blob {
                    [base[2], base[1], base[0]]
                } else {
                    base
                };
                Rgb([
                    c[0].saturating_add(noise),
                    c[1].saturating_add(noise),
                    c[2].saturating_add(noise),
                ])
            });
            img.save(dir.join(format!("{i:02}.png"))).unwrap();
        }
    }
    std::fs::write(root.join("cool").join("broken.jpg"), b"not an image").unwrap();
}

fn config() -> PretrainedConfig {
    PretrainedConfig {
        input_size: [32, 32],
        transfer_input_size: None,
        crop_pct: 1.0,
        interpolation: Interpolation::Bilinear,
        preprocess: PreprocessMode::Tf,
        weights: "synthetic".into(),
    }
}

/// Preprocess, a frozen conv + BN "base" (fixed random weights), GAP, Dense(2).
fn model() -> Sequential {
    let device = default_device();
    let mut base = Sequential::new(Some("base")).with_input(Shape::image(Some(32), Some(32), 3));
    base.add(Arc::new(Conv2d::from_config(
        Some("conv".into()),
        Conv2dConfig::new(8, 3)
            .strides(2)
            .padding(Padding::Same)
            .activation(ActivationKind::Relu),
    )))
    .unwrap();
    base.add(Arc::new(BatchNorm::new(Some("bn".into()))))
        .unwrap();
    base.initialize(7, &device);
    base.set_trainable(false);
    let mut model = Sequential::new(Some("classifier"));
    model
        .add(Arc::new(Preprocess::new(None, PreprocessMode::Tf)))
        .unwrap();
    model.add(Arc::new(base)).unwrap();
    model
        .add(Arc::new(GlobalAveragePooling2d::new(None)))
        .unwrap();
    model.add(Arc::new(Dense::new(2).named("head"))).unwrap();
    model
}

/// The same frozen base inside a functional graph whose head has a skip connection:
/// input -> preprocess -> base -> GAP -> hidden (relu) -> add(GAP, hidden) -> head.
fn graph_model() -> Sequential {
    let stacked = model();
    let x = input(Shape::image(Some(32), Some(32), 3));
    let mut features = x.clone();
    for layer in &stacked.layers()[..3] {
        features = layer.apply(&features).unwrap();
    }
    let hidden: LayerRef = Arc::new(Dense::with_name("hidden", 8, ActivationKind::Relu));
    let skip: LayerRef = Arc::new(Merge::add(Some("skip".into())));
    let h = hidden.apply(&features).unwrap();
    let s = skip.apply_to(&[&features, &h]).unwrap();
    let y = stacked.layers()[3].apply(&s).unwrap();
    Sequential::functional(Some("graph_classifier"), &x, &y).unwrap()
}

fn dense_weights(model: &Sequential) -> Vec<f32> {
    let device = default_device();
    model
        .layers()
        .last()
        .unwrap()
        .variables()
        .iter()
        .flat_map(|v| v.to_vec(&device))
        .collect()
}

struct Data {
    classes: Vec<String>,
    train: Vec<(retrain::data::folder::Sample, RgbImage)>,
    val: Vec<(retrain::data::folder::Sample, RgbImage)>,
}

fn data(name: &str) -> Data {
    let root = scratch_dir(name).join("data");
    synthetic_folder(&root);
    let folder = ImageFolder::scan(
        &root,
        SplitRule {
            val_split: 0.25,
            seed: 3,
        },
    )
    .unwrap();
    assert_eq!(folder.class_names, ["cool", "warm"]);
    assert_eq!(folder.train.len() + folder.val.len(), 25);
    let train = decode_samples(&folder.train, &config(), &|_| {});
    let val = decode_samples(&folder.val, &config(), &|_| {});
    let skipped: Vec<_> = train.skipped.iter().chain(&val.skipped).collect();
    assert_eq!(skipped.len(), 1, "the broken file is skipped: {skipped:?}");
    assert!(skipped[0].0.ends_with("broken.jpg"));
    Data {
        classes: folder.class_names,
        train: train.items,
        val: val.items,
    }
}

fn run(
    model: &Sequential,
    data: &Data,
    config: &FitConfig,
    dir: Option<&RunDir>,
    stop_after: Option<usize>,
) -> retrain::train::FitOutcome {
    let pretrained = self::config();
    let set = TrainingSet {
        train: &data.train,
        val: &data.val,
        class_names: &data.classes,
        pretrained: &pretrained,
    };
    let resume = dir
        .and_then(|d| d.resume_state().unwrap())
        .filter(|s| s.epochs_done > 0);
    fit(
        model,
        &set,
        config,
        dir,
        resume,
        &default_device(),
        &mut |e| match e {
            Event::Epoch(m) if Some(m.epoch) == stop_after => Flow::Stop,
            _ => Flow::Continue,
        },
    )
    .unwrap()
}

/// Train two fresh copies of a model, with and without the frozen-prefix cache: the same
/// weights and history, and the easy synthetic classes learned.
fn check_cache_equivalence(name: &str, build: fn() -> Sequential) {
    let data = data(name);
    let config = FitConfig {
        epochs: 4,
        batch_size: 5,
        lr: 0.05,
        seed: 11,
        ..FitConfig::default()
    };
    let cached_model = build();
    let cached = run(&cached_model, &data, &config, None, None);
    let uncached_model = build();
    let uncached = run(
        &uncached_model,
        &data,
        &FitConfig {
            cache: false,
            ..config.clone()
        },
        None,
        None,
    );
    let (a, b) = (dense_weights(&cached_model), dense_weights(&uncached_model));
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-5, "weights differ by {diff}");
    for (x, y) in cached.history.iter().zip(&uncached.history) {
        assert!((x.loss - y.loss).abs() < 1e-5 && (x.val_loss - y.val_loss).abs() < 1e-5);
    }
    let last = cached.history.last().unwrap();
    assert!(
        last.val_accuracy >= 0.8,
        "the synthetic classes are easy: {last:?}"
    );
    assert!(
        last.loss < cached.history[0].loss,
        "training lowers the loss"
    );
}

#[test]
fn cached_and_uncached_runs_end_with_the_same_weights() {
    check_cache_equivalence("cache-equivalence", model);
}

#[test]
fn a_graph_model_trains_with_its_frozen_prefix_cached() {
    assert!(graph_model().is_graph());
    check_cache_equivalence("graph", graph_model);
}

#[test]
fn an_interrupted_run_resumes_to_the_uninterrupted_result() {
    let data = data("resume");
    let config = FitConfig {
        epochs: 5,
        batch_size: 4,
        lr: 0.05,
        seed: 5,
        ..FitConfig::default()
    };
    let whole_model = model();
    let whole = run(&whole_model, &data, &config, None, None);

    let dir = RunDir::create(&scratch_dir("resume-run")).unwrap();
    let first = run(&model(), &data, &config, Some(&dir), Some(2));
    assert!(first.interrupted);
    assert_eq!(first.history.len(), 2);
    // A fresh process: the model comes back from the run directory.
    let (resumed_model, file) = dir.load_model(&default_device()).unwrap();
    assert_eq!(file.class_names, data.classes);
    let resumed = run(&resumed_model, &data, &config, Some(&dir), None);
    assert_eq!(resumed.history.len(), 5);
    for (x, y) in whole.history.iter().zip(&resumed.history) {
        assert!(
            (x.loss - y.loss).abs() < 1e-6,
            "epoch {}: {} vs {}",
            x.epoch,
            x.loss,
            y.loss
        );
        assert!((x.val_loss - y.val_loss).abs() < 1e-6);
    }
    let diff = dense_weights(&whole_model)
        .iter()
        .zip(dense_weights(&resumed_model))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(diff < 1e-6, "final weights differ by {diff}");

    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for needed in [
        "model.json",
        "model.safetensors",
        "history.csv",
        "history.json",
        "state.json",
        "checkpoint-5.safetensors",
    ] {
        assert!(
            files.iter().any(|f| f == needed),
            "{needed} missing from {files:?}"
        );
    }
    assert!(!files.iter().any(|f| f.contains(".tmp")), "{files:?}");
    assert_eq!(
        files
            .iter()
            .filter(|f| f.starts_with("checkpoint-"))
            .count(),
        1,
        "{files:?}"
    );
    let csv = std::fs::read_to_string(dir.path().join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 6);

    // The evaluation report of the resumed model, as numbers and as pictures.
    let report = evaluate(
        &resumed_model,
        &data.val,
        &data.classes,
        &self::config(),
        8,
        &default_device(),
    )
    .unwrap();
    assert_eq!(
        report.confusion.counts.iter().flatten().sum::<usize>(),
        data.val.len()
    );
    assert!((report.accuracy - resumed.history.last().unwrap().val_accuracy).abs() < 1e-9);
    let pictures = scratch_dir("report");
    confusion_png(&report.confusion, &pictures.join("confusion.png")).unwrap();
    curves_png(&dir.history().unwrap(), &pictures.join("curves.png")).unwrap();
    for name in ["confusion.png", "curves.png"] {
        let img = image::open(pictures.join(name)).unwrap();
        assert!(img.width() > 200 && img.height() > 200, "{name}");
    }
}

#[test]
fn a_diverging_loss_stops_with_a_clear_error_and_keeps_good_weights() {
    let data = data("diverge");
    let model = model();
    let pretrained = config();
    let set = TrainingSet {
        train: &data.train,
        val: &data.val,
        class_names: &data.classes,
        pretrained: &pretrained,
    };
    let config = FitConfig {
        epochs: 3,
        batch_size: 4,
        lr: 1e38,
        seed: 1,
        ..FitConfig::default()
    };
    let err = fit(
        &model,
        &set,
        &config,
        None,
        None,
        &default_device(),
        &mut |_| Flow::Continue,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loss became") && err.contains("--lr"), "{err}");
    assert!(
        dense_weights(&model).iter().all(|w| w.is_finite()),
        "the kept weights are finite"
    );
}

#[test]
fn a_run_killed_after_an_improving_epoch_loads_as_its_best_model() {
    // Between its first and last save of the whole model, a run writes only the trained
    // layers' best weights (best.safetensors); what a SIGKILL leaves must still load as them.
    let device = default_device();
    let dir = RunDir::create(&scratch_dir("killed-best")).unwrap();
    let classes = ["cool".to_string(), "warm".to_string()];
    let model = model();
    model.build(Shape::image(Some(32), Some(32), 3)).unwrap();
    model.initialize(1, &device);
    dir.save_model(&model, &config(), &classes, &device)
        .unwrap();
    let initial = dense_weights(&model);

    let head = model.layers().last().unwrap().variables();
    for v in &head {
        let values: Vec<f32> = (0..v.numel()).map(|i| 0.25 + i as f32).collect();
        v.assign_data(values, &device);
    }
    let best = dense_weights(&model);
    assert_ne!(best, initial);
    dir.save_best_weights(&head, &device).unwrap();
    let best_file = dir.path().join("best.safetensors");
    assert!(best_file.is_file());
    // The whole-model file is not rewritten for an improving epoch...
    let (whole_file_only, _) = retrain::model::load_model(dir.path(), &device).unwrap();
    assert_eq!(dense_weights(&whole_file_only), initial);
    // ...yet the run directory loads with the best weights, and resumes from them.
    let (loaded, _) = dir.load_model(&device).unwrap();
    assert_eq!(dense_weights(&loaded), best);
    let fresh = model_from_dir_architecture(&dir);
    dir.load_best_weights(&fresh, &device).unwrap();
    assert_eq!(dense_weights(&fresh), best);

    // When the run ends, the whole model is written once and the partial file goes.
    assert!(dir.has_best_weights());
    dir.save_model(&model, &config(), &classes, &device)
        .unwrap();
    assert!(!best_file.exists() && !dir.has_best_weights());
    let (finished, _) = retrain::model::load_model(dir.path(), &device).unwrap();
    assert_eq!(dense_weights(&finished), best);
}

/// The run's model rebuilt from its model.json alone, without weights.
fn model_from_dir_architecture(dir: &RunDir) -> Sequential {
    let path = dir.path().join("model.json");
    let text = std::fs::read_to_string(&path).unwrap();
    retrain::model::model_from_json(&text, &path).unwrap().0
}

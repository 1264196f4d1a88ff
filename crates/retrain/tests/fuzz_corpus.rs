//! Every input the fuzzers kept (fuzz/corpus) and every crash they found (fuzz/regressions),
//! replayed through the same entry points as the fuzz targets: each is an error or a success,
//! never a panic.

use retrain::data::image::{decode_rgb, prepare};
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut files: Vec<PathBuf> = ["corpus", "regressions"]
        .iter()
        .filter_map(|kind| std::fs::read_dir(fuzz.join(kind).join(target)).ok())
        .flat_map(|dir| dir.map(|e| e.unwrap().path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn weights_corpora_replay_without_panics() {
    for target in ["pytorch_checkpoint", "safetensors"] {
        let files = inputs(target);
        assert!(files.len() >= 10, "{target}: {} inputs", files.len());
        for file in files {
            if let Err(e) = retrain::weights::open(&file).and_then(|s| s.verify()) {
                assert!(e.to_string().contains(&*file.to_string_lossy()), "{e}");
            }
        }
    }
}

#[test]
fn model_config_corpus_replays_without_panics() {
    let files = inputs("model_config");
    assert!(files.len() >= 10, "{} inputs", files.len());
    for file in files {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        let _ = retrain::model::model_from_json(&text, &file);
    }
}

#[test]
fn image_corpus_replays_without_panics() {
    let files = inputs("image_decode");
    assert!(files.len() >= 10, "{} inputs", files.len());
    let config = (retrain::zoo::entry("efficientnet_lite0")
        .unwrap()
        .pretrained)();
    for file in files {
        if let Ok(image) = decode_rgb(&std::fs::read(&file).unwrap()) {
            assert_eq!(prepare(&image, &config).len(), 3 * 224 * 224);
        }
    }
}

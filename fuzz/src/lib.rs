//! What each fuzz target feeds retrain: the same entry points a user's file reaches.

use std::path::{Path, PathBuf};

/// Write the input where a weights file would be and open it as one: every tensor is read,
/// so lying headers are exercised too. Errors are fine; panics, aborts and OOM are not.
pub fn weights_file(data: &[u8], extension: &str) {
    let path = scratch(extension);
    std::fs::write(&path, data).expect("scratch file");
    let _ = retrain::weights::open(&path).and_then(|source| source.verify());
}

/// Parse a `model.json` and rebuild the model it describes (layers, shapes, no weights).
pub fn model_config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = retrain::model::model_from_json(text, Path::new("model.json"));
    }
}

/// Decode image bytes and turn them into a model input (resize, crop, normalize).
pub fn image(data: &[u8]) {
    if let Ok(image) = retrain::data::image::decode_rgb(data) {
        let entry = retrain::zoo::entry("efficientnet_lite0").expect("zoo entry");
        let input = retrain::data::image::prepare(&image, &(entry.pretrained)());
        assert_eq!(input.len(), 3 * 224 * 224);
    }
}

fn scratch(extension: &str) -> PathBuf {
    std::env::temp_dir().join(format!("retrain-fuzz-{}.{extension}", std::process::id()))
}

//! Helpers shared by the integration tests: where ../shared is, and tensor comparisons.
#![allow(dead_code)]

use retrain::weights::safetensors::SafetensorsFile;
use retrain::weights::TensorSource;
use std::path::PathBuf;

/// A path inside the read-only `shared/` folder beside the checkout (or `$RETRAIN_SHARED`).
pub fn shared(relative: &str) -> PathBuf {
    let root = std::env::var_os("RETRAIN_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared"));
    let path = root.join(relative);
    assert!(
        path.exists(),
        "test data '{}' is missing: put the project's shared/ folder beside the checkout or set RETRAIN_SHARED",
        path.display()
    );
    path
}

/// The shared EfficientNet-Lite0 ImageNet weights.
pub fn lite0_weights() -> PathBuf {
    shared("weights/efficientnet-lite0-57934424.pth")
}

/// A tensor of the parity fixture: (shape, values).
pub fn fixture(name: &str) -> (Vec<usize>, Vec<f32>) {
    let file = SafetensorsFile::open(&shared("fixtures/efficientnet_lite0_parity.safetensors"))
        .expect("parity fixture");
    (
        file.shape(name).expect("fixture tensor"),
        file.read(name).unwrap(),
    )
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "compared tensors differ in size");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A unique scratch directory under the target folder.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

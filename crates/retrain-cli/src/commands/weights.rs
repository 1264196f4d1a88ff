//! `--weights FILE` or `--weights imagenet` (the zoo entry's published weights, downloaded
//! once into the cache with a progress bar).

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// The weights file to load for zoo model `base`.
pub fn resolve(base: &str, weights: &Path) -> Result<PathBuf> {
    if weights != Path::new("imagenet") || weights.exists() {
        return Ok(weights.to_path_buf());
    }
    let entry = retrain::zoo::entry(base)?;
    let source = (entry.imagenet)(false).with_context(|| {
        format!(
            "no download with a published checksum is known for '{base}'; give --weights FILE ({})",
            (entry.pretrained)().weights
        )
    })?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("downloading {}", source.file));
    let path = retrain::hub::fetch(&source, &mut |done, total| {
        if let Some(total) = total {
            bar.set_length(total);
        }
        bar.set_position(done);
    });
    bar.finish_and_clear();
    Ok(path?)
}

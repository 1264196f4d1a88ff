//! Loading an image folder with a progress bar and a report of skipped files.

use anyhow::{bail, Result};
use image::RgbImage;
use indicatif::{ProgressBar, ProgressStyle};
use retrain::data::folder::{decode_samples, Sample};
use retrain::zoo::PretrainedConfig;

/// Decode samples in parallel with a progress bar; list skipped files once with their reason;
/// fail when a class has no usable image. Returns the usable samples and how many were skipped.
pub fn decode(
    what: &str,
    samples: &[Sample],
    class_names: &[String],
    config: &PretrainedConfig,
) -> Result<(Vec<(Sample, RgbImage)>, usize)> {
    let bar = ProgressBar::new(samples.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("decoding {what}"));
    let set = decode_samples(samples, config, &|done| bar.set_position(done as u64));
    bar.finish_and_clear();
    if !set.skipped.is_empty() {
        println!(
            "skipped {} {what} file(s) that are not usable images:",
            set.skipped.len()
        );
        for (path, reason) in &set.skipped {
            println!("  {}: {reason}", path.display());
        }
    }
    for (label, name) in class_names.iter().enumerate() {
        let had = samples.iter().any(|s| s.label == label);
        if had && !set.items.iter().any(|(s, _)| s.label == label) {
            bail!("class '{name}' has no usable image in the {what} data");
        }
    }
    Ok((set.items, set.skipped.len()))
}

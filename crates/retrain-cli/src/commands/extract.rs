//! `retrain extract`: pooled features of every image, for training heads elsewhere.

use super::data::decode;
use anyhow::{Context as _, Result};
use clap::Args;
use indicatif::ProgressBar;
use retrain::data::folder::{ImageFolder, SplitRule};
use retrain::layers::Precision;
use retrain::train::evaluate::extract_features;
use retrain::train::head::frozen_base;
use retrain::weights::safetensors::to_bytes_with_integers;
use retrain::zoo::Pooling;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ExtractArgs {
    /// Image folder (class subfolders, or train/ and val/ with class subfolders).
    data: PathBuf,
    /// Zoo model whose base extracts the features.
    #[arg(long)]
    base: String,
    /// ImageNet weights for the base (.pth / .safetensors / Keras .h5), or `imagenet` to
    /// download the published ones into the cache.
    #[arg(long)]
    weights: PathBuf,
    /// Output safetensors file: `features` [N, F] (f32), `labels` [N] (i64), file names, classes
    /// and splits in the metadata.
    #[arg(long, short)]
    output: PathBuf,
    /// Output this layer's activations (e.g. block4_pool) instead of the pooled features.
    #[arg(long)]
    layer: Option<String>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Square input size the base runs at (default: the base's transfer size).
    #[arg(long)]
    image_size: Option<usize>,
    /// Precision of the products of the base's layers: f32, or bf16 (weights and inputs rounded
    /// to bf16, sums in f32). bf16 runs in the f32 kernels for now, so it gives the same
    /// numbers on every CPU but is slower than f32 (about 1.3x).
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
}

pub fn run(args: ExtractArgs) -> Result<ExitCode> {
    let device = retrain::default_device();
    let (model, pretrained) = frozen_base(
        "extractor",
        &args.base,
        &super::weights::resolve(&args.base, &args.weights)?,
        Pooling::Avg,
        args.image_size.map(|size| [size; 2]),
        &device,
    )?;
    let folder = ImageFolder::scan(
        &args.data,
        SplitRule {
            val_split: 0.0,
            seed: 0,
        },
    )?;
    let mut samples = Vec::new();
    let mut splits = Vec::new();
    for (split, list) in [("train", &folder.train), ("val", &folder.val)] {
        samples.extend(list.iter().cloned());
        splits.extend(std::iter::repeat_n(split, list.len()));
    }
    let (items, _) = decode("image", &samples, &folder.class_names, &pretrained)?;
    let images: Vec<_> = items.iter().map(|(_, img)| img.clone()).collect();
    let bar = ProgressBar::new(images.len() as u64);
    let (dims, features) = extract_features(
        &model,
        args.layer.as_deref(),
        &images,
        &pretrained,
        args.batch_size,
        &device,
        args.precision,
        &mut |d| bar.set_position(d as u64),
    )?;
    bar.finish_and_clear();
    let n = items.len();
    let mut shape = vec![n];
    shape.extend(&dims);
    let labels: Vec<i64> = items.iter().map(|(s, _)| s.label as i64).collect();
    let files: Vec<String> = items
        .iter()
        .map(|(s, _)| s.path.display().to_string())
        .collect();
    let kept_splits: Vec<&str> = items
        .iter()
        .map(|(s, _)| {
            let i = samples.iter().position(|x| x.path == s.path).unwrap_or(0);
            splits[i]
        })
        .collect();
    let metadata = HashMap::from([
        ("files".to_string(), serde_json::to_string(&files)?),
        (
            "classes".to_string(),
            serde_json::to_string(&folder.class_names)?,
        ),
        ("splits".to_string(), serde_json::to_string(&kept_splits)?),
        ("base".to_string(), args.base.clone()),
        ("precision".to_string(), args.precision.to_string()),
    ]);
    let bytes = to_bytes_with_integers(
        &[("features".into(), shape.clone(), features)],
        &[("labels".into(), vec![n], labels)],
        Some(metadata),
    )?;
    retrain::io::write_atomic(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    println!(
        "{n} images -> features {shape:?} in '{}'",
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

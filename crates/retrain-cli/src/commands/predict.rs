//! `retrain predict`: a trained run's classes, or ImageNet classes with a zoo model.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use retrain::layers::{ActivationKind, Preprocess};
use retrain::model::Sequential;
use retrain::predict::{classify_files, read_labels, top_k};
use retrain::train::run::RunDir;
use retrain::zoo::{self, ZooOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct PredictArgs {
    /// A run directory then images or folders; with --base, only images or folders.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Classify with this zoo model's ImageNet classifier instead of a trained run.
    #[arg(long, requires = "weights")]
    base: Option<String>,
    /// ImageNet weights for --base (.pth / .pt / .safetensors).
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Class names for --base, one per line (e.g. imagenet_classes.txt).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// How many classes to show per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// One JSON object per image instead of a table.
    #[arg(long)]
    json: bool,
    /// Images per forward pass.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
}

/// Files given directly, and the files under folders given (recursively, sorted).
fn expand(inputs: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|r| r.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            if e.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if e.is_dir() {
                walk(&e, out);
            } else {
                out.push(e);
            }
        }
    }
    let mut out = Vec::new();
    for input in inputs {
        if input.is_dir() {
            walk(input, &mut out);
        } else {
            out.push(input.clone());
        }
    }
    out
}

pub fn run(args: PredictArgs) -> Result<ExitCode> {
    let device = retrain::default_device();
    let (model, config, labels, images) = match &args.base {
        Some(base) => {
            let entry = zoo::entry(base)?;
            let config = (entry.pretrained)();
            let options = ZooOptions {
                classifier_activation: ActivationKind::Linear,
                ..ZooOptions::default()
            };
            let weights = args.weights.as_deref().expect("clap requires --weights");
            let base_model = zoo::load_pretrained(entry, &options, weights, &device)
                .with_context(|| format!("loading {} weights", entry.name))?;
            let mut model = Sequential::new(Some(entry.name));
            model.add(Arc::new(Preprocess::new(None, config.preprocess.clone())))?;
            model.add(Arc::new(base_model))?;
            let labels = match &args.labels {
                Some(path) => read_labels(path)?,
                None => Vec::new(),
            };
            if !labels.is_empty() && labels.len() != options.classes {
                bail!(
                    "the labels file has {} class names but the model has {} classes",
                    labels.len(),
                    options.classes
                );
            }
            (model, config, labels, expand(&args.inputs))
        }
        None => {
            let (run, images) = args.inputs.split_first().expect("clap requires inputs");
            let (model, file) = RunDir::open(run)?.load_model(&device)?;
            let config = file
                .pretrained
                .context("the run's model.json has no pretrained config")?;
            if images.is_empty() {
                bail!("give images or folders to classify after the run directory");
            }
            (model, config, file.class_names, expand(images))
        }
    };
    let predictions = classify_files(
        &model,
        &config,
        ActivationKind::Linear,
        &images,
        args.batch_size,
        &device,
    )?;
    let mut failed = 0;
    for prediction in predictions {
        let file = prediction.path.display().to_string();
        match prediction.probabilities {
            Ok(p) => {
                let best = top_k(&p, &labels, args.top_k);
                if args.json {
                    println!("{}", serde_json::json!({ "file": file, "top_k": best }));
                } else {
                    println!("{file}");
                    for c in best {
                        println!("  {:>7.4}  {} ({})", c.probability, c.name, c.index);
                    }
                }
            }
            Err(e) => {
                failed += 1;
                eprintln!("skipped: {e}");
            }
        }
    }
    if failed > 0 {
        eprintln!("{failed} image(s) could not be classified");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

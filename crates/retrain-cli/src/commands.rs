//! One function per subcommand.

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use retrain::layers::{ActivationKind, Layer, Preprocess};
use retrain::model::{summary as render_summary, Sequential, SummaryOptions};
use retrain::predict::{classify_files, read_labels, top_k};
use retrain::zoo::{self, Pooling, ZooOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Pooling choices on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum PoolingArg {
    None,
    Avg,
    Max,
}

impl From<PoolingArg> for Pooling {
    fn from(p: PoolingArg) -> Self {
        match p {
            PoolingArg::None => Pooling::None,
            PoolingArg::Avg => Pooling::Avg,
            PoolingArg::Max => Pooling::Max,
        }
    }
}

fn parse_size(text: &str) -> Result<[usize; 2], String> {
    let (h, w) = text
        .split_once('x')
        .ok_or_else(|| format!("'{text}' is not HEIGHTxWIDTH, e.g. 224x224"))?;
    let parse = |s: &str| {
        s.parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("'{s}' in '{text}' is not a positive size"))
    };
    Ok([parse(h)?, parse(w)?])
}

#[derive(Args)]
pub struct SummaryArgs {
    /// Zoo model name (see `retrain models`).
    model: String,
    /// Drop the ImageNet classifier (Keras include_top=False).
    #[arg(long)]
    no_top: bool,
    /// Fixed input size HEIGHTxWIDTH (without it and with --no-top, any size: None).
    #[arg(long, value_parser = parse_size)]
    input: Option<[usize; 2]>,
    /// Pooling after the feature map when the top is dropped.
    #[arg(long, value_enum, default_value = "none")]
    pooling: PoolingArg,
    /// Classes of the classifier.
    #[arg(long, default_value_t = 1000)]
    classes: usize,
    /// Add a Trainable column (Y/N).
    #[arg(long)]
    trainable: bool,
    /// Show the layers inside nested models and blocks.
    #[arg(long)]
    expand_nested: bool,
}

pub fn models() -> Result<ExitCode> {
    println!(
        "{:<20} {:>13} {:>11} {:>9}  description",
        "name", "params", "no-top", "input"
    );
    for entry in zoo::entries() {
        let full = (entry.build)(&ZooOptions::default())?;
        let base = (entry.build)(&ZooOptions {
            include_top: false,
            ..ZooOptions::default()
        })?;
        let [h, w] = (entry.pretrained)().input_size;
        println!(
            "{:<20} {:>13} {:>11} {:>9}  {}",
            entry.name,
            retrain::model::group_thousands(full.param_count()),
            retrain::model::group_thousands(base.param_count()),
            format!("{h}x{w}"),
            entry.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn summary(args: SummaryArgs) -> Result<ExitCode> {
    let entry = zoo::entry(&args.model)?;
    let model = (entry.build)(&ZooOptions {
        include_top: !args.no_top,
        input: args.input,
        pooling: args.pooling.into(),
        classes: args.classes,
        ..ZooOptions::default()
    })?;
    print!(
        "{}",
        render_summary(
            &model,
            SummaryOptions {
                show_trainable: args.trainable,
                expand_nested: args.expand_nested,
            }
        )
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Args)]
pub struct PredictArgs {
    /// Zoo model to classify with.
    #[arg(long)]
    base: String,
    /// Weights file (.pth / .pt / .safetensors).
    #[arg(long)]
    weights: PathBuf,
    /// Class names, one per line (e.g. imagenet_classes.txt).
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
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
}

pub fn predict(args: PredictArgs) -> Result<ExitCode> {
    let device = retrain::default_device();
    let entry = zoo::entry(&args.base)?;
    let config = (entry.pretrained)();
    let options = ZooOptions {
        classifier_activation: ActivationKind::Linear,
        ..ZooOptions::default()
    };
    let base = zoo::load_pretrained(entry, &options, &args.weights, &device)
        .with_context(|| format!("loading {} weights", entry.name))?;
    let mut model = Sequential::new(Some(entry.name));
    model.add(Arc::new(Preprocess::new(None, config.preprocess.clone())))?;
    model.add(Arc::new(base))?;
    let labels = match &args.labels {
        Some(path) => read_labels(path)?,
        None => Vec::new(),
    };
    if !labels.is_empty() && labels.len() != options.classes {
        bail!(
            "'{}' has {} class names but the model has {} classes",
            args.labels
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            labels.len(),
            options.classes
        );
    }
    let predictions = classify_files(
        &model,
        &config,
        ActivationKind::Linear,
        &args.images,
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

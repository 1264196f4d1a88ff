//! `retrain models` and `retrain summary`.

use anyhow::Result;
use clap::{Args, ValueEnum};
use retrain::layers::Layer;
use retrain::model::{plot_model, summary as render_summary, PlotOptions, RankDir, SummaryOptions};
use retrain::train::run::RunDir;
use retrain::zoo::{self, Pooling, ZooOptions};
use std::path::Path;
use std::process::ExitCode;

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

/// Which model to show: a zoo entry with its options, or a run directory.
#[derive(Args)]
pub struct ModelArgs {
    /// Zoo model name (see `retrain models`) or a run directory.
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
}

impl ModelArgs {
    /// Build the zoo model, or load the run directory's model.
    pub fn load(&self) -> Result<retrain::model::Sequential> {
        if Path::new(&self.model).join("model.json").is_file() {
            return Ok(RunDir::open(Path::new(&self.model))?
                .load_model(&retrain::default_device())?
                .0);
        }
        let entry = zoo::entry(&self.model)?;
        Ok((entry.build)(&ZooOptions {
            include_top: !self.no_top,
            input: self.input,
            pooling: self.pooling.into(),
            classes: self.classes,
            ..ZooOptions::default()
        })?)
    }
}

#[derive(Args)]
pub struct SummaryArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Add a Trainable column (Y/N).
    #[arg(long)]
    trainable: bool,
    /// Show the layers inside nested models and blocks.
    #[arg(long)]
    expand_nested: bool,
}

pub fn models() -> Result<ExitCode> {
    println!(
        "{:<20} {:>13} {:>11} {:>9} {:>9}  description",
        "name", "params", "no-top", "input", "transfer"
    );
    for entry in zoo::entries() {
        let full = (entry.build)(&ZooOptions::default())?;
        let base = (entry.build)(&ZooOptions {
            include_top: false,
            ..ZooOptions::default()
        })?;
        let pretrained = (entry.pretrained)();
        let [h, w] = pretrained.input_size;
        let [th, tw] = pretrained.for_transfer(None).input_size;
        println!(
            "{:<20} {:>13} {:>11} {:>9} {:>9}  {}",
            entry.name,
            retrain::model::group_thousands(full.param_count()),
            retrain::model::group_thousands(base.param_count()),
            format!("{h}x{w}"),
            format!("{th}x{tw}"),
            entry.description
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn summary(args: SummaryArgs) -> Result<ExitCode> {
    let model = args.model.load()?;
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

/// Graph directions on the command line.
#[derive(Clone, Copy, ValueEnum)]
pub enum RankDirArg {
    #[value(name = "TB")]
    Tb,
    #[value(name = "BT")]
    Bt,
    #[value(name = "LR")]
    Lr,
    #[value(name = "RL")]
    Rl,
}

#[derive(Args)]
pub struct PlotArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output file: .svg, .png or .dot.
    #[arg(long, short)]
    output: std::path::PathBuf,
    #[arg(long, value_enum, default_value = "TB")]
    rankdir: RankDirArg,
    /// Output shapes in each box.
    #[arg(long)]
    show_shapes: bool,
    /// Trainable Y/N in each box with weights.
    #[arg(long)]
    show_trainable: bool,
    /// Layers of nested models and blocks, with residual connections.
    #[arg(long)]
    expand_nested: bool,
}

pub fn plot(args: PlotArgs) -> Result<ExitCode> {
    let model = args.model.load()?;
    let options = PlotOptions {
        rankdir: match args.rankdir {
            RankDirArg::Tb => RankDir::TB,
            RankDirArg::Bt => RankDir::BT,
            RankDirArg::Lr => RankDir::LR,
            RankDirArg::Rl => RankDir::RL,
        },
        show_shapes: args.show_shapes,
        show_trainable: args.show_trainable,
        expand_nested: args.expand_nested,
    };
    plot_model(&model, &options, &args.output)?;
    println!("wrote '{}'", args.output.display());
    Ok(ExitCode::SUCCESS)
}

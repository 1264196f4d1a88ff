//! `retrain fit`: feature extraction, fine-tuning, resuming.

use super::data::decode;
use super::progress::Reporter;
use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use retrain::data::folder::{ImageFolder, SplitRule};
use retrain::layers::{Layer, Precision};
use retrain::train::head::{transfer_model, unfreeze, HeadConfig, HeadPooling, Unfreeze};
use retrain::train::optimizer::OptimizerKind;
use retrain::train::run::RunDir;
use retrain::train::schedule::LrSchedule;
use retrain::train::{fit, FitConfig, TrainingSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Clone, Copy, ValueEnum)]
pub enum OptimizerArg {
    Adam,
    Adamw,
    Sgd,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum HeadArg {
    Gap,
    Flatten,
    Max,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ScheduleArg {
    Constant,
    Cosine,
}

#[derive(Args)]
pub struct FitArgs {
    /// Image folder: train/ and val/ (or validation/) with one subfolder per class, or class
    /// folders directly (split with --val-split).
    data: PathBuf,
    /// Pretrained base from the zoo (feature extraction).
    #[arg(long, conflicts_with = "from")]
    base: Option<String>,
    /// ImageNet weights for the base (.pth / .safetensors / Keras .h5), or `imagenet` to
    /// download the published ones into the cache.
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Square input size the base runs at (default: the base's transfer size, e.g. 288 for
    /// efficientnet_lite0, which was trained at 224; `retrain models` lists them).
    #[arg(long, conflicts_with = "from")]
    image_size: Option<usize>,
    /// Fine-tune the model of this run directory.
    #[arg(long)]
    from: Option<PathBuf>,
    /// Continue the run in --out from its last completed epoch.
    #[arg(long)]
    resume: bool,
    /// Run directory to write.
    #[arg(long, short)]
    out: PathBuf,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Learning rate (default 1e-3; for --from, 10x lower than that run's).
    #[arg(long)]
    lr: Option<f64>,
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: OptimizerArg,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    momentum: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    #[arg(long, value_enum, default_value = "gap")]
    head: HeadArg,
    /// Hidden Dense layer width in the head.
    #[arg(long)]
    hidden: Option<usize>,
    /// Dropout before the last Dense layer.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Early stopping: epochs without a lower val_loss.
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long, value_enum, default_value = "constant")]
    lr_schedule: ScheduleArg,
    /// Warm-up epochs of the cosine schedule.
    #[arg(long, default_value_t = 1.0)]
    warmup_epochs: f64,
    /// Validation fraction per class when DATA has no val/ folder.
    #[arg(long, default_value_t = 0.2)]
    val_split: f64,
    /// Random resized crop + flip (default: on for fine-tuning, off for feature extraction).
    #[arg(long, conflicts_with = "no_augment")]
    augment: bool,
    #[arg(long)]
    no_augment: bool,
    /// Run the frozen prefix every step instead of once per image.
    #[arg(long)]
    no_cache: bool,
    /// Precision of the products of the frozen prefix: f32, or bf16 (weights and inputs rounded
    /// to bf16, sums in f32; the trained layers stay f32). bf16 runs in the f32 kernels for
    /// now, so it gives the same numbers on every CPU but is slower than f32 (about 1.3x).
    #[arg(long, default_value_t = Precision::F32)]
    precision: Precision,
    /// Fine-tuning: unfreeze this layer and everything after it.
    #[arg(long, requires = "from")]
    unfreeze_from: Option<String>,
    /// Fine-tuning: unfreeze the last N blocks.
    #[arg(long, requires = "from", conflicts_with = "unfreeze_from")]
    unfreeze_last_blocks: Option<usize>,
    /// Fine-tuning: keep BatchNorm layers frozen (inference mode) in the unfrozen part.
    #[arg(long)]
    freeze_bn: bool,
}

pub fn run(args: FitArgs) -> Result<ExitCode> {
    let device = retrain::default_device();
    let started = Instant::now();
    let command: Vec<String> = std::env::args().collect();

    let (model, pretrained, class_names, config, run_dir, resume) = if args.resume {
        let run_dir = RunDir::open(&args.out)?;
        let state = run_dir.resume_state()?.with_context(|| {
            format!(
                "'{}' has no saved training state to resume",
                args.out.display()
            )
        })?;
        let (model, file) = run_dir.load_model(&device)?;
        let pretrained = file
            .pretrained
            .context("the run's model.json has no pretrained config")?;
        let config = state.config.clone();
        if state.epochs_done >= config.epochs {
            // A run stopped by a failed last write (a full disk) still has to save its model.
            if run_dir.has_best_weights() {
                run_dir.save_model(&model, &pretrained, &file.class_names, &device)?;
            }
            println!(
                "the run in '{}' already finished all {} epochs",
                args.out.display(),
                config.epochs
            );
            return Ok(ExitCode::SUCCESS);
        }
        (
            model,
            pretrained,
            file.class_names,
            config,
            run_dir,
            Some(state),
        )
    } else {
        if RunDir::has_started(&args.out) {
            bail!(
                "'{}' already holds a run; use --resume to continue it or choose another --out",
                args.out.display()
            );
        }
        let folder = ImageFolder::scan(
            &args.data,
            SplitRule {
                val_split: args.val_split,
                seed: args.seed,
            },
        )?;
        let augment = (args.augment || args.from.is_some()) && !args.no_augment;
        let optimizer = match args.optimizer {
            OptimizerArg::Adam => OptimizerKind::Adam,
            OptimizerArg::Adamw => OptimizerKind::AdamW {
                weight_decay: args.weight_decay,
            },
            OptimizerArg::Sgd => OptimizerKind::Sgd {
                momentum: args.momentum,
            },
        };
        let schedule = match args.lr_schedule {
            ScheduleArg::Constant => LrSchedule::Constant,
            ScheduleArg::Cosine => LrSchedule::Cosine {
                warmup_epochs: args.warmup_epochs,
            },
        };
        let mut config = FitConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr.unwrap_or(1e-3),
            optimizer,
            schedule,
            patience: args.patience,
            seed: args.seed,
            augment,
            cache: !args.no_cache,
            val_split: args.val_split,
            precision: args.precision,
            ..FitConfig::default()
        };
        let (model, pretrained) = if let Some(from) = &args.from {
            let source = RunDir::open(from)?;
            let (model, file) = source.load_model(&device)?;
            if file.class_names != folder.class_names {
                bail!(
                    "'{}' was trained on classes {:?}, the data has {:?}",
                    from.display(),
                    file.class_names,
                    folder.class_names
                );
            }
            let rule = match (&args.unfreeze_from, args.unfreeze_last_blocks) {
                (Some(name), _) => Unfreeze::From(name.clone()),
                (None, Some(n)) => Unfreeze::LastBlocks(n),
                (None, None) => {
                    bail!("fine-tuning needs --unfreeze-from LAYER or --unfreeze-last-blocks N")
                }
            };
            let first = unfreeze(&model, &rule, args.freeze_bn)?;
            println!("fine-tuning from '{first}' on");
            if args.lr.is_none() {
                let previous = source.resume_state()?.map_or(1e-3, |s| s.config.lr);
                config.lr = previous / 10.0;
            }
            (
                model,
                file.pretrained
                    .context("the run's model.json has no pretrained config")?,
            )
        } else {
            let base = args
                .base
                .as_deref()
                .context("give --base NAME (see `retrain models`) or --from RUN_DIR")?;
            let weights = args.weights.as_deref().with_context(|| {
                format!("give --weights FILE with ImageNet weights for '{base}', or --weights imagenet to download them")
            })?;
            let weights = &super::weights::resolve(base, weights)?;
            let head = HeadConfig {
                pooling: match args.head {
                    HeadArg::Gap => HeadPooling::Gap,
                    HeadArg::Flatten => HeadPooling::Flatten,
                    HeadArg::Max => HeadPooling::Max,
                },
                hidden: args.hidden,
                dropout: args.dropout,
            };
            transfer_model(
                base,
                weights,
                &head,
                folder.class_names.len(),
                args.image_size.map(|size| [size; 2]),
                &device,
            )?
        };
        let run_dir = RunDir::create(&args.out)?;
        (model, pretrained, folder.class_names, config, run_dir, None)
    };
    let _writer = run_dir.lock()?;
    run_dir.remove_stale_temporaries()?;
    run_dir.write_command(&command)?;

    let folder = ImageFolder::scan(
        &args.data,
        SplitRule {
            val_split: config.val_split,
            seed: config.seed,
        },
    )?;
    if folder.class_names != class_names {
        bail!(
            "the data's classes {:?} differ from the run's {:?}",
            folder.class_names,
            class_names
        );
    }
    println!(
        "{} classes ({}), {} training and {} validation files",
        class_names.len(),
        class_names.join(", "),
        folder.train.len(),
        folder.val.len()
    );
    let (train, train_skipped) = decode("training", &folder.train, &class_names, &pretrained)?;
    let (val, val_skipped) = decode("validation", &folder.val, &class_names, &pretrained)?;
    let [h, w] = pretrained.input_size;
    model.build(retrain::Shape::image(Some(h), Some(w), 3))?;
    let trainable: usize = model.trainable_variables().iter().map(|v| v.numel()).sum();
    println!(
        "model '{}': {} parameters, {} trainable",
        model.name(),
        retrain::model::group_thousands(model.param_count()),
        retrain::model::group_thousands(trainable)
    );

    let mut reporter = Reporter::new(config.epochs);
    super::progress::handle_ctrl_c();
    let outcome = fit(
        &model,
        &TrainingSet {
            train: &train,
            val: &val,
            class_names: &class_names,
            pretrained: &pretrained,
        },
        &config,
        Some(&run_dir),
        resume,
        &device,
        &mut |e| reporter.event(e),
    );
    reporter.finish();
    let outcome = outcome?;
    if outcome.interrupted {
        return Ok(ExitCode::from(130));
    }
    let best = outcome
        .history
        .iter()
        .find(|m| m.epoch == outcome.best_epoch)
        .cloned();
    if let Some(best) = best {
        println!(
            "best epoch {}: val_loss {:.4}, val_accuracy {:.4}; model saved in '{}' ({:.1}s in all, {:.1}s computing the frozen prefix once)",
            best.epoch,
            best.val_loss,
            best.val_accuracy,
            run_dir.path().display(),
            started.elapsed().as_secs_f64(),
            outcome.prefix_seconds
        );
    }
    if train_skipped + val_skipped > 0 {
        println!(
            "skipped {} training and {} validation file(s) that are not usable images (listed above)",
            train_skipped, val_skipped
        );
    }
    Ok(ExitCode::SUCCESS)
}

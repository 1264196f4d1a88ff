//! `retrain evaluate RUN_DIR DATA`.

use super::data::decode;
use anyhow::{Context as _, Result};
use clap::Args;
use retrain::data::folder::ImageFolder;
use retrain::train::evaluate::evaluate;
use retrain::train::report::{confusion_png, curves_png};
use retrain::train::run::RunDir;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct EvaluateArgs {
    /// Run directory of a trained model.
    run: PathBuf,
    /// Folder of class folders (its val/ split when it has one).
    data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Also write confusion_matrix.png and training_curves.png into this folder.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
}

pub fn run(args: EvaluateArgs) -> Result<ExitCode> {
    let device = retrain::default_device();
    let run = RunDir::open(&args.run)?;
    let (model, file) = run.load_model(&device)?;
    let pretrained = file
        .pretrained
        .context("the run's model.json has no pretrained config")?;
    let samples = ImageFolder::labelled_files(&args.data, &file.class_names)?;
    let (items, _) = decode("evaluation", &samples, &file.class_names, &pretrained)?;
    let report = evaluate(
        &model,
        &items,
        &file.class_names,
        &pretrained,
        args.batch_size,
        &device,
    )?;
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        confusion_png(&report.confusion, &dir.join("confusion_matrix.png"))?;
        curves_png(&run.history()?, &dir.join("training_curves.png"))?;
        eprintln!(
            "wrote confusion_matrix.png and training_curves.png in '{}'",
            dir.display()
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} images - loss: {:.4} - accuracy: {:.4}\n",
        items.len(),
        report.loss,
        report.accuracy
    );
    println!(
        "{:>16} {:>9} {:>9} {:>9} {:>8}",
        "class", "precision", "recall", "f1", "support"
    );
    for c in &report.per_class {
        println!(
            "{:>16} {:>9.4} {:>9.4} {:>9.4} {:>8}",
            c.class, c.precision, c.recall, c.f1, c.support
        );
    }
    println!("\n{}", report.confusion.table());
    Ok(ExitCode::SUCCESS)
}

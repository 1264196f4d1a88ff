//! The `retrain` command line: a thin layer over the `retrain` library.

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Transfer learning on images: pretrained ImageNet networks, your pictures, one binary.
#[derive(Parser)]
#[command(name = "retrain", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the model zoo with parameter counts and input sizes.
    Models,
    /// Print a summary like Keras, of a zoo model or of a run directory's model.
    Summary(commands::zoo::SummaryArgs),
    /// Draw the layer graph as SVG, PNG or DOT.
    Plot(commands::zoo::PlotArgs),
    /// Train a classifier on an image folder: feature extraction, fine-tuning, resuming.
    Fit(Box<commands::fit::FitArgs>),
    /// Accuracy, loss, per-class precision / recall / F1 and confusion matrix of a run.
    Evaluate(commands::evaluate::EvaluateArgs),
    /// Classify images with a trained run, or with a zoo model's ImageNet classifier.
    Predict(commands::predict::PredictArgs),
    /// Pooled features of every image of a folder, as safetensors.
    Extract(commands::extract::ExtractArgs),
}

/// Die quietly on a closed stdout (`retrain models | head`) like other Unix tools, instead of
/// Rust's default of ignoring SIGPIPE and panicking in `println!`. Run files are written
/// atomically, so being stopped here loses nothing.
#[cfg(unix)]
fn restore_default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn restore_default_sigpipe() {}

fn main() -> ExitCode {
    retrain::allocator::keep_freed_memory();
    restore_default_sigpipe();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models => commands::zoo::models(),
        Command::Summary(args) => commands::zoo::summary(args),
        Command::Plot(args) => commands::zoo::plot(args),
        Command::Fit(args) => commands::fit::run(*args),
        Command::Evaluate(args) => commands::evaluate::run(args),
        Command::Predict(args) => commands::predict::run(args),
        Command::Extract(args) => commands::extract::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

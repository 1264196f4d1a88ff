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
    /// Print a model's summary like Keras.
    Summary(commands::SummaryArgs),
    /// Classify images with a pretrained ImageNet model.
    Predict(commands::PredictArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models => commands::models(),
        Command::Summary(args) => commands::summary(args),
        Command::Predict(args) => commands::predict(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

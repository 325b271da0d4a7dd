//! `kiln`: the command line over Kiln's crates.

mod device;
mod eval;
mod models;
mod predict;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Vision transformers without Python: list models, predict, train, evaluate.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every registered model with its parameter count and evaluation defaults.
    Models(models::Args),
    /// Classify images with a registered model.
    Predict(predict::Args),
    /// Train an experiment described by a TOML file (see configs/).
    Train(train::Args),
    /// Evaluate weights on an experiment's validation data.
    Eval(eval::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(args) => models::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // one line (plus causes), never a panic backtrace
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

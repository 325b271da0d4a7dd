//! `kiln train`: run an experiment file.

use std::path::PathBuf;

use anyhow::Result;
use kiln_train::train::{TrainOptions, train};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment file (TOML), e.g. configs/quickstart.toml.
    config: PathBuf,
    /// Override a value: --set optim.lr=1e-3 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Validate and print the resolved configuration, without training.
    #[arg(long)]
    dry_run: bool,
    /// Continue from the run directory's checkpoints/last.
    #[arg(long)]
    resume: bool,
    /// Write the run here instead of logging.output_dir (runs/<config name>).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Stop after this many optimiser steps (a checkpoint is written; --resume continues).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Train data-parallel on these GPUs of this machine, e.g. cuda:0,cuda:1 (train.devices;
    /// needs a kiln built with --features cuda). Across processes or machines, use mpirun.
    #[arg(long, value_delimiter = ',', value_name = "DEVICE,...")]
    devices: Vec<String>,
}

pub fn run(args: Args) -> Result<()> {
    let mut overrides = args.set;
    if !args.devices.is_empty() {
        overrides.push(format!("train.devices={:?}", args.devices));
    }
    if let Some(dir) = &args.output_dir {
        overrides.push(format!("logging.output_dir={:?}", dir.display().to_string()));
    }
    let resolved = kiln_train::config::load(&args.config, &overrides)?;
    if args.dry_run {
        print!("{}", resolved.to_toml());
        return Ok(());
    }
    let options = TrainOptions { resume: args.resume, max_steps: args.max_steps, quiet: false };
    let summary = train(&resolved, &options)?;
    if summary.rank != 0 {
        return Ok(());
    }
    match &summary.last_eval {
        Some(eval) => {
            println!("done: {} steps in {:.0} s; {}; run in {}", summary.steps, summary.seconds, eval.line, summary.run_dir.display())
        }
        None => println!("stopped after {} steps; resume with --resume; run in {}", summary.steps, summary.run_dir.display()),
    }
    Ok(())
}

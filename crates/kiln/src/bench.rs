//! `kiln bench`: images/s of training or inference for one model, so changes can be compared
//! (`scripts/bench_timm.py` measures PyTorch+timm the same way).

use std::path::PathBuf;

use anyhow::Result;
use kiln_models::find;
use kiln_train::config::schema::Precision;
use kiln_train::bench::{BenchMode, BenchOptions, BenchReport, bench, default_experiment};

use crate::device;

#[derive(clap::Args)]
pub struct Args {
    /// Registered model name (see `kiln models`).
    #[arg(long, required_unless_present = "config")]
    model: Option<String>,
    /// Take the model (with its `[model.arch]` overrides), batch size and device from an
    /// experiment file instead, e.g. configs/quickstart.toml.
    #[arg(long, conflicts_with = "model")]
    config: Option<PathBuf>,
    /// Images per step (default 16, or the experiment's batch size).
    #[arg(long)]
    batch: Option<usize>,
    /// Input size (square; default the model's).
    #[arg(long)]
    img_size: Option<usize>,
    /// Classes of the head (default the model's or the experiment's).
    #[arg(long)]
    num_classes: Option<usize>,
    /// train (the trainer's step: forward, loss, backward, optimiser step), infer, both, or data (the experiment's
    /// training loader alone, needs --config).
    #[arg(long, default_value = "both", value_parser = ["train", "infer", "both", "data"])]
    mode: String,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// flex (CPU) or wgpu (GPU).
    #[arg(long)]
    device: Option<String>,
    /// f32, or bf16 as `train.precision = "bf16"` trains (default the experiment's, or f32).
    #[arg(long, value_parser = ["f32", "bf16"])]
    precision: Option<String>,
    /// One JSON object per measurement per line.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let (name, mut config, mut experiment, batch, device_name) = match (&args.model, &args.config) {
        (_, Some(path)) => {
            let resolved = kiln_train::config::load(path, &[])?;
            let exp = resolved.experiment.clone();
            (exp.model.name.clone(), resolved.model.clone(), exp.clone(), exp.data.batch_size, exp.train.device.clone())
        }
        (Some(name), None) => {
            let entry = find(name)?;
            (entry.name.to_string(), (entry.config)(), default_experiment(entry.name), 16, "flex".to_string())
        }
        (None, None) => unreachable!("clap requires --model or --config"),
    };
    if let Some(size) = args.img_size {
        config.set_img_size([size, size]);
    }
    if let Some(n) = args.num_classes {
        config.set_num_classes(n);
    }
    match args.precision.as_deref() {
        Some("bf16") => experiment.train.precision = Precision::Bf16,
        Some(_) => experiment.train.precision = Precision::F32,
        None => {}
    }
    if args.mode == "data" {
        let Some(path) = &args.config else { anyhow::bail!("--mode data times an experiment's loader: give --config FILE") };
        let resolved = kiln_train::config::load(path, &[])?;
        let opts = BenchOptions { batch: resolved.experiment.data.batch_size, warmup: args.warmup, steps: args.steps.max(1), mode: BenchMode::Data };
        print_report(&kiln_train::bench::bench_loader(&resolved, &opts)?, args.json);
        return Ok(());
    }
    let device_name = args.device.as_deref().unwrap_or(&device_name);
    if let Some(why) = kiln_train::precision::unsupported(experiment.train.precision, device_name.split(':').next().unwrap_or_default()) {
        anyhow::bail!("--precision: {why}");
    }
    let device = device::parse(device_name)?;
    let collective = kiln_train::launcher::from_launcher()?;
    let modes = match args.mode.as_str() {
        "train" => vec![BenchMode::Train],
        "infer" => vec![BenchMode::Infer],
        _ => vec![BenchMode::Train, BenchMode::Infer],
    };
    for mode in modes {
        let opts = BenchOptions { batch: args.batch.unwrap_or(batch), warmup: args.warmup, steps: args.steps.max(1), mode };
        let report = bench(&name, config.clone(), &experiment, &device, &opts, collective.as_ref())?;
        if collective.rank() == 0 {
            print_report(&report, args.json);
        }
    }
    Ok(())
}

fn print_report(r: &BenchReport, json: bool) {
    if json {
        println!("{}", serde_json::to_string(r).expect("report serialises"));
        return;
    }
    let mode = match r.mode {
        BenchMode::Train => "train",
        BenchMode::Infer => "infer",
        BenchMode::Data => "data loader",
    };
    let memory = r.peak_rss_mib.map(|m| format!("{m:.0} MiB")).unwrap_or_else(|| "n/a".into());
    let ranks = if r.ranks > 1 { format!(" x {} ranks", r.ranks) } else { String::new() };
    let precision = if r.precision == Precision::Bf16 { " bf16" } else { "" };
    println!(
        "{} {mode}{precision} batch {}{ranks} {}x{}: {:.1} images/s  step {:.0} ms (min {:.0}, max {:.0})  peak RSS {memory}  ({})",
        r.model, r.batch, r.img_size[0], r.img_size[1], r.images_per_s, r.step_ms_median, r.step_ms_min, r.step_ms_max, r.matrix_products
    );
    if let (Some(sync), Some(raw)) = (r.sync_ms_median, r.allreduce_ms_median) {
        println!("  gradient averaging {sync:.1} ms per step; MPI's in-place all-reduce of as many floats {raw:.1} ms ({:.2}x)", sync / raw);
    }
}

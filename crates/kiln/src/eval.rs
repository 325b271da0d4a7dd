//! `kiln eval`: some weights on an experiment's validation data. Classification: top-1/top-5,
//! per-class accuracy and a confusion matrix; segmentation: mIoU, aAcc, mAcc and a per-class
//! IoU table. Either way `eval.json`, and one `eval` record appended to `metrics.jsonl`, in the
//! output directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use kiln_train::config::{ResolvedConfig, Task};
use kiln_train::tasks::classify::{evaluate_weights, write_confusion_png};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment file (TOML): which model, which data, which preprocessing.
    config: PathBuf,
    /// A Kiln checkpoint (model.bpk), or a timm state dict for a classifier.
    #[arg(long)]
    weights: PathBuf,
    /// Override a value: --set data.root=... (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where eval.json, metrics.jsonl (and confusion.png) go (default: next to the weights).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let resolved = kiln_train::config::load(&args.config, &args.set)?;
    let out = args.output_dir.clone().unwrap_or_else(|| args.weights.parent().map(PathBuf::from).unwrap_or_default());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let record = match resolved.experiment.task {
        Task::Classification => classification(&resolved, &args.weights, &out)?,
        Task::Segmentation => segmentation(&resolved, &args.weights, &out)?,
    };
    let log = out.join("metrics.jsonl");
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&log).with_context(|| format!("opening {}", log.display()))?;
    writeln!(file, "{record}").with_context(|| format!("writing {}", log.display()))?;
    println!("results in {} (and a record in {})", out.join("eval.json").display(), log.display());
    Ok(())
}

fn write_json(out: &Path, json: &serde_json::Value) -> Result<()> {
    let path = out.join("eval.json");
    let partial = out.join("eval.json.partial");
    std::fs::write(&partial, serde_json::to_string_pretty(json)?).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, &path).with_context(|| format!("writing {}", path.display()))
}

fn classification(resolved: &ResolvedConfig, weights: &Path, out: &Path) -> Result<serde_json::Value> {
    let (result, classes) = evaluate_weights(resolved, weights)?;
    let per_class: serde_json::Map<String, serde_json::Value> =
        classes.iter().zip(&result.per_class).map(|(c, a)| (c.clone(), (*a).into())).collect();
    write_json(
        out,
        &serde_json::json!({
            "weights": weights.display().to_string(), "top1": result.top1, "top5": result.top5,
            "loss": result.loss, "per_class": per_class, "confusion": result.confusion,
        }),
    )?;
    write_confusion_png(&result.confusion, &out.join("confusion.png"))?;
    println!("top-1 {:.2}%  top-5 {:.2}%  loss {:.4}", 100.0 * result.top1, 100.0 * result.top5, result.loss);
    for (class, accuracy) in classes.iter().zip(&result.per_class) {
        println!("  {class:<24} {:.2}%", 100.0 * accuracy);
    }
    Ok(serde_json::json!({ "kind": "eval", "weights": weights.display().to_string(), "top1": result.top1, "top5": result.top5, "loss": result.loss }))
}

fn segmentation(resolved: &ResolvedConfig, weights: &Path, out: &Path) -> Result<serde_json::Value> {
    let (result, classes) = kiln_train::tasks::segment::evaluate_weights(resolved, weights)?;
    let m = &result.metrics;
    let per_class: Vec<serde_json::Value> = classes
        .names
        .iter()
        .enumerate()
        .map(|(i, name)| serde_json::json!({ "class": name, "IoU": m.iou[i], "Acc": m.acc[i] }))
        .collect();
    write_json(
        out,
        &serde_json::json!({
            "weights": weights.display().to_string(), "mIoU": m.miou, "aAcc": m.aacc, "mAcc": m.macc,
            "loss": result.loss, "per_class": per_class, "confusion": result.confusion.rows(),
        }),
    )?;
    println!("mIoU {:.2}%  aAcc {:.2}%  mAcc {:.2}%  loss {:.4}", 100.0 * m.miou, 100.0 * m.aacc, 100.0 * m.macc, result.loss);
    println!("  {:<24} {:>7} {:>7}", "class", "IoU", "Acc");
    let percent = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{:.2}", 100.0 * v));
    for (i, name) in classes.names.iter().enumerate() {
        println!("  {name:<24} {:>7} {:>7}", percent(m.iou[i]), percent(m.acc[i]));
    }
    Ok(serde_json::json!({
        "kind": "eval", "weights": weights.display().to_string(), "mIoU": m.miou, "aAcc": m.aacc, "mAcc": m.macc, "loss": result.loss,
    }))
}

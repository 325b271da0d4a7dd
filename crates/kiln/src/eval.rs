//! `kiln eval`: top-1/top-5, per-class accuracy and a confusion matrix for some weights on an
//! experiment's validation data.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_train::train::{evaluate_weights, write_confusion_png};

#[derive(clap::Args)]
pub struct Args {
    /// Experiment file (TOML): which model, which data, which preprocessing.
    config: PathBuf,
    /// A Kiln checkpoint (model.bpk) or a timm state dict.
    #[arg(long)]
    weights: PathBuf,
    /// Override a value: --set data.root=... (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Where eval.json and confusion.png go (default: next to the weights).
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    let resolved = kiln_train::config::load(&args.config, &args.set)?;
    let (result, classes) = evaluate_weights(&resolved, &args.weights)?;
    let out = args.output_dir.unwrap_or_else(|| args.weights.parent().map(PathBuf::from).unwrap_or_default());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let per_class: serde_json::Map<String, serde_json::Value> =
        classes.iter().zip(&result.per_class).map(|(c, a)| (c.clone(), (*a).into())).collect();
    let json = serde_json::json!({
        "weights": args.weights.display().to_string(), "top1": result.top1, "top5": result.top5,
        "loss": result.loss, "per_class": per_class, "confusion": result.confusion,
    });
    let json_path = out.join("eval.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&json)?).with_context(|| format!("writing {}", json_path.display()))?;
    write_confusion_png(&result.confusion, &out.join("confusion.png"))?;
    println!("top-1 {:.2}%  top-5 {:.2}%  loss {:.4}", 100.0 * result.top1, 100.0 * result.top5, result.loss);
    for (class, accuracy) in classes.iter().zip(&result.per_class) {
        println!("  {class:<24} {:.2}%", 100.0 * accuracy);
    }
    println!("results in {} and {}", json_path.display(), out.join("confusion.png").display());
    Ok(())
}

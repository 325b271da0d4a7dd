//! `kiln models`: the registry with exact parameter counts.

use anyhow::Result;
use burn::prelude::Device;
use kiln_models::{LoadedModel, registry};
use serde::Serialize;

#[derive(clap::Args)]
pub struct Args {
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    name: &'static str,
    family: &'static str,
    params: usize,
    input_size: [usize; 3],
    crop_pct: f64,
    interpolation: &'static str,
    mean: [f64; 3],
    std: [f64; 3],
    num_classes: usize,
}

pub fn run(args: Args) -> Result<()> {
    let device = Device::flex();
    let mut rows = Vec::new();
    for entry in registry() {
        // counted on a built model, so the number is the modules', not a formula's
        let model = LoadedModel::build(entry.name, (entry.config)(), &device)?;
        let family = entry.family();
        let p = entry.pretrained;
        rows.push(Row {
            name: entry.name,
            family,
            params: model.num_params(),
            input_size: p.input_size,
            crop_pct: p.crop_pct,
            interpolation: p.interpolation,
            mean: p.mean,
            std: p.std,
            num_classes: p.num_classes,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    println!("{:<34} {:<8} {:>13} {:<13} {:>8} {:<13} {:>7}", "name", "family", "params", "input_size", "crop_pct", "interpolation", "classes");
    for r in rows {
        let size = format!("{}x{}x{}", r.input_size[0], r.input_size[1], r.input_size[2]);
        println!(
            "{:<34} {:<8} {:>13} {:<13} {:>8} {:<13} {:>7}",
            r.name, r.family, group_thousands(r.params), size, r.crop_pct, r.interpolation, r.num_classes
        );
    }
    Ok(())
}

fn group_thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

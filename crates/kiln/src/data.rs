//! `kiln data`: data sets Kiln writes itself.

use std::path::PathBuf;

use anyhow::Result;
use kiln_data::{FashionScenesConfig, generate_fashion_scenes};

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Compose Fashion-MNIST articles onto canvases and write them as a segmentation data set
    /// in the ADE20K layout (the segmentation quickstart's data); deterministic for a seed.
    FashionScenes(FashionScenesArgs),
}

#[derive(clap::Args)]
struct FashionScenesArgs {
    /// Where the ADE20K layout is written.
    #[arg(long, default_value = "datasets/fashion-scenes")]
    out: PathBuf,
    /// Fashion-MNIST's idx files.
    #[arg(long, default_value = "datasets/fashion-mnist")]
    fashion_mnist: PathBuf,
    /// Training images (from Fashion-MNIST's training split).
    #[arg(long, default_value_t = 10000)]
    train: usize,
    /// Validation images (from Fashion-MNIST's test split).
    #[arg(long, default_value_t = 500)]
    val: usize,
    /// Seed of every placement.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::FashionScenes(a) => {
            let mut config = FashionScenesConfig::new(&a.out, &a.fashion_mnist);
            (config.train, config.val, config.seed) = (a.train, a.val, a.seed);
            let started = std::time::Instant::now();
            let summary = generate_fashion_scenes(&config)?;
            println!(
                "wrote {} training and {} validation scenes to {} in {:.1} s",
                summary.training.images,
                summary.validation.images,
                summary.out.display(),
                started.elapsed().as_secs_f64()
            );
            println!("  {:<14} {:>9} {:>11}", "class", "train px", "val px");
            for (i, class) in summary.classes.iter().enumerate() {
                let share = |s: &kiln_data::SplitSummary| 100.0 * s.pixel_share.get(i).copied().unwrap_or(0.0);
                println!("  {class:<14} {:>8.2}% {:>10.2}%", share(&summary.training), share(&summary.validation));
            }
            Ok(())
        }
    }
}

//! `kiln`: the command line over Kiln's crates.

mod bench;
mod data;
mod device;
mod eval;
mod models;
mod predict;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

// glibc's malloc hands large tensor buffers back to the kernel and page-faults them in again
// on every step (a quarter of a small model's training step); mimalloc, told never to purge,
// keeps them for the next step.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mi_option_e` index, v2 and v3 alike).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Vision transformers without Python: list models, predict, train, evaluate, benchmark.
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
    /// Measure training and inference throughput (images/s) and peak memory of a model.
    Bench(bench::Args),
    /// Write data sets Kiln generates (`kiln data fashion-scenes`).
    Data(data::Args),
}

fn main() -> ExitCode {
    // SAFETY: sets a documented option (-1: never purge) before any other thread exists
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    #[cfg(feature = "wgpu")]
    quiet_wayland_probe();
    // the BLAS's one-time set-up (its kernel choice) while this is the only thread
    kiln_nn::matrix_products();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(args) => models::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data(args) => data::run(args),
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

/// wgpu's Vulkan loader asks Mesa for its window-system surfaces, and libwayland prints `error:
/// XDG_RUNTIME_DIR is invalid or not set in the environment.` (several times) where the
/// variable is unset, as on servers and in containers: it reads like a failure but is only a
/// display probe Kiln has no use for. Pointing the variable at a private empty directory makes
/// the probe find no display quietly.
#[cfg(feature = "wgpu")]
fn quiet_wayland_probe() {
    use std::os::unix::fs::DirBuilderExt;
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    // SAFETY: getuid has no preconditions and cannot fail
    let dir = std::env::temp_dir().join(format!("kiln-runtime-{}", unsafe { libc::getuid() }));
    if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() || dir.is_dir() {
        // SAFETY: before any other thread exists (the first lines of main)
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

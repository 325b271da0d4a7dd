//! Kiln's trainer.
//!
//! For now this crate holds the experiment configuration ([`config`]): TOML files with
//! mmsegmentation-style `_base_` inheritance, `--set key=value` overrides, typed sections with
//! timm's defaults, and errors that name the file, the key and the line. The training loop,
//! optimisers, schedules, tasks and checkpoints will join it.
//!
//! ```no_run
//! # fn main() -> Result<(), kiln_train::config::ConfigError> {
//! let resolved = kiln_train::config::load("configs/quickstart.toml", &["optim.lr=1e-3".to_string()])?;
//! print!("{}", resolved.to_toml()); // what `kiln train --dry-run` shows
//! # Ok(())
//! # }
//! ```

pub mod config;

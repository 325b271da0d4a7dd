//! Kiln's trainer: experiment configuration ([`config`]: TOML with mmsegmentation-style
//! `_base_` inheritance, `--set key=value` overrides, errors naming file, key and line), the
//! data an experiment describes ([`data`]), the learning-rate schedule ([`schedule`]), the loop
//! shared by every task ([`train_loop`], which knows the [`train_loop::Task`] trait and a
//! [`network::Network`]), the tasks above it ([`tasks`]: classification, segmentation), and
//! [`train::train`], which hands an experiment's task to the loop.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let resolved = kiln_train::config::load("configs/quickstart.toml", &["optim.lr=1e-3".to_string()])?;
//! let summary = kiln_train::train::train(&resolved, &Default::default())?;
//! println!("top-1 {:?}", summary.last_eval.and_then(|e| e.metric("top1")));
//! # Ok(())
//! # }
//! ```

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod device;
pub mod distributed;
pub mod ema;
pub mod launcher;
pub mod error;
mod metrics_log;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod network;
mod optim;
pub mod plot;
pub mod precision;
pub mod schedule;
pub mod seg_inference;
pub mod seg_metrics;
pub mod tasks;
pub mod train;
pub mod train_loop;

pub use device::device;

//! Kiln's trainer: experiment configuration ([`config`]: TOML with mmsegmentation-style
//! `_base_` inheritance, `--set key=value` overrides, errors naming file, key and line), the
//! data an experiment describes ([`data`]), the learning-rate schedule ([`schedule`]) and the
//! classification loop ([`train`]).
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
pub mod classify;
pub mod config;
pub mod data;
pub mod ema;
pub mod plot;
pub mod schedule;
pub mod segment;
pub mod seg_inference;
pub mod seg_metrics;
pub mod train;

use burn::prelude::Device;

/// The device a config names: `flex` (CPU); `wgpu` when built with the `wgpu` feature.
pub fn device(name: &str) -> Result<Device, config::ConfigError> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        other => Err(config::ConfigError::BadOverride {
            arg: format!("train.device = {other:?}"),
            message: "unknown device: use \"flex\" (CPU), or \"wgpu\" with a kiln built with --features wgpu".into(),
        }),
    }
}

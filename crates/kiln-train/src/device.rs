//! The device an experiment or a command names.

use burn::prelude::Device;

use crate::config::ConfigError;

/// The device a config names: `flex` (CPU); `wgpu` when built with the `wgpu` feature.
pub fn device(name: &str) -> Result<Device, ConfigError> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        other => Err(ConfigError::BadOverride {
            arg: format!("train.device = {other:?}"),
            message: "unknown device: use \"flex\" (CPU), or \"wgpu\" with a kiln built with --features wgpu".into(),
        }),
    }
}

//! The device an experiment or a command names: the one parser of device names.

use burn::prelude::Device;

use crate::config::ConfigError;

/// The device `name` names: `flex` (or `cpu`), `wgpu`, `cuda` or `cuda:N`; the GPU backends
/// exist when kiln is built with the `wgpu` or `cuda` feature.
pub fn device(name: &str) -> Result<Device, ConfigError> {
    let (kind, index) = name.split_once(':').map_or((name, None), |(kind, index)| (kind, Some(index)));
    let index = match index.map(str::parse::<usize>) {
        None => None,
        Some(Ok(index)) => Some(index),
        Some(Err(_)) => return Err(unknown(name, "the index after `:` must be a number, as in cuda:1")),
    };
    match (kind, index) {
        ("flex" | "cpu", None) => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        ("wgpu", None) => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(feature = "cuda")]
        ("cuda", index) => Ok(Device::cuda(index.unwrap_or(0))),
        #[cfg(not(feature = "wgpu"))]
        ("wgpu", None) => Err(built_without(name, "wgpu")),
        #[cfg(not(feature = "cuda"))]
        ("cuda", _) => Err(built_without(name, "cuda")),
        _ => Err(unknown(name, "use \"flex\" (CPU), \"wgpu\", or \"cuda\" / \"cuda:N\"")),
    }
}

fn unknown(name: &str, message: &str) -> ConfigError {
    ConfigError::BadOverride { arg: format!("device {name:?}"), message: message.into() }
}

fn built_without(name: &str, feature: &str) -> ConfigError {
    unknown(name, &format!("this kiln was built without `{feature}`: rebuild with `cargo build --release --features {feature}`"))
}

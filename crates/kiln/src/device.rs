//! Backend selection at run time.

use anyhow::{Result, bail};
use burn::prelude::Device;

/// The device named on the command line: `flex` (CPU, default) or `wgpu` (GPU, when built
/// with `--features wgpu`).
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        "wgpu" => wgpu(),
        other => bail!("unknown device '{other}': use flex (CPU) or wgpu (GPU)"),
    }
}

#[cfg(feature = "wgpu")]
fn wgpu() -> Result<Device> {
    Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu() -> Result<Device> {
    bail!("this kiln was built without GPU support: rebuild with `cargo build --release --features wgpu`")
}

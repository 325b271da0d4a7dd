//! Backend selection at run time: the trainer's one parser of device names.

use anyhow::Result;
use burn::prelude::Device;

/// The device named on the command line: `flex` (CPU, default), `wgpu`, `cuda` or `cuda:N`
/// (when built with `--features wgpu` / `--features cuda`).
pub fn parse(name: &str) -> Result<Device> {
    Ok(kiln_train::device(name)?)
}

//! What the decode heads share: mmseg's `conv_seg` and `ConvModule` builders, shape and
//! dropout checks, and the mmseg key map.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::Initializer;
use burn::prelude::*;
use kiln_nn::{ConvModule, ConvModuleConfig};

use crate::error::ModelError;

/// mmseg's `conv_seg`: a biased 1×1 conv to the classes, weight `N(0, 0.01²)`, bias 0.
pub(crate) fn conv_seg(channels: usize, num_classes: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([channels, num_classes], [1, 1])
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
        .init(device);
    conv.bias = conv.bias.map(|_| Initializer::Zeros.init([num_classes], device));
    conv
}

pub(crate) fn conv_module(in_channels: usize, out_channels: usize, kernel_size: usize, device: &Device) -> ConvModule {
    ConvModuleConfig::new(in_channels, out_channels).with_kernel_size(kernel_size).init(device)
}

pub(crate) fn spatial(x: &Tensor<4>) -> [usize; 2] {
    let [_, _, h, w] = x.dims();
    [h, w]
}

pub(crate) fn check_dropout(dropout: f64) -> Result<(), ModelError> {
    if (0.0..1.0).contains(&dropout) {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig(format!("head dropout {dropout} must be in [0, 1)")))
    }
}

/// mmseg's state-dict key of a head parameter -> Kiln's module path, or `None` for buffers
/// Kiln does not keep (`num_batches_tracked`). mmseg's PPM is `ModuleList[Sequential(
/// AdaptiveAvgPool2d, ConvModule)]`, so its convs sit at `psp_modules.{i}.1`; burn's derive holds
/// them at `psp_modules.{i}`. Every other key is the same.
pub fn mmseg_key(key: &str) -> Option<String> {
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    let Some(rest) = key.strip_prefix("psp_modules.") else {
        return Some(key.to_string());
    };
    let (index, tail) = rest.split_once('.')?;
    Some(match tail.strip_prefix("1.") {
        Some(tail) => format!("psp_modules.{index}.{tail}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Three maps of 4, 6 and 8 channels at 8×9, 4×5 and 2×3, finest first.
    pub(crate) fn maps(batch: usize) -> Vec<Tensor<4>> {
        let device = Device::flex();
        [(4, 8), (6, 4), (8, 2)].map(|(c, s)| Tensor::<4>::zeros([batch, c, s, s + 1], &device)).to_vec()
    }

    #[test]
    fn mmseg_keys_map_to_module_paths() {
        assert_eq!(mmseg_key("psp_modules.3.1.conv.weight").as_deref(), Some("psp_modules.3.conv.weight"));
        assert_eq!(mmseg_key("psp_modules.0.1.bn.running_var").as_deref(), Some("psp_modules.0.bn.running_var"));
        assert_eq!(mmseg_key("lateral_convs.2.bn.weight").as_deref(), Some("lateral_convs.2.bn.weight"));
        assert_eq!(mmseg_key("bottleneck.bn.num_batches_tracked"), None);
    }
}

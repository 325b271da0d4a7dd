//! mmcv's `ConvModule` (convolution without bias, BatchNorm, ReLU) and channel dropout
//! (`nn.Dropout2d`), the building blocks of mmsegmentation's decode heads.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::Distribution;
use burn::tensor::activation::relu;

use crate::init;
use crate::norm::batch_norm;

/// Configuration of a [`ConvModule`].
#[derive(Config, Debug)]
pub struct ConvModuleConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Side of the square kernel; the padding is `kernel_size / 2` (mmseg's heads pass
    /// `padding=1` for 3×3 and 0 for 1×1), so the map keeps its size.
    #[config(default = 1)]
    pub kernel_size: usize,
    /// ReLU after the norm (mmcv's default `act_cfg=dict(type='ReLU')`); `false` is
    /// `act_cfg=None`.
    #[config(default = true)]
    pub relu: bool,
    /// BatchNorm epsilon (PyTorch's default).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// BatchNorm momentum, PyTorch's convention (which is burn's).
    #[config(default = 0.1)]
    pub norm_momentum: f64,
}

/// mmcv's `ConvModule` with `norm_cfg=dict(type='BN')`: `Conv2d` without bias (mmcv's
/// `bias='auto'` drops it before a norm), BatchNorm with PyTorch's running statistics
/// ([`batch_norm`]), ReLU. Keys `conv.weight`, `bn.{weight,bias,running_mean,running_var}` as
/// mmcv's state dict (burn's adapter renames BatchNorm's `weight`/`bias` to `gamma`/`beta`).
#[derive(Module, Debug)]
pub struct ConvModule {
    /// `Conv2d(in, out, k, padding = k / 2)`, no bias.
    pub conv: Conv2d,
    /// BatchNorm over `out` channels.
    pub bn: BatchNorm,
    relu: bool,
}

impl ConvModuleConfig {
    /// mmcv's initialisation: conv weights Kaiming-normal (fan-out, ReLU gain), BatchNorm at
    /// scale 1, shift 0.
    pub fn init(&self, device: &Device) -> ConvModule {
        let k = self.kernel_size;
        let conv = Conv2dConfig::new([self.in_channels, self.out_channels], [k, k])
            .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
            .with_bias(false);
        ConvModule {
            conv: init::conv2d(conv, device),
            bn: BatchNormConfig::new(self.out_channels)
                .with_epsilon(self.norm_eps)
                .with_momentum(self.norm_momentum)
                .init(device),
            relu: self.relu,
        }
    }
}

impl ConvModule {
    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = batch_norm(&self.bn, crate::fused::conv2d(&self.conv, x));
        if self.relu { relu(x) } else { x }
    }
}

/// Channel dropout (PyTorch's `nn.Dropout2d`, which mmseg's decode heads apply before
/// `conv_seg`): in training each `(sample, channel)` plane is zeroed with probability `prob`
/// and the others scaled by `1 / (1 − prob)`. Training follows burn's [`Dropout`] rule: an
/// autodiff device and the layer's `training` flag on.
#[derive(Module, Debug)]
pub struct Dropout2d {
    /// Holds the probability and the training flag.
    pub inner: Dropout,
}

impl Dropout2d {
    /// Zeroes planes with probability `prob` (in `[0, 1)`).
    pub fn new(prob: f64) -> Self {
        Self { inner: DropoutConfig::new(prob).init() }
    }

    /// # Shapes
    /// - `x`: `[batch, C, H, W]` -> same shape
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let prob = self.inner.prob;
        if !self.inner.training.is_enabled() || !x.device().is_autodiff() || prob == 0.0 {
            return x;
        }
        let [batch, channels, _, _] = x.dims();
        let keep = Tensor::<4>::random([batch, channels, 1, 1], Distribution::Bernoulli(1.0 - prob), &x.device());
        x * keep.mul_scalar(1.0 / (1.0 - prob))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;

    #[test]
    fn keeps_the_size_and_applies_bn_then_relu() {
        let device = Device::flex();
        let module = ConvModuleConfig::new(2, 3).with_kernel_size(3).init(&device);
        assert!(module.conv.bias.is_none());
        let x = Tensor::<4>::random([1, 2, 5, 7], Distribution::Normal(0.0, 1.0), &device);
        let y = module.forward(x.clone());
        assert_eq!(y.dims(), [1, 3, 5, 7]);
        // eval BatchNorm with fresh statistics is x / sqrt(1 + eps)
        let expected = relu(module.conv.forward(x)).div_scalar((1.0f64 + 1e-5).sqrt());
        for (g, e) in values(y).iter().zip(values(expected)) {
            assert!((g - e).abs() < 1e-5);
        }
    }

    #[test]
    fn channel_dropout_zeroes_whole_planes_only_in_training() {
        let x = |d: &Device| Tensor::<4>::ones([4, 16, 3, 3], d);
        let drop = Dropout2d::new(0.5);
        assert_eq!(values(drop.forward(x(&Device::flex()))), vec![1.0; 4 * 16 * 9]);
        let y = values(drop.forward(x(&Device::flex().autodiff())));
        for plane in y.chunks(9) {
            assert!(plane.iter().all(|v| *v == plane[0]) && (plane[0] == 0.0 || plane[0] == 2.0), "{plane:?}");
        }
        assert!(y.contains(&0.0) && y.contains(&2.0));
    }
}

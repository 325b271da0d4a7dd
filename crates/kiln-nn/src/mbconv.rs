//! The inverted-bottleneck convolution block (MobileNetV2 / EfficientNet "MBConv") with
//! squeeze-and-excitation, as MaxViT uses it: timm's `MbConvBlock` with the TF MaxViT settings.
//!
//! Padding is TF's 'SAME', computed from the input size at run time: burn's
//! [`PaddingConfig2d::Same`] is exactly timm's `pad_same` (total `max((⌈n/s⌉−1)·s + k − n, 0)`,
//! the smaller half before), so a stride-2 3×3 conv on an even side pads 0 before and 1 after,
//! not PyTorch's symmetric 1/1. The tests below pin that down.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AvgPool2d, AvgPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, silu};

use crate::activation::Gelu;
use crate::fused::conv2d;
use crate::drop_path::DropPath;
use crate::init;
use crate::norm::batch_norm;

/// timm's `make_divisible`: `v` rounded to the nearest multiple of `divisor` (at least
/// `divisor`), bumped up one step if rounding lost more than 10 %.
pub fn make_divisible(v: f64, divisor: usize) -> usize {
    let d = divisor as f64;
    let mut rounded = (((v + d / 2.0) as usize) / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded += divisor;
    }
    rounded
}

/// Configuration of a [`SqueezeExcite`].
#[derive(Config, Debug)]
pub struct SqueezeExciteConfig {
    /// Channels of the map that is re-weighted.
    pub channels: usize,
    /// Width of the bottleneck.
    pub rd_channels: usize,
}

/// Squeeze-and-excitation (timm's `SEModule` with SiLU): global average, a 1×1 bottleneck with
/// SiLU, a 1×1 expansion, and a sigmoid gate per channel. Keys `fc1`, `fc2` (1×1 convs).
#[derive(Module, Debug)]
pub struct SqueezeExcite {
    /// `Conv2d(channels, rd_channels, 1)` with bias.
    pub fc1: Conv2d,
    /// `Conv2d(rd_channels, channels, 1)` with bias.
    pub fc2: Conv2d,
}

impl SqueezeExciteConfig {
    /// timm's conv initialisation ([`init::conv2d`]).
    pub fn init(&self, device: &Device) -> SqueezeExcite {
        SqueezeExcite {
            fc1: init::conv2d(Conv2dConfig::new([self.channels, self.rd_channels], [1, 1]), device),
            fc2: init::conv2d(Conv2dConfig::new([self.rd_channels, self.channels], [1, 1]), device),
        }
    }
}

impl SqueezeExcite {
    /// # Shapes
    /// - `x`: `[batch, channels, H, W]` -> same shape
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, channels, h, w] = x.dims();
        let squeezed = x.clone().reshape([batch, channels, h * w]).mean_dim(2).reshape([batch, channels, 1, 1]);
        let gate = sigmoid(conv2d(&self.fc2, silu(conv2d(&self.fc1, squeezed))));
        x * gate
    }
}

/// Configuration of a [`Downsample2d`].
#[derive(Config, Debug)]
pub struct Downsample2dConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels; a 1×1 projection follows the pool when they differ.
    pub out_channels: usize,
}

/// The shortcut of a strided MBConv (timm's `Downsample2d` with `pool_type='avg2'`,
/// `padding='same'`): a 2×2 average pool of stride 2 with TF 'SAME' padding, then a 1×1
/// projection if the width changes. Key `expand`.
///
/// On an odd side the pool pads one zero row (column) at the end and *counts* it (timm's
/// `AvgPool2dSame`, `count_include_pad=True`): the last output averages two real values and
/// two zeros over 4.
#[derive(Module, Debug)]
pub struct Downsample2d {
    /// 2×2, stride 2, SAME padding counted in the mean.
    pub pool: AvgPool2d,
    /// `Conv2d(in, out, 1)` with bias, only when `in != out`.
    pub expand: Option<Conv2d>,
}

impl Downsample2dConfig {
    /// timm's conv initialisation for the projection.
    pub fn init(&self, device: &Device) -> Downsample2d {
        Downsample2d {
            pool: AvgPool2dConfig::new([2, 2])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Same)
                .with_count_include_pad(true)
                .init(),
            expand: (self.in_channels != self.out_channels).then(|| {
                init::conv2d(Conv2dConfig::new([self.in_channels, self.out_channels], [1, 1]), device)
            }),
        }
    }
}

impl Downsample2d {
    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, ⌈H/2⌉, ⌈W/2⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.pool.forward(x);
        match &self.expand {
            Some(conv) => conv2d(conv, x),
            None => x,
        }
    }
}

/// Configuration of an [`MbConvBlock`].
///
/// Only the layout of timm's TF MaxViT config is built: pre-norm without activation, expansion
/// computed from the output width, the stride in the depthwise conv, SE after the second norm,
/// biased output projection, TF 'SAME' padding, avg-pool shortcut.
#[derive(Config, Debug)]
pub struct MbConvBlockConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// 1, or 2 to halve the map (in the depthwise conv, and by pooling in the shortcut).
    #[config(default = 1)]
    pub stride: usize,
    /// Expanded width over `out_channels` (rounded by [`make_divisible`]).
    #[config(default = 4.0)]
    pub expand_ratio: f64,
    /// Side of the depthwise kernel.
    #[config(default = 3)]
    pub kernel_size: usize,
    /// SE bottleneck width over `out_channels` (timm: `attn_ratio`, of the output width, not
    /// of the expanded one).
    #[config(default = 0.25)]
    pub se_ratio: f64,
    /// BatchNorm epsilon (PyTorch's default 1e-5; MaxViT's TF weights use 1e-3).
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// BatchNorm momentum, PyTorch's convention (which is burn's).
    #[config(default = 0.1)]
    pub norm_momentum: f64,
    /// tanh-approximate GELU (timm's `gelu_tanh`, MaxViT) instead of the exact one.
    #[config(default = false)]
    pub approximate_gelu: bool,
    /// Stochastic depth of the residual branch.
    #[config(default = 0.0)]
    pub drop_path: f64,
}

/// Inverted bottleneck: `1×1 expand → depthwise k×k → SE → 1×1 project`, pre-normed, residual.
///
/// ```text
/// shortcut = x                      (stride 1: in == out)
///          | expand?(avgpool2(x))   (stride 2)
/// x = pre_norm(x)                   BatchNorm, no activation
/// x = gelu(norm1(conv1_1x1(x)))     in -> mid, no bias
/// x = gelu(norm2(conv2_kxk(x)))     depthwise, stride, TF 'SAME', no bias
/// x = se(x)
/// x = conv3_1x1(x) + shortcut       mid -> out, bias; no activation after the sum
/// ```
/// Keys as timm's: `shortcut.expand`, `pre_norm`, `conv1_1x1`, `norm1`, `conv2_kxk`, `norm2`,
/// `se.fc1`, `se.fc2`, `conv3_1x1`.
#[derive(Module, Debug)]
pub struct MbConvBlock {
    /// Pool (+ projection) shortcut of a strided block; `None` is the identity.
    pub shortcut: Option<Downsample2d>,
    /// BatchNorm of the input.
    pub pre_norm: BatchNorm,
    /// `Conv2d(in, mid, 1)`, no bias.
    pub conv1_1x1: Conv2d,
    /// BatchNorm + GELU.
    pub norm1: BatchNorm,
    /// Depthwise `Conv2d(mid, mid, k, stride, groups = mid)`, no bias.
    pub conv2_kxk: Conv2d,
    /// BatchNorm + GELU.
    pub norm2: BatchNorm,
    /// Channel gate.
    pub se: SqueezeExcite,
    /// `Conv2d(mid, out, 1)` with bias.
    pub conv3_1x1: Conv2d,
    act: Gelu,
    drop_path: DropPath,
}

impl MbConvBlockConfig {
    /// Width of the expanded (depthwise) part.
    pub fn mid_channels(&self) -> usize {
        make_divisible(self.out_channels as f64 * self.expand_ratio, 8)
    }

    /// Width of the SE bottleneck: `int(se_ratio · out)`, or timm's SE default
    /// (`mid / 16`, made divisible by 8) when that is 0.
    pub fn se_channels(&self) -> usize {
        match (self.se_ratio * self.out_channels as f64) as usize {
            0 => {
                let v = self.mid_channels() as f64 / 16.0;
                ((((v + 4.0) as usize) / 8) * 8).max(8) // make_divisible(v, 8, round_limit=0)
            }
            rd => rd,
        }
    }

    /// Builds the block with timm's conv initialisation and BatchNorm at scale 1, shift 0.
    ///
    /// # Panics
    /// If `stride` is not 1 or 2, or a stride-1 block changes the width (its shortcut is the
    /// identity, as in timm).
    pub fn init(&self, device: &Device) -> MbConvBlock {
        assert!(self.stride == 1 || self.stride == 2, "MBConv stride must be 1 or 2, got {}", self.stride);
        assert!(
            self.stride == 2 || self.in_channels == self.out_channels,
            "a stride-1 MBConv keeps the width ({} -> {} given)",
            self.in_channels,
            self.out_channels
        );
        let (cin, mid, cout) = (self.in_channels, self.mid_channels(), self.out_channels);
        let k = self.kernel_size;
        let bn = |channels: usize| {
            BatchNormConfig::new(channels)
                .with_epsilon(self.norm_eps)
                .with_momentum(self.norm_momentum)
                .init(device)
        };
        MbConvBlock {
            shortcut: (self.stride == 2).then(|| Downsample2dConfig::new(cin, cout).init(device)),
            pre_norm: bn(cin),
            conv1_1x1: init::conv2d(Conv2dConfig::new([cin, mid], [1, 1]).with_bias(false), device),
            norm1: bn(mid),
            conv2_kxk: init::conv2d(
                Conv2dConfig::new([mid, mid], [k, k])
                    .with_stride([self.stride, self.stride])
                    .with_groups(mid)
                    .with_padding(PaddingConfig2d::Same)
                    .with_bias(false),
                device,
            ),
            norm2: bn(mid),
            se: SqueezeExciteConfig::new(mid, self.se_channels()).init(device),
            conv3_1x1: init::conv2d(Conv2dConfig::new([mid, cout], [1, 1]), device),
            act: Gelu { approximate: self.approximate_gelu },
            drop_path: DropPath::new(self.drop_path),
        }
    }
}

impl MbConvBlock {
    /// # Shapes
    /// - `x`: `[batch, in, H, W]` -> `[batch, out, ⌈H/stride⌉, ⌈W/stride⌉]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let shortcut = match &self.shortcut {
            Some(down) => down.forward(x.clone()),
            None => x.clone(),
        };
        let x = batch_norm(&self.pre_norm, x);
        let x = self.act.forward(batch_norm(&self.norm1, conv2d(&self.conv1_1x1, x)));
        let x = self.act.forward(batch_norm(&self.norm2, conv2d(&self.conv2_kxk, x)));
        let x = conv2d(&self.conv3_1x1, self.se.forward(x));
        self.drop_path.forward(x) + shortcut
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;
    use burn::module::Param;


    #[test]
    fn make_divisible_matches_timm() {
        // timm.layers.make_divisible
        assert_eq!(make_divisible(256.0, 8), 256);
        assert_eq!(make_divisible(4.0 * 96.0, 8), 384);
        assert_eq!(make_divisible(3.0, 8), 8);
        assert_eq!(make_divisible(12.0, 8), 16); // int(12 + 4) // 8 * 8
        assert_eq!(make_divisible(11.0, 8), 16); // 8 < 0.9 · 11 -> one more step
        assert_eq!(make_divisible(19.0, 8), 24); // 16 < 0.9 · 19 = 17.1
    }

    #[test]
    fn se_width_comes_from_the_output_channels() {
        let c = MbConvBlockConfig::new(64, 128);
        assert_eq!((c.mid_channels(), c.se_channels()), (512, 32));
        // 0.25 · 2 rounds to 0: timm's SEModule falls back to make_divisible(mid / 16, 8)
        assert_eq!(MbConvBlockConfig::new(2, 2).se_channels(), 8);
    }

    /// A 1-channel stride-2 conv of ones, to read which input pixels each output covers.
    fn ones_conv(stride: usize, device: &Device) -> Conv2d {
        let mut conv = Conv2dConfig::new([1, 1], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Same)
            .with_bias(false)
            .init(device);
        conv.weight = Param::from_tensor(Tensor::ones([1, 1, 3, 3], device));
        conv
    }

    #[test]
    fn same_padding_is_tf_same_not_symmetric() {
        let device = Device::flex();
        // even side 4, stride 2: total pad 1, all of it after -> windows start at 0 and 2
        let x = Tensor::<1, Int>::arange(0..4, &device).float().reshape([1, 1, 1, 4]);
        let x = x.repeat_dim(2, 3); // 3x4 map, every row 0 1 2 3
        let y = values(ones_conv(2, &device).forward(x));
        // rows: height 3 (odd) pads 1/1 -> output rows 2; columns 0+1+2, 2+3+pad 0
        assert_eq!(y, vec![2.0 * 3.0, 2.0 * 5.0, 2.0 * 3.0, 2.0 * 5.0]);
        // odd side 5, stride 2: 1 before, 1 after -> windows centred on 0, 2, 4
        let x = Tensor::<1, Int>::arange(0..5, &device).float().reshape([1, 1, 1, 5]);
        let y = values(ones_conv(2, &device).forward(x));
        assert_eq!(y, vec![1.0, 6.0, 7.0]);
        // stride 1: symmetric 1/1, the size is kept
        let x = Tensor::<1, Int>::arange(0..4, &device).float().reshape([1, 1, 1, 4]);
        assert_eq!(values(ones_conv(1, &device).forward(x)), vec![1.0, 3.0, 6.0, 5.0]);
    }

    #[test]
    fn avg_pool_shortcut_counts_the_same_padding() {
        let device = Device::flex();
        let down = Downsample2dConfig::new(1, 1).init(&device);
        assert!(down.expand.is_none());
        // 3x3 of ones: the last row/column averages real ones with a counted zero
        let y = values(down.forward(Tensor::ones([1, 1, 3, 3], &device)));
        assert_eq!(y, vec![1.0, 0.5, 0.5, 0.25]);
        // even sides: a plain 2x2 average
        let x = Tensor::<1, Int>::arange(0..8, &device).float().reshape([1, 1, 2, 4]);
        assert_eq!(values(down.forward(x)), vec![(0.0 + 1.0 + 4.0 + 5.0) / 4.0, (2.0 + 3.0 + 6.0 + 7.0) / 4.0]);
    }

    #[test]
    fn squeeze_excite_gates_each_channel_by_its_mean() {
        let device = Device::flex();
        let mut se = SqueezeExciteConfig::new(2, 1).init(&device);
        se.fc1.weight = Param::from_tensor(Tensor::from_floats([[[[1.0]], [[1.0]]]], &device));
        se.fc1.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
        se.fc2.weight = Param::from_tensor(Tensor::from_floats([[[[1.0]]], [[[-2.0]]]], &device));
        se.fc2.bias = Some(Param::from_tensor(Tensor::from_floats([0.0, 1.0], &device)));
        // channel means 1 and 2 -> s = silu(3); gates sigmoid(s), sigmoid(1 − 2s)
        let x = Tensor::<4>::from_floats([[[[0.0, 2.0]], [[2.0, 2.0]]]], &device);
        let y = values(se.forward(x));
        let s = 3.0 / (1.0 + (-3.0f32).exp());
        let g = |v: f32| 1.0 / (1.0 + (-v).exp());
        let expected = [0.0, 2.0 * g(s), 2.0 * g(1.0 - 2.0 * s), 2.0 * g(1.0 - 2.0 * s)];
        for (a, b) in y.iter().zip(expected) {
            assert!((a - b).abs() < 1e-6, "{y:?} vs {expected:?}");
        }
    }

    #[test]
    fn strided_block_halves_rounding_up_and_projects_the_shortcut() {
        let device = Device::flex();
        let block = MbConvBlockConfig::new(4, 8).with_stride(2).init(&device);
        assert!(block.shortcut.as_ref().unwrap().expand.is_some());
        let y = block.forward(Tensor::random([2, 4, 7, 6], burn::tensor::Distribution::Default, &device));
        assert_eq!(y.dims(), [2, 8, 4, 3]);
        let block = MbConvBlockConfig::new(8, 8).init(&device);
        assert!(block.shortcut.is_none());
        assert_eq!(block.forward(Tensor::zeros([1, 8, 5, 5], &device)).dims(), [1, 8, 5, 5]);
    }

    #[test]
    fn block_is_the_residual_sum_of_its_layers() {
        // identity shortcut plus the branch recomputed from the public layers
        let device = Device::flex();
        let block = MbConvBlockConfig::new(8, 8).with_approximate_gelu(true).init(&device);
        let x = Tensor::<4>::random([1, 8, 4, 4], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let act = |t| burn::tensor::activation::gelu_approximate(t);
        let branch = block.pre_norm.forward(x.clone());
        let branch = act(block.norm1.forward(block.conv1_1x1.forward(branch)));
        let branch = act(block.norm2.forward(block.conv2_kxk.forward(branch)));
        let expected = block.conv3_1x1.forward(block.se.forward(branch)) + x.clone();
        let got = block.forward(x);
        got.into_data().assert_approx_eq::<f32>(&expected.into_data(), burn::tensor::Tolerance::default());
    }
}

//! The convolutional stem of FasterViT (Hatamizadeh et al., 2023) as Atlas uses it
//! (`MultiConvEmbed` in the official `sandstone/models/msa.py`): two strided conv-BN-ReLU
//! layers, then two rounds of three residual conv blocks each followed by a LayerNorm2d and
//! a strided conv, 16× downsampling in all.
//!
//! Module paths mirror the PyTorch `nn.Sequential` indices (`conv0.0`, `conv0.1`, `conv0.3`,
//! ...; activations hold no weights but keep their slot), so official state dicts load by
//! identity.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d, Relu};

use crate::activation::Gelu;
use burn::prelude::*;

use crate::norm::{LayerNorm2d, LayerNorm2dConfig};

/// One slot of a PyTorch `nn.Sequential` of convolutional layers.
#[derive(Module, Debug)]
pub enum ConvLayer {
    /// A 2-D convolution.
    Conv(Conv2d),
    /// Batch normalisation (`weight`/`bias` in PyTorch, `gamma`/`beta` here).
    BatchNorm(BatchNorm),
    /// ReLU (no weights).
    Relu(Relu),
    /// Exact GELU (no weights).
    Gelu(Gelu),
}

impl ConvLayer {
    /// # Shapes
    /// - `x`: `[batch, C_in, H, W]` -> `[batch, C_out, H', W']`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Self::Conv(conv) => crate::fused::conv2d(conv, x),
            // PyTorch's running-statistics update (unbiased variance), as every BatchNorm in Kiln
            Self::BatchNorm(norm) => crate::norm::batch_norm(norm, x),
            Self::Relu(act) => act.forward(x),
            Self::Gelu(act) => act.forward(x),
        }
    }
}

fn sequential(layers: &[ConvLayer], x: Tensor<4>) -> Tensor<4> {
    layers.iter().fold(x, |x, layer| layer.forward(x))
}

fn conv3x3(c_in: usize, c_out: usize, stride: usize, bias: bool, device: &Device) -> ConvLayer {
    ConvLayer::Conv(
        Conv2dConfig::new([c_in, c_out], [3, 3])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(bias)
            .init(device),
    )
}

fn batch_norm(channels: usize, epsilon: f64, device: &Device) -> ConvLayer {
    ConvLayer::BatchNorm(BatchNormConfig::new(channels).with_epsilon(epsilon).init(device))
}

/// FasterViT's residual conv block: `x + BN(conv(GELU(BN(conv(x)))))`, no activation after
/// the sum; keys `conv_block1.{0,1}`, `conv_block2.{0,1}`. (The official layer scale and
/// drop-path exist but are off, and hold no weights.)
#[derive(Module, Debug)]
pub struct ConvResidual {
    /// `[Conv3×3 (bias), BatchNorm, GELU]`.
    pub conv_block1: Vec<ConvLayer>,
    /// `[Conv3×3 (bias), BatchNorm]`.
    pub conv_block2: Vec<ConvLayer>,
}

impl ConvResidual {
    /// A block of width `dim`, BatchNorm eps 1e-5.
    pub fn new(dim: usize, device: &Device) -> Self {
        Self {
            conv_block1: vec![conv3x3(dim, dim, 1, true, device), batch_norm(dim, 1e-5, device), ConvLayer::Gelu(Gelu::new())],
            conv_block2: vec![conv3x3(dim, dim, 1, true, device), batch_norm(dim, 1e-5, device)],
        }
    }

    /// # Shapes
    /// - `x`: `[batch, dim, H, W]` -> `[batch, dim, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let branch = sequential(&self.conv_block2, sequential(&self.conv_block1, x.clone()));
        x + branch
    }
}

/// FasterViT's downsampler: LayerNorm2d (eps 1e-6) then a stride-2 3×3 conv without bias that
/// doubles the width; keys `norm`, `conv`.
#[derive(Module, Debug)]
pub struct ConvDownsample {
    /// Channel-wise LayerNorm.
    pub norm: LayerNorm2d,
    /// `Conv2d(dim, 2·dim, 3, stride 2, pad 1, bias=False)`.
    pub conv: Conv2d,
}

impl ConvDownsample {
    /// A downsampler from `dim` to `2·dim` channels.
    pub fn new(dim: usize, device: &Device) -> Self {
        let ConvLayer::Conv(conv) = conv3x3(dim, 2 * dim, 2, false, device) else { unreachable!() };
        Self { norm: LayerNorm2dConfig::new(dim).with_epsilon(1e-6).init(device), conv }
    }

    /// # Shapes
    /// - `x`: `[batch, dim, H, W]` -> `[batch, 2·dim, ceil(H / 2), ceil(W / 2)]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        crate::fused::conv2d(&self.conv, self.norm.forward(x))
    }
}

/// Configuration of a [`ConvStem`].
#[derive(Config, Debug)]
pub struct ConvStemConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Width `F` after the first two convolutions; the stem outputs `4·F` channels.
    pub width: usize,
    /// Width of the first convolution (`in_dim`, 64 in FasterViT and Atlas).
    #[config(default = 64)]
    pub first_width: usize,
}

/// The 16× conv stem: keys `conv0`, `conv1`, `ds1`, `conv2`, `ds2` as the official
/// `MultiConvEmbed`.
#[derive(Module, Debug)]
pub struct ConvStem {
    /// `[Conv(in, 64, s2), BN(1e-4), ReLU, Conv(64, F, s2), BN(1e-4), ReLU]`, both convs without
    /// bias.
    pub conv0: Vec<ConvLayer>,
    /// Three residual blocks at width `F`.
    pub conv1: Vec<ConvResidual>,
    /// `F -> 2F`, stride 2.
    pub ds1: ConvDownsample,
    /// Three residual blocks at width `2F`.
    pub conv2: Vec<ConvResidual>,
    /// `2F -> 4F`, stride 2.
    pub ds2: ConvDownsample,
}

impl ConvStemConfig {
    /// Builds the stem with PyTorch's default initialisation (convs Kaiming-uniform, BN 1/0).
    pub fn init(&self, device: &Device) -> ConvStem {
        let (first, f) = (self.first_width, self.width);
        ConvStem {
            conv0: vec![
                conv3x3(self.in_channels, first, 2, false, device),
                batch_norm(first, 1e-4, device),
                ConvLayer::Relu(Relu::new()),
                conv3x3(first, f, 2, false, device),
                batch_norm(f, 1e-4, device),
                ConvLayer::Relu(Relu::new()),
            ],
            conv1: (0..3).map(|_| ConvResidual::new(f, device)).collect(),
            ds1: ConvDownsample::new(f, device),
            conv2: (0..3).map(|_| ConvResidual::new(2 * f, device)).collect(),
            ds2: ConvDownsample::new(2 * f, device),
        }
    }
}

impl ConvStem {
    /// Output channels (`4·F`).
    pub fn out_channels(&self) -> usize {
        self.ds2.conv.weight.dims()[0]
    }

    /// # Shapes
    /// - `x`: `[batch, in_channels, H, W]` -> `[batch, 4·F, ceil(H / 16), ceil(W / 16)]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = sequential(&self.conv0, x);
        let x = self.conv1.iter().fold(x, |x, block| block.forward(x));
        let x = self.ds1.forward(x);
        let x = self.conv2.iter().fold(x, |x, block| block.forward(x));
        self.ds2.forward(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::store::ModuleSnapshot;

    #[test]
    fn downsamples_16x_with_ceil_and_quadruples_the_width() {
        let device = Device::flex();
        let stem = ConvStemConfig::new(3, 4).with_first_width(8).init(&device);
        assert_eq!(stem.out_channels(), 16);
        let y = stem.forward(Tensor::zeros([2, 3, 64, 40], &device));
        assert_eq!(y.dims(), [2, 16, 4, 3]);
        // ceil(50 / 16) = 4: every stride-2 conv with padding 1 rounds up
        assert_eq!(stem.forward(Tensor::zeros([1, 3, 50, 50], &device)).dims(), [1, 16, 4, 4]);
    }

    #[test]
    fn residual_block_adds_its_branch_without_a_final_activation() {
        let device = Device::flex();
        let mut block = ConvResidual::new(1, &device);
        // conv_block2's conv outputs the constant -3: the sum must go negative (no ReLU after)
        if let ConvLayer::Conv(conv) = &mut block.conv_block2[0] {
            conv.weight = Param::from_tensor(Tensor::zeros([1, 1, 3, 3], &device));
            conv.bias = Some(Param::from_tensor(Tensor::from_floats([-3.0], &device)));
        }
        let x = Tensor::<4>::ones([1, 1, 4, 4], &device);
        let y = block.forward(x).into_data().try_to_vec::<f32>().unwrap();
        // BN in eval: (v - 0) / sqrt(1 + 1e-5) · 1 + 0
        let expected = 1.0 - 3.0 / (1.0f32 + 1e-5).sqrt();
        assert!(y.iter().all(|v| (v - expected).abs() < 1e-5), "{y:?}");
    }

    #[test]
    fn parameter_paths_follow_the_pytorch_sequential_indices() {
        let device = Device::flex();
        let stem = ConvStemConfig::new(3, 4).init(&device);
        let names: Vec<String> = stem
            .collect(None, Some(Box::new(burn::store::BurnToPyTorchAdapter)), true)
            .into_iter()
            .map(|t| t.name.clone())
            .collect();
        for key in [
            "conv0.0.weight",
            "conv0.1.weight",
            "conv0.1.running_var",
            "conv0.3.weight",
            "conv0.4.bias",
            "conv1.2.conv_block1.0.bias",
            "conv1.2.conv_block2.1.running_mean",
            "ds1.norm.weight",
            "ds2.conv.weight",
        ] {
            assert!(names.iter().any(|n| n == key), "{key} not among {names:?}");
        }
        assert!(!names.iter().any(|n| n.starts_with("conv0.2") || n.starts_with("conv0.5")));
    }
}

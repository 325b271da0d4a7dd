//! Convolutional position encoding: a depthwise convolution added to its input, which gives
//! attention blocks without position embeddings (DaViT, CvT-style) a sense of where tokens are.

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use crate::fused::depthwise_conv2d_channels_last;

/// Configuration of a [`ConvPosEnc`].
#[derive(Config, Debug)]
pub struct ConvPosEncConfig {
    /// Channels `C`.
    pub dim: usize,
    /// Side of the (odd) depthwise kernel; padded by `kernel / 2` so the map keeps its size.
    #[config(default = 3)]
    pub kernel_size: usize,
}

/// `x + dwconv(x)`, as timm's DaViT `ConvPosEnc` without activation. Key `proj`.
#[derive(Module, Debug)]
pub struct ConvPosEnc {
    /// Depthwise `Conv2d(C, C, k, groups = C)` with bias; weight `[C, 1, k, k]`.
    pub proj: Conv2d,
}

impl ConvPosEncConfig {
    /// PyTorch's default conv initialisation, as timm leaves it.
    pub fn init(&self, device: &Device) -> ConvPosEnc {
        assert!(self.kernel_size % 2 == 1, "ConvPosEnc needs an odd kernel, got {}", self.kernel_size);
        let pad = self.kernel_size / 2;
        ConvPosEnc {
            proj: Conv2dConfig::new([self.dim, self.dim], [self.kernel_size; 2])
                .with_groups(self.dim)
                .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                .init(device),
        }
    }
}

impl ConvPosEnc {
    /// On a channels-last map, as the token blocks around it keep it.
    ///
    /// # Shapes
    /// - `x`: `[batch, H, W, C]` -> `[batch, H, W, C]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        x.clone() + depthwise_conv2d_channels_last(&self.proj, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn adds_a_zero_padded_depthwise_convolution() {
        let device = Device::flex();
        let mut cpe = ConvPosEncConfig::new(2).init(&device);
        assert_eq!(cpe.proj.weight.dims(), [2, 1, 3, 3]);
        // channel 0: sum of the 3x3 neighbourhood; channel 1: the right neighbour, times 2
        let sum = [[1.0; 3]; 3];
        let right = [[0.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 0.0, 0.0]];
        cpe.proj.weight = Param::from_tensor(Tensor::from_floats([[sum], [right]], &device));
        cpe.proj.bias = Some(Param::from_tensor(Tensor::from_floats([0.5, -1.0], &device)));
        // 2x3 maps: channel 0 = [[1, 2, 3], [4, 5, 6]], channel 1 = [[1, 0, 1], [0, 1, 0]]
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], [[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]]], &device);
        let got = cpe.forward(x.permute([0, 2, 3, 1])).permute([0, 3, 1, 2]).into_data().try_to_vec::<f32>().unwrap();
        // channel 0: x + neighbourhood sum (zeros outside) + 0.5
        //   sums: [[12, 21, 16], [12, 21, 16]]
        // channel 1: x + 2 · right neighbour (0 past the edge) − 1
        let expected = [
            1.0 + 12.0 + 0.5, 2.0 + 21.0 + 0.5, 3.0 + 16.0 + 0.5,
            4.0 + 12.0 + 0.5, 5.0 + 21.0 + 0.5, 6.0 + 16.0 + 0.5,
            1.0 + 0.0 - 1.0, 0.0 + 2.0 - 1.0, 1.0 + 0.0 - 1.0,
            0.0 + 2.0 - 1.0, 1.0 + 0.0 - 1.0, 0.0 + 0.0 - 1.0,
        ];
        assert_eq!(got, expected);
    }
}

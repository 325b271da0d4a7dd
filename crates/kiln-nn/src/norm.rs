//! Layer normalisation over the channel axis of channels-first maps.

use burn::module::Param;
use burn::prelude::*;

/// Configuration of a [`LayerNorm2d`].
#[derive(Config, Debug)]
pub struct LayerNorm2dConfig {
    /// Number of channels.
    pub channels: usize,
    /// Added to the variance, as PyTorch's `eps`.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

/// LayerNorm over `C` of a `[batch, C, H, W]` map (timm's `LayerNorm2d`); keys `weight`, `bias`
/// as PyTorch names them, so checkpoints map without renaming.
#[derive(Module, Debug)]
pub struct LayerNorm2d {
    /// Per-channel scale `[C]`.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift `[C]`.
    pub bias: Param<Tensor<1>>,
    epsilon: f64,
}

impl LayerNorm2dConfig {
    /// Scale 1, shift 0.
    pub fn init(&self, device: &Device) -> LayerNorm2d {
        LayerNorm2d {
            weight: Param::from_tensor(Tensor::ones([self.channels], device)),
            bias: Param::from_tensor(Tensor::zeros([self.channels], device)),
            epsilon: self.epsilon,
        }
    }
}

impl LayerNorm2d {
    /// # Shapes
    /// - `x`: `[batch, C, H, W]` -> `[batch, C, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let channels = self.weight.dims()[0];
        let (var, mean) = x.clone().var_mean_bias(1);
        let x = (x - mean) / var.add_scalar(self.epsilon).sqrt();
        x * self.weight.val().reshape([1, channels, 1, 1]) + self.bias.val().reshape([1, channels, 1, 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_each_pixel_over_channels() {
        let device = Device::flex();
        let mut norm = LayerNorm2dConfig::new(2).init(&device);
        norm.weight = Param::from_tensor(Tensor::from_floats([2.0, 1.0], &device));
        norm.bias = Param::from_tensor(Tensor::from_floats([0.0, 1.0], &device));
        // pixel 0: channels (1, 3) -> mean 2, var 1 -> (-1, 1); pixel 1: (5, 5) -> (0, 0)
        let x = Tensor::<4>::from_floats([[[[1.0, 5.0]], [[3.0, 5.0]]]], &device);
        let y = norm.forward(x).into_data().try_to_vec::<f32>().unwrap();
        let s = 1.0 / (1.0f32 + 1e-5).sqrt();
        let expected = [-2.0 * s, 0.0, 1.0 + s, 1.0];
        for (g, e) in y.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{y:?}");
        }
    }
}

//! Parameter initialisation as timm does it for transformers (and, for hybrid models such as
//! MaxViT, for their convolutions).

use burn::module::{Param, ParamId};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::Distribution;

/// A `N(0, std²)` sample truncated to `[-2·std, 2·std]`, as timm's `trunc_normal_(std=…)`.
///
/// burn's initialisers have no truncated normal: out-of-range values are redrawn a few times
/// and the (vanishingly rare) survivors clamped, which leaves the distribution truncated.
pub fn trunc_normal<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Tensor<D> {
    let bound = 2.0 * std;
    let draw = || Tensor::<D>::random(shape, Distribution::Normal(0.0, std), device);
    let mut x = draw();
    for _ in 0..4 {
        let outside = x.clone().abs().greater_elem(bound);
        x = x.mask_where(outside, draw());
    }
    x.clamp(-bound, bound)
}

/// A parameter drawn by [`trunc_normal`] when first used, so building a large model (or only
/// counting its parameters) costs nothing until its weights are needed.
pub fn trunc_normal_param<const D: usize>(shape: [usize; D], std: f64, device: &Device) -> Param<Tensor<D>> {
    Param::uninitialized(
        ParamId::new(),
        move |device, require_grad| {
            let tensor = trunc_normal(shape, std, device);
            if require_grad { tensor.require_grad() } else { tensor }
        },
        device.clone(),
        true,
        Shape::new(shape),
    )
}

/// A linear layer initialised as timm's transformers do: weight `trunc_normal(.02)`, bias 0.
pub fn linear(d_input: usize, d_output: usize, bias: bool, device: &Device) -> Linear {
    let mut layer = LinearConfig::new(d_input, d_output)
        .with_bias(bias)
        .with_initializer(Initializer::Zeros)
        .init(device);
    layer.weight = trunc_normal_param([d_input, d_output], 0.02, device);
    layer
}

/// A linear layer initialised as PyTorch's `nn.Linear`: weight and bias uniform in
/// `±1/sqrt(d_input)` (burn's default Kaiming-uniform with gain `1/sqrt(3)` is exactly that).
pub fn torch_linear(d_input: usize, d_output: usize, bias: bool, device: &Device) -> Linear {
    LinearConfig::new(d_input, d_output).with_bias(bias).init(device)
}

/// A linear layer initialised as timm's "ViT-like" scheme (MaxViT's `_init_transformer`):
/// weight Xavier-uniform, bias `N(0, bias_std²)` (timm: 1e-6 inside MLPs, 0 elsewhere).
pub fn xavier_linear(d_input: usize, d_output: usize, bias_std: f64, device: &Device) -> Linear {
    let mut layer = LinearConfig::new(d_input, d_output)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device);
    let bias = if bias_std > 0.0 { Initializer::Normal { mean: 0.0, std: bias_std } } else { Initializer::Zeros };
    layer.bias = Some(bias.init([d_output], device));
    layer
}

/// A convolution initialised as timm's EfficientNet-style `_init_conv` (MaxViT's convs):
/// weight `N(0, 2 / fan_out)` with `fan_out = k_h · k_w · out_channels / groups`, bias 0.
pub fn conv2d(config: Conv2dConfig, device: &Device) -> Conv2d {
    let out_channels = config.channels[1];
    let mut conv = config
        .with_initializer(Initializer::KaimingNormal { gain: 2.0f64.sqrt(), fan_out_only: true })
        .init(device);
    conv.bias = conv.bias.map(|_| Initializer::Zeros.init([out_channels], device));
    conv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunc_normal_is_bounded_with_the_right_spread() {
        let device = Device::flex();
        let x = trunc_normal([200, 100], 0.02, &device);
        let values = x.into_data().try_to_vec::<f32>().unwrap();
        assert!(values.iter().all(|v| v.abs() <= 0.04 + 1e-7));
        let var = values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / values.len() as f64;
        // variance of N(0, s²) truncated at ±2s is 0.774·s²
        let expected = 0.774 * 0.02f64.powi(2);
        assert!((var - expected).abs() < 0.05 * expected, "var {var} vs {expected}");
    }

    #[test]
    fn torch_linear_is_uniform_within_one_over_sqrt_fan_in() {
        let device = Device::flex();
        let layer = torch_linear(64, 300, true, &device);
        let bound = 1.0f64 / 8.0;
        for values in [
            layer.weight.val().into_data().try_to_vec::<f32>().unwrap(),
            layer.bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap(),
        ] {
            assert!(values.iter().all(|v| (v.abs() as f64) <= bound + 1e-7));
            // U(-b, b) has variance b²/3
            let var = values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / values.len() as f64;
            let expected = bound * bound / 3.0;
            assert!((var - expected).abs() < 0.2 * expected, "var {var} vs {expected}");
        }
    }

    fn std_of(values: &[f32]) -> f64 {
        (values.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / values.len() as f64).sqrt()
    }

    #[test]
    fn conv_init_uses_fan_out_over_groups_and_zero_bias() {
        let device = Device::flex();
        // depthwise 3x3 over 512 channels: fan_out = 9 · 512 / 512 = 9 -> std √(2/9)
        let conv = conv2d(Conv2dConfig::new([512, 512], [3, 3]).with_groups(512), &device);
        let w = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!((std_of(&w) - (2.0f64 / 9.0).sqrt()).abs() < 0.02, "{}", std_of(&w));
        assert!(conv.bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap().iter().all(|&b| b == 0.0));
        // 1x1 from 64 to 256: fan_out 256 -> std √(2/256)
        let conv = conv2d(Conv2dConfig::new([64, 256], [1, 1]).with_bias(false), &device);
        let w = conv.weight.val().into_data().try_to_vec::<f32>().unwrap();
        assert!((std_of(&w) / (2.0f64 / 256.0).sqrt() - 1.0).abs() < 0.03);
        assert!(conv.bias.is_none());
    }

    #[test]
    fn xavier_linear_bounds_and_bias() {
        let device = Device::flex();
        let layer = xavier_linear(300, 100, 1e-6, &device);
        let w = layer.weight.val().into_data().try_to_vec::<f32>().unwrap();
        let bound = (6.0f64 / 400.0).sqrt();
        assert!(w.iter().all(|v| (*v as f64).abs() <= bound + 1e-7));
        assert!((std_of(&w) - bound / 3.0f64.sqrt()).abs() < 0.01 * bound);
        let b = layer.bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert!(b.iter().all(|v| v.abs() < 1e-5) && b.iter().any(|&v| v != 0.0));
        let zero = xavier_linear(4, 2, 0.0, &device).bias.unwrap().val().into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(zero, vec![0.0, 0.0]);
    }
}

//! Parameter initialisation as timm does it for transformers.

use burn::module::{Param, ParamId};
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
}

//! Layer normalisation over the last axis and over the channel axis of channels-first maps, and
//! batch normalisation with PyTorch's running statistics.

use burn::module::Param;
use burn::nn::BatchNorm;
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

/// Configuration of a [`LayerNorm`], as burn's `LayerNormConfig`.
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// Width of the last axis.
    pub d_model: usize,
    /// Added to the variance, as PyTorch's `eps`.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether there is a shift `β`.
    #[config(default = true)]
    pub bias: bool,
}

/// LayerNorm over the last axis: burn's `LayerNorm` (same fields, so the same checkpoint keys),
/// computed by [`crate::fused::layer_norm`], one autodiff node on burn-flex.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale `γ`, `[d_model]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift `β`, `[d_model]`.
    pub beta: Option<Param<Tensor<1>>>,
    epsilon: f64,
}

impl LayerNormConfig {
    /// Scale 1, shift 0.
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            gamma: Param::from_tensor(Tensor::ones([self.d_model], device)),
            beta: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.d_model], device))),
            epsilon: self.epsilon,
        }
    }
}

impl LayerNorm {
    /// # Shapes
    /// - `x`: `[..., d_model]` -> same shape
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::fused::layer_norm(x, self.gamma.val(), self.beta.as_ref().map(|b| b.val()), self.epsilon)
    }
}

/// [`BatchNorm`]'s forward with PyTorch's running-statistics update, so a model ported from
/// timm trains its running statistics as `torch.nn.BatchNorm2d` does.
///
/// - Normalisation is burn's own: `(x − mean) / √(var + ε) · γ + β` with the biased batch
///   variance in training and the running statistics otherwise.
/// - The update `running = (1 − m)·running + m·batch` uses the same momentum convention in
///   burn and PyTorch (PyTorch's default 0.1 is burn's 0.1). PyTorch feeds the running
///   variance the *unbiased* batch variance (`n/(n−1)` times the biased one, `n` values per
///   channel); burn 0.22 feeds the biased one. This function does what PyTorch does.
/// - Training versus inference follows burn's rule, not a mode switch: batch statistics (and an
///   update of the running ones) when the input lives on an autodiff device and the layer's
///   `training` flag is on; the running statistics otherwise, i.e. on a plain device, after
///   `Module::valid()` or `Module::freeze()`.
///
/// # Shapes
/// - `x`: `[batch, channels, ...]` -> same shape
///
/// # Panics
/// In training, if a channel has a single value (PyTorch refuses this too: its variance is
/// undefined).
pub fn batch_norm<const D: usize>(bn: &BatchNorm, x: Tensor<D>) -> Tensor<D> {
    if !(x.device().is_autodiff() && bn.training.is_enabled()) {
        return bn.forward(x);
    }
    let dims = x.dims();
    let n = dims.iter().product::<usize>() / dims[1];
    assert!(n > 1, "batch norm in training needs more than one value per channel, got an input of shape {dims:?}");
    let stats = burn::tensor::module::batch_norm_train(x, bn.gamma.val(), bn.beta.val(), bn.epsilon);
    let device = stats.output.device();
    let m = bn.momentum;
    let unbiased = n as f64 / (n - 1) as f64;
    let mean = bn.running_mean.value_sync().to_device(&device).mul_scalar(1.0 - m) + stats.mean.detach().mul_scalar(m);
    let var = bn.running_var.value_sync().to_device(&device).mul_scalar(1.0 - m)
        + stats.variance.detach().mul_scalar(m * unbiased);
    bn.running_mean.update(mean.detach());
    bn.running_var.update(var.detach());
    stats.output
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;

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


    #[test]
    fn batch_norm_trains_running_stats_as_pytorch_and_eval_uses_them() {
        use burn::nn::BatchNormConfig;
        // one channel, values 1, 2, 3, 6: mean 3, biased var 3.5, unbiased var 14/3
        let x = |device: &Device| Tensor::<4>::from_floats([[[[1.0, 2.0]]], [[[3.0, 6.0]]]], device);
        let bn = BatchNormConfig::new(1).with_epsilon(1e-3).init(&Device::flex());

        // inference on a plain device: running stats (0, 1) are used and left alone
        let y = values(batch_norm(&bn, x(&Device::flex())));
        let s = 1.0 / (1.0f32 + 1e-3).sqrt();
        assert_eq!(y, vec![s, 2.0 * s, 3.0 * s, 6.0 * s]);
        assert_eq!(values(bn.running_mean.value_sync()), vec![0.0]);
        assert_eq!(values(bn.running_var.value_sync()), vec![1.0]);

        // (value_sync: burn's RunningState::value() may lag one update behind, by design)
        // training (autodiff device, flag on): batch statistics, and running stats updated as
        // torch.nn.BatchNorm2d(momentum=0.1) does: 0.1·3 = 0.3 and 0.9·1 + 0.1·14/3 = 1.36667
        let device = Device::flex().autodiff();
        let bn = BatchNormConfig::new(1).with_epsilon(1e-3).init(&device);
        let y = values(batch_norm(&bn, x(&device)));
        let s = 1.0 / (3.5f32 + 1e-3).sqrt();
        for (g, e) in y.iter().zip([-2.0 * s, -s, 0.0, 3.0 * s]) {
            assert!((g - e).abs() < 1e-6, "{y:?}");
        }
        assert!((values(bn.running_mean.value_sync())[0] - 0.3).abs() < 1e-6);
        let var = values(bn.running_var.value_sync())[0];
        assert!((var - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-6, "running var {var} (burn's biased update gives 1.25)");

        // valid() (inputs on the plain device) and freeze() (inputs still on the autodiff
        // device, flag off): running statistics, no update
        let before = values(bn.running_var.value_sync());
        let valid = bn.valid();
        let _ = batch_norm(&valid, x(&device.clone().inner()));
        assert_eq!(values(valid.running_var.value_sync()), before);
        let frozen = bn.freeze();
        let y = values(batch_norm(&frozen, x(&device)));
        assert_eq!(values(frozen.running_var.value_sync()), before);
        let s = 1.0 / (before[0] + 1e-3).sqrt();
        assert!((y[0] - (1.0 - 0.3) * s).abs() < 1e-6, "{y:?}");
    }
}

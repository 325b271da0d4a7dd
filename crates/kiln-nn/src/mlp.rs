//! The transformer MLP: `fc1 -> GELU -> dropout -> fc2 -> dropout`, as timm's `Mlp`.

use burn::nn::{Dropout, DropoutConfig, Linear};

use crate::activation::Gelu;
use burn::prelude::*;

use crate::fused::linear;
use crate::init;

/// Configuration of an [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input (and, unless set, output) width.
    pub d_input: usize,
    /// Hidden width (timm: `dim * mlp_ratio`).
    pub d_hidden: usize,
    /// Output width; defaults to `d_input`.
    pub d_output: Option<usize>,
    /// Dropout after the activation and after `fc2`.
    #[config(default = 0.0)]
    pub dropout: f64,
    /// PyTorch's default `nn.Linear` initialisation (weight and bias uniform in
    /// `±1/sqrt(fan_in)`) instead of timm's `trunc_normal(.02)` weights and zero biases, for
    /// families whose reference code never re-initialises its layers.
    #[config(default = false)]
    pub torch_init: bool,
    /// The tanh approximation of GELU (timm's `gelu_tanh`, TF-ported models such as MaxViT)
    /// instead of the exact erf form (PyTorch's `nn.GELU()` default).
    #[config(default = false)]
    pub approximate_gelu: bool,
}

/// Two linear layers with a GELU between (exact erf unless configured otherwise), keys `fc1`,
/// `fc2` as in timm.
#[derive(Module, Debug)]
pub struct Mlp {
    /// `[d_input] -> [d_hidden]`.
    pub fc1: Linear,
    /// `[d_hidden] -> [d_output]`.
    pub fc2: Linear,
    act: Gelu,
    drop: Dropout,
}

impl MlpConfig {
    /// Builds the layers, weights `trunc_normal(.02)` and zero biases as timm (or PyTorch's
    /// defaults with `torch_init`).
    pub fn init(&self, device: &Device) -> Mlp {
        let linear = if self.torch_init { init::torch_linear } else { init::linear };
        Mlp {
            fc1: linear(self.d_input, self.d_hidden, true, device),
            fc2: linear(self.d_hidden, self.d_output.unwrap_or(self.d_input), true, device),
            act: Gelu { approximate: self.approximate_gelu },
            drop: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl Mlp {
    /// # Shapes
    /// - `x`: `[..., d_input]` -> `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = self.drop.forward(self.act.forward(linear(&self.fc1, x)));
        self.drop.forward(linear(&self.fc2, x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn computes_fc2_gelu_fc1() {
        let device = Device::flex();
        let mut mlp = MlpConfig::new(2, 3).init(&device);
        mlp.fc1.weight = Param::from_tensor(Tensor::from_floats([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], &device));
        mlp.fc1.bias = Some(Param::from_tensor(Tensor::from_floats([0.0, -1.0, 0.5], &device)));
        mlp.fc2.weight = Param::from_tensor(Tensor::from_floats([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], &device));
        mlp.fc2.bias = Some(Param::from_tensor(Tensor::from_floats([0.1, 0.2], &device)));
        let y = mlp.forward(Tensor::<2>::from_floats([[1.0, 2.0]], &device));
        // fc1: [2, 3, -0.5]; exact GELU: [1.954500, 2.995950, -0.154269]
        let expected = [1.954500 - 0.154269 + 0.1, 2.995950 - 0.154269 + 0.2];
        let got = y.into_data().try_to_vec::<f32>().unwrap();
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }

    #[test]
    fn tanh_gelu_is_the_approximation_on_both_signs() {
        let device = Device::flex();
        let mut mlp = MlpConfig::new(1, 3).with_approximate_gelu(true).init(&device);
        mlp.fc1.weight = Param::from_tensor(Tensor::from_floats([[1.0, 1.0, 1.0]], &device));
        mlp.fc1.bias = Some(Param::from_tensor(Tensor::from_floats([-3.0, 0.0, 2.0], &device)));
        mlp.fc2.weight = Param::from_tensor(Tensor::from_floats([[1.0], [0.0], [0.0]], &device));
        mlp.fc2.bias = Some(Param::from_tensor(Tensor::zeros([1], &device)));
        // hidden [-2.5, 0.5, 2.5]; only the first unit reaches the output.
        // tanh form: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))) at x = −2.5 is −0.0150843;
        // the exact erf form would give −0.0155242, so the two are told apart.
        let y = mlp.forward(Tensor::<2>::from_floats([[0.5]], &device)).into_scalar::<f32>();
        assert!((y - -0.0150843).abs() < 2e-6, "{y}");
    }
}

//! GELU, exact or tanh-approximated, with the approximation written for speed: burn's
//! `gelu_approximate` spends most of its time in scalar `powf` and `tanh` calls (45% of a
//! MaxViT forward on flex), while `0.5·(1 + tanh(z))` is the logistic of `2z`: one `exp`.

use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// `x·Φ(x)` (exact, erf) or timm's `gelu_tanh` (`approximate`), as a module field.
#[derive(Module, Debug, Default)]
pub struct Gelu {
    /// Use the tanh approximation (timm's `gelu_tanh`, MaxViT's TF ports).
    pub approximate: bool,
}

impl Gelu {
    /// Exact GELU.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tanh approximation.
    pub fn new_approximate() -> Self {
        Self { approximate: true }
    }

    /// Elementwise, any shape.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        crate::fused::gelu(x, self.approximate)
    }
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as `x·σ(2z)`: the same function
/// (`0.5·(1 + tanh z)` is the logistic of `2z`), one `exp` inside the backend's stable sigmoid
/// instead of `powf` and `tanh`, and fewer intermediates kept for the backward pass.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    // 2z = x·(2√(2/π) + 2√(2/π)·0.044715·x²)
    let two_z = (x.clone() * x.clone()).mul_scalar(TWO_SQRT_2_OVER_PI * 0.044715).add_scalar(TWO_SQRT_2_OVER_PI) * x.clone();
    x * sigmoid(two_z)
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::gelu_approximate;

    use super::*;
    use crate::testing::test_values as values;


    /// Against burn's plain-op formula, forward and backward, from the far tails through zero.
    #[test]
    fn gelu_tanh_equals_the_plain_formula_and_its_gradient() {
        let device = Device::flex().autodiff();
        let mut xs: Vec<f32> = (-400..=400).map(|i| i as f32 * 0.025).collect();
        xs.extend([-1e4, -100.0, -30.0, -12.0, 12.0, 30.0, 100.0, 1e4, 0.0]);
        let n = xs.len();
        let input = || Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
        let (fast_x, plain_x) = (input(), input());
        let (fast, plain) = (gelu_tanh(fast_x.clone()), gelu_approximate(plain_x.clone()));
        let (fast_grad, plain_grad) = (
            fast_x.grad(&fast.clone().sum().backward()).unwrap(),
            plain_x.grad(&plain.clone().sum().backward()).unwrap(),
        );
        for (what, a, b) in [("value", values(fast), values(plain)), ("gradient", values(fast_grad), values(plain_grad))] {
            for ((x, a), b) in xs.iter().zip(&a).zip(&b) {
                assert!(a.is_finite(), "{what} at {x}: {a}");
                assert!((a - b).abs() <= 2e-6 * (1.0 + b.abs()), "{what} at {x}: {a} vs plain {b}");
            }
        }
    }

    #[test]
    fn the_module_picks_exact_or_tanh() {
        let device = Device::flex();
        let x = Tensor::<1>::from_data([-1.5f32, 0.5, 2.0], &device);
        let exact = values(Gelu::new().forward(x.clone()));
        let tanh = values(Gelu::new_approximate().forward(x.clone()));
        // the op itself is checked against burn's `gelu` and the plain tanh formula in `fused`
        assert_eq!(exact, values(crate::fused::gelu(x.clone(), false)));
        assert_eq!(tanh, values(crate::fused::gelu(x.clone(), true)));
        assert!(exact.iter().zip(&tanh).any(|(a, b)| a != b), "the two differ");
    }
}

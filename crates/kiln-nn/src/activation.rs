//! GELU, exact or tanh-approximated, as a module field. The op itself is [`crate::fused::gelu`],
//! with the approximation written for speed ([`gelu_tanh`]): burn's `gelu_approximate` spends
//! most of its time in scalar `powf` and `tanh` calls (45% of a MaxViT forward on flex), while
//! `0.5·(1 + tanh(z))` is the logistic of `2z`: one `exp`.

use burn::prelude::*;

pub use crate::fused::gelu_tanh;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;

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

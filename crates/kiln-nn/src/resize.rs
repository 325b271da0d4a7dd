//! Resampling of channels-first maps as PyTorch does it for dense heads:
//! `F.interpolate(mode='bilinear', align_corners=False)` and `F.adaptive_avg_pool2d`.
//!
//! burn's [`interpolate`] defaults to `align_corners = true`; these helpers fix the PyTorch
//! convention, so no head can pick the other by accident. Both ops have a backward on every
//! autodiff backend (the tests check it on flex).

use burn::prelude::*;
use burn::tensor::module::{adaptive_avg_pool2d, interpolate};
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};

/// Bilinear resize to `size`, PyTorch's `F.interpolate(x, size, mode='bilinear',
/// align_corners=False)` (mmseg's `resize`): half-pixel centres, source coordinates below 0
/// clamped to 0, no antialiasing. The identity when the size is unchanged.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, size[0], size[1]]`
pub fn resize_bilinear(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [_, _, h, w] = x.dims();
    if [h, w] == size {
        return x;
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size(size);
    interpolate(x, options)
}

/// Adaptive average pooling to `size`, PyTorch's `F.adaptive_avg_pool2d`: output cell `i`
/// averages input rows `⌊i·H/out⌋ .. ⌈(i+1)·H/out⌉` (overlapping when `out` does not divide
/// `H`), likewise for columns.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C, size[0], size[1]]`
pub fn adaptive_avg_pool(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    adaptive_avg_pool2d(x, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;
    use burn::tensor::Distribution;

    #[test]
    fn bilinear_uses_half_pixel_centres_and_clamps_the_edges() {
        let device = Device::flex();
        // one row [0, 4] -> 4 columns: source x = (o + 0.5) / 2 − 0.5 = −0.25, 0.25, 0.75, 1.25
        let x = Tensor::<4>::from_floats([[[[0.0, 4.0]]]], &device);
        assert_eq!(values(resize_bilinear(x, [1, 4])), vec![0.0, 1.0, 3.0, 4.0]);
        // 3 -> 2 (downsampling, no antialias): source x = 0.25, 1.75
        let x = Tensor::<4>::from_floats([[[[0.0, 4.0, 8.0]]]], &device);
        assert_eq!(values(resize_bilinear(x, [1, 2])), vec![1.0, 7.0]);
    }

    #[test]
    fn adaptive_pool_overlaps_windows_as_pytorch() {
        let device = Device::flex();
        // 5 -> 3: windows [0, 2), [1, 4), [3, 5)
        let x = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0, 4.0, 5.0]]]], &device);
        assert_eq!(values(adaptive_avg_pool(x, [1, 3])), vec![1.5, 3.0, 4.5]);
    }

    /// Both ops are linear: the gradient of `<op(x), g>` is `opᵀ g`, so `<x, grad> = <op(x), g>`.
    fn check_backward(op: impl Fn(Tensor<4>) -> Tensor<4>, in_shape: [usize; 4]) {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(in_shape, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let y = op(x.clone());
        let g = Tensor::<4>::random(y.dims(), Distribution::Normal(0.0, 1.0), &device);
        let inner = (y * g).sum();
        let expected: f32 = inner.clone().into_scalar::<f32>();
        let grads = inner.backward();
        let grad = x.grad(&grads).expect("a gradient reaches the input");
        let got: f32 = (x.inner() * grad).sum().into_scalar::<f32>();
        assert!((got - expected).abs() <= 1e-4 * expected.abs().max(1.0), "{got} vs {expected}");
    }

    #[test]
    fn bilinear_and_adaptive_pool_have_a_backward() {
        check_backward(|x| resize_bilinear(x, [7, 10]), [2, 3, 3, 4]);
        check_backward(|x| resize_bilinear(x, [3, 2]), [1, 2, 6, 5]);
        check_backward(|x| adaptive_avg_pool(x, [3, 3]), [2, 3, 5, 7]);
        check_backward(|x| adaptive_avg_pool(x, [1, 1]), [1, 2, 4, 4]);
    }
}

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
    // burn's GPU backends (cubecl) have no backward for bilinear interpolation: there the
    // resize runs as two products with interpolation matrices, the same arithmetic as a
    // sum of two weighted taps, differentiable on every backend
    if x.is_autodiff() && !crate::fused::runs_fused(&x) {
        return resize_bilinear_by_products(x, size);
    }
    let options = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size(size);
    interpolate(x, options)
}

/// [`resize_bilinear`] as `A_h · x · A_wᵀ`, with `A` the `[out, in]` matrices of the two taps
/// of each output position ([`bilinear_taps`]).
fn resize_bilinear_by_products(x: Tensor<4>, size: [usize; 2]) -> Tensor<4> {
    let [b, c, h, w] = x.dims();
    let device = x.device();
    let rows = Tensor::<2>::from_data(TensorData::new(bilinear_taps(h, size[0]), [size[0], h]), &device);
    let cols = Tensor::<2>::from_data(TensorData::new(bilinear_taps(w, size[1]), [size[1], w]), &device);
    let x = x.matmul(cols.transpose().unsqueeze::<4>().expand([b, c, w, size[1]]));
    rows.unsqueeze::<4>().expand([b, c, size[0], h]).matmul(x)
}

/// The `[output, input]` matrix of PyTorch's bilinear weights along one axis
/// (`align_corners=False`): output `o` reads `src = (o + 0.5)·in/out − 0.5`, clamped to 0, from
/// `⌊src⌋` with weight `1 − λ` and the next input (the last, at the edge) with `λ = src − ⌊src⌋`.
fn bilinear_taps(input: usize, output: usize) -> Vec<f32> {
    let scale = input as f32 / output as f32;
    let mut taps = vec![0.0; output * input];
    for o in 0..output {
        let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (src as usize).min(input - 1);
        let i1 = (i0 + 1).min(input - 1);
        let lambda = src - i0 as f32;
        taps[o * input + i0] += 1.0 - lambda;
        taps[o * input + i1] += lambda;
    }
    taps
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

    /// The GPU path (products with interpolation matrices) gives burn's interpolation, values
    /// and gradients, up- and downsampling.
    #[test]
    fn bilinear_by_products_equals_the_interpolation() {
        let device = Device::flex().autodiff();
        for (input, size) in [([2, 3, 5, 7], [11, 4]), ([1, 2, 8, 6], [3, 13])] {
            let x = Tensor::<4>::random(input, Distribution::Normal(0.0, 1.0), &device).require_grad();
            let g = Tensor::<4>::random([input[0], input[1], size[0], size[1]], Distribution::Normal(0.0, 1.0), &device);
            let options = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size(size);
            let want = interpolate(x.clone(), options);
            let got = resize_bilinear_by_products(x.clone(), size);
            let close = |a: Vec<f32>, b: Vec<f32>| a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-5 * (1.0 + q.abs()));
            assert!(close(values(got.clone()), values(want.clone())), "values, {input:?} -> {size:?}");
            let grad = |y: Tensor<4>| values(x.grad(&(y * g.clone()).sum().backward()).unwrap());
            assert!(close(grad(got), grad(want)), "gradients, {input:?} -> {size:?}");
        }
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

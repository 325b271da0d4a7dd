//! Kiln's own ops, the API the layers call: softmax over the last axis, layer normalisation,
//! GELU, window attention and depthwise convolution as single autodiff nodes on burn-flex, and
//! 1x1 / patchwise convolutions as matrix products ([`conv2d`]).
//!
//! burn's autodiff has no rule for these ops, so it records the backend's default decomposition:
//! softmax as max, subtract, exp, sum and divide, layer norm as nine element-wise and reduction
//! ops, each keeping its operands alive for the backward pass. Attention over many small windows
//! and a layer norm before every attention and MLP make that a large share of a training step.
//! The kernels that make each op one node, forward and backward, live in `crate::kernels`, added
//! through burn's backend-extension mechanism ([`FusedOps`]); here each op picks them on f32
//! burn-flex tensors ([`runs_fused`]), and on any other backend (wgpu) or dtype takes burn's ops.

use burn::backend::Dispatch;
use burn::nn::{Linear, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn::tensor::activation::sigmoid;

pub use crate::kernels::FusedOps;
use crate::autocast::{self, operand, product_dtype};
use crate::kernels::blas;
use crate::kernels::simd::Isa;

/// Softmax over the last axis: one autodiff node on burn-flex, burn's `softmax` elsewhere.
///
/// # Shapes
/// - `x`: `[..., n]` -> `[..., n]`
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if runs_fused(&x) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_softmax_last(x.into_dispatch()))
    } else {
        burn::tensor::activation::softmax(x, D - 1)
    }
}

/// `(x − mean) / √(var + ε) · γ + β` over the last axis, biased variance (PyTorch's `LayerNorm`):
/// one autodiff node on burn-flex when there is a `β`, burn's `layer_norm` otherwise.
///
/// # Shapes
/// - `x`: `[..., n]`, `gamma` and `beta`: `[n]` -> `[..., n]`
pub fn layer_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Option<Tensor<1>>, epsilon: f64) -> Tensor<D> {
    match beta {
        Some(beta) if runs_fused(&x) => Tensor::from_dispatch(<Dispatch as FusedOps>::fused_layer_norm(
            x.into_dispatch(),
            gamma.into_dispatch(),
            beta.into_dispatch(),
            epsilon,
        )),
        beta => burn::tensor::module::layer_norm(x, gamma, beta, epsilon),
    }
}

/// GELU, exact (`x·Φ(x)`, erf) or timm's tanh approximation: one autodiff node keeping only its
/// input on burn-flex, burn's `gelu` (or Kiln's [`gelu_tanh`]) elsewhere. The erf and exp inside
/// are Kiln's vectorisable forms (within 3·10⁻⁷).
///
/// # Shapes
/// - `x`: any -> same
pub fn gelu<const D: usize>(x: Tensor<D>, approximate: bool) -> Tensor<D> {
    if runs_fused(&x) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch(), approximate))
    } else if approximate {
        gelu_tanh(x)
    } else if x.device().is_autodiff() {
        gelu_erf(x)
    } else {
        burn::tensor::activation::gelu(x)
    }
}

/// Exact GELU `x·½(1 + erf(x/√2))` as burn ops, whose recorded backward is exact: burn 0.22's
/// default `gelu_backward`, which the GPU backends use, is the derivative of the tanh
/// approximation (off by up to 9e-4 near |x| = 2) under the exact forward.
fn gelu_erf<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * x.mul_scalar(core::f64::consts::FRAC_1_SQRT_2).erf().add_scalar(1.0).mul_scalar(0.5)
}

/// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, computed as `x·σ(2z)`: the same function
/// (`0.5·(1 + tanh z)` is the logistic of `2z`), one `exp` inside the backend's stable sigmoid
/// instead of `powf` and `tanh`, and fewer intermediates kept for the backward pass. burn's
/// `gelu_approximate` spends most of its time in those scalar calls (45% of a MaxViT forward on
/// flex); this is [`gelu`]'s form off burn-flex.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    const TWO_SQRT_2_OVER_PI: f64 = 2.0 * core::f64::consts::FRAC_2_SQRT_PI * core::f64::consts::FRAC_1_SQRT_2;
    // 2z = x·(2√(2/π) + 2√(2/π)·0.044715·x²)
    let two_z = (x.clone() * x.clone()).mul_scalar(TWO_SQRT_2_OVER_PI * 0.044715).add_scalar(TWO_SQRT_2_OVER_PI) * x.clone();
    x * sigmoid(two_z)
}

/// A convolution through `conv`'s weights, on burn-flex in one of two faster forms where they
/// apply, through `conv.forward` otherwise (and on other backends):
/// - depthwise (one filter per channel, no dilation): one autodiff node, any padding (TF-style
///   `Same` included) and stride;
/// - pointwise (1x1, stride 1, no padding, one group): a matrix product `W·x` per image. burn
///   computes a convolution's weight gradient as a convolution whose kernel is the whole output
///   gradient, which for a 1x1 convolution is one matrix-vector product per input channel behind
///   an im2col copy; as a matrix product its gradients are matrix products too.
/// - patchwise (kernel = stride, no padding, one group: DaViT's downsampling, patch embeddings):
///   the same, on the image cut into non-overlapping patches.
///
/// # Shapes
/// - `x`: `[batch, C, H, W]` -> `[batch, C_out, OH, OW]`
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [batch, channels, height, width] = x.dims();
    let [out_channels, _, kh, kw] = conv.weight.dims();
    if product_dtype().is_some() {
        // under autocast: the convolution in the low precision, the bias added in f32
        let mut low = conv.clone();
        low.weight = low.weight.map(operand);
        let bias = low.bias.take();
        let y = autocast::result(low.forward(operand(x)));
        return match bias {
            Some(bias) => y + bias.val().reshape([1, out_channels, 1, 1]),
            None => y,
        };
    }
    if !runs_fused(&x) {
        return conv.forward(x);
    }
    let padding = resolved_padding(conv, [height, width]);
    let unpadded = padding == [0; 4];
    let bias = || conv.bias.as_ref().map(|b| b.val());
    if [kh, kw] == [1, 1] && conv.stride == [1, 1] && conv.groups == 1 && unpadded {
        let weight = conv.weight.val().reshape([1, out_channels, channels]);
        let y = matmul(weight, x.reshape([batch, channels, height * width]));
        let y = match bias() {
            Some(bias) => y + bias.reshape([1, out_channels, 1]),
            None => y,
        };
        return y.reshape([batch, out_channels, height, width]);
    }
    if [kh, kw] == conv.stride && conv.groups == 1 && unpadded {
        // rows and columns beyond the last whole patch are never read, as in the convolution
        let (oh, ow) = (height / kh, width / kw);
        let x = if (oh * kh, ow * kw) != (height, width) { x.slice([0..batch, 0..channels, 0..oh * kh, 0..ow * kw]) } else { x };
        let patches = x.reshape([batch, channels, oh, kh, ow, kw]).permute([0, 2, 4, 1, 3, 5]).reshape([batch * oh * ow, channels * kh * kw]);
        let y = affine(patches, conv.weight.val().reshape([out_channels, channels * kh * kw]).transpose(), bias());
        return y.reshape([batch, oh, ow, out_channels]).permute([0, 3, 1, 2]);
    }
    if !is_depthwise(conv, channels) {
        return conv.forward(x);
    }
    depthwise_node(conv, x, padding, false)
}

/// [`conv2d`] for a depthwise convolution of a channels-last map (DaViT's position encoding
/// between token blocks): on burn-flex at stride 1 one node over the map as it is, with no
/// permute copies either side; otherwise the map is permuted around [`conv2d`].
///
/// # Shapes
/// - `x`: `[batch, H, W, C]` -> `[batch, OH, OW, C]`
pub fn depthwise_conv2d_channels_last(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let [_, height, width, channels] = x.dims();
    if !(runs_fused_product(&x) && is_depthwise(conv, channels) && conv.stride == [1, 1]) {
        return conv2d(conv, x.permute([0, 3, 1, 2])).permute([0, 2, 3, 1]);
    }
    let padding = resolved_padding(conv, [height, width]);
    depthwise_node(conv, x, padding, true)
}

/// One filter per channel, no dilation.
fn is_depthwise(conv: &Conv2d, channels: usize) -> bool {
    let [out_channels, per_group, _, _] = conv.weight.dims();
    conv.groups == channels && out_channels == channels && per_group == 1 && conv.dilation == [1, 1]
}

/// `[top, bottom, left, right]` for a `[height, width]` input, TF-style `Same` resolved as
/// burn's convolution does.
fn resolved_padding(conv: &Conv2d, [height, width]: [usize; 2]) -> [usize; 4] {
    let [_, _, kh, kw] = conv.weight.dims();
    let same = |size: usize, k: usize, s: usize| {
        let total = ((size.div_ceil(s) - 1) * s + k).saturating_sub(size);
        [total / 2, total - total / 2]
    };
    match conv.padding {
        PaddingConfig2d::Valid => [0; 4],
        PaddingConfig2d::Same => {
            let ([top, bottom], [left, right]) = (same(height, kh, conv.stride[0]), same(width, kw, conv.stride[1]));
            [top, bottom, left, right]
        }
        PaddingConfig2d::Explicit(top, left, bottom, right) => [top, bottom, left, right],
    }
}

fn depthwise_node(conv: &Conv2d, x: Tensor<4>, padding: [usize; 4], channels_last: bool) -> Tensor<4> {
    let weight = conv.weight.val();
    let bias = match &conv.bias {
        Some(bias) => bias.val(),
        None => Tensor::zeros([weight.dims()[0]], &weight.device()),
    };
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_depthwise_conv2d(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        conv.stride,
        padding,
        channels_last,
    ))
}

/// `x·W + b` through `linear`'s weights (burn's `[d_input, d_output]` layout): on burn-flex with
/// a BLAS linked (see `blas`) one matrix-product node whose backward pass is two more
/// products, `linear.forward` otherwise.
///
/// # Shapes
/// - `x`: `[..., d_input]` -> `[..., d_output]`
pub fn linear<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    let mut dims = x.dims();
    let [d_input, d_output] = linear.weight.dims();
    let rows = dims[..D - 1].iter().product();
    let y = affine(x.reshape([rows, d_input]), linear.weight.val(), linear.bias.as_ref().map(|b| b.val()));
    dims[D - 1] = d_output;
    y.reshape(dims)
}

/// `x·weight + bias` for `[rows, d_input]` rows and a `[d_input, d_output]` weight.
fn affine(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    if product_dtype().is_some() {
        // under autocast: the product in the low precision, the bias added in f32
        let y = autocast::result(burn::tensor::module::linear(operand(x), operand(weight), None));
        return match bias {
            Some(bias) => y + bias.unsqueeze(),
            None => y,
        };
    }
    if !(runs_fused(&x) && blas::enabled()) {
        return burn::tensor::module::linear(x, weight, bias);
    }
    match bias {
        Some(bias) => Tensor::from_dispatch(<Dispatch as FusedOps>::fused_linear(x.into_dispatch(), weight.into_dispatch(), bias.into_dispatch())),
        None => {
            let ([rows, d_input], d_output) = (x.dims(), weight.dims()[1]);
            matmul(x.reshape([1, rows, d_input]), weight.reshape([1, d_input, d_output])).reshape([rows, d_output])
        }
    }
}

/// `lhs·rhs` per batch entry, a batch of 1 on either side shared by every entry: through
/// a BLAS as one autodiff node on burn-flex when one is linked, burn's `matmul` otherwise.
///
/// # Shapes
/// - `lhs`: `[batch or 1, M, K]`, `rhs`: `[batch or 1, K, N]` -> `[batch, M, N]`
pub fn matmul(lhs: Tensor<3>, rhs: Tensor<3>) -> Tensor<3> {
    if runs_fused_product(&lhs) && blas::enabled() {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_matmul(lhs.into_dispatch(), rhs.into_dispatch()))
    } else {
        autocast_matmul(lhs, rhs)
    }
}

/// `lhs·rhs` through burn's `matmul`, in the low precision under [`autocast`](crate::autocast),
/// the result in f32.
pub fn autocast_matmul<const D: usize>(lhs: Tensor<D>, rhs: Tensor<D>) -> Tensor<D> {
    autocast::result(operand(lhs).matmul(operand(rhs)))
}

/// Whether [`window_attention`] has a SIMD form on this CPU (x86-64 with AVX2 or AVX-512). Its
/// portable scalar form is kept as the reference the SIMD forms are tested against; it is not
/// measured to beat the op-by-op graph, which callers take instead.
pub(crate) fn window_attention_is_vectorised() -> bool {
    Isa::detect() != Isa::Portable
}

/// Multi-head attention within windows from a fused qkv projection, one autodiff node:
/// `softmax(scale·q·kᵀ + bias + mask)·v` per window and head, heads concatenated again. Only for
/// tensors where [`runs_fused`] holds; the caller takes the op-by-op graph elsewhere.
///
/// # Shapes
/// - `qkv`: `[windows, N, 3·C]`, channels `[q | k | v]`, each head-major
/// - `bias`: `[heads, N, N]` for every window; `mask`: `[num_windows, N, N]`, window `w` takes
///   `mask[w mod num_windows]`
/// - returns `[windows, N, C]`
pub(crate) fn window_attention(qkv: Tensor<3>, heads: usize, scale: f64, bias: Option<Tensor<3>>, mask: Option<Tensor<3>>) -> Tensor<3> {
    let [_, n, _] = qkv.dims();
    let device = qkv.device();
    let bias = bias.unwrap_or_else(|| Tensor::zeros([heads, n, n], &device));
    let mask = mask.unwrap_or_else(|| Tensor::zeros([1, n, n], &device));
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_window_attention(
        qkv.into_dispatch(),
        bias.into_dispatch(),
        mask.into_dispatch(),
        heads,
        scale,
    ))
}

/// The kernels below are written for f32 on burn-flex, with or without autodiff.
pub(crate) fn runs_fused<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && x.device().inner() == Device::flex()
}

/// [`runs_fused`] for the kernels that are products (matrix products, convolutions,
/// attention): not under [`autocast`](crate::autocast), which computes them in low precision.
pub(crate) fn runs_fused_product<const D: usize>(x: &Tensor<D>) -> bool {
    runs_fused(x) && product_dtype().is_none()
}
#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;
    use burn::tensor::activation::gelu_approximate;

    use crate::testing::test_values as values;

    /// Each element within 1e-4 of its own size, plus 1e-5 of the tensor's largest element (at
    /// least 1e-5): a gradient summed over many rows that nearly cancels keeps the rounding error
    /// of its large terms, and the two sides sum in different orders.
    fn assert_close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
        assert_eq!(got.dims(), want.dims(), "{what}: shape");
        let (got, want) = (crate::testing::test_values(got), crate::testing::test_values(want));
        let scale = want.iter().fold(1.0f32, |m, w| m.max(w.abs()));
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * scale + 1e-4 * w.abs(), "{what}[{i}]: fused {g}, plain {w}");
        }
    }

    fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), device)
    }

    #[test]
    fn softmax_matches_burns_forward_and_backward() {
        let device = Device::flex().autodiff();
        // Rows of 49 (a 7x7 window) and 5 (shorter than a vector), the input permuted so it is
        // not contiguous, and an upstream gradient of arbitrary values.
        for shape in [[2, 3, 6, 49], [4, 1, 3, 5]] {
            let x = random(shape, &device).swap_dims(1, 2).require_grad();
            let weights = random(x.dims(), &device);
            let fused = softmax_last(x.clone());
            let plain = burn::tensor::activation::softmax(x.clone(), 3);
            assert_close(fused.clone(), plain.clone(), "softmax");
            let grad_fused = x.grad(&(fused * weights.clone()).sum().backward()).unwrap();
            let grad_plain = x.grad(&(plain * weights).sum().backward()).unwrap();
            assert_close(grad_fused, grad_plain, "∂softmax/∂x");
        }
    }

    #[test]
    fn layer_norm_matches_burns_forward_and_backward() {
        let device = Device::flex().autodiff();
        // 200 rows spread over several tasks; rows of 96 (Swin-T's width) and 7.
        for (shape, eps) in [([2, 100, 96], 1e-5), ([3, 70, 7], 1e-3)] {
            let n = shape[2];
            let x = random(shape, &device).add_scalar(3.0).require_grad();
            let gamma = random([n], &device).require_grad();
            let beta = random([n], &device).require_grad();
            let weights = random(shape, &device);
            let fused = layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), eps);
            let plain = burn::tensor::module::layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), eps);
            assert_close(fused.clone(), plain.clone(), "layer norm");
            let grads_fused = (fused * weights.clone()).sum().backward();
            let grads_plain = (plain * weights).sum().backward();
            assert_close(x.grad(&grads_fused).unwrap(), x.grad(&grads_plain).unwrap(), "∂/∂x");
            assert_close(gamma.grad(&grads_fused).unwrap(), gamma.grad(&grads_plain).unwrap(), "∂/∂γ");
            assert_close(beta.grad(&grads_fused).unwrap(), beta.grad(&grads_plain).unwrap(), "∂/∂β");
        }
    }

    #[test]
    fn frozen_parameters_get_no_gradient_and_plain_devices_run_forward() {
        let device = Device::flex().autodiff();
        let x = random([4, 8], &device).require_grad();
        let (gamma, beta) = (random([8], &device), random([8], &device));
        let y = layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), 1e-5);
        let grads = softmax_last(y).sum().backward();
        assert!(x.grad(&grads).is_some());
        assert!(gamma.grad(&grads).is_none() && beta.grad(&grads).is_none());

        let plain = Device::flex();
        let x = random([4, 8], &plain);
        let (gamma, beta) = (random([8], &plain), random([8], &plain));
        let want = burn::tensor::module::layer_norm(x.clone(), gamma.clone(), Some(beta.clone()), 1e-5);
        assert_close(layer_norm(x.clone(), gamma, Some(beta), 1e-5), want, "layer norm without autodiff");
        assert_close(softmax_last(x.clone()), burn::tensor::activation::softmax(x, 1), "softmax without autodiff");
    }

    /// Both forms against burn's plain ops (burn's `gelu`, Kiln's op-by-op `gelu_tanh`), values
    /// and gradients, from the tails through zero, on a permuted (non-contiguous) input.
    #[test]
    fn gelu_matches_the_plain_ops_forward_and_backward() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (-1200..1200).map(|i| i as f32 * 0.01).chain([-50.0, -12.0, 12.0, 50.0]).collect();
        let n = xs.len();
        let x = Tensor::<2>::from_data(TensorData::new(xs, [n / 4, 4]), &device).swap_dims(0, 1).require_grad();
        let weights = random([4, n / 4], &device);
        for approximate in [false, true] {
            let fused = gelu(x.clone(), approximate);
            let plain = if approximate { gelu_tanh(x.clone()) } else { burn::tensor::activation::gelu(x.clone()) };
            assert_close(fused.clone(), plain.clone(), "gelu");
            let grad_fused = x.grad(&(fused * weights.clone()).sum().backward()).unwrap();
            let grad_plain = x.grad(&(plain * weights.clone()).sum().backward()).unwrap();
            assert_close(grad_fused, grad_plain, "∂gelu/∂x");
        }
    }

    /// The exact GELU the GPU backends train with: values and gradients of the fused exact
    /// GELU (checked above against burn's `gelu` on flex, whose backward is exact there).
    #[test]
    fn gelu_erf_has_the_exact_gradient() {
        let device = Device::flex().autodiff();
        let xs: Vec<f32> = (-600..600).map(|i| i as f32 * 0.01).chain([-30.0, 30.0]).collect();
        let n = xs.len();
        let input = || Tensor::<1>::from_data(TensorData::new(xs.clone(), [n]), &device).require_grad();
        let (erf_x, fused_x) = (input(), input());
        let (by_erf, fused) = (gelu_erf(erf_x.clone()), gelu(fused_x.clone(), false));
        assert_close(by_erf.clone(), fused.clone(), "gelu");
        let grad = |x: Tensor<1>, y: Tensor<1>| x.grad(&y.sum().backward()).unwrap();
        let (erf_grad, fused_grad) = (grad(erf_x, by_erf), grad(fused_x, fused));
        assert_close(erf_grad.clone(), fused_grad, "∂gelu/∂x");
        // the derivative of the tanh approximation is 8.7e-4 away near x = -2: not this one
        let at_minus_2 = values(erf_grad)[400];
        let exact = 0.5 * (1.0 + libm_like_erf(-2.0 / 2f64.sqrt())) - 2.0 * (-2.0f64).exp() / (2.0 * core::f64::consts::PI).sqrt();
        assert!((at_minus_2 as f64 - exact).abs() < 1e-5, "gelu'(-2) = {at_minus_2}, exact {exact}");
    }

    /// erf to 1.2e-7 (Numerical Recipes' erfc by Chebyshev fit), for the test's exact value.
    fn libm_like_erf(x: f64) -> f64 {
        let t = 1.0 / (1.0 + 0.5 * x.abs());
        let poly = -x * x - 1.26551223
            + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851413 + t * (-0.82215223 + t * 0.17087277))))))));
        let erfc = t * poly.exp();
        if x >= 0.0 { 1.0 - erfc } else { erfc - 1.0 }
    }

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

    /// Against burn's grouped convolution: values and the gradients of input, weight and bias,
    /// at stride 1 and 2, with explicit and TF-style `Same` (asymmetric at stride 2) padding, on
    /// odd and even sizes; and a convolution that is not depthwise goes through burn unchanged.
    #[test]
    fn depthwise_conv_matches_burns_forward_and_backward() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex().autodiff();
        let cases = [
            (3, [7, 9], 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true),
            (2, [8, 8], 2, PaddingConfig2d::Same, false),
            (4, [7, 6], 2, PaddingConfig2d::Same, true),
            (2, [5, 5], 1, PaddingConfig2d::Valid, true),
            // more channels than one AVX-512 vector, and a remainder
            (20, [6, 5], 1, PaddingConfig2d::Explicit(1, 1, 1, 1), true),
        ];
        for (channels, [h, w], stride, padding, bias) in cases {
            let what = format!("{channels} channels {h}x{w}, stride {stride}, {padding:?}, bias {bias}");
            let conv = Conv2dConfig::new([channels, channels], [3, 3])
                .with_groups(channels)
                .with_stride([stride, stride])
                .with_padding(padding)
                .with_bias(bias)
                .init(&device);
            let x = random([2, channels, h, w], &device).require_grad();
            let plain = conv.forward(x.clone());
            let weights = random(plain.dims(), &device);
            let grads_plain = (plain.clone() * weights.clone()).sum().backward();
            // channels-first, and channels-last (the channels-last kernel at stride 1)
            let channels_last = depthwise_conv2d_channels_last(&conv, x.clone().permute([0, 2, 3, 1])).permute([0, 3, 1, 2]);
            for (layout, fused) in [("NCHW", conv2d(&conv, x.clone())), ("NHWC", channels_last)] {
                let what = format!("{layout} {what}");
                assert_close(fused.clone(), plain.clone(), &what);
                let grads_fused = (fused * weights.clone()).sum().backward();
                assert_close(x.grad(&grads_fused).unwrap(), x.grad(&grads_plain).unwrap(), &format!("{what}: ∂x"));
                let (dw_fused, dw_plain) = (conv.weight.grad(&grads_fused).unwrap(), conv.weight.grad(&grads_plain).unwrap());
                assert_close(dw_fused, dw_plain, &format!("{what}: ∂w"));
                if let Some(b) = &conv.bias {
                    assert_close(b.grad(&grads_fused).unwrap(), b.grad(&grads_plain).unwrap(), &format!("{what}: ∂b"));
                }
            }
        }
        let dense = Conv2dConfig::new([2, 3], [3, 3]).init(&device);
        let x = random([1, 2, 5, 5], &device);
        assert_close(conv2d(&dense, x.clone()), dense.forward(x), "dense convolution");
    }

    /// 1x1 and patchwise convolutions as matrix products against burn's convolution: values and
    /// gradients, with and without bias, `Same` padding (nothing at 1x1) included, and a
    /// patchwise one whose input leaves a partial patch.
    #[test]
    fn linear_and_batched_products_match_burns_forward_and_backward() {
        use burn::nn::LinearConfig;
        // the products go through the BLAS when one is linked, through burn's ops otherwise
        let device = Device::flex().autodiff();
        for bias in [true, false] {
            let layer = LinearConfig::new(7, 9).with_bias(bias).init(&device);
            // a permuted input: BLAS reads it transposed or after a copy
            let x = random([5, 2, 7], &device).swap_dims(0, 1).require_grad();
            let (fused, plain) = (linear(&layer, x.clone()), layer.forward(x.clone()));
            assert_close(fused.clone(), plain.clone(), "linear");
            let weights = random(plain.dims(), &device);
            let grads_fused = (fused * weights.clone()).sum().backward();
            let grads_plain = (plain * weights).sum().backward();
            assert_close(x.grad(&grads_fused).unwrap(), x.grad(&grads_plain).unwrap(), "linear ∂x");
            assert_close(layer.weight.grad(&grads_fused).unwrap(), layer.weight.grad(&grads_plain).unwrap(), "linear ∂w");
            if let Some(b) = &layer.bias {
                assert_close(b.grad(&grads_fused).unwrap(), b.grad(&grads_plain).unwrap(), "linear ∂b");
            }
        }
        // batch 4, one side shared (batch 1) or not; 70 rows so the product is split in blocks;
        // the left operand stored transposed
        for (lhs_batch, rhs_batch) in [(4, 4), (1, 4), (4, 1)] {
            let what = format!("lhs batch {lhs_batch}, rhs batch {rhs_batch}");
            let lhs = random([lhs_batch, 33, 70], &device).swap_dims(1, 2).require_grad();
            let rhs = random([rhs_batch, 33, 45], &device).require_grad();
            let (fused, plain) = (matmul(lhs.clone(), rhs.clone()), lhs.clone().matmul(rhs.clone()));
            assert_close(fused.clone(), plain.clone(), &what);
            let weights = random(plain.dims(), &device);
            let grads_fused = (fused * weights.clone()).sum().backward();
            let grads_plain = (plain * weights).sum().backward();
            assert_close(lhs.grad(&grads_fused).unwrap(), lhs.grad(&grads_plain).unwrap(), &format!("{what}: ∂lhs"));
            assert_close(rhs.grad(&grads_fused).unwrap(), rhs.grad(&grads_plain).unwrap(), &format!("{what}: ∂rhs"));
        }
    }

    #[test]
    fn pointwise_and_patchwise_convs_match_burns_forward_and_backward() {
        use burn::nn::conv::Conv2dConfig;
        let device = Device::flex().autodiff();
        for (kernel, bias, padding, [h, w]) in [
            (1, true, PaddingConfig2d::Valid, [4, 6]),
            (1, false, PaddingConfig2d::Same, [4, 6]),
            (2, true, PaddingConfig2d::Valid, [4, 6]),
            (3, false, PaddingConfig2d::Valid, [7, 6]),
        ] {
            let what = format!("kernel {kernel}, bias {bias}, {padding:?}, {h}x{w}");
            let conv = Conv2dConfig::new([5, 7], [kernel, kernel])
                .with_stride([kernel, kernel])
                .with_bias(bias)
                .with_padding(padding)
                .init(&device);
            let x = random([3, 5, h, w], &device).require_grad();
            let (fused, plain) = (conv2d(&conv, x.clone()), conv.forward(x.clone()));
            assert_close(fused.clone(), plain.clone(), &what);
            let weights = random(plain.dims(), &device);
            let grads_fused = (fused * weights.clone()).sum().backward();
            let grads_plain = (plain * weights).sum().backward();
            assert_close(x.grad(&grads_fused).unwrap(), x.grad(&grads_plain).unwrap(), &format!("{what}: ∂x"));
            assert_close(conv.weight.grad(&grads_fused).unwrap(), conv.weight.grad(&grads_plain).unwrap(), &format!("{what}: ∂w"));
            if let Some(b) = &conv.bias {
                assert_close(b.grad(&grads_fused).unwrap(), b.grad(&grads_plain).unwrap(), &format!("{what}: ∂b"));
            }
        }
    }
}

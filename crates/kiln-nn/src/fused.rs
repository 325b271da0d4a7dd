//! Kiln's own ops on burn-flex: softmax over the last axis, layer normalisation, GELU, window
//! attention and depthwise convolution as single autodiff nodes, and 1x1 / patchwise
//! convolutions as matrix products ([`conv2d`]).
//!
//! burn's autodiff has no rule for either op, so it records the backend's default decomposition:
//! softmax as max, subtract, exp, sum and divide, layer norm as nine element-wise and reduction
//! ops, each keeping its operands alive for the backward pass. Attention over many small windows
//! and a layer norm before every attention and MLP make that a large share of a training step.
//! Here each op is one node: the forward is burn-flex's own fused kernel, the backward one pass
//! over rows. Window attention ([`window_attention`], kernels in `kernels::attention`) keeps only
//! the qkv projection and the probabilities for its backward pass. All are added through burn's
//! backend-extension mechanism; on any other backend (wgpu) or dtype, callers take burn's ops.

use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::nn::{Linear, PaddingConfig2d};
use burn::nn::conv::Conv2d;
use burn::prelude::*;
use burn::tensor::DType;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use crate::kernels::attention::{self as attention_kernel, AttentionShape};
use crate::kernels::blas;
use crate::kernels::depthwise::{self as depthwise_kernel, DepthwiseShape};
use crate::kernels::simd::{Isa, SimdKernel, add_partials, dot, erf, exp, sigmoid, sum, widest_simd};

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
/// input on burn-flex, burn's `gelu` (or Kiln's [`gelu_tanh`](crate::activation::gelu_tanh))
/// elsewhere. The erf and exp inside are Kiln's vectorisable forms (within 3·10⁻⁷).
///
/// # Shapes
/// - `x`: any -> same
pub fn gelu<const D: usize>(x: Tensor<D>, approximate: bool) -> Tensor<D> {
    if runs_fused(&x) {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_gelu(x.into_dispatch(), approximate))
    } else if approximate {
        crate::activation::gelu_tanh(x)
    } else {
        burn::tensor::activation::gelu(x)
    }
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
    if !(runs_fused(&x) && is_depthwise(conv, channels) && conv.stride == [1, 1]) {
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
/// OpenBLAS linked (see `blas`) one matrix-product node whose backward pass is two more
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
/// OpenBLAS as one autodiff node on burn-flex when it is linked, burn's `matmul` otherwise.
///
/// # Shapes
/// - `lhs`: `[batch or 1, M, K]`, `rhs`: `[batch or 1, K, N]` -> `[batch, M, N]`
pub fn matmul(lhs: Tensor<3>, rhs: Tensor<3>) -> Tensor<3> {
    if runs_fused(&lhs) && blas::enabled() {
        Tensor::from_dispatch(<Dispatch as FusedOps>::fused_matmul(lhs.into_dispatch(), rhs.into_dispatch()))
    } else {
        lhs.matmul(rhs)
    }
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

/// The ops Kiln adds to burn's backends (routing generated by burn's `backend_extension`).
#[backend_extension(Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// Softmax over the last axis.
    fn fused_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self>;
    /// Layer norm over the last axis with scale and shift.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self>;
    /// Depthwise convolution, see [`conv2d`] and [`depthwise_conv2d_channels_last`]; padding
    /// `[top, bottom, left, right]`.
    fn fused_depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
        channels_last: bool,
    ) -> FloatTensor<Self>;
    /// GELU, see [`gelu`].
    fn fused_gelu(x: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self>;
    /// Window attention, see [`window_attention`].
    fn fused_window_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self>;
    /// Batched matrix product through OpenBLAS, see [`matmul`].
    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self>;
    /// `x·weight + bias` through OpenBLAS, the bias written before the product, see [`linear`].
    fn fused_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self>;
}

impl FusedOps for Flex {
    fn fused_softmax_last(x: FlexTensor) -> FlexTensor {
        let last = x.layout().num_dims() - 1;
        burn_flex::ops::activation::softmax(x, last)
    }

    fn fused_layer_norm(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
        burn_flex::ops::activation::layer_norm(x, gamma, Some(beta), epsilon)
    }

    fn fused_depthwise_conv2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, stride: [usize; 2], padding: [usize; 4], channels_last: bool) -> FlexTensor {
        depthwise_forward(x, weight, bias, stride, padding, channels_last).0
    }

    fn fused_gelu(x: FlexTensor, approximate: bool) -> FlexTensor {
        let x = x.to_contiguous();
        let values = if approximate {
            elementwise(x.storage(), |x| x * gelu_tanh_gate(x).0)
        } else {
            elementwise(x.storage(), |x| x * normal_cdf(x))
        };
        f32_tensor(values, &x)
    }

    fn fused_window_attention(qkv: FlexTensor, bias: FlexTensor, mask: FlexTensor, heads: usize, scale: f64) -> FlexTensor {
        attention_forward(qkv, bias, mask, heads, scale as f32, false).0
    }

    fn fused_matmul(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
        let (lhs, rhs) = (blas_readable(lhs), blas_readable(rhs));
        let batch = batch_of(&lhs).max(batch_of(&rhs));
        let (m, n) = (lhs.layout().shape()[1], rhs.layout().shape()[2]);
        let out = blas::batched_matmul(lhs.storage(), matrix_view(&lhs), rhs.storage(), matrix_view(&rhs), batch, false, None);
        FlexTensor::from_data(TensorData::new(out, [batch, m, n]))
    }

    fn fused_linear(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        let (x, weight, bias) = (blas_readable(x), blas_readable(weight), bias.to_contiguous());
        let (rows, d_output) = (x.layout().shape()[0], weight.layout().shape()[1]);
        let out = blas::batched_matmul(x.storage(), matrix_view(&x), weight.storage(), matrix_view(&weight), 1, false, Some(bias.storage()));
        FlexTensor::from_data(TensorData::new(out, [rows, d_output]))
    }
}

/// A `[batch, rows, cols]` (or `[rows, cols]`) tensor as BLAS sees it: a batch of 1 has batch
/// stride 0 (shared).
fn matrix_view(x: &FlexTensor) -> blas::MatrixView {
    let (dims, strides) = (x.layout().shape(), x.layout().strides());
    let r = dims.num_dims() - 2;
    let stride = |i: usize| usize::try_from(strides[i]).unwrap_or(0);
    blas::MatrixView {
        offset: x.layout().start_offset(),
        rows: dims[r],
        cols: dims[r + 1],
        row_stride: stride(r),
        col_stride: stride(r + 1),
        batch_stride: if batch_of(x) == 1 { 0 } else { stride(0) },
    }
}

/// The batch of a `[batch, rows, cols]` tensor; 1 for a matrix.
fn batch_of(x: &FlexTensor) -> usize {
    let dims = x.layout().shape();
    if dims.num_dims() == 3 { dims[0] } else { 1 }
}

/// `x` itself when BLAS reads its matrices in place (row-major or transposed, non-negative
/// strides), a contiguous copy otherwise.
fn blas_readable(x: FlexTensor) -> FlexTensor {
    let strides_ok = x.layout().strides().iter().all(|&s| s >= 0);
    if strides_ok && matrix_view(&x).is_blas_readable() { x } else { x.to_contiguous() }
}

/// The depthwise convolution's output, and what its backward pass keeps: the shape and the
/// contiguous input, weight and bias.
fn depthwise_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, stride: [usize; 2], padding: [usize; 4], channels_last: bool) -> (FlexTensor, DepthwiseState) {
    let (dims, w) = (x.layout().shape().clone(), weight.layout().shape().clone());
    let [batch, height, width, channels] = if channels_last { [dims[0], dims[1], dims[2], dims[3]] } else { [dims[0], dims[2], dims[3], dims[1]] };
    let shape = DepthwiseShape { batch, channels, height, width, kernel: [w[2], w[3]], stride, padding };
    let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
    let (oh, ow) = (shape.out_height(), shape.out_width());
    let out = if channels_last {
        let out = depthwise_kernel::forward_channels_last(shape, x.storage(), &taps(&weight), bias.storage());
        FlexTensor::from_data(TensorData::new(out, [batch, oh, ow, channels]))
    } else {
        let out = depthwise_kernel::forward(shape, x.storage(), weight.storage(), bias.storage());
        FlexTensor::from_data(TensorData::new(out, [batch, channels, oh, ow]))
    };
    (out, DepthwiseState { shape, channels_last, x, weight, bias })
}

/// A depthwise weight `[C, 1, kh, kw]` tap-major, `[kh·kw, C]`, as the channels-last kernel reads it.
fn taps(weight: &FlexTensor) -> Vec<f32> {
    transpose(weight.storage(), weight.layout().shape()[0])
}

/// A row-major `[rows, len / rows]` matrix transposed.
fn transpose(values: &[f32], rows: usize) -> Vec<f32> {
    let cols = values.len() / rows;
    (0..cols).flat_map(|j| (0..rows).map(move |i| values[i * cols + j])).collect()
}

/// What the depthwise convolution's backward pass keeps: the shape, the layout and the
/// contiguous input, weight and bias.
#[derive(Clone, Debug)]
struct DepthwiseState {
    shape: DepthwiseShape,
    channels_last: bool,
    x: FlexTensor,
    weight: FlexTensor,
    bias: FlexTensor,
}

/// The window attention's output, and what its backward pass keeps (probabilities only when
/// `keep_probs`).
fn attention_forward(qkv: FlexTensor, bias: FlexTensor, mask: FlexTensor, heads: usize, scale: f32, keep_probs: bool) -> (FlexTensor, AttentionShape, FlexTensor, Option<Vec<f32>>) {
    let (dims, mask_dims) = (qkv.layout().shape().clone(), mask.layout().shape().clone());
    let shape = AttentionShape { windows: dims[0], tokens: dims[1], heads, head_dim: dims[2] / 3 / heads, mask_windows: mask_dims[0] };
    let (qkv, bias, mask) = (qkv.to_contiguous(), bias.to_contiguous(), mask.to_contiguous());
    let (out, probs) = attention_kernel::forward(Isa::detect(), shape, scale, qkv.storage(), bias.storage(), mask.storage(), keep_probs);
    let out = FlexTensor::from_data(TensorData::new(out, [shape.windows, shape.tokens, shape.heads * shape.head_dim]));
    (out, shape, qkv, probs)
}

impl<C: CheckpointStrategy> FusedOps for Autodiff<Flex, C> {
    fn fused_softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match SoftmaxLastBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = Flex::fused_softmax_last(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_softmax_last(x.into_primitive())),
        }
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        match LayerNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
                let y = Flex::fused_layer_norm(x.clone(), gamma.clone(), beta.into_primitive(), epsilon);
                prep.finish((x, gamma, epsilon), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_layer_norm(
                x.into_primitive(),
                gamma.into_primitive(),
                beta.into_primitive(),
                epsilon,
            )),
        }
    }

    fn fused_depthwise_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        stride: [usize; 2],
        padding: [usize; 4],
        channels_last: bool,
    ) -> FloatTensor<Self> {
        match DepthwiseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, state) = depthwise_forward(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), stride, padding, channels_last);
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_depthwise_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                stride,
                padding,
                channels_last,
            )),
        }
    }

    fn fused_gelu(x: FloatTensor<Self>, approximate: bool) -> FloatTensor<Self> {
        match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                // kept contiguous, so the backward pass reads it as it is
                let x = x.into_primitive().to_contiguous();
                let y = Flex::fused_gelu(x.clone(), approximate);
                prep.finish((x, approximate), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_gelu(x.into_primitive(), approximate)),
        }
    }

    fn fused_window_attention(
        qkv: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        mask: FloatTensor<Self>,
        heads: usize,
        scale: f64,
    ) -> FloatTensor<Self> {
        match WindowAttentionBackward.prepare::<C>([qkv.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let scale = scale as f32;
                let (out, shape, qkv, probs) = attention_forward(qkv.into_primitive(), bias.into_primitive(), mask.into_primitive(), heads, scale, true);
                let probs = probs.expect("probabilities kept for the backward pass");
                prep.finish(AttentionState { shape, scale, qkv, probs }, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_window_attention(
                qkv.into_primitive(),
                bias.into_primitive(),
                mask.into_primitive(),
                heads,
                scale,
            )),
        }
    }

    fn fused_matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        match MatmulBackward.prepare::<C>([lhs.node(), rhs.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (lhs, rhs) = (blas_readable(lhs.into_primitive()), blas_readable(rhs.into_primitive()));
                let out = Flex::fused_matmul(lhs.clone(), rhs.clone());
                prep.finish((lhs, rhs), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_matmul(lhs.into_primitive(), rhs.into_primitive())),
        }
    }

    fn fused_linear(x: FloatTensor<Self>, weight: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        match LinearBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (blas_readable(x.into_primitive()), blas_readable(weight.into_primitive()));
                let out = Flex::fused_linear(x.clone(), weight.clone(), bias.into_primitive());
                prep.finish((x, weight), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::fused_linear(x.into_primitive(), weight.into_primitive(), bias.into_primitive())),
        }
    }
}

/// Keeps both operands: `∂lhs = ∂out·rhsᵀ`, `∂rhs = lhsᵀ·∂out`, each summed over the batch where
/// that operand was shared. Transposes are views: BLAS reads them in place.
#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [lhs_node, rhs_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (lhs, rhs) = ops.state;
        register_product_grads(&lhs, &rhs, &grad, [lhs_node, rhs_node].map(|n| n.map(|n| n.id)), grads);
    }
}

/// [`MatmulBackward`] plus the bias: `∂bias = Σ_rows ∂out`.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, weight) = ops.state;
        register_product_grads(&x, &weight, &grad, [x_node, weight_node].map(|n| n.map(|n| n.id)), grads);
        if let Some(node) = bias_node {
            let d_output = grad.layout().shape()[1];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(column_sums(grad.storage(), d_output), [d_output])));
        }
    }
}

/// `∂lhs = ∂out·rhsᵀ` and `∂rhs = lhsᵀ·∂out` for the operands that want one.
fn register_product_grads(lhs: &FlexTensor, rhs: &FlexTensor, grad: &FlexTensor, nodes: [Option<NodeId>; 2], grads: &mut Gradients) {
    let batch = batch_of(grad);
    let grad_view = matrix_view(grad);
    let [lhs_node, rhs_node] = nodes;
    if let Some(id) = lhs_node {
        let shared = batch_of(lhs) == 1 && batch > 1;
        let d = blas::batched_matmul(grad.storage(), grad_view, rhs.storage(), matrix_view(rhs).t(), batch, shared, None);
        grads.register::<Flex>(id, f32_tensor(d, lhs));
    }
    if let Some(id) = rhs_node {
        let shared = batch_of(rhs) == 1 && batch > 1;
        let d = blas::batched_matmul(lhs.storage(), matrix_view(lhs).t(), grad.storage(), grad_view, batch, shared, None);
        grads.register::<Flex>(id, f32_tensor(d, rhs));
    }
}

/// Sums of the columns of a row-major matrix with `cols` columns, over row blocks in parallel.
fn column_sums(values: &[f32], cols: usize) -> Vec<f32> {
    let block_sums = values.par_chunks(ROWS_PER_TASK * cols).map(|block| {
        block.chunks_exact(cols).fold(vec![0.0f32; cols], |mut sums, row| {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            sums
        })
    });
    block_sums.reduce(|| vec![0.0f32; cols], add_partials)
}

/// Keeps the input and the weights (and the bias, for its shape).
#[derive(Debug)]
struct DepthwiseBackward;

impl Backward<Flex, 3> for DepthwiseBackward {
    type State = DepthwiseState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let DepthwiseState { shape, channels_last, x, weight, bias } = ops.state;
        let (dx, dw, db) = if channels_last {
            let (dx, dtaps, db) = depthwise_kernel::backward_channels_last(shape, x.storage(), &taps(&weight), grad.storage());
            (dx, transpose(&dtaps, shape.kernel[0] * shape.kernel[1]), db)
        } else {
            depthwise_kernel::backward(shape, x.storage(), weight.storage(), grad.storage())
        };
        for (node, g, like) in [(x_node, dx, &x), (weight_node, dw, &weight), (bias_node, db, &bias)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, f32_tensor(g, like));
            }
        }
    }
}

/// Keeps the input: `∂x = ∂y·gelu'(x)`.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = (FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, approximate) = ops.state;
        let Some(node) = x_node else { return };
        // one loop per form: a branch inside the element loop keeps it from vectorising
        let dx = if approximate {
            // x·σ(2z): σ + x·σ(1 − σ)·2z'
            zip_elementwise(x.storage(), grad.storage(), |x, g| {
                let (gate, dz) = gelu_tanh_gate(x);
                g * (gate + x * gate * (1.0 - gate) * dz)
            })
        } else {
            // x·Φ(x): Φ + x·φ
            zip_elementwise(x.storage(), grad.storage(), |x, g| g * (normal_cdf(x) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)))
        };
        grads.register::<Flex>(node.id, f32_tensor(dx, &x));
    }
}

/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(x) = (1 + erf(x/√2))/2`.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// timm's `gelu_tanh` is `x·σ(2z)`, `z = √(2/π)·(x + 0.044715·x³)`: returns `σ(2z)` and `2z'`.
#[inline(always)]
fn gelu_tanh_gate(x: f32) -> (f32, f32) {
    const TWO_SQRT_2_OVER_PI: f32 = 1.595_769;
    const C: f32 = 0.044_715;
    let x2 = x * x;
    (sigmoid(TWO_SQRT_2_OVER_PI * x * (1.0 + C * x2)), TWO_SQRT_2_OVER_PI * (1.0 + 3.0 * C * x2))
}

/// Elements handed to one rayon task.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// `f` of every element, in parallel.
fn elementwise(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK).zip(x.par_chunks(ELEMENTS_PER_TASK)).for_each(|(out, x)| {
        widest_simd(Map { out, x, f: &f });
    });
    out
}

/// `out = f(x)` per element, compiled per instruction set.
struct Map<'a, F> {
    out: &'a mut [f32],
    x: &'a [f32],
    f: &'a F,
}

impl<F: Fn(f32) -> f32> SimdKernel for Map<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        // a `for` loop, not `for_each(closure)`: the closure could be left out of line
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            *o = (self.f)(x);
        }
    }
}

/// `out = f(a, b)` per element, compiled per instruction set.
struct ZipMap<'a, F> {
    out: &'a mut [f32],
    a: &'a [f32],
    b: &'a [f32],
    f: &'a F,
}

impl<F: Fn(f32, f32) -> f32> SimdKernel for ZipMap<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((o, &a), &b) in self.out.iter_mut().zip(self.a).zip(self.b) {
            *o = (self.f)(a, b);
        }
    }
}

/// `f` of every pair of elements, in parallel.
fn zip_elementwise(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK).zip(a.par_chunks(ELEMENTS_PER_TASK)).zip(b.par_chunks(ELEMENTS_PER_TASK)).for_each(|((out, a), b)| {
        widest_simd(ZipMap { out, a, b, f: &f });
    });
    out
}

/// What the attention's backward pass needs: the qkv projection and the probabilities.
#[derive(Clone, Debug)]
struct AttentionState {
    shape: AttentionShape,
    scale: f32,
    qkv: FlexTensor,
    probs: Vec<f32>,
}

/// Gradients of qkv and of the bias (the mask is a constant).
#[derive(Debug)]
struct WindowAttentionBackward;

impl Backward<Flex, 2> for WindowAttentionBackward {
    type State = AttentionState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [qkv_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let AttentionState { shape, scale, qkv, probs } = ops.state;
        let (dqkv, dbias) = attention_kernel::backward(Isa::detect(), shape, scale, qkv.storage(), &probs, grad.storage(), bias_node.is_some());
        if let Some(node) = qkv_node {
            grads.register::<Flex>(node.id, f32_tensor(dqkv, &qkv));
        }
        if let (Some(node), Some(dbias)) = (bias_node, dbias) {
            let dims = [shape.heads, shape.tokens, shape.tokens];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dbias, dims)));
        }
    }
}

/// Keeps the softmax's output `y`: `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)` per row.
#[derive(Debug)]
struct SoftmaxLastBackward;

impl Backward<Flex, 1> for SoftmaxLastBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, softmax_last_backward(&ops.state, &grad));
        }
    }
}

/// Keeps the input and `γ` (the row statistics are cheaper to recompute than to store).
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = (FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, epsilon) = ops.state;
        let (dx, dgamma, dbeta) = layer_norm_backward(&x, &gamma, &grad, epsilon);
        for (node, g) in [(x_node, dx), (gamma_node, dgamma), (beta_node, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// Rows handed to one rayon task: enough work to pay for the task, few enough to balance.
const ROWS_PER_TASK: usize = 64;

/// A contiguous f32 copy (or the tensor itself when it already is one) and its row length.
fn rows_of(t: &FlexTensor) -> (FlexTensor, usize) {
    let t = t.to_contiguous();
    let n = *t.layout().shape().last().expect("a tensor with at least one axis");
    (t, n)
}

fn f32_tensor(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

fn softmax_last_backward(y: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let ((y, n), (grad, _)) = (rows_of(y), rows_of(grad));
    let (ys, gs) = (y.storage::<f32>(), grad.storage::<f32>());
    let mut dx = vec![0.0f32; ys.len()];
    let chunk = ROWS_PER_TASK * n;
    dx.par_chunks_mut(chunk).zip(ys.par_chunks(chunk)).zip(gs.par_chunks(chunk)).for_each(|((dx, ys), gs)| {
        for ((dx, y), g) in dx.chunks_exact_mut(n).zip(ys.chunks_exact(n)).zip(gs.chunks_exact(n)) {
            let dot = dot(y, g);
            for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *d = y * (g - dot);
            }
        }
    });
    f32_tensor(dx, &y)
}

/// With `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` and `ĝ = ∂y ⊙ γ` per row:
/// `∂x = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))`, `∂γ = Σ_rows ∂y ⊙ x̂`, `∂β = Σ_rows ∂y`.
fn layer_norm_backward(x: &FlexTensor, gamma: &FlexTensor, grad: &FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
    let ((x, n), (gamma, _), (grad, _)) = (rows_of(x), rows_of(gamma), rows_of(grad));
    let (xs, gammas, gs) = (x.storage::<f32>(), gamma.storage::<f32>(), grad.storage::<f32>());
    let mut dx = vec![0.0f32; xs.len()];
    let chunk = ROWS_PER_TASK * n;
    // Each task sums ∂γ and ∂β over its own rows ([∂γ | ∂β], 2n values); the partial sums add up.
    let sums = dx
        .par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .zip(gs.par_chunks(chunk))
        .map(|((dx, xs), gs)| {
            let mut sums = vec![0.0f32; 2 * n];
            let (dgamma, dbeta) = sums.split_at_mut(n);
            let (mut gg, mut xhat) = (vec![0.0f32; n], vec![0.0f32; n]);
            // the row sums go through `sum`/`dot` (partial sums), so every loop here vectorises
            for ((dx, x), g) in dx.chunks_exact_mut(n).zip(xs.chunks_exact(n)).zip(gs.chunks_exact(n)) {
                let mean = sum(x) / n as f32;
                xhat.iter_mut().zip(x).for_each(|(c, &v)| *c = v - mean);
                let rstd = 1.0 / (dot(&xhat, &xhat) / n as f32 + epsilon as f32).sqrt();
                for i in 0..n {
                    gg[i] = g[i] * gammas[i];
                    xhat[i] *= rstd;
                    dgamma[i] += g[i] * xhat[i];
                    dbeta[i] += g[i];
                }
                let (mean_gg, mean_gg_xhat) = (sum(&gg) / n as f32, dot(&gg, &xhat) / n as f32);
                for i in 0..n {
                    dx[i] = rstd * (gg[i] - mean_gg - xhat[i] * mean_gg_xhat);
                }
            }
            sums
        })
        .reduce(|| vec![0.0f32; 2 * n], add_partials);
    let (dgamma, dbeta) = sums.split_at(n);
    (f32_tensor(dx, &x), f32_tensor(dgamma.to_vec(), &gamma), f32_tensor(dbeta.to_vec(), &gamma))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

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
            let plain = if approximate { crate::activation::gelu_tanh(x.clone()) } else { burn::tensor::activation::gelu(x.clone()) };
            assert_close(fused.clone(), plain.clone(), "gelu");
            let grad_fused = x.grad(&(fused * weights.clone()).sum().backward()).unwrap();
            let grad_plain = x.grad(&(plain * weights.clone()).sum().backward()).unwrap();
            assert_close(grad_fused, grad_plain, "∂gelu/∂x");
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
        // the products go through OpenBLAS when it is linked, through burn's ops otherwise
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

//! Depthwise 2-D convolution (one filter per channel) on f32 NCHW slices, and its backward pass.
//!
//! burn-flex runs a grouped convolution as one matrix product per group; with one channel per
//! group that is a matrix-vector product of a 9-wide row per output pixel, plus the im2col copy
//! feeding it, and the backward pass goes through a transposed convolution of the same shape.
//! In MaxViT's MBConv blocks that was about half of a training step. Here each output row is a
//! sum of a few shifted input rows times a weight: contiguous loops that vectorise at stride 1.
//! DaViT's channels-last maps have their own form ([`forward_channels_last`]), so they need no
//! permute copies. On burn-flex tensors ([`flex`], [`autodiff`]) either is one autodiff node.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{add_partials, dot};
use super::tensor::f32_tensor;

/// Shape of one call; padding as `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepthwiseShape {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 4],
}

impl DepthwiseShape {
    pub fn out_height(&self) -> usize {
        (self.height + self.padding[0] + self.padding[1] - self.kernel[0]) / self.stride[0] + 1
    }

    pub fn out_width(&self) -> usize {
        (self.width + self.padding[2] + self.padding[3] - self.kernel[1]) / self.stride[1] + 1
    }

    /// Input row of output row `oh` under kernel row `i`, if inside the image.
    fn input_row(&self, oh: usize, i: usize) -> Option<usize> {
        (oh * self.stride[0] + i).checked_sub(self.padding[0]).filter(|&ih| ih < self.height)
    }

    /// Output columns whose kernel column `j` lands inside the image: `[lo, hi)`, and the input
    /// column of `lo`.
    fn valid_columns(&self, j: usize) -> (usize, usize, usize) {
        let (s, left, ow_count) = (self.stride[1], self.padding[2], self.out_width());
        // ow·s + j − left ≥ 0 and < width
        let lo = left.saturating_sub(j).div_ceil(s);
        let hi = if self.width + left > j { ((self.width + left - j - 1) / s + 1).min(ow_count) } else { 0 };
        let hi = hi.max(lo);
        (lo, hi, (lo * s + j).saturating_sub(left))
    }
}

/// `out[b, c] = bias[c] + Σᵢⱼ w[c, i, j] · x[b, c, oh·s + i − top, ow·s + j − left]`.
/// `x`: `[batch, C, H, W]`, `weight`: `[C, kh, kw]`, `bias`: `[C]` -> `[batch, C, OH, OW]`.
pub(crate) fn forward(s: DepthwiseShape, x: &[f32], weight: &[f32], bias: &[f32]) -> Vec<f32> {
    let (plane_in, plane_out) = (s.height * s.width, s.out_height() * s.out_width());
    let (kh, kw) = (s.kernel[0], s.kernel[1]);
    let (ow_count, stride) = (s.out_width(), s.stride[1]);
    let mut out = vec![0.0f32; s.batch * s.channels * plane_out];
    out.par_chunks_mut(plane_out).enumerate().for_each(|(plane, out)| {
        let c = plane % s.channels;
        let (x, w) = (&x[plane * plane_in..(plane + 1) * plane_in], &weight[c * kh * kw..(c + 1) * kh * kw]);
        for (oh, out_row) in out.chunks_exact_mut(ow_count).enumerate() {
            out_row.fill(bias[c]);
            for i in 0..kh {
                let Some(ih) = s.input_row(oh, i) else { continue };
                let in_row = &x[ih * s.width..(ih + 1) * s.width];
                for j in 0..kw {
                    let (lo, hi, iw) = s.valid_columns(j);
                    let wv = w[i * kw + j];
                    if stride == 1 {
                        for (o, &v) in out_row[lo..hi].iter_mut().zip(&in_row[iw..iw + hi - lo]) {
                            *o += wv * v;
                        }
                    } else {
                        for (k, o) in out_row[lo..hi].iter_mut().enumerate() {
                            *o += wv * in_row[iw + k * stride];
                        }
                    }
                }
            }
        }
    });
    out
}

/// Gradients of input, weight and bias from the output's gradient `dout` (`[batch, C, OH, OW]`).
/// Parallel over channels, so each task owns its channels' weight and bias sums and writes its
/// channels' input-gradient planes in place.
pub(crate) fn backward(s: DepthwiseShape, x: &[f32], weight: &[f32], dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (plane_in, plane_out) = (s.height * s.width, s.out_height() * s.out_width());
    let (kh, kw) = (s.kernel[0], s.kernel[1]);
    let (ow_count, stride) = (s.out_width(), s.stride[1]);
    let mut dx = vec![0.0f32; s.batch * s.channels * plane_in];
    // plane b·C + c belongs to channel c
    let mut planes_of: Vec<Vec<&mut [f32]>> = (0..s.channels).map(|_| Vec::with_capacity(s.batch)).collect();
    for (plane, dx) in dx.chunks_mut(plane_in).enumerate() {
        planes_of[plane % s.channels].push(dx);
    }
    // per channel: [∂w (kh·kw) | ∂b (1)]
    let sums: Vec<Vec<f32>> = planes_of
        .into_par_iter()
        .enumerate()
        .map(|(c, dx_planes)| {
            let w = &weight[c * kh * kw..(c + 1) * kh * kw];
            let mut dwb = vec![0.0f32; kh * kw + 1];
            for (b, dx) in dx_planes.into_iter().enumerate() {
                let plane = b * s.channels + c;
                let (x, dy) = (&x[plane * plane_in..(plane + 1) * plane_in], &dout[plane * plane_out..(plane + 1) * plane_out]);
                for (oh, dy_row) in dy.chunks_exact(ow_count).enumerate() {
                    dwb[kh * kw] += dy_row.iter().sum::<f32>();
                    for i in 0..kh {
                        let Some(ih) = s.input_row(oh, i) else { continue };
                        let (in_row, dx_row) = (&x[ih * s.width..(ih + 1) * s.width], &mut dx[ih * s.width..(ih + 1) * s.width]);
                        for j in 0..kw {
                            let (lo, hi, iw) = s.valid_columns(j);
                            let wv = w[i * kw + j];
                            let mut dw = 0.0f32;
                            if stride == 1 {
                                let (dy, xs, dxs) = (&dy_row[lo..hi], &in_row[iw..iw + hi - lo], &mut dx_row[iw..iw + hi - lo]);
                                dw += dot(dy, xs);
                                for (d, &g) in dxs.iter_mut().zip(dy) {
                                    *d += wv * g;
                                }
                            } else {
                                for (k, &g) in dy_row[lo..hi].iter().enumerate() {
                                    dw += g * in_row[iw + k * stride];
                                    dx_row[iw + k * stride] += wv * g;
                                }
                            }
                            dwb[i * kw + j] += dw;
                        }
                    }
                }
            }
            dwb
        })
        .collect();
    let dw = sums.iter().flat_map(|dwb| dwb[..kh * kw].iter().copied()).collect();
    let db = sums.iter().map(|dwb| dwb[kh * kw]).collect();
    (dx, dw, db)
}

/// Channels-last form at stride 1 (DaViT's position encoding, whose tokens are `[batch, H, W,
/// C]`): `out[b, oh, ow] = bias + Σᵢⱼ taps[i·kw + j] ⊙ x[b, oh + i − top, ow + j − left]`, each
/// term a multiply-add over the `C` contiguous channels. `taps`: `[kh·kw, C]` (the weight
/// transposed tap-major), `x`: `[batch, H, W, C]` -> `[batch, OH, OW, C]`.
pub(crate) fn forward_channels_last(s: DepthwiseShape, x: &[f32], taps: &[f32], bias: &[f32]) -> Vec<f32> {
    assert_eq!(s.stride, [1, 1], "the channels-last kernel is for stride 1");
    let (c, kh, kw) = (s.channels, s.kernel[0], s.kernel[1]);
    let (oh_count, ow_count) = (s.out_height(), s.out_width());
    let mut out = vec![0.0f32; s.batch * oh_count * ow_count * c];
    out.par_chunks_mut(ow_count * c).enumerate().for_each(|(row, out_row)| {
        let (b, oh) = (row / oh_count, row % oh_count);
        out_row.chunks_exact_mut(c).for_each(|o| o.copy_from_slice(bias));
        for i in 0..kh {
            let Some(ih) = s.input_row(oh, i) else { continue };
            let in_row = &x[(b * s.height + ih) * s.width * c..][..s.width * c];
            for j in 0..kw {
                let (lo, hi, iw) = s.valid_columns(j);
                let tap = &taps[(i * kw + j) * c..][..c];
                let outs = out_row[lo * c..hi * c].chunks_exact_mut(c);
                for (o, xs) in outs.zip(in_row[iw * c..].chunks_exact(c)) {
                    for ((o, &w), &v) in o.iter_mut().zip(tap).zip(xs) {
                        *o += w * v;
                    }
                }
            }
        }
    });
    out
}

/// Gradients of [`forward_channels_last`]'s input, taps (`[kh·kw, C]`) and bias. The input's is
/// the forward pass over `dout` with the kernel flipped and the padding mirrored (stride 1);
/// the taps' and bias's are sums over output rows, per task then added.
pub(crate) fn backward_channels_last(s: DepthwiseShape, x: &[f32], taps: &[f32], dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (c, kh, kw) = (s.channels, s.kernel[0], s.kernel[1]);
    let (oh_count, ow_count) = (s.out_height(), s.out_width());
    let [top, bottom, left, right] = s.padding;
    assert!(top < kh && bottom < kh && left < kw && right < kw, "padding below the kernel size");
    let flipped: Vec<f32> = (0..kh * kw).rev().flat_map(|t| taps[t * c..(t + 1) * c].iter().copied()).collect();
    let mirrored = DepthwiseShape { height: oh_count, width: ow_count, padding: [kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right], ..s };
    let dx = forward_channels_last(mirrored, dout, &flipped, &vec![0.0; c]);
    // per task: [∂taps (kh·kw·C) | ∂bias (C)]
    let rows: Vec<usize> = (0..s.batch * oh_count).collect();
    let sums = rows
        .par_chunks(ROWS_PER_TASK)
        .map(|rows| {
            let mut acc = vec![0.0f32; (kh * kw + 1) * c];
            for &row in rows {
                let (b, oh) = (row / oh_count, row % oh_count);
                let dy_row = &dout[row * ow_count * c..][..ow_count * c];
                let db = &mut acc[kh * kw * c..];
                for g in dy_row.chunks_exact(c) {
                    db.iter_mut().zip(g).for_each(|(d, &g)| *d += g);
                }
                for i in 0..kh {
                    let Some(ih) = s.input_row(oh, i) else { continue };
                    let in_row = &x[(b * s.height + ih) * s.width * c..][..s.width * c];
                    for j in 0..kw {
                        let (lo, hi, iw) = s.valid_columns(j);
                        let dtap = &mut acc[(i * kw + j) * c..][..c];
                        for (g, xs) in dy_row[lo * c..hi * c].chunks_exact(c).zip(in_row[iw * c..].chunks_exact(c)) {
                            for ((d, &g), &v) in dtap.iter_mut().zip(g).zip(xs) {
                                *d += g * v;
                            }
                        }
                    }
                }
            }
            acc
        })
        .reduce(|| vec![0.0f32; (kh * kw + 1) * c], add_partials);
    let (dtaps, dbias) = sums.split_at(kh * kw * c);
    (dx, dtaps.to_vec(), dbias.to_vec())
}

/// Output rows summed by one task of [`backward_channels_last`].
const ROWS_PER_TASK: usize = 16;

/// The depthwise convolution's output, and what its backward pass keeps: the shape and the
/// contiguous input, weight and bias.
fn depthwise_forward(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, stride: [usize; 2], padding: [usize; 4], channels_last: bool) -> (FlexTensor, DepthwiseState) {
    let (dims, w) = (x.layout().shape().clone(), weight.layout().shape().clone());
    let [batch, height, width, channels] = if channels_last { [dims[0], dims[1], dims[2], dims[3]] } else { [dims[0], dims[2], dims[3], dims[1]] };
    let shape = DepthwiseShape { batch, channels, height, width, kernel: [w[2], w[3]], stride, padding };
    let (x, weight, bias) = (x.to_contiguous(), weight.to_contiguous(), bias.to_contiguous());
    let (oh, ow) = (shape.out_height(), shape.out_width());
    let out = if channels_last {
        let out = forward_channels_last(shape, x.storage(), &taps(&weight), bias.storage());
        FlexTensor::from_data(TensorData::new(out, [batch, oh, ow, channels]))
    } else {
        let out = forward(shape, x.storage(), weight.storage(), bias.storage());
        FlexTensor::from_data(TensorData::new(out, [batch, channels, oh, ow]))
    };
    (out, DepthwiseState { shape, channels_last, x, weight, bias })
}

/// The depthwise convolution on burn-flex tensors, channels-first or channels-last.
pub(super) fn flex(x: FlexTensor, weight: FlexTensor, bias: FlexTensor, stride: [usize; 2], padding: [usize; 4], channels_last: bool) -> FlexTensor {
    depthwise_forward(x, weight, bias, stride, padding, channels_last).0
}

/// [`flex`] as one autodiff node whose backward pass is [`DepthwiseBackward`].
pub(super) fn autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    stride: [usize; 2],
    padding: [usize; 4],
    channels_last: bool,
) -> FloatTensor<Autodiff<Flex, C>> {
    match DepthwiseBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (out, state) = depthwise_forward(x.into_primitive(), weight.into_primitive(), bias.into_primitive(), stride, padding, channels_last);
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex(
            x.into_primitive(),
            weight.into_primitive(),
            bias.into_primitive(),
            stride,
            padding,
            channels_last,
        )),
    }
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
            let (dx, dtaps, db) = backward_channels_last(shape, x.storage(), &taps(&weight), grad.storage());
            (dx, transpose(&dtaps, shape.kernel[0] * shape.kernel[1]), db)
        } else {
            backward(shape, x.storage(), weight.storage(), grad.storage())
        };
        for (node, g, like) in [(x_node, dx, &x), (weight_node, dw, &weight), (bias_node, db, &bias)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, f32_tensor(g, like));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_columns_keep_every_tap_inside_the_image() {
        for (width, k, stride, left, right) in [(7, 3, 1, 1, 1), (7, 3, 2, 0, 1), (8, 3, 2, 0, 1), (5, 5, 1, 2, 2), (4, 3, 2, 1, 1)] {
            let s = DepthwiseShape { batch: 1, channels: 1, height: 1, width, kernel: [1, k], stride: [1, stride], padding: [0, 0, left, right] };
            for j in 0..k {
                let (lo, hi, iw) = s.valid_columns(j);
                let inside: Vec<usize> = (0..s.out_width()).filter(|&ow| (ow * stride + j) >= left && ow * stride + j - left < width).collect();
                assert_eq!((lo..hi).collect::<Vec<_>>(), inside, "width {width}, k {k}, stride {stride}, left {left}, tap {j}");
                if lo < hi {
                    assert_eq!(iw, lo * stride + j - left);
                }
            }
        }
    }
}

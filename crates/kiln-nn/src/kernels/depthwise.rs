//! Depthwise 2-D convolution (one filter per channel) on f32 NCHW slices, and its backward pass.
//!
//! burn-flex runs a grouped convolution as one matrix product per group; with one channel per
//! group that is a matrix-vector product of a 9-wide row per output pixel, plus the im2col copy
//! feeding it, and the backward pass goes through a transposed convolution of the same shape.
//! In MaxViT's MBConv blocks that was about half of a training step. Here each output row is a
//! sum of a few shifted input rows times a weight: contiguous loops that vectorise at stride 1.

use rayon::prelude::*;

use super::simd::{add_partials, dot};

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

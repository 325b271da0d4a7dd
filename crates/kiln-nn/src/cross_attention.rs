//! Multi-head attention whose queries and keys/values come from separate projections (and
//! possibly separate token sets), with an optional key mask.
//!
//! The projections are exposed on their own (`query`, `key_value`, `attend`) because
//! multi-scale models mix them: Atlas projects a fine window's keys with the fine scale's
//! weights and attends to them with a coarse scale's queries and output projection.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;

use crate::fused::{autocast_matmul, linear, softmax_last};
use crate::init;

/// The logit a masked key gets: its weight after the softmax is exactly 0 in f32, and a query
/// whose keys are all masked attends uniformly instead of producing NaN.
const MASKED_LOGIT: f32 = -1e30;

/// Configuration of a [`CrossAttention`].
#[derive(Config, Debug)]
pub struct CrossAttentionConfig {
    /// Token width `C` (queries, keys and values alike).
    pub dim: usize,
    /// Number of heads; each head has `C / heads` channels.
    pub num_heads: usize,
    /// Whether the `q` and `kv` projections have a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub attn_drop: f64,
    /// Dropout after the output projection.
    #[config(default = 0.0)]
    pub proj_drop: f64,
    /// PyTorch's default `nn.Linear` initialisation instead of timm's `trunc_normal(.02)`.
    #[config(default = false)]
    pub torch_init: bool,
}

/// `proj(softmax(q(x_q) · k(x_kv)ᵀ / sqrt(d)) · v(x_kv))` per head, with keys `q`, `kv`
/// (keys then values, head-major inside each) and `proj`, as the official Atlas
/// `CrossWindowAttention`.
#[derive(Module, Debug)]
pub struct CrossAttention {
    /// `Linear(C, C)`: queries.
    pub q: Linear,
    /// `Linear(C, 2·C)`: keys (first `C` outputs) and values.
    pub kv: Linear,
    /// `Linear(C, C)`: output projection.
    pub proj: Linear,
    num_heads: usize,
    attn_drop: Dropout,
    proj_drop: Dropout,
}

impl CrossAttentionConfig {
    /// Builds the projections.
    pub fn init(&self, device: &Device) -> CrossAttention {
        assert!(
            self.num_heads > 0 && self.dim.is_multiple_of(self.num_heads),
            "width {} is not divisible by {} heads",
            self.dim,
            self.num_heads
        );
        let linear = if self.torch_init { init::torch_linear } else { init::linear };
        CrossAttention {
            q: linear(self.dim, self.dim, self.qkv_bias, device),
            kv: linear(self.dim, 2 * self.dim, self.qkv_bias, device),
            proj: linear(self.dim, self.dim, true, device),
            num_heads: self.num_heads,
            attn_drop: DropoutConfig::new(self.attn_drop).init(),
            proj_drop: DropoutConfig::new(self.proj_drop).init(),
        }
    }
}

impl CrossAttention {
    /// Number of heads.
    pub fn num_heads(&self) -> usize {
        self.num_heads
    }

    /// Projects queries and splits heads.
    ///
    /// # Shapes
    /// - `x`: `[n, tokens, C]` -> `[n, heads, tokens, C / heads]`
    pub fn query(&self, x: Tensor<3>) -> Tensor<4> {
        let [n, tokens, c] = x.dims();
        linear(&self.q, x)
            .reshape([n, tokens, self.num_heads, c / self.num_heads])
            .swap_dims(1, 2)
    }

    /// Projects keys and values and splits heads.
    ///
    /// # Shapes
    /// - `x`: `[n, tokens, C]` -> (keys, values), each `[n, heads, tokens, C / heads]`
    pub fn key_value(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        let [n, tokens, c] = x.dims();
        let head_dim = c / self.num_heads;
        let kv = linear(&self.kv, x)
            .reshape([n, tokens, 2, self.num_heads, head_dim])
            .permute([2, 0, 3, 1, 4]);
        let take = |i: usize| kv.clone().slice_dim(0, i..i + 1).reshape([n, self.num_heads, tokens, head_dim]);
        (take(0), take(1))
    }

    /// The attention weights: softmax over keys of the scaled dot products, masked keys given
    /// exactly zero weight.
    ///
    /// # Shapes
    /// - `q`: `[n, heads, queries, d]`, `k`: `[n, heads, keys, d]`
    /// - `key_mask`: `[n, keys]`, `true` where a key must be ignored (padding)
    /// - returns `[n, heads, queries, keys]`
    pub fn attention_weights(&self, q: Tensor<4>, k: Tensor<4>, key_mask: Option<Tensor<2, Bool>>) -> Tensor<4> {
        let [n, heads, queries, head_dim] = q.dims();
        let keys = k.dims()[2];
        let scale = (head_dim as f64).powf(-0.5);
        let logits = autocast_matmul(q.mul_scalar(scale), k.swap_dims(2, 3));
        let logits = match key_mask {
            Some(mask) => {
                let mask = mask.reshape([n, 1, 1, keys]).expand([n, heads, queries, keys]);
                logits.mask_fill(mask, MASKED_LOGIT)
            }
            None => logits,
        };
        softmax_last(logits)
    }

    /// Attends with given queries, keys and values, merges heads and projects.
    ///
    /// # Shapes
    /// - `q`: `[n, heads, queries, d]`, `k`, `v`: `[n, heads, keys, d]`
    /// - `key_mask`: `[n, keys]`, `true` where a key must be ignored
    /// - returns `[n, queries, heads · d]`
    pub fn attend(&self, q: Tensor<4>, k: Tensor<4>, v: Tensor<4>, key_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let [n, heads, queries, head_dim] = q.dims();
        let weights = self.attn_drop.forward(self.attention_weights(q, k, key_mask));
        let out = autocast_matmul(weights, v).swap_dims(1, 2).reshape([n, queries, heads * head_dim]);
        self.proj_drop.forward(linear(&self.proj, out))
    }

    /// Queries from `x_q`, keys and values from `x_kv`.
    ///
    /// # Shapes
    /// - `x_q`: `[n, queries, C]`, `x_kv`: `[n, keys, C]`, `key_mask`: `[n, keys]`
    /// - returns `[n, queries, C]`
    pub fn forward(&self, x_q: Tensor<3>, x_kv: Tensor<3>, key_mask: Option<Tensor<2, Bool>>) -> Tensor<3> {
        let (k, v) = self.key_value(x_kv);
        self.attend(self.query(x_q), k, v, key_mask)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;
    use burn::tensor::Distribution;


    /// The same attention token by token with scalar loops (PyTorch's `nn.Linear` layout:
    /// burn stores weights `[in, out]`).
    fn reference(att: &CrossAttention, xq: &[f32], xkv: &[f32], n: usize, nq: usize, nk: usize, c: usize, mask: Option<&[bool]>) -> Vec<f32> {
        let w = |l: &Linear| (values(l.weight.val()), values(l.bias.as_ref().unwrap().val()));
        let ((qw, qb), (kvw, kvb), (pw, pb)) = (w(&att.q), w(&att.kv), w(&att.proj));
        let linear = |inp: &[f32], wt: &[f32], b: &[f32], dout: usize| -> Vec<f32> {
            (0..dout).map(|o| b[o] + (0..inp.len()).map(|i| inp[i] * wt[i * dout + o]).sum::<f32>()).collect()
        };
        let (heads, hd) = (att.num_heads, c / att.num_heads);
        let mut out = Vec::new();
        for b in 0..n {
            let qs: Vec<Vec<f32>> = (0..nq).map(|t| linear(&xq[(b * nq + t) * c..][..c], &qw, &qb, c)).collect();
            let kvs: Vec<Vec<f32>> = (0..nk).map(|t| linear(&xkv[(b * nk + t) * c..][..c], &kvw, &kvb, 2 * c)).collect();
            for qi in 0..nq {
                let mut mixed = vec![0.0f32; c];
                for h in 0..heads {
                    let open: Vec<usize> = (0..nk).filter(|&ki| !mask.is_some_and(|m| m[b * nk + ki])).collect();
                    let logits: Vec<f32> = open
                        .iter()
                        .map(|&ki| (0..hd).map(|d| qs[qi][h * hd + d] * kvs[ki][h * hd + d]).sum::<f32>() / (hd as f32).sqrt())
                        .collect();
                    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                    let exp: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
                    let sum: f32 = exp.iter().sum();
                    for (j, &ki) in open.iter().enumerate() {
                        for d in 0..hd {
                            mixed[h * hd + d] += exp[j] / sum * kvs[ki][c + h * hd + d];
                        }
                    }
                }
                out.extend(linear(&mixed, &pw, &pb, c));
            }
        }
        out
    }

    fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }

    #[test]
    fn matches_a_scalar_reference_with_and_without_a_mask() {
        let device = Device::flex();
        let att = CrossAttentionConfig::new(8, 2).init(&device);
        let (n, nq, nk, c) = (3, 4, 6, 8);
        let (xq, xkv) = (random([n, nq, c], &device), random([n, nk, c], &device));
        let mask_values: Vec<bool> = (0..n * nk).map(|i| i % 4 == 1).collect();
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(mask_values.clone(), [n, nk]), &device);
        let (q_vals, kv_vals) = (values(xq.clone()), values(xkv.clone()));
        for mask_case in [None, Some(&mask_values[..])] {
            let got = values(att.forward(xq.clone(), xkv.clone(), mask_case.map(|_| mask.clone())));
            let expected = reference(&att, &q_vals, &kv_vals, n, nq, nk, c, mask_case);
            for (g, e) in got.iter().zip(&expected) {
                assert!((g - e).abs() < 1e-4, "{g} vs {e} (mask {})", mask_case.is_some());
            }
        }
    }

    #[test]
    fn masked_keys_get_exactly_zero_weight_and_cannot_change_the_output() {
        let device = Device::flex();
        let att = CrossAttentionConfig::new(8, 2).init(&device);
        let (n, nq, nk, c) = (2, 3, 5, 8);
        let xq = random([n, nq, c], &device);
        let xkv = random([n, nk, c], &device);
        // the last two keys of window 0 and the first key of window 1 are padding
        let mask_values = vec![false, false, false, true, true, true, false, false, false, false];
        let mask = || Tensor::<2, Bool>::from_data(TensorData::new(mask_values.clone(), [n, nk]), &device);
        let (k, _) = att.key_value(xkv.clone());
        let weights = values(att.attention_weights(att.query(xq.clone()), k, Some(mask())));
        for (i, w) in weights.iter().enumerate() {
            let (window, key) = (i / (2 * nq * nk), i % nk);
            if mask_values[window * nk + key] {
                assert_eq!(*w, 0.0, "masked key {key} of window {window} has weight {w}");
            }
        }
        for row in weights.chunks(nk) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        }
        // whatever the padded tokens hold, the output is the same
        let noise = random([n, nk, c], &device).mul_scalar(100.0);
        let keep = Tensor::<2, Bool>::from_data(TensorData::new(mask_values.clone(), [n, nk]), &device)
            .reshape([n, nk, 1])
            .expand([n, nk, c]);
        let scrambled = xkv.clone().mask_where(keep, noise);
        let a = values(att.forward(xq.clone(), xkv, Some(mask())));
        let b = values(att.forward(xq, scrambled, Some(mask())));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{x} vs {y}");
        }
    }

    #[test]
    fn a_fully_masked_query_row_stays_finite() {
        let device = Device::flex();
        let att = CrossAttentionConfig::new(4, 1).init(&device);
        let mask = Tensor::<2, Bool>::from_data(TensorData::new(vec![true; 3], [1, 3]), &device);
        let out = values(att.forward(random([1, 2, 4], &device), random([1, 3, 4], &device), Some(mask)));
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

//! Channel group attention (DaViT): heads are groups of channels, and attention mixes the
//! channels of a group using statistics over all tokens of the image, so its cost is linear in
//! the number of tokens and every token's output sees the whole image.

use burn::nn::Linear;
use burn::prelude::*;

use crate::fused::{autocast_matmul, linear, softmax_last};
use crate::init;

/// Configuration of a [`ChannelGroupAttention`].
#[derive(Config, Debug)]
pub struct ChannelGroupAttentionConfig {
    /// Token width `C`.
    pub dim: usize,
    /// Number of channel groups (heads); each has `C / heads` channels.
    pub num_heads: usize,
    /// Whether the qkv projection has a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
}

/// Channel group attention exactly as timm's DaViT `ChannelAttention` (v1, every `davit_*`
/// model). Keys `qkv`, `proj`.
///
/// Per group, with `q, k, v: [N, d]` (`d = C / heads`), the `[d, d]` attention matrix is built
/// from keys and values and applied to the queries:
/// `out = q · softmax((k·d^−½)ᵀ v)ᵀ`, i.e. `out[n, c] = Σ_c' softmax_c'(Σ_m k[m, c] v[m, c'] / √d) q[n, c']`.
/// These roles differ from the usual "softmax(qᵀk) applied to v"; the published DaViT weights
/// were trained with them, so they are kept.
#[derive(Module, Debug)]
pub struct ChannelGroupAttention {
    /// `Linear(C, 3·C)`: queries, keys, values, each head-major (`[q | k | v]`).
    pub qkv: Linear,
    /// `Linear(C, C)`.
    pub proj: Linear,
    num_heads: usize,
}

impl ChannelGroupAttentionConfig {
    /// Builds the projections: weights `trunc_normal(.02)`, biases 0, as timm.
    pub fn init(&self, device: &Device) -> ChannelGroupAttention {
        assert!(
            self.num_heads > 0 && self.dim % self.num_heads == 0,
            "width {} is not divisible by {} channel groups",
            self.dim,
            self.num_heads
        );
        ChannelGroupAttention {
            qkv: init::linear(self.dim, 3 * self.dim, self.qkv_bias, device),
            proj: init::linear(self.dim, self.dim, true, device),
            num_heads: self.num_heads,
        }
    }
}

impl ChannelGroupAttention {
    /// # Shapes
    /// - `x`: `[batch, N, C]` all tokens of an image
    /// - returns `[batch, N, C]`
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [batch, n, c] = x.dims();
        let heads = self.num_heads;
        let head_dim = c / heads;
        let qkv = linear(&self.qkv, x).reshape([batch, n, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
        let take = |i: usize| qkv.clone().slice_dim(0, i..i + 1).reshape([batch, heads, n, head_dim]);
        let (q, k, v) = (take(0), take(1), take(2));

        let scale = (head_dim as f64).powf(-0.5);
        // [batch, heads, d, d]: channel-to-channel affinities summed over every token
        let attn = softmax_last(autocast_matmul(k.mul_scalar(scale).swap_dims(2, 3), v));
        let out = autocast_matmul(q, attn.swap_dims(2, 3));
        linear(&self.proj, out.swap_dims(1, 2).reshape([batch, n, c]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::test_values as values;
    use burn::module::Param;
    use burn::tensor::Distribution;


    #[test]
    fn one_group_by_hand() {
        // C = 2, one group, identity projections so q = k = v = x, two tokens (1, 0) and (0, 2).
        // kᵀv / √2 = [[1, 0], [0, 4]] / √2; row softmax gives a; out[n] = a · x[n].
        let device = Device::flex();
        let mut att = ChannelGroupAttentionConfig::new(2, 1).init(&device);
        att.qkv.weight = Param::from_tensor(Tensor::from_floats([[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]], &device));
        att.proj.weight = Param::from_tensor(Tensor::from_floats([[1.0, 0.0], [0.0, 1.0]], &device));
        let x = Tensor::<3>::from_floats([[[1.0, 0.0], [0.0, 2.0]]], &device);
        let s = 1.0 / 2f32.sqrt();
        let row = |a: f32, b: f32| ((a * s).exp() / ((a * s).exp() + (b * s).exp()), (b * s).exp() / ((a * s).exp() + (b * s).exp()));
        let (a00, a01) = row(1.0, 0.0);
        let (a10, a11) = row(0.0, 4.0);
        // token (1, 0): (a00·1 + a01·0, a10·1 + a11·0); token (0, 2): (a01·2, a11·2)
        let expected = [a00, a10, 2.0 * a01, 2.0 * a11];
        let got = values(att.forward(x));
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{got:?} vs {expected:?}");
        }
    }

    /// The same computation with scalar loops over groups, channels and tokens.
    fn reference(att: &ChannelGroupAttention, x: &[f32], n: usize, c: usize) -> Vec<f32> {
        let w = |l: &Linear| (l.weight.val().into_data().try_to_vec::<f32>().unwrap(), l.bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap());
        let (qkv_w, qkv_b) = w(&att.qkv);
        let (proj_w, proj_b) = w(&att.proj);
        let linear = |inp: &[f32], wt: &[f32], b: &[f32], dout: usize| -> Vec<f32> {
            (0..dout).map(|o| b[o] + (0..inp.len()).map(|i| inp[i] * wt[i * dout + o]).sum::<f32>()).collect()
        };
        let tokens: Vec<Vec<f32>> = (0..n).map(|t| linear(&x[t * c..(t + 1) * c], &qkv_w, &qkv_b, 3 * c)).collect();
        let (heads, d) = (att.num_heads, c / att.num_heads);
        let mut mixed = vec![vec![0.0f32; c]; n];
        for h in 0..heads {
            let (q, k, v) = (h * d, c + h * d, 2 * c + h * d);
            for c1 in 0..d {
                let logits: Vec<f32> = (0..d).map(|c2| (0..n).map(|m| tokens[m][k + c1] * tokens[m][v + c2]).sum::<f32>() / (d as f32).sqrt()).collect();
                let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                let sum: f32 = logits.iter().map(|l| (l - max).exp()).sum();
                for t in 0..n {
                    mixed[t][h * d + c1] = (0..d).map(|c2| (logits[c2] - max).exp() / sum * tokens[t][q + c2]).sum();
                }
            }
        }
        mixed.iter().flat_map(|t| linear(t, &proj_w, &proj_b, c)).collect()
    }

    #[test]
    fn matches_a_scalar_reference_per_group() {
        let device = Device::flex();
        let (n, c) = (5, 6);
        let mut att = ChannelGroupAttentionConfig::new(c, 3).init(&device);
        // larger weights than the init's, so the softmax is far from uniform
        att.qkv.weight = Param::from_tensor(Tensor::random([c, 3 * c], Distribution::Normal(0.0, 1.0), &device));
        att.qkv.bias = Some(Param::from_tensor(Tensor::random([3 * c], Distribution::Normal(0.0, 0.5), &device)));
        let x = Tensor::<3>::random([2, n, c], Distribution::Normal(0.0, 1.0), &device);
        let got = values(att.forward(x.clone()));
        let x = values(x);
        for b in 0..2 {
            let expected = reference(&att, &x[b * n * c..(b + 1) * n * c], n, c);
            for (g, e) in got[b * n * c..(b + 1) * n * c].iter().zip(&expected) {
                assert!((g - e).abs() < 1e-4 * (1.0 + e.abs()), "{g} vs {e}");
            }
        }
    }
}

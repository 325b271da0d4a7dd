//! Multi-head self-attention inside windows, with an optional learned relative-position bias
//! (Swin has one, DaViT does not) and an optional additive mask (Swin's shifted windows).

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::ops::AttentionModuleOptions;

use crate::autocast::{self, operand};
use crate::fused::{autocast_matmul, linear, runs_fused_product, softmax_last, window_attention, window_attention_is_vectorised};
use crate::{init, relative_position::relative_position_index};

/// Configuration of a [`WindowAttention`].
#[derive(Config, Debug)]
pub struct WindowAttentionConfig {
    /// Token width `C`.
    pub dim: usize,
    /// Number of heads; each head has `C / heads` channels.
    pub num_heads: usize,
    /// Window `[height, width]` in tokens.
    pub window: [usize; 2],
    /// Whether the qkv projection has a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Whether a learned relative-position bias is added to the logits. Swin: yes; DaViT: no,
    /// its position information comes from convolutions around the attention.
    #[config(default = true)]
    pub relative_position_bias: bool,
    /// Dropout on the attention weights.
    #[config(default = 0.0)]
    pub attn_drop: f64,
    /// Dropout after the output projection.
    #[config(default = 0.0)]
    pub proj_drop: f64,
}

/// Windowed multi-head attention, as timm's Swin `WindowAttention` (with relative-position
/// bias) and DaViT's `WindowAttention` (without). Keys `qkv`, `proj`,
/// `relative_position_bias_table` (only when the bias is on).
#[derive(Module, Debug)]
pub struct WindowAttention {
    /// `Linear(C, 3·C)`: queries, keys and values, head-interleaved as timm.
    pub qkv: Linear,
    /// `Linear(C, C)`.
    pub proj: Linear,
    /// `[(2·wh−1)·(2·ww−1), heads]` learned bias per relative offset; `None` without bias.
    pub relative_position_bias_table: Option<Param<Tensor<2>>>,
    /// Gathers the table into `[N·N]` (query, key) pairs; recomputed from the window, never
    /// loaded. A constant, not skipped: `valid()` must move it off the autodiff device with the
    /// weights, or evaluation runs partly through autodiff.
    relative_position_index: Option<Tensor<1, Int>>,
    num_heads: usize,
    window_h: usize,
    window_w: usize,
    attn_drop: Dropout,
    proj_drop: Dropout,
}

impl WindowAttentionConfig {
    /// Builds the layers: projections and table `trunc_normal(.02)`, as timm.
    pub fn init(&self, device: &Device) -> WindowAttention {
        let [wh, ww] = self.window;
        let bias = self.relative_position_bias;
        WindowAttention {
            qkv: init::linear(self.dim, 3 * self.dim, self.qkv_bias, device),
            proj: init::linear(self.dim, self.dim, true, device),
            relative_position_bias_table: bias.then(|| {
                init::trunc_normal_param([(2 * wh - 1) * (2 * ww - 1), self.num_heads], 0.02, device)
            }),
            relative_position_index: bias.then(|| {
                let index = relative_position_index(self.window);
                Tensor::from_data(TensorData::new(index, [wh * ww * wh * ww]), device)
            }),
            num_heads: self.num_heads,
            window_h: wh,
            window_w: ww,
            attn_drop: DropoutConfig::new(self.attn_drop).init(),
            proj_drop: DropoutConfig::new(self.proj_drop).init(),
        }
    }
}

impl WindowAttention {
    /// Window `[height, width]` this attention was built for.
    pub fn window(&self) -> [usize; 2] {
        [self.window_h, self.window_w]
    }

    /// The bias of every (query, key) pair per head, `None` when built without one.
    ///
    /// # Shapes
    /// - returns `[heads, N, N]` with `N = wh·ww`
    pub fn relative_position_bias(&self) -> Option<Tensor<3>> {
        let n = self.window_h * self.window_w;
        let (table, index) = (self.relative_position_bias_table.as_ref()?, self.relative_position_index.clone()?);
        Some(table.val().select(0, index).reshape([n, n, self.num_heads]).permute([2, 0, 1]))
    }

    /// # Shapes
    /// - `x`: `[batch · num_windows, N, C]` windows as made by `window_partition`
    /// - `mask`: `[num_windows, N, N]` added to every head's logits (0 or −100 in Swin)
    /// - returns `[batch · num_windows, N, C]`
    pub fn forward(&self, x: Tensor<3>, mask: Option<Tensor<3>>) -> Tensor<3> {
        let qkv = linear(&self.qkv, x);
        let out = multi_head_attention(qkv, self.num_heads, self.relative_position_bias(), mask, &self.attn_drop);
        self.proj_drop.forward(linear(&self.proj, out))
    }
}

/// Scaled dot-product attention of every head within each window, from the output of a fused
/// qkv projection: `softmax(q·kᵀ/√d + bias [+ mask]) · v`, heads concatenated again.
///
/// The qkv channels are `[q | k | v]`, each block head-major (timm's layout for Swin and for
/// MaxViT's `head_first=False`), and the scale is `head_dim^-0.5`.
///
/// # Shapes
/// - `qkv`: `[batch · num_windows, N, 3·C]`
/// - `bias`: `[heads, N, N]`, added to every window's logits (none without position bias)
/// - `mask`: `[num_windows, N, N]`, added per window position (Swin's shifted windows)
/// - returns `[batch · num_windows, N, C]`, channels head-major
pub fn multi_head_attention(
    qkv: Tensor<3>,
    num_heads: usize,
    bias: Option<Tensor<3>>,
    mask: Option<Tensor<3>>,
    attn_drop: &Dropout,
) -> Tensor<3> {
    let [_, _, c3] = qkv.dims();
    let scale = ((c3 / 3 / num_heads) as f64).powf(-0.5);
    // Dropout on the probabilities exists in the graph only; it is off at inference.
    let device = qkv.device();
    if runs_fused_product(&qkv) && window_attention_is_vectorised() && (attn_drop.prob == 0.0 || !device.is_autodiff()) {
        window_attention(qkv, num_heads, scale, bias, mask)
    } else if !device.is_autodiff() && device != Device::flex() {
        // burn's own attention kernel on the GPU backends; their autodiff has none (it records
        // the op-by-op fallback), so training takes the graph below either way
        backend_attention(qkv, num_heads, scale, bias, mask)
    } else {
        attention_graph(qkv, num_heads, scale, bias, mask, attn_drop)
    }
}

/// `q`, `k`, `v` of a fused qkv projection, each `[windows, heads, N, head_dim]`.
fn split_heads(qkv: Tensor<3>, heads: usize) -> [Tensor<4>; 3] {
    let [windows, n, c3] = qkv.dims();
    let head_dim = c3 / 3 / heads;
    let qkv = qkv.reshape([windows, n, 3, heads, head_dim]).permute([2, 0, 3, 1, 4]);
    [0, 1, 2].map(|i| qkv.clone().slice_dim(0, i..i + 1).reshape([windows, heads, n, head_dim]))
}

/// [`multi_head_attention`] through burn's `attention` op, the bias and mask summed into one
/// additive bias per window and head.
fn backend_attention(qkv: Tensor<3>, heads: usize, scale: f64, bias: Option<Tensor<3>>, mask: Option<Tensor<3>>) -> Tensor<3> {
    let [windows, n, c3] = qkv.dims();
    let [q, k, v] = split_heads(qkv, heads).map(operand);
    let dtype = v.dtype();
    // [groups, num_windows, heads, N, N], broadcast over the batch when expanded
    let bias = bias.map(|b| b.cast(dtype).reshape([1, 1, heads, n, n]));
    let mask = mask.map(|m| {
        let num_windows = m.dims()[0];
        m.cast(dtype).reshape([1, num_windows, 1, n, n])
    });
    let additive = match (bias, mask) {
        (Some(b), Some(m)) => Some(b + m),
        (b, m) => b.or(m),
    };
    let additive = additive.map(|a| {
        let [_, num_windows, _, _, _] = a.dims();
        a.expand([windows / num_windows, num_windows, heads, n, n]).reshape([windows, heads, n, n])
    });
    let options = AttentionModuleOptions { scale: Some(scale), softcap: None, is_causal: false };
    let out = burn::tensor::module::attention(q, k, v, None, additive, options);
    autocast::result(out).swap_dims(1, 2).reshape([windows, n, c3 / 3])
}

/// The same attention op by op, for other backends and dtypes and for attention dropout.
fn attention_graph(qkv: Tensor<3>, heads: usize, scale: f64, bias: Option<Tensor<3>>, mask: Option<Tensor<3>>, attn_drop: &Dropout) -> Tensor<3> {
    let [windows, n, c3] = qkv.dims();
    let c = c3 / 3;
    let [q, k, v] = split_heads(qkv, heads);
    let mut attn = autocast_matmul(q.mul_scalar(scale), k.swap_dims(2, 3));
    if let Some(bias) = bias {
        attn = attn + bias.unsqueeze_dim::<4>(0);
    }
    if let Some(mask) = mask {
        let num_windows = mask.dims()[0];
        attn = (attn.reshape([windows / num_windows, num_windows, heads, n, n])
            + mask.unsqueeze_dim::<4>(1).unsqueeze_dim::<5>(0))
        .reshape([windows, heads, n, n]);
    }
    autocast_matmul(attn_drop.forward(softmax_last(attn)), v).swap_dims(1, 2).reshape([windows, n, c])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// The same attention computed token by token with scalar loops.
    fn reference(att: &WindowAttention, x: &[f32], windows: usize, n: usize, c: usize, mask: Option<&[f32]>) -> Vec<f32> {
        let w = |l: &Linear| (l.weight.val().into_data().try_to_vec::<f32>().unwrap(), l.bias.as_ref().unwrap().val().into_data().try_to_vec::<f32>().unwrap());
        let (qkv_w, qkv_b) = w(&att.qkv);
        let (proj_w, proj_b) = w(&att.proj);
        let bias = att.relative_position_bias().map(|b| b.into_data().try_to_vec::<f32>().unwrap());
        let heads = att.num_heads;
        let hd = c / heads;
        let linear = |inp: &[f32], wt: &[f32], b: &[f32], dout: usize| -> Vec<f32> {
            (0..dout).map(|o| b[o] + (0..inp.len()).map(|i| inp[i] * wt[i * dout + o]).sum::<f32>()).collect()
        };
        let mut out = Vec::new();
        for win in 0..windows {
            let tokens: Vec<Vec<f32>> = (0..n).map(|t| linear(&x[(win * n + t) * c..(win * n + t + 1) * c], &qkv_w, &qkv_b, 3 * c)).collect();
            let mut mixed = vec![vec![0.0f32; c]; n];
            for h in 0..heads {
                for qi in 0..n {
                    let q = &tokens[qi][h * hd..(h + 1) * hd];
                    let mut logits: Vec<f32> = (0..n).map(|ki| {
                        let k = &tokens[ki][c + h * hd..c + (h + 1) * hd];
                        let mut l = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt();
                        if let Some(bias) = &bias { l += bias[(h * n + qi) * n + ki]; }
                        if let Some(m) = mask { l += m[((win % (m.len() / (n * n))) * n + qi) * n + ki]; }
                        l
                    }).collect();
                    let max = logits.iter().cloned().fold(f32::MIN, f32::max);
                    logits.iter_mut().for_each(|l| *l = (*l - max).exp());
                    let sum: f32 = logits.iter().sum();
                    for ki in 0..n {
                        for d in 0..hd {
                            mixed[qi][h * hd + d] += logits[ki] / sum * tokens[ki][2 * c + h * hd + d];
                        }
                    }
                }
            }
            for t in mixed { out.extend(linear(&t, &proj_w, &proj_b, c)); }
        }
        out
    }

    #[test]
    fn matches_a_scalar_reference_with_bias_and_mask() {
        let device = Device::flex();
        let (windows, c) = (4, 8);
        let att = WindowAttentionConfig::new(c, 2, [2, 3]).init(&device);
        let mut att = att;
        att.relative_position_bias_table = Some(Param::from_tensor(Tensor::random([3 * 5, 2], Distribution::Normal(0.0, 1.0), &device)));
        let n = 6;
        let x = Tensor::<3>::random([windows, n, c], Distribution::Normal(0.0, 1.0), &device);
        // a mask over 2 windows (batch of 2), blocking some pairs with -100 as Swin does
        let mask_values: Vec<f32> = (0..2 * n * n).map(|i| if i % 7 == 0 { -100.0 } else { 0.0 }).collect();
        let mask = Tensor::<3>::from_data(TensorData::new(mask_values.clone(), [2, n, n]), &device);
        let got = att.forward(x.clone(), Some(mask)).into_data().try_to_vec::<f32>().unwrap();
        let expected = reference(&att, &x.into_data().try_to_vec::<f32>().unwrap(), windows, n, c, Some(&mask_values));
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-4, "{g} vs {e}");
        }
    }

    /// The kernel (with and without autodiff, in the widest form this CPU has; the forms agree
    /// with each other in `kernels::attention`'s tests) against the op-by-op graph: outputs, and
    /// the gradients of qkv and of the bias, with and without bias and shifted-window mask; and
    /// burn's attention op (the GPU backends' inference path) gives the same output.
    /// Shapes: a window of 9 tokens (not a multiple of the kernel's blocks), a head of 5 channels.
    #[test]
    fn kernel_equals_the_op_by_op_graph_forward_and_backward() {
        let (plain, tracked) = (Device::flex(), Device::flex().autodiff());
        let (windows, num_windows, heads, n, head_dim) = (6, 3, 2, 9, 5);
        let c = heads * head_dim;
        let random = |shape: [usize; 3]| Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), &plain);
        let (qkv, bias, upstream) = (random([windows, n, 3 * c]), random([heads, n, n]), random([windows, n, c]));
        let mask_values: Vec<f32> = (0..num_windows * n * n).map(|i| if i % 5 == 0 { -100.0 } else { 0.0 }).collect();
        let mask = Tensor::<3>::from_data(TensorData::new(mask_values, [num_windows, n, n]), &plain);
        let drop = DropoutConfig::new(0.0).init();
        let close = |what: &str, got: Vec<f32>, want: Vec<f32>| {
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5 + 1e-4 * w.abs(), "{what}: kernel {g}, graph {w}");
            }
        };
        // `to_device` between a device and its autodiff twin keeps the device: copy the data.
        let copy = |t: &Tensor<3>, device: &Device| Tensor::<3>::from_data(t.to_data(), device);
        for (with_bias, with_mask) in [(false, false), (true, false), (false, true), (true, true)] {
            let what = format!("bias {with_bias}, mask {with_mask}");
            let run = |kernel: bool| {
                let (qkv, bias) = (copy(&qkv, &tracked).require_grad(), copy(&bias, &tracked).require_grad());
                let mask = with_mask.then(|| copy(&mask, &tracked));
                let used_bias = with_bias.then(|| bias.clone());
                let scale = (head_dim as f64).powf(-0.5);
                let out = if kernel {
                    window_attention(qkv.clone(), heads, scale, used_bias, mask)
                } else {
                    attention_graph(qkv.clone(), heads, scale, used_bias, mask, &drop)
                };
                let grads = (out.clone() * copy(&upstream, &tracked)).sum().backward();
                let bias_grad = bias.grad(&grads).map(crate::testing::test_values);
                (crate::testing::test_values(out), crate::testing::test_values(qkv.grad(&grads).unwrap()), bias_grad)
            };
            let ((out, dqkv, dbias), (graph_out, graph_dqkv, graph_dbias)) = (run(true), run(false));
            close(&format!("{what}: output"), out.clone(), graph_out);
            close(&format!("{what}: ∂qkv"), dqkv, graph_dqkv);
            assert_eq!(dbias.is_some(), with_bias, "{what}: a bias gradient exactly when there is a bias");
            if let (Some(dbias), Some(graph_dbias)) = (dbias, graph_dbias) {
                close(&format!("{what}: ∂bias"), dbias, graph_dbias);
            }
            // without autodiff: the same kernel, no probabilities kept
            let mask = with_mask.then(|| mask.clone());
            let inference = window_attention(qkv.clone(), heads, (head_dim as f64).powf(-0.5), with_bias.then(|| bias.clone()), mask.clone());
            close(&format!("{what}: inference"), crate::testing::test_values(inference), out.clone());
            // burn's attention op, which the GPU backends take for inference
            let backend = backend_attention(qkv.clone(), heads, (head_dim as f64).powf(-0.5), with_bias.then(|| bias.clone()), mask);
            close(&format!("{what}: burn's attention"), crate::testing::test_values(backend), out);
        }
    }

    #[test]
    fn bias_gathers_the_table_per_head() {
        let device = Device::flex();
        let mut att = WindowAttentionConfig::new(4, 2, [2, 2]).init(&device);
        let table: Vec<f32> = (0..9 * 2).map(|v| v as f32).collect();
        att.relative_position_bias_table = Some(Param::from_tensor(Tensor::from_data(TensorData::new(table, [9, 2]), &device)));
        let bias = att.relative_position_bias().unwrap();
        assert_eq!(bias.dims(), [2, 4, 4]);
        let values = bias.into_data().try_to_vec::<f32>().unwrap();
        let index = relative_position_index([2, 2]);
        for h in 0..2 {
            for p in 0..16 {
                assert_eq!(values[h * 16 + p], (index[p] * 2 + h as i64) as f32);
            }
        }
    }

    #[test]
    fn without_bias_it_is_plain_windowed_attention() {
        let device = Device::flex();
        let att = WindowAttentionConfig::new(6, 3, [2, 2]).with_relative_position_bias(false).init(&device);
        assert!(att.relative_position_bias_table.is_none() && att.relative_position_bias().is_none());
        // only the projections are parameters: 6·18 + 18 + 6·6 + 6
        assert_eq!(att.num_params(), 168);
        let x = Tensor::<3>::random([3, 4, 6], Distribution::Normal(0.0, 1.0), &device);
        let got = att.forward(x.clone(), None).into_data().try_to_vec::<f32>().unwrap();
        let expected = reference(&att, &x.into_data().try_to_vec::<f32>().unwrap(), 3, 4, 6, None);
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() < 1e-4, "{g} vs {e}");
        }
    }

    #[test]
    fn two_token_window_by_hand() {
        // q = k = v = x through identity projections: out_i = Σ_j softmax_j(x_i·x_j / √2) x_j
        let device = Device::flex();
        let mut att = WindowAttentionConfig::new(2, 1, [1, 2]).with_relative_position_bias(false).init(&device);
        let eye3 = [[1.0, 0.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]];
        att.qkv.weight = Param::from_tensor(Tensor::from_floats(eye3, &device));
        att.proj.weight = Param::from_tensor(Tensor::from_floats([[1.0, 0.0], [0.0, 1.0]], &device));
        // two tokens (1, 2) and (3, 4): logits q·k/√2, token 0: (1·1+2·2, 1·3+2·4)/√2 = (5, 11)/√2
        let x = Tensor::<3>::from_floats([[[1.0, 2.0], [3.0, 4.0]]], &device);
        let got = att.forward(x, None).into_data().try_to_vec::<f32>().unwrap();
        let w = |a: f32, b: f32| {
            let (ea, eb) = ((a / 2f32.sqrt()).exp(), (b / 2f32.sqrt()).exp());
            (ea / (ea + eb), eb / (ea + eb))
        };
        let (a0, b0) = w(5.0, 11.0);
        let (a1, b1) = w(11.0, 25.0);
        let expected = [a0 * 1.0 + b0 * 3.0, a0 * 2.0 + b0 * 4.0, a1 * 1.0 + b1 * 3.0, a1 * 2.0 + b1 * 4.0];
        for (g, e) in got.iter().zip(expected) {
            assert!((g - e).abs() < 1e-5, "{got:?} vs {expected:?}");
        }
    }
}

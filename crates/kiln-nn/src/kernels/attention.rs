//! Window attention on f32 slices, one window at a time: `softmax(s·q·kᵀ + bias + mask)·v`
//! for every head, and its backward pass.
//!
//! Written op by op, a window attention is a batched matmul over thousands of 49x32 operands,
//! permute copies of q, k and v, the logits, bias and mask added as whole tensors, a softmax and
//! a second batched matmul, each a pass over memory; autodiff adds the transposes and products of
//! the backward pass. Here a window's q, k and v are read straight from the qkv projection, its
//! logits live in a small buffer that stays in cache, and the output is written head by head into
//! its place. The products are small register-blocked kernels, compiled for AVX-512 and AVX2 and
//! chosen at run time, with a portable fallback.
//!
//! On burn-flex tensors ([`flex`], [`autodiff`]) it is one autodiff node that keeps only the qkv
//! projection and the probabilities for its backward pass.

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

use super::simd::{Isa, add_partials, dot, exp};
use super::tensor::f32_tensor;

/// Shape of one attention call.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AttentionShape {
    /// Windows in the batch (`batch · windows per image`).
    pub windows: usize,
    /// Tokens per window `N`.
    pub tokens: usize,
    pub heads: usize,
    pub head_dim: usize,
    /// Windows per image of the mask (`1` without a mask: one all-zero `[N, N]`).
    pub mask_windows: usize,
}

impl AttentionShape {
    fn channels(&self) -> usize {
        self.heads * self.head_dim
    }
}

/// Columns per register block of the matmul kernel (two AVX-512 vectors).
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 4;

fn padded(n: usize) -> usize {
    n.div_ceil(NR) * NR
}

/// A register-blocked product `c[R × ldb] = a[R × k] · b[k × ldb]` for `R ≤ MR` rows, where
/// `a(i, p) = a[i·a_row + p·a_col]` (so a transposed operand is a stride, not a copy) and `b` is
/// packed row-major with `ldb` a multiple of [`NR`]. One implementation per instruction set.
trait RowBlock {
    fn row_block<const R: usize>(a: &[f32], a_row: usize, a_col: usize, k: usize, b: &[f32], ldb: usize, c: &mut [f32]);
}

/// Scalar code, for CPUs without AVX2 (and as the reference the SIMD kernels are tested against).
struct Portable;

impl RowBlock for Portable {
    #[inline(always)]
    fn row_block<const R: usize>(a: &[f32], a_row: usize, a_col: usize, k: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
        for r in 0..R {
            let c = &mut c[r * ldb..(r + 1) * ldb];
            c.fill(0.0);
            for p in 0..k {
                let a = a[r * a_row + p * a_col];
                for (c, &b) in c.iter_mut().zip(&b[p * ldb..(p + 1) * ldb]) {
                    *c += a * b;
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{NR, RowBlock};
    use std::arch::x86_64::*;

    pub(super) struct Avx512;
    pub(super) struct Avx2;

    /// Checks the operand extents once, so the loops below index without checks.
    #[inline(always)]
    fn check<const R: usize>(a: &[f32], a_row: usize, a_col: usize, k: usize, b: &[f32], ldb: usize, c: &[f32]) {
        assert!(ldb.is_multiple_of(NR) && b.len() >= k * ldb && c.len() >= R * ldb);
        assert!(k == 0 || R == 0 || a.len() > (R - 1) * a_row + (k - 1) * a_col);
    }

    impl RowBlock for Avx512 {
        #[inline(always)]
        fn row_block<const R: usize>(a: &[f32], a_row: usize, a_col: usize, k: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
            check::<R>(a, a_row, a_col, k, b, ldb, c);
            // SAFETY: extents checked above; chosen only where the CPU has AVX-512F
            unsafe { avx512::<R>(a.as_ptr(), a_row, a_col, k, b.as_ptr(), ldb, c.as_mut_ptr()) }
        }
    }

    impl RowBlock for Avx2 {
        #[inline(always)]
        fn row_block<const R: usize>(a: &[f32], a_row: usize, a_col: usize, k: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
            check::<R>(a, a_row, a_col, k, b, ldb, c);
            // SAFETY: extents checked above; chosen only where the CPU has AVX2 and FMA
            unsafe { avx2::<R>(a.as_ptr(), a_row, a_col, k, b.as_ptr(), ldb, c.as_mut_ptr()) }
        }
    }

    /// `R` rows × 32 columns in `2R` registers of 16 lanes.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize>(a: *const f32, a_row: usize, a_col: usize, k: usize, b: *const f32, ldb: usize, c: *mut f32) {
        unsafe {
            for j0 in (0..ldb).step_by(NR) {
                let mut acc = [[_mm512_setzero_ps(); 2]; R];
                for p in 0..k {
                    let b_row = b.add(p * ldb + j0);
                    let (b0, b1) = (_mm512_loadu_ps(b_row), _mm512_loadu_ps(b_row.add(16)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm512_set1_ps(*a.add(r * a_row + p * a_col));
                        acc[0] = _mm512_fmadd_ps(a, b0, acc[0]);
                        acc[1] = _mm512_fmadd_ps(a, b1, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    let c_row = c.add(r * ldb + j0);
                    _mm512_storeu_ps(c_row, acc[0]);
                    _mm512_storeu_ps(c_row.add(16), acc[1]);
                }
            }
        }
    }

    /// `R` rows × 32 columns in `4R` registers of 8 lanes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize>(a: *const f32, a_row: usize, a_col: usize, k: usize, b: *const f32, ldb: usize, c: *mut f32) {
        unsafe {
            for j0 in (0..ldb).step_by(NR) {
                let mut acc = [[_mm256_setzero_ps(); 4]; R];
                for p in 0..k {
                    let b_row = b.add(p * ldb + j0);
                    let bs = [0, 8, 16, 24].map(|o| _mm256_loadu_ps(b_row.add(o)));
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let a = _mm256_set1_ps(*a.add(r * a_row + p * a_col));
                        for (acc, &b) in acc.iter_mut().zip(&bs) {
                            *acc = _mm256_fmadd_ps(a, b, *acc);
                        }
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    for (o, &v) in acc.iter().enumerate() {
                        _mm256_storeu_ps(c.add(r * ldb + j0 + 8 * o), v);
                    }
                }
            }
        }
    }
}

/// `c[m × ldb] = a[m × k] · b[k × ldb]`, `a` strided as in [`RowBlock`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn matmul<K: RowBlock>(a: &[f32], a_row: usize, a_col: usize, m: usize, k: usize, b: &[f32], ldb: usize, c: &mut [f32]) {
    let mut i = 0;
    while i + MR <= m {
        K::row_block::<MR>(&a[i * a_row..], a_row, a_col, k, b, ldb, &mut c[i * ldb..]);
        i += MR;
    }
    if i == m {
        return;
    }
    let (a, c) = (&a[i * a_row..], &mut c[i * ldb..]);
    match m - i {
        1 => K::row_block::<1>(a, a_row, a_col, k, b, ldb, c),
        2 => K::row_block::<2>(a, a_row, a_col, k, b, ldb, c),
        _ => K::row_block::<3>(a, a_row, a_col, k, b, ldb, c),
    }
}

/// Softmax of one row in place.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for v in row.iter_mut() {
        *v = exp(*v - max);
    }
    let inv = 1.0 / row.iter().sum::<f32>();
    for v in row.iter_mut() {
        *v *= inv;
    }
}

/// Per-task buffers, sized for one window.
struct Scratch {
    /// A right-hand operand: `[head_dim × padded(N)]` or `[N × padded(head_dim)]`.
    panel: Vec<f32>,
    /// `[N × padded(N)]`: logits, then probabilities (forward); ∂P, then ∂S (backward).
    square: Vec<f32>,
    /// `[N × padded(head_dim)]`: one head's product before it is written to its place.
    out: Vec<f32>,
}

impl Scratch {
    fn new(s: &AttentionShape) -> Self {
        let (np, dp) = (padded(s.tokens), padded(s.head_dim));
        Self { panel: vec![0.0; (s.head_dim * np).max(s.tokens * dp)], square: vec![0.0; s.tokens * np], out: vec![0.0; s.tokens * dp] }
    }
}

/// Copies `rows` rows of `width` values, `src` rows `src_stride` apart, into `dst` rows `ld`
/// apart; the padding columns beyond `width` are zeroed.
#[inline(always)]
fn pack(src: &[f32], src_stride: usize, rows: usize, width: usize, dst: &mut [f32], ld: usize) {
    for r in 0..rows {
        let row = &mut dst[r * ld..(r + 1) * ld];
        row[..width].copy_from_slice(&src[r * src_stride..r * src_stride + width]);
        row[width..].fill(0.0);
    }
}

/// Copies the transpose: `dst[p, j] = src[j·src_stride + p]` for `j < rows`, `p < width`,
/// `dst` rows `ld` apart with the columns beyond `rows` zeroed.
#[inline(always)]
fn pack_transposed(src: &[f32], src_stride: usize, rows: usize, width: usize, dst: &mut [f32], ld: usize) {
    for p in 0..width {
        let row = &mut dst[p * ld..(p + 1) * ld];
        for (j, v) in row[..rows].iter_mut().enumerate() {
            *v = src[j * src_stride + p];
        }
        row[rows..].fill(0.0);
    }
}

/// Writes `rows` rows of `width` from `src` (rows `ld` apart) into `dst` (rows `stride` apart).
#[inline(always)]
fn unpack(src: &[f32], ld: usize, rows: usize, width: usize, dst: &mut [f32], stride: usize) {
    for r in 0..rows {
        dst[r * stride..r * stride + width].copy_from_slice(&src[r * ld..r * ld + width]);
    }
}

/// One window, every head. `qkv`: `[N, 3C]`; `bias`: `[heads, N, N]`; `mask`: `[N, N]`;
/// `out`: `[N, C]`; `probs` (kept for the backward pass): `[heads, N, N]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn forward_window<K: RowBlock>(s: &AttentionShape, scale: f32, qkv: &[f32], bias: &[f32], mask: &[f32], out: &mut [f32], mut probs: Option<&mut [f32]>, buf: &mut Scratch) {
    let (n, d, c) = (s.tokens, s.head_dim, s.channels());
    let (np, dp) = (padded(n), padded(d));
    for h in 0..s.heads {
        let (q, k, v) = (&qkv[h * d..], &qkv[c + h * d..], &qkv[2 * c + h * d..]);
        pack_transposed(k, 3 * c, n, d, &mut buf.panel, np);
        matmul::<K>(q, 3 * c, 1, n, d, &buf.panel, np, &mut buf.square);
        let bias = &bias[h * n * n..(h + 1) * n * n];
        for i in 0..n {
            let row = &mut buf.square[i * np..i * np + n];
            for ((l, &b), &m) in row.iter_mut().zip(&bias[i * n..(i + 1) * n]).zip(&mask[i * n..(i + 1) * n]) {
                *l = *l * scale + b + m;
            }
            softmax_row(row);
            if let Some(probs) = probs.as_deref_mut() {
                probs[(h * n + i) * n..(h * n + i + 1) * n].copy_from_slice(row);
            }
        }
        pack(v, 3 * c, n, d, &mut buf.panel, dp);
        matmul::<K>(&buf.square, np, 1, n, n, &buf.panel, dp, &mut buf.out);
        unpack(&buf.out, dp, n, d, &mut out[h * d..], c);
    }
}

/// One window's backward pass. `dout`: `[N, C]`; `probs`: `[heads, N, N]`; writes `dqkv`
/// (`[N, 3C]`) and adds `∂bias` into `dbias` (`[heads, N, N]`) when given.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn backward_window<K: RowBlock>(s: &AttentionShape, scale: f32, qkv: &[f32], probs: &[f32], dout: &[f32], dqkv: &mut [f32], mut dbias: Option<&mut [f32]>, buf: &mut Scratch) {
    let (n, d, c) = (s.tokens, s.head_dim, s.channels());
    let (np, dp) = (padded(n), padded(d));
    for h in 0..s.heads {
        let (q, k, v, dout) = (&qkv[h * d..], &qkv[c + h * d..], &qkv[2 * c + h * d..], &dout[h * d..]);
        let probs = &probs[h * n * n..(h + 1) * n * n];
        // ∂P = ∂O·vᵀ
        pack_transposed(v, 3 * c, n, d, &mut buf.panel, np);
        matmul::<K>(dout, c, 1, n, d, &buf.panel, np, &mut buf.square);
        // ∂S = P ⊙ (∂P − Σⱼ ∂P ⊙ P) per row; the bias takes ∂S, q and k take s·∂S
        for i in 0..n {
            let (p, ds) = (&probs[i * n..(i + 1) * n], &mut buf.square[i * np..i * np + n]);
            let dot = dot(p, ds);
            for (ds, &p) in ds.iter_mut().zip(p) {
                *ds = p * (*ds - dot);
            }
            if let Some(dbias) = dbias.as_deref_mut() {
                for (db, &ds) in dbias[(h * n + i) * n..(h * n + i + 1) * n].iter_mut().zip(ds.iter()) {
                    *db += ds;
                }
            }
            ds.iter_mut().for_each(|ds| *ds *= scale);
        }
        // ∂v = Pᵀ·∂O
        pack(dout, c, n, d, &mut buf.panel, dp);
        matmul::<K>(probs, 1, n, n, n, &buf.panel, dp, &mut buf.out);
        unpack(&buf.out, dp, n, d, &mut dqkv[2 * c + h * d..], 3 * c);
        // ∂q = s·∂S·k
        pack(k, 3 * c, n, d, &mut buf.panel, dp);
        matmul::<K>(&buf.square, np, 1, n, n, &buf.panel, dp, &mut buf.out);
        unpack(&buf.out, dp, n, d, &mut dqkv[h * d..], 3 * c);
        // ∂k = s·∂Sᵀ·q
        pack(q, 3 * c, n, d, &mut buf.panel, dp);
        matmul::<K>(&buf.square, 1, np, n, n, &buf.panel, dp, &mut buf.out);
        unpack(&buf.out, dp, n, d, &mut dqkv[c + h * d..], 3 * c);
    }
}

/// A per-window function compiled once per [`Isa`]: the whole window (packing, softmax, the
/// products) is built with that instruction set enabled, so its loops vectorise to it too.
macro_rules! per_isa {
    ($name:ident, $generic:ident, ($($arg:ident: $ty:ty),*)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name(isa: Isa, $($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) { $generic::<x86::Avx512>($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) { $generic::<x86::Avx2>($($arg),*) }
                match isa {
                    // SAFETY: `Isa::detect` found the features on this CPU
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    Isa::Avx2 => return unsafe { avx2($($arg),*) },
                    Isa::Portable => {}
                }
            }
            $generic::<Portable>($($arg),*)
        }
    };
}

per_isa!(forward_window_isa, forward_window, (s: &AttentionShape, scale: f32, qkv: &[f32], bias: &[f32], mask: &[f32], out: &mut [f32], probs: Option<&mut [f32]>, buf: &mut Scratch));
per_isa!(backward_window_isa, backward_window, (s: &AttentionShape, scale: f32, qkv: &[f32], probs: &[f32], dout: &[f32], dqkv: &mut [f32], dbias: Option<&mut [f32]>, buf: &mut Scratch));

/// Windows per rayon task: a few tasks per thread, so uneven tasks balance.
fn windows_per_task(windows: usize) -> usize {
    windows.div_ceil(4 * rayon::current_num_threads()).max(1)
}

/// Attention of every window: `qkv` `[windows, N, 3C]`, `bias` `[heads, N, N]`, `mask`
/// `[mask_windows, N, N]` (window `w` takes `mask[w mod mask_windows]`) -> `[windows, N, C]`,
/// and the probabilities `[windows, heads, N, N]` when `keep_probs`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn forward(isa: Isa, s: AttentionShape, scale: f32, qkv: &[f32], bias: &[f32], mask: &[f32], keep_probs: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let (n, c) = (s.tokens, s.channels());
    let per_task = windows_per_task(s.windows);
    let mut out = vec![0.0f32; s.windows * n * c];
    let mut probs = keep_probs.then(|| vec![0.0f32; s.windows * s.heads * n * n]);
    let probs_len = s.heads * n * n;
    let mut prob_chunks: Vec<Option<&mut [f32]>> = match probs.as_mut() {
        Some(p) => p.chunks_mut(per_task * probs_len).map(Some).collect(),
        None => (0..s.windows.div_ceil(per_task)).map(|_| None).collect(),
    };
    out.par_chunks_mut(per_task * n * c).zip(prob_chunks.par_iter_mut()).enumerate().for_each(|(task, (out, probs))| {
        let mut buf = Scratch::new(&s);
        for (i, out) in out.chunks_mut(n * c).enumerate() {
            let w = task * per_task + i;
            let mask = &mask[(w % s.mask_windows) * n * n..][..n * n];
            let probs = probs.as_deref_mut().map(|p| &mut p[i * probs_len..(i + 1) * probs_len]);
            forward_window_isa(isa, &s, scale, &qkv[w * n * 3 * c..(w + 1) * n * 3 * c], bias, mask, out, probs, &mut buf);
        }
    });
    (out, probs)
}

/// The backward pass of [`forward`]: `∂qkv` `[windows, N, 3C]`, and `∂bias` `[heads, N, N]`
/// summed over windows when `bias_grad`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn backward(isa: Isa, s: AttentionShape, scale: f32, qkv: &[f32], probs: &[f32], dout: &[f32], bias_grad: bool) -> (Vec<f32>, Option<Vec<f32>>) {
    let (n, c) = (s.tokens, s.channels());
    let per_task = windows_per_task(s.windows);
    let probs_len = s.heads * n * n;
    let mut dqkv = vec![0.0f32; s.windows * n * 3 * c];
    // each task sums ∂bias over its own windows; the partial sums add up
    let dbias = dqkv.par_chunks_mut(per_task * n * 3 * c).enumerate().map(|(task, dqkv)| {
        let mut buf = Scratch::new(&s);
        let mut dbias = bias_grad.then(|| vec![0.0f32; probs_len]);
        for (i, dqkv) in dqkv.chunks_mut(n * 3 * c).enumerate() {
            let w = task * per_task + i;
            let (qkv, probs, dout) = (&qkv[w * n * 3 * c..][..n * 3 * c], &probs[w * probs_len..][..probs_len], &dout[w * n * c..][..n * c]);
            backward_window_isa(isa, &s, scale, qkv, probs, dout, dqkv, dbias.as_deref_mut(), &mut buf);
        }
        dbias
    });
    let dbias = dbias.reduce(|| None, |a, b| match (a, b) {
        (Some(a), Some(b)) => Some(add_partials(a, b)),
        (a, b) => a.or(b),
    });
    (dqkv, dbias)
}

/// The window attention's output, and what its backward pass keeps (probabilities only when
/// `keep_probs`).
fn attention_forward(qkv: FlexTensor, bias: FlexTensor, mask: FlexTensor, heads: usize, scale: f32, keep_probs: bool) -> (FlexTensor, AttentionShape, FlexTensor, Option<Vec<f32>>) {
    let (dims, mask_dims) = (qkv.layout().shape().clone(), mask.layout().shape().clone());
    let shape = AttentionShape { windows: dims[0], tokens: dims[1], heads, head_dim: dims[2] / 3 / heads, mask_windows: mask_dims[0] };
    let (qkv, bias, mask) = (qkv.to_contiguous(), bias.to_contiguous(), mask.to_contiguous());
    let (out, probs) = forward(Isa::detect(), shape, scale, qkv.storage(), bias.storage(), mask.storage(), keep_probs);
    let out = FlexTensor::from_data(TensorData::new(out, [shape.windows, shape.tokens, shape.heads * shape.head_dim]));
    (out, shape, qkv, probs)
}

/// The window attention on burn-flex tensors, no probabilities kept.
pub(super) fn flex(qkv: FlexTensor, bias: FlexTensor, mask: FlexTensor, heads: usize, scale: f64) -> FlexTensor {
    attention_forward(qkv, bias, mask, heads, scale as f32, false).0
}

/// [`attention_forward`] as one autodiff node keeping the probabilities for
/// [`WindowAttentionBackward`].
pub(super) fn autodiff<C: CheckpointStrategy>(
    qkv: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
    mask: FloatTensor<Autodiff<Flex, C>>,
    heads: usize,
    scale: f64,
) -> FloatTensor<Autodiff<Flex, C>> {
    match WindowAttentionBackward.prepare::<C>([qkv.node(), bias.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let scale = scale as f32;
            let (out, shape, qkv, probs) = attention_forward(qkv.into_primitive(), bias.into_primitive(), mask.into_primitive(), heads, scale, true);
            let probs = probs.expect("probabilities kept for the backward pass");
            prep.finish(AttentionState { shape, scale, qkv, probs }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex(
            qkv.into_primitive(),
            bias.into_primitive(),
            mask.into_primitive(),
            heads,
            scale,
        )),
    }
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
        let (dqkv, dbias) = backward(Isa::detect(), shape, scale, qkv.storage(), &probs, grad.storage(), bias_node.is_some());
        if let Some(node) = qkv_node {
            grads.register::<Flex>(node.id, f32_tensor(dqkv, &qkv));
        }
        if let (Some(node), Some(dbias)) = (bias_node, dbias) {
            let dims = [shape.heads, shape.tokens, shape.tokens];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dbias, dims)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every compiled form this CPU runs against a triple loop, with a transposed left operand and
    /// row counts that leave remainders.
    #[test]
    fn matmul_matches_a_triple_loop_on_every_instruction_set() {
        let (k, ldb) = (5, 2 * NR);
        for m in [7, 8] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * ldb).map(|i| (i as f32 * 0.11).cos()).collect();
            for (a_row, a_col) in [(k, 1), (1, m)] {
                let want: Vec<f32> = (0..m * ldb).map(|e| (0..k).map(|p| a[(e / ldb) * a_row + p * a_col] * b[p * ldb + e % ldb]).sum()).collect();
                for isa in Isa::all_available() {
                    let mut got = vec![f32::NAN; m * ldb];
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx512 => matmul::<x86::Avx512>(&a, a_row, a_col, m, k, &b, ldb, &mut got),
                        #[cfg(target_arch = "x86_64")]
                        Isa::Avx2 => matmul::<x86::Avx2>(&a, a_row, a_col, m, k, &b, ldb, &mut got),
                        Isa::Portable => matmul::<Portable>(&a, a_row, a_col, m, k, &b, ldb, &mut got),
                    }
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() < 1e-5, "{isa:?}: {g} vs {w}");
                    }
                }
            }
        }
    }

    /// Every compiled form this CPU runs gives the portable form's forward and backward pass,
    /// on Swin's shapes: 7x7 windows of 32-channel heads, a shifted-window mask, a bias gradient.
    #[test]
    fn every_instruction_set_agrees_with_the_portable_form() {
        let s = AttentionShape { windows: 8, tokens: 49, heads: 3, head_dim: 32, mask_windows: 4 };
        let (n, c) = (s.tokens, s.channels());
        let values = |len: usize, seed: f32| -> Vec<f32> { (0..len).map(|i| ((i as f32 + seed) * 0.618).sin()).collect() };
        let qkv = values(s.windows * n * 3 * c, 1.0);
        let bias = values(s.heads * n * n, 2.0);
        let mask: Vec<f32> = (0..s.mask_windows * n * n).map(|i| if i % 7 == 0 { -100.0 } else { 0.0 }).collect();
        let dout = values(s.windows * n * c, 3.0);
        let run = |isa: Isa| {
            let (out, probs) = forward(isa, s, 0.17, &qkv, &bias, &mask, true);
            let (dqkv, dbias) = backward(isa, s, 0.17, &qkv, probs.as_ref().unwrap(), &dout, true);
            [out, probs.unwrap(), dqkv, dbias.unwrap()]
        };
        let portable = run(Isa::Portable);
        for isa in Isa::all_available() {
            for (what, (got, want)) in ["output", "probabilities", "∂qkv", "∂bias"].iter().zip(run(isa).iter().zip(&portable)) {
                assert_eq!(got.len(), want.len());
                for (g, w) in got.iter().zip(want) {
                    assert!((g - w).abs() <= 1e-5 + 1e-5 * w.abs(), "{isa:?} {what}: {g}, portable {w}");
                }
            }
        }
    }
}

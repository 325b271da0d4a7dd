//! Batched single-precision matrix products through a BLAS, when `build.rs` linked one
//! (`cfg(kiln_blas)`): BLIS built from vendored sources (the default), or the system's OpenBLAS
//! (`KILN_BLAS=openblas` at build time). Both are called through `cblas-sys`'s declarations.
//!
//! On a 2-core Zen 4, OpenBLAS's sgemm runs at 240 GFLOP/s on a Swin-T MLP product against 153
//! for the `gemm` crate inside burn-flex, and matrix products are most of a training step. The
//! BLAS runs single-threaded: the blocks of one product are spread over rayon's threads, so Kiln
//! has one thread pool and no BLAS threads spin beside rayon's.

#[cfg(kiln_blis)]
use blis_src as _;

/// A matrix inside a slice: element `(i, j)` at `offset + i·row_stride + j·col_stride`, and the
/// matrix of batch entry `b` a further `b·batch_stride` on (0: the same matrix for every entry).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct MatrixView {
    pub(crate) offset: usize,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
    pub(crate) batch_stride: usize,
}

impl MatrixView {
    /// The transpose: the same elements, strides swapped.
    pub(crate) fn t(self) -> Self {
        Self { rows: self.cols, cols: self.rows, row_stride: self.col_stride, col_stride: self.row_stride, ..self }
    }

    /// How BLAS reads it: `(transposed, leading dimension)`, or `None` when neither axis is
    /// unit-stride (the caller copies it first).
    fn blas_layout(&self) -> Option<(bool, usize)> {
        if self.col_stride == 1 || self.cols == 1 {
            let ld = if self.rows == 1 { self.cols } else { self.row_stride };
            (ld >= self.cols).then_some((false, ld))
        } else if self.row_stride == 1 || self.rows == 1 {
            let ld = if self.cols == 1 { self.rows } else { self.col_stride };
            (ld >= self.rows).then_some((true, ld))
        } else {
            None
        }
    }

    /// Whether BLAS can read it in place.
    pub(crate) fn is_blas_readable(&self) -> bool {
        self.blas_layout().is_some()
    }
}

/// Whether the products go through a BLAS: one was linked, and `KILN_BLAS=0` does not turn it
/// off at run time (to compare against burn-flex's gemm with one binary).
pub(crate) fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| {
        let enabled = cfg!(kiln_blas) && std::env::var("KILN_BLAS").as_deref() != Ok("0");
        if enabled {
            prepare();
        }
        enabled
    })
}

/// What computes the matrix products in this process: `OpenBLAS`, `BLIS (<kernels>)` or
/// burn-flex's `gemm`. Asking first thing in `main`, before any thread starts, also makes the
/// BLAS's one-time set-up happen there.
pub fn describe() -> String {
    if !enabled() {
        return "burn-flex gemm".into();
    }
    if cfg!(kiln_openblas) { "OpenBLAS".into() } else { format!("BLIS, {} kernels", blis_kernels().1) }
}

/// The BLIS kernel family for this CPU, as `(BLIS_ARCH_TYPE id, name)`. BLIS's own detection
/// does not know every CPU: on an Intel Xeon with AVX-512 and AMX it fell back to kernels 25-40%
/// slower than its Skylake-X ones (issue #18), so Kiln decides from its own ISA detection and
/// the vendor, and leaves AMD to BLIS (which picks its Zen kernels there).
fn blis_kernels() -> (Option<u32>, &'static str) {
    use super::simd::Isa;
    // BLIS 1.0's arch_t order: SKX 0, KNL 1, KNC 2, HASWELL 3, ...
    #[cfg(target_arch = "x86_64")]
    if cpu_vendor() == *b"GenuineIntel" {
        match Isa::detect() {
            Isa::Avx512 => return (Some(0), "skx"),
            Isa::Avx2 => return (Some(3), "haswell"),
            Isa::Portable => {}
        }
    }
    (None, "auto-detected")
}

/// The CPUID vendor string.
#[cfg(target_arch = "x86_64")]
fn cpu_vendor() -> [u8; 12] {
    // leaf 0 exists on every x86-64 CPU
    let id = std::arch::x86_64::__cpuid(0);
    let mut vendor = [0u8; 12];
    for (i, reg) in [id.ebx, id.edx, id.ecx].into_iter().enumerate() {
        vendor[4 * i..4 * i + 4].copy_from_slice(&reg.to_le_bytes());
    }
    vendor
}

/// One-time set-up before the first product: OpenBLAS single-threaded; BLIS told its kernels
/// (through `BLIS_ARCH_TYPE`, its only interface for this, read at its first call), unless the
/// user set it.
fn prepare() {
    #[cfg(kiln_openblas)]
    {
        // OpenBLAS's own, not part of the CBLAS interface that cblas-sys declares
        unsafe extern "C" {
            fn openblas_set_num_threads(threads: std::ffi::c_int);
        }
        // SAFETY: a plain setter, before the first product
        unsafe { openblas_set_num_threads(1) };
    }
    #[cfg(kiln_blis)]
    if let (Some(id), _) = blis_kernels() {
        if std::env::var_os("BLIS_ARCH_TYPE").is_none() {
            // SAFETY: set once, before BLIS's first call reads it; `describe()` at the top of
            // `main` does this before any other thread exists
            unsafe { std::env::set_var("BLIS_ARCH_TYPE", id.to_string()) };
        }
    }
}

/// `C_b = A_b·B_b (+ bias)` for `batch` entries (`[batch, m, n]`, contiguous), or with
/// `sum_batch` `C = Σ_b A_b·B_b (+ bias)` (`[m, n]`). `a` is `m×k`, `b` is `k×n`; both must be
/// [`MatrixView::is_blas_readable`]. `bias` (`n` values) is added to every row: written into
/// the output before the product accumulates onto it, so it costs no pass of its own. Only
/// when [`enabled`].
pub(crate) fn batched_matmul(a: &[f32], av: MatrixView, b: &[f32], bv: MatrixView, batch: usize, sum_batch: bool, bias: Option<&[f32]>) -> Vec<f32> {
    let (m, k, n) = (av.rows, av.cols, bv.cols);
    assert_eq!(k, bv.rows, "inner dimensions");
    let out_batch = if sum_batch { 1 } else { batch };
    let mut out = vec![0.0f32; out_batch * m * n];
    if m * n == 0 {
        return out;
    }
    let blocks = blocks(m, n, if sum_batch { 1 } else { batch });
    let tasks: Vec<(usize, Block)> = (0..out_batch).flat_map(|entry| blocks.iter().map(move |&block| (entry, block))).collect();
    let c = OutPtr(out.as_mut_ptr());
    let run = |&(entry, block): &(usize, Block)| {
        let entries = if sum_batch { 0..batch } else { entry..entry + 1 };
        let c_block = entry * m * n + block.row0 * n + block.col0;
        if let Some(bias) = bias {
            for row in 0..block.rows {
                // SAFETY: this task's block
                let out_row = unsafe { std::slice::from_raw_parts_mut(c.at(c_block + row * n), block.cols) };
                out_row.copy_from_slice(&bias[block.col0..block.col0 + block.cols]);
            }
        }
        for (i, b_idx) in entries.enumerate() {
            let a_block = MatrixView { offset: av.offset + b_idx * av.batch_stride + block.row0 * av.row_stride, rows: block.rows, ..av };
            let b_block = MatrixView { offset: bv.offset + b_idx * bv.batch_stride + block.col0 * bv.col_stride, cols: block.cols, ..bv };
            let beta = if i == 0 && bias.is_none() { 0.0 } else { 1.0 };
            // SAFETY: every task writes its own block of `out`; the views lie inside `a` and `b`
            unsafe { sgemm(a, a_block, b, b_block, c.at(c_block), n, beta) };
        }
    };
    if tasks.len() == 1 || 2 * m * n * k * batch < SEQUENTIAL_FLOPS {
        tasks.iter().for_each(run);
    } else {
        use rayon::prelude::*;
        tasks.par_iter().for_each(run);
    }
    out
}

/// Below this many flops a product runs on the calling thread.
const SEQUENTIAL_FLOPS: usize = 1 << 21;

/// The part of the output one task computes: `rows` rows from `row0`, `cols` columns from `col0`.
#[derive(Clone, Copy, Debug)]
struct Block {
    row0: usize,
    rows: usize,
    col0: usize,
    cols: usize,
}

/// Each output matrix is cut into enough row (or, for few rows, column) blocks that the
/// `entries` matrices give every rayon thread work; blocks stay at least 32 wide.
fn blocks(m: usize, n: usize, entries: usize) -> Vec<Block> {
    let per_matrix = rayon::current_num_threads().div_ceil(entries).max(1);
    // (start, length) of each part
    let split = |len: usize| -> Vec<(usize, usize)> {
        let parts = per_matrix.min(len / 32).max(1);
        (0..parts).map(|p| (p * len / parts, (p + 1) * len / parts - p * len / parts)).collect()
    };
    if m >= n {
        split(m).into_iter().map(|(row0, rows)| Block { row0, rows, col0: 0, cols: n }).collect()
    } else {
        split(n).into_iter().map(|(col0, cols)| Block { row0: 0, rows: m, col0, cols }).collect()
    }
}

/// A raw output pointer the rayon tasks share; each writes a disjoint block.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: the tasks write disjoint blocks
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: callers stay inside the output
        unsafe { self.0.add(offset) }
    }
}

/// `C = A·B + beta·C` for one block, `C` row-major with leading dimension `ldc`.
///
/// # Safety
/// `c` must point at `a.rows` rows of `ldc` writable floats with `b.cols ≤ ldc`.
#[cfg(kiln_blas)]
unsafe fn sgemm(a: &[f32], av: MatrixView, b: &[f32], bv: MatrixView, c: *mut f32, ldc: usize, beta: f32) {
    use cblas_sys::{CBLAS_LAYOUT, CBLAS_TRANSPOSE, cblas_sgemm};
    use std::ffi::c_int;
    let (ta, lda) = av.blas_layout().expect("a BLAS-readable left operand");
    let (tb, ldb) = bv.blas_layout().expect("a BLAS-readable right operand");
    let int = |v: usize| c_int::try_from(v).expect("a matrix dimension within CBLAS's 32-bit indices");
    let flag = |t: bool| if t { CBLAS_TRANSPOSE::CblasTrans } else { CBLAS_TRANSPOSE::CblasNoTrans };
    let (a_ptr, b_ptr) = (a[av.offset..].as_ptr(), b[bv.offset..].as_ptr());
    // SAFETY: the views lie inside `a` and `b` (checked by the callers' shapes); `c` per contract
    unsafe {
        cblas_sgemm(CBLAS_LAYOUT::CblasRowMajor, flag(ta), flag(tb), int(av.rows), int(bv.cols), int(av.cols), 1.0, a_ptr, int(lda), b_ptr, int(ldb), beta, c, int(ldc))
    };
}

#[cfg(not(kiln_blas))]
unsafe fn sgemm(_: &[f32], _: MatrixView, _: &[f32], _: MatrixView, _: *mut f32, _: usize, _: f32) {
    unreachable!("BLAS products run only when `blas::enabled()`")
}

#[cfg(all(test, kiln_blas))]
mod tests {
    use super::*;

    /// Element `(i, j)` of entry `b` of a view, read the slow way.
    fn at(data: &[f32], v: MatrixView, b: usize, i: usize, j: usize) -> f32 {
        data[v.offset + b * v.batch_stride + i * v.row_stride + j * v.col_stride]
    }

    fn naive(a: &[f32], av: MatrixView, b: &[f32], bv: MatrixView, batch: usize, sum_batch: bool, bias: Option<&[f32]>) -> Vec<f32> {
        let (m, k, n) = (av.rows, av.cols, bv.cols);
        let out_batch = if sum_batch { 1 } else { batch };
        let mut out: Vec<f64> = (0..out_batch * m * n).map(|i| bias.map_or(0.0, |bias| bias[i % n] as f64)).collect();
        for e in 0..batch {
            let base = if sum_batch { 0 } else { e * m * n };
            for i in 0..m {
                for j in 0..n {
                    out[base + i * n + j] += (0..k).map(|p| at(a, av, e, i, p) as f64 * at(b, bv, e, p, j) as f64).sum::<f64>();
                }
            }
        }
        out.into_iter().map(|v| v as f32).collect()
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0).collect()
    }

    /// Row-major `[batch, rows, cols]` (batch stride 0 for one shared matrix), with `pad` unused
    /// columns per row, as `transposed` storage when asked.
    fn view(batch: usize, rows: usize, cols: usize, pad: usize, transposed: bool, shared: bool) -> (Vec<f32>, MatrixView) {
        let (r, c) = if transposed { (cols, rows) } else { (rows, cols) };
        let stored = MatrixView { offset: 3, rows: r, cols: c, row_stride: c + pad, col_stride: 1, batch_stride: if shared { 0 } else { r * (c + pad) } };
        let data = values(3 + batch.max(1) * r * (c + pad), (rows * 31 + cols) as u32);
        (data, if transposed { stored.t() } else { stored })
    }

    #[test]
    fn products_match_a_triple_loop_for_every_layout_batching_and_split() {
        // odd sizes, row and column splits (m ≥ n and m < n), shared and per-entry operands
        for &(batch, m, k, n) in &[(1, 1, 1, 1), (1, 70, 13, 9), (1, 5, 17, 130), (3, 67, 33, 41), (16, 7, 5, 3)] {
            for (ta, tb, pad) in [(false, false, 0), (true, false, 2), (false, true, 1), (true, true, 0)] {
                for (shared_a, shared_b) in [(false, false), (true, false), (false, true)] {
                    let (a, av) = view(batch, m, k, pad, ta, shared_a);
                    let (b, bv) = view(batch, k, n, pad, tb, shared_b);
                    let bias = values(n, 7);
                    for (sum_batch, bias) in [(false, None), (true, None), (false, Some(&bias[..])), (true, Some(&bias[..]))] {
                        let got = batched_matmul(&a, av, &b, bv, batch, sum_batch, bias);
                        let want = naive(&a, av, &b, bv, batch, sum_batch, bias);
                        let err = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
                        let with_bias = bias.is_some();
                        assert!(err < 1e-4 * k as f32, "{batch}x{m}x{k}x{n} ta {ta} tb {tb} shared {shared_a}/{shared_b} sum {sum_batch} bias {with_bias}: {err}");
                    }
                }
            }
        }
    }

    #[test]
    fn only_unit_stride_layouts_are_readable() {
        let v = MatrixView { offset: 0, rows: 4, cols: 5, row_stride: 5, col_stride: 1, batch_stride: 0 };
        assert_eq!(v.blas_layout(), Some((false, 5)));
        assert_eq!(v.t().blas_layout(), Some((true, 5)));
        assert_eq!(MatrixView { col_stride: 2, row_stride: 10, ..v }.blas_layout(), None);
        // overlapping rows are not a matrix BLAS can read
        assert_eq!(MatrixView { row_stride: 3, ..v }.blas_layout(), None);
    }
}

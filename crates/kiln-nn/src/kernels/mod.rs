//! Kiln's CPU kernels on f32 slices: window attention and depthwise convolution, each with its
//! backward pass, batched products through OpenBLAS, and the instruction-set dispatch and
//! vectorisable scalar functions they share.

pub(crate) mod attention;
pub(crate) mod blas;
pub(crate) mod depthwise;
pub(crate) mod simd;

//! `train.precision`: mixed precision as PyTorch's autocast gives it ([`kiln_nn::autocast`]):
//! a step's matrix products and convolutions compute in bf16 on the f32 weights, cast inside the
//! autodiff graph, so every gradient reaches the optimiser in f32; everything else (residual
//! sums, normalisations, softmax, the loss) stays f32.

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::FloatDType;
use kiln_nn::autocast::autocast;

use crate::config::schema::Precision;

/// Why `precision` cannot run on a device of `kind` (`flex`, `wgpu`, `cuda`), if it cannot:
/// wgpu's shader language (WGSL) has no bf16 type.
pub fn unsupported(precision: Precision, kind: &str) -> Option<String> {
    (precision == Precision::Bf16 && kind == "wgpu").then(|| {
        "bf16 does not run on wgpu: its shader language (WGSL) has no bf16 type. Use precision f32 on wgpu, or bf16 on flex or cuda".to_string()
    })
}

/// The dtype the products of a `precision` step compute in.
pub fn product_dtype(precision: Precision) -> FloatDType {
    match precision {
        Precision::F32 => FloatDType::F32,
        Precision::Bf16 => FloatDType::BF16,
    }
}

/// One forward and backward pass of `module` at `precision`: the loss `loss` gives, divided by
/// `parts` (micro-batches x ranks, as their gradients are summed), and the gradients of
/// `module`'s parameters, all f32.
pub fn step<M: Module>(precision: Precision, module: &M, parts: usize, loss: impl FnOnce(&M) -> Tensor<1>) -> (f32, GradientsParams) {
    let loss = autocast(product_dtype(precision), || loss(module)).div_scalar(parts as f64);
    let value = loss.clone().into_scalar::<f32>() * parts as f32;
    (value, GradientsParams::from_grads(loss.backward(), module))
}

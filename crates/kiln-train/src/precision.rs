//! `train.precision`: mixed precision as PyTorch's autocast gives it. burn has no autocast
//! (burn issue #5696), so a step casts the f32 weights to the compute dtype once, as nodes of
//! the autodiff graph: the forward and backward passes run in bf16, and each weight's gradient
//! arrives in f32 through the cast's backward, for the optimiser, which only ever sees f32.
//! Kiln's shared layers (`kiln_nn::fused`) compute softmax and normalisations in f32 whatever
//! their input, and each task takes its loss on f32 logits.

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{DType, FloatDType};

use crate::config::schema::Precision;

/// Why `precision` cannot run on a device of `kind` (`flex`, `wgpu`, `cuda`), if it cannot:
/// wgpu's shader language (WGSL) has no bf16 type.
pub fn unsupported(precision: Precision, kind: &str) -> Option<String> {
    (precision == Precision::Bf16 && kind == "wgpu").then(|| {
        "bf16 does not run on wgpu: its shader language (WGSL) has no bf16 type. Use precision f32 on wgpu, or bf16 on flex or cuda".to_string()
    })
}

/// How a training step computes: its float dtype, and which module tensors stay as they are.
#[derive(Debug, Clone)]
pub struct MixedPrecision {
    dtype: FloatDType,
    /// Buffers (BatchNorm's running statistics): burn shares them between a module and its
    /// copies and updates them in place, so a cast copy must leave them in f32, untouched.
    buffers: HashSet<ParamId>,
}

impl MixedPrecision {
    /// `precision` for a network whose buffers are `buffers`.
    pub fn new(precision: Precision, buffers: &[ParamId]) -> Self {
        let dtype = match precision {
            Precision::F32 => FloatDType::F32,
            Precision::Bf16 => FloatDType::BF16,
        };
        Self { dtype, buffers: buffers.iter().copied().collect() }
    }

    /// The dtype the forward and backward passes compute in.
    pub fn dtype(&self) -> FloatDType {
        self.dtype
    }

    /// `module` with its parameters cast to the compute dtype, each cast a node of the graph
    /// from the f32 parameter (same id), so gradients reach the f32 parameters; `module`
    /// itself when the compute dtype is f32.
    pub fn compute_copy<M: Module>(&self, module: &M) -> M {
        struct Cast<'a> {
            dtype: FloatDType,
            buffers: &'a HashSet<ParamId>,
        }
        impl ModuleMapper for Cast<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if self.buffers.contains(&param.id) {
                    return param;
                }
                let dtype = self.dtype;
                param.map(|t| t.cast(dtype))
            }
        }
        if self.dtype == FloatDType::F32 {
            return module.clone();
        }
        module.clone().map(&mut Cast { dtype: self.dtype, buffers: &self.buffers })
    }

    /// One forward and backward pass of `module`: `loss` runs on its compute copy (and casts
    /// its inputs to the dtype it is given); the loss, taken in f32, is divided by `parts`
    /// (micro-batches x ranks, as their gradients are summed). The loss value and the f32
    /// gradients of `module`'s parameters.
    pub fn step<M: Module>(&self, module: &M, parts: usize, loss: impl FnOnce(&M, FloatDType) -> Tensor<1>) -> (f32, GradientsParams) {
        let loss = loss(&self.compute_copy(module), self.dtype).cast(DType::F32).div_scalar(parts as f64);
        let value = loss.clone().into_scalar::<f32>() * parts as f32;
        (value, GradientsParams::from_grads(loss.backward(), module))
    }
}

//! burn-flex tensors into and out of the kernels' f32 slices, shared by the op files.

use burn::prelude::*;
use burn_flex::FlexTensor;

/// Rows handed to one rayon task: enough work to pay for the task, few enough to balance.
pub(super) const ROWS_PER_TASK: usize = 64;

/// A contiguous f32 copy (or the tensor itself when it already is one) and its row length.
pub(super) fn rows_of(t: &FlexTensor) -> (FlexTensor, usize) {
    let t = t.to_contiguous();
    let n = *t.layout().shape().last().expect("a tensor with at least one axis");
    (t, n)
}

/// `values` as an f32 tensor of `like`'s shape.
pub(super) fn f32_tensor(values: Vec<f32>, like: &FlexTensor) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, like.layout().shape().clone()))
}

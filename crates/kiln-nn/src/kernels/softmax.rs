//! Softmax over the last axis as one autodiff node. burn's autodiff has no rule for it and
//! records its decomposition (max, subtract, exp, sum, divide), each op keeping its operands for
//! the backward pass; here the forward is burn-flex's own fused kernel and the backward one pass
//! over rows that keeps only the output.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::dot;
use super::tensor::{ROWS_PER_TASK, f32_tensor, rows_of};

/// burn-flex's fused softmax over the last axis.
pub(super) fn flex(x: FlexTensor) -> FlexTensor {
    let last = x.layout().num_dims() - 1;
    burn_flex::ops::activation::softmax(x, last)
}

/// [`flex`] as one autodiff node whose backward pass is [`SoftmaxLastBackward`].
pub(super) fn autodiff<C: CheckpointStrategy>(x: FloatTensor<Autodiff<Flex, C>>) -> FloatTensor<Autodiff<Flex, C>> {
    match SoftmaxLastBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let y = flex(x.into_primitive());
            prep.finish(y.clone(), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex(x.into_primitive())),
    }
}

/// Keeps the softmax's output `y`: `∂x = y ⊙ (∂y − Σ ∂y ⊙ y)` per row.
#[derive(Debug)]
struct SoftmaxLastBackward;

impl Backward<Flex, 1> for SoftmaxLastBackward {
    type State = FlexTensor;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        if let Some(node) = x_node {
            grads.register::<Flex>(node.id, softmax_last_backward(&ops.state, &grad));
        }
    }
}

fn softmax_last_backward(y: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
    let ((y, n), (grad, _)) = (rows_of(y), rows_of(grad));
    let (ys, gs) = (y.storage::<f32>(), grad.storage::<f32>());
    let mut dx = vec![0.0f32; ys.len()];
    let chunk = ROWS_PER_TASK * n;
    dx.par_chunks_mut(chunk).zip(ys.par_chunks(chunk)).zip(gs.par_chunks(chunk)).for_each(|((dx, ys), gs)| {
        for ((dx, y), g) in dx.chunks_exact_mut(n).zip(ys.chunks_exact(n)).zip(gs.chunks_exact(n)) {
            let dot = dot(y, g);
            for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *d = y * (g - dot);
            }
        }
    });
    f32_tensor(dx, &y)
}

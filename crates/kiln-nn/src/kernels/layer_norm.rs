//! Layer normalisation over the last axis as one autodiff node. burn's autodiff records its
//! decomposition, nine element-wise and reduction ops each keeping its operands for the backward
//! pass, and there is a layer norm before every attention and MLP; here the forward is
//! burn-flex's own fused kernel and the backward one pass over rows.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{add_partials, dot, sum};
use super::tensor::{ROWS_PER_TASK, f32_tensor, rows_of};

/// burn-flex's fused layer norm with scale and shift.
pub(super) fn flex(x: FlexTensor, gamma: FlexTensor, beta: FlexTensor, epsilon: f64) -> FlexTensor {
    burn_flex::ops::activation::layer_norm(x, gamma, Some(beta), epsilon)
}

/// [`flex`] as one autodiff node whose backward pass is [`LayerNormBackward`].
pub(super) fn autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    gamma: FloatTensor<Autodiff<Flex, C>>,
    beta: FloatTensor<Autodiff<Flex, C>>,
    epsilon: f64,
) -> FloatTensor<Autodiff<Flex, C>> {
    match LayerNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (x, gamma) = (x.into_primitive(), gamma.into_primitive());
            let y = flex(x.clone(), gamma.clone(), beta.into_primitive(), epsilon);
            prep.finish((x, gamma, epsilon), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex(
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
            epsilon,
        )),
    }
}

/// Keeps the input and `γ` (the row statistics are cheaper to recompute than to store).
#[derive(Debug)]
struct LayerNormBackward;

impl Backward<Flex, 3> for LayerNormBackward {
    type State = (FlexTensor, FlexTensor, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, gamma_node, beta_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node);
        let (x, gamma, epsilon) = ops.state;
        let (dx, dgamma, dbeta) = layer_norm_backward(&x, &gamma, &grad, epsilon);
        for (node, g) in [(x_node, dx), (gamma_node, dgamma), (beta_node, dbeta)] {
            if let Some(node) = node {
                grads.register::<Flex>(node.id, g);
            }
        }
    }
}

/// With `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` and `ĝ = ∂y ⊙ γ` per row:
/// `∂x = r·(ĝ − mean(ĝ) − x̂·mean(ĝ ⊙ x̂))`, `∂γ = Σ_rows ∂y ⊙ x̂`, `∂β = Σ_rows ∂y`.
fn layer_norm_backward(x: &FlexTensor, gamma: &FlexTensor, grad: &FlexTensor, epsilon: f64) -> (FlexTensor, FlexTensor, FlexTensor) {
    let ((x, n), (gamma, _), (grad, _)) = (rows_of(x), rows_of(gamma), rows_of(grad));
    let (xs, gammas, gs) = (x.storage::<f32>(), gamma.storage::<f32>(), grad.storage::<f32>());
    let mut dx = vec![0.0f32; xs.len()];
    let chunk = ROWS_PER_TASK * n;
    // Each task sums ∂γ and ∂β over its own rows ([∂γ | ∂β], 2n values); the partial sums add up.
    let sums = dx
        .par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk))
        .zip(gs.par_chunks(chunk))
        .map(|((dx, xs), gs)| {
            let mut sums = vec![0.0f32; 2 * n];
            let (dgamma, dbeta) = sums.split_at_mut(n);
            let (mut gg, mut xhat) = (vec![0.0f32; n], vec![0.0f32; n]);
            // the row sums go through `sum`/`dot` (partial sums), so every loop here vectorises
            for ((dx, x), g) in dx.chunks_exact_mut(n).zip(xs.chunks_exact(n)).zip(gs.chunks_exact(n)) {
                let mean = sum(x) / n as f32;
                xhat.iter_mut().zip(x).for_each(|(c, &v)| *c = v - mean);
                let rstd = 1.0 / (dot(&xhat, &xhat) / n as f32 + epsilon as f32).sqrt();
                for i in 0..n {
                    gg[i] = g[i] * gammas[i];
                    xhat[i] *= rstd;
                    dgamma[i] += g[i] * xhat[i];
                    dbeta[i] += g[i];
                }
                let (mean_gg, mean_gg_xhat) = (sum(&gg) / n as f32, dot(&gg, &xhat) / n as f32);
                for i in 0..n {
                    dx[i] = rstd * (gg[i] - mean_gg - xhat[i] * mean_gg_xhat);
                }
            }
            sums
        })
        .reduce(|| vec![0.0f32; 2 * n], add_partials);
    let (dgamma, dbeta) = sums.split_at(n);
    (f32_tensor(dx, &x), f32_tensor(dgamma.to_vec(), &gamma), f32_tensor(dbeta.to_vec(), &gamma))
}

//! Matrix products through the BLAS ([`super::blas`]) on burn-flex tensors: a batched product and
//! `x·W + b` as one autodiff node each, whose backward passes are two more products. Operands are
//! read in place where BLAS can (row-major or transposed), so transposes stay views.

use burn::backend::Flex;
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::prelude::*;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::blas;
use super::simd::add_partials;
use super::tensor::{ROWS_PER_TASK, f32_tensor};

/// The batched product `lhs·rhs`, a batch of 1 on either side shared by every entry.
pub(super) fn matmul_flex(lhs: FlexTensor, rhs: FlexTensor) -> FlexTensor {
    let (lhs, rhs) = (blas_readable(lhs), blas_readable(rhs));
    let batch = batch_of(&lhs).max(batch_of(&rhs));
    let (m, n) = (lhs.layout().shape()[1], rhs.layout().shape()[2]);
    let out = blas::batched_matmul(lhs.storage(), matrix_view(&lhs), rhs.storage(), matrix_view(&rhs), batch, false, None);
    FlexTensor::from_data(TensorData::new(out, [batch, m, n]))
}

/// [`matmul_flex`] as one autodiff node whose backward pass is [`MatmulBackward`].
pub(super) fn matmul_autodiff<C: CheckpointStrategy>(
    lhs: FloatTensor<Autodiff<Flex, C>>,
    rhs: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    match MatmulBackward.prepare::<C>([lhs.node(), rhs.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (lhs, rhs) = (blas_readable(lhs.into_primitive()), blas_readable(rhs.into_primitive()));
            let out = matmul_flex(lhs.clone(), rhs.clone());
            prep.finish((lhs, rhs), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(matmul_flex(lhs.into_primitive(), rhs.into_primitive())),
    }
}

/// `x·weight + bias` for `[rows, d_input]` rows, the bias written before the product.
pub(super) fn linear_flex(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
    let (x, weight, bias) = (blas_readable(x), blas_readable(weight), bias.to_contiguous());
    let (rows, d_output) = (x.layout().shape()[0], weight.layout().shape()[1]);
    let out = blas::batched_matmul(x.storage(), matrix_view(&x), weight.storage(), matrix_view(&weight), 1, false, Some(bias.storage()));
    FlexTensor::from_data(TensorData::new(out, [rows, d_output]))
}

/// [`linear_flex`] as one autodiff node whose backward pass is [`LinearBackward`].
pub(super) fn linear_autodiff<C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<Flex, C>>,
    weight: FloatTensor<Autodiff<Flex, C>>,
    bias: FloatTensor<Autodiff<Flex, C>>,
) -> FloatTensor<Autodiff<Flex, C>> {
    match LinearBackward.prepare::<C>([x.node(), weight.node(), bias.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (x, weight) = (blas_readable(x.into_primitive()), blas_readable(weight.into_primitive()));
            let out = linear_flex(x.clone(), weight.clone(), bias.into_primitive());
            prep.finish((x, weight), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(linear_flex(x.into_primitive(), weight.into_primitive(), bias.into_primitive())),
    }
}

/// A `[batch, rows, cols]` (or `[rows, cols]`) tensor as BLAS sees it: a batch of 1 has batch
/// stride 0 (shared).
fn matrix_view(x: &FlexTensor) -> blas::MatrixView {
    let (dims, strides) = (x.layout().shape(), x.layout().strides());
    let r = dims.num_dims() - 2;
    let stride = |i: usize| usize::try_from(strides[i]).unwrap_or(0);
    blas::MatrixView {
        offset: x.layout().start_offset(),
        rows: dims[r],
        cols: dims[r + 1],
        row_stride: stride(r),
        col_stride: stride(r + 1),
        batch_stride: if batch_of(x) == 1 { 0 } else { stride(0) },
    }
}

/// The batch of a `[batch, rows, cols]` tensor; 1 for a matrix.
fn batch_of(x: &FlexTensor) -> usize {
    let dims = x.layout().shape();
    if dims.num_dims() == 3 { dims[0] } else { 1 }
}

/// `x` itself when BLAS reads its matrices in place (row-major or transposed, non-negative
/// strides), a contiguous copy otherwise.
fn blas_readable(x: FlexTensor) -> FlexTensor {
    let strides_ok = x.layout().strides().iter().all(|&s| s >= 0);
    if strides_ok && matrix_view(&x).is_blas_readable() { x } else { x.to_contiguous() }
}

/// Keeps both operands: `∂lhs = ∂out·rhsᵀ`, `∂rhs = lhsᵀ·∂out`, each summed over the batch where
/// that operand was shared. Transposes are views: BLAS reads them in place.
#[derive(Debug)]
struct MatmulBackward;

impl Backward<Flex, 2> for MatmulBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [lhs_node, rhs_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (lhs, rhs) = ops.state;
        register_product_grads(&lhs, &rhs, &grad, [lhs_node, rhs_node].map(|n| n.map(|n| n.id)), grads);
    }
}

/// [`MatmulBackward`] plus the bias: `∂bias = Σ_rows ∂out`.
#[derive(Debug)]
struct LinearBackward;

impl Backward<Flex, 3> for LinearBackward {
    type State = (FlexTensor, FlexTensor);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, weight) = ops.state;
        register_product_grads(&x, &weight, &grad, [x_node, weight_node].map(|n| n.map(|n| n.id)), grads);
        if let Some(node) = bias_node {
            let d_output = grad.layout().shape()[1];
            grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(column_sums(grad.storage(), d_output), [d_output])));
        }
    }
}

/// `∂lhs = ∂out·rhsᵀ` and `∂rhs = lhsᵀ·∂out` for the operands that want one.
fn register_product_grads(lhs: &FlexTensor, rhs: &FlexTensor, grad: &FlexTensor, nodes: [Option<NodeId>; 2], grads: &mut Gradients) {
    let batch = batch_of(grad);
    let grad_view = matrix_view(grad);
    let [lhs_node, rhs_node] = nodes;
    if let Some(id) = lhs_node {
        let shared = batch_of(lhs) == 1 && batch > 1;
        let d = blas::batched_matmul(grad.storage(), grad_view, rhs.storage(), matrix_view(rhs).t(), batch, shared, None);
        grads.register::<Flex>(id, f32_tensor(d, lhs));
    }
    if let Some(id) = rhs_node {
        let shared = batch_of(rhs) == 1 && batch > 1;
        let d = blas::batched_matmul(lhs.storage(), matrix_view(lhs).t(), grad.storage(), grad_view, batch, shared, None);
        grads.register::<Flex>(id, f32_tensor(d, rhs));
    }
}

/// Sums of the columns of a row-major matrix with `cols` columns, over row blocks in parallel.
fn column_sums(values: &[f32], cols: usize) -> Vec<f32> {
    let block_sums = values.par_chunks(ROWS_PER_TASK * cols).map(|block| {
        block.chunks_exact(cols).fold(vec![0.0f32; cols], |mut sums, row| {
            sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
            sums
        })
    });
    block_sums.reduce(|| vec![0.0f32; cols], add_partials)
}

//! GELU, exact (`x·Φ(x)`, erf) or timm's tanh approximation, as one autodiff node that keeps
//! only its input; the erf and exp inside are Kiln's vectorisable forms.

use burn::backend::Flex;
use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn_flex::FlexTensor;
use rayon::prelude::*;

use super::simd::{SimdKernel, erf, exp, sigmoid, widest_simd};
use super::tensor::f32_tensor;

/// GELU of every element, in parallel and at the widest vector width.
pub(super) fn flex(x: FlexTensor, approximate: bool) -> FlexTensor {
    let x = x.to_contiguous();
    let values = if approximate {
        elementwise(x.storage(), |x| x * gelu_tanh_gate(x).0)
    } else {
        elementwise(x.storage(), |x| x * normal_cdf(x))
    };
    f32_tensor(values, &x)
}

/// [`flex`] as one autodiff node whose backward pass is [`GeluBackward`].
pub(super) fn autodiff<C: CheckpointStrategy>(x: FloatTensor<Autodiff<Flex, C>>, approximate: bool) -> FloatTensor<Autodiff<Flex, C>> {
    match GeluBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            // kept contiguous, so the backward pass reads it as it is
            let x = x.into_primitive().to_contiguous();
            let y = flex(x.clone(), approximate);
            prep.finish((x, approximate), y)
        }
        OpsKind::UnTracked(prep) => prep.finish(flex(x.into_primitive(), approximate)),
    }
}

/// Keeps the input: `∂x = ∂y·gelu'(x)`.
#[derive(Debug)]
struct GeluBackward;

impl Backward<Flex, 1> for GeluBackward {
    type State = (FlexTensor, bool);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let grad = grads.consume::<Flex>(&ops.node).to_contiguous();
        let (x, approximate) = ops.state;
        let Some(node) = x_node else { return };
        // one loop per form: a branch inside the element loop keeps it from vectorising
        let dx = if approximate {
            // x·σ(2z): σ + x·σ(1 − σ)·2z'
            zip_elementwise(x.storage(), grad.storage(), |x, g| {
                let (gate, dz) = gelu_tanh_gate(x);
                g * (gate + x * gate * (1.0 - gate) * dz)
            })
        } else {
            // x·Φ(x): Φ + x·φ
            zip_elementwise(x.storage(), grad.storage(), |x, g| g * (normal_cdf(x) + x * FRAC_1_SQRT_2PI * exp(-0.5 * x * x)))
        };
        grads.register::<Flex>(node.id, f32_tensor(dx, &x));
    }
}

/// `1/√(2π)`.
const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;

/// `Φ(x) = (1 + erf(x/√2))/2`.
#[inline(always)]
fn normal_cdf(x: f32) -> f32 {
    0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// timm's `gelu_tanh` is `x·σ(2z)`, `z = √(2/π)·(x + 0.044715·x³)`: returns `σ(2z)` and `2z'`.
#[inline(always)]
fn gelu_tanh_gate(x: f32) -> (f32, f32) {
    const TWO_SQRT_2_OVER_PI: f32 = 1.595_769;
    const C: f32 = 0.044_715;
    let x2 = x * x;
    (sigmoid(TWO_SQRT_2_OVER_PI * x * (1.0 + C * x2)), TWO_SQRT_2_OVER_PI * (1.0 + 3.0 * C * x2))
}

/// Elements handed to one rayon task.
const ELEMENTS_PER_TASK: usize = 1 << 14;

/// `f` of every element, in parallel.
fn elementwise(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; x.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK).zip(x.par_chunks(ELEMENTS_PER_TASK)).for_each(|(out, x)| {
        widest_simd(Map { out, x, f: &f });
    });
    out
}

/// `out = f(x)` per element, compiled per instruction set.
struct Map<'a, F> {
    out: &'a mut [f32],
    x: &'a [f32],
    f: &'a F,
}

impl<F: Fn(f32) -> f32> SimdKernel for Map<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        // a `for` loop, not `for_each(closure)`: the closure could be left out of line
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            *o = (self.f)(x);
        }
    }
}

/// `out = f(a, b)` per element, compiled per instruction set.
struct ZipMap<'a, F> {
    out: &'a mut [f32],
    a: &'a [f32],
    b: &'a [f32],
    f: &'a F,
}

impl<F: Fn(f32, f32) -> f32> SimdKernel for ZipMap<'_, F> {
    type Output = ();

    #[inline(always)]
    fn run(self) {
        for ((o, &a), &b) in self.out.iter_mut().zip(self.a).zip(self.b) {
            *o = (self.f)(a, b);
        }
    }
}

/// `f` of every pair of elements, in parallel.
fn zip_elementwise(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    out.par_chunks_mut(ELEMENTS_PER_TASK).zip(a.par_chunks(ELEMENTS_PER_TASK)).zip(b.par_chunks(ELEMENTS_PER_TASK)).for_each(|((out, a), b)| {
        widest_simd(ZipMap { out, a, b, f: &f });
    });
    out
}

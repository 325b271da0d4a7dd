//! Data-parallel training: the ranks of a run and what they exchange. Every rank holds the
//! same model, takes its [`Shard`](kiln_data::Shard) of every batch, and before each optimiser
//! step the gradients are averaged ([`GradientSync`]); evaluations sum their counts over the
//! ranks. A [`Collective`] is that exchange: [`SingleProcess`] (nothing to exchange), MPI across
//! processes and machines (`crate::mpi`, feature `mpi`), or burn's collectives across the GPUs
//! of one process ([`Devices`], feature `cuda`); `crate::launcher` picks.

use std::sync::{Arc, Barrier, Mutex};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::prelude::*;

/// How the ranks of a run reach each other.
pub trait Collective {
    /// This rank, from 0.
    fn rank(&self) -> usize;
    /// Ranks in all.
    fn world(&self) -> usize;
    /// Sums `values` element-wise over the ranks, in place: every rank ends with the totals.
    fn sum_f32(&self, values: &mut [f32]);
    /// As [`sum_f32`](Self::sum_f32), in double precision (counts, loss sums).
    fn sum_f64(&self, values: &mut [f64]);
    /// The devices of an in-process group whose gradients burn's collectives average on the
    /// devices themselves; `None` where gradients travel through host memory.
    fn devices(&self) -> Option<&[Device]> {
        None
    }
    /// Ends every rank of the job after an error on this one, which `message` describes.
    fn abort(&self, message: &str) -> !;
}

/// One process: nothing to exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) {}
    fn sum_f64(&self, _: &mut [f64]) {}
    fn abort(&self, message: &str) -> ! {
        eprintln!("error: {message}");
        std::process::exit(1)
    }
}

/// Sums the gradients of one optimiser step over the ranks, and clips them by their global norm
/// (timm's `clip_grad_norm_`). Each rank's loss is divided by the number of ranks, so the sum
/// is the average of the ranks' gradients with no pass to scale it. On the host path each
/// gradient is read out of its tensor once (burn-flex hands its buffer over) and summed in
/// place, the small ones packed into one buffer.
pub(crate) struct GradientSync {
    /// The small gradients, packed.
    flat: Vec<f32>,
    clip: Option<f64>,
}

impl GradientSync {
    /// Clipping to `clip` (a maximum global L2 norm), if set.
    pub(crate) fn new(clip: Option<f64>) -> Self {
        Self { flat: Vec::new(), clip }
    }

    /// The summed (and clipped) gradients of `module`'s parameters.
    pub(crate) fn sync<M: Module>(&mut self, module: &M, grads: GradientsParams, collective: &dyn Collective) -> GradientsParams {
        let world = collective.world();
        if world == 1 && self.clip.is_none() {
            return grads;
        }
        if let Some(devices) = collective.devices() {
            return average_on_devices(module, grads, devices, self.clip);
        }
        // the visit order is the module's, the same on every rank, so the exchanges line up:
        // large gradients are summed where they lie, the small ones packed into one buffer
        // (kept between steps) so that they cost one exchange rather than hundreds
        let mut gather = Gather { grads, taken: Vec::new() };
        module.visit(&mut gather);
        let Gather { mut grads, mut taken } = gather;
        let mut small = std::mem::take(&mut self.flat);
        small.clear();
        for (_, _, _, values) in &mut taken {
            if values.len() >= SUMMED_IN_PLACE {
                collective.sum_f32(values);
            } else {
                small.extend_from_slice(values);
            }
        }
        collective.sum_f32(&mut small);
        let mut offset = 0;
        for (_, _, _, values) in taken.iter_mut().filter(|t| t.3.len() < SUMMED_IN_PLACE) {
            let len = values.len();
            values.copy_from_slice(&small[offset..offset + len]);
            offset += len;
        }
        self.flat = small;
        let mut scale = 1.0;
        if let Some(max_norm) = self.clip {
            let squares: f64 = taken.iter().flat_map(|t| &t.3).map(|&g| (g as f64) * (g as f64)).sum();
            scale = clip_factor(squares.sqrt(), max_norm);
        }
        for (id, shape, device, mut values) in taken {
            if scale != 1.0 {
                values.iter_mut().for_each(|g| *g = (*g as f64 * scale) as f32);
            }
            register(&mut grads, id, TensorData::new(values, shape), &device);
        }
        grads
    }
}

/// Gradients of at least this many floats (256 KB) are summed in their own buffer.
const SUMMED_IN_PLACE: usize = 1 << 16;

/// PyTorch's `clip_grad_norm_` factor: `max_norm / (norm + 1e-6)`, at most 1.
fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    (max_norm / (norm + 1e-6)).min(1.0)
}

/// Takes each parameter's gradient out of `grads` as host values, remembering where it goes.
struct Gather {
    grads: GradientsParams,
    taken: Vec<(ParamId, Vec<usize>, Device, Vec<f32>)>,
}

impl ModuleVisitor for Gather {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let device = grad.device();
            let data = grad.into_data();
            let shape = data.shape().to_vec();
            self.taken.push((param.id, shape, device, data.try_into_vec::<f32>().expect("f32 gradients")));
        }
    }
}

/// Puts a gradient of the rank its data has back into `grads`.
fn register(grads: &mut GradientsParams, id: ParamId, data: TensorData, device: &Device) {
    macro_rules! put {
        ($($d:literal)*) => {
            match data.shape().len() {
                $($d => grads.register::<$d>(id, Tensor::<$d>::from_data(data, device)),)*
                rank => panic!("a gradient of rank {rank}"),
            }
        };
    }
    put!(1 2 3 4 5 6)
}

/// The in-process path: burn's all-reduce (NCCL on CUDA) averages each gradient on the devices.
fn average_on_devices<M: Module>(module: &M, grads: GradientsParams, devices: &[Device], clip: Option<f64>) -> GradientsParams {
    struct Average<'a> {
        grads: GradientsParams,
        devices: &'a [Device],
        /// Each gradient's squared norm, for clipping only (reading it waits on the device).
        squares: Option<Vec<f64>>,
    }
    impl ModuleVisitor for Average<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                // each rank's loss was divided by the number of ranks: the sum is the mean
                let mean = burn::tensor::distributed::all_reduce(grad, burn::tensor::distributed::ReduceOperation::Sum, self.devices.to_vec()).resolve();
                if let Some(squares) = &mut self.squares {
                    squares.push(mean.clone().square().sum().into_scalar::<f32>() as f64);
                }
                self.grads.register::<D>(param.id, mean);
            }
        }
    }
    let mut average = Average { grads, devices, squares: clip.map(|_| Vec::new()) };
    module.visit(&mut average);
    let Average { grads, squares, .. } = average;
    let (Some(max_norm), Some(squares)) = (clip, squares) else { return grads };
    let factor = clip_factor(squares.iter().sum::<f64>().sqrt(), max_norm);
    if factor >= 1.0 {
        return grads;
    }
    struct Scale {
        grads: GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(grad) = self.grads.remove::<D>(param.id) {
                self.grads.register::<D>(param.id, grad.mul_scalar(self.factor));
            }
        }
    }
    let mut scale = Scale { grads, factor };
    module.visit(&mut scale);
    scale.grads
}

/// Averages the buffers `ids` (BatchNorm's running statistics, which each rank gathers from its
/// own batches) over the ranks, as timm's default `--dist-bn reduce` does before it evaluates.
pub(crate) fn average_buffers<M: Module>(module: M, ids: &[ParamId], collective: &dyn Collective) -> M {
    struct Average<'a> {
        ids: &'a [ParamId],
        collective: &'a dyn Collective,
    }
    impl ModuleMapper for Average<'_> {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !self.ids.contains(&param.id) {
                return param;
            }
            let world = self.collective.world() as f32;
            param.map(|tensor| {
                let device = tensor.device();
                let data = tensor.into_data();
                let shape = data.shape().clone();
                let mut values = data.try_into_vec::<f32>().expect("f32 buffers");
                self.collective.sum_f32(&mut values);
                values.iter_mut().for_each(|v| *v /= world);
                Tensor::from_data(TensorData::new(values, shape), &device)
            })
        }
    }
    if collective.world() == 1 || ids.is_empty() {
        return module;
    }
    module.map(&mut Average { ids, collective })
}

/// The threads of one process that each drive one device, joined as ranks: sums meet in shared
/// memory, gradients in burn's collectives ([`Collective::devices`]).
pub struct Devices {
    rank: usize,
    devices: Vec<Device>,
    meeting: Arc<Meeting>,
}

/// Where the threads of [`Devices`] add up their values: each rank leaves its own in its slot,
/// and every rank adds the slots in rank order, so a sum has the same bits whichever thread
/// arrives first.
struct Meeting {
    barrier: Barrier,
    slots: Mutex<Vec<Vec<f64>>>,
}

impl Devices {
    /// One member per device, ranks in the order given.
    pub fn group(devices: &[Device]) -> Vec<Devices> {
        let meeting = Arc::new(Meeting { barrier: Barrier::new(devices.len()), slots: Mutex::new(vec![Vec::new(); devices.len()]) });
        (0..devices.len()).map(|rank| Devices { rank, devices: devices.to_vec(), meeting: meeting.clone() }).collect()
    }
}

impl Collective for Devices {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world(&self) -> usize {
        self.devices.len()
    }
    fn sum_f32(&self, values: &mut [f32]) {
        let mut wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        self.sum_f64(&mut wide);
        values.iter_mut().zip(wide).for_each(|(v, w)| *v = w as f32);
    }
    fn sum_f64(&self, values: &mut [f64]) {
        let meeting = &self.meeting;
        let slots = || meeting.slots.lock().expect("no rank panicked while holding the slots");
        slots()[self.rank] = values.to_vec();
        meeting.barrier.wait();
        {
            let slots = slots();
            values.fill(0.0);
            for slot in slots.iter() {
                values.iter_mut().zip(slot).for_each(|(v, s)| *v += s);
            }
        }
        // every rank has read the slots before any rank refills its own for the next sum
        meeting.barrier.wait();
    }
    fn devices(&self) -> Option<&[Device]> {
        Some(&self.devices)
    }
    fn abort(&self, message: &str) -> ! {
        eprintln!("error on rank {} ({:?}): {message}; stopping every device", self.rank, self.devices[self.rank]);
        std::process::exit(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three threads meeting as [`Devices`] ranks add up what each brings, every time.
    #[test]
    fn device_ranks_sum_in_shared_memory() {
        let devices = vec![Device::flex(); 3];
        let group = Devices::group(&devices);
        std::thread::scope(|s| {
            for member in &group {
                s.spawn(move || {
                    for round in 0..4 {
                        let mut values = vec![member.rank() as f64, round as f64];
                        member.sum_f64(&mut values);
                        assert_eq!(values, [3.0, 3.0 * round as f64]);
                        // not associative in floats: (1 + 1e16) − 1e16 = 0 but 1 + (1e16 − 1e16) = 1;
                        // rank order gives the first, though the threads arrive in reverse
                        let mut uneven = [[1.0, 1e16, -1e16][member.rank()]];
                        std::thread::sleep(std::time::Duration::from_millis(3 * (2 - member.rank()) as u64));
                        member.sum_f64(&mut uneven);
                        assert_eq!(uneven, [0.0]);
                    }
                });
            }
        });
    }

    /// A second rank that brings fixed gradients: the sum adds them.
    struct OtherRank(Vec<f32>);

    impl Collective for OtherRank {
        fn rank(&self) -> usize {
            0
        }
        fn world(&self) -> usize {
            2
        }
        fn sum_f32(&self, values: &mut [f32]) {
            values.iter_mut().zip(&self.0).for_each(|(v, o)| *v += o);
        }
        fn sum_f64(&self, _: &mut [f64]) {}
        fn abort(&self, message: &str) -> ! {
            panic!("{message}")
        }
    }

    /// The gradient after the exchange is the sum of the ranks', each tensor in its place
    /// (the packed buffer follows the module's parameter order: weight, then bias).
    #[test]
    fn gradients_are_summed_over_the_ranks() {
        let device = Device::flex().autodiff();
        let linear = burn::nn::LinearConfig::new(2, 1).init(&device);
        let x = Tensor::<2>::from_data([[3.0, 4.0]], &device);
        let grads = GradientsParams::from_grads(linear.forward(x).sum().backward(), &linear);
        // this rank: d/dw = (3, 4), d/db = 1; the other: (1, 2) and 7
        let synced = GradientSync::new(None).sync(&linear, grads, &OtherRank(vec![1.0, 2.0, 7.0]));
        let w = synced.get::<2>(linear.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        let b = synced.get::<1>(linear.bias.as_ref().unwrap().id).unwrap().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!((w, b), (vec![4.0, 6.0], vec![8.0]));
    }

    /// Clipping scales a gradient whose norm is over the bound down to the bound, and leaves
    /// one under it.
    #[test]
    fn clipping_by_the_global_norm() {
        let device = Device::flex().autodiff();
        let linear = burn::nn::LinearConfig::new(2, 1).init(&device);
        let x = Tensor::<2>::from_data([[3.0, 4.0]], &device);
        let grads = |m: &burn::nn::Linear| GradientsParams::from_grads(m.forward(x.clone()).sum().backward(), m);
        // d/dw = x = (3, 4), d/db = 1: global norm sqrt(26)
        for (max_norm, expected) in [(1.0, 1.0 / 26f64.sqrt()), (100.0, 1.0)] {
            let synced = GradientSync::new(Some(max_norm)).sync(&linear, grads(&linear), &SingleProcess);
            let w = synced.get::<2>(linear.weight.id).unwrap().into_data().try_into_vec::<f32>().unwrap();
            assert!((w[0] as f64 - 3.0 * expected).abs() < 1e-5 && (w[1] as f64 - 4.0 * expected).abs() < 1e-5, "{w:?}");
        }
    }
}

//! `kiln train`: the experiment's task and network, handed to the shared loop, on one process,
//! on every rank an MPI launcher started (feature `mpi`), or on every GPU of `train.devices`.

use burn::module::Module;
use burn::prelude::Device;
use kiln_data::Shard;

use crate::config::ResolvedConfig;
use crate::config::schema::Task as TaskName;
use crate::device::device;
use crate::distributed::{Collective, Devices};
use crate::launcher;
use crate::network::Network;
use crate::tasks::classify::Classification;
use crate::tasks::segment::Segmentation;
pub use crate::error::TrainError;
pub use crate::train_loop::{TrainOptions, TrainSummary};

/// Trains the experiment `cfg` into its run directory. Under `mpirun`/`srun` this process is one
/// rank of the job; an error on any rank ends every rank, naming it.
pub fn train(cfg: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    if !cfg.experiment.train.devices.is_empty() {
        return train_on_devices(cfg, opts);
    }
    let collective = launcher::from_launcher()?;
    let cfg = for_ranks(cfg, collective.world());
    let result = train_rank(&cfg, opts, device(&cfg.experiment.train.device)?, collective.as_ref());
    match result {
        Err(e) if collective.world() > 1 => collective.abort(&e.to_string()),
        result => result,
    }
}

/// `train.devices`: one thread per GPU, each a rank, gradients averaged by burn's collectives.
fn train_on_devices(cfg: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let devices = cfg.experiment.train.devices.iter().map(|name| device(name)).collect::<Result<Vec<Device>, _>>()?;
    let cfg = for_ranks(cfg, devices.len());
    let _context = burn::tensor::distributed::DistributedContext::init(
        devices.clone(),
        burn::tensor::distributed::DistributedConfig { all_reduce_op: burn::tensor::distributed::ReduceOperation::Sum },
    );
    let group = Devices::group(&devices);
    std::thread::scope(|scope| {
        let ranks: Vec<_> = group
            .iter()
            .zip(&devices)
            .map(|(member, device)| {
                let cfg = &cfg;
                scope.spawn(move || match train_rank(cfg, opts, device.clone(), member) {
                    Err(e) => member.abort(&e.to_string()),
                    ok => ok,
                })
            })
            .collect();
        let mut results = ranks.into_iter().map(|rank| rank.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)));
        results.next().expect("at least one device")
    })
}

/// The experiment as `ranks` ranks train it: timm's learning-rate rule, where the experiment
/// leaves the rate to it, counts every rank's batch.
fn for_ranks(cfg: &ResolvedConfig, ranks: usize) -> ResolvedConfig {
    let mut cfg = cfg.clone();
    if ranks > 1 && cfg.origin("optim.lr").is_none() {
        cfg.experiment.optim.lr = Some(crate::config::timm_lr(&cfg.experiment, ranks));
    }
    cfg
}

/// This rank's part of the run: its shard of the data, the same model as every rank. The model
/// is drawn on the CPU from the seed and moved, so every device (and every rank) starts from the
/// same weights, as `torch.manual_seed` gives whatever the device.
fn train_rank(cfg: &ResolvedConfig, opts: &TrainOptions, device: Device, collective: &dyn Collective) -> Result<TrainSummary, TrainError> {
    if collective.rank() == 0 {
        cfg.write_to_run_dir(cfg.output_dir())?;
    }
    let seed = cfg.experiment.train.seed;
    let device = device.autodiff();
    let init = Device::flex().autodiff();
    init.seed(seed);
    if device != init {
        device.seed(seed);
    }
    let shard = Shard { index: collective.rank(), count: collective.world() };
    let quiet = opts.quiet || collective.rank() != 0;
    match cfg.experiment.task {
        TaskName::Classification => {
            let (task, net) = Classification::build(cfg, &init, shard, quiet)?;
            crate::train_loop::run(cfg, opts, &task, moved(net, &device), &device, collective)
        }
        TaskName::Segmentation => {
            let (task, net) = Segmentation::build(cfg, &init, shard, quiet)?;
            crate::train_loop::run(cfg, opts, &task, moved(net, &device), &device, collective)
        }
    }
}

/// `net` with its parameters on `device`, trainable there (burn's `fork`: `to_device` would
/// leave the moved parameters outside the new device's autodiff graph, with no gradients).
fn moved<N: Network>(mut net: N, device: &Device) -> N {
    if net.module().devices().first() != Some(device) {
        *net.module_mut() = net.module().clone().fork(device);
    }
    net
}

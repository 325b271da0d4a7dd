//! `kiln train`: the experiment's task and network, handed to the shared loop.

use crate::config::ResolvedConfig;
use crate::config::schema::Task as TaskName;
use crate::device::device;
use crate::tasks::classify::Classification;
use crate::tasks::segment::Segmentation;
pub use crate::error::TrainError;
pub use crate::train_loop::{TrainOptions, TrainSummary};

/// Trains the experiment `cfg` into its run directory.
pub fn train(cfg: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let run_dir = cfg.output_dir().to_path_buf();
    cfg.write_to_run_dir(&run_dir)?;
    let device = device(&cfg.experiment.train.device)?.autodiff();
    device.seed(cfg.experiment.train.seed);
    match cfg.experiment.task {
        TaskName::Classification => {
            let (task, net) = Classification::build(cfg, &device, opts.quiet)?;
            crate::train_loop::run(cfg, opts, &task, net, &device)
        }
        TaskName::Segmentation => {
            let (task, net) = Segmentation::build(cfg, &device, opts.quiet)?;
            crate::train_loop::run(cfg, opts, &task, net, &device)
        }
    }
}

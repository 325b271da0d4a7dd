//! Throughput of one model on one device: images/s of the trainer's training step (the
//! classification task's forward, loss and backward, then the experiment's optimiser with its
//! parameter groups) or of an inference forward, the spread of the step time, and the
//! peak resident memory while the timed steps ran. `kiln bench` prints it; the PyTorch
//! companion `scripts/bench_timm.py` measures the same thing for timm. Under `mpirun` (feature
//! `mpi`) every rank runs the step on its own batch and the gradients are averaged as in
//! training; the report then gives the whole job's images/s and the time of the exchange, beside
//! MPI's own all-reduce of as many floats.

use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_data::{Batch, LoaderPosition};
use kiln_models::{Backbone, LoadedModel, ModelConfig, ModelError};
use kiln_nn::autocast::autocast;
use serde::Serialize;

use crate::config::schema::{ExperimentConfig, Precision};
use crate::distributed::{Collective, GradientSync};
use crate::optim::{ParamPlan, optimizer};
use crate::precision;
use crate::tasks::classify::loss;

/// What one timed step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BenchMode {
    /// The trainer's step: forward, label-smoothed cross-entropy, backward, optimiser step.
    Train,
    /// Forward only, without autodiff.
    Infer,
    /// The experiment's training data loader alone: decoding, augmentation and batching.
    Data,
}

/// How to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Images per step.
    pub batch: usize,
    /// Untimed steps first (allocator and caches settle).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Training or inference.
    pub mode: BenchMode,
}

/// One measurement.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Registered model name.
    pub model: String,
    /// Training or inference.
    pub mode: BenchMode,
    /// Images per step.
    pub batch: usize,
    /// Input `[height, width]`.
    pub img_size: [usize; 2],
    /// Timed steps.
    pub steps: usize,
    /// `batch / median step time` (for the data loader: all timed images / all timed time).
    pub images_per_s: f64,
    /// Median step time.
    pub step_ms_median: f64,
    /// Fastest step.
    pub step_ms_min: f64,
    /// Slowest step.
    pub step_ms_max: f64,
    /// Peak resident set size of the process during the timed steps, in MiB (Linux only).
    pub peak_rss_mib: Option<f64>,
    /// Data-parallel ranks that ran the step (images/s counts all of them).
    pub ranks: usize,
    /// `train.precision` of the step (the data loader: f32).
    pub precision: Precision,
    /// What computed the matrix products on the CPU ([`kiln_nn::matrix_products`]).
    pub matrix_products: String,
    /// Training over several ranks: the median time of averaging the gradients (copies in and
    /// out included), and of MPI's own in-place all-reduce of as many floats, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync_ms_median: Option<f64>,
    /// See `sync_ms_median`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allreduce_ms_median: Option<f64>,
}

/// Times the training loader of `cfg` alone (decoding, augmentation, batching on its worker
/// threads, no model): `opts.steps` batches after `opts.warmup`, the batch size the
/// experiment's. A loader much faster than the training step never starves the model.
pub fn bench_loader(cfg: &crate::config::ResolvedConfig, opts: &BenchOptions) -> Result<BenchReport, crate::error::TrainError> {
    let data = crate::data::build(cfg, kiln_data::Shard::WHOLE)?;
    let mut batches = data.train.epoch(0);
    let mut times = Vec::with_capacity(opts.steps);
    let mut peak = None;
    let mut shape = [0; 4];
    for step in 0..opts.warmup + opts.steps {
        if step == opts.warmup {
            peak = PeakMemory::start();
        }
        let started = Instant::now();
        let Some(batch) = batches.next() else { break };
        shape = batch?.shape;
        if step >= opts.warmup {
            times.push(started.elapsed().as_secs_f64());
        }
    }
    if times.is_empty() {
        return Err(crate::error::TrainError::Data(kiln_data::DataError::InvalidData(format!(
            "the training data has fewer than {} batches to time; lower --warmup/--steps",
            opts.warmup + 1
        ))));
    }
    // the loader prefetches, so single batches can arrive at once: the rate is over all of them
    let total: f64 = times.iter().sum();
    let images = (shape[0] * times.len()) as f64;
    let mut report = report(cfg.experiment.model.name.clone(), opts, shape[0], [shape[2], shape[3]], times, peak);
    report.images_per_s = images / total;
    Ok(report)
}

/// The experiment `kiln bench --model NAME` times when no experiment file is given: AdamW with
/// weight decay 0.05 at lr 1e-4, timm's label smoothing 0.1, everything else the defaults.
pub fn default_experiment(name: &str) -> ExperimentConfig {
    let text = format!("[model]\nname = {name:?}\n[optim]\nname = \"adamw\"\nweight_decay = 0.05\nlr = 1e-4\n");
    toml::from_str(&text).expect("a valid experiment")
}

/// Builds `name` with `config` on `device` (random weights, random inputs) and times
/// `opts.steps` steps after `opts.warmup` untimed ones; a training step is the one the trainer
/// runs for `exp` (its loss, gradient averaging over the ranks of `collective`, optimiser and
/// parameter groups).
pub fn bench(
    name: &str,
    config: ModelConfig,
    exp: &ExperimentConfig,
    device: &Device,
    opts: &BenchOptions,
    collective: &dyn Collective,
) -> Result<BenchReport, ModelError> {
    let [height, width] = config.img_size();
    let shape = [opts.batch, config.in_chans(), height, width];
    let classes = config.num_classes();
    let mut times = Vec::with_capacity(opts.steps);
    let (mut sync_times, mut allreduce_times) = (Vec::new(), Vec::new());
    let mut peak = None;
    match opts.mode {
        BenchMode::Train => {
            let device = device.clone().autodiff();
            let mut net = LoadedModel::build(name, config, &device)?;
            let plan = ParamPlan::new(exp, &net);
            net.model = plan.freeze(net.model);
            let mut optim = optimizer(exp, &plan);
            let mut sync = GradientSync::new(exp.optim.clip_grad);
            let floats: usize = net.model.num_params();
            let mut raw = vec![0f32; if collective.world() > 1 { floats } else { 0 }];
            let lr = exp.optim.lr.unwrap_or(1e-4);
            let labels: Vec<usize> = (0..opts.batch).map(|i| i % classes).collect();
            for step in 0..opts.warmup + opts.steps {
                if step == opts.warmup {
                    peak = PeakMemory::start();
                }
                let images = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device).into_data().try_to_vec::<f32>().expect("f32 images");
                let batch = Batch {
                    images,
                    shape,
                    labels: labels.clone(),
                    soft_targets: None,
                    mix: None,
                    indices: (0..opts.batch).collect(),
                    position: LoaderPosition::default(),
                };
                let started = Instant::now();
                let (_, grads) = precision::step(exp.train.precision, &net.model, collective.world(), |model| loss(model, &batch, exp, classes, &device));
                device.sync().expect("device sync");
                // the ranks meet first, so the exchange is timed and not the wait for the slower rank
                collective.sum_f64(&mut [0.0]);
                let sync_started = Instant::now();
                let grads = sync.sync(&net.model, grads, collective);
                let sync_time = sync_started.elapsed().as_secs_f64();
                net.model = optim.step(plan.learning_rates(lr), net.model, grads);
                device.sync().expect("device sync");
                if step >= opts.warmup {
                    times.push(started.elapsed().as_secs_f64());
                    if collective.world() > 1 {
                        sync_times.push(sync_time);
                        for _ in 0..3 {
                            collective.sum_f64(&mut [0.0]);
                            let raw_started = Instant::now();
                            collective.sum_f32(&mut raw);
                            allreduce_times.push(raw_started.elapsed().as_secs_f64());
                        }
                    }
                }
            }
        }
        BenchMode::Data => return Err(ModelError::InvalidConfig("the data mode times a loader: use bench_loader".into())),
        BenchMode::Infer => {
            let model = LoadedModel::build(name, config, device)?.model;
            for step in 0..opts.warmup + opts.steps {
                if step == opts.warmup {
                    peak = PeakMemory::start();
                }
                let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
                let started = Instant::now();
                let logits = autocast(precision::product_dtype(exp.train.precision), || model.forward(x));
                device.sync().expect("device sync");
                drop(logits);
                if step >= opts.warmup {
                    times.push(started.elapsed().as_secs_f64());
                }
            }
        }
    }
    let mut report = report(name.to_string(), opts, opts.batch, [height, width], times, peak);
    report.ranks = collective.world();
    report.precision = exp.train.precision;
    report.images_per_s *= collective.world() as f64;
    report.sync_ms_median = median(sync_times).map(|s| 1e3 * s);
    report.allreduce_ms_median = median(allreduce_times).map(|s| 1e3 * s);
    Ok(report)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

fn report(model: String, opts: &BenchOptions, batch: usize, img_size: [usize; 2], mut times: Vec<f64>, peak: Option<PeakMemory>) -> BenchReport {
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    BenchReport {
        model,
        mode: opts.mode,
        batch,
        img_size,
        steps: times.len(),
        images_per_s: batch as f64 / median,
        step_ms_median: 1e3 * median,
        step_ms_min: 1e3 * times[0],
        step_ms_max: 1e3 * times[times.len() - 1],
        peak_rss_mib: peak.and_then(|p| p.read()),
        ranks: 1,
        precision: Precision::F32,
        matrix_products: kiln_nn::matrix_products(),
        sync_ms_median: None,
        allreduce_ms_median: None,
    }
}

/// The process's peak resident set size from a reset point on (Linux: `VmHWM` after writing 5
/// to `/proc/self/clear_refs`, which resets it to the current RSS).
struct PeakMemory;

impl PeakMemory {
    fn start() -> Option<Self> {
        std::fs::write("/proc/self/clear_refs", "5").ok().map(|_| PeakMemory)
    }

    fn read(&self) -> Option<f64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }
}

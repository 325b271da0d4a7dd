//! The training loop shared by every task. [`run`] reads top to bottom as one run: (resume),
//! then the steps of the task's [`Task::train_step`], and after each step the one evaluation and
//! checkpoint policy ([`due`]). The loop knows the [`Task`] trait and the [`Network`] it is
//! given, never a task: classification and segmentation sit above it in `crate::tasks`.

use std::path::PathBuf;
use std::time::Instant;

use burn::optim::{GradientsAccumulator, ModuleOptimizer};
use burn::prelude::*;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{DataError, EpochBatches, LoaderPosition};

use crate::checkpoint::{RunState, load_checkpoint, save_checkpoint};
use crate::config::ResolvedConfig;
use crate::config::schema::{BestMetric, ExperimentConfig};
use crate::distributed::{Collective, GradientSync, average_buffers};
use crate::ema::Ema;
use crate::error::TrainError;
use crate::metrics_log::MetricsLog;
use crate::network::Network;
use crate::optim::{ParamPlan, optimizer};
use crate::precision;
use crate::schedule::LrSchedule;

/// How to run.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Continue from `checkpoints/last` of the run directory.
    pub resume: bool,
    /// Stop after this many optimiser steps in total (for tests and interrupted runs).
    pub max_steps: Option<usize>,
    /// No progress bars.
    pub quiet: bool,
}

/// One evaluation: its metrics by the names `metrics.jsonl` uses (fractions in [0, 1]) and the
/// line printed for it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// `top1`, `top5`, `loss` for classification; `mIoU`, `aAcc`, `mAcc`, `loss` for
    /// segmentation.
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// A one-line summary for the terminal.
    pub line: String,
}

impl Evaluation {
    /// The metric called `name`.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics.get(name).and_then(serde_json::Value::as_f64)
    }

    /// The value `best` maximises for `metric` (a loss counts negated).
    fn score(&self, metric: BestMetric) -> f64 {
        let name = serde_json::to_value(metric).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let value = self.metric(&name).unwrap_or(f64::NEG_INFINITY);
        if metric == BestMetric::Loss { -value } else { value }
    }
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Last evaluation, if the run reached one.
    pub last_eval: Option<Evaluation>,
    /// Optimiser steps taken in total.
    pub steps: usize,
    /// Wall time of this invocation.
    pub seconds: f64,
    /// This process's data-parallel rank (0 alone), so only rank 0 reports.
    pub rank: usize,
}

/// Where a loader is within an epoch.
pub trait EpochCursor {
    /// Epoch and next batch.
    fn position(&self) -> LoaderPosition;
    /// Batches not yet taken.
    fn remaining(&self) -> usize;
}

impl<B: 'static> EpochCursor for EpochBatches<B> {
    fn position(&self) -> LoaderPosition {
        EpochBatches::position(self)
    }
    fn remaining(&self) -> usize {
        EpochBatches::remaining(self)
    }
}

/// What one kind of training brings to the loop: its data, the loss of a step, its evaluation.
pub trait Task {
    /// The network trained.
    type Net: Network;
    /// A training batch.
    type Batch;
    /// Names of the evaluation metrics, as `metrics.jsonl` and `metrics.csv` write them.
    const METRICS: &'static [&'static str];
    /// The training batches of one epoch.
    type Epoch: Iterator<Item = Result<Self::Batch, DataError>> + EpochCursor;
    /// Training batches per epoch.
    fn batches_per_epoch(&self) -> usize;
    /// The training batches from `position` on.
    fn epoch(&self, position: LoaderPosition) -> Result<Self::Epoch, DataError>;
    /// Examples in a batch.
    fn batch_len(batch: &Self::Batch) -> usize;
    /// The training loss of `batch`, a scalar (the loop takes its gradients, at the
    /// experiment's `train.precision`).
    fn loss(&self, module: &<Self::Net as Network>::Module, batch: &Self::Batch, device: &Device) -> Tensor<1>;
    /// Evaluates `module` on this rank's shard of the validation data, the counts summed over
    /// the ranks by `collective`, so every rank gets the metrics of the whole split.
    fn evaluate(&self, module: &<Self::Net as Network>::Module, device: &Device, collective: &dyn Collective) -> Result<Evaluation, TrainError>;
}

/// Where the loop is when it asks what is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// After an optimiser step with batches of the epoch still to come.
    MidEpoch,
    /// After the epoch's last batch.
    EpochEnd,
}

/// What is due at a point of the run.
#[derive(Debug, Clone, Copy)]
struct Due {
    /// Evaluate (and keep `best` if it is the best so far).
    evaluate: bool,
    /// Write `checkpoints/last`.
    save_last: bool,
    /// Leave the loop afterwards.
    stop: bool,
}

/// The run's one evaluation and checkpoint policy. By iterations (`schedule.iters`): every
/// `eval.interval_iters` / `checkpoint.interval_iters` steps, whether or not an epoch ends
/// there. By epochs: at an epoch's end, every `interval_epochs`. Either way the final step is
/// evaluated and saved, and a stop requested by `--max-steps` saves `last` (evaluating only at
/// an epoch's end, where the epoch's evaluation would have run).
fn due(exp: &ExperimentConfig, state: &RunState, at: At, epochs_done: usize, epochs: usize, total_steps: usize, stopping: bool) -> Due {
    let every = |interval: Option<usize>| interval.is_some_and(|i| state.step % i.max(1) == 0);
    let by_iters = exp.schedule.iters.is_some();
    match at {
        At::MidEpoch if by_iters => {
            let finished = state.step >= total_steps;
            Due {
                evaluate: every(exp.eval.interval_iters) || finished,
                save_last: every(exp.checkpoint.interval_iters) || finished || stopping,
                stop: finished || stopping,
            }
        }
        // by epochs, evaluations and checkpoints wait for the epoch's end
        At::MidEpoch => Due { evaluate: false, save_last: stopping, stop: stopping },
        At::EpochEnd => {
            let finished = epochs_done == epochs || state.step >= total_steps;
            let (eval_due, checkpoint_due) = if by_iters {
                (every(exp.eval.interval_iters), every(exp.checkpoint.interval_iters))
            } else {
                (epochs_done % exp.eval.interval_epochs.max(1) == 0, epochs_done % exp.checkpoint.interval_epochs.max(1) == 0)
            };
            // a finished run leaves by the loop's condition
            Due { evaluate: eval_due || finished || stopping, save_last: checkpoint_due || finished || stopping, stop: stopping }
        }
    }
}

/// The loop: steps, accumulation, EMA, evaluations, checkpoints and logs, for any task, on this
/// rank of `collective` (the task's loaders hold this rank's shard). Gradients are averaged over
/// the ranks before each optimiser step; rank 0 alone writes logs, curves and checkpoints.
pub fn run<T: Task>(
    cfg: &ResolvedConfig,
    opts: &TrainOptions,
    task: &T,
    mut net: T::Net,
    device: &Device,
    collective: &dyn Collective,
) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let exp = &cfg.experiment;
    let run_dir = cfg.output_dir().to_path_buf();
    let lead = collective.rank() == 0;
    let quiet = opts.quiet || !lead;
    let global_batch = exp.data.batch_size * collective.world();
    let accum = exp.train.accum_steps.max(1);
    let steps_per_epoch = (task.batches_per_epoch() / accum).max(1);
    let schedule = LrSchedule::new(&exp.schedule, cfg.lr(), steps_per_epoch);
    // an iteration-based run cycles through the data as often as its length needs
    let (total_steps, epochs) = match exp.schedule.iters {
        Some(iters) => (iters, iters.div_ceil(steps_per_epoch)),
        None => (exp.schedule.epochs * steps_per_epoch, exp.schedule.epochs),
    };

    let mut state = RunState::default();
    let mut ema = exp.train.ema.then(|| Ema::new(net.module(), exp.train.ema_decay));
    let last_dir = run_dir.join("checkpoints").join("last");
    let resumed_from = if opts.resume { Some(load_checkpoint(&last_dir, &mut net, &mut state, &mut ema, device)?) } else { None };
    if resumed_from.is_some() {
        state.continue_with_global_batch(global_batch, steps_per_epoch, quiet);
    }
    state.global_batch = Some(global_batch);
    if collective.world() > 1 && !quiet {
        eprintln!("data-parallel: {} ranks x batch {} = global batch {global_batch}", collective.world(), exp.data.batch_size);
    }
    let plan = ParamPlan::new(exp, &net);
    *net.module_mut() = plan.freeze(net.module().clone());
    let buffers = plan.buffers.clone();
    let mut optim = optimizer(exp, &plan);
    let mut sync = GradientSync::new(exp.optim.clip_grad);
    if let Some(dir) = resumed_from {
        let path = dir.join("optimizer.bin");
        optim = optim.load(&path).map_err(|e| TrainError::Resume { path, reason: format!("optimizer state: {e:?}") })?;
    }
    let log = if lead { Some(MetricsLog::open(&run_dir, opts.resume, T::METRICS)?) } else { None };
    let mut run = Run { exp, quiet, task, device, collective, buffers, log, run_dir, started, last_eval: None };

    'epochs: while state.epoch < epochs && state.step < total_steps {
        let epoch = state.epoch;
        let mut batches = task.epoch(LoaderPosition { epoch, next_batch: state.next_batch })?;
        let bar = progress(quiet, (batches.remaining() + state.next_batch) as u64, epoch, epochs);
        bar.set_position(state.next_batch as u64);
        let mut accumulator = GradientsAccumulator::<<T::Net as Network>::Module>::new();
        let mut pending = 0;
        let mut window = (Instant::now(), 0usize);
        while let Some(batch) = batches.next() {
            let batch = batch?;
            let lr = schedule.lr(state.step);
            // reseeded per step, so drop-path draws are the same after a resume
            device.seed(exp.train.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (state.step * accum + pending) as u64);
            // accumulated and then summed over the ranks, each gradient counts 1 / (accum x ranks)
            let (loss, grads) = precision::step(exp.train.precision, net.module(), accum * collective.world(), |module| task.loss(module, &batch, device));
            if !loss.is_finite() {
                return Err(TrainError::Diverged { step: state.step, epoch, loss, last: last_dir.display().to_string() });
            }
            accumulator.accumulate(net.module(), grads);
            pending += 1;
            window.1 += T::batch_len(&batch);
            bar.inc(1);
            let position = batches.position();
            if pending < accum {
                (state.epoch, state.next_batch) = (position.epoch, position.next_batch);
                continue;
            }
            let grads = sync.sync(net.module(), accumulator.grads(), collective);
            let module = net.module().clone();
            *net.module_mut() = optim.step(plan.learning_rates(lr), module, grads);
            if let Some(ema) = &mut ema {
                ema.update(net.module());
            }
            pending = 0;
            state.step += 1;
            (state.epoch, state.next_batch) = (position.epoch, position.next_batch);
            if state.step % exp.logging.interval_iters.max(1) == 0 {
                // every rank takes the same number of images per step
                let images_per_s = (window.1 * collective.world()) as f64 / window.0.elapsed().as_secs_f64();
                let mut mean_loss = [loss as f64];
                collective.sum_f64(&mut mean_loss);
                let loss = (mean_loss[0] / collective.world() as f64) as f32;
                run.log_write(&serde_json::json!({
                    "kind": "train", "epoch": epoch, "step": state.step, "loss": loss, "lr": lr, "images_per_s": images_per_s,
                    "global_batch": global_batch,
                }))?;
                bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {images_per_s:.0} img/s"));
                window = (Instant::now(), 0);
            }
            // the step that ends the epoch is handled at the epoch's end below
            if batches.remaining() > 0 {
                let due = due(exp, &state, At::MidEpoch, epoch + 1, epochs, total_steps, stop_requested(opts, &state));
                if run.evaluate_and_checkpoint(due, At::MidEpoch, &bar, &mut net, ema.as_ref(), &optim, &mut state, epoch)? {
                    break 'epochs;
                }
            }
        }
        bar.finish_and_clear();
        let due = due(exp, &state, At::EpochEnd, epoch + 1, epochs, total_steps, stop_requested(opts, &state));
        if run.evaluate_and_checkpoint(due, At::EpochEnd, &bar, &mut net, ema.as_ref(), &optim, &mut state, epoch)? {
            break;
        }
    }
    if let Some(log) = run.log.as_ref().filter(|_| exp.logging.plots) {
        log.plot(&run.run_dir)?;
    }
    Ok(TrainSummary { run_dir: run.run_dir, last_eval: run.last_eval, steps: state.step, seconds: run.started.elapsed().as_secs_f64(), rank: collective.rank() })
}

/// What a run holds besides the network and its optimiser: its settings, its task, its log.
struct Run<'a, T: Task> {
    exp: &'a ExperimentConfig,
    /// No progress bars or evaluation lines (`--quiet`, and every rank but 0).
    quiet: bool,
    task: &'a T,
    device: &'a Device,
    collective: &'a dyn Collective,
    /// The network's buffers (BatchNorm statistics), averaged over the ranks before evaluating.
    buffers: Vec<burn::module::ParamId>,
    /// The metrics files, on rank 0.
    log: Option<MetricsLog>,
    run_dir: PathBuf,
    started: Instant,
    last_eval: Option<Evaluation>,
}

impl<T: Task> Run<'_, T> {
    /// Appends `record` to the metrics files (rank 0; the other ranks write nothing).
    fn log_write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        self.log.as_mut().map_or(Ok(()), |log| log.write(record))
    }

    /// Carries out what `due` says, in this order: the evaluation (printed above the progress
    /// bar) and its record, the curves (at an epoch's end), `last`, and `best` when the
    /// evaluation is the best so far. Returns whether the loop leaves.
    #[allow(clippy::too_many_arguments)]
    fn evaluate_and_checkpoint(
        &mut self,
        due: Due,
        at: At,
        bar: &ProgressBar,
        net: &mut T::Net,
        ema: Option<&Ema<<T::Net as Network>::Module>>,
        optim: &ModuleOptimizer,
        state: &mut RunState,
        epoch: usize,
    ) -> Result<bool, TrainError> {
        if self.collective.world() > 1 && (due.evaluate || due.save_last) {
            // timm's `--dist-bn reduce`: the ranks' BatchNorm statistics, averaged, are what is
            // evaluated and saved (burn folds the last forward's statistics in lazily: `valid`)
            let _ = net.module().valid();
            *net.module_mut() = average_buffers(net.module().clone(), &self.buffers, self.collective);
        }
        let is_best = if due.evaluate { bar.suspend(|| self.evaluate_and_log(net, ema, state, epoch))? } else { false };
        if let Some(log) = self.log.as_ref().filter(|_| at == At::EpochEnd && self.exp.logging.plots) {
            log.plot(&self.run_dir)?;
        }
        let checkpoints = self.run_dir.join("checkpoints");
        if self.collective.rank() == 0 {
            if due.save_last {
                save_checkpoint(&checkpoints.join("last"), net, ema, optim, state)?;
            }
            if is_best {
                save_checkpoint(&checkpoints.join("best"), net, ema, optim, state)?;
            }
        }
        if due.stop {
            bar.finish_and_clear();
        }
        Ok(due.stop)
    }

    /// Evaluates the network (and its EMA, with `eval.ema`), writes the record, prints the
    /// line, and updates the best score; returns whether it is the best so far. timm keeps the
    /// best checkpoint by the EMA's metric when the EMA is evaluated.
    fn evaluate_and_log(
        &mut self,
        net: &T::Net,
        ema: Option<&Ema<<T::Net as Network>::Module>>,
        state: &mut RunState,
        epoch: usize,
    ) -> Result<bool, TrainError> {
        let eval = self.task.evaluate(net.module(), self.device, self.collective)?;
        let mut record = serde_json::json!({ "kind": "eval", "epoch": epoch, "step": state.step });
        record.as_object_mut().expect("an object").extend(eval.metrics.clone());
        let mut shown = eval.clone();
        let mut decisive = eval;
        if let Some(ema) = ema.filter(|_| self.exp.eval.ema) {
            let ema_eval = self.task.evaluate(&ema.model, self.device, self.collective)?;
            for (name, value) in &ema_eval.metrics {
                record[format!("{name}_ema")] = value.clone();
            }
            shown.line += &format!("  |  EMA {}", ema_eval.line);
            decisive = ema_eval;
        }
        self.log_write(&record)?;
        let score = decisive.score(self.exp.checkpoint.keep_best_by.unwrap_or(BestMetric::Top1));
        let is_best = state.best.is_none_or(|best| score > best);
        if is_best {
            state.best = Some(score);
        }
        if !self.quiet {
            eprintln!("epoch {}, step {}: {}  ({:.0} s)", epoch + 1, state.step, shown.line, self.started.elapsed().as_secs_f64());
        }
        self.last_eval = Some(shown);
        Ok(is_best)
    }
}

fn stop_requested(opts: &TrainOptions, state: &RunState) -> bool {
    opts.max_steps.is_some_and(|max| state.step >= max)
}

fn progress(quiet: bool, len: u64, epoch: usize, epochs: usize) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
}

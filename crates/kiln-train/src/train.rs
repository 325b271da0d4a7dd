//! The training loop shared by every task. [`train`] reads top to bottom as one run: build,
//! (resume), then the steps of the task's [`Task::train_step`], evaluations and checkpoints, by
//! epoch or by iteration. What differs between classification ([`crate::classify`]) and
//! segmentation ([`crate::segment`]) is behind [`Task`] and [`Network`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{DataError, LoaderPosition};
use kiln_models::{LayerOrdinal, LoadedModel, ModelError};
use serde::{Deserialize, Serialize};

pub use crate::classify::{EvalResult, evaluate, evaluate_weights, soft_cross_entropy, train_step, write_confusion_png};
use crate::config::schema::{BestMetric, ExperimentConfig, OptimizerName, Task as TaskName};
use crate::config::{ConfigError, ResolvedConfig};
use crate::ema::Ema;
use crate::schedule::LrSchedule;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Data sets and loaders.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building the model or loading weights.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A loss that is not a finite number.
    #[error(
        "training diverged at step {step} (epoch {epoch}): loss is {loss}; lower optim.lr or set optim.clip_grad. \
         The last good checkpoint is untouched: {last}"
    )]
    Diverged {
        /// Optimiser step.
        step: usize,
        /// Epoch.
        epoch: usize,
        /// The loss value.
        loss: f32,
        /// The checkpoint to resume from.
        last: String,
    },
    /// Reading or writing the run directory.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A run directory that cannot be resumed.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

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

/// Where a run is: saved with every checkpoint, so a resumed run continues exactly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunState {
    /// Optimiser steps taken.
    pub step: usize,
    /// Data position: epoch and next batch.
    pub epoch: usize,
    /// Next batch of `epoch`.
    pub next_batch: usize,
    /// Best evaluation so far (by `checkpoint.keep_best_by`).
    pub best: Option<f64>,
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
}

/// A network the loop trains: its burn module, and how it is saved and grouped for the
/// optimiser.
pub trait Network {
    /// The modules.
    type Module: Module;
    /// The modules, as trained.
    fn module(&self) -> &Self::Module;
    /// The modules, to replace after an optimiser step.
    fn module_mut(&mut self) -> &mut Self::Module;
    /// Writes `module` (this network's or its average) as a Kiln checkpoint that records what
    /// this network is.
    fn save_module(&self, module: &Self::Module, path: &Path) -> Result<(), ModelError>;
    /// Reads a checkpoint [`save_module`](Self::save_module) wrote; `None` when it describes a
    /// different network.
    fn load_module(&self, path: &Path, device: &Device) -> Result<Option<Self::Module>, ModelError>;
    /// The depth group of a parameter path (layer-wise lr decay, frozen backbone).
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal;
}

impl Network for LoadedModel {
    type Module = kiln_models::Model;
    fn module(&self) -> &Self::Module {
        &self.model
    }
    fn module_mut(&mut self) -> &mut Self::Module {
        &mut self.model
    }
    fn save_module(&self, module: &Self::Module, path: &Path) -> Result<(), ModelError> {
        kiln_models::checkpoint::save_native(module, path, &self.name, &self.config.to_json())
    }
    fn load_module(&self, path: &Path, device: &Device) -> Result<Option<Self::Module>, ModelError> {
        let restored = LoadedModel::from_native(path, device)?;
        Ok((restored.config.to_json() == self.config.to_json()).then_some(restored.model))
    }
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        self.config.layer_ordinal(path)
    }
}

/// Where a loader is within an epoch.
pub trait EpochCursor {
    /// Epoch and next batch.
    fn position(&self) -> LoaderPosition;
    /// Batches not yet taken.
    fn remaining(&self) -> usize;
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
    /// One forward and backward pass: the loss (divided by `accum`, as accumulated gradients
    /// sum) and the gradients.
    fn train_step(&self, module: &<Self::Net as Network>::Module, batch: &Self::Batch, accum: usize, device: &Device) -> (f32, GradientsParams);
    /// Evaluates `module` on the validation data.
    fn evaluate(&self, module: &<Self::Net as Network>::Module, device: &Device) -> Result<Evaluation, TrainError>;
}

/// Trains the experiment `cfg` into its run directory.
pub fn train(cfg: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let run_dir = cfg.output_dir().to_path_buf();
    cfg.write_to_run_dir(&run_dir)?;
    let device = crate::device(&cfg.experiment.train.device)?.autodiff();
    device.seed(cfg.experiment.train.seed);
    match cfg.experiment.task {
        TaskName::Classification => {
            let (task, net) = crate::classify::Classification::build(cfg, &device, opts.quiet)?;
            run(cfg, opts, &task, net, &device)
        }
        TaskName::Segmentation => {
            let (task, net) = crate::segment::Segmentation::build(cfg, &device, opts.quiet)?;
            run(cfg, opts, &task, net, &device)
        }
    }
}

/// The loop: steps, accumulation, EMA, evaluations, checkpoints and logs, for any task.
fn run<T: Task>(cfg: &ResolvedConfig, opts: &TrainOptions, task: &T, mut net: T::Net, device: &Device) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let exp = &cfg.experiment;
    let run_dir = cfg.output_dir().to_path_buf();
    let last_dir = run_dir.join("checkpoints").join("last");
    let accum = exp.train.accum_steps.max(1);
    let steps_per_epoch = (task.batches_per_epoch() / accum).max(1);
    let schedule = LrSchedule::new(&exp.schedule, cfg.lr(), steps_per_epoch);
    // an iteration-based run cycles through the data as often as its length needs
    let (total_steps, epochs) = match exp.schedule.iters {
        Some(iters) => (iters, iters.div_ceil(steps_per_epoch)),
        None => (exp.schedule.epochs * steps_per_epoch, exp.schedule.epochs),
    };
    let by_iters = |interval: Option<usize>, step: usize| interval.is_some_and(|i| step % i.max(1) == 0);

    let mut state = RunState::default();
    let mut ema = exp.train.ema.then(|| Ema::new(net.module(), exp.train.ema_decay));
    let resumed_from = if opts.resume { Some(load_checkpoint(&last_dir, &mut net, &mut state, &mut ema, device)?) } else { None };
    let plan = ParamPlan::new(exp, &net);
    *net.module_mut() = plan.freeze(net.module().clone());
    let mut optim = optimizer(exp, &plan);
    if let Some(dir) = resumed_from {
        let path = dir.join("optimizer.bin");
        optim = optim.load(&path).map_err(|e| TrainError::Resume { path, reason: format!("optimizer state: {e:?}") })?;
    }
    let mut log = MetricsLog::open(&run_dir, opts.resume, T::METRICS)?;
    let mut last_eval = None;
    let mut validate = |net: &T::Net, ema: Option<&Ema<<T::Net as Network>::Module>>, state: &mut RunState, log: &mut MetricsLog, epoch: usize| {
        evaluate_and_log(task, net, ema, exp, state, log, epoch, device).map(|(eval, is_best)| {
            if !opts.quiet {
                eprintln!("epoch {}, step {}: {}  ({:.0} s)", epoch + 1, state.step, eval.line, started.elapsed().as_secs_f64());
            }
            last_eval = Some(eval);
            is_best
        })
    };

    'epochs: while state.epoch < epochs && state.step < total_steps {
        let epoch = state.epoch;
        let mut batches = task.epoch(LoaderPosition { epoch, next_batch: state.next_batch })?;
        let bar = progress(opts.quiet, (batches.remaining() + state.next_batch) as u64, epoch, epochs);
        bar.set_position(state.next_batch as u64);
        let mut accumulator = GradientsAccumulator::<<T::Net as Network>::Module>::new();
        let mut pending = 0;
        let mut window = (Instant::now(), 0usize);
        while let Some(batch) = batches.next() {
            let batch = batch?;
            let lr = schedule.lr(state.step);
            // reseeded per step, so drop-path draws are the same after a resume
            device.seed(exp.train.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (state.step * accum + pending) as u64);
            let (loss, grads) = task.train_step(net.module(), &batch, accum, device);
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
            let module = net.module().clone();
            *net.module_mut() = optim.step(plan.learning_rates(lr), module, accumulator.grads());
            if let Some(ema) = &mut ema {
                ema.update(net.module());
            }
            pending = 0;
            state.step += 1;
            (state.epoch, state.next_batch) = (position.epoch, position.next_batch);
            if state.step % exp.logging.interval_iters.max(1) == 0 {
                let images_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64();
                log.write(&serde_json::json!({
                    "kind": "train", "epoch": epoch, "step": state.step, "loss": loss, "lr": lr, "images_per_s": images_per_s,
                }))?;
                bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {images_per_s:.0} img/s"));
                window = (Instant::now(), 0);
            }
            let mid_epoch = batches.remaining() > 0;
            if exp.schedule.iters.is_some() && mid_epoch {
                // iteration-based: evaluations and checkpoints by step; the epoch's end below
                // handles the step that ends an epoch
                let finished = state.step >= total_steps;
                let stopping = stop_requested(opts, &state);
                let is_best = if by_iters(exp.eval.interval_iters, state.step) || finished {
                    bar.suspend(|| validate(&net, ema.as_ref(), &mut state, &mut log, epoch))?
                } else {
                    false
                };
                if by_iters(exp.checkpoint.interval_iters, state.step) || finished || stopping {
                    save_checkpoint(&last_dir, &net, ema.as_ref(), &optim, &state)?;
                }
                if is_best {
                    save_checkpoint(&run_dir.join("checkpoints").join("best"), &net, ema.as_ref(), &optim, &state)?;
                }
                if finished || stopping {
                    bar.finish_and_clear();
                    break 'epochs;
                }
            } else if stop_requested(opts, &state) && mid_epoch {
                bar.finish_and_clear();
                save_checkpoint(&last_dir, &net, ema.as_ref(), &optim, &state)?;
                break 'epochs;
            }
        }
        bar.finish_and_clear();

        let epochs_done = epoch + 1;
        let finished = epochs_done == epochs || state.step >= total_steps;
        let stopping = stop_requested(opts, &state);
        let (eval_due, checkpoint_due) = match exp.schedule.iters {
            Some(_) => (by_iters(exp.eval.interval_iters, state.step), by_iters(exp.checkpoint.interval_iters, state.step)),
            None => (epochs_done % exp.eval.interval_epochs.max(1) == 0, epochs_done % exp.checkpoint.interval_epochs.max(1) == 0),
        };
        let is_best = if eval_due || finished || stopping { validate(&net, ema.as_ref(), &mut state, &mut log, epoch)? } else { false };
        if exp.logging.plots {
            log.plot(&run_dir)?;
        }
        if checkpoint_due || finished || stopping {
            save_checkpoint(&last_dir, &net, ema.as_ref(), &optim, &state)?;
        }
        if is_best {
            save_checkpoint(&run_dir.join("checkpoints").join("best"), &net, ema.as_ref(), &optim, &state)?;
        }
        if stopping {
            break;
        }
    }
    if exp.logging.plots {
        log.plot(&run_dir)?;
    }
    Ok(TrainSummary { run_dir, last_eval, steps: state.step, seconds: started.elapsed().as_secs_f64() })
}

/// Evaluates the network (and its EMA, with `eval.ema`), writes the record, and updates the
/// best score; returns the evaluation and whether it is the best so far. timm keeps the best
/// checkpoint by the EMA's metric when the EMA is evaluated.
#[allow(clippy::too_many_arguments)]
fn evaluate_and_log<T: Task>(
    task: &T,
    net: &T::Net,
    ema: Option<&Ema<<T::Net as Network>::Module>>,
    exp: &ExperimentConfig,
    state: &mut RunState,
    log: &mut MetricsLog,
    epoch: usize,
    device: &Device,
) -> Result<(Evaluation, bool), TrainError> {
    let eval = task.evaluate(net.module(), device)?;
    let mut record = serde_json::json!({ "kind": "eval", "epoch": epoch, "step": state.step });
    record.as_object_mut().expect("an object").extend(eval.metrics.clone());
    let mut shown = eval.clone();
    let mut decisive = eval.clone();
    if let Some(ema) = ema.filter(|_| exp.eval.ema) {
        let ema_eval = task.evaluate(&ema.model, device)?;
        for (name, value) in &ema_eval.metrics {
            record[format!("{name}_ema")] = value.clone();
        }
        shown.line += &format!("  |  EMA {}", ema_eval.line);
        decisive = ema_eval;
    }
    log.write(&record)?;
    let score = decisive.score(exp.checkpoint.keep_best_by.unwrap_or(BestMetric::Top1));
    let is_best = state.best.is_none_or(|best| score > best);
    if is_best {
        state.best = Some(score);
    }
    Ok((shown, is_best))
}

fn stop_requested(opts: &TrainOptions, state: &RunState) -> bool {
    opts.max_steps.is_some_and(|max| state.step >= max)
}

/// How the optimiser treats each parameter, by [`ParamId`]: burn's optimiser matches groups
/// against paths that carry enum variant names (`Swin.layers.0...`) where the model's own
/// names (timm's keys) do not, so groups are built from ids.
struct ParamPlan {
    /// One-dimensional parameters (norm scales and shifts, biases) and relative-position tables.
    no_decay: Vec<ParamId>,
    /// Layer-wise lr decay: the parameters whose lr is scaled, grouped by their multiplier.
    lr_scales: Vec<(ParamGroup, f64)>,
    /// Everything outside the head (classifier or decode heads), with `model.freeze_backbone`.
    frozen: HashSet<ParamId>,
}

impl ParamPlan {
    fn new<N: Network>(exp: &ExperimentConfig, net: &N) -> Self {
        // learnable parameters only: BatchNorm's running statistics are buffers
        let params: Vec<(ParamId, String, usize)> = net
            .module()
            .collect(None, None, true)
            .into_iter()
            .filter(|t| !kiln_models::backbone::is_buffer_field(t.name.rsplit('.').next().unwrap_or_default()))
            .map(|t| (ParamId::from(t.param_id.expect("module tensors carry their parameter id")), t.name, t.shape.len()))
            .collect();
        let no_decay = params
            .iter()
            .filter(|(_, name, rank)| *rank <= 1 || name.ends_with("relative_position_bias_table"))
            .map(|(id, _, _)| *id)
            .collect();
        let names: Vec<String> = params.iter().map(|(_, name, _)| name.clone()).collect();
        let mut by_scale: Vec<(f64, Vec<ParamId>)> = Vec::new();
        if let Some(decay) = exp.optim.layer_decay {
            let scales = kiln_models::backbone::layer_decay_scales(&names, decay, |p| net.layer_ordinal(p));
            for ((id, _, _), scale) in params.iter().zip(scales) {
                match by_scale.iter_mut().find(|(s, _)| *s == scale) {
                    Some((_, ids)) => ids.push(*id),
                    None => by_scale.push((scale, vec![*id])),
                }
            }
        }
        let lr_scales = by_scale.into_iter().filter(|(scale, _)| *scale != 1.0).map(|(scale, ids)| (ParamGroup::from_ids(ids), scale)).collect();
        let frozen = if exp.model.freeze_backbone {
            params.iter().filter(|(_, name, _)| net.layer_ordinal(name) != LayerOrdinal::Head).map(|(id, _, _)| *id).collect()
        } else {
            HashSet::new()
        };
        Self { no_decay, lr_scales, frozen }
    }

    /// The learning rate of every parameter at a step whose base rate is `lr`.
    fn learning_rates(&self, lr: f64) -> ModuleLearningRate {
        self.lr_scales.iter().fold(ModuleLrScheduler::new(lr), |rates, (group, scale)| rates.with_group(group.clone(), lr * scale)).step()
    }

    /// Stops gradients at the frozen parameters: they get none, so the optimiser (weight decay
    /// included) leaves them as they are.
    fn freeze<M: Module>(&self, model: M) -> M {
        struct Freeze<'a>(&'a HashSet<ParamId>);
        impl ModuleMapper for Freeze<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if self.0.contains(&param.id) { param.set_require_grad(false) } else { param }
            }
        }
        if self.frozen.is_empty() { model } else { model.map(&mut Freeze(&self.frozen)) }
    }
}

/// AdamW or SGD; with `no_weight_decay_on_norm_bias`, the plan's one-dimensional parameters and
/// relative-position tables get no weight decay, as timm's `param_groups_weight_decay`.
fn optimizer(exp: &ExperimentConfig, plan: &ParamPlan) -> ModuleOptimizer {
    let o = &exp.optim;
    let clip = o.clip_grad.map(|c| GradientClippingConfig::Norm(c as f32));
    let group = ParamGroup::from_ids(plan.no_decay.clone());
    let clip_init = || clip.as_ref().map(|c| c.init());
    match o.name {
        OptimizerName::Adamw => {
            let config = AdamWConfig::new()
                .with_beta_1(o.betas[0] as f32)
                .with_beta_2(o.betas[1] as f32)
                .with_epsilon(o.eps as f32)
                .with_grad_clipping(clip.clone());
            let decayed = config.clone().with_weight_decay(o.weight_decay as f32).init();
            if o.no_weight_decay_on_norm_bias {
                decayed.with_group(group, config.with_weight_decay(0.0).build(), clip_init())
            } else {
                decayed
            }
        }
        OptimizerName::Sgd => {
            let momentum = (o.momentum > 0.0).then(|| {
                MomentumConfig::new().with_momentum(o.momentum).with_dampening(0.0).with_nesterov(o.nesterov)
            });
            let config = SgdConfig::new().with_momentum(momentum).with_gradient_clipping(clip.clone());
            let decayed = config
                .clone()
                .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(o.weight_decay as f32)))
                .init();
            if o.no_weight_decay_on_norm_bias {
                decayed.with_group(group, config.with_weight_decay(None).build(), clip_init())
            } else {
                decayed
            }
        }
    }
}

/// Writes model, EMA, optimiser and run state into `dir` whole or not at all: everything goes
/// to a sibling `*.partial` directory first, which then replaces `dir` by renames, so an
/// interruption leaves the previous checkpoint (or, mid-swap, `*.previous`) intact.
fn save_checkpoint<N: Network>(
    dir: &Path,
    net: &N,
    ema: Option<&Ema<N::Module>>,
    optim: &ModuleOptimizer,
    state: &RunState,
) -> Result<(), TrainError> {
    // burn folds the last training forward's BatchNorm statistics in lazily; a validation
    // snapshot applies them, so the checkpoint holds them
    let _ = net.module().valid();
    let partial = dir.with_extension("partial");
    let previous = dir.with_extension("previous");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    net.save_module(net.module(), &partial.join("model.bpk"))?;
    if let Some(ema) = ema {
        net.save_module(&ema.model, &partial.join("ema.bpk"))?;
    }
    let optim_path = partial.join("optimizer.bin");
    optim.save(&optim_path).map_err(|e| TrainError::Io { path: optim_path.clone(), reason: format!("{e:?}") })?;
    let state_path = partial.join("state.json");
    fs::write(&state_path, serde_json::to_string_pretty(state).expect("state serialises")).map_err(io(&state_path))?;
    let _ = fs::remove_dir_all(&previous);
    if dir.exists() {
        fs::rename(dir, &previous).map_err(io(dir))?;
    }
    fs::rename(&partial, dir).map_err(io(dir))?;
    let _ = fs::remove_dir_all(&previous);
    Ok(())
}

/// Reads the model, EMA and run state [`save_checkpoint`] wrote (falling back to `*.previous`
/// if a swap was cut short) and returns the directory, whose optimiser state is loaded once
/// the optimiser is built for the restored parameters.
fn load_checkpoint<N: Network>(
    dir: &Path,
    net: &mut N,
    state: &mut RunState,
    ema: &mut Option<Ema<N::Module>>,
    device: &Device,
) -> Result<PathBuf, TrainError> {
    let previous = dir.with_extension("previous");
    let dir = if dir.exists() { dir.to_path_buf() } else { previous };
    let fail = |reason: String| TrainError::Resume { path: dir.clone(), reason };
    if !dir.exists() {
        return Err(fail("no checkpoint there; run without --resume to start".into()));
    }
    let differs = || fail("the checkpoint's model configuration differs from the experiment's".into());
    *net.module_mut() = net.load_module(&dir.join("model.bpk"), device)?.ok_or_else(differs)?;
    if let Some(ema) = ema {
        let path = dir.join("ema.bpk");
        if !path.exists() {
            return Err(fail("train.ema is on but the checkpoint has no ema.bpk (it was saved without EMA)".into()));
        }
        let averaged = net.load_module(&path, &device.clone().inner())?.ok_or_else(differs)?;
        *ema = Ema::resume(averaged, ema.decay());
    }
    let text = fs::read_to_string(dir.join("state.json")).map_err(|e| fail(e.to_string()))?;
    *state = serde_json::from_str(&text).map_err(|e| fail(format!("state.json: {e}")))?;
    Ok(dir)
}

/// `metrics.jsonl` and `metrics.csv` of the run directory, appended line by line.
struct MetricsLog {
    jsonl: File,
    csv: File,
    jsonl_path: PathBuf,
    /// Every record of the run so far (a resumed run reads the earlier ones back), for the plots.
    records: Vec<serde_json::Value>,
    columns: Vec<&'static str>,
}

/// `metrics.csv` columns before the task's own metrics, and after them.
const CSV_LEADING: [&str; 6] = ["kind", "epoch", "step", "loss", "lr", "images_per_s"];
const CSV_TRAILING: [&str; 1] = ["time"];

impl MetricsLog {
    fn open(run_dir: &Path, append: bool, metrics: &[&'static str]) -> Result<Self, TrainError> {
        let columns: Vec<&'static str> = CSV_LEADING.iter().chain(metrics).chain(&CSV_TRAILING).copied().collect();
        let open = |name: &str| -> Result<(File, bool), TrainError> {
            let path = run_dir.join(name);
            let existed = append && path.exists();
            let file = OpenOptions::new().create(true).write(true).append(append).truncate(!append).open(&path).map_err(io(&path))?;
            Ok((file, existed))
        };
        let jsonl_path = run_dir.join("metrics.jsonl");
        let records = if append && jsonl_path.exists() {
            let text = fs::read_to_string(&jsonl_path).map_err(io(&jsonl_path))?;
            text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
        } else {
            Vec::new()
        };
        let (jsonl, _) = open("metrics.jsonl")?;
        let (mut csv, existed) = open("metrics.csv")?;
        if !existed {
            writeln!(csv, "{}", columns.join(",")).map_err(io(&run_dir.join("metrics.csv")))?;
        }
        Ok(MetricsLog { jsonl, csv, jsonl_path, records, columns })
    }

    fn write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        let mut record = record.clone();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        record["time"] = now.into();
        writeln!(self.jsonl, "{record}").map_err(io(&self.jsonl_path))?;
        let cells: Vec<String> = self
            .columns
            .iter()
            .map(|c| match &record[*c] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                v => v.to_string(),
            })
            .collect();
        writeln!(self.csv, "{}", cells.join(",")).map_err(io(&self.jsonl_path))?;
        self.records.push(record);
        Ok(())
    }

    /// `loss.png`, `accuracy.png` and `lr.png` in `run_dir`, redrawn from every record so far.
    fn plot(&self, run_dir: &Path) -> Result<(), TrainError> {
        crate::plot::write_curves(&self.records, run_dir).map(|_| ()).map_err(io(run_dir))
    }
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

#[cfg(test)]
mod tests {
    use burn::store::bridge;
    use kiln_models::swin::SwinConfig;
    use kiln_models::{Backbone, Model, ModelConfig};

    use super::*;

    fn experiment(extra: &str) -> ExperimentConfig {
        let text = format!("[model]\nname = \"swin_tiny_patch4_window7_224\"\n{extra}\n[optim]\nname = \"adamw\"\nweight_decay = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
        model.collect(None, None, true).into_iter().map(|t| (t.name.clone(), bridge::into_data(t).unwrap().try_to_vec::<f32>().unwrap())).collect()
    }

    /// One AdamW step at lr 0.1, weight decay 1, with all-zero gradients: Adam's update is zero,
    /// so each weight is multiplied by `1 − 0.1·lr_scale` if it is decayed and kept otherwise.
    /// Returns, per parameter of a tiny Swin (stem, two blocks, head), the factor it moved by.
    fn decay_factors(exp: &ExperimentConfig) -> Vec<(String, f32)> {
        let device = Device::flex().autodiff();
        let config = ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 1], vec![1, 2], 4).with_patch_size(2).with_num_classes(3));
        let model = LoadedModel::build("swin_tiny_patch4_window7_224", config, &device).unwrap();
        let plan = ParamPlan::new(exp, &model);
        let net = plan.freeze(model.model);
        let before = weights(&net);
        let loss = net.forward(Tensor::ones([2, 3, 16, 16], &device)).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let net = optimizer(exp, &plan).step(plan.learning_rates(0.1), net, grads);
        before
            .into_iter()
            .zip(weights(&net))
            .map(|((name, a), (_, b))| {
                let (i, _) = a.iter().enumerate().max_by(|x, y| x.1.abs().total_cmp(&y.1.abs())).unwrap();
                (name, if a[i] == 0.0 { 1.0 } else { b[i] / a[i] })
            })
            .collect()
    }

    fn factor(factors: &[(String, f32)], name: &str) -> f32 {
        factors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    #[test]
    fn weight_decay_skips_norms_biases_and_position_tables() {
        let factors = decay_factors(&experiment(""));
        for (name, f) in &factors {
            let kept = ["bias", "gamma", "beta", "relative_position_bias_table"].iter().any(|s| name.ends_with(s));
            let expected = if kept { 1.0 } else { 0.9 };
            assert!((f - expected).abs() < 1e-6, "{name}: moved by {f}, expected {expected}");
        }
        assert!(factors.iter().any(|(n, _)| n.ends_with("relative_position_bias_table")));
    }

    #[test]
    fn layer_decay_scales_each_layers_learning_rate() {
        let mut exp = experiment("");
        exp.optim.layer_decay = Some(0.5);
        let factors = decay_factors(&exp);
        // four groups: stem 0.5^3, first block 0.5^2, second block (with its patch merging and
        // the final norm) 0.5, head 1
        for (name, scale) in [
            ("patch_embed.proj.weight", 0.125),
            ("layers.0.blocks.0.attn.qkv.weight", 0.25),
            ("layers.1.downsample.reduction.weight", 0.5),
            ("layers.1.blocks.0.mlp.fc2.weight", 0.5),
            ("head.fc.weight", 1.0),
        ] {
            let expected = 1.0 - 0.1 * scale;
            let f = factor(&factors, name);
            assert!((f - expected).abs() < 1e-6, "{name}: moved by {f}, expected {expected}");
        }
    }

    #[test]
    fn a_frozen_backbone_gets_no_update_and_the_head_does() {
        let mut exp = experiment("");
        exp.model.freeze_backbone = true;
        let factors = decay_factors(&exp);
        for (name, f) in &factors {
            let expected = if name == "head.fc.weight" { 0.9 } else { 1.0 };
            assert!((f - expected).abs() < 1e-7, "{name}: moved by {f}, expected {expected}");
        }
    }
}

//! The classification training loop. [`train`] reads top to bottom as one run: build, (resume),
//! then per epoch the steps of [`train_step`], an evaluation and a checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::activation::log_softmax;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{Batch, DataError, DataLoader, LoaderPosition};
use kiln_models::{Backbone, LayerOrdinal, LoadedModel, Model, ModelError};
use serde::{Deserialize, Serialize};

use crate::config::schema::{BestMetric, ExperimentConfig, OptimizerName};
use crate::config::{ConfigError, ResolvedConfig};
use crate::data;
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

fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
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

/// Evaluation results, fractions in [0, 1].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EvalResult {
    /// Top-1 accuracy.
    pub top1: f64,
    /// Top-5 accuracy (top-k with k = min(5, classes)).
    pub top5: f64,
    /// Mean cross-entropy.
    pub loss: f64,
    /// Accuracy of each class.
    pub per_class: Vec<f64>,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<usize>>,
}

/// The result of a run.
#[derive(Debug, Clone)]
pub struct TrainSummary {
    /// The run directory.
    pub run_dir: PathBuf,
    /// Last evaluation, if the run reached one.
    pub last_eval: Option<EvalResult>,
    /// Optimiser steps taken in total.
    pub steps: usize,
    /// Wall time of this invocation.
    pub seconds: f64,
}

/// Trains the experiment `cfg` into its run directory.
pub fn train(cfg: &ResolvedConfig, opts: &TrainOptions) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let exp = &cfg.experiment;
    let run_dir = cfg.output_dir().to_path_buf();
    let last_dir = run_dir.join("checkpoints").join("last");
    cfg.write_to_run_dir(&run_dir)?;

    let device = crate::device(&exp.train.device)?.autodiff();
    device.seed(exp.train.seed);
    let data = data::build(cfg)?;
    let accum = exp.train.accum_steps.max(1);
    let steps_per_epoch = data.train.batches_per_epoch() / accum;
    let schedule = LrSchedule::new(&exp.schedule, cfg.lr(), steps_per_epoch.max(1));

    // the head follows the data unless the experiment sets the class count itself
    let mut model_config = cfg.model.clone();
    let classes = data.classes.len();
    if model_config.num_classes() != classes {
        if let Some(origin) = cfg.origin("model.num_classes") {
            return Err(TrainError::Data(DataError::InvalidData(format!(
                "model.num_classes = {} (set at {origin}) but the training data has {classes} classes",
                model_config.num_classes()
            ))));
        }
        model_config.set_num_classes(classes);
    }
    let mut model = LoadedModel::build(&exp.model.name, model_config, &device)?;
    if let Some(weights) = &exp.model.pretrained {
        let report = model.load_weights(weights)?;
        if !opts.quiet {
            eprintln!(
                "loaded {} tensors from {}{}",
                report.loaded,
                weights.display(),
                if report.head_reinitialized { " (new classifier head)" } else { "" }
            );
        }
    }
    let mut state = RunState::default();
    let mut ema = exp.train.ema.then(|| Ema::new(&model.model, exp.train.ema_decay));
    let resumed_from = if opts.resume { Some(load_checkpoint(&last_dir, &mut model, &mut state, &mut ema, &device)?) } else { None };
    let plan = ParamPlan::new(exp, &model);
    model.model = plan.freeze(model.model);
    let mut optim = optimizer(exp, &plan);
    if let Some(dir) = resumed_from {
        let path = dir.join("optimizer.bin");
        optim = optim.load(&path).map_err(|e| TrainError::Resume { path, reason: format!("optimizer state: {e:?}") })?;
    }
    let mut log = MetricsLog::open(&run_dir, opts.resume)?;
    let mut last_eval = None;

    'epochs: while state.epoch < exp.schedule.epochs {
        let epoch = state.epoch;
        let mut batches = data.train.resume(LoaderPosition { epoch, next_batch: state.next_batch })?;
        let bar = progress(opts.quiet, batches.len() as u64, epoch, exp.schedule.epochs);
        let mut accumulator = GradientsAccumulator::<Model>::new();
        let mut pending = 0;
        let mut window = (Instant::now(), 0usize);
        while let Some(batch) = batches.next() {
            let batch = batch?;
            let lr = schedule.lr(state.step);
            // reseeded per step, so drop-path draws are the same after a resume
            device.seed(exp.train.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (state.step * accum + pending) as u64);
            let (loss, grads) = train_step(&model.model, &batch, exp, data.classes.len(), accum, &device);
            if !loss.is_finite() {
                return Err(TrainError::Diverged { step: state.step, epoch, loss, last: last_dir.display().to_string() });
            }
            accumulator.accumulate(&model.model, grads);
            pending += 1;
            window.1 += batch.len();
            if pending == accum {
                model.model = optim.step(plan.learning_rates(lr), model.model, accumulator.grads());
                if let Some(ema) = &mut ema {
                    ema.update(&model.model);
                }
                pending = 0;
                state.step += 1;
                if state.step % exp.logging.interval_iters.max(1) == 0 {
                    let images_per_s = window.1 as f64 / window.0.elapsed().as_secs_f64();
                    log.write(&serde_json::json!({
                        "kind": "train", "epoch": epoch, "step": state.step, "loss": loss, "lr": lr, "images_per_s": images_per_s,
                    }))?;
                    bar.set_message(format!("loss {loss:.4}  lr {lr:.2e}  {images_per_s:.0} img/s"));
                    window = (Instant::now(), 0);
                }
            }
            bar.inc(1);
            let position = batches.position();
            (state.epoch, state.next_batch) = (position.epoch, position.next_batch);
            // a stop at the last batch of an epoch still evaluates it, below
            if stop_requested(opts, &state) && pending == 0 && batches.len() > 0 {
                bar.finish_and_clear();
                save_checkpoint(&last_dir, &model, ema.as_ref(), &optim, &state)?;
                break 'epochs;
            }
        }
        bar.finish_and_clear();

        let (epochs_done, final_epoch) = (epoch + 1, epoch + 1 == exp.schedule.epochs);
        let stopping = stop_requested(opts, &state);
        let mut is_best = false;
        if epochs_done % exp.eval.interval_epochs.max(1) == 0 || final_epoch || stopping {
            let eval = evaluate(&model.model, &data.val, data.classes.len(), &device)?;
            let mut record = serde_json::json!({
                "kind": "eval", "epoch": epoch, "step": state.step, "top1": eval.top1, "top5": eval.top5, "loss": eval.loss,
            });
            let mut line = format!("top-1 {:.2}%  top-5 {:.2}%  val loss {:.4}", 100.0 * eval.top1, 100.0 * eval.top5, eval.loss);
            // timm keeps the best checkpoint by the EMA's metric when the EMA is evaluated
            let mut decisive = eval.clone();
            if let Some(ema) = ema.as_ref().filter(|_| exp.eval.ema) {
                let ema_eval = evaluate(&ema.model, &data.val, data.classes.len(), &device)?;
                record["top1_ema"] = ema_eval.top1.into();
                record["top5_ema"] = ema_eval.top5.into();
                record["loss_ema"] = ema_eval.loss.into();
                line += &format!("  |  EMA top-1 {:.2}%  top-5 {:.2}%", 100.0 * ema_eval.top1, 100.0 * ema_eval.top5);
                decisive = ema_eval;
            }
            log.write(&record)?;
            if !opts.quiet {
                eprintln!("epoch {epochs_done}/{}: {line}  ({:.0} s)", exp.schedule.epochs, started.elapsed().as_secs_f64());
            }
            let score = match exp.checkpoint.keep_best_by.unwrap_or(BestMetric::Top1) {
                BestMetric::Top5 => decisive.top5,
                BestMetric::Loss => -decisive.loss,
                _ => decisive.top1,
            };
            is_best = state.best.is_none_or(|best| score > best);
            if is_best {
                state.best = Some(score);
            }
            last_eval = Some(eval);
        }
        if exp.logging.plots {
            log.plot(&run_dir)?;
        }
        if epochs_done % exp.checkpoint.interval_epochs.max(1) == 0 || final_epoch || stopping {
            save_checkpoint(&last_dir, &model, ema.as_ref(), &optim, &state)?;
        }
        if is_best {
            save_checkpoint(&run_dir.join("checkpoints").join("best"), &model, ema.as_ref(), &optim, &state)?;
        }
        if stopping {
            break;
        }
    }
    Ok(TrainSummary { run_dir, last_eval, steps: state.step, seconds: started.elapsed().as_secs_f64() })
}

fn stop_requested(opts: &TrainOptions, state: &RunState) -> bool {
    opts.max_steps.is_some_and(|max| state.step >= max)
}

/// One forward and backward pass: the loss (divided by `accum`, as accumulated gradients sum)
/// against the batch's soft targets (Mixup/CutMix) or label-smoothed one-hot targets.
pub fn train_step(
    model: &Model,
    batch: &Batch,
    exp: &ExperimentConfig,
    num_classes: usize,
    accum: usize,
    device: &Device,
) -> (f32, GradientsParams) {
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let targets = batch
        .soft_targets
        .clone()
        .unwrap_or_else(|| kiln_data::mixup_target(&batch.labels, num_classes, 1.0, exp.augmentation.label_smoothing));
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [batch.len(), num_classes]), device);
    let loss = soft_cross_entropy(model.forward(x), targets).div_scalar(accum as f64);
    let value = loss.clone().into_scalar::<f32>() * accum as f32;
    let grads = GradientsParams::from_grads(loss.backward(), model);
    (value, grads)
}

/// timm's `SoftTargetCrossEntropy`: `mean_b(−Σ_c t_bc · log softmax(z)_bc)`.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, classes]` -> `[1]`
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (targets * log_softmax(logits, 1)).sum_dim(1).mean().neg()
}

/// Top-1/top-5 accuracy, loss, per-class accuracy and confusion matrix over `loader`.
pub fn evaluate(model: &Model, loader: &DataLoader, num_classes: usize, device: &Device) -> Result<EvalResult, DataError> {
    let model = model.valid();
    let device = device.clone().inner();
    let k = num_classes.min(5);
    let (mut top1, mut topk, mut total, mut loss_sum) = (0usize, 0usize, 0usize, 0f64);
    let mut confusion = vec![vec![0usize; num_classes]; num_classes];
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), &device);
        let logits = model.forward(x);
        let log_probs = log_softmax(logits, 1).into_data().try_to_vec::<f32>().expect("f32 logits");
        for (row, &label) in log_probs.chunks(num_classes).zip(&batch.labels) {
            let mut order: Vec<usize> = (0..num_classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            top1 += (order[0] == label) as usize;
            topk += order[..k].contains(&label) as usize;
            confusion[label][order[0]] += 1;
            loss_sum -= row[label] as f64;
            total += 1;
        }
    }
    let per_class = confusion
        .iter()
        .enumerate()
        .map(|(c, row)| {
            let n: usize = row.iter().sum();
            if n == 0 { 0.0 } else { row[c] as f64 / n as f64 }
        })
        .collect();
    let total_f = total.max(1) as f64;
    Ok(EvalResult {
        top1: top1 as f64 / total_f,
        top5: topk as f64 / total_f,
        loss: loss_sum / total_f,
        per_class,
        confusion,
    })
}

/// How the optimiser treats each parameter, by [`ParamId`]: burn's optimiser matches groups
/// against paths that carry enum variant names (`Swin.layers.0...`) where the model's own
/// names (timm's keys) do not, so groups are built from ids.
struct ParamPlan {
    /// One-dimensional parameters (norm scales and shifts, biases) and relative-position tables.
    no_decay: Vec<ParamId>,
    /// Layer-wise lr decay: the parameters whose lr is scaled, grouped by their multiplier.
    lr_scales: Vec<(ParamGroup, f64)>,
    /// Everything outside the classifier head, with `model.freeze_backbone`.
    frozen: HashSet<ParamId>,
}

impl ParamPlan {
    fn new(exp: &ExperimentConfig, model: &LoadedModel) -> Self {
        // learnable parameters only: BatchNorm's running statistics are buffers
        let params: Vec<(ParamId, String, usize)> = model
            .model
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
            for ((id, _, _), scale) in params.iter().zip(model.config.layer_decay_scales(&names, decay)) {
                match by_scale.iter_mut().find(|(s, _)| *s == scale) {
                    Some((_, ids)) => ids.push(*id),
                    None => by_scale.push((scale, vec![*id])),
                }
            }
        }
        let lr_scales = by_scale.into_iter().filter(|(scale, _)| *scale != 1.0).map(|(scale, ids)| (ParamGroup::from_ids(ids), scale)).collect();
        let frozen = if exp.model.freeze_backbone {
            params.iter().filter(|(_, name, _)| model.config.layer_ordinal(name) != LayerOrdinal::Head).map(|(id, _, _)| *id).collect()
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
    fn freeze(&self, model: Model) -> Model {
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
fn save_checkpoint(dir: &Path, model: &LoadedModel, ema: Option<&Ema>, optim: &ModuleOptimizer, state: &RunState) -> Result<(), TrainError> {
    // burn folds the last training forward's BatchNorm statistics in lazily; a validation
    // snapshot applies them, so the checkpoint holds them
    let _ = model.model.valid();
    let partial = dir.with_extension("partial");
    let previous = dir.with_extension("previous");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    model.save(&partial.join("model.bpk"))?;
    if let Some(ema) = ema {
        kiln_models::checkpoint::save_native(&ema.model, &partial.join("ema.bpk"), &model.name, &model.config.to_json())?;
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
fn load_checkpoint(
    dir: &Path,
    model: &mut LoadedModel,
    state: &mut RunState,
    ema: &mut Option<Ema>,
    device: &Device,
) -> Result<PathBuf, TrainError> {
    let previous = dir.with_extension("previous");
    let dir = if dir.exists() { dir.to_path_buf() } else { previous };
    let fail = |reason: String| TrainError::Resume { path: dir.clone(), reason };
    if !dir.exists() {
        return Err(fail("no checkpoint there; run without --resume to start".into()));
    }
    let restored = LoadedModel::from_native(&dir.join("model.bpk"), device)?;
    if restored.config.to_json() != model.config.to_json() {
        return Err(fail("the checkpoint's model configuration differs from the experiment's".into()));
    }
    *model = restored;
    if let Some(ema) = ema {
        let path = dir.join("ema.bpk");
        if !path.exists() {
            return Err(fail("train.ema is on but the checkpoint has no ema.bpk (it was saved without EMA)".into()));
        }
        *ema = Ema::resume(LoadedModel::from_native(&path, &device.clone().inner())?.model, ema.decay());
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
}

const CSV_COLUMNS: [&str; 9] = ["kind", "epoch", "step", "loss", "lr", "images_per_s", "top1", "top5", "time"];

impl MetricsLog {
    fn open(run_dir: &Path, append: bool) -> Result<Self, TrainError> {
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
            writeln!(csv, "{}", CSV_COLUMNS.join(",")).map_err(io(&run_dir.join("metrics.csv")))?;
        }
        Ok(MetricsLog { jsonl, csv, jsonl_path, records })
    }

    fn write(&mut self, record: &serde_json::Value) -> Result<(), TrainError> {
        let mut record = record.clone();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        record["time"] = now.into();
        writeln!(self.jsonl, "{record}").map_err(io(&self.jsonl_path))?;
        let cells: Vec<String> = CSV_COLUMNS
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

/// Evaluates weights (a Kiln checkpoint or a foreign state dict) on the experiment's validation
/// split, the way training evaluates: `kiln eval`.
pub fn evaluate_weights(cfg: &ResolvedConfig, weights: &Path) -> Result<(EvalResult, Vec<String>), TrainError> {
    let device = crate::device(&cfg.experiment.train.device)?;
    let data = data::build(cfg)?;
    let mut model = if kiln_models::checkpoint::native_metadata(weights).is_some() {
        LoadedModel::from_native(weights, &device)?
    } else {
        let mut config = cfg.model.clone();
        config.set_num_classes(data.classes.len());
        let mut model = LoadedModel::build(&cfg.experiment.model.name, config, &device)?;
        let report = model.load_weights(weights)?;
        if report.head_reinitialized {
            return Err(TrainError::Data(DataError::InvalidData(format!(
                "the classifier in {} is not for the {} classes of the validation data",
                weights.display(),
                data.classes.len()
            ))));
        }
        model
    };
    if model.config.num_classes() != data.classes.len() {
        return Err(TrainError::Data(DataError::InvalidData(format!(
            "{} predicts {} classes but the validation data has {}",
            weights.display(),
            model.config.num_classes(),
            data.classes.len()
        ))));
    }
    model.model = model.model.valid();
    let result = evaluate(&model.model, &data.val, data.classes.len(), &device)?;
    Ok((result, data.classes))
}

/// The confusion matrix as a PNG: one `cell × cell` square per (true row, predicted column),
/// darker for a larger share of the row.
pub fn write_confusion_png(confusion: &[Vec<usize>], path: &Path) -> Result<(), TrainError> {
    let n = confusion.len().max(1);
    let cell = (512 / n).clamp(4, 48) as u32;
    let side = cell * n as u32;
    let image = image::GrayImage::from_fn(side, side, |x, y| {
        let (row, col) = ((y / cell) as usize, (x / cell) as usize);
        let total: usize = confusion[row].iter().sum();
        let share = if total == 0 { 0.0 } else { confusion[row][col] as f64 / total as f64 };
        image::Luma([(255.0 * (1.0 - share)).round() as u8])
    });
    let partial = path.with_extension("png.partial");
    image.save_with_format(&partial, image::ImageFormat::Png).map_err(|e| TrainError::Io { path: partial.clone(), reason: e.to_string() })?;
    fs::rename(&partial, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use burn::store::bridge;
    use kiln_models::ModelConfig;
    use kiln_models::swin::SwinConfig;

    use super::*;

    fn experiment(extra: &str) -> ExperimentConfig {
        let text = format!("[model]\nname = \"swin_tiny_patch4_window7_224\"\n{extra}\n[optim]\nname = \"adamw\"\nweight_decay = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
        model.collect(None, None, true).into_iter().map(|t| (t.name.clone(), bridge::into_data(t).unwrap().to_vec::<f32>().unwrap())).collect()
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

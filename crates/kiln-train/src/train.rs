//! The classification training loop. [`train`] reads top to bottom as one run: build, (resume),
//! then per epoch the steps of [`train_step`], an evaluation and a checkpoint.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::module::ParamGroup;
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use burn::tensor::activation::log_softmax;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_data::{Batch, DataError, DataLoader, LoaderPosition};
use kiln_models::{Backbone, LoadedModel, Model, ModelError};
use serde::{Deserialize, Serialize};

use crate::config::schema::{BestMetric, ExperimentConfig, OptimizerName};
use crate::config::{ConfigError, ResolvedConfig};
use crate::data;
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
    let mut optim = optimizer(exp, &model.model);
    let mut state = RunState::default();
    if opts.resume {
        (state, optim) = load_checkpoint(&last_dir, &mut model, optim, &device)?;
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
                model.model = optim.step(lr, model.model, accumulator.grads());
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
                save_checkpoint(&last_dir, &model, &optim, &state)?;
                break 'epochs;
            }
        }
        bar.finish_and_clear();

        let eval = evaluate(&model.model, &data.val, data.classes.len(), &device)?;
        log.write(&serde_json::json!({
            "kind": "eval", "epoch": epoch, "step": state.step, "top1": eval.top1, "top5": eval.top5, "loss": eval.loss,
        }))?;
        if !opts.quiet {
            eprintln!(
                "epoch {}/{}: top-1 {:.2}%  top-5 {:.2}%  val loss {:.4}  ({:.0} s)",
                epoch + 1,
                exp.schedule.epochs,
                100.0 * eval.top1,
                100.0 * eval.top5,
                eval.loss,
                started.elapsed().as_secs_f64()
            );
        }
        let score = match exp.checkpoint.keep_best_by {
            BestMetric::Top1 => eval.top1,
            BestMetric::Top5 => eval.top5,
            BestMetric::Loss => -eval.loss,
        };
        let is_best = state.best.is_none_or(|best| score > best);
        if is_best {
            state.best = Some(score);
        }
        save_checkpoint(&last_dir, &model, &optim, &state)?;
        if is_best {
            save_checkpoint(&run_dir.join("checkpoints").join("best"), &model, &optim, &state)?;
        }
        last_eval = Some(eval);
        if stop_requested(opts, &state) {
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

/// AdamW or SGD; with `no_weight_decay_on_norm_bias`, one-dimensional parameters (norm scales
/// and shifts, biases) and relative-position tables get no weight decay, as timm's
/// `param_groups_weight_decay`.
fn optimizer(exp: &ExperimentConfig, model: &Model) -> ModuleOptimizer {
    let o = &exp.optim;
    let clip = o.clip_grad.map(|c| GradientClippingConfig::Norm(c as f32));
    let no_decay: Vec<String> = model
        .collect(None, None, true)
        .into_iter()
        .filter(|t| t.shape.len() <= 1 || t.name.ends_with("relative_position_bias_table"))
        .map(|t| t.name)
        .collect();
    let group = ParamGroup::from_paths(no_decay);
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

/// Writes model, optimiser and run state into `dir` whole or not at all: everything goes to a
/// sibling `*.partial` directory first, which then replaces `dir` by renames, so an interruption
/// leaves the previous checkpoint (or, mid-swap, `*.previous`) intact.
fn save_checkpoint(dir: &Path, model: &LoadedModel, optim: &ModuleOptimizer, state: &RunState) -> Result<(), TrainError> {
    // burn folds the last training forward's BatchNorm statistics in lazily; a validation
    // snapshot applies them, so the checkpoint holds them
    let _ = model.model.valid();
    let partial = dir.with_extension("partial");
    let previous = dir.with_extension("previous");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    model.save(&partial.join("model.bpk"))?;
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

/// Reads what [`save_checkpoint`] wrote (falling back to `*.previous` if a swap was cut short).
fn load_checkpoint(
    dir: &Path,
    model: &mut LoadedModel,
    optim: ModuleOptimizer,
    device: &Device,
) -> Result<(RunState, ModuleOptimizer), TrainError> {
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
    let optim = optim.load(dir.join("optimizer.bin")).map_err(|e| fail(format!("optimizer state: {e:?}")))?;
    let text = fs::read_to_string(dir.join("state.json")).map_err(|e| fail(e.to_string()))?;
    let state = serde_json::from_str(&text).map_err(|e| fail(format!("state.json: {e}")))?;
    Ok((state, optim))
}

/// `metrics.jsonl` and `metrics.csv` of the run directory, appended line by line.
struct MetricsLog {
    jsonl: File,
    csv: File,
    jsonl_path: PathBuf,
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
        let (jsonl, _) = open("metrics.jsonl")?;
        let (mut csv, existed) = open("metrics.csv")?;
        if !existed {
            writeln!(csv, "{}", CSV_COLUMNS.join(",")).map_err(io(&run_dir.join("metrics.csv")))?;
        }
        Ok(MetricsLog { jsonl, csv, jsonl_path: run_dir.join("metrics.jsonl") })
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
        Ok(())
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

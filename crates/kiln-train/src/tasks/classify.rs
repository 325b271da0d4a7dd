//! Classification: one label per image, (soft-target) cross-entropy, top-1/top-5 accuracy. The
//! [`Task`] the shared loop ([`crate::train_loop`]) runs for `task = "classification"`, and `kiln
//! eval` of a classifier.

use std::fs;
use std::path::Path;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use kiln_data::{Batch, DataError, DataLoader, EpochBatches, EvalTransform, LoaderPosition, RgbImage, Shard};
use kiln_models::{Backbone, LoadedModel, Model};
use serde::Serialize;

use crate::config::ResolvedConfig;
use crate::config::schema::ExperimentConfig;
use crate::data::{self, ClassificationData};
use crate::device::device;
use crate::distributed::{Collective, SingleProcess};
use crate::error::{TrainError, io};
use crate::network::impl_loaded_network;
use crate::train_loop::{Evaluation, Task};

/// The loaders and the label-smoothing of a classification run.
pub struct Classification {
    data: ClassificationData,
    exp: ExperimentConfig,
}

impl Classification {
    /// The experiment's data (this rank's `shard` of it) and its classifier: the head follows
    /// the data unless the experiment sets the class count itself; `model.pretrained` is loaded.
    pub fn build(cfg: &ResolvedConfig, device: &Device, shard: Shard, quiet: bool) -> Result<(Self, LoadedModel), TrainError> {
        let exp = &cfg.experiment;
        let data = data::build(cfg, shard)?;
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
        let mut model = LoadedModel::build(&exp.model.name, model_config, device)?;
        if let Some(weights) = &exp.model.pretrained {
            let report = model.load_weights(weights)?;
            if !quiet {
                eprintln!(
                    "loaded {} tensors from {}{}",
                    report.loaded,
                    weights.display(),
                    if report.head_reinitialized { " (new classifier head)" } else { "" }
                );
            }
        }
        Ok((Self { data, exp: exp.clone() }, model))
    }
}

impl_loaded_network!(LoadedModel, Model, kiln_models::checkpoint::save_native);

impl Task for Classification {
    type Net = LoadedModel;
    type Batch = Batch;
    type Epoch = EpochBatches;
    const METRICS: &'static [&'static str] = &["top1", "top5"];

    fn batches_per_epoch(&self) -> usize {
        self.data.train.batches_per_epoch()
    }
    fn epoch(&self, position: LoaderPosition) -> Result<EpochBatches, DataError> {
        self.data.train.resume(position)
    }
    fn batch_len(batch: &Batch) -> usize {
        batch.len()
    }
    fn loss(&self, module: &Model, batch: &Batch, device: &Device) -> Tensor<1> {
        loss(module, batch, &self.exp, self.data.classes.len(), device)
    }
    fn evaluate(&self, module: &Model, device: &Device, collective: &dyn Collective) -> Result<Evaluation, TrainError> {
        let eval = evaluate(module, &self.data.val, self.data.classes.len(), device, collective)?;
        let metrics = serde_json::json!({ "top1": eval.top1, "top5": eval.top5, "loss": eval.loss });
        Ok(Evaluation {
            metrics: metrics.as_object().expect("an object").clone(),
            line: format!("top-1 {:.2}%  top-5 {:.2}%  val loss {:.4}", 100.0 * eval.top1, 100.0 * eval.top5, eval.loss),
        })
    }
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

/// The loss of a batch against its soft targets (Mixup/CutMix) or label-smoothed one-hot
/// targets.
pub fn loss(model: &Model, batch: &Batch, exp: &ExperimentConfig, num_classes: usize, device: &Device) -> Tensor<1> {
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let targets = batch
        .soft_targets
        .clone()
        .unwrap_or_else(|| kiln_data::mixup_target(&batch.labels, num_classes, 1.0, exp.augmentation.label_smoothing));
    let targets = Tensor::<2>::from_data(TensorData::new(targets, [batch.len(), num_classes]), device);
    soft_cross_entropy(model.forward(x), targets)
}

/// timm's `SoftTargetCrossEntropy`: `mean_b(−Σ_c t_bc · log softmax(z)_bc)`.
///
/// # Shapes
/// - `logits`, `targets`: `[batch, classes]` -> `[1]`
pub fn soft_cross_entropy(logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
    (targets * log_softmax(logits, 1)).sum_dim(1).mean().neg()
}

/// Top-1/top-5 accuracy, loss, per-class accuracy and confusion matrix over `loader`, whose
/// shard of the data this rank evaluates; the counts are summed over the ranks of `collective`.
/// Each example's loss is kept in its own slot and the slots summed in data-set order, so the
/// mean loss, like the counts, is the same bit for bit on any number of ranks.
pub fn evaluate(model: &Model, loader: &DataLoader, num_classes: usize, device: &Device, collective: &dyn Collective) -> Result<EvalResult, DataError> {
    let model = model.valid();
    let device = device.clone().inner();
    let k = num_classes.min(5);
    let (mut top1, mut topk) = (0usize, 0usize);
    let mut confusion = vec![vec![0usize; num_classes]; num_classes];
    let mut losses = vec![0f64; loader.dataset().len()];
    for batch in loader.epoch(0) {
        let batch = batch?;
        let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), &device);
        let logits = model.forward(x);
        let log_probs = log_softmax(logits, 1).into_data().try_to_vec::<f32>().expect("f32 logits");
        for ((row, &label), &index) in log_probs.chunks(num_classes).zip(&batch.labels).zip(&batch.indices) {
            let mut order: Vec<usize> = (0..num_classes).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            top1 += (order[0] == label) as usize;
            topk += order[..k].contains(&label) as usize;
            confusion[label][order[0]] += 1;
            losses[index] = -row[label] as f64;
        }
    }
    // one exchange: [top-1, top-k, confusion..., losses...]
    let mut totals: Vec<f64> = [top1, topk].into_iter().chain(confusion.iter().flatten().copied()).map(|n| n as f64).collect();
    totals.extend_from_slice(&losses);
    collective.sum_f64(&mut totals);
    let (top1, topk) = (totals[0] as usize, totals[1] as usize);
    let counts = &totals[2..2 + num_classes * num_classes];
    let confusion: Vec<Vec<usize>> = counts.chunks(num_classes).map(|row| row.iter().map(|&n| n as usize).collect()).collect();
    let loss_sum: f64 = totals[2 + num_classes * num_classes..].iter().sum();
    let total: usize = confusion.iter().flatten().sum();
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

/// Evaluates weights (a Kiln checkpoint or a foreign state dict) on the experiment's validation
/// split, the way training evaluates: `kiln eval`.
pub fn evaluate_weights(cfg: &ResolvedConfig, weights: &Path) -> Result<(EvalResult, Vec<String>), TrainError> {
    let device = device(&cfg.experiment.train.device)?;
    let data = data::build(cfg, Shard::WHOLE)?;
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
    let result = evaluate(&model.model, &data.val, data.classes.len(), &device, &SingleProcess)?;
    Ok((result, data.classes))
}

/// Class logits of one image preprocessed by `transform` (the model's evaluation transform,
/// [`data::eval_transform`], as the validation loader applies it): what `kiln predict` prints.
///
/// # Shapes
/// - returns `[1, num_classes]`
pub fn predict_image(model: &Model, transform: &EvalTransform, image: &RgbImage, device: &Device) -> Tensor<2> {
    let input = transform.apply(image);
    let [channels, height, width] = input.shape();
    let x = Tensor::<1>::from_data(TensorData::new(input.data, [channels * height * width]), device).reshape([1, channels, height, width]);
    model.forward(x)
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


//! Semantic segmentation: a decode head on any backbone, pixel cross-entropy with the ignore
//! index, mIoU/aAcc/mAcc at the original resolution. The [`Task`] the shared loop
//! ([`crate::train_loop`]) runs for `task = "segmentation"`, and `kiln eval` of a segmenter.

use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use kiln_data::{
    DataError, EpochBatches, IGNORE_INDEX, Interpolation, LoaderConfig, LoaderPosition, SegBatch, SegClasses, SegDataset,
    SegFolder, SegFolderConfig, SegLoader, SegSplit, SegSubset, SegTransformConfig, Shard,
};
use kiln_models::segment::{AuxHeadConfig, LoadedSegmenter, Segmenter, SegmenterConfig};
use kiln_models::checkpoint;
use kiln_nn::resize_bilinear;
use serde::Serialize;

use crate::config::ResolvedConfig;
use crate::config::schema::TestMode;
use crate::data::normalisation;
use crate::device::device;
use crate::distributed::{Collective, SingleProcess};
use crate::error::TrainError;
use crate::network::impl_loaded_network;
use crate::seg_inference::{SlideWindow, infer, infer_tta};
use crate::seg_metrics::{SegConfusion, SegMetrics};
use crate::train_loop::{Evaluation, Task};

/// The loaders, classes and loss/inference settings of a segmentation run.
pub struct Segmentation {
    train: SegLoader,
    val: SegLoader,
    /// Class names and display colours, by label.
    pub classes: SegClasses,
    aux_weight: f64,
    inference: Inference,
}

/// How evaluation passes an image through the segmenter.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Sliding windows, or `None` for the whole image at once.
    pub slide: Option<SlideWindow>,
    /// Test-time scale factors; empty for one pass.
    pub tta_scales: Vec<f64>,
    /// Test-time mirror images.
    pub tta_flip: bool,
}

/// A segmenter's evaluation: the metrics, the mean pixel loss and the confusion counts.
#[derive(Debug, Clone, Serialize)]
pub struct SegEvalResult {
    /// mIoU, aAcc, mAcc and their per-class parts.
    #[serde(flatten)]
    pub metrics: SegMetrics,
    /// Mean cross-entropy over the labelled pixels at the original resolution.
    pub loss: f64,
    /// `[truth][predicted]` pixel counts.
    #[serde(skip)]
    pub confusion: SegConfusion,
}

impl_loaded_network!(LoadedSegmenter, Segmenter, |module: &Segmenter, path, name: &str, json: &str| {
    checkpoint::save_native_kind(module, path, name, json, checkpoint::KIND_SEGMENTER)
});

/// The class names and colours an experiment's data has: `data.classes_file`, else
/// `<root>/classes.txt`, else ADE20K's 150 when the labels follow ADE20K's convention
/// (`reduce_zero_label`).
pub fn experiment_classes(cfg: &ResolvedConfig) -> Result<SegClasses, DataError> {
    let data = &cfg.experiment.data;
    if let Some(path) = &data.classes_file {
        return SegClasses::read(path);
    }
    let beside = data.root.as_ref().map(|r| r.join("classes.txt"));
    match beside {
        Some(path) if path.is_file() => SegClasses::read(path),
        _ if data.reduce_zero_label.unwrap_or(true) => Ok(SegClasses::ade20k()),
        _ => Err(DataError::InvalidData(format!(
            "no class list: {} does not exist and data.reduce_zero_label = false says the labels are not ADE20K's; \
             set data.classes_file, or point data.root at the data set (for fashion-scenes: run `kiln data fashion-scenes`)",
            beside.map_or_else(|| "data.root/classes.txt".to_string(), |p| p.display().to_string())
        ))),
    }
}

/// The experiment's segmenter configuration for `num_classes` classes.
pub fn segmenter_config(cfg: &ResolvedConfig, num_classes: usize) -> SegmenterConfig {
    let seg = &cfg.experiment.segmentation;
    let aux = AuxHeadConfig::new()
        .with_enabled(seg.aux_head)
        .with_in_index(seg.aux_in_index)
        .with_channels(seg.aux_channels)
        .with_weight(seg.aux_weight);
    SegmenterConfig::new(cfg.model.clone(), num_classes)
        .with_head(seg.decode_head)
        .with_channels(seg.channels)
        .with_pool_scales(seg.pool_scales.clone())
        .with_dropout(seg.dropout)
        .with_aux(aux)
}

/// The evaluation settings of the experiment.
pub fn experiment_inference(cfg: &ResolvedConfig) -> Inference {
    let seg = &cfg.experiment.segmentation;
    let slide = match seg.test_mode {
        TestMode::Whole => None,
        TestMode::Slide => Some(SlideWindow {
            crop_size: seg.crop_size.expect("filled in by load").to_array(),
            stride: seg.test_stride.expect("filled in by load").to_array(),
        }),
    };
    Inference { slide, tta_scales: seg.tta_scales.clone(), tta_flip: seg.tta_flip }
}

/// One split of the experiment's data set.
fn open_split(cfg: &ResolvedConfig, classes: &SegClasses, split: &str, train: bool) -> Result<Arc<dyn SegDataset>, DataError> {
    let data = &cfg.experiment.data;
    let root = data.root.clone().ok_or_else(|| DataError::InvalidData("data.root is required for the ADE20K layout".into()))?;
    let subset = match (train, &data.image_list, data.max_images, data.max_val_images) {
        (true, Some(list), _, _) => SegSubset::ListFile(list.clone()),
        (true, None, Some(count), _) => SegSubset::Random { count, seed: cfg.experiment.train.seed },
        (false, _, _, Some(count)) => SegSubset::First(count),
        _ => SegSubset::All,
    };
    let split = if split == "training" { SegSplit::Training } else { SegSplit::Validation };
    let config = SegFolderConfig {
        reduce_zero_label: data.reduce_zero_label.unwrap_or(true),
        classes: classes.clone(),
        subset,
    };
    Ok(Arc::new(SegFolder::open(&root, split, &config)?))
}

/// The joint pipeline of the experiment: training (`scale`) or evaluation (`test_scale`).
fn transform_config(cfg: &ResolvedConfig, train: bool) -> SegTransformConfig {
    let exp = &cfg.experiment;
    let seg = &exp.segmentation;
    let [mean, std] = normalisation(cfg);
    SegTransformConfig {
        crop_size: seg.crop_size.expect("filled in by load").to_array(),
        scale: if train { seg.scale } else { seg.test_scale.expect("filled in by load") },
        ratio_range: seg.ratio_range,
        cat_max_ratio: seg.cat_max_ratio,
        flip_prob: seg.flip_prob,
        photometric: seg.photometric,
        interpolation: Interpolation::Bilinear,
        eval_size: None,
        mean,
        std,
        channels: cfg.model.in_chans(),
    }
}

/// The validation loader of an experiment (batch size `data.val_batch_size`), for this rank's
/// `shard` of the batches.
fn val_loader(cfg: &ResolvedConfig, classes: &SegClasses, shard: Shard) -> Result<SegLoader, DataError> {
    let data = &cfg.experiment.data;
    let dataset = open_split(cfg, classes, data.val_split.as_deref().unwrap_or("validation"), false)?;
    let transform = Arc::new(transform_config(cfg, false).build_eval()?);
    let mut loader = LoaderConfig { shard, ..LoaderConfig::eval(data.val_batch_size.max(1)) };
    loader.workers = data.workers;
    SegLoader::new(dataset, transform, loader)
}

impl Segmentation {
    /// The experiment's data (this rank's `shard` of it) and segmenter; with `model.pretrained`,
    /// the backbone is initialised from that classification checkpoint (or the whole model from
    /// a segmenter checkpoint) and the report says what was loaded and what is new.
    pub fn build(cfg: &ResolvedConfig, device: &Device, shard: Shard, quiet: bool) -> Result<(Self, LoadedSegmenter), TrainError> {
        let exp = &cfg.experiment;
        let data = &exp.data;
        let classes = experiment_classes(cfg)?;
        if let (Some(origin), Some(n)) = (cfg.origin("model.num_classes"), exp.model.num_classes)
            && n != classes.len()
        {
            return Err(TrainError::Data(DataError::InvalidData(format!(
                "model.num_classes = {n} (set at {origin}) but the data set's class list has {} classes",
                classes.len()
            ))));
        }
        let train_set = open_split(cfg, &classes, data.train_split.as_deref().unwrap_or("training"), true)?;
        let train_transform = Arc::new(transform_config(cfg, true).build_train()?);
        let mut loader = LoaderConfig { shard, ..LoaderConfig::train(data.batch_size, exp.train.seed) };
        loader.workers = data.workers;
        let train = SegLoader::new(train_set, train_transform, loader)?;
        let val = val_loader(cfg, &classes, shard)?;

        let mut net = LoadedSegmenter::build(&exp.model.name, segmenter_config(cfg, classes.len()), device)?;
        if let Some(weights) = &exp.model.pretrained {
            let report = net.load_backbone(weights)?;
            if !quiet {
                eprintln!("{} ({})", report.summary(), weights.display());
            }
        }
        let aux_weight = if exp.segmentation.aux_head { exp.segmentation.aux_weight } else { 0.0 };
        Ok((Self { train, val, classes, aux_weight, inference: experiment_inference(cfg) }, net))
    }
}

/// mmseg's `CrossEntropyLoss` with `ignore_index` and its default `avg_non_ignore=False`: the
/// per-pixel loss (0 at ignored pixels) averaged over every pixel.
///
/// # Shapes
/// - `logits`: `[batch, classes, H, W]`, `targets`: `[batch, H, W]` -> `[1]`
pub fn pixel_cross_entropy(logits: Tensor<4>, targets: Tensor<3, Int>) -> Tensor<1> {
    let [b, _, h, w] = logits.dims();
    let (picked, labelled) = log_probs_at_labels(log_softmax(logits, 1), targets);
    (picked * labelled).sum().div_scalar((b * h * w) as f64).neg()
}

/// Each pixel's log-probability of its label, and 1 where the pixel is labelled (0 where it
/// is ignored).
///
/// # Shapes
/// - `log_probs`: `[batch, classes, H, W]`, `targets`: `[batch, H, W]` -> two `[batch, H, W]`
fn log_probs_at_labels(log_probs: Tensor<4>, targets: Tensor<3, Int>) -> (Tensor<3>, Tensor<3>) {
    let ignored = targets.clone().equal_elem(IGNORE_INDEX as i64);
    let labelled = ignored.clone().bool_not().float();
    // any class stands in for the ignored label; its value is multiplied by 0
    let safe = targets.mask_fill(ignored, 0);
    (log_probs.gather(1, safe.unsqueeze_dim::<4>(1)).squeeze_dim::<3>(1), labelled)
}

impl Task for Segmentation {
    type Net = LoadedSegmenter;
    type Batch = SegBatch;
    type Epoch = EpochBatches<SegBatch>;
    const METRICS: &'static [&'static str] = &["mIoU", "aAcc", "mAcc"];

    fn batches_per_epoch(&self) -> usize {
        self.train.batches_per_epoch()
    }
    fn epoch(&self, position: LoaderPosition) -> Result<EpochBatches<SegBatch>, DataError> {
        self.train.resume(position)
    }
    fn batch_len(batch: &SegBatch) -> usize {
        batch.len()
    }
    fn loss(&self, module: &Segmenter, batch: &SegBatch, device: &Device) -> Tensor<1> {
        segmentation_loss(module, batch, self.aux_weight, device)
    }
    fn evaluate(&self, module: &Segmenter, device: &Device, collective: &dyn Collective) -> Result<Evaluation, TrainError> {
        let eval = evaluate(module, &self.val, self.classes.len(), &self.inference, device, collective)?;
        let m = &eval.metrics;
        let metrics = serde_json::json!({ "mIoU": m.miou, "aAcc": m.aacc, "mAcc": m.macc, "loss": eval.loss });
        Ok(Evaluation {
            metrics: metrics.as_object().expect("an object").clone(),
            line: format!(
                "mIoU {:.2}%  aAcc {:.2}%  mAcc {:.2}%  val loss {:.4}",
                100.0 * m.miou,
                100.0 * m.aacc,
                100.0 * m.macc,
                eval.loss
            ),
        })
    }
}

/// `CE(logits) + aux_weight · CE(aux_logits)` of a training batch.
pub fn segmentation_loss(module: &Segmenter, batch: &SegBatch, aux_weight: f64, device: &Device) -> Tensor<1> {
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let targets = Tensor::<3, Int>::from_data(TensorData::new(batch.masks.clone(), batch.mask_shape), device);
    let out = module.forward_train(x);
    let loss = pixel_cross_entropy(out.logits, targets.clone());
    match out.aux_logits {
        Some(aux) if aux_weight > 0.0 => loss + pixel_cross_entropy(aux, targets).mul_scalar(aux_weight),
        _ => loss,
    }
}

/// mIoU, aAcc, mAcc and the labelled-pixel loss over `loader`, predictions resized to each
/// mask's (original) size. This rank evaluates the loader's shard and the counts are summed over
/// the ranks of `collective`; each batch's loss has a slot (at its first example's index) and
/// the slots are summed in order, so the loss is the same bit for bit on any number of ranks.
pub fn evaluate(
    module: &Segmenter,
    loader: &SegLoader,
    num_classes: usize,
    inference: &Inference,
    device: &Device,
    collective: &dyn Collective,
) -> Result<SegEvalResult, DataError> {
    let module = module.valid();
    let device = device.clone().inner();
    let mut confusion = SegConfusion::new(num_classes);
    // [labelled pixels, the batches' loss sums by first example...]
    let mut sums = vec![0f64; 1 + loader.dataset().len()];
    for batch in loader.epoch(0) {
        let batch = batch?;
        let [_, h, w] = batch.mask_shape;
        let log_probs = predict_log_probs(&module, &batch, inference, [h, w], &device);
        let targets = Tensor::<3, Int>::from_data(TensorData::new(batch.masks.clone(), batch.mask_shape), &device);
        let predicted = log_probs.clone().argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("class indices");
        let predicted: Vec<usize> = predicted.into_iter().map(|p| p as usize).collect();
        confusion.add(&predicted, &batch.masks, IGNORE_INDEX as i64);
        let (picked, labelled) = log_probs_at_labels(log_probs, targets);
        sums[1 + batch.indices[0]] = -(picked * labelled.clone()).sum().into_scalar::<f32>() as f64;
        sums[0] += labelled.sum().into_scalar::<f32>() as f64;
    }
    confusion.sum_over_ranks(collective);
    collective.sum_f64(&mut sums);
    let loss_sum: f64 = sums[1..].iter().sum();
    Ok(SegEvalResult { metrics: confusion.metrics(), loss: loss_sum / sums[0].max(1.0), confusion })
}

/// Class log-probabilities of a batch at `size` (the masks' size), by the inference settings.
///
/// # Shapes
/// - returns `[batch, classes, size[0], size[1]]`
pub fn predict_log_probs(module: &Segmenter, batch: &SegBatch, inference: &Inference, size: [usize; 2], device: &Device) -> Tensor<4> {
    let x = Tensor::<4>::from_data(TensorData::new(batch.images.clone(), batch.shape), device);
    let network = |x: Tensor<4>| module.forward(x);
    if inference.tta_scales.is_empty() && !inference.tta_flip {
        log_softmax(resize_bilinear(infer(&network, x, inference.slide), size), 1)
    } else {
        let scales = if inference.tta_scales.is_empty() { vec![1.0] } else { inference.tta_scales.clone() };
        resize_bilinear(infer_tta(&network, x, inference.slide, &scales, inference.tta_flip), size).clamp_min(1e-12).log()
    }
}

/// Evaluates a Kiln segmenter checkpoint, or a segmenter initialised from another checkpoint,
/// on the experiment's validation split: `kiln eval` of a segmentation experiment.
pub fn evaluate_weights(cfg: &ResolvedConfig, weights: &Path) -> Result<(SegEvalResult, SegClasses), TrainError> {
    let device = device(&cfg.experiment.train.device)?;
    let classes = experiment_classes(cfg)?;
    let net = load_segmenter(weights, classes.len(), &device)?;
    let val = val_loader(cfg, &classes, Shard::WHOLE)?;
    let result = evaluate(&net.model, &val, classes.len(), &experiment_inference(cfg), &device, &SingleProcess)?;
    Ok((result, classes))
}

/// A Kiln segmenter checkpoint for `num_classes` classes, checked.
pub fn load_segmenter(weights: &Path, num_classes: usize, device: &Device) -> Result<LoadedSegmenter, TrainError> {
    let net = LoadedSegmenter::from_native(weights, device)?;
    if net.config.num_classes != num_classes {
        return Err(TrainError::Data(DataError::InvalidData(format!(
            "{} predicts {} classes but the data set has {num_classes}",
            weights.display(),
            net.config.num_classes
        ))));
    }
    Ok(net)
}

/// The label map a segmenter predicts for one image, at the image's size, with the
/// experiment's evaluation preprocessing and inference settings: what `kiln predict` writes.
pub fn predict_image(module: &Segmenter, cfg: &ResolvedConfig, image: &kiln_data::RgbImage, device: &Device) -> Result<kiln_data::GrayImage, DataError> {
    use kiln_data::SegTransform;
    let (width, height) = image.dimensions();
    let transform = transform_config(cfg, false).build_eval()?;
    let example = transform.transform(image, &kiln_data::GrayImage::new(width, height), &mut kiln_data::Rng::seed_from_u64(0));
    let [c, h, w] = example.image.shape();
    let batch = SegBatch {
        images: example.image.data,
        shape: [1, c, h, w],
        masks: Vec::new(),
        mask_shape: [1, height as usize, width as usize],
        indices: vec![0],
        position: LoaderPosition::default(),
    };
    let log_probs = predict_log_probs(&module.valid(), &batch, &experiment_inference(cfg), [height as usize, width as usize], &device.clone().inner());
    let labels = log_probs.argmax(1).into_data().convert::<i64>().try_to_vec::<i64>().expect("class indices");
    let labels: Vec<u8> = labels.into_iter().map(|l| l.clamp(0, 254) as u8).collect();
    Ok(kiln_data::GrayImage::from_raw(width, height, labels).expect("one label per pixel"))
}

#[cfg(test)]
mod tests {
    use kiln_models::ModelConfig;
    use kiln_models::swin::SwinConfig;

    use super::*;

    fn batch(device: &Device) -> SegBatch {
        let x = Tensor::<4>::random([2, 3, 16, 16], burn::tensor::Distribution::Normal(0.0, 1.0), device);
        SegBatch {
            images: x.into_data().try_to_vec::<f32>().unwrap(),
            shape: [2, 3, 16, 16],
            masks: vec![0; 2 * 16 * 16],
            mask_shape: [2, 16, 16],
            indices: vec![0, 1],
            position: LoaderPosition::default(),
        }
    }

    #[test]
    fn a_sliding_window_that_covers_the_image_predicts_as_the_whole_image() {
        let device = Device::flex();
        let backbone = ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 1], vec![1, 2], 4).with_patch_size(2).with_num_classes(3));
        let config = SegmenterConfig::new(backbone, 5).with_channels(8).with_aux(AuxHeadConfig::new().with_channels(8));
        let net = config.init(&device).unwrap().valid();
        let batch = batch(&device);
        let whole = Inference { slide: None, tta_scales: Vec::new(), tta_flip: false };
        let expected = predict_log_probs(&net, &batch, &whole, [16, 16], &device);
        for (crop_size, stride) in [([16, 16], [8, 8]), ([24, 32], [16, 16])] {
            let slide = Inference { slide: Some(SlideWindow { crop_size, stride }), ..whole.clone() };
            let got = predict_log_probs(&net, &batch, &slide, [16, 16], &device);
            let diff = (got - expected.clone()).abs().max().into_scalar::<f32>();
            assert_eq!(diff, 0.0, "crop {crop_size:?}");
        }
    }

    #[test]
    fn pixel_cross_entropy_ignores_255_and_averages_over_every_pixel_as_mmseg() {
        let device = Device::flex();
        // two pixels, two classes: logits (0, ln 3) -> p = (1/4, 3/4)
        let logits = Tensor::<4>::from_data(TensorData::new(vec![0.0f32, 0.0, 3f32.ln(), 3f32.ln()], [1, 2, 1, 2]), &device);
        let targets = Tensor::<3, Int>::from_data(TensorData::new(vec![1i64, 255], [1, 1, 2]), &device);
        let loss = pixel_cross_entropy(logits, targets).into_scalar::<f32>();
        // (−ln 3/4 + 0) / 2 pixels
        assert!((loss - (-(0.75f32).ln() / 2.0)).abs() < 1e-6, "{loss}");
    }
}

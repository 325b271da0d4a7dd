//! The typed experiment: one struct per TOML section, unknown keys rejected, every field with
//! timm's `train.py` default where timm has one (timm 1.0).
//!
//! Fields that are `Option` and documented "filled in when resolved" are `None` only in what the
//! files say; [`load`](super::load) fills them from the model's registered defaults or the data,
//! so the rendered run configuration spells every value out.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use kiln_data::{ErasingMode, TrainInterpolation};
use kiln_models::segment::HeadKind;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A whole experiment: what `kiln train FILE` runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// What is learned.
    #[serde(default)]
    pub task: Task,
    /// The network.
    pub model: ModelSection,
    /// The images and labels.
    #[serde(default)]
    pub data: DataSection,
    /// Train-time augmentation and the input normalisation.
    #[serde(default)]
    pub augmentation: AugmentationSection,
    /// The optimiser.
    #[serde(default)]
    pub optim: OptimSection,
    /// The learning-rate schedule and the length of training.
    #[serde(default)]
    pub schedule: ScheduleSection,
    /// Seed, accumulation, EMA, device.
    #[serde(default)]
    pub train: TrainSection,
    /// Validation during training.
    #[serde(default)]
    pub eval: EvalSection,
    /// What is saved and when.
    #[serde(default)]
    pub checkpoint: CheckpointSection,
    /// Decode heads, joint image/mask pipeline and test-time inference of `task =
    /// "segmentation"`.
    #[serde(default)]
    pub segmentation: SegmentationSection,
    /// Progress, metrics files, plots.
    #[serde(default)]
    pub logging: LoggingSection,
}

/// What is learned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// One label per image; softmax cross-entropy, top-1/top-5 accuracy.
    #[default]
    Classification,
    /// One label per pixel (mmsegmentation's task): a decode head on the backbone's feature
    /// maps, pixel cross-entropy with an ignore index, mIoU/aAcc/mAcc.
    Segmentation,
}

/// `[model]`: a registered model name plus what changes about it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Registered (timm) name, e.g. `swin_tiny_patch4_window7_224`; `kiln models` lists them.
    pub name: String,
    /// Weights to start from: a timm state dict (`.safetensors` / `.pth`) or a Kiln checkpoint.
    /// Relative paths are relative to the working directory. Random initialisation without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Classes of the head. Without it: the number of classes of the data when the config knows
    /// it (Fashion-MNIST, a `class_list`), otherwise whatever the image folder holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<usize>,
    /// Input channels (1 for grayscale data read as luma). Filled in when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_chans: Option<usize>,
    /// Input size the model is built for: a side (`224`) or `[height, width]`. Filled in when
    /// resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub img_size: Option<ImgSize>,
    /// Stochastic depth at the last block (timm `--drop-path`). Filled in when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_path_rate: Option<f64>,
    /// Dropout (timm `--drop`). Filled in when resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_rate: Option<f64>,
    /// Train only the classifier head; needs `pretrained`.
    #[serde(default)]
    pub freeze_backbone: bool,
    /// Architecture fields set on top of the registered model's configuration, named as in the
    /// family's config struct (`embed_dim`, `depths`, `num_heads`, `window_size`, `patch_size`
    /// for Swin). Fields the family does not have are rejected.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arch: BTreeMap<String, toml::Value>,
}

/// An input size: square or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImgSize {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImgSize {
    /// `[height, width]`.
    pub fn to_array(self) -> [usize; 2] {
        [self.height, self.width]
    }
}

impl From<[usize; 2]> for ImgSize {
    fn from([height, width]: [usize; 2]) -> Self {
        Self { height, width }
    }
}

impl Serialize for ImgSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.height == self.width {
            serializer.serialize_u64(self.height as u64)
        } else {
            self.to_array().serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ImgSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ImgSizeVisitor;
        impl<'de> Visitor<'de> for ImgSizeVisitor {
            type Value = ImgSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an image side such as 224, or [height, width]")
            }
            fn visit_u64<E: de::Error>(self, side: u64) -> Result<ImgSize, E> {
                let side = usize::try_from(side).map_err(E::custom)?;
                Ok(ImgSize { height: side, width: side })
            }
            fn visit_i64<E: de::Error>(self, side: i64) -> Result<ImgSize, E> {
                let side = u64::try_from(side).map_err(|_| E::invalid_value(de::Unexpected::Signed(side), &self))?;
                self.visit_u64(side)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ImgSize, A::Error> {
                let height = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let width = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(3, &self));
                }
                Ok(ImgSize { height, width })
            }
        }
        deserializer.deserialize_any(ImgSizeVisitor)
    }
}

/// `[data]`: which images, which labels, how they are batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Where the images come from.
    pub dataset: DatasetKind,
    /// Dataset directory (relative to the working directory). Fashion-MNIST defaults to
    /// `datasets/fashion-mnist` (shipped); an image folder has no default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Training split: a sub-directory of an image folder (`train`), or Fashion-MNIST's `train`.
    /// Filled in when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub train_split: Option<String>,
    /// Validation split: `val` for an image folder, `test` (t10k) for Fashion-MNIST. Filled in
    /// when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub val_split: Option<String>,
    /// Keep only these classes: a list of class (folder) names, or a path to a text file with one
    /// per line. Labels are renumbered `0..k` in the data set's own class order (sorted names for
    /// an image folder, label order for Fashion-MNIST), not in the list's order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_list: Option<ClassList>,
    /// Keep at most this many training images per class.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_class: Option<usize>,
    /// Keep this fraction of the training images, per class, in `(0, 1]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fraction: Option<f64>,
    /// How image channels meet `model.in_chans`: `luma` (one channel) or `expand_rgb` (a gray
    /// image repeated to three). Filled in when resolved: `luma` for one input channel,
    /// `expand_rgb` for Fashion-MNIST into three; left unset for colour image folders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grayscale: Option<GrayscaleMode>,
    /// Zero-pad every image, centred, to this square side before anything else (Fashion-MNIST's
    /// 28x28 to 32x32 so a window-4, patch-2 Swin tiles it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pad_to: Option<usize>,
    /// Segmentation label maps: 0 means "unlabelled" and becomes the ignore index 255, every
    /// other label moves down by one (mmseg `reduce_zero_label`). Filled in when resolved:
    /// true for ADE20K's own 150 classes, false for a data set with its own `classes_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reduce_zero_label: Option<bool>,
    /// Segmentation class names, one per line (optionally followed by `r g b`), in label order
    /// after `reduce_zero_label`. Without it: `<root>/classes.txt` if there is one, otherwise
    /// ADE20K's 150 classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes_file: Option<PathBuf>,
    /// Segmentation: keep only the images whose file stems a text file lists (one per line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_list: Option<PathBuf>,
    /// Segmentation: keep at most this many training images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_images: Option<usize>,
    /// Segmentation: keep at most this many validation images.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_val_images: Option<usize>,
    /// Segmentation: validation images per batch. 1 (mmseg's) lets every image keep its own
    /// size; more needs images of one size.
    pub val_batch_size: usize,
    /// Decoding and augmentation threads (timm `-j`, default 4); 0 decodes on the training
    /// thread.
    pub workers: usize,
    /// Images per step on the device (timm `-b`, default 128). The optimiser sees
    /// `batch_size * train.accum_steps` per update.
    pub batch_size: usize,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            dataset: DatasetKind::FashionMnist,
            root: None,
            train_split: None,
            val_split: None,
            class_list: None,
            per_class: None,
            fraction: None,
            grayscale: None,
            pad_to: None,
            reduce_zero_label: None,
            classes_file: None,
            image_list: None,
            max_images: None,
            max_val_images: None,
            val_batch_size: 1,
            workers: 4,
            batch_size: 128,
        }
    }
}

/// Where the images come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetKind {
    /// Fashion-MNIST idx files (10 classes, 28x28 gray), shipped in `datasets/fashion-mnist`.
    #[default]
    FashionMnist,
    /// ImageNet layout: `<root>/<split>/<class>/<image>`.
    ImageFolder,
    /// ADE20K layout for segmentation: `<root>/images/<split>/*.jpg` with label maps
    /// `<root>/annotations/<split>/*.png`.
    Ade20k,
}

impl DatasetKind {
    /// Name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FashionMnist => "fashion_mnist",
            Self::ImageFolder => "image_folder",
            Self::Ade20k => "ade20k",
        }
    }
}

/// A class subset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClassList {
    /// The class names, in label order.
    Names(Vec<String>),
    /// A text file with one class name per line (relative to the working directory).
    File(PathBuf),
}

impl Serialize for ClassList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Names(names) => names.serialize(serializer),
            Self::File(path) => path.serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ClassList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ClassListVisitor;
        impl<'de> Visitor<'de> for ClassListVisitor {
            type Value = ClassList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of class names, or the path of a text file with one per line")
            }
            fn visit_str<E: de::Error>(self, path: &str) -> Result<ClassList, E> {
                Ok(ClassList::File(PathBuf::from(path)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClassList, A::Error> {
                let mut names = Vec::new();
                while let Some(name) = seq.next_element::<String>()? {
                    names.push(name);
                }
                Ok(ClassList::Names(names))
            }
        }
        deserializer.deserialize_any(ClassListVisitor)
    }
}

/// How image channels meet the model's input channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrayscaleMode {
    /// One channel: colour images are converted to luma (Pillow's `L`), gray ones kept.
    Luma,
    /// Three channels: gray images repeated (Pillow's `RGB` conversion), colour ones kept.
    ExpandRgb,
}

/// `[augmentation]`: train-time transforms (timm `create_transform`) and normalisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentationSection {
    /// RandomResizedCrop area fraction range (timm `--scale`, default `[0.08, 1.0]`);
    /// `[1.0, 1.0]` with `rrc_ratio = [1.0, 1.0]` turns the crop into a plain resize.
    pub rrc_scale: [f64; 2],
    /// RandomResizedCrop aspect-ratio range (timm `--ratio`, default `[3/4, 4/3]`).
    pub rrc_ratio: [f64; 2],
    /// Resize filter of the training crop (timm `--train-interpolation`, default `random`:
    /// bilinear or bicubic per image). Evaluation uses the model's registered filter.
    pub interpolation: TrainInterpolation,
    /// Horizontal-flip probability (timm `--hflip`, default 0.5).
    pub hflip: f64,
    /// timm's RandAugment string (`--aa`), e.g. `rand-m9-mstd0.5-inc1`: sections `m` (magnitude),
    /// `n` (ops per image), `p` (op probability), `mstd` (magnitude noise), `mmax` (magnitude
    /// cap), `inc` (increasing op set). None (the default) turns it off. timm's other policies
    /// (AutoAugment, AugMix) are not implemented by kiln-data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_augment: Option<String>,
    /// Colour-jitter strength (timm `--color-jitter`, default 0.4). As in timm, it is not
    /// applied when `auto_augment` is set (except the `3a` policy).
    pub color_jitter: f64,
    /// Random-erasing probability (timm `--reprob`, default 0).
    pub reprob: f64,
    /// Random-erasing fill (timm `--remode`, default `pixel`).
    pub remode: ErasingMode,
    /// Mixup alpha; mixup is on when > 0 (timm `--mixup`, default 0).
    pub mixup: f64,
    /// CutMix alpha; CutMix is on when > 0 (timm `--cutmix`, default 0).
    pub cutmix: f64,
    /// Probability of mixing a batch when mixup or CutMix is on (timm `--mixup-prob`, 1.0).
    pub mixup_prob: f64,
    /// Probability of CutMix instead of mixup when both are on (timm `--mixup-switch-prob`, 0.5).
    pub mixup_switch_prob: f64,
    /// Label smoothing (timm `--smoothing`, default 0.1).
    pub label_smoothing: f64,
    /// Evaluation centre-crop fraction. Filled in when resolved from the model's defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_pct: Option<f64>,
    /// Per-channel mean, one value per input channel. Filled in when resolved from the model's
    /// defaults (which are for three channels).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation, like `mean`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
}

impl Default for AugmentationSection {
    fn default() -> Self {
        Self {
            rrc_scale: [0.08, 1.0],
            rrc_ratio: [3.0 / 4.0, 4.0 / 3.0],
            interpolation: TrainInterpolation::Random,
            hflip: 0.5,
            auto_augment: None,
            color_jitter: 0.4,
            reprob: 0.0,
            remode: ErasingMode::Pixel,
            mixup: 0.0,
            cutmix: 0.0,
            mixup_prob: 1.0,
            mixup_switch_prob: 0.5,
            label_smoothing: 0.1,
            crop_pct: None,
            mean: None,
            std: None,
        }
    }
}

/// `[optim]`: the optimiser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimSection {
    /// Which optimiser (timm `--opt`, default `sgd`, which in timm is Nesterov SGD).
    pub name: OptimizerName,
    /// Peak learning rate (reached after warm-up). Without it, timm's rule fills it in:
    /// `0.1 * global_batch / 256`, square-rooted for AdamW, where `global_batch =
    /// data.batch_size * train.accum_steps`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    /// Decoupled weight decay (timm `--weight-decay`, default 2e-5).
    pub weight_decay: f64,
    /// SGD momentum (timm `--momentum`, default 0.9); AdamW ignores it.
    pub momentum: f64,
    /// Nesterov momentum for SGD (timm's `sgd` is Nesterov); AdamW ignores it.
    pub nesterov: bool,
    /// AdamW betas (default `[0.9, 0.999]`).
    pub betas: [f64; 2],
    /// AdamW epsilon (default 1e-8).
    pub eps: f64,
    /// Layer-wise lr decay: the layer `i` of `n` (stem 0, head `n`) gets `lr * layer_decay^(n -
    /// i)` (timm `--layer-decay`; off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Clip the global gradient norm to this value (timm `--clip-grad`; off when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_grad: Option<f64>,
    /// No weight decay on normalisation weights, biases and the parameters the model declares
    /// (position tables), as timm's `param_groups_weight_decay` does.
    pub no_weight_decay_on_norm_bias: bool,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            name: OptimizerName::Sgd,
            lr: None,
            weight_decay: 2e-5,
            momentum: 0.9,
            nesterov: true,
            betas: [0.9, 0.999],
            eps: 1e-8,
            layer_decay: None,
            clip_grad: None,
            no_weight_decay_on_norm_bias: true,
        }
    }
}

/// Which optimiser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerName {
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw,
    /// Stochastic gradient descent with (Nesterov) momentum.
    Sgd,
}

/// `[schedule]`: the learning-rate schedule and the length of training. The lr is updated at
/// every optimiser step (timm `--sched-on-updates`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleSection {
    /// Shape after warm-up (timm `--sched`, default `cosine`).
    pub name: ScheduleName,
    /// Training epochs (timm default 300).
    pub epochs: usize,
    /// Training length in optimiser steps instead of epochs, as mmseg's iteration-based
    /// schedules count (`160000` for ADE20K); the data is cycled through as often as needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iters: Option<usize>,
    /// `poly`: exponent of the decay (mmseg `PolyLR(power=1.0)`).
    pub power: f64,
    /// Linear warm-up from `warmup_lr` to `optim.lr`, in epochs (timm default 5). Set this or
    /// `warmup_iters`, not both; without either, 5 epochs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_epochs: Option<usize>,
    /// Linear warm-up in optimiser steps (updates, after accumulation), for recipes that count
    /// steps (MaxViT's 10k).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warmup_iters: Option<usize>,
    /// Floor of the cosine (timm `--min-lr`, default 0).
    pub min_lr: f64,
    /// Learning rate at the start of warm-up (timm `--warmup-lr`, default 1e-5).
    pub warmup_lr: f64,
    /// `step`: epochs between decays (timm `--decay-epochs`, default 90).
    pub decay_epochs: f64,
    /// `step`: factor applied at each decay (timm `--decay-rate`, default 0.1).
    pub decay_rate: f64,
}

impl Default for ScheduleSection {
    fn default() -> Self {
        Self {
            name: ScheduleName::Cosine,
            epochs: 300,
            iters: None,
            power: 1.0,
            warmup_epochs: None,
            warmup_iters: None,
            min_lr: 0.0,
            warmup_lr: 1e-5,
            decay_epochs: 90.0,
            decay_rate: 0.1,
        }
    }
}

/// Shape of the schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleName {
    /// Half-cosine from `optim.lr` to `min_lr` at the last step.
    Cosine,
    /// Multiply by `decay_rate` every `decay_epochs`.
    Step,
    /// `(lr − min_lr)·(1 − t)^power + min_lr` over the steps after warm-up (mmseg's `PolyLR`).
    Poly,
}

/// `[train]`: how the loop runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainSection {
    /// Seed of initialisation, shuffling and augmentation (timm default 42).
    pub seed: u64,
    /// Micro-batches per optimiser step (timm `--grad-accum-steps`, default 1).
    pub accum_steps: usize,
    /// Keep an exponential moving average of the weights (timm `--model-ema`, default off).
    pub ema: bool,
    /// EMA decay per step (timm `--model-ema-decay`, default 0.9998).
    pub ema_decay: f64,
    /// `flex` (CPU), `wgpu` or `cuda`, optionally with an index (`cuda:1`).
    pub device: String,
    /// Train data-parallel on these GPUs of one machine (`["cuda:0", "cuda:1"]`, kiln built with
    /// `--features cuda`): one rank per device, gradients averaged by burn's collectives. Empty:
    /// `device` alone. Across processes and machines, launch with `mpirun` instead (README).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Float precision of the forward and backward passes: `f32`, or `bf16` as PyTorch's
    /// autocast runs it (weights and optimiser in f32, matrix products and convolutions in
    /// bf16, softmax, normalisation and the loss in f32).
    pub precision: Precision,
}

impl Default for TrainSection {
    fn default() -> Self {
        Self { seed: 42, accum_steps: 1, ema: false, ema_decay: 0.9998, device: "flex".to_string(), devices: Vec::new(), precision: Precision::F32 }
    }
}

/// `train.precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: bf16 compute on f32 weights.
    Bf16,
}

/// `[eval]`: validation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EvalSection {
    /// Validate every this many epochs (and after the last).
    pub interval_epochs: usize,
    /// Validate every this many optimiser steps instead (mmseg's `val_interval`, for
    /// iteration-based schedules), and after the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_iters: Option<usize>,
    /// Also validate the EMA weights (needs `train.ema`).
    pub ema: bool,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self { interval_epochs: 1, interval_iters: None, ema: false }
    }
}

/// `[checkpoint]`: what is saved and when (`last` always, `best` by a metric).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckpointSection {
    /// Save `last` every this many epochs (and after the last).
    pub interval_epochs: usize,
    /// Save `last` every this many optimiser steps instead (mmseg's checkpoint `interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_iters: Option<usize>,
    /// Metric that decides `best` (timm `--eval-metric`). Filled in when resolved: top-1 for
    /// classification, mIoU for segmentation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_best_by: Option<BestMetric>,
}

impl Default for CheckpointSection {
    fn default() -> Self {
        Self { interval_epochs: 1, interval_iters: None, keep_best_by: None }
    }
}

/// Metric that decides the `best` checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestMetric {
    /// Highest top-1 accuracy.
    Top1,
    /// Highest top-5 accuracy.
    Top5,
    /// Lowest validation loss.
    Loss,
    /// Highest mean IoU (segmentation).
    #[serde(rename = "mIoU", alias = "miou")]
    Miou,
    /// Highest pixel accuracy (segmentation).
    #[serde(rename = "aAcc", alias = "aacc")]
    Aacc,
    /// Highest mean class accuracy (segmentation).
    #[serde(rename = "mAcc", alias = "macc")]
    Macc,
}

impl BestMetric {
    /// Whether the metric belongs to `task`.
    pub fn fits(self, task: Task) -> bool {
        match self {
            Self::Loss => true,
            Self::Top1 | Self::Top5 => task == Task::Classification,
            Self::Miou | Self::Aacc | Self::Macc => task == Task::Segmentation,
        }
    }
}

/// `[logging]`: progress and the run directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingSection {
    /// Record training metrics every this many optimiser steps (timm `--log-interval`, 50).
    pub interval_iters: usize,
    /// Run directory: resolved config, metrics, plots, checkpoints. Filled in when resolved as
    /// `runs/<experiment file stem>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
    /// Draw loss / accuracy / lr curves as PNG files in the run directory.
    pub plots: bool,
}

impl Default for LoggingSection {
    fn default() -> Self {
        Self { interval_iters: 50, output_dir: None, plots: true }
    }
}

/// `[segmentation]`: the decode heads on the backbone, the joint image/mask training pipeline
/// and test-time inference, with mmsegmentation's ADE20K defaults (UperNet, 512x512 crops).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SegmentationSection {
    /// `upernet` (pyramid pooling + FPN fusion) or `mlp` (SegFormer's lighter all-MLP head).
    pub decode_head: HeadKind,
    /// Channels inside the decode head (mmseg 512).
    pub channels: usize,
    /// UperNet's pyramid-pooling bins (mmseg `[1, 2, 3, 6]`).
    pub pool_scales: Vec<usize>,
    /// Dropout before the classifier of each head (mmseg 0.1).
    pub dropout: f64,
    /// An auxiliary FCN head on a middle feature map, trained with its own loss (mmseg's
    /// UperNet recipes have one).
    pub aux_head: bool,
    /// Channels of the auxiliary head (mmseg 256).
    pub aux_channels: usize,
    /// Weight of the auxiliary loss (mmseg 0.4).
    pub aux_weight: f64,
    /// Feature map the auxiliary head reads; without it the third (mmseg `in_index=2`), or the
    /// second-to-last when there are fewer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aux_in_index: Option<usize>,
    /// Training crop `[height, width]` (mmseg `crop_size`). Filled in when resolved from
    /// `model.img_size`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crop_size: Option<ImgSize>,
    /// Resize target `[long side, short side]` before the ratio (mmseg `scale=(2048, 512)`).
    pub scale: [usize; 2],
    /// Random factor on `scale` (mmseg `ratio_range=(0.5, 2.0)`).
    pub ratio_range: [f64; 2],
    /// A crop is redrawn (up to 10 times) while one class covers more than this share of it
    /// (mmseg `cat_max_ratio=0.75`); 1 turns it off.
    pub cat_max_ratio: f64,
    /// Horizontal-flip probability.
    pub flip_prob: f64,
    /// mmseg's `PhotoMetricDistortion` (brightness, contrast, saturation, hue).
    pub photometric: bool,
    /// Evaluation resize target `[long side, short side]`, aspect kept (mmseg's test `Resize`).
    /// Filled in when resolved from `scale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_scale: Option<[usize; 2]>,
    /// `whole` (one pass per image) or `slide` (windows of `crop_size`).
    pub test_mode: TestMode,
    /// Step between sliding windows. Filled in when resolved for `slide`: two thirds of the
    /// crop (mmseg's 341 for 512).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_stride: Option<ImgSize>,
    /// Test-time augmentation: scale factors (mmseg's `[0.5, 0.75, 1.0, 1.25, 1.5, 1.75]`);
    /// empty for one pass at scale 1.
    pub tta_scales: Vec<f64>,
    /// Test-time augmentation: also predict the mirror image.
    pub tta_flip: bool,
}

impl Default for SegmentationSection {
    fn default() -> Self {
        Self {
            decode_head: HeadKind::UperNet,
            channels: 512,
            pool_scales: vec![1, 2, 3, 6],
            dropout: 0.1,
            aux_head: true,
            aux_channels: 256,
            aux_weight: 0.4,
            aux_in_index: None,
            crop_size: None,
            scale: [2048, 512],
            ratio_range: [0.5, 2.0],
            cat_max_ratio: 0.75,
            flip_prob: 0.5,
            photometric: true,
            test_scale: None,
            test_mode: TestMode::Whole,
            test_stride: None,
            tta_scales: Vec::new(),
            tta_flip: false,
        }
    }
}

/// How an evaluation image passes through a segmenter; the trainer turns `slide` into the
/// [`SlideWindow`](crate::seg_inference::SlideWindow) of `crop_size` and `test_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestMode {
    /// The whole (resized) image at once; the backbone must accept its size.
    Whole,
    /// Overlapping windows of `crop_size`, logits averaged where they overlap.
    Slide,
}

//! What a model family declares about itself, so that the registry, the trainer and the CLI
//! never name it: the [`Family`] trait its configuration implements in the family's own file,
//! and its registered variants ([`Variant`]) with their evaluation defaults ([`PretrainedCfg`]).
//!
//! A family is one file (config, blocks, backbone, key map, `impl Family`) plus one line in
//! `registry.rs`'s `families!` table.

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backbone::{Backbone, LayerOrdinal, is_buffer_field};
use crate::checkpoint::KeyMap;
use crate::error::ModelError;

/// ImageNet mean, as timm's `IMAGENET_DEFAULT_MEAN`.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation, as timm's `IMAGENET_DEFAULT_STD`.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];
/// timm's `IMAGENET_INCEPTION_MEAN` (inputs scaled to [-1, 1]).
pub const INCEPTION_MEAN: [f64; 3] = [0.5, 0.5, 0.5];
/// timm's `IMAGENET_INCEPTION_STD`.
pub const INCEPTION_STD: [f64; 3] = [0.5, 0.5, 0.5];

/// Evaluation defaults that travel with a model name (timm's `pretrained_cfg`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PretrainedCfg {
    /// `[channels, height, width]`.
    pub input_size: [usize; 3],
    /// Fraction of the resized image kept by the centre crop.
    pub crop_pct: f64,
    /// Resize filter name as timm spells it.
    pub interpolation: &'static str,
    /// Per-channel mean.
    pub mean: [f64; 3],
    /// Per-channel standard deviation.
    pub std: [f64; 3],
    /// Classes of the head.
    pub num_classes: usize,
    /// How the eval transform fits the image, as timm spells it: `center` (resize the shorter
    /// side, centre crop) or `squash` (resize both sides, ignoring the aspect ratio, then crop).
    pub crop_mode: &'static str,
}

impl PretrainedCfg {
    /// ImageNet-1k weights: bicubic, ImageNet mean/std, centre crop of `crop_pct`.
    pub const fn imagenet(size: usize, crop_pct: f64) -> Self {
        Self {
            input_size: [3, size, size],
            crop_pct,
            interpolation: "bicubic",
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            num_classes: 1000,
            crop_mode: "center",
        }
    }

    /// The TF-ported high-resolution weights: inception mean/std, the whole image squashed.
    pub const fn inception_squash(size: usize) -> Self {
        Self { mean: INCEPTION_MEAN, std: INCEPTION_STD, crop_mode: "squash", ..Self::imagenet(size, 1.0) }
    }
}

/// One registered model: timm's name, a configuration of type `C`, its evaluation defaults.
/// A family lists its own as `Variant<C>` for any `C` its configuration converts into; the
/// registry asks for `Variant<ModelConfig>` ([`crate::ModelEntry`]).
#[derive(Debug, Clone)]
pub struct Variant<C> {
    /// timm's name.
    pub name: &'static str,
    /// Its configuration.
    pub config: fn() -> C,
    /// Its evaluation defaults.
    pub pretrained: PretrainedCfg,
}

impl<C> Variant<C> {
    /// `name` built by `config`, evaluated with `pretrained`.
    pub const fn new(name: &'static str, config: fn() -> C, pretrained: PretrainedCfg) -> Self {
        Self { name, config, pretrained }
    }
}

/// A model family, implemented by its configuration type in the family's own file: everything
/// the registry, checkpoint import and the trainer ask of a family. Registered once in
/// `registry.rs`'s `families!` table, which builds [`crate::ModelConfig`] and [`crate::Model`]
/// from these methods.
///
/// The configuration also has the public fields `img_size: [usize; 2]`, `in_chans: usize` and
/// `num_classes: usize`, which the registry reads and sets directly (a family without one does
/// not compile in `families!`). Every other field is the family's own.
pub trait Family: Clone + std::fmt::Debug + Serialize + DeserializeOwned {
    /// Name as `kiln models` prints it and Kiln checkpoints record it (`"swin"`).
    const NAME: &'static str;

    /// The backbone it builds.
    type Model: Module + Backbone;

    /// Builds the model, initialised as the reference implementation initialises it.
    fn init(&self, device: &Device) -> Result<Self::Model, ModelError>;

    /// How the family's timm (or official) checkpoints map onto its modules.
    fn key_map(&self) -> KeyMap;

    /// The depth group of a parameter path for layer-wise lr decay, as timm's
    /// `group_matcher(coarse=False)` places it.
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal;

    /// Parameters of rank two or more that are never weight-decayed, as the family's timm
    /// `no_weight_decay()` names them (relative-position tables, position embeddings, tokens).
    /// Parameters of rank ≤ 1 need not be listed: [`crate::ModelConfig::no_weight_decay`] keeps
    /// every one of them out of decay.
    fn no_weight_decay(&self, path: &str) -> bool;

    /// Whether the tensor at `path` is a buffer (state an optimiser never trains, that
    /// `num_params` leaves out) rather than a parameter. Every family's buffers are BatchNorm's
    /// running statistics, wherever a BatchNorm sits.
    fn is_buffer(&self, path: &str) -> bool {
        is_buffer_field(path.rsplit('.').next().unwrap_or_default())
    }

    /// The family's registered models, in display order (timm's names and `pretrained_cfg`).
    fn variants<C: From<Self>>() -> Vec<Variant<C>>;
}

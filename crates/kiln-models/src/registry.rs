//! Registered model names (timm's), their configurations and pretrained-style defaults.
//!
//! The table is data: one line per variant. `kiln models` prints it.

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, layer_decay_scales};
use crate::checkpoint::{self, KeyMap, LoadReport};
use crate::davit::{self, DaVit, DaVitConfig};
use crate::error::ModelError;
use crate::atlas::{self, Atlas, AtlasConfig};
use crate::maxvit::{self, MaxVit, MaxVitConfig};
use crate::swin::{self, Swin, SwinConfig};

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
    const fn imagenet(size: usize, crop_pct: f64) -> Self {
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
    const fn inception_squash(size: usize) -> Self {
        Self { mean: INCEPTION_MEAN, std: INCEPTION_STD, crop_mode: "squash", ..Self::imagenet(size, 1.0) }
    }
}

/// One registered model.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// timm's name.
    pub name: &'static str,
    /// Its configuration.
    pub config: fn() -> ModelConfig,
    /// Its evaluation defaults.
    pub pretrained: PretrainedCfg,
}

impl ModelEntry {
    /// Family name (`swin`, ...).
    pub fn family(&self) -> &'static str {
        (self.config)().family()
    }
}

/// Every registered model, in display order.
pub fn registry() -> Vec<ModelEntry> {
    let entry = |name, config, pretrained| ModelEntry { name, config, pretrained };
    vec![
        entry("swin_tiny_patch4_window7_224", || ModelConfig::Swin(SwinConfig::tiny()), PretrainedCfg::imagenet(224, 0.9)),
        entry("swin_small_patch4_window7_224", || ModelConfig::Swin(SwinConfig::small()), PretrainedCfg::imagenet(224, 0.9)),
        entry("swin_base_patch4_window7_224", || ModelConfig::Swin(SwinConfig::base(7, 224)), PretrainedCfg::imagenet(224, 0.9)),
        entry("swin_base_patch4_window12_384", || ModelConfig::Swin(SwinConfig::base(12, 384)), PretrainedCfg::imagenet(384, 1.0)),
        entry("swin_large_patch4_window7_224", || ModelConfig::Swin(SwinConfig::large(7, 224)), PretrainedCfg::imagenet(224, 0.9)),
        entry("swin_large_patch4_window12_384", || ModelConfig::Swin(SwinConfig::large(12, 384)), PretrainedCfg::imagenet(384, 1.0)),
        entry("davit_tiny", || ModelConfig::DaVit(DaVitConfig::tiny()), PretrainedCfg::imagenet(224, 0.95)),
        entry("davit_small", || ModelConfig::DaVit(DaVitConfig::small()), PretrainedCfg::imagenet(224, 0.95)),
        entry("davit_base", || ModelConfig::DaVit(DaVitConfig::base()), PretrainedCfg::imagenet(224, 0.95)),
        entry("davit_large", || ModelConfig::DaVit(DaVitConfig::large()), PretrainedCfg::imagenet(224, 0.95)),
        entry("davit_huge", || ModelConfig::DaVit(DaVitConfig::huge()), PretrainedCfg::imagenet(224, 0.95)),
        // official YalaLab/atlas models, trained on HR-IN100 (100 classes, bicubic resize to 1024)
        entry("atlas_base_1024", || ModelConfig::Atlas(AtlasConfig::base()), PretrainedCfg { num_classes: 100, ..PretrainedCfg::imagenet(1024, 1.0) }),
        entry("atlas_small_1024", || ModelConfig::Atlas(AtlasConfig::small()), PretrainedCfg { num_classes: 100, ..PretrainedCfg::imagenet(1024, 1.0) }),
        entry("maxvit_tiny_tf_224", || ModelConfig::MaxVit(MaxVitConfig::tiny(224)), PretrainedCfg::imagenet(224, 0.95)),
        entry("maxvit_tiny_tf_384", || ModelConfig::MaxVit(MaxVitConfig::tiny(384)), PretrainedCfg::inception_squash(384)),
        entry("maxvit_tiny_tf_512", || ModelConfig::MaxVit(MaxVitConfig::tiny(512)), PretrainedCfg::inception_squash(512)),
        entry("maxvit_small_tf_224", || ModelConfig::MaxVit(MaxVitConfig::small(224)), PretrainedCfg::imagenet(224, 0.95)),
        entry("maxvit_small_tf_384", || ModelConfig::MaxVit(MaxVitConfig::small(384)), PretrainedCfg::inception_squash(384)),
        entry("maxvit_small_tf_512", || ModelConfig::MaxVit(MaxVitConfig::small(512)), PretrainedCfg::inception_squash(512)),
        entry("maxvit_base_tf_224", || ModelConfig::MaxVit(MaxVitConfig::base(224)), PretrainedCfg::imagenet(224, 0.95)),
        entry("maxvit_base_tf_384", || ModelConfig::MaxVit(MaxVitConfig::base(384)), PretrainedCfg::inception_squash(384)),
        entry("maxvit_base_tf_512", || ModelConfig::MaxVit(MaxVitConfig::base(512)), PretrainedCfg::inception_squash(512)),
        entry("maxvit_large_tf_224", || ModelConfig::MaxVit(MaxVitConfig::large(224)), PretrainedCfg::imagenet(224, 0.95)),
        entry("maxvit_large_tf_384", || ModelConfig::MaxVit(MaxVitConfig::large(384)), PretrainedCfg::inception_squash(384)),
        entry("maxvit_large_tf_512", || ModelConfig::MaxVit(MaxVitConfig::large(512)), PretrainedCfg::inception_squash(512)),
    ]
}

/// The entry registered under `name`, or an error suggesting the closest names.
pub fn find(name: &str) -> Result<ModelEntry, ModelError> {
    let all = registry();
    if let Some(entry) = all.iter().find(|e| e.name == name) {
        return Ok(entry.clone());
    }
    let mut scored: Vec<(usize, &str)> = all.iter().map(|e| (edit_distance(name, e.name), e.name)).collect();
    scored.sort();
    let limit = (name.len() / 2).max(3);
    let mut suggestions: Vec<String> = all
        .iter()
        .filter(|e| !name.is_empty() && e.name.contains(name))
        .map(|e| e.name.to_string())
        .collect();
    for (d, n) in scored {
        if d <= limit && !suggestions.iter().any(|s| s == n) {
            suggestions.push(n.to_string());
        }
    }
    suggestions.truncate(3);
    Err(ModelError::UnknownModel { name: name.to_string(), suggestions })
}

/// Levenshtein distance between two names (insertions, deletions, substitutions), for the
/// "did you mean" suggestions of Kiln's errors.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + (ca != cb) as usize).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// The configuration of any family.
#[derive(Debug, Clone)]
pub enum ModelConfig {
    /// Swin Transformer v1.
    Swin(SwinConfig),
    /// DaViT.
    DaVit(DaVitConfig),
    /// Atlas (multi-scale attention).
    Atlas(AtlasConfig),
    /// MaxViT (timm's `*_tf_*` models).
    MaxVit(MaxVitConfig),
}

impl ModelConfig {
    /// Family name as `kiln models` prints it.
    pub fn family(&self) -> &'static str {
        match self {
            Self::Swin(_) => "swin",
            Self::DaVit(_) => "davit",
            Self::Atlas(_) => "atlas",
            Self::MaxVit(_) => "maxvit",
        }
    }

    /// Builds the model (random initialisation as timm).
    pub fn init(&self, device: &Device) -> Result<Model, ModelError> {
        match self {
            Self::Swin(c) => c.init(device).map(Model::Swin),
            Self::DaVit(c) => c.init(device).map(Model::DaVit),
            Self::Atlas(c) => c.init(device).map(Model::Atlas),
            Self::MaxVit(c) => c.init(device).map(Model::MaxVit),
        }
    }

    /// Input `[height, width]` the model is built for.
    pub fn img_size(&self) -> [usize; 2] {
        match self {
            Self::Swin(c) => c.img_size,
            Self::DaVit(c) => c.img_size,
            Self::Atlas(c) => c.img_size,
            Self::MaxVit(c) => c.img_size,
        }
    }

    /// Builds for another input size.
    pub fn set_img_size(&mut self, size: [usize; 2]) {
        match self {
            Self::Swin(c) => c.img_size = size,
            Self::DaVit(c) => c.img_size = size,
            Self::Atlas(c) => c.img_size = size,
            // the window and grid follow (img_size / 32) unless set explicitly, as in timm
            Self::MaxVit(c) => c.img_size = size,
        }
    }

    /// Classes of the head.
    pub fn num_classes(&self) -> usize {
        match self {
            Self::Swin(c) => c.num_classes,
            Self::DaVit(c) => c.num_classes,
            Self::Atlas(c) => c.num_classes,
            Self::MaxVit(c) => c.num_classes,
        }
    }

    /// Another number of classes (a fresh head).
    pub fn set_num_classes(&mut self, n: usize) {
        match self {
            Self::Swin(c) => c.num_classes = n,
            Self::DaVit(c) => c.num_classes = n,
            Self::Atlas(c) => c.num_classes = n,
            Self::MaxVit(c) => c.num_classes = n,
        }
    }

    /// Input channels.
    pub fn in_chans(&self) -> usize {
        match self {
            Self::Swin(c) => c.in_chans,
            Self::DaVit(c) => c.in_chans,
            Self::Atlas(c) => c.in_chans,
            Self::MaxVit(c) => c.in_chans,
        }
    }

    /// The configuration as JSON (`{"family": ..., "config": {...}}`), recorded in Kiln
    /// checkpoints.
    pub fn to_json(&self) -> String {
        let (family, config) = match self {
            Self::Swin(c) => ("swin", serde_json::to_value(c)),
            Self::DaVit(c) => ("davit", serde_json::to_value(c)),
            Self::Atlas(c) => ("atlas", serde_json::to_value(c)),
            Self::MaxVit(c) => ("maxvit", serde_json::to_value(c)),
        };
        let config = config.expect("a model configuration serialises");
        serde_json::json!({ "family": family, "config": config }).to_string()
    }

    /// Reads back what [`to_json`](Self::to_json) wrote.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let bad = |e: String| ModelError::InvalidConfig(format!("model configuration in checkpoint: {e}"));
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let config = value.get("config").cloned().ok_or_else(|| bad("no config".into()))?;
        match value.get("family").and_then(|f| f.as_str()) {
            Some("swin") => serde_json::from_value(config).map(Self::Swin).map_err(|e| bad(e.to_string())),
            Some("davit") => serde_json::from_value(config).map(Self::DaVit).map_err(|e| bad(e.to_string())),
            Some("atlas") => serde_json::from_value(config).map(Self::Atlas).map_err(|e| bad(e.to_string())),
            Some("maxvit") => serde_json::from_value(config).map(Self::MaxVit).map_err(|e| bad(e.to_string())),
            other => Err(bad(format!("unknown family {other:?}"))),
        }
    }

    /// The depth group of a parameter path, for layer-wise lr decay ([`crate::backbone::layer_ids`]).
    pub fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        match self {
            Self::Swin(_) => swin::layer_ordinal(path),
            Self::DaVit(_) => davit::layer_ordinal(path),
            Self::Atlas(_) => atlas::layer_ordinal(path),
            Self::MaxVit(_) => maxvit::layer_ordinal(path),
        }
    }

    /// timm's layer-wise lr decay (`param_groups_layer_decay`): the lr multiplier of each path,
    /// `decay^(deepest id − id)`, so the head keeps the full lr and the stem gets the least.
    pub fn layer_decay_scales(&self, paths: &[String], decay: f64) -> Vec<f64> {
        layer_decay_scales(paths, decay, |p| self.layer_ordinal(p))
    }

    /// How the family's timm (or official) checkpoints map onto its modules.
    pub fn key_map(&self) -> KeyMap {
        match self {
            Self::Swin(_) => KeyMap { rename: swin::timm_key, classifier_prefix: "head." },
            Self::DaVit(_) => KeyMap { rename: davit::timm_key, classifier_prefix: "head.fc." },
            Self::Atlas(_) => KeyMap { rename: atlas::official_key, classifier_prefix: "fc." },
            // head.norm and head.pre_logits do not depend on the class count
            Self::MaxVit(_) => KeyMap { rename: maxvit::timm_key, classifier_prefix: "head.fc." },
        }
    }
}

/// The `{"family": ..., "config": {...}}` form of [`ModelConfig::to_json`], so configurations
/// that hold a backbone (a segmenter's) serialise with serde.
impl Serialize for ModelConfig {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let value: serde_json::Value = serde_json::from_str(&self.to_json()).expect("to_json writes JSON");
        value.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for ModelConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_json(&value.to_string()).map_err(serde::de::Error::custom)
    }
}

/// A model of any family.
#[derive(Module, Debug)]
pub enum Model {
    /// Swin Transformer v1.
    Swin(Swin),
    /// DaViT.
    DaVit(DaVit),
    /// Atlas (multi-scale attention).
    Atlas(Atlas),
    /// MaxViT.
    MaxVit(MaxVit),
}

impl Backbone for Model {
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        match self {
            Self::Swin(m) => m.forward_features(x),
            Self::DaVit(m) => m.forward_features(x),
            Self::Atlas(m) => m.forward_features(x),
            Self::MaxVit(m) => m.forward_features(x),
        }
    }
    fn feature_info(&self) -> Vec<FeatureInfo> {
        match self {
            Self::Swin(m) => m.feature_info(),
            Self::DaVit(m) => m.feature_info(),
            Self::Atlas(m) => m.feature_info(),
            Self::MaxVit(m) => m.feature_info(),
        }
    }
    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Swin(m) => m.forward(x),
            Self::DaVit(m) => m.forward(x),
            Self::Atlas(m) => m.forward(x),
            Self::MaxVit(m) => m.forward(x),
        }
    }
}

/// A built model with the configuration and name it was built from.
#[derive(Debug)]
pub struct LoadedModel {
    /// Registered name (or the one recorded in a Kiln checkpoint).
    pub name: String,
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// The modules.
    pub model: Model,
}

impl LoadedModel {
    /// Builds `config` under `name` on `device`.
    pub fn build(name: &str, config: ModelConfig, device: &Device) -> Result<Self, ModelError> {
        let model = config.init(device)?;
        Ok(Self { name: name.to_string(), config, model })
    }

    /// Loads weights: a Kiln checkpoint (burnpack) or a foreign state dict (timm's keys).
    pub fn load_weights(&mut self, path: &Path) -> Result<LoadReport, ModelError> {
        if checkpoint::native_metadata(path).is_some() {
            checkpoint::load_native(&mut self.model, path, &self.name)
        } else {
            let keys = self.config.key_map();
            checkpoint::load_foreign(&mut self.model, &self.name, path, &keys)
        }
    }

    /// Writes a Kiln checkpoint that records the name and configuration.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        checkpoint::save_native(&self.model, path, &self.name, &self.config.to_json())
    }

    /// Rebuilds the model a Kiln checkpoint describes and loads its weights.
    pub fn from_native(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let (name, json) = checkpoint::native_metadata(path).ok_or_else(|| ModelError::CheckpointUnreadable {
            path: path.to_path_buf(),
            reason: "not a Kiln checkpoint (no model metadata)".into(),
        })?;
        if checkpoint::native_kind(path).as_deref() == Some(checkpoint::KIND_SEGMENTER) {
            return Err(ModelError::CheckpointUnreadable {
                path: path.to_path_buf(),
                reason: "it is a segmenter checkpoint; load it as a segmenter (LoadedSegmenter::from_native)".into(),
            });
        }
        let mut loaded = Self::build(&name, ModelConfig::from_json(&json)?, device)?;
        checkpoint::load_native(&mut loaded.model, path, &name)?;
        Ok(loaded)
    }

    /// Exact number of learnable parameters (BatchNorm running statistics excluded).
    pub fn num_params(&self) -> usize {
        crate::backbone::learnable_params(&self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_get_close_suggestions() {
        let err = find("swin_tiny_patch4_window7").unwrap_err().to_string();
        assert!(err.contains("swin_tiny_patch4_window7_224"), "{err}");
        let err = find("swin_tiny_patch4_windw7_224").unwrap_err().to_string();
        assert!(err.contains("did you mean swin_tiny_patch4_window7_224"), "{err}");
        assert!(find("swin_small_patch4_window7_224").is_ok());
        let err = find("maxvit_tiny_224").unwrap_err().to_string();
        assert!(err.contains("maxvit_tiny_tf_224"), "{err}");
    }

    #[test]
    fn config_json_round_trips() {
        let config = ModelConfig::Swin(SwinConfig::tiny().with_num_classes(7));
        let back = ModelConfig::from_json(&config.to_json()).unwrap();
        assert_eq!(back.num_classes(), 7);
        assert_eq!(back.to_json(), config.to_json());
        let config = ModelConfig::MaxVit(MaxVitConfig::tiny(384).with_grid_size(Some([6, 6])));
        let back = ModelConfig::from_json(&config.to_json()).unwrap();
        assert_eq!((back.family(), back.img_size()), ("maxvit", [384, 384]));
        assert_eq!(back.to_json(), config.to_json());
    }

    #[test]
    fn parameter_count_leaves_out_batch_norm_buffers() {
        let device = Device::flex();
        let config = ModelConfig::MaxVit(MaxVitConfig::new([32, 32], vec![8], vec![1], 8).with_dim_head(8).with_partition_ratio(16).with_num_classes(2));
        let model = LoadedModel::build("m", config, &device).unwrap();
        // 4 BatchNorms (stem.norm1; pre_norm 8, norm1 32, norm2 32) hold 2 · (8 + 8 + 32 + 32) buffers
        assert_eq!(model.model.num_params() - model.num_params(), 2 * (8 + 8 + 32 + 32));
    }
}

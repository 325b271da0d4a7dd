//! Registered families and model names (timm's), their configurations and pretrained-style
//! defaults.
//!
//! Each family lists its variants next to its code ([`Family::variants`]); the `families!`
//! table below registers each family once and builds [`ModelConfig`] and [`Model`] from it.
//! `kiln models` prints the registry.

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;

use crate::atlas::{Atlas, AtlasConfig};
use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, layer_decay_scales, no_decay_by_rank};
use crate::checkpoint::{self, KeyMap, LoadReport};
use crate::davit::{DaVit, DaVitConfig};
use crate::error::ModelError;
pub use crate::family::{Family, IMAGENET_MEAN, IMAGENET_STD, INCEPTION_MEAN, INCEPTION_STD, PretrainedCfg, Variant};
use crate::maxvit::{MaxVit, MaxVitConfig};
use crate::swin::{Swin, SwinConfig};

/// Builds, from one line per family (`Variant(Config => Model)`), the [`ModelConfig`] and
/// [`Model`] enums, `From<Config> for ModelConfig`, and their delegation to [`Family`] and
/// [`Backbone`]. The variant names are part of Kiln checkpoint keys (`Swin.layers.0...`, see
/// [`Model`]): never rename one.
macro_rules! families {
    ($($(#[doc = $doc:literal])* $variant:ident($config:ty => $model:ty)),+ $(,)?) => {
        /// The configuration of any family.
        #[derive(Debug, Clone)]
        pub enum ModelConfig {
            $($(#[doc = $doc])* $variant($config),)+
        }

        /// A model of any family. burn's derive puts the variant name into module paths
        /// (`Swin.layers.0...`), and burnpack writes those paths as Kiln checkpoint keys.
        #[derive(Module, Debug)]
        pub enum Model {
            $($(#[doc = $doc])* $variant($model),)+
        }

        $(impl From<$config> for ModelConfig {
            fn from(config: $config) -> Self {
                Self::$variant(config)
            }
        })+

        impl ModelConfig {
            /// Family name as `kiln models` prints it.
            pub fn family(&self) -> &'static str {
                match self { $(Self::$variant(_) => <$config as Family>::NAME,)+ }
            }

            /// Builds the model (random initialisation as timm).
            pub fn init(&self, device: &Device) -> Result<Model, ModelError> {
                match self { $(Self::$variant(c) => Family::init(c, device).map(Model::$variant),)+ }
            }

            /// Input `[height, width]` the model is built for.
            pub fn img_size(&self) -> [usize; 2] {
                match self { $(Self::$variant(c) => c.img_size,)+ }
            }

            /// Builds for another input size.
            pub fn set_img_size(&mut self, size: [usize; 2]) {
                match self { $(Self::$variant(c) => c.img_size = size,)+ }
            }

            /// Classes of the head.
            pub fn num_classes(&self) -> usize {
                match self { $(Self::$variant(c) => c.num_classes,)+ }
            }

            /// Another number of classes (a fresh head).
            pub fn set_num_classes(&mut self, n: usize) {
                match self { $(Self::$variant(c) => c.num_classes = n,)+ }
            }

            /// Input channels.
            pub fn in_chans(&self) -> usize {
                match self { $(Self::$variant(c) => c.in_chans,)+ }
            }

            /// The depth group of a parameter path, for layer-wise lr decay ([`crate::backbone::layer_ids`]).
            pub fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
                match self { $(Self::$variant(c) => Family::layer_ordinal(c, path),)+ }
            }

            /// How the family's timm (or official) checkpoints map onto its modules.
            pub fn key_map(&self) -> KeyMap {
                match self { $(Self::$variant(c) => Family::key_map(c),)+ }
            }

            fn family_no_weight_decay(&self, path: &str) -> bool {
                match self { $(Self::$variant(c) => Family::no_weight_decay(c, path),)+ }
            }

            /// Whether the tensor at `path` (a path of [`Model`] without the variant name, as
            /// `collect(.., skip_enum_variants = true)` names it) is a buffer, not a parameter:
            /// BatchNorm's running statistics.
            pub fn is_buffer(&self, path: &str) -> bool {
                match self { $(Self::$variant(c) => Family::is_buffer(c, path),)+ }
            }

            /// The configuration and its family name, as [`to_json`](Self::to_json) records them.
            fn to_value(&self) -> (&'static str, serde_json::Result<serde_json::Value>) {
                match self { $(Self::$variant(c) => (<$config as Family>::NAME, serde_json::to_value(c)),)+ }
            }

            /// The configuration `family` records in `config`; `None` for an unknown family.
            fn from_value(family: &str, config: serde_json::Value) -> Option<serde_json::Result<Self>> {
                $(if family == <$config as Family>::NAME {
                    return Some(serde_json::from_value::<$config>(config).map(Self::$variant));
                })+
                None
            }
        }

        /// Every registered model, family by family in the order of the table.
        pub fn registry() -> Vec<ModelEntry> {
            [$(<$config as Family>::variants::<ModelConfig>()),+].concat()
        }

        impl Backbone for Model {
            fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
                match self { $(Self::$variant(m) => m.forward_features(x),)+ }
            }
            fn feature_info(&self) -> Vec<FeatureInfo> {
                match self { $(Self::$variant(m) => m.feature_info(),)+ }
            }
            fn forward(&self, x: Tensor<4>) -> Tensor<2> {
                match self { $(Self::$variant(m) => m.forward(x),)+ }
            }
        }
    };
}

// The registration table: one line per family, in display order.
families! {
    /// Swin Transformer v1.
    Swin(SwinConfig => Swin),
    /// DaViT.
    DaVit(DaVitConfig => DaVit),
    /// Atlas (multi-scale attention).
    Atlas(AtlasConfig => Atlas),
    /// MaxViT (timm's `*_tf_*` models).
    MaxVit(MaxVitConfig => MaxVit),
}

/// One registered model (its configuration as a [`ModelConfig`]).
pub type ModelEntry = Variant<ModelConfig>;

impl ModelEntry {
    /// Family name (`swin`, ...).
    pub fn family(&self) -> &'static str {
        (self.config)().family()
    }
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

impl ModelConfig {
    /// The configuration as JSON (`{"family": ..., "config": {...}}`), recorded in Kiln
    /// checkpoints.
    pub fn to_json(&self) -> String {
        let (family, config) = self.to_value();
        let config = config.expect("a model configuration serialises");
        serde_json::json!({ "family": family, "config": config }).to_string()
    }

    /// Reads back what [`to_json`](Self::to_json) wrote.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let bad = |e: String| ModelError::InvalidConfig(format!("model configuration in checkpoint: {e}"));
        let value: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
        let config = value.get("config").cloned().ok_or_else(|| bad("no config".into()))?;
        let family = value.get("family").and_then(|f| f.as_str());
        match family.and_then(|f| Self::from_value(f, config)) {
            Some(parsed) => parsed.map_err(|e| bad(e.to_string())),
            None => Err(bad(format!("unknown family {family:?}"))),
        }
    }

    /// timm's layer-wise lr decay (`param_groups_layer_decay`): the lr multiplier of each path,
    /// `decay^(deepest id − id)`, so the head keeps the full lr and the stem gets the least.
    pub fn layer_decay_scales(&self, paths: &[String], decay: f64) -> Vec<f64> {
        layer_decay_scales(paths, decay, |p| self.layer_ordinal(p))
    }

    /// Whether the parameter at `path` (as [`is_buffer`](Self::is_buffer) names it), of `rank`
    /// dimensions, is kept out of weight decay, as timm's `param_groups_weight_decay`: every
    /// parameter of rank ≤ 1 (norm scales and shifts, biases), and those the family names
    /// ([`Family::no_weight_decay`]: relative-position tables, ...).
    pub fn no_weight_decay(&self, path: &str, rank: usize) -> bool {
        no_decay_by_rank(rank) || self.family_no_weight_decay(path)
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

    /// burnpack writes module paths with the enum variant (`BurnpackStore` collects with
    /// `skip_enum_variants = false`), so the `families!` variant names are part of every Kiln
    /// checkpoint's keys and may never change; a foreign load or `collect(.., true)` sees the
    /// model's own names.
    #[test]
    fn kiln_checkpoint_keys_carry_the_family_variant() {
        use burn::store::{BurnpackStore, ModuleSnapshot, ModuleStore};
        let device = Device::flex();
        let config = ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 2], vec![1, 2], 4).with_patch_size(2).with_num_classes(3));
        let model = LoadedModel::build("m", config, &device).unwrap();
        let path = std::env::temp_dir().join(format!("kiln-keys-{}.bpk", std::process::id()));
        model.save(&path).unwrap();
        let keys = BurnpackStore::from_file(&path).auto_extension(false).keys().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(keys.iter().all(|k| k.starts_with("Swin.")), "{keys:?}");
        assert!(keys.contains(&"Swin.layers.1.blocks.0.attn.relative_position_bias_table".to_string()), "{keys:?}");
        let own: Vec<String> = model.model.collect(None, None, true).into_iter().map(|t| t.name).collect();
        assert_eq!(own.len(), keys.len());
        assert!(own.iter().all(|k| keys.contains(&format!("Swin.{k}"))), "{own:?}");
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

//! Semantic segmentation: any backbone of the zoo under a decode head (UPerNet or the
//! SegFormer MLP decoder) and an optional auxiliary FCN head, as mmseg's `EncoderDecoder`.
//!
//! The trainer computes `CE(logits) + aux.weight · CE(aux_logits)` from
//! [`Segmenter::forward_train`]; both logits are upsampled to the input size. The backbone
//! keeps its classification head (every family validates `num_classes > 0`, so none can be
//! built without one): it is never run, gets no gradient, and optimisers skip it.
//!
//! `kiln train configs/upernet_swin_tiny_ade20k.toml`

use std::path::Path;

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use kiln_nn::resize_bilinear;
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, is_buffer_field, layer_decay_scales, no_decay_by_rank};
use crate::checkpoint::{self, LoadReport, MatchRules};
use crate::error::ModelError;
use crate::registry::{LoadedModel, Model, ModelConfig};
use crate::heads::{FcnHead, FcnHeadConfig, MlpHead, MlpHeadConfig, UperHead, UperHeadConfig};

/// Which decode head a [`SegmenterConfig`] builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadKind {
    /// UPerNet ([`UperHead`]): PPM + FPN.
    UperNet,
    /// SegFormer's all-MLP decoder ([`MlpHead`]).
    Mlp,
}

/// The auxiliary FCN head of a [`SegmenterConfig`] (mmseg's UPerNet `auxiliary_head`).
#[derive(Config, Debug)]
pub struct AuxHeadConfig {
    /// Whether the segmenter has one.
    #[config(default = true)]
    pub enabled: bool,
    /// Map it reads; `None`: the third (index 2), or the second-to-last of fewer than four maps.
    #[config(default = "None")]
    pub in_index: Option<usize>,
    /// Width of its convs.
    #[config(default = 256)]
    pub channels: usize,
    /// Stacked 3×3 convs.
    #[config(default = 1)]
    pub num_convs: usize,
    /// Weight of its loss in the total (mmseg's `loss_weight`).
    #[config(default = 0.4)]
    pub weight: f64,
}

impl AuxHeadConfig {
    /// The map index it reads from `maps` feature maps.
    pub fn resolved_in_index(&self, maps: usize) -> usize {
        self.in_index.unwrap_or_else(|| 2.min(maps.saturating_sub(2)))
    }
}

/// A segmenter's shape: backbone, classes, heads. Serialises to the JSON recorded in Kiln
/// segmenter checkpoints ([`to_json`](Self::to_json)).
#[derive(Config, Debug)]
pub struct SegmenterConfig {
    /// The backbone (its `num_classes` only sizes the unused classifier).
    pub backbone: ModelConfig,
    /// Segmentation classes.
    pub num_classes: usize,
    /// Decode head.
    #[config(default = "HeadKind::UperNet")]
    pub head: HeadKind,
    /// Width of the decode head (mmseg's UPerNet: 512; SegFormer: 256).
    #[config(default = 512)]
    pub channels: usize,
    /// UPerNet's pyramid pooling sides.
    #[config(default = "vec![1, 2, 3, 6]")]
    pub pool_scales: Vec<usize>,
    /// Channel dropout before each head's classifier.
    #[config(default = 0.1)]
    pub dropout: f64,
    /// Auxiliary FCN head.
    #[config(default = "AuxHeadConfig::new()")]
    pub aux: AuxHeadConfig,
}

impl SegmenterConfig {
    /// Builds backbone and heads; the heads' input widths come from the backbone's
    /// [`feature_info`](Backbone::feature_info).
    pub fn init(&self, device: &Device) -> Result<Segmenter, ModelError> {
        let backbone = self.backbone.init(device)?;
        let info = backbone.feature_info();
        let in_channels: Vec<usize> = info.iter().map(|f| f.channels).collect();
        let decode_head = match self.head {
            HeadKind::UperNet => DecodeHead::UperNet(
                UperHeadConfig::new(in_channels.clone(), self.channels, self.num_classes)
                    .with_pool_scales(self.pool_scales.clone())
                    .with_dropout(self.dropout)
                    .init(device)?,
            ),
            HeadKind::Mlp => DecodeHead::Mlp(
                MlpHeadConfig::new(in_channels.clone(), self.channels, self.num_classes).with_dropout(self.dropout).init(device)?,
            ),
        };
        let auxiliary_head = if self.aux.enabled {
            let index = self.aux.resolved_in_index(info.len());
            let Some(&channels) = in_channels.get(index) else {
                return Err(ModelError::InvalidConfig(format!(
                    "aux.in_index {index} is out of range: the backbone gives {} feature maps",
                    info.len()
                )));
            };
            Some(
                FcnHeadConfig::new(channels, index, self.num_classes)
                    .with_channels(self.aux.channels)
                    .with_num_convs(self.aux.num_convs)
                    .with_dropout(self.dropout)
                    .init(device)?,
            )
        } else {
            None
        };
        Ok(Segmenter { backbone, decode_head, auxiliary_head })
    }

    /// The configuration as JSON, recorded in Kiln segmenter checkpoints.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a segmenter configuration serialises")
    }

    /// Reads back what [`to_json`](Self::to_json) wrote.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        serde_json::from_str(json).map_err(|e| ModelError::InvalidConfig(format!("segmenter configuration: {e}")))
    }

    /// The depth group of a parameter path for layer-wise lr decay: paths under `backbone.`
    /// get the backbone family's ordinal, the heads [`LayerOrdinal::Head`] (the full lr, as
    /// mmseg's layer-decay constructor gives heads the top layer id).
    pub fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        match path.strip_prefix("backbone.") {
            Some(rest) => self.backbone.layer_ordinal(rest),
            None => LayerOrdinal::Head,
        }
    }

    /// The lr multiplier of each path (see [`ModelConfig::layer_decay_scales`]).
    pub fn layer_decay_scales(&self, paths: &[String], decay: f64) -> Vec<f64> {
        layer_decay_scales(paths, decay, |p| self.layer_ordinal(p))
    }

    /// Whether the parameter at `path` (`backbone.*`, `decode_head.*`, `auxiliary_head.*`, as
    /// [`is_buffer`](Self::is_buffer) names it), of `rank` dimensions, is kept out of weight
    /// decay: under `backbone.` the family's rule ([`ModelConfig::no_weight_decay`]); in the
    /// heads every parameter of rank ≤ 1 (they have no position tables).
    pub fn no_weight_decay(&self, path: &str, rank: usize) -> bool {
        match path.strip_prefix("backbone.") {
            Some(rest) => self.backbone.no_weight_decay(rest, rank),
            None => no_decay_by_rank(rank),
        }
    }

    /// Whether the tensor at `path` (a [`Segmenter`] path without enum variant names, as
    /// `collect(.., skip_enum_variants = true)` names it) is a buffer, not a parameter: under
    /// `backbone.` the family's ([`ModelConfig::is_buffer`]); in the heads, their `ConvModule`s'
    /// BatchNorm running statistics.
    pub fn is_buffer(&self, path: &str) -> bool {
        match path.strip_prefix("backbone.") {
            Some(rest) => self.backbone.is_buffer(rest),
            None => is_buffer_field(path.rsplit('.').next().unwrap_or_default()),
        }
    }
}

/// The decode head of a [`Segmenter`].
#[derive(Module, Debug)]
pub enum DecodeHead {
    /// UPerNet.
    UperNet(UperHead),
    /// SegFormer's MLP decoder.
    Mlp(MlpHead),
}

impl DecodeHead {
    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]`, finest first -> `[batch, classes, H_1, W_1]`
    pub fn forward(&self, features: &[Tensor<4>]) -> Tensor<4> {
        match self {
            Self::UperNet(head) => head.forward(features),
            Self::Mlp(head) => head.forward(features),
        }
    }
}

/// Main and auxiliary logits of a training forward, both at the input size.
#[derive(Debug, Clone)]
pub struct SegmenterOutput {
    /// `[batch, classes, H, W]`.
    pub logits: Tensor<4>,
    /// `[batch, classes, H, W]`, when the segmenter has an auxiliary head.
    pub aux_logits: Option<Tensor<4>>,
}

/// Backbone + decode head + optional auxiliary head (mmseg's `EncoderDecoder`). Keys
/// `backbone.*` (the family's own), `decode_head.*`, `auxiliary_head.*`, as mmseg's.
#[derive(Module, Debug)]
pub struct Segmenter {
    /// Any family; only `forward_features` is used.
    pub backbone: Model,
    /// Main head.
    pub decode_head: DecodeHead,
    /// Auxiliary FCN head (training signal only).
    pub auxiliary_head: Option<FcnHead>,
}

impl Segmenter {
    /// Logits upsampled to the input (mmseg's `encode_decode`).
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, classes, H, W]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let features = self.backbone.forward_features(x);
        resize_bilinear(self.decode_head.forward(&features), [h, w])
    }

    /// Main and auxiliary logits, both upsampled to the input, for
    /// `loss = CE(logits) + aux_weight · CE(aux_logits)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> two `[batch, classes, H, W]`
    pub fn forward_train(&self, x: Tensor<4>) -> SegmenterOutput {
        let [_, _, h, w] = x.dims();
        self.forward_heads(&self.backbone.forward_features(x), [h, w])
    }

    /// Both heads on given feature maps, upsampled (bilinear, `align_corners=False`) to `size`.
    ///
    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]` as the backbone gives them
    /// - returns two `[batch, classes, size[0], size[1]]`
    pub fn forward_heads(&self, features: &[Tensor<4>], size: [usize; 2]) -> SegmenterOutput {
        SegmenterOutput {
            logits: resize_bilinear(self.decode_head.forward(features), size),
            aux_logits: self.auxiliary_head.as_ref().map(|head| resize_bilinear(head.forward(features), size)),
        }
    }

    /// The backbone's feature maps' channels and strides.
    pub fn feature_info(&self) -> Vec<FeatureInfo> {
        self.backbone.feature_info()
    }
}

/// A built segmenter with the configuration and name it was built from.
#[derive(Debug)]
pub struct LoadedSegmenter {
    /// Name (recorded in Kiln checkpoints).
    pub name: String,
    /// The configuration it was built from.
    pub config: SegmenterConfig,
    /// The modules.
    pub model: Segmenter,
}

impl LoadedSegmenter {
    /// Builds `config` under `name` on `device` (random initialisation).
    pub fn build(name: &str, config: SegmenterConfig, device: &Device) -> Result<Self, ModelError> {
        let model = config.init(device)?;
        Ok(Self { name: name.to_string(), config, model })
    }

    /// Writes a Kiln segmenter checkpoint: burnpack whose metadata records the name, the
    /// configuration JSON and `kiln.kind = "segmenter"`.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        checkpoint::save_native_kind(&self.model, path, &self.name, &self.config.to_json(), checkpoint::KIND_SEGMENTER)
    }

    /// Rebuilds the segmenter a Kiln segmenter checkpoint describes and loads its weights.
    pub fn from_native(path: &Path, device: &Device) -> Result<Self, ModelError> {
        let unreadable = |reason: &str| ModelError::CheckpointUnreadable { path: path.to_path_buf(), reason: reason.into() };
        let (name, json) = checkpoint::native_metadata(path).ok_or_else(|| unreadable("not a Kiln checkpoint (no model metadata)"))?;
        if checkpoint::native_kind(path).as_deref() != Some(checkpoint::KIND_SEGMENTER) {
            return Err(unreadable("it is a classification checkpoint; build a segmenter and use load_backbone"));
        }
        let mut loaded = Self::build(&name, SegmenterConfig::from_json(&json)?, device)?;
        checkpoint::load_native(&mut loaded.model, path, &name)?;
        Ok(loaded)
    }

    /// Exact number of learnable parameters (BatchNorm running statistics excluded), the
    /// backbone's unused classifier included.
    pub fn num_params(&self) -> usize {
        crate::backbone::learnable_params(&self.model)
    }

    /// Initialises the backbone from a classification checkpoint and leaves the heads new:
    ///
    /// - a Kiln classification checkpoint (native burnpack), tensor for tensor;
    /// - a timm state dict (`.safetensors`, `.pth`) through the family's
    ///   [`KeyMap`](crate::checkpoint::KeyMap), relative-position tables resized;
    /// - a Kiln segmenter checkpoint: the whole model, heads included (a `conv_seg` of
    ///   another class count stays new).
    ///
    /// The backbone's classifier keys are ignored ([`LoadReport::ignored`]); the model tensors
    /// left at their initialisation are in [`LoadReport::fresh`]. Any backbone tensor missing or
    /// of another shape is an error naming the key and both shapes, and nothing is loaded.
    pub fn load_backbone(&mut self, path: &Path) -> Result<LoadReport, ModelError> {
        let keys = self.config.backbone.key_map();
        let classifier = format!("backbone.{}", keys.classifier_prefix);
        let is_classifier = |p: &str| p.starts_with(classifier.as_str());
        let outside_backbone = |p: &str| !p.starts_with("backbone.");
        let device = self.model.devices().into_iter().next().unwrap_or_else(|| Device::flex());
        match checkpoint::native_kind(path).as_deref() {
            Some(checkpoint::KIND_SEGMENTER) => {
                let source = Self::from_native(path, &device)?;
                // a conv_seg of another class count stays new
                let same_classes = source.config.num_classes == self.config.num_classes;
                let incoming = source
                    .model
                    .collect(None, None, true)
                    .into_iter()
                    .filter(|t| same_classes || !t.name.contains("conv_seg."))
                    .map(|t| (Some(t.name.clone()), t.name.clone(), t));
                let may_stay_new = |p: &str| (!same_classes && p.contains("conv_seg.")) || is_classifier(p);
                let rules = MatchRules { ignore: &is_classifier, may_stay_new: &may_stay_new, ..MatchRules::default() };
                checkpoint::load_matching(&mut self.model, &self.name, path, incoming, &rules)
            }
            Some(_) => {
                let source = LoadedModel::from_native(path, &device)?;
                let incoming = source.model.collect(None, None, true).into_iter().map(|t| {
                    let name = format!("backbone.{}", t.name);
                    (Some(name.clone()), name, t)
                });
                let may_stay_new = |p: &str| outside_backbone(p) || is_classifier(p);
                let rules = MatchRules { ignore: &is_classifier, may_stay_new: &may_stay_new, ..MatchRules::default() };
                checkpoint::load_matching(&mut self.model, &self.name, path, incoming, &rules)
            }
            None => {
                let incoming = checkpoint::read_state_dict(path)?
                    .into_iter()
                    .map(|(key, t)| ((keys.rename)(&key).map(|name| format!("backbone.{name}")), key, t));
                let may_stay_new = |p: &str| outside_backbone(p) || is_classifier(p);
                let rules =
                    MatchRules { pytorch_layout: true, ignore: &is_classifier, may_stay_new: &may_stay_new, ..MatchRules::default() };
                checkpoint::load_matching(&mut self.model, &self.name, path, incoming, &rules)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swin::SwinConfig;

    fn tiny() -> SegmenterConfig {
        let backbone = SwinConfig::new([32, 32], 8, vec![1, 1, 1], vec![1, 2, 2], 4).with_patch_size(2).with_num_classes(3);
        SegmenterConfig::new(ModelConfig::Swin(backbone), 5).with_channels(8).with_pool_scales(vec![1, 2]).with_aux(AuxHeadConfig::new().with_channels(4))
    }

    #[test]
    fn segment_config_json_round_trips() {
        let config = tiny().with_head(HeadKind::Mlp);
        let json = config.to_json();
        assert!(json.contains("\"head\":\"mlp\"") && json.contains("\"family\":\"swin\""), "{json}");
        let back = SegmenterConfig::from_json(&json).unwrap();
        assert_eq!(back.to_json(), json);
        assert!(SegmenterConfig::from_json("{\"num_classes\": 3}").is_err());
    }

    #[test]
    fn segment_forward_gives_input_sized_logits() {
        let device = Device::flex();
        let model = tiny().init(&device).unwrap();
        // three maps: the aux head reads the second-to-last
        assert_eq!(model.auxiliary_head.as_ref().unwrap().in_index(), 1);
        let out = model.forward_train(Tensor::zeros([2, 3, 32, 32], &device));
        assert_eq!(out.logits.dims(), [2, 5, 32, 32]);
        assert_eq!(out.aux_logits.unwrap().dims(), [2, 5, 32, 32]);
        assert_eq!(model.forward(Tensor::zeros([1, 3, 32, 32], &device)).dims(), [1, 5, 32, 32]);
    }

    #[test]
    fn segment_heads_get_the_full_lr_and_the_backbone_its_family_ordinal() {
        let config = tiny();
        assert_eq!(config.layer_ordinal("decode_head.conv_seg.weight"), LayerOrdinal::Head);
        assert_eq!(config.layer_ordinal("auxiliary_head.convs.0.conv.weight"), LayerOrdinal::Head);
        assert_eq!(config.layer_ordinal("backbone.patch_embed.proj.weight"), LayerOrdinal::Stem);
        assert_eq!(config.layer_ordinal("backbone.layers.1.blocks.0.attn.qkv.weight"), LayerOrdinal::Block(vec![1, 0]));
        let scales = config.layer_decay_scales(
            &["backbone.patch_embed.proj.weight".into(), "backbone.layers.0.blocks.0.norm1.weight".into(), "decode_head.conv_seg.bias".into()],
            0.5,
        );
        assert_eq!(scales, vec![0.25, 0.5, 1.0]);
    }

    /// As [`crate::registry`]'s classifier keys: burnpack keeps the enum variants of the
    /// backbone and the decode head in a segmenter checkpoint's keys, so they may never change.
    #[test]
    fn segmenter_checkpoint_keys_carry_the_enum_variants() {
        use burn::store::{BurnpackStore, ModuleStore};
        let model = LoadedSegmenter::build("s", tiny(), &Device::flex()).unwrap();
        let path = std::env::temp_dir().join(format!("kiln-seg-keys-{}.bpk", std::process::id()));
        model.save(&path).unwrap();
        let keys = BurnpackStore::from_file(&path).auto_extension(false).keys().unwrap();
        std::fs::remove_file(&path).unwrap();
        for key in ["backbone.Swin.patch_embed.proj.weight", "decode_head.UperNet.conv_seg.weight", "auxiliary_head.conv_seg.weight"] {
            assert!(keys.iter().any(|k| k == key), "{key} not in {keys:?}");
        }
    }

    #[test]
    fn segment_aux_index_defaults_as_mmseg() {
        let aux = AuxHeadConfig::new();
        assert_eq!([4, 3, 2, 5].map(|n| aux.resolved_in_index(n)), [2, 1, 0, 2]);
    }
}

//! DaViT: dual attention vision transformer, alternating spatial window attention and channel
//! group attention.
//!
//! Ding et al., "DaViT: Dual Attention Vision Transformers", ECCV 2022. Must match timm's
//! `timm/models/davit.py` (timm 1.0): same module tree and state-dict keys, NCHW maps between
//! blocks, zero padding of maps the window does not tile (padded tokens are attended to, not
//! masked, and the window is never clipped to the map), Downsample's pad after its norm, and
//! timm's channel attention (softmax of `kᵀv` applied to `q`). Any input size works; position
//! information comes only from the convolutional position encodings.
//!
//! | variant | embed_dims | depths | heads | window | params |
//! |---|---|---|---|---|---|
//! | tiny | 96, 192, 384, 768 | 1,1,3,1 | 3,6,12,24 | 7 | 28.4 M |
//! | small | 96, 192, 384, 768 | 1,1,9,1 | 3,6,12,24 | 7 | 49.7 M |
//! | base | 128, 256, 512, 1024 | 1,1,9,1 | 4,8,16,32 | 7 | 88.0 M |
//! | large | 192, 384, 768, 1536 | 1,1,9,1 | 6,12,24,48 | 7 | 196.8 M |
//! | huge | 256, 512, 1024, 2048 | 1,1,9,1 | 8,16,32,64 | 7 | 348.9 M |
//!
//! The Florence-2 towers (`davit_*_fl`: window 12, 3×3 downsampling, channel attention v2) are
//! not covered.
//!
//! `kiln predict --model davit_tiny --weights davit_tiny.safetensors cat.png`

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::PaddingConfig2d;
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use kiln_nn::{
    ChannelGroupAttention, ChannelGroupAttentionConfig, ClassifierHead, ClassifierHeadConfig, ConvPosEnc,
    ConvPosEncConfig, DropPath, LayerNorm, LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, Mlp, MlpConfig, WindowAttention,
    WindowAttentionConfig, drop_path_schedule, window_partition, window_reverse,
};

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, staged_layer_ordinal};
use crate::checkpoint::KeyMap;
use crate::error::ModelError;
use crate::family::{Family, PretrainedCfg, Variant};

/// Hyper-parameters of a DaViT; every field can be overridden.
#[derive(Config, Debug)]
pub struct DaVitConfig {
    /// Width of each stage.
    pub embed_dims: Vec<usize>,
    /// Dual blocks (spatial then channel) per stage.
    pub depths: Vec<usize>,
    /// Heads (spatial) and channel groups (channel) per stage.
    pub num_heads: Vec<usize>,
    /// Side of the attention windows; maps are padded up to whole windows, never clipped.
    #[config(default = 7)]
    pub window_size: usize,
    /// Input `[height, width]` used for preprocessing and training. The network itself takes
    /// any size (nothing in it depends on the resolution).
    #[config(default = "[224, 224]")]
    pub img_size: [usize; 2],
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Classes of the head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// MLP hidden width over block width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Whether the qkv projections (spatial and channel) have a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// `eps` of every LayerNorm.
    #[config(default = 1e-5)]
    pub norm_eps: f64,
    /// Dropout before the classifier (timm `drop_rate`).
    #[config(default = 0.0)]
    pub drop_rate: f64,
    /// Stochastic depth at the last dual block, linear from 0 (timm's DaVit default 0).
    #[config(default = 0.0)]
    pub drop_path_rate: f64,
}

impl DaVitConfig {
    fn variant(embed_dims: [usize; 4], depths: [usize; 4], heads: [usize; 4]) -> Self {
        Self::new(embed_dims.to_vec(), depths.to_vec(), heads.to_vec())
    }
    /// DaViT-T.
    pub fn tiny() -> Self {
        Self::variant([96, 192, 384, 768], [1, 1, 3, 1], [3, 6, 12, 24])
    }
    /// DaViT-S.
    pub fn small() -> Self {
        Self::variant([96, 192, 384, 768], [1, 1, 9, 1], [3, 6, 12, 24])
    }
    /// DaViT-B.
    pub fn base() -> Self {
        Self::variant([128, 256, 512, 1024], [1, 1, 9, 1], [4, 8, 16, 32])
    }
    /// DaViT-L.
    pub fn large() -> Self {
        Self::variant([192, 384, 768, 1536], [1, 1, 9, 1], [6, 12, 24, 48])
    }
    /// DaViT-H.
    pub fn huge() -> Self {
        Self::variant([256, 512, 1024, 2048], [1, 1, 9, 1], [8, 16, 32, 64])
    }

    /// Checks what timm would refuse, with a message that says which field to change.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        let stages = self.embed_dims.len();
        if stages == 0 || self.depths.len() != stages || self.num_heads.len() != stages {
            return bad(format!(
                "embed_dims ({:?}), depths ({:?}) and num_heads ({:?}) must be non-empty and of the same length",
                self.embed_dims, self.depths, self.num_heads
            ));
        }
        if self.window_size == 0 || self.in_chans == 0 || self.num_classes == 0 {
            return bad("window_size, in_chans and num_classes must be positive".into());
        }
        if self.img_size.contains(&0) {
            return bad(format!("img_size {:?} must be positive", self.img_size));
        }
        for (i, (&dim, &heads)) in self.embed_dims.iter().zip(&self.num_heads).enumerate() {
            if heads == 0 || dim % heads != 0 {
                return bad(format!("stage {i} width {dim} (embed_dims) is not divisible by {heads} heads (num_heads)"));
            }
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!("drop_path_rate {} must be in [0, 1)", self.drop_path_rate));
        }
        Ok(())
    }

    /// Builds the model with timm's initialisation (linear layers `trunc_normal(.02)`, convs
    /// PyTorch's default).
    pub fn init(&self, device: &Device) -> Result<DaVit, ModelError> {
        self.validate()?;
        let drop_path = drop_path_schedule(self.drop_path_rate, &self.depths);
        let stages = (0..self.embed_dims.len())
            .map(|i| {
                let dim = self.embed_dims[i];
                DaVitStage {
                    downsample: (i > 0).then(|| DownsampleConfig::new(self.embed_dims[i - 1], dim, self.norm_eps).init(device)),
                    blocks: (0..self.depths[i])
                        .map(|j| {
                            let block = DualBlockConfig {
                                dim,
                                num_heads: self.num_heads[i],
                                window_size: self.window_size,
                                mlp_ratio: self.mlp_ratio,
                                qkv_bias: self.qkv_bias,
                                norm_eps: self.norm_eps,
                                drop_path: drop_path[i][j],
                            };
                            (block.init_spatial(device), block.init_channel(device))
                        })
                        .collect(),
                }
            })
            .collect();
        let num_features = *self.embed_dims.last().expect("validated non-empty");
        Ok(DaVit {
            stem: StemConfig::new(self.in_chans, self.embed_dims[0], self.norm_eps).init(device),
            stages,
            head: ClassifierHeadConfig::new(num_features, self.num_classes)
                .with_dropout(self.drop_rate)
                .with_norm_eps(Some(self.norm_eps))
                .init(device),
        })
    }
}

/// Configuration of the [`Stem`].
#[derive(Config, Debug)]
struct StemConfig {
    in_chans: usize,
    dim: usize,
    norm_eps: f64,
}

/// Overlapping 7×7 stride-4 convolution, then LayerNorm2d. Keys `conv`, `norm`.
#[derive(Module, Debug)]
struct Stem {
    conv: Conv2d,
    norm: LayerNorm2d,
}

impl StemConfig {
    fn init(&self, device: &Device) -> Stem {
        Stem {
            conv: Conv2dConfig::new([self.in_chans, self.dim], [7, 7])
                .with_stride([4, 4])
                .with_padding(PaddingConfig2d::Explicit(3, 3, 3, 3))
                .init(device),
            norm: LayerNorm2dConfig::new(self.dim).with_epsilon(self.norm_eps).init(device),
        }
    }
}

impl Stem {
    /// timm first zero-pads bottom/right to a multiple of 4; for kernel 7, stride 4, padding 3
    /// that reads only zeros the convolution's own padding supplies and keeps the output size
    /// `ceil(H/4)`, so the convolution alone is exact.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, dim, ceil(H/4), ceil(W/4)]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        self.norm.forward(kiln_nn::fused::conv2d(&self.conv, x))
    }
}

/// Configuration of a [`Downsample`].
#[derive(Config, Debug)]
struct DownsampleConfig {
    d_input: usize,
    d_output: usize,
    norm_eps: f64,
}

/// LayerNorm2d, then a 2×2 stride-2 convolution; keys `norm`, `conv`.
#[derive(Module, Debug)]
struct Downsample {
    norm: LayerNorm2d,
    conv: Conv2d,
}

impl DownsampleConfig {
    fn init(&self, device: &Device) -> Downsample {
        Downsample {
            norm: LayerNorm2dConfig::new(self.d_input).with_epsilon(self.norm_eps).init(device),
            conv: Conv2dConfig::new([self.d_input, self.d_output], [2, 2]).with_stride([2, 2]).init(device),
        }
    }
}

impl Downsample {
    /// Odd sizes are zero-padded bottom/right AFTER the norm (as timm: padding first would turn
    /// the zeros into the norm's bias), so no row or column is dropped.
    ///
    /// # Shapes
    /// - `x`: `[batch, d_input, H, W]` -> `[batch, d_output, ceil(H/2), ceil(W/2)]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        let x = self.norm.forward(x);
        let x = if h % 2 + w % 2 > 0 { x.pad([(0, h % 2), (0, w % 2)], PadMode::Constant(0.0)) } else { x };
        kiln_nn::fused::conv2d(&self.conv, x)
    }
}

/// Configuration of the two halves of a dual attention block ([`SpatialBlock`],
/// [`ChannelBlock`]), which share every hyper-parameter.
#[derive(Config, Debug)]
struct DualBlockConfig {
    dim: usize,
    num_heads: usize,
    window_size: usize,
    mlp_ratio: f64,
    qkv_bias: bool,
    norm_eps: f64,
    drop_path: f64,
}

impl DualBlockConfig {
    fn norm(&self, device: &Device) -> LayerNorm {
        LayerNormConfig::new(self.dim).with_epsilon(self.norm_eps).init(device)
    }

    fn mlp(&self, device: &Device) -> Mlp {
        MlpConfig::new(self.dim, (self.dim as f64 * self.mlp_ratio) as usize).init(device)
    }

    fn init_spatial(&self, device: &Device) -> SpatialBlock {
        SpatialBlock {
            cpe1: ConvPosEncConfig::new(self.dim).init(device),
            norm1: self.norm(device),
            attn: WindowAttentionConfig::new(self.dim, self.num_heads, [self.window_size; 2])
                .with_qkv_bias(self.qkv_bias)
                .with_relative_position_bias(false)
                .init(device),
            cpe2: ConvPosEncConfig::new(self.dim).init(device),
            norm2: self.norm(device),
            mlp: self.mlp(device),
            drop_path: DropPath::new(self.drop_path),
        }
    }

    fn init_channel(&self, device: &Device) -> ChannelBlock {
        ChannelBlock {
            cpe1: ConvPosEncConfig::new(self.dim).init(device),
            norm1: self.norm(device),
            attn: ChannelGroupAttentionConfig::new(self.dim, self.num_heads).with_qkv_bias(self.qkv_bias).init(device),
            cpe2: ConvPosEncConfig::new(self.dim).init(device),
            norm2: self.norm(device),
            mlp: self.mlp(device),
            drop_path: DropPath::new(self.drop_path),
        }
    }
}

/// `x + mlp(norm2(x))` over the tokens of a channels-last map: how both halves of a dual block end.
fn feed_forward(x: Tensor<4>, norm2: &LayerNorm, mlp: &Mlp, drop_path: &DropPath) -> Tensor<4> {
    let [batch, h, w, c] = x.dims();
    let t = x.reshape([batch, h * w, c]);
    let t = t.clone() + drop_path.forward(mlp.forward(norm2.forward(t)));
    t.reshape([batch, h, w, c])
}

/// Spatial half of a dual block: position encoding, window self-attention, position
/// encoding, MLP. Keys `cpe1`, `norm1`, `attn`, `cpe2`, `norm2`, `mlp` (timm's `SpatialBlock`).
#[derive(Module, Debug)]
struct SpatialBlock {
    cpe1: ConvPosEnc,
    norm1: LayerNorm,
    attn: WindowAttention,
    cpe2: ConvPosEnc,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
}

impl SpatialBlock {
    /// Maps the window does not tile are zero-padded bottom/right AFTER `norm1`, and the padded
    /// tokens are not masked: they carry the qkv biases and every real query attends to them,
    /// as in timm.
    ///
    /// # Shapes
    /// - `x`: `[batch, H, W, C]` -> `[batch, H, W, C]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, h, w, c] = x.dims();
        let shortcut = self.cpe1.forward(x);
        let y = self.norm1.forward(shortcut.clone());
        let window = self.attn.window();
        let (pad_h, pad_w) = ((window[0] - h % window[0]) % window[0], (window[1] - w % window[1]) % window[1]);
        let y = if pad_h + pad_w > 0 { y.pad([(0, pad_h), (0, pad_w), (0, 0)], PadMode::Constant(0.0)) } else { y };
        let windows = self.attn.forward(window_partition(y, window), None);
        let y = window_reverse(windows, window, h + pad_h, w + pad_w);
        let y = if pad_h + pad_w > 0 { y.slice([0..batch, 0..h, 0..w, 0..c]) } else { y };
        let x = shortcut + self.drop_path.forward(y);
        feed_forward(self.cpe2.forward(x), &self.norm2, &self.mlp, &self.drop_path)
    }
}

/// Channel half of a dual block: position encoding, channel group attention over all tokens,
/// position encoding, MLP. Same keys as [`SpatialBlock`] (timm's `ChannelBlock`).
#[derive(Module, Debug)]
struct ChannelBlock {
    cpe1: ConvPosEnc,
    norm1: LayerNorm,
    attn: ChannelGroupAttention,
    cpe2: ConvPosEnc,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
}

impl ChannelBlock {
    /// # Shapes
    /// - `x`: `[batch, H, W, C]` -> `[batch, H, W, C]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, h, w, c] = x.dims();
        let x = self.cpe1.forward(x).reshape([batch, h * w, c]);
        let x = x.clone() + self.drop_path.forward(self.attn.forward(self.norm1.forward(x)));
        feed_forward(self.cpe2.forward(x.reshape([batch, h, w, c])), &self.norm2, &self.mlp, &self.drop_path)
    }
}

/// A stage: downsampling (every stage but the first), then dual attention blocks, each a
/// (spatial, channel) pair: keys `blocks.{j}.0.*` and `blocks.{j}.1.*` as timm's unnamed
/// `Sequential`.
#[derive(Module, Debug)]
struct DaVitStage {
    downsample: Option<Downsample>,
    blocks: Vec<(SpatialBlock, ChannelBlock)>,
}

impl DaVitStage {
    /// # Shapes
    /// - `x`: `[batch, C_prev, H, W]` -> `[batch, C, ceil(H/2), ceil(W/2)]` (first stage: unchanged size)
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.downsample {
            Some(down) => down.forward(x),
            None => x,
        };
        // channels-last through the blocks: their tokens, layer norms and position encodings
        // all read it without a permute copy
        let x = x.permute([0, 2, 3, 1]);
        let x = self.blocks.iter().fold(x, |x, (spatial, channel)| channel.forward(spatial.forward(x)));
        x.permute([0, 3, 1, 2])
    }
}

/// DaViT with its classification head (pool, LayerNorm, linear); keys as timm's state dict.
#[derive(Module, Debug)]
pub struct DaVit {
    stem: Stem,
    stages: Vec<DaVitStage>,
    head: ClassifierHead,
}

impl DaVit {
    /// The stem's output (timm's `model.stem`).
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, C_0, ceil(H/4), ceil(W/4)]`
    pub fn forward_stem(&self, x: Tensor<4>) -> Tensor<4> {
        self.stem.forward(x)
    }
}

impl Backbone for DaVit {
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut x = self.stem.forward(x);
        let mut maps = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.forward(x);
            maps.push(x.clone());
        }
        maps
    }

    fn feature_info(&self) -> Vec<FeatureInfo> {
        let stem_channels = self.stem.conv.weight.dims()[0];
        self.stages
            .iter()
            .enumerate()
            .map(|(i, stage)| FeatureInfo {
                channels: stage.downsample.as_ref().map_or(stem_channels, |d| d.conv.weight.dims()[0]),
                stride: 4 << i,
            })
            .collect()
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let last = self.forward_features(x).pop().expect("DaViT has at least one stage");
        let [batch, c, _, _] = last.dims();
        // pool, then norm (inside the head), as timm's NormMlpClassifierHead
        let pooled = last.mean_dim(3).mean_dim(2).reshape([batch, c]);
        self.head.forward(pooled)
    }
}

/// Maps a timm DaViT state-dict key to our module path: the module tree mirrors timm's and
/// DaViT has no buffers, so every key is kept as it is.
pub fn timm_key(key: &str) -> Option<String> {
    Some(key.to_string())
}

impl Family for DaVitConfig {
    const NAME: &'static str = "davit";
    type Model = DaVit;

    fn init(&self, device: &Device) -> Result<DaVit, ModelError> {
        DaVitConfig::init(self, device) // the inherent builder above
    }

    fn key_map(&self) -> KeyMap {
        KeyMap { rename: timm_key, classifier_prefix: "head.fc." }
    }

    /// timm's `DaVit.group_matcher(coarse=False)`: the stem, then each block (a stage's downsample
    /// with its first block), `norm_pre` with the last block.
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        staged_layer_ordinal(path, "stem", "stages.", "norm_pre")
    }

    /// None: DaViT has no position tables or tokens (timm's DaVit defines no `no_weight_decay`).
    fn no_weight_decay(&self, _path: &str) -> bool {
        false
    }

    fn variants<C: From<Self>>() -> Vec<Variant<C>> {
        vec![
            Variant::new("davit_tiny", || Self::tiny().into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("davit_small", || Self::small().into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("davit_base", || Self::base().into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("davit_large", || Self::large().into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("davit_huge", || Self::huge().into(), PretrainedCfg::imagenet(224, 0.95)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_test_config() -> DaVitConfig {
        DaVitConfig::new(vec![8, 12, 16], vec![1, 2, 1], vec![2, 3, 4]).with_window_size(3).with_num_classes(5)
    }

    #[test]
    fn odd_sizes_round_up_and_features_match_their_declared_channels() {
        let device = Device::flex();
        let model = tiny_test_config().init(&device).unwrap();
        // 30x21: stem ceil(/4) = 8x6, then 4x3, then 2x2; every stage pads to windows of 3
        let maps = model.forward_features(Tensor::zeros([2, 3, 30, 21], &device));
        let info = model.feature_info();
        assert_eq!(info.iter().map(|i| (i.channels, i.stride)).collect::<Vec<_>>(), vec![(8, 4), (12, 8), (16, 16)]);
        let sizes: Vec<[usize; 4]> = maps.iter().map(|m| m.dims()).collect();
        assert_eq!(sizes, vec![[2, 8, 8, 6], [2, 12, 4, 3], [2, 16, 2, 2]]);
        assert_eq!(model.forward(Tensor::zeros([2, 3, 30, 21], &device)).dims(), [2, 5]);
    }

    #[test]
    fn keys_are_timms() {
        use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot};
        let device = Device::flex();
        let model = tiny_test_config().init(&device).unwrap();
        let keys: Vec<String> = model.collect(None, Some(Box::new(BurnToPyTorchAdapter)), true).into_iter().map(|t| t.name.clone()).collect();
        for key in [
            "stem.conv.weight",
            "stem.norm.bias",
            "stages.1.downsample.norm.weight",
            "stages.1.downsample.conv.weight",
            "stages.1.blocks.1.0.cpe1.proj.weight",
            "stages.1.blocks.1.0.attn.qkv.weight",
            "stages.1.blocks.1.1.attn.proj.bias",
            "stages.2.blocks.0.1.norm2.weight",
            "stages.2.blocks.0.1.mlp.fc2.weight",
            "head.norm.weight",
            "head.fc.bias",
        ] {
            assert!(keys.iter().any(|k| k == key), "{key} not among {keys:?}");
        }
        assert!(!keys.iter().any(|k| k.starts_with("stages.0.downsample") || k.contains("relative_position")), "{keys:?}");
        // stem 4, downsample 4 per stage after the first, 16 per half block (8 weight/bias
        // pairs), head 4: the same 148-key layout timm's pad fixture has for depths (1, 1, 1, 1)
        assert_eq!(keys.len(), 4 + 2 * 4 + 4 * 2 * 16 + 4);
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        let err = DaVitConfig { depths: vec![1, 1], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("depths"), "{err}");
        let err = DaVitConfig { num_heads: vec![3, 3, 4], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("num_heads"), "{err}");
    }
}

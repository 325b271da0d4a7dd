//! Swin Transformer (v1): hierarchical vision transformer with shifted windows.
//!
//! Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
//! ICCV 2021. Must match timm's `timm/models/swin_transformer.py` (timm 1.0): same module
//! tree and state-dict keys, channels-last stages, padding of sizes the window does not
//! tile, windows clipped to small resolutions, timm's patch-merging order.
//!
//! | variant | embed | depths | heads | window | size |
//! |---|---|---|---|---|---|
//! | tiny | 96 | 2,2,6,2 | 3,6,12,24 | 7 | 224 |
//! | small | 96 | 2,2,18,2 | 3,6,12,24 | 7 | 224 |
//! | base | 128 | 2,2,18,2 | 4,8,16,32 | 7 / 12 | 224 / 384 |
//! | large | 192 | 2,2,18,2 | 6,12,24,48 | 7 / 12 | 224 / 384 |
//!
//! `kiln predict --model swin_tiny_patch4_window7_224 --weights swin_tiny.safetensors cat.png`

use burn::prelude::*;
use burn::tensor::ops::PadMode;
use kiln_nn::{
    ClassifierHead, ClassifierHeadConfig, DropPath, LayerNorm, LayerNormConfig, Mlp, MlpConfig, PatchEmbed, PatchEmbedConfig,
    PatchMerging, PatchMergingConfig, WindowAttention, WindowAttentionConfig, drop_path_schedule,
    shifted_window_mask, window_partition, window_reverse,
};

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, staged_layer_ordinal};
use crate::checkpoint::KeyMap;
use crate::error::ModelError;
use crate::family::{Family, PretrainedCfg, Variant};

/// Hyper-parameters of a Swin Transformer; every field can be overridden.
#[derive(Config, Debug)]
pub struct SwinConfig {
    /// Input `[height, width]` the attention masks are built for.
    pub img_size: [usize; 2],
    /// Side of the square patches of the stem.
    #[config(default = 4)]
    pub patch_size: usize,
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Classes of the head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width of the first stage; doubles at every stage.
    pub embed_dim: usize,
    /// Blocks per stage.
    pub depths: Vec<usize>,
    /// Heads per stage.
    pub num_heads: Vec<usize>,
    /// Target window side (clipped where a stage is smaller).
    pub window_size: usize,
    /// MLP hidden width over block width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Dropout before the classifier and in the MLPs/projections (timm `drop_rate`).
    #[config(default = 0.0)]
    pub drop_rate: f64,
    /// Dropout on attention weights.
    #[config(default = 0.0)]
    pub attn_drop_rate: f64,
    /// Stochastic depth at the last block, linear from 0 (timm's default 0.1).
    #[config(default = 0.1)]
    pub drop_path_rate: f64,
}

impl SwinConfig {
    fn variant(embed_dim: usize, depths: [usize; 4], heads: [usize; 4], window: usize, size: usize) -> Self {
        Self::new([size, size], embed_dim, depths.to_vec(), heads.to_vec(), window)
    }
    /// Swin-T, 224 px, window 7.
    pub fn tiny() -> Self {
        Self::variant(96, [2, 2, 6, 2], [3, 6, 12, 24], 7, 224)
    }
    /// Swin-S, 224 px, window 7.
    pub fn small() -> Self {
        Self::variant(96, [2, 2, 18, 2], [3, 6, 12, 24], 7, 224)
    }
    /// Swin-B at `size` px with window `window` (timm: 7 @ 224, 12 @ 384).
    pub fn base(window: usize, size: usize) -> Self {
        Self::variant(128, [2, 2, 18, 2], [4, 8, 16, 32], window, size)
    }
    /// Swin-L at `size` px with window `window`.
    pub fn large(window: usize, size: usize) -> Self {
        Self::variant(192, [2, 2, 18, 2], [6, 12, 24, 48], window, size)
    }

    /// Width of stage `i`.
    pub fn stage_dim(&self, i: usize) -> usize {
        self.embed_dim << i
    }

    /// Token grid of each stage: the patch grid, then halved (rounding up) per stage.
    pub fn stage_resolutions(&self) -> Vec<[usize; 2]> {
        let grid = [self.img_size[0] / self.patch_size, self.img_size[1] / self.patch_size];
        (0..self.depths.len())
            .map(|i| {
                let scale = 1 << i;
                [grid[0].div_ceil(scale), grid[1].div_ceil(scale)]
            })
            .collect()
    }

    /// Checks what timm would refuse, with a message that says which field to change.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        if self.depths.is_empty() || self.depths.len() != self.num_heads.len() {
            return bad(format!(
                "depths ({:?}) and num_heads ({:?}) must be non-empty and of the same length",
                self.depths, self.num_heads
            ));
        }
        if self.patch_size == 0 || self.window_size == 0 || self.in_chans == 0 || self.num_classes == 0 {
            return bad("patch_size, window_size, in_chans and num_classes must be positive".into());
        }
        if self.img_size.iter().any(|s| *s == 0 || s % self.patch_size != 0) {
            return bad(format!(
                "img_size {:?} must be a positive multiple of patch_size {}",
                self.img_size, self.patch_size
            ));
        }
        for (i, &heads) in self.num_heads.iter().enumerate() {
            if heads == 0 || self.stage_dim(i) % heads != 0 {
                return bad(format!("stage {i} width {} is not divisible by {heads} heads", self.stage_dim(i)));
            }
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!("drop_path_rate {} must be in [0, 1)", self.drop_path_rate));
        }
        Ok(())
    }

    /// Builds the model with timm's initialisation.
    pub fn init(&self, device: &Device) -> Result<Swin, ModelError> {
        self.validate()?;
        let drop_path = drop_path_schedule(self.drop_path_rate, &self.depths);
        let resolutions = self.stage_resolutions();
        let layers = (0..self.depths.len())
            .map(|i| {
                let dim = self.stage_dim(i);
                SwinStage {
                    downsample: (i > 0).then(|| PatchMergingConfig::new(self.stage_dim(i - 1), dim).init(device)),
                    blocks: (0..self.depths[i])
                        .map(|j| {
                            let target_shift = if j % 2 == 1 { self.window_size / 2 } else { 0 };
                            self.block(dim, self.num_heads[i], resolutions[i], target_shift, drop_path[i][j], device)
                        })
                        .collect(),
                }
            })
            .collect();
        let num_features = self.stage_dim(self.depths.len() - 1);
        Ok(Swin {
            patch_embed: PatchEmbedConfig::new(self.in_chans, self.embed_dim, self.patch_size).init(device),
            layers,
            norm: LayerNormConfig::new(num_features).init(device),
            head: ClassifierHeadConfig::new(num_features, self.num_classes)
                .with_dropout(self.drop_rate)
                .init(device),
            img_size: self.img_size,
        })
    }

    fn block(&self, dim: usize, heads: usize, resolution: [usize; 2], target_shift: usize, drop_path: f64, device: &Device) -> SwinBlock {
        // timm's `_calc_window_shift`: a stage no larger than the window is one window, unshifted
        let window = resolution.map(|r| r.min(self.window_size));
        let shift = [0, 1].map(|a| if resolution[a] <= window[a] { 0 } else { target_shift });
        let padded = [0, 1].map(|a| resolution[a].div_ceil(window[a]) * window[a]);
        let attn_mask = (shift != [0, 0]).then(|| {
            let n = window[0] * window[1];
            let windows = (padded[0] / window[0]) * (padded[1] / window[1]);
            let mask = shifted_window_mask(padded, window, shift);
            Tensor::from_data(TensorData::new(mask, [windows, n, n]), device)
        });
        SwinBlock {
            norm1: LayerNormConfig::new(dim).init(device),
            attn: WindowAttentionConfig::new(dim, heads, window)
                .with_attn_drop(self.attn_drop_rate)
                .with_proj_drop(self.drop_rate)
                .init(device),
            norm2: LayerNormConfig::new(dim).init(device),
            mlp: MlpConfig::new(dim, (dim as f64 * self.mlp_ratio) as usize)
                .with_dropout(self.drop_rate)
                .init(device),
            drop_path: DropPath::new(drop_path),
            attn_mask,
            shift,
        }
    }
}

/// One Swin block: (shifted) window attention then MLP, each pre-normed and residual.
#[derive(Module, Debug)]
pub struct SwinBlock {
    norm1: LayerNorm,
    attn: WindowAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
    /// `[num_windows, N, N]` for shifted blocks; recomputed from the resolution, never loaded.
    /// A constant, not skipped, so `valid()` takes it off the autodiff device.
    attn_mask: Option<Tensor<3>>,
    shift: [usize; 2],
}

impl SwinBlock {
    /// # Shapes
    /// - `x`: `[batch, H, W, C]` -> `[batch, H, W, C]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = x.clone() + self.drop_path.forward(self.window_attention(self.norm1.forward(x)));
        x.clone() + self.drop_path.forward(self.mlp.forward(self.norm2.forward(x)))
    }

    /// Cyclic shift, pad to whole windows, attend per window, undo all three.
    fn window_attention(&self, x: Tensor<4>) -> Tensor<4> {
        let [batch, h, w, c] = x.dims();
        let window = self.attn.window();
        let [sh, sw] = self.shift.map(|s| s as i64);
        let shifted = self.shift != [0, 0];
        let x = if shifted { x.roll(&[-sh, -sw], &[1, 2]) } else { x };
        let (pad_h, pad_w) = ((window[0] - h % window[0]) % window[0], (window[1] - w % window[1]) % window[1]);
        let x = if pad_h + pad_w > 0 { x.pad([(0, pad_h), (0, pad_w), (0, 0)], PadMode::Constant(0.0)) } else { x };
        let windows = self.attn.forward(window_partition(x, window), self.attn_mask.clone());
        let x = window_reverse(windows, window, h + pad_h, w + pad_w);
        let x = if pad_h + pad_w > 0 { x.slice([0..batch, 0..h, 0..w, 0..c]) } else { x };
        if shifted { x.roll(&[sh, sw], &[1, 2]) } else { x }
    }
}

/// A stage: optional patch merging (every stage but the first), then its blocks.
#[derive(Module, Debug)]
pub struct SwinStage {
    downsample: Option<PatchMerging>,
    blocks: Vec<SwinBlock>,
}

impl SwinStage {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = match &self.downsample {
            Some(merge) => merge.forward(x),
            None => x,
        };
        self.blocks.iter().fold(x, |x, block| block.forward(x))
    }
}

/// Swin Transformer with its classification head; keys as timm's state dict.
#[derive(Module, Debug)]
pub struct Swin {
    patch_embed: PatchEmbed,
    layers: Vec<SwinStage>,
    norm: LayerNorm,
    head: ClassifierHead,
    img_size: [usize; 2],
}

impl Swin {
    /// Stage outputs, channels-last, before the final norm.
    fn stages(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let [_, _, h, w] = x.dims();
        assert!(
            [h, w] == self.img_size,
            "Swin was built for {:?} inputs (its attention masks depend on it), got {h}x{w}; \
             build it with img_size = [{h}, {w}]",
            self.img_size
        );
        let mut x = self.patch_embed.forward(x);
        let mut maps = Vec::with_capacity(self.layers.len());
        for stage in &self.layers {
            x = stage.forward(x);
            maps.push(x.clone());
        }
        maps
    }
}

impl Backbone for Swin {
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        self.stages(x).into_iter().map(|m| m.permute([0, 3, 1, 2])).collect()
    }

    fn feature_info(&self) -> Vec<FeatureInfo> {
        let patch = self.patch_embed.proj.weight.dims()[2];
        self.layers
            .iter()
            .enumerate()
            .map(|(i, stage)| FeatureInfo {
                channels: stage.blocks.first().map(|b| b.norm1.gamma.dims()[0]).unwrap_or(0),
                stride: patch << i,
            })
            .collect()
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let last = self.stages(x).pop().expect("Swin has at least one stage");
        let [batch, h, w, c] = last.dims();
        let pooled = self.norm.forward(last).reshape([batch, h * w, c]).mean_dim(1).reshape([batch, c]);
        self.head.forward(pooled)
    }
}

/// Maps a timm Swin state-dict key to our module path: the module tree mirrors timm's, so
/// keys are kept, except the buffers we recompute from the window (`relative_position_index`,
/// `attn_mask`), which are skipped.
pub fn timm_key(key: &str) -> Option<String> {
    let recomputed = key.ends_with("relative_position_index") || key.ends_with("attn_mask");
    (!recomputed).then(|| key.to_string())
}

impl Family for SwinConfig {
    const NAME: &'static str = "swin";
    type Model = Swin;

    fn init(&self, device: &Device) -> Result<Swin, ModelError> {
        SwinConfig::init(self, device) // the inherent builder above
    }

    fn key_map(&self) -> KeyMap {
        KeyMap { rename: timm_key, classifier_prefix: "head." }
    }

    /// timm's `SwinTransformer.group_matcher(coarse=False)`: the patch embedding, then each block
    /// (a stage's patch merging with its first block), the final norm with the last block.
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        staged_layer_ordinal(path, "patch_embed", "layers.", "norm")
    }

    /// timm's `no_weight_decay()`: the relative-position tables (this port has no
    /// `absolute_pos_embed`).
    fn no_weight_decay(&self, path: &str) -> bool {
        path.ends_with("relative_position_bias_table")
    }

    fn variants<C: From<Self>>() -> Vec<Variant<C>> {
        vec![
            Variant::new("swin_tiny_patch4_window7_224", || Self::tiny().into(), PretrainedCfg::imagenet(224, 0.9)),
            Variant::new("swin_small_patch4_window7_224", || Self::small().into(), PretrainedCfg::imagenet(224, 0.9)),
            Variant::new("swin_base_patch4_window7_224", || Self::base(7, 224).into(), PretrainedCfg::imagenet(224, 0.9)),
            Variant::new("swin_base_patch4_window12_384", || Self::base(12, 384).into(), PretrainedCfg::imagenet(384, 1.0)),
            Variant::new("swin_large_patch4_window7_224", || Self::large(7, 224).into(), PretrainedCfg::imagenet(224, 0.9)),
            Variant::new("swin_large_patch4_window12_384", || Self::large(12, 384).into(), PretrainedCfg::imagenet(384, 1.0)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_test_config() -> SwinConfig {
        SwinConfig::new([32, 32], 16, vec![2, 2], vec![2, 4], 4).with_patch_size(2).with_num_classes(10)
    }

    #[test]
    fn windows_clip_and_shift_as_timm() {
        // stage resolutions 16 -> 8 -> 4 -> 2 with window 7: clipped to 4 and 2, unshifted
        let cfg = SwinConfig::new([64, 64], 8, vec![2, 2, 2, 2], vec![1, 1, 1, 1], 7).with_patch_size(4);
        assert_eq!(cfg.stage_resolutions(), vec![[16, 16], [8, 8], [4, 4], [2, 2]]);
        let model = cfg.init(&Device::flex()).unwrap();
        let blocks: Vec<(&SwinBlock, usize)> = model.layers.iter().enumerate().flat_map(|(i, s)| s.blocks.iter().map(move |b| (b, i))).collect();
        for (block, stage) in blocks {
            let expected_window = [7, 7, 4, 2][stage];
            assert_eq!(block.attn.window(), [expected_window; 2]);
            if stage >= 2 {
                assert_eq!(block.shift, [0, 0], "a single window is never shifted");
                assert!(block.attn_mask.is_none());
            }
        }
        assert_eq!(model.layers[0].blocks[1].shift, [3, 3]);
        assert!(model.layers[0].blocks[1].attn_mask.is_some());
    }

    #[test]
    fn features_have_declared_strides_and_channels() {
        let model = tiny_test_config().init(&Device::flex()).unwrap();
        crate::backbone::assert_feature_contract(&model, 3, 32, 10);
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        let err = SwinConfig { img_size: [31, 32], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("img_size"), "{err}");
        let err = SwinConfig { num_heads: vec![3, 4], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("heads"), "{err}");
    }
}

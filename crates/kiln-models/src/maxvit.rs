//! MaxViT: multi-axis attention, i.e. an MBConv, then attention within local windows ("block
//! attention"), then attention across a dilated grid ("grid attention"), in every block.
//!
//! Tu et al., "MaxViT: Multi-Axis Vision Transformer", ECCV 2022. Must match timm's
//! `timm/models/maxxvit.py` (timm 1.0) for the `maxvit_*_tf_*` models, the weights ported from
//! the official TensorFlow release: same module tree and state-dict keys, TF 'SAME' padding
//! (asymmetric on stride 2), BatchNorm eps 1e-3, tanh-GELU, the `[heads, 2h−1, 2w−1]`
//! relative-position tables indexed key minus query, qkv laid out `[q | k | v]`, partition size
//! `img_size / 32` unless set. timm's `*_rw_*`, CoAtNet and MaxxViT configurations differ in
//! many details and are not built here.
//!
//! | variant | embed | depths | stem | heads (32 per head) | sizes |
//! |---|---|---|---|---|---|
//! | tiny | 64,128,256,512 | 2,2,5,2 | 64 | 2,4,8,16 | 224 / 384 / 512 |
//! | small | 96,192,384,768 | 2,2,5,2 | 64 | 3,6,12,24 | 224 / 384 / 512 |
//! | base | 96,192,384,768 | 2,6,14,2 | 64 | 3,6,12,24 | 224 / 384 / 512 |
//! | large | 128,256,512,1024 | 2,6,14,2 | 128 | 4,8,16,32 | 224 / 384 / 512 |
//!
//! `kiln predict --model maxvit_tiny_tf_224 --weights maxvit_tiny_tf_224.safetensors cat.png`

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::prelude::*;
use kiln_nn::{
    ClassifierHead, ClassifierHeadConfig, DropPath, Gelu, LayerNorm, LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, MbConvBlock, MbConvBlockConfig, Mlp,
    MlpConfig, RelativePositionBiasTf, RelativePositionBiasTfConfig, batch_norm, drop_path_schedule, grid_partition,
    grid_reverse, init, multi_head_attention, window_partition, window_reverse,
};

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, split_index};
use crate::checkpoint::KeyMap;
use crate::error::ModelError;
use crate::family::{Family, PretrainedCfg, Variant};

/// Hyper-parameters of a MaxViT (timm's `MaxxVitCfg` with the TF conv/transformer settings,
/// flattened); every field can be overridden.
#[derive(Config, Debug)]
pub struct MaxVitConfig {
    /// Input `[height, width]`; the partition sizes are derived from it unless set.
    pub img_size: [usize; 2],
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Classes of the head.
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Width of each stage.
    pub embed_dim: Vec<usize>,
    /// MaxViT blocks per stage.
    pub depths: Vec<usize>,
    /// Width of both stem convolutions.
    pub stem_width: usize,
    /// Width of the head's `Linear + tanh` pre-logits layer (the TF models: the last stage
    /// width). Without it the final LayerNorm moves before the pooling (key `norm`), as in timm.
    pub head_hidden_size: Option<usize>,
    /// Channels per attention head.
    #[config(default = 32)]
    pub dim_head: usize,
    /// Window and grid side = `img_size / partition_ratio` per axis, where not set explicitly.
    #[config(default = 32)]
    pub partition_ratio: usize,
    /// Block-attention window `[height, width]` in tokens (derived when `None`).
    pub window_size: Option<[usize; 2]>,
    /// Grid-attention grid `[height, width]` in tokens per partition (the window, or derived,
    /// when `None`).
    pub grid_size: Option<[usize; 2]>,
    /// Hidden width of the attention MLPs over the stage width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Expanded width of the MBConvs over the stage width.
    #[config(default = 4.0)]
    pub conv_expand_ratio: f64,
    /// SE bottleneck width over the stage width.
    #[config(default = 0.25)]
    pub se_ratio: f64,
    /// BatchNorm epsilon of the stem and MBConvs (TF's 1e-3).
    #[config(default = 1e-3)]
    pub conv_norm_eps: f64,
    /// BatchNorm momentum, PyTorch's convention (which is burn's).
    #[config(default = 0.1)]
    pub conv_norm_momentum: f64,
    /// LayerNorm epsilon of the attention blocks and the head.
    #[config(default = 1e-5)]
    pub transformer_norm_eps: f64,
    /// Dropout on attention weights (timm `transformer_attn_drop`).
    #[config(default = 0.0)]
    pub attn_drop_rate: f64,
    /// Dropout after attention projections and in the MLPs (timm `transformer_proj_drop`).
    #[config(default = 0.0)]
    pub proj_drop_rate: f64,
    /// Dropout before the classifier (timm `drop_rate`).
    #[config(default = 0.0)]
    pub drop_rate: f64,
    /// Stochastic depth at the last block, linear from 0 (timm's default for MaxViT is 0).
    #[config(default = 0.0)]
    pub drop_path_rate: f64,
}

impl MaxVitConfig {
    fn tf(embed_dim: [usize; 4], depths: [usize; 4], stem_width: usize, size: usize) -> Self {
        Self::new([size, size], embed_dim.to_vec(), depths.to_vec(), stem_width).with_head_hidden_size(Some(embed_dim[3]))
    }
    /// MaxViT-T at `size` px (timm `maxvit_tiny_tf_{224,384,512}`).
    pub fn tiny(size: usize) -> Self {
        Self::tf([64, 128, 256, 512], [2, 2, 5, 2], 64, size)
    }
    /// MaxViT-S at `size` px.
    pub fn small(size: usize) -> Self {
        Self::tf([96, 192, 384, 768], [2, 2, 5, 2], 64, size)
    }
    /// MaxViT-B at `size` px.
    pub fn base(size: usize) -> Self {
        Self::tf([96, 192, 384, 768], [2, 6, 14, 2], 64, size)
    }
    /// MaxViT-L at `size` px.
    pub fn large(size: usize) -> Self {
        Self::tf([128, 256, 512, 1024], [2, 6, 14, 2], 128, size)
    }

    /// The block-attention window and the grid-attention grid, as timm resolves them: explicit
    /// sizes win, the grid defaults to the window, and both default to
    /// `img_size / partition_ratio` (7 at 224, 12 at 384, 16 at 512).
    pub fn partition_sizes(&self) -> ([usize; 2], [usize; 2]) {
        let derived = self.img_size.map(|s| s / self.partition_ratio.max(1));
        let window = self.window_size.unwrap_or(derived);
        (window, self.grid_size.or(self.window_size).unwrap_or(derived))
    }

    /// Map size after the stem and after each stage for an input of `size`: every stride-2
    /// step rounds up (TF 'SAME').
    pub fn feature_sizes(&self, size: [usize; 2]) -> (Vec<[usize; 2]>, [usize; 2]) {
        let stem = size.map(|s| s.div_ceil(2));
        let mut r = stem;
        let stages = self
            .depths
            .iter()
            .map(|_| {
                r = r.map(|s| s.div_ceil(2));
                r
            })
            .collect();
        (stages, stem)
    }

    /// Checks what timm would refuse, with a message that says which field to change.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        if self.depths.is_empty() || self.depths.len() != self.embed_dim.len() {
            return bad(format!(
                "depths ({:?}) and embed_dim ({:?}) must be non-empty and of the same length",
                self.depths, self.embed_dim
            ));
        }
        if self.depths.contains(&0) {
            return bad(format!("every stage needs at least one block, depths is {:?}", self.depths));
        }
        if [self.in_chans, self.num_classes, self.stem_width, self.dim_head].contains(&0) || self.img_size.contains(&0) {
            return bad("img_size, in_chans, num_classes, stem_width and dim_head must be positive".into());
        }
        if self.head_hidden_size == Some(0) {
            return bad("head_hidden_size must be positive (or None for no pre-logits layer)".into());
        }
        for (i, &dim) in self.embed_dim.iter().enumerate() {
            if dim == 0 || dim % self.dim_head != 0 {
                return bad(format!("stage {i} width {dim} is not a positive multiple of dim_head {}", self.dim_head));
            }
        }
        let (window, grid) = self.partition_sizes();
        if window.contains(&0) || grid.contains(&0) {
            return bad(format!(
                "window {window:?} / grid {grid:?} must be positive: img_size {:?} is smaller than partition_ratio {}",
                self.img_size, self.partition_ratio
            ));
        }
        let (stages, _) = self.feature_sizes(self.img_size);
        for (i, r) in stages.iter().enumerate() {
            if (0..2).any(|a| r[a] % window[a] != 0 || r[a] % grid[a] != 0) {
                return bad(format!(
                    "img_size {:?} gives stage {i} a {}x{} map, which window {window:?} and grid {grid:?} do not \
                     divide; MaxViT partitions without padding, so pick an img_size whose stage maps they divide \
                     (with the derived sizes and partition_ratio 32: any multiple of 32, e.g. 224, 256, 288, 384)",
                    self.img_size, r[0], r[1]
                ));
            }
        }
        for (name, p) in [
            ("drop_path_rate", self.drop_path_rate),
            ("drop_rate", self.drop_rate),
            ("attn_drop_rate", self.attn_drop_rate),
            ("proj_drop_rate", self.proj_drop_rate),
        ] {
            if !(0.0..1.0).contains(&p) {
                return bad(format!("{name} {p} must be in [0, 1)"));
            }
        }
        Ok(())
    }

    /// Builds the model with timm's initialisation (`weight_init='vit_eff'`).
    pub fn init(&self, device: &Device) -> Result<MaxVit, ModelError> {
        self.validate()?;
        let (window, grid) = self.partition_sizes();
        let drop_path = drop_path_schedule(self.drop_path_rate, &self.depths);
        let mut in_chs = self.stem_width;
        let stages = (0..self.depths.len())
            .map(|i| {
                let out = self.embed_dim[i];
                let blocks = (0..self.depths[i])
                    .map(|j| {
                        let cin = if j == 0 { in_chs } else { out };
                        self.block(cin, out, if j == 0 { 2 } else { 1 }, drop_path[i][j], (window, grid), device)
                    })
                    .collect();
                in_chs = out;
                MaxVitStage { blocks }
            })
            .collect();
        let last = *self.embed_dim.last().expect("validated: at least one stage");
        let norm_in_head = self.head_hidden_size.is_some();
        let mut head = ClassifierHeadConfig::new(last, self.num_classes)
            .with_dropout(self.drop_rate)
            .with_norm_eps(norm_in_head.then_some(self.transformer_norm_eps))
            .with_hidden_size(self.head_hidden_size)
            .init(device);
        // timm's weight init never reaches the head: it keeps nn.Linear's default (as burn's)
        head.fc = LinearConfig::new(self.head_hidden_size.unwrap_or(last), self.num_classes).init(device);
        if let (Some(pre), Some(hidden)) = (head.pre_logits.as_mut(), self.head_hidden_size) {
            pre.fc = LinearConfig::new(last, hidden).init(device);
        }
        Ok(MaxVit {
            stem: self.stem(device),
            stages,
            norm: (!norm_in_head)
                .then(|| LayerNorm2dConfig::new(last).with_epsilon(self.transformer_norm_eps).init(device)),
            head,
            window,
            grid,
        })
    }

    fn batch_norm(&self, channels: usize, device: &Device) -> BatchNorm {
        BatchNormConfig::new(channels)
            .with_epsilon(self.conv_norm_eps)
            .with_momentum(self.conv_norm_momentum)
            .init(device)
    }

    fn stem(&self, device: &Device) -> Stem {
        let conv = |cin: usize, stride: usize| {
            init::conv2d(
                Conv2dConfig::new([cin, self.stem_width], [3, 3])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Same),
                device,
            )
        };
        Stem {
            conv1: conv(self.in_chans, 2),
            norm1: self.batch_norm(self.stem_width, device),
            conv2: conv(self.stem_width, 1),
            act: Gelu::new_approximate(),
        }
    }

    fn block(
        &self,
        cin: usize,
        out: usize,
        stride: usize,
        drop_path: f64,
        (window, grid): ([usize; 2], [usize; 2]),
        device: &Device,
    ) -> MaxVitBlock {
        MaxVitBlock {
            conv: MbConvBlockConfig::new(cin, out)
                .with_stride(stride)
                .with_expand_ratio(self.conv_expand_ratio)
                .with_se_ratio(self.se_ratio)
                .with_norm_eps(self.conv_norm_eps)
                .with_norm_momentum(self.conv_norm_momentum)
                .with_approximate_gelu(true)
                .with_drop_path(drop_path)
                .init(device),
            attn_block: self.partition_attention(out, Partition::Block, window, drop_path, device),
            attn_grid: self.partition_attention(out, Partition::Grid, grid, drop_path, device),
        }
    }

    fn partition_attention(&self, dim: usize, partition: Partition, size: [usize; 2], drop_path: f64, device: &Device) -> PartitionAttention {
        let hidden = (dim as f64 * self.mlp_ratio) as usize;
        let mut mlp = MlpConfig::new(dim, hidden)
            .with_dropout(self.proj_drop_rate)
            .with_approximate_gelu(true)
            .init(device);
        // timm `_init_transformer` ('vit_eff'): Xavier weights, MLP biases N(0, 1e-6²)
        mlp.fc1 = init::xavier_linear(dim, hidden, 1e-6, device);
        mlp.fc2 = init::xavier_linear(hidden, dim, 1e-6, device);
        let layer_norm = || LayerNormConfig::new(dim).with_epsilon(self.transformer_norm_eps).init(device);
        PartitionAttention {
            norm1: layer_norm(),
            attn: RelativeAttentionConfig::new(dim, dim / self.dim_head, size)
                .with_attn_drop(self.attn_drop_rate)
                .with_proj_drop(self.proj_drop_rate)
                .init(device),
            norm2: layer_norm(),
            mlp,
            drop_path: DropPath::new(drop_path),
            partition,
        }
    }
}

/// Stem: `conv 3×3 / 2 (TF 'SAME') → BatchNorm → GELU → conv 3×3`, both convs with bias and
/// no norm after the second. Keys `conv1`, `norm1`, `conv2`.
#[derive(Module, Debug)]
struct Stem {
    conv1: Conv2d,
    norm1: BatchNorm,
    conv2: Conv2d,
    act: Gelu,
}

impl Stem {
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, stem_width, ⌈H/2⌉, ⌈W/2⌉]`
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.act.forward(batch_norm(&self.norm1, kiln_nn::fused::conv2d(&self.conv1, x)));
        kiln_nn::fused::conv2d(&self.conv2, x)
    }
}

/// Configuration of a [`RelativeAttention`].
#[derive(Config, Debug)]
struct RelativeAttentionConfig {
    dim: usize,
    num_heads: usize,
    /// Partition `[height, width]` the bias table is built for.
    partition: [usize; 2],
    #[config(default = 0.0)]
    attn_drop: f64,
    #[config(default = 0.0)]
    proj_drop: f64,
}

/// Multi-head self-attention with the TF relative-position bias (the paper's "relative
/// attention"; timm's `AttentionCl` with `RelPosBiasTf`). Keys `qkv`, `rel_pos`, `proj`.
#[derive(Module, Debug)]
struct RelativeAttention {
    /// `Linear(C, 3·C)`, output `[q | k | v]` each head-major (timm `head_first=False`).
    qkv: Linear,
    rel_pos: RelativePositionBiasTf,
    proj: Linear,
    attn_drop: Dropout,
    proj_drop: Dropout,
    num_heads: usize,
}

impl RelativeAttentionConfig {
    fn init(&self, device: &Device) -> RelativeAttention {
        RelativeAttention {
            qkv: init::xavier_linear(self.dim, 3 * self.dim, 0.0, device),
            rel_pos: RelativePositionBiasTfConfig::new(self.partition, self.num_heads).init(device),
            proj: init::xavier_linear(self.dim, self.dim, 0.0, device),
            attn_drop: DropoutConfig::new(self.attn_drop).init(),
            proj_drop: DropoutConfig::new(self.proj_drop).init(),
            num_heads: self.num_heads,
        }
    }
}

impl RelativeAttention {
    /// # Shapes
    /// - `x`: `[batch · partitions, N, C]` with `N = ph·pw` -> same shape
    fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let out = multi_head_attention(kiln_nn::fused::linear(&self.qkv, x), self.num_heads, Some(self.rel_pos.bias()), None, &self.attn_drop);
        self.proj_drop.forward(kiln_nn::fused::linear(&self.proj, out))
    }
}

/// How a [`PartitionAttention`] groups tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Partition {
    /// Block attention: contiguous `ph × pw` windows (local).
    Block,
    /// Grid attention: a `ph × pw` grid spread over the whole map with spacing
    /// `(H/ph, W/pw)` (sparse, global).
    Grid,
}

/// Attention within partitions then an MLP, each pre-normed and residual (timm's
/// `PartitionAttentionCl`); channels-last. Keys `norm1`, `attn`, `norm2`, `mlp`.
#[derive(Module, Debug)]
struct PartitionAttention {
    norm1: LayerNorm,
    attn: RelativeAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
    /// Block or grid; the size is the attention's.
    #[module(skip)]
    partition: Partition,
}

impl PartitionAttention {
    /// # Shapes
    /// - `x`: `[batch, H, W, C]` -> same shape; `H`, `W` multiples of the partition size
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [_, h, w, _] = x.dims();
        let size = self.attn.rel_pos.window();
        let y = self.norm1.forward(x.clone());
        let y = match self.partition {
            Partition::Block => window_reverse(self.attn.forward(window_partition(y, size)), size, h, w),
            Partition::Grid => grid_reverse(self.attn.forward(grid_partition(y, size)), size, h, w),
        };
        let x = x + self.drop_path.forward(y);
        x.clone() + self.drop_path.forward(self.mlp.forward(self.norm2.forward(x)))
    }
}

/// One MaxViT block: MBConv (NCHW), then block attention and grid attention (channels-last).
/// Keys `conv`, `attn_block`, `attn_grid`.
#[derive(Module, Debug)]
struct MaxVitBlock {
    conv: MbConvBlock,
    attn_block: PartitionAttention,
    attn_grid: PartitionAttention,
}

impl MaxVitBlock {
    /// # Shapes
    /// - `x`: `[batch, C_in, H, W]` -> `[batch, C_out, H / stride, W / stride]` (rounded up)
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.conv.forward(x).permute([0, 2, 3, 1]);
        let x = self.attn_grid.forward(self.attn_block.forward(x));
        x.permute([0, 3, 1, 2])
    }
}

/// A stage: its first block halves the map and sets the width. Key `blocks`.
#[derive(Module, Debug)]
struct MaxVitStage {
    blocks: Vec<MaxVitBlock>,
}

/// MaxViT with its classification head; keys as timm's state dict.
#[derive(Module, Debug)]
pub struct MaxVit {
    stem: Stem,
    stages: Vec<MaxVitStage>,
    /// Final LayerNorm2d before pooling, only without a pre-logits head (timm `norm`).
    norm: Option<LayerNorm2d>,
    head: ClassifierHead,
    window: [usize; 2],
    grid: [usize; 2],
}

impl MaxVit {
    /// The stem's output, timm's `model.stem(x)`.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, stem_width, ⌈H/2⌉, ⌈W/2⌉]`
    pub fn forward_stem(&self, x: Tensor<4>) -> Tensor<4> {
        self.stem.forward(x)
    }

    /// Block-attention window and grid-attention grid the model was built with.
    pub fn partition_sizes(&self) -> ([usize; 2], [usize; 2]) {
        (self.window, self.grid)
    }

    /// Stage outputs, NCHW.
    fn stages(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let [_, _, h, w] = x.dims();
        // checked here, so a wrong size is reported in the model's terms, not a reshape's
        let mut r = [h.div_ceil(2), w.div_ceil(2)];
        for i in 0..self.stages.len() {
            r = r.map(|s| s.div_ceil(2));
            assert!(
                (0..2).all(|a| r[a] % self.window[a] == 0 && r[a] % self.grid[a] == 0),
                "MaxViT built with window {:?} and grid {:?} cannot take a {h}x{w} input: stage {i} would be \
                 {}x{}, which they do not divide; build it for this size (img_size = [{h}, {w}])",
                self.window,
                self.grid,
                r[0],
                r[1]
            );
        }
        let mut x = self.stem.forward(x);
        let mut maps = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            x = stage.blocks.iter().fold(x, |x, block| block.forward(x));
            maps.push(x.clone());
        }
        maps
    }
}

impl Backbone for MaxVit {
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        self.stages(x)
    }

    fn feature_info(&self) -> Vec<FeatureInfo> {
        self.stages
            .iter()
            .enumerate()
            .map(|(i, stage)| FeatureInfo {
                channels: stage.blocks[0].conv.conv3_1x1.weight.dims()[0],
                stride: 4 << i, // stem /2, every stage /2
            })
            .collect()
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let last = self.stages(x).pop().expect("MaxViT has at least one stage");
        let last = match &self.norm {
            Some(norm) => norm.forward(last),
            None => last,
        };
        let [batch, c, h, w] = last.dims();
        let pooled = last.reshape([batch, c, h * w]).mean_dim(2).reshape([batch, c]);
        self.head.forward(pooled)
    }
}

/// Maps a timm MaxViT state-dict key to our module path: the module tree mirrors timm's, so
/// keys are kept, except BatchNorm's `num_batches_tracked` (a step counter that only matters
/// with `momentum=None`, which timm's MaxViT does not use) and the relative-position lookup
/// tensors we recompute from the partition size (non-persistent in timm, skipped if present).
pub fn timm_key(key: &str) -> Option<String> {
    let skipped = ["num_batches_tracked", "height_lookup", "width_lookup"].iter().any(|s| key.ends_with(s));
    (!skipped).then(|| key.to_string())
}

impl Family for MaxVitConfig {
    const NAME: &'static str = "maxvit";
    type Model = MaxVit;

    fn init(&self, device: &Device) -> Result<MaxVit, ModelError> {
        MaxVitConfig::init(self, device) // the inherent builder above
    }

    /// `head.norm` and `head.pre_logits` do not depend on the class count: only `head.fc` is
    /// the classifier.
    fn key_map(&self) -> KeyMap {
        KeyMap { rename: timm_key, classifier_prefix: "head.fc." }
    }

    /// timm's `MaxxVit.group_matcher`: the stem, then one group per stage (timm has no finer one).
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        if path.starts_with("stem") {
            return LayerOrdinal::Stem;
        }
        match split_index(path, "stages.") {
            Some((stage, _)) => LayerOrdinal::Block(vec![stage]),
            None if path.starts_with("norm") => LayerOrdinal::WithLastBlock,
            None => LayerOrdinal::Head,
        }
    }

    /// timm's `MaxxVit.no_weight_decay()`: the relative-position tables (its `rel_pos.mlp` is
    /// not part of the TF models).
    fn no_weight_decay(&self, path: &str) -> bool {
        path.ends_with("relative_position_bias_table")
    }

    fn variants<C: From<Self>>() -> Vec<Variant<C>> {
        vec![
            Variant::new("maxvit_tiny_tf_224", || Self::tiny(224).into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("maxvit_tiny_tf_384", || Self::tiny(384).into(), PretrainedCfg::inception_squash(384)),
            Variant::new("maxvit_tiny_tf_512", || Self::tiny(512).into(), PretrainedCfg::inception_squash(512)),
            Variant::new("maxvit_small_tf_224", || Self::small(224).into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("maxvit_small_tf_384", || Self::small(384).into(), PretrainedCfg::inception_squash(384)),
            Variant::new("maxvit_small_tf_512", || Self::small(512).into(), PretrainedCfg::inception_squash(512)),
            Variant::new("maxvit_base_tf_224", || Self::base(224).into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("maxvit_base_tf_384", || Self::base(384).into(), PretrainedCfg::inception_squash(384)),
            Variant::new("maxvit_base_tf_512", || Self::base(512).into(), PretrainedCfg::inception_squash(512)),
            Variant::new("maxvit_large_tf_224", || Self::large(224).into(), PretrainedCfg::imagenet(224, 0.95)),
            Variant::new("maxvit_large_tf_384", || Self::large(384).into(), PretrainedCfg::inception_squash(384)),
            Variant::new("maxvit_large_tf_512", || Self::large(512).into(), PretrainedCfg::inception_squash(512)),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_test_config() -> MaxVitConfig {
        MaxVitConfig::new([64, 64], vec![16, 32], vec![2, 1], 16)
            .with_head_hidden_size(Some(32))
            .with_dim_head(8)
            .with_partition_ratio(16)
            .with_num_classes(10)
    }

    #[test]
    fn partition_sizes_resolve_as_timm() {
        assert_eq!(MaxVitConfig::tiny(224).partition_sizes(), ([7, 7], [7, 7]));
        assert_eq!(MaxVitConfig::tiny(384).partition_sizes(), ([12, 12], [12, 12]));
        assert_eq!(MaxVitConfig::large(512).partition_sizes(), ([16, 16], [16, 16]));
        assert_eq!(MaxVitConfig::tiny(256).partition_sizes(), ([8, 8], [8, 8]));
        let explicit = tiny_test_config().with_window_size(Some([3, 2]));
        assert_eq!(explicit.partition_sizes(), ([3, 2], [3, 2]), "the grid defaults to the window");
        let both = explicit.with_grid_size(Some([2, 4]));
        assert_eq!(both.partition_sizes(), ([3, 2], [2, 4]));
    }

    #[test]
    fn feature_sizes_round_up_at_every_stride() {
        let cfg = MaxVitConfig::tiny(224);
        let (stages, stem) = cfg.feature_sizes([224, 224]);
        assert_eq!(stem, [112, 112]);
        assert_eq!(stages, vec![[56, 56], [28, 28], [14, 14], [7, 7]]);
        let (stages, stem) = MaxVitConfig { depths: vec![1, 1], ..tiny_test_config() }.feature_sizes([27, 24]);
        assert_eq!((stem, stages), ([14, 12], vec![[7, 6], [4, 3]]));
    }

    #[test]
    fn features_have_declared_strides_and_channels() {
        let model = tiny_test_config().init(&Device::flex()).unwrap();
        crate::backbone::assert_feature_contract(&model, 3, 64, 10);
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        // 200 / 32 = 6: stage maps 50, 25, 13, 7 do not divide by 6
        let err = MaxVitConfig::tiny(200).validate().unwrap_err().to_string();
        assert!(err.contains("img_size [200, 200]") && err.contains("window [6, 6]"), "{err}");
        let err = tiny_test_config().with_dim_head(12).validate().unwrap_err().to_string();
        assert!(err.contains("dim_head"), "{err}");
        let err = MaxVitConfig { depths: vec![2], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("depths"), "{err}");
        let err = MaxVitConfig { img_size: [8, 64], ..tiny_test_config() }.validate().unwrap_err().to_string();
        assert!(err.contains("partition_ratio"), "{err}");
        assert!(MaxVitConfig::tiny(256).validate().is_ok(), "256 derives window 8, which divides 64, 32, 16, 8");
    }

    #[test]
    #[should_panic(expected = "cannot take a 48x48 input")]
    fn an_input_the_partitions_do_not_divide_is_refused_by_name() {
        let device = Device::flex();
        let model = tiny_test_config().init(&device).unwrap();
        let _ = model.forward(Tensor::zeros([1, 3, 48, 48], &device));
    }

    #[test]
    fn without_pre_logits_the_norm_moves_before_pooling() {
        let device = Device::flex();
        let model = tiny_test_config().with_head_hidden_size(None).init(&device).unwrap();
        assert!(model.norm.is_some() && model.head.norm.is_none() && model.head.pre_logits.is_none());
        let with = tiny_test_config().init(&device).unwrap();
        assert!(with.norm.is_none() && with.head.norm.is_some() && with.head.pre_logits.is_some());
    }

    #[test]
    fn batch_norm_statistics_move_in_training_only() {
        use burn::module::Module;
        let stats = |m: &MaxVit| {
            let norm = &m.stages[0].blocks[0].conv.norm1;
            [norm.running_mean.value_sync(), norm.running_var.value_sync()].map(|t| t.into_data().try_to_vec::<f32>().unwrap())
        };
        let x = |device: &Device| Tensor::<4>::random([2, 3, 64, 64], burn::tensor::Distribution::Normal(0.0, 1.0), device);
        // inference (plain device): the running statistics are used, never written
        let device = Device::flex();
        let model = tiny_test_config().init(&device).unwrap();
        let fresh = stats(&model);
        let _ = model.forward(x(&device));
        assert_eq!(stats(&model), fresh);
        // training (autodiff device): batch statistics, and the running ones follow them
        let device = Device::flex().autodiff();
        let model = tiny_test_config().init(&device).unwrap();
        let _ = model.forward(x(&device));
        let trained = stats(&model.valid());
        assert!(trained[0] != fresh[0] && trained[1] != fresh[1], "{trained:?}");
        // and the trained model in eval mode leaves them alone
        let eval = model.valid();
        let _ = eval.forward(x(&Device::flex()));
        assert_eq!(stats(&eval), trained);
    }

    #[test]
    fn timm_keys_skip_only_counters_and_lookups() {
        assert_eq!(timm_key("stem.norm1.num_batches_tracked"), None);
        assert_eq!(timm_key("stages.0.blocks.0.attn_grid.attn.rel_pos.height_lookup"), None);
        let table = "stages.0.blocks.0.attn_grid.attn.rel_pos.relative_position_bias_table";
        assert_eq!(timm_key(table).as_deref(), Some(table));
        assert_eq!(timm_key("stem.norm1.running_var").as_deref(), Some("stem.norm1.running_var"));
    }
}

//! Atlas: multi-scale attention (MSA) over a pyramid of max-pooled scales.
//!
//! Agrawal et al., "Atlas: Multi-Scale Attention Improves Long Context Image Modeling",
//! arXiv:2503.12355 (2025). There is no timm port: the reference is the official code,
//! YalaLab/atlas @ 9915894 (`sandstone/models/{atlas,msa,attention}.py`), and the spec read
//! from it is `shared/design/atlas.md`. Module paths are the official state-dict keys
//! (`atlas_models.{stage}.levels.0.blocks.{block}.blocks.{scale}.attn.kv`, ...).
//!
//! A conv stem maps the image to a `H/16 × W/16` map (scale 0); scale `l` is that map
//! max-pooled by `4^l`, with as many scales as it takes to reach one 16×16 window
//! (O(log N)). Scales larger than a window are cut into 16×16 windows. Each MSA block adds a
//! per-scale position code, pools every scale into the next coarser one (bottom-up
//! summary), lets each window attend to its own tokens plus one window of every coarser
//! scale (top-down, coarse to fine), then lets each 4×4 group of coarse tokens cross-attend
//! to the fine window under it (bottom-up, fine to coarse). Stages run their blocks and then
//! drop the finest scale; the head is LayerNorm, mean over tokens, LayerNorm, linear.
//!
//! Beyond the official code, behind options whose defaults reproduce it:
//! - [`ParentMapping::Spatial`]: the top-down pass pairs a fine window with the coarse window
//!   that contains it. The official code pairs windows in raster order
//!   ([`ParentMapping::Raster`]), which is wrong whenever a coarser scale has several windows
//!   (2048 px and up; spec §5.2).
//! - `pad_to_windows`: sizes whose scales do not tile into windows (1280, 1536 px, ...) are
//!   padded to whole windows per scale; padded tokens are masked as keys, left out of the
//!   pooling and of the readout, so they cannot change a real token.
//!
//! | variant | width | heads | depths | window / pool | size | params at 1024 px |
//! |---|---|---|---|---|---|---|
//! | atlas_base_1024 (Atlas-B/16) | 768 | 12 | 2, 10 | 16 / 4 | 1024 | 118,253,604 |
//! | atlas_small_1024 (Atlas-S/16) | 384 | 6 | 2, 10 | 16 / 4 | 1024 | 31,048,164 |
//!
//! The parameter count grows with the input size (one set of block weights per scale per
//! block): Atlas-B has 208,063,524 at 2048 px. Counts are of the parameters forward uses;
//! the official modules also build a per-stage BatchNorm and head that forward never
//! touches (156,872 more for Atlas-B), which checkpoint import skips.
//!
//! `kiln predict --model atlas_base_1024 --weights atlas_B_res1024.pth --json image.png`

use burn::nn::{Linear, Relu};
use burn::prelude::*;
use burn::tensor::ops::PadMode;
use kiln_nn::{
    ConvStem, ConvStemConfig, CrossAttention, CrossAttentionConfig, DropPath, LayerNorm, LayerNormConfig, Mlp, MlpConfig, drop_path_schedule,
    init, max_pool_ceil, max_pool_pyramid, window_partition, window_reverse,
};

use crate::backbone::{Backbone, FeatureInfo, LayerOrdinal, split_index};
use crate::checkpoint::KeyMap;
use crate::error::ModelError;
use crate::family::{Family, PretrainedCfg, Variant};

/// Total stride of the conv stem.
pub const STEM_STRIDE: usize = 16;

/// Which window of a coarser scale a fine window reads in the top-down pass.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ParentMapping {
    /// The official pairing: fine window `i` (raster order, batch outermost) reads coarse
    /// window `i / (n_fine / n_coarse)`. Exact when the coarser scale is one window (the whole
    /// released 1024-px model); from 2048 px on, most fine windows read a coarse window that
    /// does not contain them. Needed for parity with official checkpoints.
    Raster,
    /// Fine window `(r, c)` reads the coarse window containing it, `(r / 4^d, c / 4^d)` for
    /// scales `d` apart, as the paper describes.
    Spatial,
}

/// Hyper-parameters of an Atlas model; every field can be overridden. The scale layout is
/// derived from `img_size`, never configured.
#[derive(Config, Debug)]
pub struct AtlasConfig {
    /// Input `[height, width]` (square) the model is built for; it fixes the number of scales
    /// and so the number of block weights.
    pub img_size: [usize; 2],
    /// Input channels.
    #[config(default = 3)]
    pub in_chans: usize,
    /// Classes of the head.
    #[config(default = 100)]
    pub num_classes: usize,
    /// Token width `C` at every scale (the official `dim`/`embed_dim`); the stem's inner
    /// width is `C / 4`.
    pub embed_dim: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Blocks per stage; every stage but the last drops the finest scale after its blocks.
    pub depths: Vec<usize>,
    /// Width of the stem's first convolution (the official `in_dim`, hard-wired to 64).
    #[config(default = 64)]
    pub stem_dim: usize,
    /// Window side `k` in tokens (official `merge_ratio`).
    #[config(default = 16)]
    pub window_size: usize,
    /// Pooling factor `s` between scales (official `local2global`).
    #[config(default = 4)]
    pub pool_size: usize,
    /// MLP hidden width over block width.
    #[config(default = 4.0)]
    pub mlp_ratio: f64,
    /// Whether the `q` and `kv` projections have a bias.
    #[config(default = true)]
    pub qkv_bias: bool,
    /// Dropout after attention projections and in the MLPs (official `drop_rate`).
    #[config(default = 0.0)]
    pub drop_rate: f64,
    /// Dropout on attention weights.
    #[config(default = 0.0)]
    pub attn_drop_rate: f64,
    /// Stochastic depth at the last block of each stage, linear from 0 within every stage
    /// (the released config: 0.3).
    #[config(default = 0.3)]
    pub drop_path_rate: f64,
    /// Pairing of fine and coarse windows in the top-down pass (official: raster).
    #[config(default = "ParentMapping::Raster")]
    pub parent_mapping: ParentMapping,
    /// Pad scales that do not tile into windows, masking the padding (official: refuse).
    #[config(default = false)]
    pub pad_to_windows: bool,
}

impl AtlasConfig {
    fn variant(embed_dim: usize, num_heads: usize) -> Self {
        Self::new([1024, 1024], embed_dim, num_heads, vec![2, 10])
    }
    /// Atlas-B/16 at 1024 px: width 768, 12 heads, D2D10 (the released configuration).
    pub fn base() -> Self {
        Self::variant(768, 12)
    }
    /// Atlas-S/16 at 1024 px: width 384, 6 heads, D2D10 (the paper's "Small"; width and heads
    /// from its ablations, depths as Atlas-B).
    pub fn small() -> Self {
        Self::variant(384, 6)
    }

    /// Side of the stem's output map for this input.
    pub fn stem_side(&self) -> usize {
        self.img_size[0].div_ceil(STEM_STRIDE)
    }

    /// The scale layout for this input size.
    pub fn layout(&self) -> Result<Vec<ScaleLayout>, ModelError> {
        multiscale_layout(self.stem_side(), self.window_size, self.pool_size, self.pad_to_windows)
            .map_err(|reason| {
                ModelError::InvalidConfig(format!(
                    "img_size {:?} does not fit Atlas' windows: {reason}; use a size whose {}-px token map \
                     tiles (1024, 2048, 3072, 4096 px ...) or set pad_to_windows = true",
                    self.img_size, STEM_STRIDE
                ))
            })
    }

    /// Checks what the official code would refuse or silently get wrong, naming the field.
    pub fn validate(&self) -> Result<Vec<ScaleLayout>, ModelError> {
        let bad = |msg: String| Err(ModelError::InvalidConfig(msg));
        if self.img_size[0] != self.img_size[1] {
            return bad(format!("img_size {:?} must be square (Atlas' windows and position codes are)", self.img_size));
        }
        if self.img_size[0] < 2 * STEM_STRIDE {
            return bad(format!("img_size {:?} must be at least {} px", self.img_size, 2 * STEM_STRIDE));
        }
        if self.depths.is_empty() || self.depths.contains(&0) {
            return bad(format!("depths {:?} must be non-empty and positive", self.depths));
        }
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(4) {
            return bad(format!("embed_dim {} must be a positive multiple of 4 (the stem's width is embed_dim / 4)", self.embed_dim));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return bad(format!("embed_dim {} is not divisible by num_heads {}", self.embed_dim, self.num_heads));
        }
        if self.in_chans == 0 || self.num_classes == 0 || self.stem_dim == 0 {
            return bad("in_chans, num_classes and stem_dim must be positive".into());
        }
        if self.pool_size < 2 || self.window_size < 2 || !self.window_size.is_multiple_of(self.pool_size) {
            return bad(format!(
                "window_size {} must be a multiple of pool_size {} (>= 2): each window pools into whole tokens",
                self.window_size, self.pool_size
            ));
        }
        if !(0.0..1.0).contains(&self.drop_path_rate) {
            return bad(format!("drop_path_rate {} must be in [0, 1)", self.drop_path_rate));
        }
        let layout = self.layout()?;
        if self.parent_mapping == ParentMapping::Raster {
            raster_pairing_defined(&layout).map_err(|reason| {
                ModelError::InvalidConfig(format!(
                    "img_size {:?}: {reason}; the official raster pairing is undefined there, set \
                     parent_mapping = \"Spatial\"",
                    self.img_size
                ))
            })?;
        }
        Ok(layout)
    }

    /// Number of scales each stage holds: stage `j` starts at scale `min(j, L − 1)`.
    pub fn stage_scales(&self, num_scales: usize) -> Vec<usize> {
        (0..self.depths.len()).map(|j| num_scales - j.min(num_scales - 1)).collect()
    }

    /// Builds the model with PyTorch's default initialisation (the official code has no
    /// custom init).
    pub fn init(&self, device: &Device) -> Result<Atlas, ModelError> {
        let layout = self.validate()?;
        let dim = self.embed_dim;
        let stage_scales = self.stage_scales(layout.len());
        let atlas_models = self
            .depths
            .iter()
            .zip(&stage_scales)
            .enumerate()
            .map(|(j, (&depth, &scales))| {
                // the official schedule restarts at 0 in every stage
                let rates = &drop_path_schedule(self.drop_path_rate, &[depth])[0];
                AtlasStage {
                    patch_embed: (j == 0).then(|| {
                        ConvStemConfig::new(self.in_chans, dim / 4).with_first_width(self.stem_dim).init(device)
                    }),
                    levels: vec![MultiScaleAttentionLayer {
                        blocks: rates.iter().map(|&rate| self.msa_block(scales, rate, device)).collect(),
                    }],
                }
            })
            .collect();
        Ok(Atlas {
            atlas_models,
            readout_norm: LayerNormConfig::new(dim).init(device),
            fc_norm: LayerNormConfig::new(dim).init(device),
            fc: init::torch_linear(dim, self.num_classes, true, device),
            num_scales: layout.len(),
            window_size: self.window_size,
            pool_size: self.pool_size,
            pad_to_windows: self.pad_to_windows,
            parent_mapping: self.parent_mapping,
            embed_dim: dim,
        })
    }

    fn msa_block(&self, scales: usize, drop_path: f64, device: &Device) -> MultiScaleAttentionBlock {
        let dim = self.embed_dim;
        MultiScaleAttentionBlock {
            blocks: (0..scales)
                .map(|_| CrossWindowBlock {
                    norm1_q: LayerNormConfig::new(dim).init(device),
                    norm1_kv: LayerNormConfig::new(dim).init(device),
                    attn: CrossAttentionConfig::new(dim, self.num_heads)
                        .with_qkv_bias(self.qkv_bias)
                        .with_attn_drop(self.attn_drop_rate)
                        .with_proj_drop(self.drop_rate)
                        .with_torch_init(true)
                        .init(device),
                    norm2: LayerNormConfig::new(dim).init(device),
                    mlp: MlpConfig::new(dim, (dim as f64 * self.mlp_ratio) as usize)
                        .with_dropout(self.drop_rate)
                        .with_torch_init(true)
                        .init(device),
                    drop_path: DropPath::new(drop_path),
                })
                .collect(),
            posemb: (0..scales).map(|_| RelativePositionEmbed::new(dim, device)).collect(),
        }
    }
}

/// Where the tokens of one scale sit: a `side × side` map (the `valid × valid` top-left
/// part real, the rest padding) cut into `window × window` windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleLayout {
    /// Side of the map of real tokens.
    pub valid: usize,
    /// Side of the map padded to whole windows (equal to `valid` unless padding is on).
    pub side: usize,
    /// Side of one window: the window size, or `side` for a scale that is a single window.
    pub window: usize,
}

impl ScaleLayout {
    /// Windows per row (and per column).
    pub fn grid(&self) -> usize {
        self.side / self.window
    }
    /// Windows per image.
    pub fn num_windows(&self) -> usize {
        self.grid() * self.grid()
    }
    /// Tokens per window.
    pub fn window_tokens(&self) -> usize {
        self.window * self.window
    }
    /// Whether the map holds padding.
    pub fn is_padded(&self) -> bool {
        self.valid != self.side
    }
    /// For one image, whether each token is padding, windows in raster order and tokens
    /// row-major inside each (the token layout).
    pub fn padding(&self) -> Vec<bool> {
        let (g, w) = (self.grid(), self.window);
        let mut pad = Vec::with_capacity(self.num_windows() * self.window_tokens());
        for wr in 0..g {
            for wc in 0..g {
                for y in 0..w {
                    for x in 0..w {
                        pad.push(wr * w + y >= self.valid || wc * w + x >= self.valid);
                    }
                }
            }
        }
        pad
    }
}

/// The scales of a `tokens × tokens` stem map (official `prepare_multiscale_layout`).
///
/// There are `L = 1 + ceil(log_pool(tokens / window))` scales, finest first; scale `l` has
/// `tokens / pool^l` tokens per side, cut into `window × window` windows if larger than a
/// window, else one window. Without `pad` every windowed scale must divide into whole
/// windows and pool exactly (the official code fails otherwise). With `pad`, scale `l + 1`
/// has `ceil(valid_l / pool)` real tokens per side and each scale is padded to whole windows;
/// the coarsest scale is padded so that every window of the scale below covers exactly
/// `(window / pool)²` of its tokens.
pub fn multiscale_layout(tokens: usize, window: usize, pool: usize, pad: bool) -> Result<Vec<ScaleLayout>, String> {
    if tokens <= window {
        return Ok(vec![ScaleLayout { valid: tokens, side: tokens, window: tokens }]);
    }
    let mut num_scales = 1;
    let mut reach = window;
    while reach < tokens {
        reach *= pool;
        num_scales += 1;
    }
    let mut layout: Vec<ScaleLayout> = Vec::with_capacity(num_scales);
    let mut valid = tokens;
    for l in 0..num_scales {
        if l + 1 < num_scales {
            // a windowed scale (valid > window by the choice of num_scales)
            if !pad && !valid.is_multiple_of(window) {
                return Err(format!("scale {l} is {valid}x{valid} tokens, not a whole number of {window}x{window} windows"));
            }
            if !pad && !valid.is_multiple_of(pool) {
                return Err(format!("scale {l} ({valid}x{valid} tokens) does not pool exactly by {pool}"));
            }
            layout.push(ScaleLayout { valid, side: valid.div_ceil(window) * window, window });
            valid = valid.div_ceil(pool);
        } else {
            let side = window / pool * layout[l - 1].grid();
            layout.push(ScaleLayout { valid, side, window: side });
        }
    }
    Ok(layout)
}

/// Checks that the official raster pairing is defined: every scale's window count must be a
/// multiple of every coarser scale's (always true without padding).
fn raster_pairing_defined(layout: &[ScaleLayout]) -> Result<(), String> {
    for (s, fine) in layout.iter().enumerate() {
        for (t, coarse) in layout.iter().enumerate().skip(s + 1) {
            if fine.num_windows() % coarse.num_windows() != 0 {
                return Err(format!(
                    "scale {s} has {} windows, scale {t} has {}",
                    fine.num_windows(),
                    coarse.num_windows()
                ));
            }
        }
    }
    Ok(())
}

/// For each window of `fine` (one image, raster order), the window of `coarse` it reads in
/// the top-down pass; `levels` is how many pooling steps separate them.
pub fn parent_windows(fine: &ScaleLayout, coarse: &ScaleLayout, levels: u32, pool: usize, mapping: ParentMapping) -> Vec<usize> {
    let (nf, nc) = (fine.num_windows(), coarse.num_windows());
    match mapping {
        // `repeat_interleave(n_fine / n_coarse)` along the flattened window axis
        ParentMapping::Raster => (0..nf).map(|i| i / (nf / nc)).collect(),
        ParentMapping::Spatial => {
            // a fine window spans fine.window fine tokens = fine.window / pool^levels coarse
            // tokens, which nest inside coarse windows
            let span = fine.window / pool.pow(levels);
            let (gf, gc) = (fine.grid(), coarse.grid());
            let parent = |r: usize| (r * span / coarse.window).min(gc - 1);
            (0..nf).map(|i| parent(i / gf) * gc + parent(i % gf)).collect()
        }
    }
}

/// The tensors a forward pass needs about the scales of one stage: padding masks and
/// top-down window pairings, built once per stage.
#[derive(Clone)]
struct StagePlan {
    layout: Vec<ScaleLayout>,
    batch: usize,
    pool: usize,
    mapping: ParentMapping,
    device: Device,
    /// `[batch · windows, window tokens]`, `true` on padding; `None` for an unpadded scale.
    padding: Vec<Option<Tensor<2, Bool>>>,
    /// `parents[s][t]`: for every window of scale `s` (all images), the window of scale
    /// `t > s` it reads.
    parents: Vec<Vec<Option<Tensor<1, Int>>>>,
    /// `top_down_masks[s]`: `[batch · windows_s, keys]`, `true` on padded keys, for scale
    /// `s`'s own window followed by its coarse windows, coarsest first; `None` if no key is
    /// padding.
    top_down_masks: Vec<Option<Tensor<2, Bool>>>,
}

impl StagePlan {
    fn new(layout: &[ScaleLayout], batch: usize, pool: usize, mapping: ParentMapping, device: &Device) -> Self {
        let padding = layout
            .iter()
            .map(|scale| {
                scale.is_padded().then(|| {
                    let one = scale.padding();
                    let all: Vec<bool> = (0..batch).flat_map(|_| one.iter().copied()).collect();
                    Tensor::from_data(TensorData::new(all, [batch * scale.num_windows(), scale.window_tokens()]), device)
                })
            })
            .collect();
        let n = layout.len();
        // per image: parent_of[s][t][i] = the window of scale t that window i of scale s reads
        let parent_of: Vec<Vec<Vec<usize>>> = (0..n)
            .map(|s| (0..n).map(|t| if t > s { parent_windows(&layout[s], &layout[t], (t - s) as u32, pool, mapping) } else { Vec::new() }).collect())
            .collect();
        let parents = (0..n)
            .map(|s| {
                (0..n)
                    .map(|t| {
                        (t > s).then(|| {
                            let nc = layout[t].num_windows();
                            let all: Vec<i64> =
                                (0..batch).flat_map(|b| parent_of[s][t].iter().map(move |&p| (b * nc + p) as i64)).collect();
                            let len = all.len();
                            Tensor::from_data(TensorData::new(all, [len]), device)
                        })
                    })
                    .collect()
            })
            .collect();
        let top_down_masks = (0..n)
            .map(|s| {
                let scales: Vec<usize> = std::iter::once(s).chain((s + 1..n).rev()).collect();
                if scales.iter().all(|&t| !layout[t].is_padded()) {
                    return None;
                }
                let pads: Vec<Vec<bool>> = (0..n).map(|t| layout[t].padding()).collect();
                let keys: usize = scales.iter().map(|&t| layout[t].window_tokens()).sum();
                let mut all = Vec::with_capacity(batch * layout[s].num_windows() * keys);
                for _ in 0..batch {
                    for i in 0..layout[s].num_windows() {
                        for &t in &scales {
                            let window = if t == s { i } else { parent_of[s][t][i] };
                            let k = layout[t].window_tokens();
                            all.extend_from_slice(&pads[t][window * k..(window + 1) * k]);
                        }
                    }
                }
                Some(Tensor::from_data(TensorData::new(all, [batch * layout[s].num_windows(), keys]), device))
            })
            .collect();
        Self { layout: layout.to_vec(), batch, pool, mapping, device: device.clone(), padding, parents, top_down_masks }
    }

    /// The plan of the next stage, which has dropped the finest scale.
    fn without_finest(&self) -> Self {
        Self::new(&self.layout[1..], self.batch, self.pool, self.mapping, &self.device)
    }

    /// # Shapes
    /// - `tokens`: `[batch · windows, window tokens, C]` -> `[batch, side, side, C]`
    fn to_map(&self, tokens: Tensor<3>, l: usize) -> Tensor<4> {
        let s = self.layout[l];
        window_reverse(tokens, [s.window, s.window], s.side, s.side)
    }

    /// # Shapes
    /// - `map`: `[batch, side, side, C]` -> `[batch · windows, window tokens, C]`
    fn to_windows(&self, map: Tensor<4>, l: usize) -> Tensor<3> {
        let s = self.layout[l];
        window_partition(map, [s.window, s.window])
    }

    /// The real tokens of scale `l` as a map.
    ///
    /// # Shapes
    /// - returns `[batch, valid, valid, C]`
    fn valid_map(&self, tokens: Tensor<3>, l: usize) -> Tensor<4> {
        let map = self.to_map(tokens, l);
        let s = self.layout[l];
        if s.is_padded() { map.slice([0..self.batch, 0..s.valid, 0..s.valid]) } else { map }
    }

    /// Pads a `[batch, h, h, C]` map with zeros to scale `l`'s side and windows it.
    fn pad_and_window(&self, map: Tensor<4>, l: usize) -> Tensor<3> {
        let [_, h, w, _] = map.dims();
        let side = self.layout[l].side;
        let map = if h < side || w < side { map.pad([(0, side - h), (0, side - w), (0, 0)], PadMode::Constant(0.0)) } else { map };
        self.to_windows(map, l)
    }

    /// Bottom-up summary: scale `l`'s real tokens max-pooled onto scale `l + 1`'s layout
    /// (zeros on its padding).
    fn pool_into_next(&self, tokens: Tensor<3>, l: usize) -> Tensor<3> {
        let map = self.valid_map(tokens, l).permute([0, 3, 1, 2]);
        let pooled = max_pool_ceil(map, self.pool).permute([0, 2, 3, 1]);
        self.pad_and_window(pooled, l + 1)
    }

    /// Side of a group of scale-`s` tokens under one window of scale `s − 1`.
    fn group(&self, s: usize) -> usize {
        self.layout[s - 1].window / self.pool
    }

    /// Regroups scale `s`'s tokens so that each group holds the `group²` tokens under one
    /// window of scale `s − 1`, groups in that scale's window order.
    ///
    /// # Shapes
    /// - `tokens`: `[batch · windows_s, window tokens_s, C]` -> `[batch · windows_{s−1}, group², C]`
    fn group_under_finer_windows(&self, tokens: Tensor<3>, s: usize) -> Tensor<3> {
        let g = self.group(s);
        let region = g * self.layout[s - 1].grid();
        let map = self.to_map(tokens, s);
        let map = if region < self.layout[s].side { map.slice([0..self.batch, 0..region, 0..region]) } else { map };
        window_partition(map, [g, g])
    }

    /// Inverse of [`group_under_finer_windows`](Self::group_under_finer_windows); tokens under
    /// no finer window (padding) get zeros.
    fn ungroup(&self, groups: Tensor<3>, s: usize) -> Tensor<3> {
        let g = self.group(s);
        let region = g * self.layout[s - 1].grid();
        self.pad_and_window(window_reverse(groups, [g, g], region, region), s)
    }

}

/// Slot of the official position MLP's `nn.Sequential` (`projector.{0,1,2}`).
#[derive(Module, Debug)]
enum ProjectorLayer {
    Linear(Linear),
    Relu(Relu),
}

/// The official `RelativePositionEmbed`: an MLP from each token's in-window position to `C`,
/// added to every window of one scale. Despite the name it is an absolute code inside the
/// window; keys `projector.0` (`Linear(2, 512)`), `projector.2` (`Linear(512, C)`, no bias).
#[derive(Module, Debug)]
pub struct RelativePositionEmbed {
    projector: Vec<ProjectorLayer>,
}

impl RelativePositionEmbed {
    fn new(dim: usize, device: &Device) -> Self {
        Self {
            projector: vec![
                ProjectorLayer::Linear(init::torch_linear(2, 512, true, device)),
                ProjectorLayer::Relu(Relu::new()),
                ProjectorLayer::Linear(init::torch_linear(512, dim, false, device)),
            ],
        }
    }

    /// The code of a `side × side` window: row and column `i` normalised as
    /// `(i − ⌊side/2⌋) / ⌊side/2⌋`, row-major.
    ///
    /// # Shapes
    /// - returns `[1, side², C]`
    fn embedding(&self, side: usize, device: &Device) -> Tensor<3> {
        let half = (side / 2) as f32;
        let coords: Vec<f32> = (0..side)
            .flat_map(|i| (0..side).flat_map(move |j| [(i as f32 - half) / half, (j as f32 - half) / half]))
            .collect();
        let x = Tensor::<2>::from_data(TensorData::new(coords, [side * side, 2]), device);
        let out = self.projector.iter().fold(x, |x, layer| match layer {
            ProjectorLayer::Linear(linear) => kiln_nn::fused::linear(linear, x),
            ProjectorLayer::Relu(relu) => relu.forward(x),
        });
        out.unsqueeze_dim(0)
    }
}

/// One scale's sub-block of an MSA block (official `CrossWindowBlock`): separate LayerNorms
/// for queries and keys/values, cross-attention, then a pre-normed MLP.
#[derive(Module, Debug)]
pub struct CrossWindowBlock {
    norm1_q: LayerNorm,
    norm1_kv: LayerNorm,
    attn: CrossAttention,
    norm2: LayerNorm,
    mlp: Mlp,
    drop_path: DropPath,
}

impl CrossWindowBlock {
    /// # Shapes
    /// - `x`: `[n, tokens, C]` -> `[n, heads, tokens, C / heads]`
    fn query(&self, x: Tensor<3>) -> Tensor<4> {
        self.attn.query(self.norm1_q.forward(x))
    }

    /// # Shapes
    /// - `x`: `[n, tokens, C]` -> keys, values `[n, heads, tokens, C / heads]`
    fn key_value(&self, x: Tensor<3>) -> (Tensor<4>, Tensor<4>) {
        self.attn.key_value(self.norm1_kv.forward(x))
    }

    /// `x + drop_path(update)`, then `x + drop_path(mlp(norm2(x)))`.
    ///
    /// # Shapes
    /// - `x`, `update`: `[n, tokens, C]` -> `[n, tokens, C]`
    fn residual(&self, x: Tensor<3>, update: Tensor<3>) -> Tensor<3> {
        let x = x + self.drop_path.forward(update);
        x.clone() + self.drop_path.forward(self.mlp.forward(self.norm2.forward(x)))
    }
}

/// One MSA block over the scales of a stage (official `MultiScaleAttentionBlock` in its
/// `all2all_sattn__sequential` / `one2one_xattn` configuration): a sub-block and a position
/// MLP per scale, never shared.
#[derive(Module, Debug)]
pub struct MultiScaleAttentionBlock {
    blocks: Vec<CrossWindowBlock>,
    posemb: Vec<RelativePositionEmbed>,
}

impl MultiScaleAttentionBlock {
    /// # Shapes
    /// - `x[l]`: `[batch · windows_l, window tokens_l, C]`, finest scale first; returned in
    ///   the same shapes
    fn forward(&self, mut x: Vec<Tensor<3>>, plan: &StagePlan) -> Vec<Tensor<3>> {
        let n = x.len();
        let device = x[0].device();
        // Step 0: the in-window position code of each scale, every block
        for (l, tokens) in x.iter_mut().enumerate() {
            *tokens = tokens.clone() + self.posemb[l].embedding(plan.layout[l].window, &device);
        }
        // Step 1: bottom-up summary, fine to coarse, each pooled scale feeding the next
        for l in 0..n - 1 {
            let pooled = plan.pool_into_next(x[l].clone(), l);
            x[l + 1] = x[l + 1].clone() + pooled;
        }
        // Step 2: top-down, coarse to fine: each window attends to its own tokens and to one
        // window of every coarser scale, projected with that scale's weights after its update
        let mut coarse_kv: Vec<Option<(Tensor<4>, Tensor<4>)>> = vec![None; n];
        for s in (0..n).rev() {
            let block = &self.blocks[s];
            let q = block.query(x[s].clone());
            let (k, v) = block.key_value(x[s].clone());
            let (mut keys, mut values) = (vec![k], vec![v]);
            // official order: the coarse scales as they were processed, coarsest first
            let coarse: Vec<usize> = (s + 1..n).rev().collect();
            for &t in &coarse {
                let (kt, vt) = coarse_kv[t].as_ref().expect("coarser scales run first");
                let parents = plan.parents[s][t].clone().expect("t > s");
                keys.push(kt.clone().select(0, parents.clone()));
                values.push(vt.clone().select(0, parents));
            }
            let mask = plan.top_down_masks[s].clone();
            let update = block.attn.attend(q, Tensor::cat(keys, 2), Tensor::cat(values, 2), mask);
            x[s] = block.residual(x[s].clone(), update);
            if s > 0 {
                coarse_kv[s] = Some(block.key_value(x[s].clone()));
            }
        }
        drop(coarse_kv);
        // Step 3: bottom-up cross-attention, fine to coarse: each group of coarse tokens
        // attends to the finer window under it (keys and values with the finer scale's
        // weights; queries, projection and MLP with its own)
        for s in 1..n {
            let block = &self.blocks[s];
            let q = block.query(plan.group_under_finer_windows(x[s].clone(), s));
            let (k, v) = self.blocks[s - 1].key_value(x[s - 1].clone());
            let groups = block.attn.attend(q, k, v, plan.padding[s - 1].clone());
            let update = plan.ungroup(groups, s);
            x[s] = block.residual(x[s].clone(), update);
        }
        x
    }
}

/// The blocks of one stage (official `MultiScaleAttentionLayer`, key `blocks`).
#[derive(Module, Debug)]
pub struct MultiScaleAttentionLayer {
    blocks: Vec<MultiScaleAttentionBlock>,
}

/// One stage (official `StackMSA`): the conv stem on the first stage only, then its blocks
/// in `levels.0`. The official per-stage `norm` and `head` are never used and not built.
#[derive(Module, Debug)]
pub struct AtlasStage {
    patch_embed: Option<ConvStem>,
    levels: Vec<MultiScaleAttentionLayer>,
}

/// Scale tokens after each stage, for inspection and parity checks.
#[derive(Debug, Clone)]
pub struct AtlasTrace {
    /// The stem output `[batch, C, h0, h0]`.
    pub stem: Tensor<4>,
    /// Per stage, the tokens of every scale it held after its last block (before the finest
    /// is dropped), `[batch · windows, window tokens, C]` with windows batch-major then
    /// raster, tokens row-major inside each window (padding included).
    pub stages: Vec<Vec<Tensor<3>>>,
    /// The layout of each stage's scales.
    pub layouts: Vec<Vec<ScaleLayout>>,
}

/// Atlas with its classification head; keys as the official state dict.
#[derive(Module, Debug)]
pub struct Atlas {
    atlas_models: Vec<AtlasStage>,
    readout_norm: LayerNorm,
    fc_norm: LayerNorm,
    fc: Linear,
    num_scales: usize,
    window_size: usize,
    pool_size: usize,
    pad_to_windows: bool,
    #[module(skip)]
    parent_mapping: ParentMapping,
    embed_dim: usize,
}

impl Atlas {
    /// The layout of an input of side `size`, checked against the scales this model has
    /// weights for.
    fn input_layout(&self, size: [usize; 2]) -> Vec<ScaleLayout> {
        assert!(size[0] == size[1], "Atlas takes square inputs, got {}x{}", size[0], size[1]);
        let layout = multiscale_layout(size[0].div_ceil(STEM_STRIDE), self.window_size, self.pool_size, self.pad_to_windows)
            .unwrap_or_else(|reason| {
                panic!("a {}x{} input does not fit Atlas' windows: {reason}; build the model with pad_to_windows = true", size[0], size[1])
            });
        assert!(
            layout.len() == self.num_scales,
            "a {}x{} input has {} scales but this Atlas was built with weights for {}; build it with img_size = [{}, {}]",
            size[0],
            size[1],
            layout.len(),
            self.num_scales,
            size[0],
            size[1]
        );
        if self.parent_mapping == ParentMapping::Raster {
            if let Err(reason) = raster_pairing_defined(&layout) {
                panic!("a {}x{} input: {reason}; the official raster pairing is undefined, use parent_mapping Spatial", size[0], size[1]);
            }
        }
        layout
    }

    /// The stem output and the initial scales: max-pools of the stem map, padded to whole
    /// windows and cut into them.
    fn initial_tokens(&self, x: Tensor<4>) -> (Tensor<4>, Vec<Tensor<3>>, StagePlan) {
        let [batch, _, h, w] = x.dims();
        let layout = self.input_layout([h, w]);
        let plan = StagePlan::new(&layout, batch, self.pool_size, self.parent_mapping, &x.device());
        let stem = self.atlas_models[0].patch_embed.as_ref().expect("stage 0 has the stem").forward(x);
        let tokens = max_pool_pyramid(stem.clone(), layout.len(), self.pool_size)
            .into_iter()
            .enumerate()
            .map(|(l, map)| plan.pad_and_window(map.permute([0, 2, 3, 1]), l))
            .collect();
        (stem, tokens, plan)
    }

    /// Runs every stage, handing each stage's final tokens to `observe` before its finest
    /// scale is dropped; returns the tokens and plan left after the last stage.
    fn run_stages(
        &self,
        mut tokens: Vec<Tensor<3>>,
        mut plan: StagePlan,
        mut observe: impl FnMut(&[Tensor<3>], &StagePlan),
    ) -> (Vec<Tensor<3>>, StagePlan) {
        let stages = self.atlas_models.len();
        for (j, stage) in self.atlas_models.iter().enumerate() {
            for block in &stage.levels[0].blocks {
                tokens = block.forward(tokens, &plan);
            }
            observe(&tokens, &plan);
            // the official `is_last`: the final stage, or one scale left
            if j + 1 < stages && tokens.len() > 1 {
                tokens.remove(0);
                plan = plan.without_finest();
            }
        }
        (tokens, plan)
    }

    /// The stem output and every stage's scale tokens.
    pub fn trace(&self, x: Tensor<4>) -> AtlasTrace {
        let (stem, tokens, plan) = self.initial_tokens(x);
        let (mut stages, mut layouts) = (Vec::new(), Vec::new());
        self.run_stages(tokens, plan, |tokens, plan| {
            stages.push(tokens.to_vec());
            layouts.push(plan.layout.clone());
        });
        AtlasTrace { stem, stages, layouts }
    }

    /// Concatenates the remaining scales, LayerNorm, mean over the real tokens, LayerNorm,
    /// linear.
    ///
    /// # Shapes
    /// - returns `[batch, num_classes]`
    fn forward_head(&self, tokens: Vec<Tensor<3>>, plan: &StagePlan) -> Tensor<2> {
        let batch = plan.batch;
        let c = self.embed_dim;
        let flat: Vec<Tensor<3>> = tokens
            .into_iter()
            .zip(&plan.layout)
            .map(|(t, s)| t.reshape([batch, s.num_windows() * s.window_tokens(), c]))
            .collect();
        let x = self.readout_norm.forward(Tensor::cat(flat, 1));
        let pooled = if plan.layout.iter().any(ScaleLayout::is_padded) {
            let keep: Vec<f32> = plan.layout.iter().flat_map(|s| s.padding()).map(|pad| if pad { 0.0 } else { 1.0 }).collect();
            let count: f32 = keep.iter().sum();
            let len = keep.len();
            let keep = Tensor::<3>::from_data(TensorData::new(keep, [1, len, 1]), &x.device());
            (x * keep).sum_dim(1).div_scalar(count)
        } else {
            x.mean_dim(1)
        };
        kiln_nn::fused::linear(&self.fc, self.fc_norm.forward(pooled.reshape([batch, c])))
    }
}

impl Backbone for Atlas {
    /// One map per scale, finest first, each taken after the last stage that holds it (the
    /// stage that drops it, or the final one), cropped to its real tokens.
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>> {
        let mut maps: Vec<Tensor<4>> = Vec::with_capacity(self.num_scales);
        let stages = self.atlas_models.len();
        let mut stage = 0;
        let (_, tokens, plan) = self.initial_tokens(x);
        // a scale's map is final after the last stage that runs it (stage j runs the
        // num_scales - min(j, num_scales - 1) finest scales): one map per scale, as
        // feature_info declares, also when stages outnumber scales (small inputs)
        let runs = |j: usize| self.num_scales - j.min(self.num_scales - 1);
        self.run_stages(tokens, plan, |tokens, plan| {
            let finished = if stage + 1 == stages { tokens.len() } else { tokens.len().saturating_sub(runs(stage + 1)) };
            for (l, t) in tokens.iter().take(finished).enumerate() {
                maps.push(plan.valid_map(t.clone(), l).permute([0, 3, 1, 2]));
            }
            stage += 1;
        });
        maps
    }

    fn feature_info(&self) -> Vec<FeatureInfo> {
        (0..self.num_scales)
            .map(|l| FeatureInfo { channels: self.embed_dim, stride: STEM_STRIDE * self.pool_size.pow(l as u32) })
            .collect()
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let (_, tokens, plan) = self.initial_tokens(x);
        let (tokens, plan) = self.run_stages(tokens, plan, |_, _| {});
        self.forward_head(tokens, &plan)
    }
}

/// Maps an official state-dict key to our module path: the module tree mirrors the official
/// one, so keys are kept, except the per-stage `norm` (BatchNorm2d) and `head` forward never
/// uses, and BatchNorm's `num_batches_tracked` counters, which are skipped.
pub fn official_key(key: &str) -> Option<String> {
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    let unused = key
        .strip_prefix("atlas_models.")
        .and_then(|rest| rest.split_once('.'))
        .is_some_and(|(stage, rest)| stage.parse::<usize>().is_ok() && (rest.starts_with("norm.") || rest.starts_with("head.")));
    (!unused).then(|| key.to_string())
}

impl Family for AtlasConfig {
    const NAME: &'static str = "atlas";
    type Model = Atlas;

    fn init(&self, device: &Device) -> Result<Atlas, ModelError> {
        AtlasConfig::init(self, device) // the inherent builder above
    }

    fn key_map(&self) -> KeyMap {
        KeyMap { rename: official_key, classifier_prefix: "fc." }
    }

    /// Depth order for layer-wise lr decay, in the manner of timm's matchers (the official code
    /// has none): the first model's patch embedding, then each block of each scale model and
    /// level (a model's other parts with its first block), the readout norm with the last block.
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal {
        if path.starts_with("atlas_models.0.patch_embed") {
            return LayerOrdinal::Stem;
        }
        if let Some((model, rest)) = split_index(path, "atlas_models.") {
            let (level, rest) = split_index(rest, "levels.").unwrap_or((0, ""));
            let (block, _) = split_index(rest, "blocks.").unwrap_or((0, ""));
            return LayerOrdinal::Block(vec![model, level, block]);
        }
        if path.starts_with("readout_norm") { LayerOrdinal::WithLastBlock } else { LayerOrdinal::Head }
    }

    /// None: its position codes come from MLPs ([`RelativePositionEmbed`]), whose weights decay
    /// like any linear layer's.
    fn no_weight_decay(&self, _path: &str) -> bool {
        false
    }

    /// The official YalaLab/atlas models, trained on HR-IN100 (100 classes, bicubic resize to 1024).
    fn variants<C: From<Self>>() -> Vec<Variant<C>> {
        let hr_in100 = PretrainedCfg { num_classes: 100, ..PretrainedCfg::imagenet(1024, 1.0) };
        vec![
            Variant::new("atlas_base_1024", || Self::base().into(), hr_in100.clone()),
            Variant::new("atlas_small_1024", || Self::small().into(), hr_in100),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sides(layout: &[ScaleLayout]) -> Vec<(usize, usize, usize)> {
        layout.iter().map(|s| (s.num_windows(), s.window_tokens(), s.valid)).collect()
    }

    fn layout_at(px: usize, pad: bool) -> Result<Vec<ScaleLayout>, String> {
        multiscale_layout(px / STEM_STRIDE, 16, 4, pad)
    }

    #[test]
    fn scale_layouts_match_the_official_code() {
        // spec §1.3: (windows, tokens per window) per scale
        assert_eq!(sides(&layout_at(512, false).unwrap()), vec![(4, 256, 32), (1, 64, 8)]);
        assert_eq!(sides(&layout_at(1024, false).unwrap()), vec![(16, 256, 64), (1, 256, 16)]);
        assert_eq!(sides(&layout_at(2048, false).unwrap()), vec![(64, 256, 128), (4, 256, 32), (1, 64, 8)]);
        assert_eq!(sides(&layout_at(3072, false).unwrap()), vec![(144, 256, 192), (9, 256, 48), (1, 144, 12)]);
        assert_eq!(sides(&layout_at(4096, false).unwrap()), vec![(256, 256, 256), (16, 256, 64), (1, 256, 16)]);
        // a map no larger than a window is a single scale
        assert_eq!(sides(&layout_at(256, false).unwrap()), vec![(1, 256, 16)]);
        for px in [1024, 2048, 3072, 4096] {
            assert!(layout_at(px, false).unwrap().iter().all(|s| !s.is_padded()));
        }
    }

    #[test]
    fn sizes_that_do_not_tile_are_refused_or_padded() {
        // 1280 px: 80 tokens -> scale 1 has 20 per side, not whole 16-token windows
        let err = layout_at(1280, false).unwrap_err();
        assert!(err.contains("scale 1 is 20x20"), "{err}");
        assert!(layout_at(1536, false).unwrap_err().contains("scale 1 is 24x24"));
        let err = AtlasConfig { img_size: [1280, 1280], ..AtlasConfig::small() }.validate().unwrap_err().to_string();
        assert!(err.contains("pad_to_windows"), "{err}");
        // padded: (side, valid) per scale; every window of scale 0 covers 4x4 of scale 1 ...
        let padded = layout_at(1280, true).unwrap();
        let shape: Vec<(usize, usize, usize)> = padded.iter().map(|s| (s.side, s.valid, s.window)).collect();
        assert_eq!(shape, vec![(80, 80, 16), (32, 20, 16), (8, 5, 8)]);
        let shape: Vec<(usize, usize)> = layout_at(1536, true).unwrap().iter().map(|s| (s.side, s.valid)).collect();
        assert_eq!(shape, vec![(96, 96), (32, 24), (8, 6)]);
        // ... and an odd size pads every scale: 1300 px -> 82 tokens
        let shape: Vec<(usize, usize)> = multiscale_layout(82, 16, 4, true).unwrap().iter().map(|s| (s.side, s.valid)).collect();
        assert_eq!(shape, vec![(96, 82), (32, 21), (8, 6)]);
        // no window is all padding, so no query's keys are all masked
        for s in multiscale_layout(82, 16, 4, true).unwrap() {
            let pad = s.padding();
            assert!(pad.chunks(s.window_tokens()).all(|w| w.iter().any(|p| !p)));
        }
        // with padding the layout of a size that tiles is unchanged
        assert_eq!(layout_at(2048, true).unwrap(), layout_at(2048, false).unwrap());
    }

    /// The window of `coarse` holding the centre of window `i` of `fine`, computed in pixels.
    fn containing_window(fine: &ScaleLayout, coarse: &ScaleLayout, levels: u32, i: usize) -> usize {
        let (gf, gc) = (fine.grid(), coarse.grid());
        let fine_px = STEM_STRIDE; // pixels per fine token at scale 0 (the base scale)
        let (r, c) = (i / gf, i % gf);
        let centre = |k: usize| (k * fine.window + fine.window / 2) * fine_px; // in scale-relative px
        let coarse_window_px = coarse.window * fine_px * 4usize.pow(levels);
        (centre(r) / coarse_window_px) * gc + centre(c) / coarse_window_px
    }

    #[test]
    fn spatial_mapping_reads_the_containing_window_raster_does_not_from_2048_px() {
        for (px, wrong_raster) in [(1024, 0), (2048, 32), (4096, 192)] {
            let layout = layout_at(px, false).unwrap();
            let (fine, coarse) = (&layout[0], &layout[1]);
            let spatial = parent_windows(fine, coarse, 1, 4, ParentMapping::Spatial);
            let raster = parent_windows(fine, coarse, 1, 4, ParentMapping::Raster);
            let truth: Vec<usize> = (0..fine.num_windows()).map(|i| containing_window(fine, coarse, 1, i)).collect();
            assert_eq!(spatial, truth, "{px} px");
            let wrong = raster.iter().zip(&truth).filter(|(a, b)| a != b).count();
            // spec §5.2 measured 192 of 256 at 4096 px
            assert_eq!(wrong, wrong_raster, "{px} px raster mismatches");
            // two scales apart (scale 0 -> 2) every window reads the single coarsest window
            if layout.len() == 3 {
                assert!(parent_windows(fine, &layout[2], 2, 4, ParentMapping::Spatial).iter().all(|&p| p == 0));
                assert!(parent_windows(fine, &layout[2], 2, 4, ParentMapping::Raster).iter().all(|&p| p == 0));
            }
        }
        // scale 1 -> 2 at 4096 px: 16 windows under one
        let layout = layout_at(4096, false).unwrap();
        assert!(parent_windows(&layout[1], &layout[2], 1, 4, ParentMapping::Spatial).iter().all(|&p| p == 0));
        // padded 1280 px: a 5x5 grid of fine windows over a 2x2 grid of coarse ones
        let layout = layout_at(1280, true).unwrap();
        let spatial = parent_windows(&layout[0], &layout[1], 1, 4, ParentMapping::Spatial);
        assert_eq!(spatial[0], 0);
        assert_eq!(spatial[4], 1); // window (0, 4) covers coarse columns 16..20
        assert_eq!(spatial[4 * 5 + 4], 3);
        assert_eq!(spatial[3 * 5], 0); // window (3, 0): coarse rows 12..16
        assert!(raster_pairing_defined(&layout).is_err(), "25 windows do not split over 4");
    }

    #[test]
    fn official_keys_skip_the_unused_stage_heads_and_counters() {
        assert_eq!(official_key("atlas_models.0.norm.weight"), None);
        assert_eq!(official_key("atlas_models.1.head.bias"), None);
        assert_eq!(official_key("atlas_models.0.patch_embed.conv0.1.num_batches_tracked"), None);
        let kept = "atlas_models.0.levels.0.blocks.1.blocks.0.norm1_q.weight";
        assert_eq!(official_key(kept).as_deref(), Some(kept));
        assert_eq!(official_key("fc_norm.weight").as_deref(), Some("fc_norm.weight"));
        assert_eq!(official_key("atlas_models.0.patch_embed.ds1.norm.weight").as_deref(), Some("atlas_models.0.patch_embed.ds1.norm.weight"));
    }

    fn tiny(size: usize) -> AtlasConfig {
        AtlasConfig::new([size, size], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(5).with_drop_path_rate(0.0)
    }

    #[test]
    fn features_have_declared_strides_and_channels() {
        let device = Device::flex();
        let model = tiny(512).init(&device).unwrap();
        let info = model.feature_info();
        assert_eq!(info, vec![FeatureInfo { channels: 16, stride: 16 }, FeatureInfo { channels: 16, stride: 64 }]);
        crate::backbone::assert_feature_contract(&model, 3, 512, 5);
    }

    #[test]
    fn padded_tokens_never_reach_a_real_one() {
        // 400 px: 25 tokens -> scale 0 padded to 32 (2x2 windows), scale 1 (7 real) to 8
        let device = Device::flex();
        let model = tiny(400).with_pad_to_windows(true).with_parent_mapping(ParentMapping::Spatial).init(&device).unwrap();
        let x = Tensor::<4>::random([2, 3, 400, 400], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let logits = |tokens: Vec<Tensor<3>>, plan: StagePlan| {
            let (tokens, plan) = model.run_stages(tokens, plan, |_, _| {});
            assert_eq!(plan.layout.iter().map(|s| (s.side, s.valid)).collect::<Vec<_>>(), vec![(8, 7)]);
            model.forward_head(tokens, &plan).into_data().try_to_vec::<f32>().unwrap()
        };
        let (_, tokens, plan) = model.initial_tokens(x);
        assert!(plan.padding.iter().all(Option::is_some), "both scales hold padding");
        // the same forward with large random values written into every padded token: pooling,
        // attention and readout must all ignore them
        let noisy_tokens: Vec<Tensor<3>> = tokens
            .iter()
            .zip(&plan.padding)
            .map(|(t, mask)| {
                let dims = t.dims();
                let noise = Tensor::<3>::random(dims, burn::tensor::Distribution::Normal(50.0, 30.0), &device);
                t.clone().mask_where(mask.clone().unwrap().unsqueeze_dim::<3>(2).expand(dims), noise)
            })
            .collect();
        let noisy_plan = plan.clone();
        let clean = logits(tokens, plan);
        assert!(clean.iter().all(|v| v.is_finite()));
        let noisy = logits(noisy_tokens, noisy_plan);
        for (a, b) in clean.iter().zip(&noisy) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "padding leaked: {a} vs {b}");
        }
        let maps = model.forward_features(Tensor::zeros([1, 3, 400, 400], &device));
        assert_eq!(maps.iter().map(|m| m.dims()).collect::<Vec<_>>(), vec![[1, 16, 25, 25], [1, 16, 7, 7]]);
    }

    #[test]
    fn padding_changes_nothing_where_the_windows_tile() {
        let device = Device::flex();
        let plain = tiny(512).init(&device).unwrap();
        let x = Tensor::<4>::random([1, 3, 512, 512], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
        let mut padded = tiny(512).with_pad_to_windows(true).init(&device).unwrap();
        // same weights, padding switched on
        padded = padded.load_record(plain.clone().into_record());
        let (a, b) = (plain.forward(x.clone()), padded.forward(x));
        a.into_data().assert_eq(&b.into_data(), true);
    }
}

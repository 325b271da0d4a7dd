//! The contract every model family fulfils, so heads and the trainer never name a family.

use burn::module::{ModuleVisitor, Param};
use burn::prelude::*;

/// One feature map of [`Backbone::forward_features`]: its channel count and its stride
/// relative to the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct FeatureInfo {
    /// Channels `C` of the map.
    pub channels: usize,
    /// Input pixels per map pixel along each axis.
    pub stride: usize,
}

/// A hierarchical backbone with a classification head.
pub trait Backbone {
    /// The stage maps for dense heads.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]`
    /// - returns one `[batch, C_i, H / stride_i, W / stride_i]` per entry of
    ///   [`feature_info`](Self::feature_info)
    fn forward_features(&self, x: Tensor<4>) -> Vec<Tensor<4>>;

    /// Channels and stride of each map [`forward_features`](Self::forward_features) returns.
    fn feature_info(&self) -> Vec<FeatureInfo>;

    /// Class logits.
    ///
    /// # Shapes
    /// - `x`: `[batch, in_chans, H, W]` -> `[batch, num_classes]`
    fn forward(&self, x: Tensor<4>) -> Tensor<2>;
}

/// The number of parameters an optimiser trains, as PyTorch's `parameters()` counts them:
/// burn's `num_params` also counts BatchNorm's running statistics, which are buffers.
pub fn learnable_params<M: Module>(module: &M) -> usize {
    #[derive(Default)]
    struct Count {
        field: Vec<String>,
        total: usize,
    }
    impl ModuleVisitor for Count {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.field.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.field.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if !is_buffer_field(self.field.last().map(String::as_str).unwrap_or("")) {
                self.total += param.lazy_shape().num_elements();
            }
        }
    }
    let mut count = Count::default();
    module.visit(&mut count);
    count.total
}

/// Whether a module field of that name holds a buffer rather than a parameter (BatchNorm's
/// `running_mean`, `running_var`).
pub fn is_buffer_field(name: &str) -> bool {
    matches!(name, "running_mean" | "running_var")
}

/// timm's `param_groups_weight_decay` rule for every model: parameters of rank ≤ 1 (norm
/// scales and shifts, biases) are never weight-decayed.
pub fn no_decay_by_rank(rank: usize) -> bool {
    rank <= 1
}

/// The `Backbone` contract on zeros of `[2, in_chans, size, size]`: one map per declared
/// feature, each `[2, channels, size / stride, size / stride]`, and `[2, num_classes]` logits.
#[cfg(test)]
pub(crate) fn assert_feature_contract(model: &impl Backbone, in_chans: usize, size: usize, num_classes: usize) {
    let device = Device::flex();
    let info = model.feature_info();
    let maps = model.forward_features(Tensor::zeros([2, in_chans, size, size], &device));
    assert_eq!(maps.len(), info.len(), "one map per declared feature");
    for (map, info) in maps.iter().zip(&info) {
        assert_eq!(map.dims(), [2, info.channels, size / info.stride, size / info.stride], "{info:?}");
    }
    assert_eq!(model.forward(Tensor::zeros([2, in_chans, size, size], &device)).dims(), [2, num_classes]);
}

/// Where a parameter sits in depth order, as timm's `group_matcher(coarse=False)` places it;
/// layer-wise lr decay ([`layer_ids`]) scales each group's learning rate by its depth.
/// Variants sort in depth order; `Block` indices sort as timm's ordinal tuples do.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LayerOrdinal {
    /// Stem and patch embedding: the shallowest group.
    Stem,
    /// A block (or a stage), by its indices (`[stage, block]`).
    Block(Vec<usize>),
    /// Joins the deepest block's group (timm's `MATCH_PREV_GROUP`: the final norm).
    WithLastBlock,
    /// Anything unmatched, the classifier above all: the deepest group, lr unscaled.
    Head,
}

/// The index after `prefix` and what follows its dot: `("layers.2.blocks.0.x", "layers.")` ->
/// `(2, "blocks.0.x")`.
pub fn split_index<'a>(path: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let rest = path.strip_prefix(prefix)?;
    let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
    Some((index.parse().ok()?, tail))
}

/// timm's fine matcher for staged backbones (Swin, DaViT): `stem` first; in `stages`
/// (`(r'^{stages}\.(\d+).downsample', (0,))`, `(r'^{stages}\.(\d+)\.\w+\.(\d+)', None)`) a
/// stage's downsampling joins its first block and every block is its own group; `final_norm`
/// joins the last block; anything else is head.
pub fn staged_layer_ordinal(path: &str, stem: &str, stages: &str, final_norm: &str) -> LayerOrdinal {
    if path.starts_with(stem) {
        return LayerOrdinal::Stem;
    }
    if let Some((stage, rest)) = split_index(path, stages) {
        if rest.starts_with("downsample") {
            return LayerOrdinal::Block(vec![stage, 0]);
        }
        if let Some((block, _)) = rest.split_once('.').and_then(|(_, r)| split_index(r, "")) {
            return LayerOrdinal::Block(vec![stage, block]);
        }
    }
    if path.starts_with(final_norm) { LayerOrdinal::WithLastBlock } else { LayerOrdinal::Head }
}

/// timm's `group_with_matcher`: each distinct ordinal in sorted order is a new layer id (the
/// stem 0), except [`LayerOrdinal::WithLastBlock`], which shares the id before it. Returns the
/// id of each path and the number of ids.
pub fn layer_ids(paths: &[String], ordinal: impl Fn(&str) -> LayerOrdinal) -> (Vec<usize>, usize) {
    let ordinals: Vec<LayerOrdinal> = paths.iter().map(|p| ordinal(p)).collect();
    let mut distinct = ordinals.clone();
    distinct.sort();
    distinct.dedup();
    let mut ids = Vec::with_capacity(distinct.len());
    let mut next = 0usize;
    for (i, o) in distinct.iter().enumerate() {
        if i > 0 && *o != LayerOrdinal::WithLastBlock {
            next += 1;
        }
        ids.push(next);
    }
    let id_of = |o: &LayerOrdinal| ids[distinct.binary_search(o).expect("ordinal listed")];
    (ordinals.iter().map(id_of).collect(), next + 1)
}

/// timm's layer-wise lr decay (`param_groups_layer_decay`): the lr multiplier of each path,
/// `decay^(deepest id − id)`, so the head keeps the full lr and the stem gets the least.
pub fn layer_decay_scales(paths: &[String], decay: f64, ordinal: impl Fn(&str) -> LayerOrdinal) -> Vec<f64> {
    let (ids, count) = layer_ids(paths, ordinal);
    ids.into_iter().map(|id| decay.powi((count - 1 - id) as i32)).collect()
}

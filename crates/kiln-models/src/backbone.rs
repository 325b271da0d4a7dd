//! The contract every model family fulfils, so heads and the trainer never name a family.

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

//! mmseg's `FCNHead`, UPerNet's auxiliary head.
//!
//! Long et al., "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015. Must match
//! mmseg's `decode_heads/fcn_head.py` (kernel 3, dilation 1).

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use kiln_nn::{ConvModule, Dropout2d};

use super::common::{check_dropout, conv_module, conv_seg};
use crate::error::ModelError;

/// Configuration of an [`FcnHead`].
#[derive(Config, Debug)]
pub struct FcnHeadConfig {
    /// Channels of the map it reads.
    pub in_channels: usize,
    /// Which map of the features it reads (mmseg's `in_index`; UPerNet's auxiliary head: 2).
    pub in_index: usize,
    /// Width of the convs (mmseg's UPerNet configs: 256).
    #[config(default = 256)]
    pub channels: usize,
    /// Classes of `conv_seg`.
    pub num_classes: usize,
    /// Stacked 3×3 `ConvModule`s (UPerNet's auxiliary head: 1; mmseg's default 2).
    #[config(default = 1)]
    pub num_convs: usize,
    /// Concatenates the input with the convs' output and fuses them with `conv_cat`.
    #[config(default = false)]
    pub concat_input: bool,
    /// Channel dropout before `conv_seg`.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// mmseg's `FCNHead` (kernel 3, dilation 1), used as UPerNet's auxiliary head on one map:
/// `conv_seg(dropout(convs(x)))`, or with `concat_input`
/// `conv_seg(dropout(conv_cat(cat[x, convs(x)])))`. Keys `convs.{j}`, `conv_cat`, `conv_seg`.
#[derive(Module, Debug)]
pub struct FcnHead {
    /// `num_convs` 3×3 `ConvModule`s, `in -> channels -> ... -> channels`.
    pub convs: Vec<ConvModule>,
    /// 3×3 `ConvModule(in + channels, channels)` when the input is concatenated.
    pub conv_cat: Option<ConvModule>,
    /// Channel dropout before the classifier.
    pub dropout: Dropout2d,
    /// 1×1 conv to the classes, with bias.
    pub conv_seg: Conv2d,
    in_index: usize,
}

impl FcnHeadConfig {
    /// Builds the head with mmcv's initialisation.
    pub fn init(&self, device: &Device) -> Result<FcnHead, ModelError> {
        if self.channels == 0 || self.num_classes == 0 {
            return Err(ModelError::InvalidConfig("FCN head channels and num_classes must be positive".into()));
        }
        if self.num_convs == 0 && self.in_channels != self.channels {
            return Err(ModelError::InvalidConfig(format!(
                "an FCN head without convs needs channels ({}) equal to its input's ({})",
                self.channels, self.in_channels
            )));
        }
        check_dropout(self.dropout)?;
        let c = self.channels;
        Ok(FcnHead {
            convs: (0..self.num_convs).map(|j| conv_module(if j == 0 { self.in_channels } else { c }, c, 3, device)).collect(),
            conv_cat: self.concat_input.then(|| conv_module(self.in_channels + c, c, 3, device)),
            dropout: Dropout2d::new(self.dropout),
            conv_seg: conv_seg(c, self.num_classes, device),
            in_index: self.in_index,
        })
    }
}

impl FcnHead {
    /// The map index it reads.
    pub fn in_index(&self) -> usize {
        self.in_index
    }

    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]`; it reads map `in_index`
    /// - returns `[batch, num_classes, H_in_index, W_in_index]`
    pub fn forward(&self, features: &[Tensor<4>]) -> Tensor<4> {
        let x = features[self.in_index].clone();
        let mut feats = x.clone();
        for conv in &self.convs {
            feats = conv.forward(feats);
        }
        if let Some(conv_cat) = &self.conv_cat {
            feats = conv_cat.forward(Tensor::cat(vec![x, feats], 1));
        }
        kiln_nn::fused::conv2d(&self.conv_seg, self.dropout.forward(feats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fcn_head_gives_logits_at_its_maps_resolution() {
        let device = Device::flex();
        let fcn = FcnHeadConfig::new(6, 1, 3).with_channels(5).init(&device).unwrap();
        assert_eq!(fcn.forward(&crate::heads::common::tests::maps(2)).dims(), [2, 3, 4, 5]);
    }
}

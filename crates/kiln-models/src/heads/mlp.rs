//! SegFormer's all-MLP decoder (mmseg's `SegformerHead`).
//!
//! Xie et al., "SegFormer", NeurIPS 2021. Must match mmseg's `decode_heads/segformer_head.py`.

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use kiln_nn::{ConvModule, Dropout2d, resize_bilinear};

use super::common::{check_dropout, conv_module, conv_seg, spatial};
use crate::error::ModelError;

/// Configuration of an [`MlpHead`].
#[derive(Config, Debug)]
pub struct MlpHeadConfig {
    /// Channels of each input map, finest first.
    pub in_channels: Vec<usize>,
    /// Width of the projections and the fused map (SegFormer: 256, 768 for B2+).
    pub channels: usize,
    /// Classes of `conv_seg`.
    pub num_classes: usize,
    /// Channel dropout before `conv_seg`.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// SegFormer's all-MLP decoder (mmseg's `SegformerHead`): each map projected by a 1×1
/// `ConvModule` to `channels`, upsampled to the finest map, concatenated (finest first) and fused
/// by a 1×1 `ConvModule`, then dropout and `conv_seg`. Keys `convs.{i}`, `fusion_conv`,
/// `conv_seg`.
#[derive(Module, Debug)]
pub struct MlpHead {
    /// 1×1 `ConvModule(C_i, channels)` per map.
    pub convs: Vec<ConvModule>,
    /// 1×1 `ConvModule(L·channels, channels)`.
    pub fusion_conv: ConvModule,
    /// Channel dropout before the classifier.
    pub dropout: Dropout2d,
    /// 1×1 conv to the classes, with bias.
    pub conv_seg: Conv2d,
}

impl MlpHeadConfig {
    /// Builds the head with mmcv's initialisation.
    pub fn init(&self, device: &Device) -> Result<MlpHead, ModelError> {
        if self.in_channels.is_empty() || self.channels == 0 || self.num_classes == 0 {
            return Err(ModelError::InvalidConfig("the MLP head needs feature maps, and positive channels and num_classes".into()));
        }
        check_dropout(self.dropout)?;
        let c = self.channels;
        Ok(MlpHead {
            convs: self.in_channels.iter().map(|&cin| conv_module(cin, c, 1, device)).collect(),
            fusion_conv: conv_module(self.in_channels.len() * c, c, 1, device),
            dropout: Dropout2d::new(self.dropout),
            conv_seg: conv_seg(c, self.num_classes, device),
        })
    }
}

impl MlpHead {
    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]`, finest first
    /// - returns `[batch, num_classes, H_1, W_1]`
    pub fn forward(&self, features: &[Tensor<4>]) -> Tensor<4> {
        assert_eq!(features.len(), self.convs.len(), "the MLP head was built for {} maps", self.convs.len());
        let finest = spatial(&features[0]);
        let outs = self.convs.iter().zip(features).map(|(conv, x)| resize_bilinear(conv.forward(x.clone()), finest)).collect();
        kiln_nn::fused::conv2d(&self.conv_seg, self.dropout.forward(self.fusion_conv.forward(Tensor::cat(outs, 1))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlp_head_gives_logits_at_the_finest_resolution() {
        let device = Device::flex();
        let mlp = MlpHeadConfig::new(vec![4, 6, 8], 8, 3).init(&device).unwrap();
        assert_eq!(mlp.forward(&crate::heads::common::tests::maps(1)).dims(), [1, 3, 8, 9]);
    }
}

//! UPerNet's decode head (mmseg's `UPerHead`, with `PSPHead`'s pyramid pooling).
//!
//! Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018. Must match
//! mmseg's `decode_heads/uper_head.py` and `psp_head.py` (see [`mmseg_key`](super::common::mmseg_key)
//! for the PPM's one rename).

use burn::nn::conv::Conv2d;
use burn::prelude::*;
use kiln_nn::{ConvModule, Dropout2d, adaptive_avg_pool, resize_bilinear};

use super::common::{check_dropout, conv_module, conv_seg, spatial};
use crate::error::ModelError;

/// Configuration of an [`UperHead`].
#[derive(Config, Debug)]
pub struct UperHeadConfig {
    /// Channels of each input map, finest first (the backbone's feature channels).
    pub in_channels: Vec<usize>,
    /// Width of every inner conv (mmseg's UPerNet configs: 512).
    pub channels: usize,
    /// Classes of `conv_seg`.
    pub num_classes: usize,
    /// Output sides of the pyramid pooling on the coarsest map.
    #[config(default = "vec![1, 2, 3, 6]")]
    pub pool_scales: Vec<usize>,
    /// Channel dropout before `conv_seg` (mmseg's `dropout_ratio`).
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// UPerNet's decode head (mmseg's `UPerHead`): a pyramid pooling module on the coarsest map,
/// an FPN over all maps, fused at the finest resolution.
///
/// ```text
/// top      = bottleneck(cat[x_L, up(psp_i(pool_s(x_L))) for s in pool_scales])   3x3
/// lat_i    = lateral_convs[i](x_i)  (i < L),  lat_L = top                        1x1
/// lat_i   += up(lat_{i+1})   for i = L-1 .. 1   (top-down, coarse to fine)
/// out_i    = fpn_convs[i](lat_i) (i < L),  out_L = lat_L                          3x3
/// logits   = conv_seg(dropout(fpn_bottleneck(cat[up(out_i) to x_1's size])))    3x3, 1x1
/// ```
/// `up` is bilinear, `align_corners=False`; every conv but `conv_seg` is a [`ConvModule`].
/// Keys as mmseg's: `psp_modules.{i}` (mmseg's `psp_modules.{i}.1`, see [`mmseg_key`](super::common::mmseg_key)),
/// `bottleneck`, `lateral_convs.{i}`, `fpn_convs.{i}`, `fpn_bottleneck`, `conv_seg`.
#[derive(Module, Debug)]
pub struct UperHead {
    /// One 1×1 `ConvModule(C_L, channels)` per pool scale.
    pub psp_modules: Vec<ConvModule>,
    /// 3×3 `ConvModule(C_L + scales·channels, channels)`.
    pub bottleneck: ConvModule,
    /// 1×1 `ConvModule(C_i, channels)` for every map but the coarsest.
    pub lateral_convs: Vec<ConvModule>,
    /// 3×3 `ConvModule(channels, channels)` for every map but the coarsest.
    pub fpn_convs: Vec<ConvModule>,
    /// 3×3 `ConvModule(L·channels, channels)`.
    pub fpn_bottleneck: ConvModule,
    /// Channel dropout before the classifier.
    pub dropout: Dropout2d,
    /// 1×1 conv to the classes, with bias.
    pub conv_seg: Conv2d,
    #[module(skip)]
    pool_scales: Vec<usize>,
}

impl UperHeadConfig {
    /// Builds the head with mmcv's initialisation (Kaiming convs, BatchNorm 1/0, `conv_seg`
    /// `N(0, 0.01²)`).
    pub fn init(&self, device: &Device) -> Result<UperHead, ModelError> {
        let Some((&top, lower)) = self.in_channels.split_last() else {
            return Err(ModelError::InvalidConfig("UPerNet needs at least one feature map".into()));
        };
        if self.channels == 0 || self.num_classes == 0 || self.pool_scales.is_empty() || self.pool_scales.contains(&0) {
            return Err(ModelError::InvalidConfig(format!(
                "UPerNet channels ({}), num_classes ({}) and pool_scales ({:?}) must be positive and non-empty",
                self.channels, self.num_classes, self.pool_scales
            )));
        }
        check_dropout(self.dropout)?;
        let c = self.channels;
        Ok(UperHead {
            psp_modules: self.pool_scales.iter().map(|_| conv_module(top, c, 1, device)).collect(),
            bottleneck: conv_module(top + self.pool_scales.len() * c, c, 3, device),
            lateral_convs: lower.iter().map(|&cin| conv_module(cin, c, 1, device)).collect(),
            fpn_convs: lower.iter().map(|_| conv_module(c, c, 3, device)).collect(),
            fpn_bottleneck: conv_module(self.in_channels.len() * c, c, 3, device),
            dropout: Dropout2d::new(self.dropout),
            conv_seg: conv_seg(c, self.num_classes, device),
            pool_scales: self.pool_scales.clone(),
        })
    }
}

impl UperHead {
    /// The pyramid pooling module and its bottleneck on the coarsest map.
    ///
    /// # Shapes
    /// - `x`: `[batch, C_L, h, w]` -> `[batch, channels, h, w]`
    pub fn psp_forward(&self, x: Tensor<4>) -> Tensor<4> {
        let size = spatial(&x);
        let mut outs = vec![x.clone()];
        for (conv, &scale) in self.psp_modules.iter().zip(&self.pool_scales) {
            outs.push(resize_bilinear(conv.forward(adaptive_avg_pool(x.clone(), [scale, scale])), size));
        }
        self.bottleneck.forward(Tensor::cat(outs, 1))
    }

    /// The fused features before dropout and `conv_seg` (mmseg's `_forward_feature`).
    ///
    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]`, one per input channel count, finest first
    /// - returns `[batch, channels, H_1, W_1]`
    pub fn forward_feature(&self, features: &[Tensor<4>]) -> Tensor<4> {
        let levels = features.len();
        assert_eq!(levels, self.lateral_convs.len() + 1, "UPerNet was built for {} maps", self.lateral_convs.len() + 1);
        let mut laterals: Vec<Tensor<4>> =
            self.lateral_convs.iter().zip(features).map(|(conv, x)| conv.forward(x.clone())).collect();
        laterals.push(self.psp_forward(features[levels - 1].clone()));
        for i in (1..levels).rev() {
            let coarser = resize_bilinear(laterals[i].clone(), spatial(&laterals[i - 1]));
            laterals[i - 1] = laterals[i - 1].clone() + coarser;
        }
        let finest = spatial(&laterals[0]);
        let mut outs: Vec<Tensor<4>> = Vec::with_capacity(levels);
        for (i, lateral) in laterals.into_iter().enumerate() {
            let out = match self.fpn_convs.get(i) {
                Some(conv) => conv.forward(lateral),
                None => lateral,
            };
            outs.push(resize_bilinear(out, finest));
        }
        self.fpn_bottleneck.forward(Tensor::cat(outs, 1))
    }

    /// # Shapes
    /// - `features`: `[batch, C_i, H_i, W_i]`, finest first
    /// - returns `[batch, num_classes, H_1, W_1]`
    pub fn forward(&self, features: &[Tensor<4>]) -> Tensor<4> {
        kiln_nn::fused::conv2d(&self.conv_seg, self.dropout.forward(self.forward_feature(features)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uper_head_gives_logits_at_the_finest_resolution() {
        let device = Device::flex();
        let uper = UperHeadConfig::new(vec![4, 6, 8], 8, 3).with_pool_scales(vec![1, 2]).init(&device).unwrap();
        assert_eq!(uper.forward(&crate::heads::common::tests::maps(2)).dims(), [2, 3, 8, 9]);
        assert!(UperHeadConfig::new(vec![], 8, 3).init(&device).is_err());
    }
}

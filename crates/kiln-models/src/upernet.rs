//! Decode heads for semantic segmentation, as mmsegmentation builds them: UPerNet's
//! `UPerHead` (pyramid pooling + FPN), the auxiliary `FCNHead`, and SegFormer's all-MLP
//! decoder (`SegformerHead`) as a lighter option.
//!
//! Xiao et al., "Unified Perceptual Parsing for Scene Understanding", ECCV 2018; Xie et al.,
//! "SegFormer", NeurIPS 2021. Must match mmseg's `decode_heads/{uper_head,psp_head,fcn_head,
//! segformer_head}.py` with `norm_cfg=dict(type='BN')`, `align_corners=False`: same module tree
//! and state-dict keys (see [`mmseg_key`] for the one rename burn's derive needs).
//!
//! A head consumes only [`Backbone::forward_features`](crate::Backbone::forward_features) maps
//! (`[batch, C_i, H_i, W_i]`, finest first) and their channel counts; it knows nothing of the
//! backbone. Its logits are at the finest map's resolution; the
//! [`Segmenter`](crate::segment::Segmenter) upsamples them to the input.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::Initializer;
use burn::prelude::*;
use kiln_nn::{ConvModule, ConvModuleConfig, Dropout2d, adaptive_avg_pool, resize_bilinear};

use crate::error::ModelError;

/// mmseg's `conv_seg`: a biased 1×1 conv to the classes, weight `N(0, 0.01²)`, bias 0.
fn conv_seg(channels: usize, num_classes: usize, device: &Device) -> Conv2d {
    let mut conv = Conv2dConfig::new([channels, num_classes], [1, 1])
        .with_initializer(Initializer::Normal { mean: 0.0, std: 0.01 })
        .init(device);
    conv.bias = conv.bias.map(|_| Initializer::Zeros.init([num_classes], device));
    conv
}

fn conv_module(in_channels: usize, out_channels: usize, kernel_size: usize, device: &Device) -> ConvModule {
    ConvModuleConfig::new(in_channels, out_channels).with_kernel_size(kernel_size).init(device)
}

fn spatial(x: &Tensor<4>) -> [usize; 2] {
    let [_, _, h, w] = x.dims();
    [h, w]
}

fn check_dropout(dropout: f64) -> Result<(), ModelError> {
    if (0.0..1.0).contains(&dropout) {
        Ok(())
    } else {
        Err(ModelError::InvalidConfig(format!("head dropout {dropout} must be in [0, 1)")))
    }
}

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
/// Keys as mmseg's: `psp_modules.{i}` (mmseg's `psp_modules.{i}.1`, see [`mmseg_key`]),
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

/// mmseg's state-dict key of a head parameter -> Kiln's module path, or `None` for buffers
/// Kiln does not keep (`num_batches_tracked`). mmseg's PPM is `ModuleList[Sequential(
/// AdaptiveAvgPool2d, ConvModule)]`, so its convs sit at `psp_modules.{i}.1`; burn's derive holds
/// them at `psp_modules.{i}`. Every other key is the same.
pub fn mmseg_key(key: &str) -> Option<String> {
    if key.ends_with("num_batches_tracked") {
        return None;
    }
    let Some(rest) = key.strip_prefix("psp_modules.") else {
        return Some(key.to_string());
    };
    let (index, tail) = rest.split_once('.')?;
    Some(match tail.strip_prefix("1.") {
        Some(tail) => format!("psp_modules.{index}.{tail}"),
        None => key.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mmseg_keys_map_to_module_paths() {
        assert_eq!(mmseg_key("psp_modules.3.1.conv.weight").as_deref(), Some("psp_modules.3.conv.weight"));
        assert_eq!(mmseg_key("psp_modules.0.1.bn.running_var").as_deref(), Some("psp_modules.0.bn.running_var"));
        assert_eq!(mmseg_key("lateral_convs.2.bn.weight").as_deref(), Some("lateral_convs.2.bn.weight"));
        assert_eq!(mmseg_key("bottleneck.bn.num_batches_tracked"), None);
    }

    #[test]
    fn heads_give_logits_at_the_finest_resolution() {
        let device = Device::flex();
        let maps = |b| {
            [(4, 8), (6, 4), (8, 2)].map(|(c, s)| Tensor::<4>::zeros([b, c, s, s + 1], &device)).to_vec()
        };
        let uper = UperHeadConfig::new(vec![4, 6, 8], 8, 3).with_pool_scales(vec![1, 2]).init(&device).unwrap();
        assert_eq!(uper.forward(&maps(2)).dims(), [2, 3, 8, 9]);
        let fcn = FcnHeadConfig::new(6, 1, 3).with_channels(5).init(&device).unwrap();
        assert_eq!(fcn.forward(&maps(2)).dims(), [2, 3, 4, 5]);
        let mlp = MlpHeadConfig::new(vec![4, 6, 8], 8, 3).init(&device).unwrap();
        assert_eq!(mlp.forward(&maps(1)).dims(), [1, 3, 8, 9]);
        assert!(UperHeadConfig::new(vec![], 8, 3).init(&device).is_err());
    }
}

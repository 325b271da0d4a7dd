//! Decode heads for semantic segmentation, as mmsegmentation builds them, one file each:
//! UPerNet's `UPerHead` ([`uper`]: pyramid pooling + FPN), the auxiliary `FCNHead` ([`fcn`]),
//! and SegFormer's all-MLP decoder ([`mlp`], `SegformerHead`) as a lighter option. What they
//! share, mmseg's `conv_seg` and `ConvModule` builders and the key map, is in [`common`].
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

pub mod common;
pub mod fcn;
pub mod mlp;
pub mod uper;

pub use common::mmseg_key;
pub use fcn::{FcnHead, FcnHeadConfig};
pub use mlp::{MlpHead, MlpHeadConfig};
pub use uper::{UperHead, UperHeadConfig};

//! Layers shared by every Kiln model family, written once.
//!
//! Tensors are `burn::tensor::Tensor<D>` on a runtime `Device`. Token maps inside transformer
//! stages are channels-last (`[batch, height, width, channels]`, as timm keeps them); maps handed
//! to dense heads are channels-first (`[batch, channels, height, width]`).

pub mod activation;
pub mod autocast;
pub mod channel_attention;
pub mod conv_module;
pub mod conv_pos_enc;
pub mod conv_stem;
pub mod cross_attention;
pub mod drop_path;
pub mod fused;
pub mod head;
pub mod init;
mod kernels;

pub use kernels::blas::describe as matrix_products;
pub mod mbconv;
pub mod mlp;
pub mod norm;
pub mod patch;
pub mod pool;
pub mod relative_position;
pub mod resize;
#[cfg(test)]
mod testing;
pub mod window;
pub mod window_attention;

pub use activation::{Gelu, gelu_tanh};
pub use channel_attention::{ChannelGroupAttention, ChannelGroupAttentionConfig};
pub use conv_module::{ConvModule, ConvModuleConfig, Dropout2d};
pub use conv_pos_enc::{ConvPosEnc, ConvPosEncConfig};
pub use conv_stem::{ConvDownsample, ConvLayer, ConvResidual, ConvStem, ConvStemConfig};
pub use cross_attention::{CrossAttention, CrossAttentionConfig};
pub use drop_path::{DropPath, drop_path_schedule};
pub use head::{ClassifierHead, ClassifierHeadConfig, PreLogits};
pub use mbconv::{Downsample2d, Downsample2dConfig, MbConvBlock, MbConvBlockConfig, SqueezeExcite, SqueezeExciteConfig, make_divisible};
pub use mlp::{Mlp, MlpConfig};
pub use fused::{layer_norm, softmax_last};
pub use norm::{LayerNorm, LayerNorm2d, LayerNorm2dConfig, LayerNormConfig, batch_norm};
pub use patch::{PatchEmbed, PatchEmbedConfig, PatchMerging, PatchMergingConfig};
pub use pool::{max_pool_ceil, max_pool_pyramid};
pub use relative_position::{
    RelativePositionBiasTf, RelativePositionBiasTfConfig, relative_position_index, relative_position_index_tf,
    resize_relative_position_table,
};
pub use resize::{adaptive_avg_pool, resize_bilinear};
pub use window::{grid_partition, grid_reverse, shifted_window_mask, window_partition, window_reverse};
pub use window_attention::{WindowAttention, WindowAttentionConfig, multi_head_attention};

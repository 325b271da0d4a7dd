//! Kiln's model zoo: one file per architecture family, a registry of timm-named variants, and
//! checkpoint import/export.
//!
//! A family is its own file (config, blocks, backbone, key map, `impl Family`), a `pub mod`
//! line here and one line in `registry.rs`'s `families!` table.

pub mod backbone;
pub mod atlas;
pub mod checkpoint;
pub mod davit;
pub mod error;
pub mod family;
pub mod heads;
pub mod maxvit;
pub mod registry;
pub mod segment;
pub mod swin;

pub use backbone::{Backbone, FeatureInfo, LayerOrdinal, layer_ids};
pub use checkpoint::LoadReport;
pub use family::{Family, Variant};
pub use segment::{AuxHeadConfig, DecodeHead, HeadKind, LoadedSegmenter, Segmenter, SegmenterConfig, SegmenterOutput};
pub use heads::{FcnHead, FcnHeadConfig, MlpHead, MlpHeadConfig, UperHead, UperHeadConfig};
pub use error::ModelError;
pub use registry::{LoadedModel, Model, ModelConfig, ModelEntry, PretrainedCfg, find, registry};

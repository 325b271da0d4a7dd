//! What the loop needs of the network a task trains: its modules, how it is saved, and what it
//! says about its parameters (depth groups, no weight decay, buffers): the trainer names none. Each task implements it for its
//! network (`tasks/classify.rs`, `tasks/segment.rs`).

use std::path::Path;

use burn::module::Module;
use burn::prelude::*;
use kiln_models::{LayerOrdinal, ModelError};


/// A network the loop trains: its burn module, and how it is saved and grouped for the
/// optimiser.
pub trait Network {
    /// The modules.
    type Module: Module;
    /// The modules, as trained.
    fn module(&self) -> &Self::Module;
    /// The modules, to replace after an optimiser step.
    fn module_mut(&mut self) -> &mut Self::Module;
    /// Writes `module` (this network's or its average) as a Kiln checkpoint that records what
    /// this network is.
    fn save_module(&self, module: &Self::Module, path: &Path) -> Result<(), ModelError>;
    /// Reads a checkpoint [`save_module`](Self::save_module) wrote; `None` when it describes a
    /// different network.
    fn load_module(&self, path: &Path, device: &Device) -> Result<Option<Self::Module>, ModelError>;
    /// The depth group of a parameter path (layer-wise lr decay, frozen backbone).
    fn layer_ordinal(&self, path: &str) -> LayerOrdinal;
    /// Whether the parameter at `path`, of `rank` dimensions, is kept out of weight decay: as
    /// timm's `param_groups_weight_decay`, norms and biases, and what the model's
    /// `no_weight_decay()` names (relative-position tables, ...).
    fn no_weight_decay(&self, path: &str, rank: usize) -> bool;
    /// Whether the tensor at `path` is a buffer (BatchNorm's running statistics), which no
    /// optimiser updates.
    fn is_buffer(&self, path: &str) -> bool;
}

/// [`Network`] for one of kiln-models' loaded networks (`LoadedModel`, `LoadedSegmenter`): each
/// holds its `name`, its `config` (which answers for the parameters) and its `model`, and
/// rebuilds from a checkpoint with `from_native`; only the checkpoint writer differs.
macro_rules! impl_loaded_network {
    ($loaded:ty, $module:ty, $save:expr) => {
        impl $crate::network::Network for $loaded {
            type Module = $module;
            fn module(&self) -> &$module {
                &self.model
            }
            fn module_mut(&mut self) -> &mut $module {
                &mut self.model
            }
            fn save_module(&self, module: &$module, path: &std::path::Path) -> Result<(), kiln_models::ModelError> {
                $save(module, path, &self.name, &self.config.to_json())
            }
            fn load_module(&self, path: &std::path::Path, device: &burn::prelude::Device) -> Result<Option<$module>, kiln_models::ModelError> {
                let restored = <$loaded>::from_native(path, device)?;
                Ok((restored.config.to_json() == self.config.to_json()).then_some(restored.model))
            }
            fn layer_ordinal(&self, path: &str) -> kiln_models::LayerOrdinal {
                self.config.layer_ordinal(path)
            }
            fn no_weight_decay(&self, path: &str, rank: usize) -> bool {
                self.config.no_weight_decay(path, rank)
            }
            fn is_buffer(&self, path: &str) -> bool {
                self.config.is_buffer(path)
            }
        }
    };
}
pub(crate) use impl_loaded_network;

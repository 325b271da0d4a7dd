//! What can stop a run, one enum for the loop, the tasks and the checkpoints.

use std::path::{Path, PathBuf};

use kiln_data::DataError;
use kiln_models::ModelError;

use crate::config::ConfigError;

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The experiment file.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Data sets and loaders.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Building the model or loading weights.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// A loss that is not a finite number.
    #[error(
        "training diverged at step {step} (epoch {epoch}): loss is {loss}; lower optim.lr or set optim.clip_grad. \
         The last good checkpoint is untouched: {last}"
    )]
    Diverged {
        /// Optimiser step.
        step: usize,
        /// Epoch.
        epoch: usize,
        /// The loss value.
        loss: f32,
        /// The checkpoint to resume from.
        last: String,
    },
    /// Reading or writing the run directory.
    #[error("{path}: {reason}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Data-parallel training that cannot start.
    #[error("data-parallel training: {0}")]
    Distributed(String),
    /// A run directory that cannot be resumed.
    #[error("cannot resume from {path}: {reason}")]
    Resume {
        /// The checkpoint directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

pub(crate) fn io(path: &Path) -> impl Fn(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io { path: path.to_path_buf(), reason: e.to_string() }
}

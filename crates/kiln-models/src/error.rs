//! Errors of model construction and checkpoint loading, worded for the person at the terminal.

use std::path::PathBuf;

/// What can go wrong building a model or loading its weights.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model name that is not registered.
    #[error("unknown model '{name}'{}; `kiln models` lists them all", suggest(.suggestions))]
    UnknownModel {
        /// The name asked for.
        name: String,
        /// The closest registered names.
        suggestions: Vec<String>,
    },
    /// A configuration the architecture cannot be built with.
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    /// A checkpoint that cannot be read at all.
    #[error("cannot read checkpoint {path}: {reason}")]
    CheckpointUnreadable {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
    /// A checkpoint whose tensors do not fit the model.
    #[error("checkpoint {path} does not fit model '{model}':\n{details}\nIs it a checkpoint of this architecture and size?")]
    CheckpointMismatch {
        /// The file.
        path: PathBuf,
        /// The model it was loaded into.
        model: String,
        /// Missing, unexpected and mis-shaped keys, one per line.
        details: String,
    },
    /// A checkpoint that could not be written.
    #[error("cannot write checkpoint {path}: {reason}")]
    CheckpointWrite {
        /// The file.
        path: PathBuf,
        /// Why, in words.
        reason: String,
    },
}

fn suggest(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (did you mean {}?)", names.join(", "))
    }
}

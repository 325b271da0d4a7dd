//! Semantic segmentation (in progress).

use burn::prelude::*;

use crate::config::ResolvedConfig;
use crate::train::{TrainError, TrainOptions, TrainSummary};

/// Trains a segmentation experiment.
pub fn train(_cfg: &ResolvedConfig, _opts: &TrainOptions, _device: &Device) -> Result<TrainSummary, TrainError> {
    Err(TrainError::Data(kiln_data::DataError::InvalidData("segmentation training is not built yet".into())))
}

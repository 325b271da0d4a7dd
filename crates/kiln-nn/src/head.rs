//! The classification head: dropout then a linear layer over pooled features (timm's
//! `ClassifierHead` after its pooling).

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;

use crate::init;

/// Configuration of a [`ClassifierHead`].
#[derive(Config, Debug)]
pub struct ClassifierHeadConfig {
    /// Width of the pooled features.
    pub d_input: usize,
    /// Number of classes.
    pub num_classes: usize,
    /// Dropout before the classifier (timm's `drop_rate`).
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// `fc(dropout(pooled))`; key `fc` as in timm, so checkpoints load as `head.fc`.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// `Linear(d_input, num_classes)`.
    pub fc: Linear,
    drop: Dropout,
}

impl ClassifierHeadConfig {
    /// Weight `trunc_normal(.02)`, bias 0, as timm initialises (and re-initialises) heads.
    pub fn init(&self, device: &Device) -> ClassifierHead {
        ClassifierHead {
            fc: init::linear(self.d_input, self.num_classes, true, device),
            drop: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl ClassifierHead {
    /// # Shapes
    /// - `pooled`: `[batch, d_input]` -> `[batch, num_classes]`
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        self.fc.forward(self.drop.forward(pooled))
    }
}

//! The classification head: dropout then a linear layer over pooled features (timm's
//! `ClassifierHead` after its pooling), optionally layer-normalised first (timm's
//! `NormMlpClassifierHead` without hidden layer: DaViT, ConvNeXt).

use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear};
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
    /// Whether the pooled features are layer-normalised before the classifier (pool, then
    /// norm, as DaViT and ConvNeXt order them).
    #[config(default = false)]
    pub norm: bool,
    /// The norm's `eps`.
    #[config(default = 1e-5)]
    pub norm_epsilon: f64,
}

/// `fc(dropout(norm(pooled)))`; keys `norm`, `fc` as in timm, so checkpoints load as
/// `head.norm`, `head.fc`.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// LayerNorm over `d_input`, when configured.
    pub norm: Option<LayerNorm>,
    /// `Linear(d_input, num_classes)`.
    pub fc: Linear,
    drop: Dropout,
}

impl ClassifierHeadConfig {
    /// Weight `trunc_normal(.02)`, bias 0, as timm initialises (and re-initialises) heads.
    pub fn init(&self, device: &Device) -> ClassifierHead {
        ClassifierHead {
            norm: self.norm.then(|| LayerNormConfig::new(self.d_input).with_epsilon(self.norm_epsilon).init(device)),
            fc: init::linear(self.d_input, self.num_classes, true, device),
            drop: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl ClassifierHead {
    /// # Shapes
    /// - `pooled`: `[batch, d_input]` -> `[batch, num_classes]`
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        let pooled = match &self.norm {
            Some(norm) => norm.forward(pooled),
            None => pooled,
        };
        self.fc.forward(self.drop.forward(pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    #[test]
    fn norm_comes_before_the_classifier() {
        let device = Device::flex();
        let mut head = ClassifierHeadConfig::new(2, 1).with_norm(true).init(&device);
        head.fc.weight = Param::from_tensor(Tensor::from_floats([[1.0], [3.0]], &device));
        // (1, 5): mean 3, biased var 4 -> (−2, 2)/√(4 + 1e-5); fc: (−2·1 + 2·3)/√(4 + 1e-5)
        let got = head.forward(Tensor::from_floats([[1.0, 5.0]], &device)).into_scalar::<f32>();
        let expected = 4.0 / (4.0f32 + 1e-5).sqrt();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        // without the norm the same weights see the raw features: 1 + 15
        let mut plain = ClassifierHeadConfig::new(2, 1).init(&device);
        assert!(plain.norm.is_none());
        plain.fc.weight = head.fc.weight.clone();
        assert_eq!(plain.forward(Tensor::from_floats([[1.0, 5.0]], &device)).into_scalar::<f32>(), 16.0);
    }
}

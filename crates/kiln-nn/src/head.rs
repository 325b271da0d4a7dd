//! The classification head over pooled features: timm's `ClassifierHead` (dropout, linear) and,
//! with its optional parts switched on, timm's `NormMlpClassifierHead` (LayerNorm, a
//! `Linear + tanh` pre-logits layer, dropout, linear) as MaxViT and DaViT use it.

use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::prelude::*;
use burn::tensor::activation::tanh;

use crate::fused::linear;
use crate::init;
use crate::norm::{LayerNorm, LayerNormConfig};

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
    /// A LayerNorm over the pooled features first, with this epsilon (timm's
    /// `NormMlpClassifierHead.norm`, a `LayerNorm2d` applied after pooling).
    pub norm_eps: Option<f64>,
    /// Width of a `Linear + tanh` pre-logits layer between the norm and the classifier
    /// (timm's `hidden_size`; MaxViT sets it to the last stage width).
    pub hidden_size: Option<usize>,
}

/// The `Linear + tanh` pre-logits layer of timm's `NormMlpClassifierHead`; key `fc`.
#[derive(Module, Debug)]
pub struct PreLogits {
    /// `Linear(d_input, hidden_size)`.
    pub fc: Linear,
}

/// `fc(dropout(tanh(pre_logits(norm(pooled)))))`, the norm and pre-logits optional; keys
/// `norm`, `pre_logits.fc`, `fc` as in timm, so checkpoints load as `head.*`.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// LayerNorm over the pooled features, if configured.
    pub norm: Option<LayerNorm>,
    /// `Linear + tanh`, if configured.
    pub pre_logits: Option<PreLogits>,
    /// `Linear(hidden_size or d_input, num_classes)`.
    pub fc: Linear,
    drop: Dropout,
}

impl ClassifierHeadConfig {
    /// Weights `trunc_normal(.02)`, biases 0, norm scale 1 and shift 0, as timm initialises (and
    /// re-initialises) transformer heads; a family whose timm head keeps PyTorch's default
    /// initialisation replaces the layers after `init`.
    pub fn init(&self, device: &Device) -> ClassifierHead {
        let features = self.hidden_size.unwrap_or(self.d_input);
        ClassifierHead {
            norm: self.norm_eps.map(|eps| LayerNormConfig::new(self.d_input).with_epsilon(eps).init(device)),
            pre_logits: self.hidden_size.map(|hidden| PreLogits { fc: init::linear(self.d_input, hidden, true, device) }),
            fc: init::linear(features, self.num_classes, true, device),
            drop: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl ClassifierHead {
    /// The features the classifier sees (timm's `forward_head(x, pre_logits=True)`).
    ///
    /// # Shapes
    /// - `pooled`: `[batch, d_input]` -> `[batch, hidden_size or d_input]`
    pub fn pre_logits(&self, pooled: Tensor<2>) -> Tensor<2> {
        let x = match &self.norm {
            Some(norm) => norm.forward(pooled),
            None => pooled,
        };
        let x = match &self.pre_logits {
            Some(pre) => tanh(linear(&pre.fc, x)),
            None => x,
        };
        self.drop.forward(x)
    }

    /// # Shapes
    /// - `pooled`: `[batch, d_input]` -> `[batch, num_classes]`
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        linear(&self.fc, self.pre_logits(pooled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;

    fn set(linear: &mut Linear, weight: [[f32; 2]; 2], bias: [f32; 2], device: &Device) {
        linear.weight = Param::from_tensor(Tensor::from_floats(weight, device));
        linear.bias = Some(Param::from_tensor(Tensor::from_floats(bias, device)));
    }

    #[test]
    fn plain_head_is_a_linear_layer() {
        let device = Device::flex();
        let mut head = ClassifierHeadConfig::new(2, 2).init(&device);
        assert!(head.norm.is_none() && head.pre_logits.is_none());
        set(&mut head.fc, [[1.0, 2.0], [3.0, 4.0]], [0.5, -0.5], &device);
        let y = head.forward(Tensor::from_floats([[1.0, -1.0]], &device));
        assert_eq!(y.into_data().try_to_vec::<f32>().unwrap(), vec![1.0 - 3.0 + 0.5, 2.0 - 4.0 - 0.5]);
    }

    #[test]
    fn norm_mlp_head_normalises_then_tanh_then_classifies() {
        let device = Device::flex();
        let mut head = ClassifierHeadConfig::new(2, 2).with_norm_eps(Some(1e-5)).with_hidden_size(Some(2)).init(&device);
        set(&mut head.pre_logits.as_mut().unwrap().fc, [[1.0, 0.0], [0.0, 2.0]], [0.0, 0.1], &device);
        set(&mut head.fc, [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0], &device);
        // pooled (1, 3): mean 2, biased var 1 -> normalised (−s, s), s = 1/√(1 + 1e-5)
        let y = head.forward(Tensor::from_floats([[1.0, 3.0]], &device)).into_data().try_to_vec::<f32>().unwrap();
        let s = 1.0 / (1.0f32 + 1e-5).sqrt();
        // pre-logits: (−s, 2s) + (0, 0.1) through tanh; identity classifier
        let expected = [(-s).tanh(), (2.0 * s + 0.1).tanh()];
        for (g, e) in y.iter().zip(expected) {
            assert!((g - e).abs() < 1e-6, "{y:?} vs {expected:?}");
        }
    }
}

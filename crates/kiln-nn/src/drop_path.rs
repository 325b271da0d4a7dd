//! Stochastic depth: drops a whole residual branch per sample during training.

use burn::module::{Flag, Param};
use burn::prelude::*;
use burn::tensor::Distribution;

/// Drop-path (stochastic depth) of the residual branch, per sample.
///
/// Active only while training on an autodiff device; at inference it is the identity, as
/// timm's `DropPath` is in eval mode. Kept samples are scaled by `1 / (1 - prob)`.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability that a sample's branch is dropped.
    pub prob: f64,
    /// Cleared by `freeze`, like burn's `Dropout::training`.
    pub training: Param<Flag>,
}

impl DropPath {
    /// A drop-path with the given probability (0 makes it the identity).
    ///
    /// # Panics
    /// If `prob` is not in `[0, 1)`.
    pub fn new(prob: f64) -> Self {
        assert!(
            (0.0..1.0).contains(&prob),
            "drop-path probability must be in [0, 1), got {prob}"
        );
        Self { prob, training: Param::from_bool(true) }
    }

    /// # Shapes
    /// - `x`: `[batch, ...]`, returned with the same shape.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !self.training.is_enabled() || !x.device().is_autodiff() {
            return x;
        }
        let keep = 1.0 - self.prob;
        let mut mask_shape = [1usize; D];
        mask_shape[0] = x.dims()[0];
        let mask = Tensor::<D>::random(mask_shape, Distribution::Bernoulli(keep), &x.device());
        x * mask.div_scalar(keep)
    }
}

/// timm's per-block drop-path schedule: `linspace(0, rate, total_blocks)` split by stage.
pub fn drop_path_schedule(rate: f64, depths: &[usize]) -> Vec<Vec<f64>> {
    let total: usize = depths.iter().sum();
    let at = |i: usize| if total > 1 { rate * i as f64 / (total - 1) as f64 } else { 0.0 };
    let mut start = 0;
    depths
        .iter()
        .map(|&depth| {
            let stage = (start..start + depth).map(at).collect();
            start += depth;
            stage
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_without_autodiff() {
        let device = Device::flex();
        let x = Tensor::<2>::ones([4, 3], &device);
        let y = DropPath::new(0.5).forward(x.clone());
        y.into_data().assert_eq(&x.into_data(), true);
    }

    #[test]
    fn drops_whole_samples_and_rescales_when_training() {
        let device = Device::flex().autodiff();
        let x = Tensor::<3>::ones([64, 5, 7], &device);
        let y = DropPath::new(0.5).forward(x);
        let values = y.into_data().try_to_vec::<f32>().unwrap();
        let mut dropped = 0;
        for sample in values.chunks(35) {
            // every element of one sample shares one fate: all 0 or all 1/(1-p)
            assert!(sample.iter().all(|&v| v == sample[0]), "sample not dropped as a whole");
            assert!(sample[0] == 0.0 || (sample[0] - 2.0).abs() < 1e-6);
            dropped += (sample[0] == 0.0) as usize;
        }
        assert!(dropped > 8 && dropped < 56, "dropped {dropped} of 64 at p=0.5");
    }

    #[test]
    fn schedule_matches_timm_linspace() {
        let s = drop_path_schedule(0.2, &[2, 2, 1]);
        let flat: Vec<f64> = s.concat();
        let expected = [0.0, 0.05, 0.1, 0.15, 0.2];
        for (a, b) in flat.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(s.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 2, 1]);
    }
}

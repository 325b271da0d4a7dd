//! An exponential moving average of a model's weights, as timm's `ModelEmaV3` keeps it (without
//! warm-up): after every optimiser step, `ema ← ema + (1 − decay)·(model − ema)` for every
//! parameter and buffer (BatchNorm running statistics included).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;
use kiln_models::Model;

/// The averaged weights, held without autodiff.
#[derive(Debug, Clone)]
pub struct Ema<M = Model> {
    /// The averaged model (evaluate it like any other).
    pub model: M,
    decay: f64,
}

impl<M: Module> Ema<M> {
    /// Starts the average at the current weights of `model`.
    pub fn new(model: &M, decay: f64) -> Self {
        Self { model: model.valid(), decay }
    }

    /// Continues an average saved earlier.
    pub fn resume(model: M, decay: f64) -> Self {
        Self { model, decay }
    }

    /// The decay per step.
    pub fn decay(&self) -> f64 {
        self.decay
    }

    /// Moves the average towards the weights of `model` (after an optimiser step).
    pub fn update(&mut self, model: &M) {
        let mut current = Flatten::default();
        model.valid().visit(&mut current);
        let mut lerp = Lerp { current: current.0.into_iter(), weight: 1.0 - self.decay };
        self.model = self.model.clone().map(&mut lerp);
        assert!(lerp.current.next().is_none(), "the average and the model have the same parameters");
    }
}

/// Every float parameter and buffer, flattened, in visiting order.
#[derive(Default)]
struct Flatten(Vec<Tensor<1>>);

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let len = value.shape().num_elements();
        self.0.push(value.reshape([len]));
    }
}

/// `ema + weight·(current − ema)`, parameter by parameter in the same visiting order.
struct Lerp<I> {
    current: I,
    weight: f64,
}

impl<I: Iterator<Item = Tensor<1>>> ModuleMapper for Lerp<I> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let current = self.current.next().expect("the model has as many parameters as its average");
        let weight = self.weight;
        param.map(|ema| {
            let current = current.reshape(ema.dims());
            ema.clone() + (current - ema).mul_scalar(weight)
        })
    }
}

#[cfg(test)]
mod tests {
    use burn::store::{ModuleSnapshot, bridge};
    use kiln_models::maxvit::MaxVitConfig;
    use kiln_models::{Backbone, ModelConfig};

    use super::*;

    fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
        model.collect(None, None, true).into_iter().map(|t| (t.name.clone(), bridge::into_data(t).unwrap().try_to_vec::<f32>().unwrap())).collect()
    }

    /// Two independently initialised MaxViTs (BatchNorm buffers included): one update is the
    /// exact lerp of every tensor, and a second one continues from the first.
    #[test]
    fn an_update_is_the_lerp_of_every_parameter_and_buffer() {
        let device = Device::flex();
        let config = ModelConfig::MaxVit(MaxVitConfig::new([32, 32], vec![8], vec![1], 8).with_dim_head(8).with_partition_ratio(16).with_num_classes(3));
        let start = config.init(&device).unwrap();
        let autodiff = device.clone().autodiff();
        let trained = config.init(&autodiff).unwrap();
        // one training-mode forward moves the BatchNorm running statistics off their initial values
        let _ = trained.forward(Tensor::random([2, 3, 32, 32], burn::tensor::Distribution::Normal(0.0, 1.0), &autodiff));
        let trained = trained.valid();
        let mut ema = Ema::new(&start, 0.9);
        ema.update(&trained);
        let (a, b, averaged) = (weights(&start), weights(&trained), weights(&ema.model));
        assert!(a.iter().any(|(n, _)| n.ends_with("running_var")), "buffers are covered");
        let mut buffers_moved = false;
        for (((name, a), (_, b)), (_, e)) in a.iter().zip(&b).zip(&averaged) {
            buffers_moved |= name.ends_with("running_mean") && a != b;
            for ((a, b), e) in a.iter().zip(b).zip(e) {
                let expected = a + 0.1 * (b - a);
                assert!((e - expected).abs() <= 1e-6 * (1.0 + expected.abs()), "{name}: {e} vs {expected}");
            }
        }
        assert!(buffers_moved, "the test's buffers differ between the two models");
        ema.update(&trained);
        for (((name, a), (_, b)), (_, e)) in a.iter().zip(&b).zip(&weights(&ema.model)) {
            let expected = a[0] + 0.19 * (b[0] - a[0]);
            assert!((e[0] - expected).abs() <= 1e-6 * (1.0 + expected.abs()), "{name}: {} vs {expected}", e[0]);
        }
    }
}

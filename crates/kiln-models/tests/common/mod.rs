//! Checks shared by every family's tests.

use std::collections::BTreeMap;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{DType, Distribution};
use kiln_models::{Backbone, ModelConfig};

fn parameters<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<f32>> {
    model
        .collect(None, None, true)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let data = bridge::into_data(t).unwrap().convert_dtype(DType::F32);
            (name, data.try_to_vec::<f32>().unwrap())
        })
        .collect()
}

/// One full training step (forward, cross-entropy, backward, AdamW update) on the autodiff CPU
/// device must give a finite loss and move every parameter: a parameter left unchanged never
/// received a gradient, i.e. the graph is cut somewhere.
pub fn assert_train_step_moves_every_parameter(config: ModelConfig, batch: usize) {
    let device = Device::flex().autodiff();
    let model = config.init(&device).unwrap();
    let [h, w] = config.img_size();
    let x = Tensor::<4>::random([batch, config.in_chans(), h, w], Distribution::Normal(0.0, 1.0), &device);
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new((0..batch as i64).map(|i| i % config.num_classes() as i64).collect::<Vec<_>>(), [batch]),
        &device,
    );
    let before = parameters(&model);
    let loss = CrossEntropyLossConfig::new().init(&device).forward(model.forward(x), targets);
    let loss_value: f32 = loss.clone().into_scalar::<f32>();
    assert!(loss_value.is_finite(), "loss {loss_value}");
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let model = AdamWConfig::new().init().step(1e-3, model, grads);
    let after = parameters(&model);
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    let frozen: Vec<&String> = before.iter().filter(|(name, values)| &after[*name] == *values).map(|(name, _)| name).collect();
    assert!(frozen.is_empty(), "parameters unchanged by a training step: {frozen:?}");
}

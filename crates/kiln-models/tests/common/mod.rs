//! Checks shared by every family's tests: reading timm fixtures, the parity tolerance, and the
//! training-step check.

use std::collections::BTreeMap;
use std::path::Path;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{DType, Distribution};
use kiln_models::checkpoint::read_state_dict;
use kiln_models::{Backbone, LoadedModel, ModelConfig};

/// Parity tolerance: max-abs error over max-abs value of the timm tensor.
pub const RELATIVE_TOLERANCE: f32 = 1e-4;

/// Every tensor of a safetensors (or `.pth`) file as `(values, shape)`, converted to f32.
pub fn read_tensors(path: &Path) -> BTreeMap<String, (Vec<f32>, Vec<usize>)> {
    read_state_dict(path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| {
            let data = bridge::into_data(t).unwrap().convert_dtype(DType::F32);
            let shape = data.shape().to_vec();
            (k, (data.try_to_vec::<f32>().unwrap(), shape))
        })
        .collect()
}

/// Fails unless `got` is within [`RELATIVE_TOLERANCE`] of `expected` (relative to the largest
/// expected magnitude).
pub fn assert_close(what: &str, got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(expected).fold(0.0f32, |m, (g, e)| m.max((g - e).abs()));
    assert!(scale > 0.0, "{what}: expected values are all zero");
    assert!(
        worst <= RELATIVE_TOLERANCE * scale,
        "{what}: max abs error {worst:e} over max abs value {scale:e} exceeds {RELATIVE_TOLERANCE:e}"
    );
}

/// A model next to the inputs and outputs timm produced for it (`io.safetensors`).
pub struct Case {
    /// The model under test.
    pub model: LoadedModel,
    /// `input`, `logits`, `features.{i}` (and per family extras such as `stem`).
    pub io: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    /// The CPU device the model lives on.
    pub device: Device,
}

impl Case {
    /// `model` against the fixture outputs in `io`.
    pub fn new(model: LoadedModel, io: &Path, device: Device) -> Self {
        Self { model, io: read_tensors(io), device }
    }

    /// The fixture input `[batch, C, H, W]`.
    pub fn input(&self) -> Tensor<4> {
        let (values, shape) = &self.io["input"];
        Tensor::<1>::from_data(TensorData::new(values.clone(), [values.len()]), &self.device)
            .reshape([shape[0], shape[1], shape[2], shape[3]])
    }

    /// `map` against the fixture tensor `key`: same shape, values within tolerance.
    pub fn check_map<const D: usize>(&self, key: &str, map: Tensor<D>) {
        let (values, shape) = &self.io[key];
        assert_eq!(&map.dims().to_vec(), shape, "{key} shape");
        assert_close(key, &map.into_data().try_to_vec::<f32>().unwrap(), values);
    }

    /// Logits against timm's.
    pub fn check_logits(&self) {
        self.check_map("logits", self.model.model.forward(self.input()));
    }

    /// Every stage map against timm's `features.{i}`.
    pub fn check_features(&self) {
        let maps = self.model.model.forward_features(self.input());
        let expected = self.io.keys().filter(|k| k.starts_with("features.")).count();
        assert_eq!(maps.len(), expected, "one map per stage");
        for (i, map) in maps.into_iter().enumerate() {
            self.check_map(&format!("features.{i}"), map);
        }
    }
}

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

/// BatchNorm running statistics: buffers the training forward updates, not the optimizer.
fn is_batch_norm_buffer(name: &str) -> bool {
    name.ends_with(".running_mean") || name.ends_with(".running_var")
}

/// One full training step (forward, cross-entropy, backward, AdamW update) on the autodiff CPU
/// device must give a finite loss and move every parameter: a parameter left unchanged never
/// received a gradient, i.e. the graph is cut somewhere. BatchNorm running statistics must move
/// too, through the training forward (read after `valid()`, which applies the update burn's
/// `RunningState` keeps pending until the next forward or sync).
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
    let after = parameters(&model.valid());
    assert_eq!(before.keys().collect::<Vec<_>>(), after.keys().collect::<Vec<_>>());
    let unchanged = |buffers: bool| -> Vec<&String> {
        before
            .iter()
            .filter(|(name, values)| is_batch_norm_buffer(name) == buffers && &after[*name] == *values)
            .map(|(name, _)| name)
            .collect()
    };
    let frozen = unchanged(false);
    assert!(frozen.is_empty(), "parameters unchanged by a training step: {frozen:?}");
    let stale = unchanged(true);
    assert!(stale.is_empty(), "BatchNorm statistics not updated by a training forward: {stale:?}");
}

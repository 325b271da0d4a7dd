//! Checks shared by every family's tests.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::{DType, Distribution};
use kiln_models::checkpoint::read_state_dict;
use kiln_models::{Backbone, LoadedModel, ModelConfig};

/// Every learnable tensor by module path (BatchNorm's running statistics left out), as `f32`.
pub fn parameters<M: ModuleSnapshot>(model: &M) -> BTreeMap<String, Vec<f32>> {
    model
        .collect(None, None, true)
        .into_iter()
        // BatchNorm's running statistics are buffers, not parameters: no gradient moves them
        .filter(|t| !kiln_models::backbone::is_buffer_field(t.name.rsplit('.').next().unwrap_or("")))
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
    device.seed(7); // the same weights and input on every machine
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

/// Parity tolerance against timm: max-abs error over max-abs value.
pub const RELATIVE_TOLERANCE: f32 = 1e-4;

/// `tests/fixtures/<family>/<case>`, written by `scripts/export_timm_fixtures.py`.
pub fn fixture(family: &str, case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(family).join(case)
}

/// A fixture case's `config.json`.
pub fn fixture_config(family: &str, case: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(family, case).join("config.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every tensor of a safetensors file as `(values, shape)`.
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

/// Fails unless `got` is within [`RELATIVE_TOLERANCE`] of `expected`, relative to its largest
/// magnitude.
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

/// A model built for a fixture case, with the case's inputs and timm's outputs
/// (`io.safetensors`: `input`, `logits`, `features.{i}`, ...).
pub struct Case {
    pub model: LoadedModel,
    pub io: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    pub device: Device,
}

impl Case {
    /// Builds `config` (random weights) next to the fixture `<family>/<case>`.
    pub fn new(family: &str, case: &str, config: ModelConfig) -> Self {
        let device = Device::flex();
        let model = LoadedModel::build(&format!("{family}_test"), config, &device).unwrap();
        Self { model, io: read_tensors(&fixture(family, case).join("io.safetensors")), device }
    }

    /// timm's input as a tensor.
    pub fn input(&self) -> Tensor<4> {
        let (values, shape) = &self.io["input"];
        Tensor::<1>::from_data(TensorData::new(values.clone(), [values.len()]), &self.device)
            .reshape([shape[0], shape[1], shape[2], shape[3]])
    }

    /// Compares `got` with the fixture tensor `key`, shape and values.
    pub fn check(&self, key: &str, got: Tensor<4>) {
        let (values, shape) = &self.io[key];
        assert_eq!(&got.dims().to_vec(), shape, "{key} shape");
        assert_close(key, &got.into_data().try_to_vec::<f32>().unwrap(), values);
    }

    /// The logits of `input` against the fixture's `logits`.
    pub fn check_logits(&self) {
        let logits = self.model.model.forward(self.input());
        assert_eq!(logits.dims().to_vec(), self.io["logits"].1);
        assert_close("logits", &logits.into_data().try_to_vec::<f32>().unwrap(), &self.io["logits"].0);
    }

    /// Every stage map of `forward_features` against the fixture's `features.{i}`.
    pub fn check_features(&self) {
        let maps = self.model.model.forward_features(self.input());
        let expected = self.io.keys().filter(|k| k.starts_with("features.")).count();
        assert_eq!(maps.len(), expected, "one map per stage");
        for (i, map) in maps.into_iter().enumerate() {
            self.check(&format!("features.{i}"), map);
        }
    }

    /// Saves the model as a Kiln checkpoint, rebuilds it from the file alone (configuration from
    /// the metadata) and checks the logits again.
    pub fn check_native_round_trip(&mut self) {
        let dir = std::env::temp_dir().join(format!("kiln-native-{}-{}", std::process::id(), self.model.config.family()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.bpk");
        self.model.save(&path).unwrap();
        let restored = LoadedModel::from_native(&path, &self.device).unwrap();
        assert_eq!(restored.config.to_json(), self.model.config.to_json());
        self.model = restored;
        self.check_logits();
    }
}

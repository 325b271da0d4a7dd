//! Parity with the official Atlas code (YalaLab/atlas @ 9915894): the fixture in
//! `tests/fixtures/atlas` (see its README) holds a tiny model's state dict with the official
//! key names, an input, and the logits and intermediate tokens the official code produced.
//! Logits and features must match within 1e-4 relative (max-abs error over max-abs value).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use common::{assert_close, read_tensors};
use kiln_models::atlas::{AtlasConfig, ParentMapping};
use kiln_models::{Backbone, LoadedModel, Model, ModelConfig, find};

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/atlas").join(file)
}

fn fixture_json() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("config.json")).unwrap()).unwrap()
}

/// The fixture's `Atlas(**model_kwargs)` as our config.
fn fixture_config() -> AtlasConfig {
    let json = fixture_json();
    let kwargs = &json["model_kwargs"];
    let stages = kwargs["kwargs_list"].as_array().unwrap();
    let first = &stages[0];
    let get = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k}")) as usize;
    let size = first["img_size"][0].as_u64().unwrap() as usize;
    let dim = get(first, "dim");
    assert_eq!(get(first, "num_features") * 4, dim, "the stem width is dim / 4");
    assert_eq!(get(first, "patch_size"), 16);
    for stage in stages {
        // every stage shares width, heads, window and pool; only depths differ
        for key in ["dim", "num_heads", "merge_ratio", "local2global", "mlp_ratio"] {
            assert_eq!(stage[key], first[key], "{key}");
        }
    }
    AtlasConfig::new([size, size], dim, get(first, "num_heads"), stages.iter().map(|s| get(s, "depths")).collect())
        .with_num_classes(get(kwargs, "num_classes"))
        .with_in_chans(get(kwargs, "in_chans"))
        .with_window_size(get(first, "merge_ratio"))
        .with_pool_size(get(first, "local2global"))
        .with_mlp_ratio(first["mlp_ratio"].as_f64().unwrap())
        .with_drop_path_rate(first["drop_path_rate"].as_f64().unwrap())
}

struct Case {
    model: LoadedModel,
    outputs: BTreeMap<String, (Vec<f32>, Vec<usize>)>,
    device: Device,
}

impl Case {
    fn new(config: AtlasConfig) -> Self {
        let device = Device::flex();
        let model = LoadedModel::build("atlas_test", ModelConfig::Atlas(config), &device).unwrap();
        Self { model, outputs: read_tensors(&fixture("output.safetensors")), device }
    }

    fn loaded(weights: &str) -> Self {
        let mut case = Self::new(fixture_config());
        let report = case.model.load_weights(&fixture(weights)).unwrap();
        assert!(!report.head_reinitialized && report.resized.is_empty(), "{report:?}");
        case
    }

    fn input(&self) -> Tensor<4> {
        let (values, shape) = &read_tensors(&fixture("input.safetensors"))["x"];
        Tensor::<1>::from_data(TensorData::new(values.clone(), [values.len()]), &self.device)
            .reshape([shape[0], shape[1], shape[2], shape[3]])
    }

    fn check<const D: usize>(&self, key: &str, got: Tensor<D>) {
        let (values, shape) = &self.outputs[key];
        assert_eq!(&got.dims().to_vec(), shape, "{key} shape");
        assert_close(key, &got.into_data().try_to_vec::<f32>().unwrap(), values);
    }

    fn check_logits(&self) {
        self.check("logits", self.model.model.forward(self.input()));
    }
}

fn atlas(model: &LoadedModel) -> &kiln_models::atlas::Atlas {
    match &model.model {
        Model::Atlas(m) => m,
        _ => unreachable!("an Atlas case"),
    }
}

#[test]
fn logits_and_intermediate_tokens_match_the_official_code() {
    let case = Case::loaded("weights.safetensors");
    case.check_logits();
    let trace = atlas(&case.model).trace(case.input());
    case.check("stem_out", trace.stem);
    assert_eq!(trace.stages.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 1], "scales per stage");
    for (stage, scales) in trace.stages.into_iter().enumerate() {
        for (scale, tokens) in scales.into_iter().enumerate() {
            case.check(&format!("features_stage{stage}_scale{scale}"), tokens);
        }
    }
}

#[test]
fn forward_features_are_the_official_tokens_as_maps() {
    let case = Case::loaded("weights.safetensors");
    let maps = case.model.model.forward_features(case.input());
    let info = case.model.model.feature_info();
    assert_eq!(info.iter().map(|i| (i.channels, i.stride)).collect::<Vec<_>>(), vec![(64, 16), (64, 64)]);
    assert_eq!(maps.len(), 2);
    // scale 0 is finished by stage 0: (batch, 2x2 windows, 16x16 tokens, C) -> NCHW
    let (s0, shape) = &case.outputs["features_stage0_scale0"];
    assert_eq!(shape, &vec![8, 256, 64]);
    let mut nchw = vec![0.0f32; 2 * 64 * 32 * 32];
    for (i, v) in s0.iter().enumerate() {
        let (window, token, c) = (i / (256 * 64), (i / 64) % 256, i % 64);
        let (b, wr, wc) = (window / 4, (window % 4) / 2, window % 2);
        let (y, x) = (wr * 16 + token / 16, wc * 16 + token % 16);
        nchw[((b * 64 + c) * 32 + y) * 32 + x] = *v;
    }
    assert_eq!(maps[0].dims(), [2, 64, 32, 32]);
    assert_close("features.0", &maps[0].clone().into_data().try_to_vec::<f32>().unwrap(), &nchw);
    // scale 1 is finished by the last stage: (batch, 8x8 tokens, C) -> NCHW
    let (s1, _) = &case.outputs["features_stage1_scale0"];
    let nchw: Vec<f32> = (0..2 * 64 * 64).map(|i| (i / (64 * 64), (i / 64) % 64, i % 64)).map(|(b, c, t)| s1[(b * 64 + t) * 64 + c]).collect();
    assert_eq!(maps[1].dims(), [2, 64, 8, 8]);
    assert_close("features.1", &maps[1].clone().into_data().try_to_vec::<f32>().unwrap(), &nchw);
}

#[test]
fn unused_official_parameters_are_skipped_by_name_and_the_count_is_the_official_one() {
    let json = fixture_json();
    let mut case = Case::new(fixture_config());
    assert_eq!(case.model.num_params() as u64, json["param_count_used_in_forward"].as_u64().unwrap());
    let report = case.model.load_weights(&fixture("weights.safetensors")).unwrap();
    let unused: Vec<&str> = json["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["used_in_forward"] == false && e["in_weights_file"] == true)
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    let mut skipped: Vec<&str> = report.skipped.iter().map(String::as_str).collect();
    skipped.sort();
    let mut expected = unused.clone();
    expected.sort();
    assert_eq!(skipped, expected, "exactly the per-stage norm/head are skipped");
    assert_eq!(report.loaded, json["state_dict"].as_array().unwrap().iter().filter(|e| e["used_in_forward"] == true && e["in_weights_file"] == true).count());
}

#[test]
fn a_wrapped_pth_with_batchnorm_counters_loads_the_same() {
    // scripts/export_atlas_pth.py: {"model": state_dict} with the int64 num_batches_tracked
    // counters, as the official training loop saves it
    let case = Case::loaded("weights.pth");
    case.check_logits();
}

#[test]
fn another_class_count_reinitialises_only_the_classifier() {
    let mut case = Case::new(fixture_config().with_num_classes(7));
    let report = case.model.load_weights(&fixture("weights.safetensors")).unwrap();
    assert!(report.head_reinitialized);
    let trace = atlas(&case.model).trace(case.input());
    case.check("features_stage1_scale0", trace.stages[1][0].clone());
    assert_eq!(case.model.model.forward(case.input()).dims(), [2, 7]);
}

#[test]
fn options_leave_the_released_layout_unchanged() {
    // at 512 px the coarse scale is one window: spatial pairing and padding are no-ops
    let mut case = Case::new(fixture_config().with_parent_mapping(ParentMapping::Spatial).with_pad_to_windows(true));
    case.model.load_weights(&fixture("weights.safetensors")).unwrap();
    case.check_logits();
}

#[test]
fn config_json_round_trips_with_the_options() {
    let config = ModelConfig::Atlas(
        AtlasConfig::small().with_parent_mapping(ParentMapping::Spatial).with_pad_to_windows(true).with_num_classes(3),
    );
    let back = ModelConfig::from_json(&config.to_json()).unwrap();
    assert_eq!(back.to_json(), config.to_json());
    let ModelConfig::Atlas(back) = back else { panic!("family") };
    assert_eq!((back.parent_mapping, back.pad_to_windows, back.num_classes), (ParentMapping::Spatial, true, 3));
}

/// Parameters forward uses, counted from the official module definitions (spec §3):
/// stem `1856 + 360·F² + 638·F` (F = C/4), one `CrossWindowBlock` (`12·C² + 15·C`) and one
/// position MLP (`1536 + 512·C`) per scale per block, head `4·C + (C + 1)·classes`.
fn official_used_params(dim: u64, classes: u64, sub_blocks: u64) -> u64 {
    let f = dim / 4;
    let stem = 1856 + 360 * f * f + 638 * f;
    stem + sub_blocks * (12 * dim * dim + 15 * dim + 1536 + 512 * dim) + 4 * dim + (dim + 1) * classes
}

#[test]
fn registered_variants_have_the_official_parameter_count() {
    // the formula reproduces the official counts the fixture and the spec measured:
    // tiny fixture (C 64, 10 classes, 2 blocks x 2 scales + 1 x 1) and Atlas-B's 118.25 M used /
    // 118.41 M with the unused per-stage BatchNorm and head (2 x (2·C + (C + 1)·100))
    assert_eq!(official_used_params(64, 10, 5), fixture_json()["param_count_used_in_forward"].as_u64().unwrap());
    let base = official_used_params(768, 100, 2 * 2 + 10);
    assert_eq!((base + 50) / 10_000, 11_825);
    assert_eq!((base + 2 * (2 * 768 + 769 * 100) + 5_000) / 10_000, 11_841);
    let device = Device::flex();
    for (name, dim, sub_blocks) in [("atlas_base_1024", 768, 14), ("atlas_small_1024", 384, 14)] {
        let entry = find(name).unwrap();
        assert_eq!(entry.family(), "atlas");
        let model = LoadedModel::build(name, (entry.config)(), &device).unwrap();
        assert_eq!(model.num_params() as u64, official_used_params(dim, 100, sub_blocks), "{name}");
        let p = &entry.pretrained;
        assert_eq!((p.input_size, p.crop_pct, p.interpolation, p.num_classes), ([3, 1024, 1024], 1.0, "bicubic", 100));
    }
    assert_eq!(official_used_params(768, 100, 14), 118_253_604);
    assert_eq!(official_used_params(384, 100, 14), 31_048_164);
    // one set of block weights per scale: Atlas-B at 2048 px has 3 + 3 + 2 x 10 sub-blocks
    let mut config = (find("atlas_base_1024").unwrap().config)();
    config.set_img_size([2048, 2048]);
    let model = LoadedModel::build("atlas_base_1024", config, &device).unwrap();
    assert_eq!(model.num_params() as u64, official_used_params(768, 100, 26));
}

/// `input_pattern` of `scripts/export_atlas_fixtures.py`: `[batch, 3, size, size]`.
fn input_pattern(batch: usize, size: usize, device: &Device) -> Tensor<4> {
    let mut values = Vec::with_capacity(batch * 3 * size * size);
    for b in 0..batch {
        for c in 0..3 {
            for i in 0..size {
                for j in 0..size {
                    let (b, c, i, j) = (b as f32, c as f32, i as f32, j as f32);
                    values.push((0.0137 * i * (c + 1.0) + 0.0291 * j + 0.5 * b).sin() + 0.3 * (0.0071 * (i + 2.0 * j) * (b + 1.0)).cos());
                }
            }
        }
    }
    Tensor::<1>::from_data(TensorData::new(values, [batch * 3 * size * size]), device).reshape([batch, 3, size, size])
}

#[test]
fn three_scales_at_2048_px_match_the_official_raster_pairing() {
    // scripts/export_atlas_fixtures.py: scale 1 has 2x2 windows, so fine windows are paired with
    // coarse ones in the official raster order, and stage 1 still holds two scales
    let dir = fixture("r2048");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let config = AtlasConfig::new([2048, 2048], 32, 2, vec![1, 1]).with_num_classes(10).with_drop_path_rate(0.0);
    let device = Device::flex();
    let mut model = LoadedModel::build("atlas_r2048", ModelConfig::Atlas(config.clone()), &device).unwrap();
    let report = model.load_weights(&dir.join("weights.safetensors")).unwrap();
    let unused = 2 * 6; // per stage: norm weight, bias, running mean, var; head weight, bias
    assert_eq!(report.skipped.len(), unused, "{:?}", report.skipped);
    // the official total minus the unused per-stage norm (2·C) and head ((C + 1)·10)
    let total = json["param_count_total"].as_u64().unwrap();
    assert_eq!(model.num_params() as u64, total - 2 * (2 * 32 + 33 * 10));
    let expected = read_tensors(&dir.join("output.safetensors"));
    let check = |key: &str, got: Tensor<3>| {
        let (values, shape) = &expected[key];
        assert_eq!(&got.dims().to_vec(), shape, "{key} shape");
        assert_close(key, &got.into_data().try_to_vec::<f32>().unwrap(), values);
    };
    let x = input_pattern(2, 2048, &device);
    let trace = atlas(&model).trace(x.clone());
    let stem = trace.stem.clone().slice([0..2, 0..32, 0..8]);
    let (values, _) = &expected["stem_rows_0_8"];
    assert_close("stem_rows_0_8", &stem.into_data().try_to_vec::<f32>().unwrap(), values);
    assert_eq!(trace.stages.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 2]);
    check("stage0_scale0_windows_0_8", trace.stages[0][0].clone().slice([0..8]));
    check("stage0_scale1", trace.stages[0][1].clone());
    check("stage0_scale2", trace.stages[0][2].clone());
    check("stage1_scale1", trace.stages[1][0].clone());
    check("stage1_scale2", trace.stages[1][1].clone());
    let logits = model.model.forward(x.clone());
    let (values, _) = &expected["logits"];
    assert_close("logits", &logits.into_data().try_to_vec::<f32>().unwrap(), values);
    // the corrected pairing really is another model here: in the first row of fine windows,
    // columns 4..8 lie under coarse window 1 but the raster order gives them window 0
    let mut spatial = LoadedModel::build("atlas_r2048", ModelConfig::Atlas(config.with_parent_mapping(ParentMapping::Spatial)), &device).unwrap();
    spatial.load_weights(&dir.join("weights.safetensors")).unwrap();
    let tokens = atlas(&spatial).trace(x).stages[0][0].clone().slice([0..8]).into_data().try_to_vec::<f32>().unwrap();
    let (official, _) = &expected["stage0_scale0_windows_0_8"];
    let per_window = 256 * 32;
    let diff = |w: usize| (w * per_window..(w + 1) * per_window).fold(0.0f32, |m, i| m.max((tokens[i] - official[i]).abs()));
    let scale = official.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for w in 0..4 {
        assert!(diff(w) <= 1e-4 * scale, "window {w} reads the same coarse window either way");
    }
    for w in 4..8 {
        // ten times the parity tolerance: far above float noise (about 1e-6 here)
        assert!(diff(w) > 1e-3 * scale, "window {w}: spatial pairing changed it by only {:e}", diff(w));
    }
}

#[test]
fn a_training_step_moves_every_parameter() {
    // 512 px: two scales (2x2 windows and one 8x8 window) in stage 0, one in stage 1
    let config = AtlasConfig::new([512, 512], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(3).with_drop_path_rate(0.0);
    common::assert_train_step_moves_every_parameter(ModelConfig::Atlas(config), 2);
}

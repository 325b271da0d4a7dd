//! Parity with timm: fixtures written by `scripts/export_timm_fixtures.py` (timm itself, small
//! configs) must be reproduced within 1e-4 relative (max-abs error over max-abs value).

use std::path::{Path, PathBuf};

use burn::prelude::*;
use kiln_models::swin::SwinConfig;
use kiln_models::{Backbone, LoadedModel, ModelConfig, ModelError};

mod common;
use common::{assert_close, read_tensors};

fn fixture(case: &str) -> PathBuf {
    common::fixture("swin", case)
}

fn config(case: &str, key: &str) -> SwinConfig {
    let json = common::fixture_config("swin", case);
    let m = &json[key];
    let list = |k: &str| m[k].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>();
    let size = m["img_size"].as_u64().unwrap() as usize;
    SwinConfig::new([size, size], m["embed_dim"].as_u64().unwrap() as usize, list("depths"), list("num_heads"), m["window_size"].as_u64().unwrap() as usize)
        .with_patch_size(m["patch_size"].as_u64().unwrap() as usize)
        .with_in_chans(m["in_chans"].as_u64().unwrap() as usize)
        .with_num_classes(m["num_classes"].as_u64().unwrap() as usize)
        .with_mlp_ratio(m["mlp_ratio"].as_f64().unwrap())
}

/// A Swin built from the fixture's configuration `config_key`, with random weights.
fn swin_case(case: &str, config_key: &str) -> common::Case {
    common::Case::new("swin", case, ModelConfig::Swin(config(case, config_key)))
}

#[test]
fn shifted_windows_match_timm_from_safetensors() {
    let mut case = swin_case("shift", "model");
    let report = case.model.load_weights(&fixture("shift").join("weights.safetensors")).unwrap();
    assert!(!report.head_reinitialized && report.resized.is_empty());
    case.check_logits();
    case.check_features();
}

#[test]
fn pth_state_dict_loads_the_same() {
    let mut case = swin_case("shift", "model");
    case.model.load_weights(&fixture("shift").join("weights.pth")).unwrap();
    case.check_logits();
}

#[test]
fn recomputed_buffers_in_old_checkpoints_are_skipped() {
    let mut case = swin_case("shift", "model");
    let report = case.model.load_weights(&fixture("shift").join("weights_with_buffers.safetensors")).unwrap();
    assert!(report.skipped.iter().any(|k| k.ends_with("relative_position_index")), "{:?}", report.skipped);
    case.check_logits();
}

#[test]
fn padded_windows_and_odd_merging_match_timm() {
    let mut case = swin_case("pad", "model");
    case.model.load_weights(&fixture("pad").join("weights.safetensors")).unwrap();
    case.check_logits();
    case.check_features();
}

#[test]
fn window_change_resizes_tables_as_timm() {
    let mut case = swin_case("resize", "target_model");
    let report = case.model.load_weights(&fixture("resize").join("weights.safetensors")).unwrap();
    assert_eq!(report.resized.len(), 4, "{report:?}");
    case.check_logits();
    case.check_features();
}

#[test]
fn table_resize_alone_matches_timm() {
    let source = read_tensors(&fixture("resize").join("weights.safetensors"));
    for (key, (expected, shape)) in read_tensors(&fixture("resize").join("resized_tables.safetensors")) {
        let (table, src_shape) = &source[&key];
        let got = kiln_nn::resize_relative_position_table(table, src_shape[1], [3, 3], [6, 6]);
        assert_eq!(shape, vec![121, src_shape[1]]);
        assert_close(&key, &got, &expected);
    }
}

#[test]
fn another_class_count_reinitialises_only_the_head() {
    let device = Device::flex();
    let config = config("shift", "model").with_num_classes(5);
    let mut model = LoadedModel::build("swin_test", ModelConfig::Swin(config), &device).unwrap();
    let report = model.load_weights(&fixture("shift").join("weights.safetensors")).unwrap();
    assert!(report.head_reinitialized);
    let mut case = swin_case("shift", "model");
    case.model = model;
    case.check_features();
    assert_eq!(case.model.model.forward(case.input()).dims(), [2, 5]);
}

#[test]
fn a_checkpoint_of_another_size_is_refused_with_its_keys() {
    let device = Device::flex();
    let mut model = LoadedModel::build("swin_test", ModelConfig::Swin(config("pad", "model")), &device).unwrap();
    let err = model.load_weights(&fixture("shift").join("weights.safetensors")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::CheckpointMismatch { .. }), "{text}");
    assert!(text.contains("patch_embed.proj.weight is [16, 3, 2, 2] in the checkpoint, [16, 1, 2, 2] in the model"), "{text}");
    assert!(text.contains("missing: layers.2."), "{text}");
}

#[test]
fn missing_and_corrupt_files_name_the_path() {
    let device = Device::flex();
    let mut model = LoadedModel::build("swin_test", ModelConfig::Swin(config("shift", "model")), &device).unwrap();
    let err = model.load_weights(Path::new("/nonexistent/w.safetensors")).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/w.safetensors"), "{err}");
    let dir = std::env::temp_dir().join(format!("kiln-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("w.safetensors");
    std::fs::write(&bad, b"this is not a checkpoint at all").unwrap();
    let err = model.load_weights(&bad).unwrap_err().to_string();
    assert!(err.contains("w.safetensors") && err.contains("cannot read"), "{err}");
}

#[test]
fn native_checkpoint_round_trips_with_its_config() {
    let mut case = swin_case("shift", "model");
    case.model.load_weights(&fixture("shift").join("weights.safetensors")).unwrap();
    case.check_native_round_trip();
}

#[test]
fn a_training_step_moves_every_parameter() {
    // no stochastic depth: a block dropped for the whole batch would get no gradient
    let config = SwinConfig::new([16, 16], 8, vec![1, 2], vec![1, 2], 4).with_patch_size(2).with_num_classes(3).with_drop_path_rate(0.0);
    common::assert_train_step_moves_every_parameter(ModelConfig::Swin(config), 2);
}

//! Parity with timm's DaViT: fixtures written by `scripts/export_timm_fixtures.py` (timm itself,
//! small configs) must be reproduced within 1e-4 relative (max-abs error over max-abs value),
//! for the logits, the stem and every stage map.
//!
//! Cases: `tiny` (every map tiled by window 2) and `pad` (54×40 input, window 4: odd maps,
//! window padding at every stage, a 2×2 map padded to one 4×4 window, odd downsampling).

use std::path::PathBuf;

use burn::prelude::*;
use kiln_models::davit::DaVitConfig;
use kiln_models::{Backbone, LoadedModel, Model, ModelConfig, ModelError};

mod common;
use common::read_tensors;

fn fixture(case: &str) -> PathBuf {
    common::fixture("davit", case)
}

/// The fixture's `DaVit(**model)` kwargs as a [`DaVitConfig`]; the knobs Kiln does not expose
/// must be at timm's defaults, which is what Kiln builds.
fn config(case: &str) -> DaVitConfig {
    let json = common::fixture_config("davit", case);
    let m = &json["model"];
    for (key, default) in [
        ("attn_types", serde_json::json!(["spatial", "channel"])),
        ("ffn", serde_json::json!(true)),
        ("cpe_act", serde_json::json!(false)),
        ("down_kernel_size", serde_json::json!(2)),
        ("channel_attn_v2", serde_json::json!(false)),
        ("norm_layer", serde_json::json!("layernorm2d")),
        ("norm_layer_cl", serde_json::json!("layernorm")),
        ("global_pool", serde_json::json!("avg")),
        ("head_norm_first", serde_json::json!(false)),
    ] {
        assert_eq!(m[key], default, "{case}: {key}");
    }
    let list = |k: &str| list_of(&m[k]);
    let size = list_of(&json["input_size"]);
    DaVitConfig::new(list("embed_dims"), list("depths"), list("num_heads"))
        .with_window_size(m["window_size"].as_u64().unwrap() as usize)
        .with_img_size([size[0], size[1]])
        .with_in_chans(m["in_chans"].as_u64().unwrap() as usize)
        .with_num_classes(m["num_classes"].as_u64().unwrap() as usize)
        .with_mlp_ratio(m["mlp_ratio"].as_f64().unwrap())
        .with_qkv_bias(m["qkv_bias"].as_bool().unwrap())
        .with_norm_eps(m["norm_eps"].as_f64().unwrap())
}

fn list_of(v: &serde_json::Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect()
}

/// A DaViT built from the fixture's configuration, with random weights.
fn davit_case(case: &str) -> common::Case {
    common::Case::new("davit", case, ModelConfig::DaVit(config(case)))
}

fn check_stem(case: &common::Case) {
    let Model::DaVit(model) = &case.model.model else { panic!("not a DaViT") };
    case.check("stem", model.forward_stem(case.input()));
}

fn loaded(case: &str) -> common::Case {
    let mut davit = davit_case(case);
    let report = davit.model.load_weights(&fixture(case).join("weights.safetensors")).unwrap();
    assert!(!report.head_reinitialized && report.resized.is_empty() && report.skipped.is_empty(), "{report:?}");
    davit
}

#[test]
fn tiled_windows_match_timm() {
    let case = loaded("tiny");
    check_stem(&case);
    case.check_features();
    case.check_logits();
}

#[test]
fn padded_windows_and_odd_downsampling_match_timm() {
    let case = loaded("pad");
    assert_eq!(case.io["input"].1, vec![2, 3, 54, 40], "the case this test is about");
    check_stem(&case);
    case.check_features();
    case.check_logits();
}

#[test]
fn another_class_count_reinitialises_only_the_classifier() {
    let device = Device::flex();
    let weights = fixture("tiny").join("weights.safetensors");
    let mut model = LoadedModel::build("davit_test", ModelConfig::DaVit(config("tiny").with_num_classes(7)), &device).unwrap();
    let report = model.load_weights(&weights).unwrap();
    assert!(report.head_reinitialized);
    // everything but head.fc.{weight, bias} came from the checkpoint, head.norm included
    assert_eq!(report.loaded, read_tensors(&weights).len() - 2);
    let mut case = davit_case("tiny");
    case.model = model;
    check_stem(&case);
    case.check_features();
    assert_eq!(case.model.model.forward(case.input()).dims(), [2, 7]);
}

#[test]
fn a_checkpoint_of_another_shape_is_refused_with_its_keys() {
    let device = Device::flex();
    // pad has one dual block in stage 2, tiny two: tiny's second block is unexpected
    let mut model = LoadedModel::build("davit_test", ModelConfig::DaVit(config("pad")), &device).unwrap();
    let err = model.load_weights(&fixture("tiny").join("weights.safetensors")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::CheckpointMismatch { .. }), "{text}");
    assert!(text.contains("unexpected: stages.2.blocks.1.0.attn.proj.bias [24]"), "{text}");

    let mut model = LoadedModel::build("davit_test", ModelConfig::DaVit(config("tiny").with_in_chans(1)), &device).unwrap();
    let text = model.load_weights(&fixture("tiny").join("weights.safetensors")).unwrap_err().to_string();
    assert!(text.contains("stem.conv.weight is [12, 3, 7, 7] in the checkpoint, [12, 1, 7, 7] in the model"), "{text}");
}

#[test]
fn native_checkpoint_round_trips_with_its_config() {
    let mut case = loaded("pad");
    case.check_native_round_trip();
}

#[test]
fn a_training_step_moves_every_parameter() {
    // 18x14 input: the 5x4 stem map is padded to windows of 3, downsampled with an odd height
    // to 3x2, padded again
    let config = DaVitConfig::new(vec![8, 12], vec![1, 1], vec![2, 3])
        .with_window_size(3)
        .with_img_size([18, 14])
        .with_num_classes(3)
        .with_drop_path_rate(0.0); // a branch dropped for the whole batch would get no gradient
    common::assert_train_step_moves_every_parameter(ModelConfig::DaVit(config), 2);
}

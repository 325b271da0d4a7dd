//! Parity with timm's MaxViT (`*_tf_*` settings): fixtures written by
//! `scripts/export_timm_fixtures.py --only maxvit` (timm itself, small configs, random weights
//! and BatchNorm statistics, eval mode) must be reproduced within 1e-4 relative (max-abs error
//! over max-abs value), for the logits, the stem and every stage.
//!
//! Cases: `tiny` (partition size derived from img_size, identity and pool-only shortcuts),
//! `rect` (different, non-square window and grid: catches height/width swaps in tables and
//! partitions), `odd` (odd map sizes: TF 'SAME' pads 1/1 there and the pooled shortcut counts
//! its zero padding); and `resize`: the tiny checkpoint loaded into the model built at 80 px
//! (partition 5 instead of 4), its `[heads, 2h−1, 2w−1]` tables resized as timm's
//! `checkpoint_filter_fn` resizes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use burn::tensor::DType;
use kiln_models::maxvit::MaxVitConfig;
use kiln_models::{Backbone, LoadedModel, Model, ModelConfig, ModelError};

mod common;
use common::{Case, assert_close, read_tensors};

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/maxvit").join(case)
}

/// The Kiln configuration of a fixture, read from the full timm `MaxxVitCfg` in its config.json.
/// Settings Kiln does not build (anything but the TF MaxViT layout) fail here, loudly.
fn config(case: &str) -> MaxVitConfig {
    let text = std::fs::read_to_string(fixture(case).join("config.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let m = &json["model"];
    let (cfg, conv, tr) = (&m["cfg"], &m["cfg"]["conv_cfg"], &m["cfg"]["transformer_cfg"]);
    let usizes = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect::<Vec<_>>();
    let pair = |v: &serde_json::Value| v.as_array().map(|_| <[usize; 2]>::try_from(usizes(v)).unwrap());
    let f = |v: &serde_json::Value| v.as_f64().unwrap();
    for (what, got, want) in [
        ("block_type", cfg["block_type"].as_array().unwrap().iter().all(|t| t == "M"), true),
        ("stem_bias", cfg["stem_bias"].as_bool().unwrap(), true),
        ("conv act", conv["act_layer"] == "gelu_tanh", true),
        ("conv padding", conv["padding"] == "same", true),
        ("conv stride_mode", conv["stride_mode"] == "dw", true),
        ("conv pre_norm_act", conv["pre_norm_act"].as_bool().unwrap(), false),
        ("conv attn_early", conv["attn_early"].as_bool().unwrap(), false),
        ("conv expand_output", conv["expand_output"].as_bool().unwrap(), true),
        ("transformer head_first", tr["head_first"].as_bool().unwrap(), false),
        ("transformer rel_pos_type", tr["rel_pos_type"] == "bias_tf", true),
        ("transformer act", tr["act_layer"] == "gelu_tanh", true),
        ("global_pool", m["global_pool"] == "avg", true),
    ] {
        assert_eq!(got, want, "fixture {case}: {what} is not the TF MaxViT setting Kiln builds");
    }
    MaxVitConfig::new(usizes(&m["img_size"]).try_into().unwrap(), usizes(&cfg["embed_dim"]), usizes(&cfg["depths"]), cfg["stem_width"].as_u64().unwrap() as usize)
        .with_in_chans(m["in_chans"].as_u64().unwrap() as usize)
        .with_num_classes(m["num_classes"].as_u64().unwrap() as usize)
        .with_head_hidden_size(cfg["head_hidden_size"].as_u64().map(|v| v as usize))
        .with_dim_head(tr["dim_head"].as_u64().unwrap() as usize)
        .with_partition_ratio(tr["partition_ratio"].as_u64().unwrap() as usize)
        .with_window_size(pair(&tr["window_size"]))
        .with_grid_size(pair(&tr["grid_size"]))
        .with_mlp_ratio(f(&tr["expand_ratio"]))
        .with_conv_expand_ratio(f(&conv["expand_ratio"]))
        .with_se_ratio(f(&conv["attn_ratio"]))
        .with_conv_norm_eps(f(&conv["norm_eps"]))
        .with_transformer_norm_eps(f(&tr["norm_eps"]))
        .with_drop_rate(f(&m["drop_rate"]))
        .with_drop_path_rate(f(&m["drop_path_rate"]))
}

fn maxvit_case(case: &str, config: MaxVitConfig) -> Case {
    Case::new("maxvit", case, ModelConfig::MaxVit(config))
}

/// Loads the case's timm weights and checks the logits, the stem and every stage.
fn check_case(case: &str) {
    let mut c = maxvit_case(case, config(case));
    let report = c.model.load_weights(&fixture(case).join("weights.safetensors")).unwrap();
    assert!(!report.head_reinitialized && report.resized.is_empty(), "{report:?}");
    assert!(report.skipped.iter().all(|k| k.ends_with("num_batches_tracked")), "{:?}", report.skipped);
    let Model::MaxVit(maxvit) = &c.model.model else { panic!("built a MaxViT") };
    c.check("stem", maxvit.forward_stem(c.input()));
    c.check_features();
    c.check_logits();
}

#[test]
fn derived_partitions_and_identity_shortcuts_match_timm() {
    let cfg = config("tiny");
    assert_eq!(cfg.partition_sizes(), ([4, 4], [4, 4]), "64 / partition_ratio 16");
    check_case("tiny");
}

#[test]
fn rectangular_window_and_grid_match_timm() {
    assert_eq!(config("rect").partition_sizes(), ([3, 2], [2, 4]));
    check_case("rect");
}

#[test]
fn odd_sizes_pad_as_tf_same_and_match_timm() {
    check_case("odd");
}

/// Every tensor the model holds, under timm's names (the PyTorch adapter renames
/// gamma/beta and transposes linear weights back).
fn model_tensors(model: &Model) -> BTreeMap<String, Vec<f32>> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), true)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            (name, bridge::into_data(t).unwrap().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap())
        })
        .collect()
}

#[test]
fn partition_change_resizes_tables_as_timm() {
    let cfg = config("resize");
    assert_eq!(cfg.partition_sizes(), ([5, 5], [5, 5]), "80 / partition_ratio 16");
    let mut case = maxvit_case("resize", cfg);
    let report = case.model.load_weights(&fixture("tiny").join("weights.safetensors")).unwrap();
    assert_eq!(report.resized.len(), 6, "{report:?}");
    assert!(!report.head_reinitialized);
    let ours = model_tensors(&case.model.model);
    for (key, (expected, shape)) in read_tensors(&fixture("resize").join("resized_tables.safetensors")) {
        assert_eq!(shape, vec![shape[0], 9, 9], "{key}");
        assert!(report.resized.contains(&key), "{key} not reported as resized");
        assert_close(&key, &ours[&key], &expected);
    }
    let Model::MaxVit(maxvit) = &case.model.model else { panic!("built a MaxViT") };
    case.check("stem", maxvit.forward_stem(case.input()));
    case.check_features();
    case.check_logits();
}

#[test]
fn non_square_tables_resize_each_axis_as_timm() {
    // rect's block (3, 2) and grid (2, 4) tables into window (5, 4) / grid (3, 7): 5x3 -> 9x7 and
    // 3x7 -> 5x13; a height/width mix-up in the [heads, 2h−1, 2w−1] path cannot pass this
    let cfg = MaxVitConfig { img_size: [120, 224], ..config("rect") }
        .with_window_size(Some([5, 4]))
        .with_grid_size(Some([3, 7]));
    let device = Device::flex();
    let mut model = LoadedModel::build("maxvit_test", ModelConfig::MaxVit(cfg), &device).unwrap();
    let report = model.load_weights(&fixture("rect").join("weights.safetensors")).unwrap();
    assert_eq!(report.resized.len(), 4, "{report:?}");
    let ours = model_tensors(&model.model);
    for (key, (expected, shape)) in read_tensors(&fixture("resize").join("resized_tables_rect.safetensors")) {
        let plane = if key.contains("attn_grid") { [5, 13] } else { [9, 7] };
        assert_eq!(shape[1..], plane, "{key}");
        assert_close(&key, &ours[&key], &expected);
    }
}

#[test]
fn every_checkpoint_tensor_lands_unchanged_including_batch_norm_buffers() {
    let mut case = maxvit_case("rect", config("rect"));
    let checkpoint = read_tensors(&fixture("rect").join("weights.safetensors"));
    let report = case.model.load_weights(&fixture("rect").join("weights.safetensors")).unwrap();
    assert_eq!(report.skipped.len(), 7, "the 7 BatchNorms' num_batches_tracked: {:?}", report.skipped);
    assert_eq!(report.loaded, checkpoint.len() - 7);
    let ours = model_tensors(&case.model.model);
    assert_eq!(ours.len(), report.loaded, "one model tensor per loaded key");
    for (key, (values, _)) in checkpoint.iter().filter(|(k, _)| !k.ends_with("num_batches_tracked")) {
        assert_eq!(&ours[key], values, "{key}");
    }
    // the fixture's running statistics are not the fresh (0, 1): loading them is what matters
    let (mean, var) = (&ours["stem.norm1.running_mean"], &ours["stem.norm1.running_var"]);
    assert!(mean.iter().any(|&v| v != 0.0) && var.iter().any(|&v| v != 1.0));
}

#[test]
fn another_class_count_reinitialises_only_the_classifier() {
    let mut case = maxvit_case("tiny", config("tiny").with_num_classes(5));
    let report = case.model.load_weights(&fixture("tiny").join("weights.safetensors")).unwrap();
    assert!(report.head_reinitialized);
    case.check_features();
    assert_eq!(case.model.model.forward(case.input()).dims(), [2, 5]);
    // the head's norm and pre-logits layer do not depend on the class count: they load
    let checkpoint = read_tensors(&fixture("tiny").join("weights.safetensors"));
    let ours = model_tensors(&case.model.model);
    for key in ["head.norm.weight", "head.norm.bias", "head.pre_logits.fc.weight", "head.pre_logits.fc.bias"] {
        assert_eq!(ours[key], checkpoint[key].0, "{key}");
    }
    assert_eq!(ours["head.fc.weight"].len(), 5 * 32);
}

#[test]
fn a_checkpoint_of_another_size_is_refused_with_its_keys() {
    let device = Device::flex();
    // one input channel and two stage-0 blocks where the rect checkpoint has three and one
    let config = config("tiny").with_in_chans(1);
    let mut model = LoadedModel::build("maxvit_test", ModelConfig::MaxVit(config), &device).unwrap();
    let err = model.load_weights(&fixture("rect").join("weights.safetensors")).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::CheckpointMismatch { .. }), "{text}");
    assert!(text.contains("stem.conv1.weight is [16, 3, 3, 3] in the checkpoint, [16, 1, 3, 3] in the model"), "{text}");
    assert!(text.contains("missing: stages.0.blocks.1."), "{text}");
}

#[test]
fn native_checkpoint_round_trips_with_config_and_batch_norm_statistics() {
    let mut case = maxvit_case("odd", config("odd"));
    case.model.load_weights(&fixture("odd").join("weights.safetensors")).unwrap();
    case.check_native_round_trip();
}

#[test]
fn a_training_step_moves_every_parameter() {
    let config = MaxVitConfig::new([32, 32], vec![8, 16], vec![1, 1], 8)
        .with_head_hidden_size(Some(16))
        .with_dim_head(8)
        .with_partition_ratio(16)
        .with_num_classes(3)
        .with_drop_path_rate(0.0); // a branch dropped for the whole batch would get no gradient
    common::assert_train_step_moves_every_parameter(ModelConfig::MaxVit(config), 2);
}

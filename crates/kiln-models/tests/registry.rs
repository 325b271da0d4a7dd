//! Every registered variant against timm's own numbers (`tests/fixtures/registry.json`,
//! written by `scripts/export_timm_fixtures.py`): exact parameter count and eval defaults.

use burn::prelude::*;
use kiln_models::{LoadedModel, registry};

/// Families timm has no port of, checked against their official code instead (Atlas:
/// `tests/atlas_parity.rs`).
const NOT_IN_TIMM: [&str; 1] = ["atlas"];

#[test]
fn every_variant_has_timms_parameter_count_and_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/registry.json");
    let dump: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let timm = dump["models"].as_array().unwrap();
    let device = Device::flex();
    for entry in registry() {
        if NOT_IN_TIMM.contains(&entry.family()) {
            continue;
        }
        let reference = timm
            .iter()
            .find(|m| m["name"] == entry.name)
            .unwrap_or_else(|| panic!("{} is not in timm's registry dump", entry.name));
        let model = LoadedModel::build(entry.name, (entry.config)(), &device).unwrap();
        assert_eq!(model.num_params() as u64, reference["params"].as_u64().unwrap(), "{} parameters", entry.name);
        let p = &entry.pretrained;
        let ours = serde_json::json!({
            "input_size": p.input_size, "crop_pct": p.crop_pct, "interpolation": p.interpolation,
            "mean": p.mean, "std": p.std, "num_classes": p.num_classes, "crop_mode": p.crop_mode,
        });
        for key in ["input_size", "crop_pct", "interpolation", "num_classes", "crop_mode"] {
            assert_eq!(ours[key], reference[key], "{} {key}", entry.name);
        }
        for key in ["mean", "std"] {
            for (a, b) in ours[key].as_array().unwrap().iter().zip(reference[key].as_array().unwrap()) {
                assert!((a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-9, "{} {key}", entry.name);
            }
        }
    }
}

/// Layer-wise lr decay groups every parameter as timm's `group_matcher` does: the scales of
/// `tests/fixtures/layer_decay.json`, written by timm through `scripts/export_layer_decay.py`.
#[test]
fn layer_decay_scales_match_timms_param_groups() {
    use burn::store::ModuleSnapshot;
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/layer_decay.json");
    let dump: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let decay = dump["layer_decay"].as_f64().unwrap();
    for (name, timm) in dump["models"].as_object().unwrap() {
        let timm = timm.as_object().unwrap();
        let model = LoadedModel::build(name, (kiln_models::find(name).unwrap().config)(), &Device::flex()).unwrap();
        let paths: Vec<String> = model
            .model
            .collect(None, None, true)
            .into_iter()
            .map(|t| t.name)
            .filter(|n| !kiln_models::backbone::is_buffer_field(n.rsplit('.').next().unwrap()))
            .collect();
        let scales = model.config.layer_decay_scales(&paths, decay);
        assert_eq!(paths.len(), timm.len(), "{name}: learnable parameters");
        for (path, scale) in paths.iter().zip(scales) {
            // burn names norm parameters gamma/beta where PyTorch says weight/bias
            let timm_path = path.replace(".gamma", ".weight").replace(".beta", ".bias");
            let expected = timm.get(&timm_path).unwrap_or_else(|| panic!("{name}: {timm_path} not in timm")).as_f64().unwrap();
            assert!((scale - expected).abs() <= 1e-12 * expected, "{name} {path}: {scale} vs timm {expected}");
        }
    }
}

//! Segmentation heads and segmenters: parity of UPerNet / FCN / MLP heads with a PyTorch
//! rebuild of mmseg's (fixtures by `scripts/export_upernet_fixture.py`), the shape and
//! gradient contract over every family, native checkpoints and backbone initialisation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use burn::tensor::Distribution;
use kiln_models::atlas::AtlasConfig;
use kiln_models::checkpoint::{self, KeyMap};
use kiln_models::davit::DaVitConfig;
use kiln_models::maxvit::MaxVitConfig;
use kiln_models::swin::SwinConfig;
use kiln_models::heads::mmseg_key;
use kiln_models::{AuxHeadConfig, HeadKind, LoadedModel, LoadedSegmenter, ModelConfig, SegmenterConfig};

mod common;
use common::{assert_close, parameters, read_tensors};

fn fixture(name: &str) -> PathBuf {
    common::fixture("upernet", name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-segment-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// A Swin whose maps have the fixture's widths (8, 16, 32, 64 at strides 4 to 32).
fn swin(size: usize) -> ModelConfig {
    ModelConfig::Swin(SwinConfig::new([size, size], 8, vec![1, 1, 1, 1], vec![1, 1, 2, 2], 2).with_num_classes(3))
}

/// The fixture's heads on that Swin.
fn fixture_config(head: HeadKind) -> SegmenterConfig {
    SegmenterConfig::new(swin(32), 5)
        .with_head(head)
        .with_channels(8)
        .with_aux(AuxHeadConfig::new().with_channels(8))
}

const MMSEG: KeyMap = KeyMap { rename: mmseg_key, classifier_prefix: "" };

fn tensor(io: &BTreeMap<String, (Vec<f32>, Vec<usize>)>, key: &str, device: &Device) -> Tensor<4> {
    let (values, shape) = &io[key];
    Tensor::<1>::from_data(TensorData::new(values.clone(), [values.len()]), device).reshape([shape[0], shape[1], shape[2], shape[3]])
}

fn check(io: &BTreeMap<String, (Vec<f32>, Vec<usize>)>, key: &str, got: Tensor<4>) {
    assert_eq!(&got.dims().to_vec(), &io[key].1, "{key} shape");
    assert_close(key, &got.into_data().try_to_vec::<f32>().unwrap(), &io[key].0);
}

#[test]
fn upernet_fcn_and_upsampling_match_pytorch() {
    let device = Device::flex();
    let mut seg = LoadedSegmenter::build("upernet_test", fixture_config(HeadKind::UperNet), &device).unwrap();
    let report = checkpoint::load_foreign(&mut seg.model.decode_head, "uper", &fixture("uper.safetensors"), &MMSEG).unwrap();
    assert!(report.skipped.iter().all(|k| k.ends_with("num_batches_tracked")) && !report.skipped.is_empty());
    let aux = seg.model.auxiliary_head.as_mut().unwrap();
    assert_eq!(aux.in_index(), 2);
    checkpoint::load_foreign(aux, "fcn", &fixture("fcn.safetensors"), &MMSEG).unwrap();
    let config: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(fixture("config.json")).unwrap()).unwrap();
    for case in ["even", "odd"] {
        let io = read_tensors(&fixture(&format!("{case}.safetensors")));
        let features: Vec<Tensor<4>> = (0..4).map(|i| tensor(&io, &format!("features.{i}"), &device)).collect();
        let size = &config["cases"][case]["size"];
        let size = [size[0].as_u64().unwrap() as usize, size[1].as_u64().unwrap() as usize];
        let kiln_models::DecodeHead::UperNet(uper) = &seg.model.decode_head else { panic!("UPerNet") };
        check(&io, "uper_raw", uper.forward(&features));
        let out = seg.model.forward_heads(&features, size);
        check(&io, "uper", out.logits);
        check(&io, "fcn", out.aux_logits.unwrap());
    }
}

#[test]
fn mlp_head_matches_pytorch() {
    let device = Device::flex();
    let mut seg = LoadedSegmenter::build("mlp_test", fixture_config(HeadKind::Mlp), &device).unwrap();
    checkpoint::load_foreign(&mut seg.model.decode_head, "mlp", &fixture("mlp.safetensors"), &MMSEG).unwrap();
    for (case, size) in [("even", [32, 32]), ("odd", [23, 19])] {
        let io = read_tensors(&fixture(&format!("{case}.safetensors")));
        let features: Vec<Tensor<4>> = (0..4).map(|i| tensor(&io, &format!("features.{i}"), &device)).collect();
        check(&io, "mlp", seg.model.forward_heads(&features, size).logits);
    }
}

/// Pixel-wise cross-entropy of `[batch, classes, H, W]` logits.
fn pixel_ce(logits: Tensor<4>, targets: Tensor<1, Int>) -> Tensor<1> {
    let [b, c, h, w] = logits.dims();
    let flat = logits.permute([0, 2, 3, 1]).reshape([b * h * w, c]);
    CrossEntropyLossConfig::new().init(&flat.device()).forward(flat, targets)
}

#[test]
fn every_family_segments_at_input_size_and_trains_every_head() {
    // No stochastic depth: a branch dropped for both images gets a zero gradient, and AdamW
    // moves its weights (weight decay) but not its zero-initialised biases. And every stage's map
    // at least 2x2: at 1x1 with batch 2 the head's BatchNorm sees two values per channel,
    // normalises them to ±1 whatever they are, and the gradient into that stage is rounding noise.
    let ModelConfig::Swin(swin_64) = swin(64) else { unreachable!() };
    let families = [
        (ModelConfig::Swin(swin_64.with_drop_path_rate(0.0)), 64),
        (ModelConfig::DaVit(DaVitConfig::new(vec![8, 12, 16], vec![1, 1, 1], vec![2, 3, 4]).with_window_size(3).with_img_size([32, 32]).with_num_classes(3).with_drop_path_rate(0.0)), 32),
        (ModelConfig::MaxVit(MaxVitConfig::new([64, 64], vec![16, 32], vec![1, 1], 16).with_dim_head(8).with_partition_ratio(16).with_num_classes(3).with_drop_path_rate(0.0)), 64),
        (ModelConfig::Atlas(AtlasConfig::new([64, 64], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(3).with_drop_path_rate(0.0)), 64),
    ];
    let device = Device::flex().autodiff();
    device.seed(7);
    for (backbone, size) in families {
        let family = backbone.family();
        let config = SegmenterConfig::new(backbone, 4).with_channels(8).with_pool_scales(vec![1, 2]).with_aux(AuxHeadConfig::new().with_channels(4));
        let model = config.init(&device).unwrap();
        let batch = 2;
        let x = Tensor::<4>::random([batch, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
        let out = model.forward_train(x.clone());
        assert_eq!(out.logits.dims(), [batch, 4, size, size], "{family}");
        let aux = out.aux_logits.expect("an auxiliary head");
        assert_eq!(aux.dims(), [batch, 4, size, size], "{family}");
        let targets = Tensor::<1>::random([batch * size * size], Distribution::Uniform(0.0, 4.0), &device).int();
        let loss = pixel_ce(out.logits, targets.clone()) + pixel_ce(aux, targets).mul_scalar(config.aux.weight);
        let before = parameters(&model);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let model = AdamWConfig::new().init().step(1e-3, model, grads);
        let after = parameters(&model);
        let unchanged: Vec<&String> = before.iter().filter(|(k, v)| &after[*k] == *v).map(|(k, _)| k).collect();
        // the backbone's classifier (and its final norm, which only the classifier reads) is unused
        let classifier = format!("backbone.{}", config.backbone.key_map().classifier_prefix);
        let unused = |k: &str| k.starts_with(&classifier) || k.starts_with("backbone.head.") || k.starts_with("backbone.norm.") || k.starts_with("backbone.fc_norm.") || k.starts_with("backbone.readout_norm.");
        let untrained: Vec<&&String> = unchanged.iter().filter(|k| !unused(k)).collect();
        assert!(untrained.is_empty(), "{family}: no gradient reached {untrained:?}");
        for prefix in ["decode_head.", "auxiliary_head.", "backbone."] {
            assert!(after.keys().any(|k| k.starts_with(prefix) && !unchanged.contains(&k)), "{family}: {prefix}");
        }
    }
}

fn fixed_input(device: &Device) -> Tensor<4> {
    Tensor::<1, Int>::arange(0..3 * 32 * 32, device).float().reshape([1, 3, 32, 32]).div_scalar(1000.0).sin()
}

#[test]
fn native_segmenter_checkpoint_round_trips_bit_for_bit() {
    let device = Device::flex();
    let seg = LoadedSegmenter::build("upernet_swin", fixture_config(HeadKind::UperNet), &device).unwrap();
    let path = temp("segmenter.bpk");
    seg.save(&path).unwrap();
    let back = LoadedSegmenter::from_native(&path, &device).unwrap();
    assert_eq!(back.name, "upernet_swin");
    assert_eq!(back.config.to_json(), seg.config.to_json());
    assert_eq!(back.num_params(), seg.num_params());
    let x = fixed_input(&device);
    let (a, b) = (seg.model.forward(x.clone()), back.model.forward(x));
    assert_eq!(a.into_data().try_to_vec::<f32>().unwrap(), b.into_data().try_to_vec::<f32>().unwrap());
    // a classification loader refuses it with a pointer to the right one
    let err = LoadedModel::from_native(&path, &device).unwrap_err().to_string();
    assert!(err.contains("segmenter"), "{err}");
}

#[test]
fn backbone_loads_from_a_classification_checkpoint_and_heads_stay_new() {
    let device = Device::flex();
    let classifier = LoadedModel::build("swin_cls", swin(32), &device).unwrap();
    let path = temp("classifier.bpk");
    classifier.save(&path).unwrap();

    let mut seg = LoadedSegmenter::build("upernet_swin", fixture_config(HeadKind::UperNet), &device).unwrap();
    let heads_before: BTreeMap<String, Vec<f32>> = parameters(&seg.model).into_iter().filter(|(k, _)| !k.starts_with("backbone.")).collect();
    let report = seg.load_backbone(&path).unwrap();

    let source = parameters(&classifier.model);
    let loaded = parameters(&seg.model);
    let mut compared = 0;
    for (key, value) in &source {
        if key.starts_with("head.") {
            continue;
        }
        assert_eq!(&loaded[&format!("backbone.{key}")], value, "{key}");
        compared += 1;
    }
    assert!(compared > 10);
    for (key, value) in &heads_before {
        assert_eq!(&loaded[key], value, "{key} changed");
    }
    assert!(report.ignored.iter().all(|k| k.starts_with("backbone.head.")) && !report.ignored.is_empty(), "{report:?}");
    assert!(report.fresh.iter().any(|k| k.starts_with("decode_head.psp_modules.")), "{report:?}");
    assert!(report.fresh.iter().any(|k| k.starts_with("auxiliary_head.conv_seg.")), "{report:?}");
    assert!(report.applied.iter().all(|k| k.starts_with("backbone.")));
    let summary = report.summary();
    assert!(summary.contains("new: ") && summary.contains("decode_head.* (") && summary.contains("auxiliary_head.* ("), "{summary}");

    // a whole segmenter checkpoint loads everything
    let seg_path = temp("for_backbone.bpk");
    seg.save(&seg_path).unwrap();
    let mut other = LoadedSegmenter::build("upernet_swin", fixture_config(HeadKind::UperNet), &device).unwrap();
    let report = other.load_backbone(&seg_path).unwrap();
    assert!(report.fresh.iter().all(|k| k.starts_with("backbone.head.")), "{report:?}");
    let x = fixed_input(&device);
    assert_eq!(
        other.model.forward(x.clone()).into_data().try_to_vec::<f32>().unwrap(),
        seg.model.forward(x).into_data().try_to_vec::<f32>().unwrap()
    );
}

#[test]
fn backbone_loads_from_a_timm_state_dict() {
    // the Swin parity fixture: a timm state dict of a 2-stage Swin, 10 classes
    let backbone = SwinConfig::new([32, 32], 16, vec![2, 2], vec![2, 4], 4).with_patch_size(2).with_num_classes(10);
    let config = SegmenterConfig::new(ModelConfig::Swin(backbone), 3).with_channels(8).with_pool_scales(vec![1, 2]);
    let mut seg = LoadedSegmenter::build("upernet_swin", config, &Device::flex()).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/swin/shift/weights.safetensors");
    let report = seg.load_backbone(&path).unwrap();
    assert_eq!(report.ignored.len(), 2, "head.fc weight and bias: {report:?}");
    assert!(report.fresh.iter().any(|k| k.starts_with("decode_head.")));
    let timm = read_tensors(&path);
    let loaded = parameters(&seg.model);
    assert_eq!(loaded["backbone.patch_embed.proj.bias"], timm["patch_embed.proj.bias"].0);
}

#[test]
fn mis_shaped_backbone_checkpoint_is_an_error_naming_the_key() {
    let device = Device::flex();
    let wider = SwinConfig::new([32, 32], 8, vec![1, 1, 1, 1], vec![1, 1, 2, 2], 2).with_num_classes(3).with_mlp_ratio(2.0);
    let path = temp("wider.bpk");
    LoadedModel::build("swin_other", ModelConfig::Swin(wider), &device).unwrap().save(&path).unwrap();
    let mut seg = LoadedSegmenter::build("upernet_swin", fixture_config(HeadKind::UperNet), &device).unwrap();
    let before = parameters(&seg.model);
    let err = seg.load_backbone(&path).unwrap_err().to_string();
    assert!(err.contains("backbone.layers.0.blocks.0.mlp.fc1.weight is [8, 16] in the checkpoint, [8, 32] in the model"), "{err}");
    assert_eq!(parameters(&seg.model), before, "nothing loaded");
}

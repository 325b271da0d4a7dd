//! Segmentation through the shared training loop, on fashion-scenes written by the test: a
//! training step on every backbone family, iteration-based resume that ends bit-identical to an
//! uninterrupted run, `kiln eval` agreeing with the logged evaluation, and a bad mask stopping
//! the run with its path.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::DType;
use kiln_data::{FashionScenesConfig, generate_fashion_scenes};
use kiln_models::segment::LoadedSegmenter;
use kiln_train::tasks::segment::Segmentation;
use kiln_train::train::{TrainError, TrainOptions, train};

/// burn's random generator is per process: runs that train must not interleave.
fn serial() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-seg-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// 12 training and 4 validation 32x32 scenes of one or two articles.
fn scenes(dir: &Path) -> PathBuf {
    let root = dir.join("scenes");
    let mut config = FashionScenesConfig::new(&root, repo_root().join("datasets/fashion-mnist"));
    (config.train, config.val, config.canvas, config.items, config.scale_range) = (12, 4, 32, [1, 2], [1.0, 1.1]);
    generate_fashion_scenes(&config).unwrap();
    root
}

/// A tiny backbone of each family, as `[model]` TOML for 32x32 gray scenes.
fn family(name: &str) -> String {
    match name {
        "swin" => "name = \"swin_tiny_patch4_window7_224\"\nimg_size = 32\n[model.arch]\nembed_dim = 8\ndepths = [1, 1]\nnum_heads = [1, 2]\nwindow_size = 4\npatch_size = 2\n",
        "davit" => "name = \"davit_tiny\"\nimg_size = 32\n[model.arch]\nembed_dims = [8, 16]\ndepths = [1, 1]\nnum_heads = [1, 2]\nwindow_size = 4\n",
        "maxvit" => "name = \"maxvit_tiny_tf_224\"\nimg_size = 32\n[model.arch]\nembed_dim = [16, 32]\ndepths = [1, 1]\nstem_width = 8\ndim_head = 8\npartition_ratio = 16\n",
        "atlas" => "name = \"atlas_base_1024\"\nimg_size = 64\n[model.arch]\nembed_dim = 16\nnum_heads = 2\ndepths = [1, 1]\nstem_dim = 8\nwindow_size = 2\npool_size = 2\n",
        other => panic!("no family {other}"),
    }
    .to_string()
}

fn experiment(dir: &Path, data: &Path, model: &str, extra: &str) -> PathBuf {
    let size = if model.contains("atlas") { 64 } else { 32 };
    let text = format!(
        r#"
task = "segmentation"
[model]
in_chans = 1
drop_path_rate = 0.1
{model}
[data]
dataset = "ade20k"
root = "{root}"
batch_size = 4
val_batch_size = 2
workers = 2
[augmentation]
mean = [0.2860]
std = [0.3530]
[segmentation]
channels = 8
aux_channels = 8
pool_scales = [1, 2]
scale = [{size}, {size}]
ratio_range = [0.75, 1.25]
test_scale = [{size}, {size}]
[optim]
name = "adamw"
lr = 1e-3
weight_decay = 0.01
[schedule]
name = "poly"
iters = 6
warmup_iters = 2
[eval]
interval_iters = 3
[checkpoint]
interval_iters = 3
[logging]
interval_iters = 1
output_dir = "{out}"
{extra}
"#,
        root = data.display(),
        out = dir.join("run").display(),
    );
    let path = dir.join("experiment.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn quiet() -> TrainOptions {
    TrainOptions { quiet: true, ..TrainOptions::default() }
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let net = LoadedSegmenter::from_native(path, &Device::flex()).unwrap();
    net.model
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), bridge::into_data(t).unwrap().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap()))
        .collect()
}

fn records(run: &Path, kind: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["kind"] == kind)
        .collect()
}

#[test]
fn every_backbone_family_takes_a_segmentation_training_step() {
    let _turn = serial();
    let dir = scratch("families");
    let data = scenes(&dir);
    for name in ["swin", "davit", "maxvit", "atlas"] {
        let run_dir = dir.join(name);
        std::fs::create_dir_all(&run_dir).unwrap();
        let path = experiment(&run_dir, &data, &family(name), "");
        let cfg = kiln_train::config::load(&path, &["schedule.iters=1".into(), "schedule.warmup_iters=0".into()])
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // the network as the run initialises it (same seed, same order of draws)
        let device = Device::flex().autodiff();
        device.seed(cfg.experiment.train.seed);
        let (_, initial) = Segmentation::build(&cfg, &device, kiln_data::Shard::WHOLE, true).unwrap();
        let initial: Vec<(String, Vec<f32>)> = initial
            .model
            .collect(None, None, true)
            .into_iter()
            .map(|t| (t.name.clone(), bridge::into_data(t).unwrap().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap()))
            .collect();

        let summary = train(&cfg, &quiet()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary.steps, 1, "{name}");
        let eval = summary.last_eval.unwrap_or_else(|| panic!("{name}: the last step is evaluated"));
        for metric in ["mIoU", "aAcc", "mAcc"] {
            let value = eval.metric(metric).unwrap();
            assert!((0.0..=1.0).contains(&value), "{name}: {metric} {value}");
        }
        let trained = tensors(&run_dir.join("run/checkpoints/last/model.bpk"));
        let moved = |prefix: &str| {
            trained.iter().zip(&initial).any(|((n, a), (m, b))| {
                assert_eq!(n, m);
                n.starts_with(prefix) && !n.contains("running_") && a != b
            })
        };
        for part in ["backbone.", "decode_head.", "auxiliary_head."] {
            assert!(moved(part), "{name}: no parameter under {part} moved in the step");
        }
    }
}

#[test]
fn an_interrupted_iteration_run_resumes_to_the_same_weights_and_metrics() {
    let _turn = serial();
    let dir = scratch("resume");
    let data = scenes(&dir);
    // with and without an EMA of the weights, evaluated beside the model
    for (name, sets) in [("plain", vec![]), ("ema", vec!["train.ema=true", "train.ema_decay=0.9", "eval.ema=true"])] {
        let sets: Vec<String> = sets.into_iter().map(String::from).collect();
        let straight_dir = dir.join(name).join("straight");
        let interrupted_dir = dir.join(name).join("interrupted");
        std::fs::create_dir_all(&straight_dir).unwrap();
        std::fs::create_dir_all(&interrupted_dir).unwrap();
        // 12 images in batches of 4: 3 steps per epoch, so the run spans two epochs and the stop
        // at step 2 lands mid-epoch
        let straight = kiln_train::config::load(experiment(&straight_dir, &data, &family("swin"), ""), &sets).unwrap();
        let summary = train(&straight, &quiet()).unwrap();
        assert_eq!(summary.steps, 6);
        let interrupted = kiln_train::config::load(experiment(&interrupted_dir, &data, &family("swin"), ""), &sets).unwrap();
        let stopped = train(&interrupted, &TrainOptions { max_steps: Some(2), ..quiet() }).unwrap();
        assert_eq!(stopped.steps, 2);
        let resumed = train(&interrupted, &TrainOptions { resume: true, ..quiet() }).unwrap();
        assert_eq!(resumed.steps, 6);

        let mut files = vec!["model.bpk"];
        if name == "ema" {
            files.push("ema.bpk");
        }
        for file in files {
            let a = tensors(&straight_dir.join("run/checkpoints/last").join(file));
            let b = tensors(&interrupted_dir.join("run/checkpoints/last").join(file));
            assert_eq!(a.len(), b.len());
            for ((tensor, x), (_, y)) in a.iter().zip(&b) {
                assert_eq!(x, y, "{name}: {file}: {tensor} differs after resume");
            }
        }
        let strip = |mut r: serde_json::Value| {
            r.as_object_mut().unwrap().remove("time");
            r.as_object_mut().unwrap().remove("images_per_s");
            r
        };
        let evals = |run: &Path| records(run, "eval").into_iter().map(strip).collect::<Vec<_>>();
        let logged = evals(&straight_dir.join("run"));
        assert_eq!(logged.len(), 2, "evaluated at steps 3 and 6");
        if name == "ema" {
            assert!(logged.iter().all(|r| r["mIoU_ema"].is_number()), "{logged:?}");
        }
        assert_eq!(logged, evals(&interrupted_dir.join("run")), "{name}");
        let losses = |run: &Path| records(run, "train").into_iter().map(strip).collect::<Vec<_>>();
        assert_eq!(losses(&straight_dir.join("run")), losses(&interrupted_dir.join("run")), "{name}");
    }
}

#[test]
fn kiln_eval_of_the_saved_weights_equals_the_logged_evaluation() {
    let _turn = serial();
    let dir = scratch("eval");
    let data = scenes(&dir);
    let cfg = kiln_train::config::load(experiment(&dir, &data, &family("swin"), ""), &[]).unwrap();
    train(&cfg, &quiet()).unwrap();
    let logged = records(&dir.join("run"), "eval").pop().unwrap();
    let (eval, classes) = kiln_train::tasks::segment::evaluate_weights(&cfg, &dir.join("run/checkpoints/last/model.bpk")).unwrap();
    assert_eq!(classes.len(), 11);
    assert_eq!(logged["mIoU"].as_f64().unwrap(), eval.metrics.miou);
    assert_eq!(logged["aAcc"].as_f64().unwrap(), eval.metrics.aacc);
    assert_eq!(logged["mAcc"].as_f64().unwrap(), eval.metrics.macc);
    let csv = std::fs::read_to_string(dir.join("run/metrics.csv")).unwrap();
    assert!(csv.starts_with("kind,epoch,step,loss,lr,images_per_s,mIoU,aAcc,mAcc,time\n"), "{csv}");
}

#[test]
fn a_bad_mask_stops_training_with_its_path() {
    let _turn = serial();
    let dir = scratch("bad-mask");
    let data = scenes(&dir);
    let bad = data.join("annotations/training/00003.png");
    assert!(bad.exists(), "the generator names files 00000.png, ...");
    // label 40 is neither one of the 11 classes nor the ignore index
    image::GrayImage::from_pixel(32, 32, image::Luma([40])).save(&bad).unwrap();
    let cfg = kiln_train::config::load(experiment(&dir, &data, &family("swin"), ""), &[]).unwrap();
    let err = train(&cfg, &quiet()).unwrap_err();
    assert!(matches!(err, TrainError::Data(_)), "{err:?}");
    assert!(err.to_string().contains("00003.png"), "{err}");
}

/// Segmentation evaluation sharded over three ranks (threads meeting as `Devices`, on the CPU)
/// gives the mIoU, aAcc, mAcc and loss one process gives, bit for bit.
#[test]
fn sharded_segmentation_evaluation_equals_one_process_bit_for_bit() {
    use kiln_data::Shard;

    let _turn = serial();
    let dir = scratch("sharded-eval");
    let data = scenes(&dir);
    let cfg = kiln_train::config::load(experiment(&dir, &data, &family("swin"), ""), &[]).unwrap();
    let device = Device::flex().autodiff();
    device.seed(cfg.experiment.train.seed);
    let (whole, net) = Segmentation::build(&cfg, &device, Shard::WHOLE, true).unwrap();
    let ranks = 3;
    let shards: Vec<Segmentation> =
        (0..ranks).map(|index| Segmentation::build(&cfg, &device, Shard { index, count: ranks }, true).unwrap().0).collect();
    let alone = common::assert_sharded_evaluation_is_exact(&whole, &shards, &net.model, &device);
    assert!(alone.metric("mIoU").is_some());
}

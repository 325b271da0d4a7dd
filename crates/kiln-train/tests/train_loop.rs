//! The training loop end to end on an ImageFolder tree the test writes: a run directory with
//! metrics and checkpoints, resume that ends bit-identical to an uninterrupted run, and a
//! divergent run that stops without touching the last good checkpoint.

mod common;

use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::{ModuleSnapshot, bridge};
use burn::tensor::DType;
use kiln_models::LoadedModel;
use kiln_train::train::{TrainError, TrainOptions, train};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two classes that differ in colour layout (left half bright vs right half bright), 12 train
/// and 4 val images each, 20x20 PNGs.
fn image_folder(root: &Path) {
    for (split, count) in [("train", 12), ("val", 4)] {
        for (class, bright_left) in [("left", true), ("right", false)] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..count {
                let img = image::RgbImage::from_fn(20, 20, |x, y| {
                    let on = (x < 10) == bright_left;
                    let v = if on { 200 + (i * 3 + y) as u8 % 50 } else { 20 + (x * 2) as u8 };
                    image::Rgb([v, v / 2, 255 - v])
                });
                img.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

fn experiment(dir: &Path, data: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[model]
name = "swin_tiny_patch4_window7_224"
img_size = 16
drop_path_rate = 0.1
[model.arch]
embed_dim = 8
depths = [2, 1]
num_heads = [1, 2]
window_size = 4
patch_size = 2
[data]
dataset = "image_folder"
root = "{root}"
train_split = "train"
val_split = "val"
batch_size = 4
workers = 2
[augmentation]
rrc_scale = [0.5, 1.0]
hflip = 0.5
crop_pct = 1.0
[optim]
name = "adamw"
lr = 1e-3
weight_decay = 0.05
[schedule]
name = "cosine"
epochs = 2
warmup_epochs = 1
[logging]
interval_iters = 1
output_dir = "{out}"
{extra}
"#,
        root = data.display(),
        out = dir.join("run").display()
    );
    let path = dir.join("exp.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn weights(dir: &Path, file: &str) -> Vec<(String, Vec<f32>)> {
    let model = LoadedModel::from_native(&dir.join("checkpoints/last").join(file), &Device::flex()).unwrap();
    model
        .model
        .collect(None, None, true)
        .into_iter()
        .map(|t| (t.name.clone(), bridge::into_data(t).unwrap().convert_dtype(DType::F32).try_to_vec::<f32>().unwrap()))
        .collect()
}

fn eval_lines(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "eval")
        .collect()
}

/// burn's random generator is per process, not per run: runs in parallel test threads would
/// draw from each other's streams (drop-path masks, lazy initialisation), so these tests take
/// turns, as separate `kiln train` processes naturally do.
static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A scratch directory with the image folder in `data/` and the experiment (plus `extra`) loaded.
fn prepared(name: &str, extra: &str) -> (PathBuf, kiln_train::config::ResolvedConfig) {
    let dir = scratch(name);
    image_folder(&dir.join("data"));
    let cfg = kiln_train::config::load(experiment(&dir, &dir.join("data"), extra), &[]).unwrap();
    (dir, cfg)
}

fn quiet() -> TrainOptions {
    TrainOptions { quiet: true, ..TrainOptions::default() }
}

#[test]
fn a_run_writes_metrics_and_checkpoints() {
    let _turn = serial();
    let (dir, cfg) = prepared("run", "");
    let summary = train(&cfg, &quiet()).unwrap();
    let run = dir.join("run");
    assert_eq!(summary.steps, 2 * (24 / 4));
    for file in ["config.toml", "metrics.jsonl", "metrics.csv", "checkpoints/last/model.bpk", "checkpoints/last/optimizer.bin", "checkpoints/best/model.bpk", "loss.png", "accuracy.png", "lr.png"] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    let evals = eval_lines(&run);
    assert_eq!(evals.len(), 2);
    for e in &evals {
        let (top1, top5) = (e["top1"].as_f64().unwrap(), e["top5"].as_f64().unwrap());
        assert!((0.0..=1.0).contains(&top1) && top5 == 1.0, "two classes: top-5 is everything: {e}");
    }
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("kind,epoch,step,loss,lr,images_per_s,top1,top5,time\n"));
    assert_eq!(csv.lines().count(), 1 + 12 + 2);
}

/// Trains `extra` straight through and with an interruption after 4 steps, then compares the
/// final weights (and EMA weights, when kept) and the evaluations of the two runs.
fn assert_resume_is_exact(name: &str, extra: &str, checkpoint_files: &[&str]) {
    let dir = scratch(name);
    image_folder(&dir.join("data"));
    let straight = dir.join("straight");
    let interrupted = dir.join("interrupted");
    std::fs::create_dir_all(&straight).unwrap();
    std::fs::create_dir_all(&interrupted).unwrap();
    let cfg = kiln_train::config::load(experiment(&straight, &dir.join("data"), extra), &[]).unwrap();
    train(&cfg, &quiet()).unwrap();
    let cfg = kiln_train::config::load(experiment(&interrupted, &dir.join("data"), extra), &[]).unwrap();
    let stopped = train(&cfg, &TrainOptions { max_steps: Some(4), ..quiet() }).unwrap();
    assert_eq!(stopped.steps, 4);
    assert!(stopped.last_eval.is_none());
    train(&cfg, &TrainOptions { resume: true, ..quiet() }).unwrap();
    for file in checkpoint_files {
        let (a, b) = (weights(&straight.join("run"), file), weights(&interrupted.join("run"), file));
        assert_eq!(a.len(), b.len());
        for ((name, x), (_, y)) in a.iter().zip(&b) {
            assert_eq!(x, y, "{file}: {name} differs after resume");
        }
    }
    let strip = |v: Vec<serde_json::Value>| v.into_iter().map(|mut e| { e["time"] = 0.into(); e }).collect::<Vec<_>>();
    assert_eq!(strip(eval_lines(&straight.join("run"))), strip(eval_lines(&interrupted.join("run"))));
}

#[test]
fn resumed_run_ends_identical_to_an_uninterrupted_one() {
    let _turn = serial();
    assert_resume_is_exact("resume", "", &["model.bpk"]);
}

#[test]
fn the_weight_average_is_evaluated_saved_and_resumed_exactly() {
    let _turn = serial();
    assert_resume_is_exact("ema", "[train]\nema = true\nema_decay = 0.9\n[eval]\nema = true\n", &["model.bpk", "ema.bpk"]);
    let run = std::env::temp_dir().join(format!("kiln-train-{}-ema/straight/run", std::process::id()));
    let (model, ema) = (weights(&run, "model.bpk"), weights(&run, "ema.bpk"));
    assert!(model.iter().zip(&ema).any(|((_, m), (_, e))| m != e), "the average lags the weights");
    for e in eval_lines(&run) {
        for key in ["top1_ema", "top5_ema", "loss_ema"] {
            assert!(e[key].is_number(), "{key} missing from {e}");
        }
    }
}

#[test]
fn divergence_stops_with_a_message_and_keeps_the_last_checkpoint() {
    let _turn = serial();
    let (dir, cfg) = prepared("diverge", "");
    train(&cfg, &TrainOptions { max_steps: Some(2), ..quiet() }).unwrap();
    let before = std::fs::read(dir.join("run/checkpoints/last/model.bpk")).unwrap();
    let cfg = kiln_train::config::load(experiment(&dir, &dir.join("data"), ""), &["optim.lr=1e30".into(), "schedule.warmup_epochs=0".into()]).unwrap();
    let err = train(&cfg, &TrainOptions { resume: true, ..quiet() }).unwrap_err();
    assert!(matches!(err, TrainError::Diverged { .. }), "{err}");
    assert!(err.to_string().contains("diverged") && err.to_string().contains("checkpoints/last"), "{err}");
    assert_eq!(std::fs::read(dir.join("run/checkpoints/last/model.bpk")).unwrap(), before);
}

#[test]
fn a_stop_at_an_epoch_boundary_still_evaluates_that_epoch() {
    let _turn = serial();
    let (dir, cfg) = prepared("boundary", "");
    // 24 images / batch 4 = 6 steps per epoch
    let stopped = train(&cfg, &TrainOptions { max_steps: Some(6), ..quiet() }).unwrap();
    assert_eq!(stopped.steps, 6);
    assert!(stopped.last_eval.is_some(), "epoch 0 ended, so it was evaluated");
    assert_eq!(eval_lines(&dir.join("run")).len(), 1);
    train(&cfg, &TrainOptions { resume: true, ..quiet() }).unwrap();
    assert_eq!(eval_lines(&dir.join("run")).len(), 2, "each epoch evaluated once");
}

/// Fine-tunes the swin `shift` fixture timm wrote (img 32, patch 2, embed 16, depths 2/2, heads
/// 2/4, window 4, 10 classes) on the two-class folder for one epoch: the trained weights and the
/// timm patch-embedding weight they started from.
fn fine_tune(name: &str, overrides: &[&str]) -> (Vec<(String, Vec<f32>)>, Vec<f32>) {
    let dir = scratch(name);
    image_folder(&dir.join("data"));
    let timm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/swin/shift/weights.safetensors");
    let extra = format!("[model.arch]\nembed_dim = 16\ndepths = [2, 2]\nnum_heads = [2, 4]\n");
    let path = experiment(&dir, &dir.join("data"), "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("img_size = 16", &format!("img_size = 32\npretrained = \"{}\"", timm.display()))
        .replace("[model.arch]\nembed_dim = 8\ndepths = [2, 1]\nnum_heads = [1, 2]\n", &extra);
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["schedule.warmup_epochs=0".to_string(), "schedule.epochs=1".to_string()];
    all.extend(overrides.iter().map(|o| o.to_string()));
    let cfg = kiln_train::config::load(&path, &all).unwrap();
    train(&cfg, &quiet()).unwrap();
    let reference = kiln_models::checkpoint::read_state_dict(&timm).unwrap();
    let patch = bridge::into_data(reference["patch_embed.proj.weight"].clone()).unwrap().try_to_vec::<f32>().unwrap();
    (weights(&dir.join("run"), "model.bpk"), patch)
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()))
}

#[test]
fn fine_tuning_starts_from_a_timm_state_dict_with_a_new_head() {
    let _turn = serial();
    // lr 1e-9: an epoch moves each weight by ~1e-8, while a random initialisation would be
    // ~1e-2 away from the checkpoint
    let (trained, expected) = fine_tune("finetune", &["optim.lr=1e-9"]);
    let patch = &trained.iter().find(|(n, _)| n == "patch_embed.proj.weight").unwrap().1;
    let worst = max_difference(patch, &expected);
    assert!(worst < 1e-6, "the backbone comes from the timm checkpoint (max difference {worst})");
    let head = &trained.iter().find(|(n, _)| n.starts_with("head.fc") && n.ends_with("bias")).unwrap().1;
    assert_eq!(head.len(), 2, "a new two-class head");
}

#[test]
fn a_frozen_backbone_stays_as_loaded_while_the_head_trains() {
    let _turn = serial();
    // lr 1e-2 moves every trained weight well past 1e-6 in an epoch
    let (trained, expected) = fine_tune("frozen", &["optim.lr=1e-2", "model.freeze_backbone=true"]);
    let patch = &trained.iter().find(|(n, _)| n == "patch_embed.proj.weight").unwrap().1;
    assert_eq!(max_difference(patch, &expected), 0.0, "the frozen backbone is exactly timm's");
    let (moved, _) = fine_tune("unfrozen", &["optim.lr=1e-2"]);
    let patch = &moved.iter().find(|(n, _)| n == "patch_embed.proj.weight").unwrap().1;
    assert!(max_difference(patch, &expected) > 1e-4, "without freezing, the same run moves the backbone");
}

/// What training logs is what `kiln eval` measures on the saved weights, bit for bit: the
/// evaluation runs wholly off the autodiff device (the swin masks and position indices
/// included), as a model read from a checkpoint does.
#[test]
fn logged_evaluations_equal_kiln_eval_of_the_saved_weights() {
    let _turn = serial();
    let (dir, cfg) = prepared("logged", "[train]\nema = true\nema_decay = 0.9\n[eval]\nema = true\n");
    train(&cfg, &quiet()).unwrap();
    let run = dir.join("run");
    let logged = eval_lines(&run).pop().unwrap();
    for (file, suffix) in [("model.bpk", ""), ("ema.bpk", "_ema")] {
        let (eval, _) = kiln_train::tasks::classify::evaluate_weights(&cfg, &run.join("checkpoints/last").join(file)).unwrap();
        assert_eq!(logged[format!("loss{suffix}")].as_f64().unwrap(), eval.loss, "{file}");
        assert_eq!(logged[format!("top1{suffix}")].as_f64().unwrap(), eval.top1, "{file}");
    }
}

#[test]
fn evaluation_follows_its_interval_and_the_last_epoch_is_always_evaluated() {
    let _turn = serial();
    let dir = scratch("interval");
    image_folder(&dir.join("data"));
    let path = experiment(&dir, &dir.join("data"), "[eval]\ninterval_epochs = 2\n");
    let cfg = kiln_train::config::load(path, &["schedule.epochs=3".into()]).unwrap();
    train(&cfg, &quiet()).unwrap();
    let epochs: Vec<u64> = eval_lines(&dir.join("run")).iter().map(|e| e["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, [1, 2], "after the second epoch, then the last");
}

/// Evaluation sharded over three ranks (threads meeting as `Devices`, on the CPU) gives the
/// metrics one process gives, bit for bit; with two validation batches, one rank has none.
#[test]
fn sharded_evaluation_equals_one_process_bit_for_bit() {
    use kiln_data::Shard;
    use kiln_train::tasks::classify::Classification;

    let _turn = serial();
    let (_dir, cfg) = prepared("sharded-eval", "");
    let device = Device::flex().autodiff();
    device.seed(cfg.experiment.train.seed);
    let (whole, net) = Classification::build(&cfg, &device, Shard::WHOLE, true).unwrap();
    let ranks = 3;
    let shards: Vec<Classification> =
        (0..ranks).map(|index| Classification::build(&cfg, &device, Shard { index, count: ranks }, true).unwrap().0).collect();
    let alone = common::assert_sharded_evaluation_is_exact(&whole, &shards, &net.model, &device);
    assert!(alone.metric("loss").unwrap() > 0.0);
}

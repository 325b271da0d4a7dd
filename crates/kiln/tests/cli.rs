//! The `kiln` command as a user runs it: output formats, and bad input answered with one clear
//! line and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("kiln runs")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails unless the command failed cleanly: non-zero exit, an `error:` line naming `needle`,
/// and no panic.
fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert!(stderr.contains(needle), "stderr does not mention {needle:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn models_json_lists_every_swin_with_timms_parameter_count() {
    let out = kiln(&["models", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("one JSON array");
    let timm: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../kiln-models/tests/fixtures/registry.json")).unwrap(),
    )
    .unwrap();
    let fields = ["name", "family", "params", "input_size", "crop_pct", "interpolation", "mean", "std", "num_classes"];
    for row in &rows {
        let keys: Vec<&str> = row.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), fields.len(), "{keys:?}");
        assert!(fields.iter().all(|f| keys.contains(f)), "{keys:?}");
    }
    let swins: Vec<&serde_json::Value> = rows.iter().filter(|r| r["family"] == "swin").collect();
    assert_eq!(swins.len(), 6);
    for row in swins {
        let reference = timm["models"].as_array().unwrap().iter().find(|m| m["name"] == row["name"]).unwrap();
        assert_eq!(row["params"], reference["params"], "{}", row["name"]);
    }
    let tiny = rows.iter().find(|r| r["name"] == "swin_tiny_patch4_window7_224").unwrap();
    assert_eq!(tiny["params"], 28_288_354);
}

#[test]
fn models_json_lists_atlas_with_the_official_used_parameter_count() {
    let out = kiln(&["models", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("one JSON array");
    // parameters the official YalaLab/atlas forward uses at 1024 px (tests/atlas_parity.rs)
    for (name, params) in [("atlas_base_1024", 118_253_604u64), ("atlas_small_1024", 31_048_164)] {
        let row = rows.iter().find(|r| r["name"] == name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(row["family"], "atlas");
        assert_eq!(row["params"], params, "{name}");
        assert_eq!(row["num_classes"], 100);
        assert_eq!(row["input_size"], serde_json::json!([3, 1024, 1024]));
    }
}

#[test]
fn unknown_model_suggests_the_closest_names() {
    let out = kiln(&["predict", "--model", "swin_tiny_patch4_window7", "x.png"]);
    assert_clean_failure(&out, "did you mean swin_tiny_patch4_window7_224");
}

#[test]
fn unreadable_and_non_image_files_are_named() {
    let dir = scratch("bad-images");
    let text = dir.join("notes.png");
    std::fs::write(&text, "not an image").unwrap();
    let out = kiln(&["predict", "--model", "swin_tiny_patch4_window7_224", text.to_str().unwrap()]);
    assert_clean_failure(&out, "notes.png");
    let out = kiln(&["predict", "--model", "swin_tiny_patch4_window7_224", "/nonexistent/cat.jpg"]);
    assert_clean_failure(&out, "/nonexistent/cat.jpg");
}

#[test]
fn weights_of_another_size_name_the_mismatching_keys() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kiln-models/tests/fixtures/swin/shift/weights.safetensors");
    let dir = scratch("mismatch");
    let image = dir.join("img.png");
    image::RgbImage::new(8, 8).save(&image).unwrap();
    let out = kiln(&["predict", "--model", "swin_tiny_patch4_window7_224", "--weights", weights.to_str().unwrap(), image.to_str().unwrap()]);
    assert_clean_failure(&out, "patch_embed.proj.weight is [16, 3, 2, 2] in the checkpoint, [96, 3, 4, 4] in the model");
}

#[test]
fn topk_beyond_the_class_count_is_refused() {
    let dir = scratch("topk");
    let image = dir.join("img.png");
    image::RgbImage::new(8, 8).save(&image).unwrap();
    let out = kiln(&["predict", "--model", "swin_tiny_patch4_window7_224", "--num-classes", "10", "--topk", "11", image.to_str().unwrap()]);
    assert_clean_failure(&out, "--topk 11");
}

#[test]
fn grayscale_rgba_and_16_bit_images_are_converted_and_json_is_one_line_each() {
    let dir = scratch("formats");
    let gray = dir.join("gray.png");
    let rgba = dir.join("rgba.png");
    let deep = dir.join("deep.png");
    image::GrayImage::from_fn(50, 40, |x, y| image::Luma([(x * 5 + y) as u8])).save(&gray).unwrap();
    image::RgbaImage::from_fn(40, 50, |x, y| image::Rgba([x as u8, y as u8, 7, 128])).save(&rgba).unwrap();
    image::ImageBuffer::<image::Rgb<u16>, Vec<u16>>::from_fn(33, 33, |x, y| image::Rgb([x as u16 * 1000, y as u16 * 900, 40000]))
        .save(&deep)
        .unwrap();
    let paths = [&gray, &rgba, &deep].map(|p| p.to_str().unwrap().to_string());
    let mut args = vec!["predict", "--model", "swin_tiny_patch4_window7_224", "--img-size", "64", "--topk", "3", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let out = kiln(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    for (line, path) in lines.iter().zip(&paths) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["image"], path.as_str());
        let top = v["top"].as_array().unwrap();
        assert_eq!(top.len(), 3);
        let logits: Vec<f64> = top.iter().map(|t| t["logit"].as_f64().unwrap()).collect();
        assert!(logits.windows(2).all(|w| w[0] >= w[1]), "sorted by logit");
        assert!(top.iter().all(|t| t["label"].is_string() && t["prob"].as_f64().unwrap() > 0.0));
    }
}

#[test]
fn davit_predicts_at_a_resolution_other_than_its_default() {
    // 256 is not 224: every stage map (64, 32, 16, 8) is padded to windows of 7 inside the model
    let dir = scratch("davit-256");
    let image = dir.join("img.png");
    image::RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8])).save(&image).unwrap();
    let out = kiln(&["predict", "--model", "davit_tiny", "--img-size", "256", "--topk", "2", "--json", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    assert_eq!(v["top"].as_array().unwrap().len(), 2);
}

#[test]
fn maxvit_predicts_at_an_overridden_size() {
    // 256 is not a registered size: the partition size follows it (256 / 32 = 8), as in timm
    let dir = scratch("maxvit");
    let image = dir.join("img.png");
    image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 90])).save(&image).unwrap();
    let out = kiln(&["predict", "--model", "maxvit_tiny_tf_224", "--img-size", "256", "--topk", "2", "--json", image.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!(v["top"].as_array().unwrap().len(), 2);
    // a size whose stage maps the partitions cannot divide is refused, not a panic
    let out = kiln(&["predict", "--model", "maxvit_tiny_tf_224", "--img-size", "200", image.to_str().unwrap()]);
    assert_clean_failure(&out, "img_size [200, 200]");
}

#[test]
fn an_image_folder_trains_and_evaluates_through_the_cli() {
    let dir = scratch("folder");
    for split in ["train", "val"] {
        for (class, shade) in [("dark", 40u8), ("light", 220u8)] {
            let folder = dir.join("data").join(split).join(class);
            std::fs::create_dir_all(&folder).unwrap();
            for i in 0..8u8 {
                image::RgbImage::from_fn(18, 18, |x, _| image::Rgb([shade.saturating_add(i), (x * 3) as u8, shade]))
                    .save(folder.join(format!("{i}.png")))
                    .unwrap();
            }
        }
    }
    let config = dir.join("exp.toml");
    let text = format!(
        "[model]\nname = \"swin_tiny_patch4_window7_224\"\nimg_size = 16\n[model.arch]\nembed_dim = 8\ndepths = [1, 1]\n\
         num_heads = [1, 2]\nwindow_size = 4\npatch_size = 2\n[data]\ndataset = \"image_folder\"\nroot = \"{}\"\n\
         train_split = \"train\"\nval_split = \"val\"\nbatch_size = 4\nworkers = 1\n[augmentation]\ncrop_pct = 1.0\n\
         [optim]\nlr = 1e-3\n[schedule]\nepochs = 1\nwarmup_epochs = 0\n",
        dir.join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let run = dir.join("run");
    let out = kiln(&["train", config.to_str().unwrap(), "--output-dir", run.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("top-1"));
    let best = run.join("checkpoints/best/model.bpk");
    let out = kiln(&["eval", config.to_str().unwrap(), "--weights", best.to_str().unwrap(), "--output-dir", dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("eval.json")).unwrap()).unwrap();
    let top1 = eval["top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&top1));
    assert_eq!(eval["per_class"].as_object().unwrap().len(), 2);
    assert_eq!(eval["confusion"].as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap()).map(|v| v.as_u64().unwrap()).sum::<u64>(), 16);
    assert!(image::open(dir.join("confusion.png")).is_ok());
    // the run's own last evaluation saw the same weights and data
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v["kind"] == "eval").collect();
    assert_eq!(logged.last().unwrap()["top1"].as_f64().unwrap(), top1);
}

#[test]
fn a_config_error_names_the_file_and_line() {
    let dir = scratch("bad-config");
    let config = dir.join("bad.toml");
    std::fs::write(&config, "[model]\nname = \"swin_tiny_patch4_window7_224\"\n[optim]\nlr = -1.0\n").unwrap();
    let out = kiln(&["train", config.to_str().unwrap(), "--dry-run"]);
    assert_clean_failure(&out, "bad.toml:4");
}

#[test]
fn bench_reports_training_and_inference_throughput_as_json() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../../configs/quickstart.toml");
    let out = kiln(&["bench", "--config", config, "--batch", "4", "--warmup", "1", "--steps", "2", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reports: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let modes: Vec<&str> = reports.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["train", "infer"]);
    for r in &reports {
        assert_eq!(r["model"], "swin_tiny_patch4_window7_224");
        assert_eq!(r["batch"], 4);
        assert_eq!(r["img_size"], serde_json::json!([32, 32]));
        assert_eq!(r["steps"], 2);
        let (median, min, max) = (r["step_ms_median"].as_f64().unwrap(), r["step_ms_min"].as_f64().unwrap(), r["step_ms_max"].as_f64().unwrap());
        assert!(0.0 < min && min <= median && median <= max, "{r}");
        let images_per_s = r["images_per_s"].as_f64().unwrap();
        assert!((images_per_s - 4.0 / (median / 1e3)).abs() < 1e-6 * images_per_s, "{r}");
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0, "{r}");
    }
}

#[test]
fn bench_of_an_unknown_model_suggests_names() {
    let out = kiln(&["bench", "--model", "swin_tiny_patch4_window7", "--steps", "1"]);
    assert_clean_failure(&out, "swin_tiny_patch4_window7_224");
}

#[test]
fn bench_times_the_experiments_data_loader_alone() {
    // the experiment's data root is relative to the repository, where users run kiln
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["bench", "--config", "configs/quickstart.toml", "--mode", "data", "--steps", "3", "--json"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_str(String::from_utf8(out.stdout).unwrap().trim()).unwrap();
    assert_eq!((r["mode"].as_str(), r["batch"].as_u64(), r["steps"].as_u64()), (Some("data"), Some(128), Some(3)));
    assert_eq!(r["img_size"], serde_json::json!([32, 32]), "Fashion-MNIST padded as the quickstart says");
    assert!(r["images_per_s"].as_f64().unwrap() > 0.0, "{r}");
    let out = kiln(&["bench", "--model", "swin_tiny_patch4_window7_224", "--mode", "data"]);
    assert_clean_failure(&out, "--config");
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn fashion_scenes_segmentation_trains_evaluates_and_predicts_through_the_cli() {
    let dir = scratch("segmentation");
    let scenes = dir.join("scenes");
    let _ = std::fs::remove_dir_all(&scenes);
    let fashion_mnist = repo().join("datasets/fashion-mnist");
    let out = kiln(&["data", "fashion-scenes", "--out", scenes.to_str().unwrap(), "--fashion-mnist", fashion_mnist.to_str().unwrap(), "--train", "8", "--val", "4"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Ankle boot"));
    assert_eq!(std::fs::read_dir(scenes.join("annotations/validation")).unwrap().count(), 4);

    let config = repo().join("configs/quickstart_seg.toml");
    let config = config.to_str().unwrap();
    let root = format!("data.root={:?}", scenes.display().to_string());
    let small = ["--set", &root, "--set", "schedule.iters=2", "--set", "schedule.warmup_iters=1", "--set", "data.batch_size=4", "--set", "data.val_batch_size=2"];
    let run = dir.join("run");
    let mut args = vec!["train", config, "--output-dir", run.to_str().unwrap()];
    args.extend(small);
    let out = kiln(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("mIoU"), "{}", String::from_utf8_lossy(&out.stdout));

    let weights = run.join("checkpoints/last/model.bpk");
    let eval_dir = dir.join("eval");
    let mut args = vec!["eval", config, "--weights", weights.to_str().unwrap(), "--output-dir", eval_dir.to_str().unwrap()];
    args.extend(&small[..2]);
    let out = kiln(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("mIoU") && printed.contains("Sneaker"), "a per-class table: {printed}");
    let eval: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(eval_dir.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["per_class"].as_array().unwrap().len(), 11);
    let miou = eval["mIoU"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou));
    let record: serde_json::Value = serde_json::from_str(std::fs::read_to_string(eval_dir.join("metrics.jsonl")).unwrap().lines().last().unwrap()).unwrap();
    assert_eq!((record["kind"].as_str(), record["mIoU"].as_f64()), (Some("eval"), Some(miou)));
    // the run's own last evaluation saw the same weights and data
    let logged: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).filter(|v: &serde_json::Value| v["kind"] == "eval").collect();
    assert_eq!(logged.last().unwrap()["mIoU"].as_f64().unwrap(), miou);

    let image = scenes.join("images/validation/00001.png");
    let predictions = dir.join("predictions");
    // without the data set the class list is unknown: refused, naming the missing file
    let out = kiln(&["predict", "--config", config, "--weights", weights.to_str().unwrap(), image.to_str().unwrap(), "--set", "data.root=\"nowhere\""]);
    assert_clean_failure(&out, "nowhere/classes.txt");
    let mut args = vec!["predict", "--config", config, "--weights", weights.to_str().unwrap(), "--output-dir", predictions.to_str().unwrap(), "--json"];
    args.extend(&small[..2]);
    args.push(image.to_str().unwrap());
    let out = kiln(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    let areas = summary["classes"].as_array().unwrap();
    let pixels: u64 = areas.iter().map(|a| a["pixels"].as_u64().unwrap()).sum();
    assert_eq!(pixels, 64 * 64, "every pixel gets a class");
    let mask = image::open(predictions.join("00001_mask.png")).unwrap().to_rgb8();
    let overlay = image::open(predictions.join("00001_overlay.png")).unwrap().to_rgb8();
    assert_eq!((mask.dimensions(), overlay.dimensions()), ((64, 64), (64, 64)));
    // the mask is drawn in the data set's palette, one colour per predicted class
    let palette: Vec<[u8; 3]> = std::fs::read_to_string(scenes.join("classes.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<u8> = l.split_whitespace().rev().take(3).map(|n| n.parse().unwrap()).collect();
            [v[2], v[1], v[0]]
        })
        .collect();
    let used: std::collections::BTreeSet<usize> = areas.iter().map(|a| a["index"].as_u64().unwrap() as usize).collect();
    assert!(mask.pixels().all(|p| used.iter().any(|&i| palette[i] == p.0)));
    assert!(predictions.join("00001.json").exists());

    // a segmenter's prediction needs a segmenter checkpoint
    let out = kiln(&["predict", "--config", config, image.to_str().unwrap()]);
    assert_clean_failure(&out, "--weights");
}

/// Started as one of several ranks by an MPI launcher, a kiln built without the `mpi` feature
/// refuses (each rank would train alone into the same run directory) and says how to rebuild.
#[cfg(not(feature = "mpi"))]
#[test]
fn ranks_started_by_a_launcher_need_the_mpi_feature() {
    let dir = scratch("no-mpi");
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["train", "configs/quickstart.toml", "--max-steps", "1", "--output-dir", dir.join("run").to_str().unwrap()])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .env("OMPI_COMM_WORLD_SIZE", "2")
        .output()
        .unwrap();
    assert_clean_failure(&out, "--features mpi");
    assert!(!dir.join("run/metrics.jsonl").exists(), "a refused rank wrote a log");
}

/// `--devices` lists the GPUs of one process's data-parallel ranks: CUDA devices only (burn's
/// collectives run on CUDA alone), and a kiln built without CUDA says how to get one.
#[test]
fn devices_must_be_cuda_gpus_of_a_cuda_build() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = |devices: &str| {
        let dir = scratch(&format!("devices-{}", devices.replace([',', ':'], "-")));
        Command::new(env!("CARGO_BIN_EXE_kiln"))
            .args(["train", "configs/quickstart.toml", "--max-steps", "1", "--devices", devices])
            .args(["--output-dir", dir.join("run").to_str().unwrap()])
            .current_dir(root)
            .output()
            .unwrap()
    };
    assert_clean_failure(&run("flex,flex"), "only CUDA has");
    assert_clean_failure(&run("cuda:0,cuda:0"), "names a device twice");
    if !cfg!(feature = "cuda") {
        assert_clean_failure(&run("cuda:0,cuda:1"), "--features cuda");
    }
}

/// `train.precision` takes f32 or bf16, and bf16 is refused on wgpu, whose shader language has
/// no bf16 type, before anything is written (training and the bench alike).
#[test]
fn precision_is_f32_or_bf16_and_bf16_is_refused_on_wgpu() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let train = |sets: &[&str]| {
        let dir = scratch(&format!("precision-{}", sets.join("-").replace(['=', '.'], "-")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_kiln"));
        command.args(["train", "configs/quickstart.toml", "--max-steps", "1", "--output-dir", dir.join("run").to_str().unwrap()]);
        for set in sets {
            command.args(["--set", set]);
        }
        (command.current_dir(root).output().unwrap(), dir)
    };
    let (out, dir) = train(&["train.precision=f16"]);
    assert_clean_failure(&out, "train.precision");
    assert!(String::from_utf8_lossy(&out.stderr).contains("bf16"), "the error lists what is accepted");
    let (out, dir_wgpu) = train(&["train.precision=bf16", "train.device=wgpu"]);
    assert_clean_failure(&out, "WGSL");
    for dir in [dir, dir_wgpu] {
        assert!(!dir.join("run").exists(), "a refused run wrote its directory");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["bench", "--model", "swin_tiny_patch4_window7_224", "--device", "wgpu", "--precision", "bf16"])
        .current_dir(root)
        .output()
        .unwrap();
    assert_clean_failure(&out, "WGSL");
}

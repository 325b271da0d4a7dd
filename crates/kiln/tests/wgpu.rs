//! The GPU path (`cargo test -p kiln --features wgpu`): a tiny model of every family gives on
//! wgpu the logits and the training gradients it gives on the CPU (burn-flex, Kiln's own
//! kernels), and a run starts from the same weights on either. Skipped, saying so, where
//! no wgpu adapter exists; on Debian, `apt-get install mesa-vulkan-drivers` gives the software
//! Vulkan driver (llvmpipe), which runs it.
#![cfg(feature = "wgpu")]

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{DeviceKind, Distribution};
use kiln_models::atlas::AtlasConfig;
use kiln_models::davit::DaVitConfig;
use kiln_models::maxvit::MaxVitConfig;
use kiln_models::swin::SwinConfig;
use kiln_models::{Backbone, ModelConfig};
use kiln_train::config::schema::Precision;

/// The default wgpu device, if one answers a first computation; otherwise says the test skips.
fn wgpu_device() -> Option<Device> {
    let device = std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        device
    })
    .ok();
    if device.is_none() {
        eprintln!("no wgpu adapter here (Debian: apt-get install mesa-vulkan-drivers): skipped");
    }
    device
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// A tiny model of every family, without dropout or stochastic depth (whose draws differ
/// between devices).
fn families() -> [ModelConfig; 4] {
    [
        ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 2], vec![1, 2], 4).with_patch_size(2).with_num_classes(3).with_drop_path_rate(0.0)),
        ModelConfig::DaVit(DaVitConfig::new(vec![8, 12], vec![1, 1], vec![2, 3]).with_window_size(3).with_img_size([18, 14]).with_num_classes(3)),
        ModelConfig::MaxVit(MaxVitConfig::new([32, 32], vec![8, 16], vec![1, 1], 8).with_dim_head(8).with_partition_ratio(16).with_num_classes(3)),
        ModelConfig::Atlas(AtlasConfig::new([64, 64], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(3).with_drop_path_rate(0.0)),
    ]
}

#[test]
fn every_family_gives_the_cpu_logits_on_wgpu() {
    let Some(gpu) = wgpu_device() else { return };
    let families = families();
    let cpu = Device::flex();
    for config in families {
        let family = config.family();
        let model = config.init(&cpu).unwrap();
        let [h, w] = config.img_size();
        let x = Tensor::<4>::random([2, config.in_chans(), h, w], Distribution::Normal(0.0, 1.0), &cpu);
        let want = values(model.forward(x.clone()));
        let got = values(model.to_device(&gpu).forward(Tensor::from_data(x.into_data(), &gpu)));
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let err = got.iter().zip(&want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs()));
        // the parity tests' bound: max-abs error within 1e-4 of the largest logit
        assert!(err <= 1e-4 * scale, "{family}: wgpu differs from the CPU by {err:e} (largest logit {scale})");
    }
}

/// Collects, per parameter, `(‖g_gpu − g_cpu‖, ‖g_cpu‖)`.
struct Compare<'a> {
    cpu: &'a GradientsParams,
    gpu: &'a GradientsParams,
    tensors: Vec<(f64, f64)>,
}

impl ModuleVisitor for Compare<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(want) = self.cpu.get::<D>(param.id) {
            let got = self.gpu.get::<D>(param.id).expect("the GPU step has a gradient wherever the CPU step has one");
            let (want, got) = (values(want), values(got));
            let diff: f64 = got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
            self.tensors.push((diff.sqrt(), norm.sqrt()));
        }
    }
}

/// One training step of `config` (the classification task's loss) on the CPU and on `gpu`:
/// the losses, and per parameter `(‖g_gpu − g_cpu‖, ‖g_cpu‖)`.
fn step_on_both(config: &ModelConfig, gpu: &Device) -> ((f32, f32), Vec<(f64, f64)>) {
    use kiln_data::{Batch, LoaderPosition};
    let (cpu, gpu) = (Device::flex().autodiff(), gpu.clone().autodiff());
    let exp = kiln_train::bench::default_experiment("swin_tiny_patch4_window7_224");
    let [h, w] = config.img_size();
    let shape = [2, config.in_chans(), h, w];
    let images = values(Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex()));
    let batch = Batch { images, shape, labels: vec![0, 2], soft_targets: None, mix: None, indices: vec![0, 1], position: LoaderPosition::default() };
    let model = config.init(&cpu).unwrap();
    let step = |model: &kiln_models::Model, device: &Device| {
        kiln_train::precision::step(Precision::F32, model, 1, |model| kiln_train::tasks::classify::loss(model, &batch, &exp, 3, device))
    };
    let (loss_cpu, grads_cpu) = step(&model, &cpu);
    let (loss_gpu, grads_gpu) = step(&model.clone().fork(&gpu), &gpu);
    let mut compare = Compare { cpu: &grads_cpu, gpu: &grads_gpu, tensors: Vec::new() };
    model.visit(&mut compare);
    ((loss_cpu, loss_gpu), compare.tensors)
}

/// `‖Δ‖ / ‖g‖` over all the parameters.
fn whole(tensors: &[(f64, f64)]) -> f64 {
    tensors.iter().map(|t| t.0 * t.0).sum::<f64>().sqrt() / tensors.iter().map(|t| t.1 * t.1).sum::<f64>().sqrt()
}

/// Per tensor: within 1e-3 of its own norm, plus f32 rounding noise of the whole gradient (some
/// true gradients are 0 and carry only that noise: the key part of a qkv bias, a conv bias
/// before BatchNorm).
fn assert_each_tensor(family: &str, tensors: &[(f64, f64)]) {
    let norm = tensors.iter().map(|t| t.1 * t.1).sum::<f64>().sqrt();
    for (i, (diff, own)) in tensors.iter().enumerate() {
        assert!(*diff <= 1e-3 * own + 1e-6 * norm, "{family}: gradient {i} differs by {diff:e} (its norm {own:e})");
    }
}

/// Every family trains on wgpu: the loss within 1e-4, the whole gradient and each tensor's
/// within 1e-3 relative of the CPU's. (Atlas's MLPs failed this until exact GELU's backward on
/// wgpu stopped using burn's tanh-approximation derivative: `kiln_nn::fused::gelu`.)
#[test]
fn every_family_takes_a_training_step_on_wgpu_with_the_cpus_gradients() {
    let Some(gpu) = wgpu_device() else { return };
    for config in families() {
        let family = config.family();
        let ((cpu, gpu_loss), tensors) = step_on_both(&config, &gpu);
        assert!(((gpu_loss - cpu) / cpu).abs() < 1e-4, "{family}: loss {gpu_loss} on wgpu, {cpu} on the CPU");
        assert!(tensors.len() > 10, "{family}: {} gradients", tensors.len());
        assert!(whole(&tensors) <= 1e-3, "{family}: gradients differ by {:e} relative", whole(&tensors));
        assert_each_tensor(family, &tensors);
    }
}

/// The same experiment and seed start from the same weights and batches on wgpu as on the CPU
/// (the first logged loss agrees), and a training step there moves the weights as on the CPU
/// (plain SGD at a large rate, so a step that did not train would stand out).
#[test]
fn a_run_starts_and_steps_on_wgpu_as_on_the_cpu() {
    use burn::store::{ModuleSnapshot, bridge};
    if wgpu_device().is_none() {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = std::env::temp_dir().join(format!("kiln-wgpu-{}", std::process::id()));
    let run = |device: &str| {
        let run = dir.join(device);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(root)
            .env_remove("XDG_RUNTIME_DIR")
            .args(["train", "configs/quickstart.toml", "--max-steps", "1", "--output-dir", run.to_str().unwrap()])
            .args(["--set", &format!("train.device={device}"), "--set", "data.batch_size=16", "--set", "logging.interval_iters=1"])
            .args(["--set", "logging.plots=false", "--set", "model.drop_path_rate=0", "--set", "optim.name=sgd"])
            .args(["--set", "optim.momentum=0", "--set", "optim.nesterov=false", "--set", "optim.lr=0.5", "--set", "schedule.warmup_epochs=0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{device}: {stderr}");
        // the window-system probe's complaint is silenced (kiln's main)
        assert!(!stderr.contains("XDG_RUNTIME_DIR"), "{device}: {stderr}");
        let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        let model = kiln_models::LoadedModel::from_native(&run.join("checkpoints/last/model.bpk"), &Device::flex()).unwrap().model;
        let weights: Vec<f32> =
            model.collect(None, None, true).into_iter().flat_map(|t| bridge::into_data(t).unwrap().try_to_vec::<f32>().unwrap()).collect();
        (first["loss"].as_f64().unwrap(), weights)
    };
    let ((cpu_loss, cpu), (gpu_loss, gpu)) = (run("flex"), run("wgpu"));
    assert!(((gpu_loss - cpu_loss) / cpu_loss).abs() < 1e-4, "first loss {gpu_loss} on wgpu, {cpu_loss} on the CPU");
    let diff: f64 = gpu.iter().zip(&cpu).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let norm: f64 = cpu.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
    assert!(diff <= 1e-4 * norm, "after one step the wgpu weights differ from the CPU's by {:e} relative", diff / norm);
}

/// The segmentation quickstart trains on wgpu as on the CPU (same first loss), with an EMA of
/// the weights evaluated beside them, and resumes from the checkpoint it wrote on the device.
/// Its heads' bilinear resizes need a backward, which burn's GPU backends lack: kiln-nn's
/// `resize_bilinear` runs there as products with interpolation matrices.
#[test]
fn segmentation_trains_with_ema_and_resumes_on_wgpu() {
    if wgpu_device().is_none() {
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = std::env::temp_dir().join(format!("kiln-wgpu-seg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let train = |device: &str, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(root)
            .args(["train", "configs/quickstart_seg.toml", "--output-dir", dir.join(device).to_str().unwrap()])
            .args(["--set", &format!("train.device={device}"), "--set", "schedule.iters=4", "--set", "schedule.warmup_iters=1"])
            .args(["--set", "eval.interval_iters=2", "--set", "checkpoint.interval_iters=2", "--set", "data.max_val_images=4"])
            .args(["--set", "train.ema=true", "--set", "eval.ema=true", "--set", "logging.interval_iters=1"])
            .args(["--set", "logging.plots=false", "--set", "model.drop_path_rate=0"])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{device} {extra:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let records = |device: &str| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join(device).join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    train("flex", &["--max-steps", "1"]);
    train("wgpu", &["--max-steps", "2"]);
    train("wgpu", &["--resume"]);
    let (cpu, gpu) = (records("flex"), records("wgpu"));
    let (a, b) = (cpu[0]["loss"].as_f64().unwrap(), gpu[0]["loss"].as_f64().unwrap());
    assert!(((b - a) / a).abs() < 1e-4, "first loss {b} on wgpu, {a} on the CPU");
    let evals: Vec<&serde_json::Value> = gpu.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.iter().map(|r| r["step"].as_u64().unwrap()).collect::<Vec<_>>(), [2, 4], "{gpu:?}");
    assert!(evals.iter().all(|r| r["mIoU"].is_f64() && r["mIoU_ema"].is_f64()), "{evals:?}");
}


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

/// The default wgpu device, if one answers a first computation.
fn wgpu_device() -> Option<Device> {
    std::panic::catch_unwind(|| {
        let device = Device::wgpu(DeviceKind::DefaultDevice);
        Tensor::<1>::ones([4], &device).sum().into_scalar::<f32>();
        device
    })
    .ok()
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
    let Some(gpu) = wgpu_device() else {
        eprintln!("no wgpu adapter here (Debian: apt-get install mesa-vulkan-drivers): skipped");
        return;
    };
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

/// Compares the gradients of every parameter: `(‖Δ‖ / ‖g‖ over the whole model, the worst tensor
/// by ‖Δ_t‖ / (‖g_t‖ + 1e-4 ‖g‖ / √tensors))`. The floor keeps tensors whose gradient is only
/// rounding noise (the key part of a qkv bias, whose true gradient is 0) from dominating.
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

#[test]
fn every_family_takes_a_training_step_on_wgpu_with_the_cpus_gradients() {
    use kiln_data::{Batch, LoaderPosition};
    let Some(gpu) = wgpu_device() else {
        eprintln!("no wgpu adapter here (Debian: apt-get install mesa-vulkan-drivers): skipped");
        return;
    };
    let (cpu, gpu) = (Device::flex().autodiff(), gpu.autodiff());
    let exp = kiln_train::bench::default_experiment("swin_tiny_patch4_window7_224");
    for config in families() {
        let family = config.family();
        let model = config.init(&cpu).unwrap();
        let [h, w] = config.img_size();
        let shape = [2, config.in_chans(), h, w];
        let images = values(Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex()));
        let batch = Batch { images, shape, labels: vec![0, 2], soft_targets: None, mix: None, indices: vec![0, 1], position: LoaderPosition::default() };
        let step = kiln_train::tasks::classify::train_step;
        let (loss_cpu, grads_cpu) = step(&model, &batch, &exp, 3, 1, &cpu);
        let on_gpu = model.clone().to_device(&gpu);
        let (loss_gpu, grads_gpu) = step(&on_gpu, &batch, &exp, 3, 1, &gpu);
        assert!(((loss_gpu - loss_cpu) / loss_cpu).abs() < 1e-4, "{family}: loss {loss_gpu} on wgpu, {loss_cpu} on the CPU");
        let mut compare = Compare { cpu: &grads_cpu, gpu: &grads_gpu, tensors: Vec::new() };
        model.visit(&mut compare);
        let tensors = compare.tensors;
        assert!(tensors.len() > 10, "{family}: {} gradients", tensors.len());
        let whole = (tensors.iter().map(|t| t.0 * t.0).sum::<f64>().sqrt(), tensors.iter().map(|t| t.1 * t.1).sum::<f64>().sqrt());
        assert!(whole.0 <= 1e-3 * whole.1, "{family}: gradients differ by {:e} relative", whole.0 / whole.1);
        let floor = 1e-4 * whole.1 / (tensors.len() as f64).sqrt();
        for (i, (diff, norm)) in tensors.iter().enumerate() {
            assert!(*diff <= 1e-3 * (norm + floor), "{family}: gradient {i} differs by {diff:e} (its norm {norm:e})");
        }
    }
}

/// The same experiment and seed start from the same weights and batches on wgpu as on the CPU:
/// the first logged loss agrees.
#[test]
fn a_run_starts_from_the_same_weights_on_wgpu_as_on_the_cpu() {
    if wgpu_device().is_none() {
        eprintln!("no wgpu adapter here (Debian: apt-get install mesa-vulkan-drivers): skipped");
        return;
    }
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = std::env::temp_dir().join(format!("kiln-wgpu-{}", std::process::id()));
    let first_loss = |device: &str| {
        let run = dir.join(device);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_kiln"))
            .current_dir(root)
            .args(["train", "configs/quickstart.toml", "--max-steps", "1", "--output-dir", run.to_str().unwrap()])
            .args(["--set", &format!("train.device={device}"), "--set", "data.batch_size=16", "--set", "logging.interval_iters=1"])
            .args(["--set", "logging.plots=false", "--set", "model.drop_path_rate=0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{device}: {}", String::from_utf8_lossy(&out.stderr));
        let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
        first["loss"].as_f64().unwrap()
    };
    let (cpu, gpu) = (first_loss("flex"), first_loss("wgpu"));
    assert!(((gpu - cpu) / cpu).abs() < 1e-4, "first loss {gpu} on wgpu, {cpu} on the CPU");
}

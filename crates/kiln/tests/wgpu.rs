//! The GPU path (`cargo test -p kiln --features wgpu`): a tiny model of every family gives on
//! wgpu the logits it gives on the CPU (burn-flex, Kiln's own kernels). Skipped, saying so, where
//! no wgpu adapter exists; on Debian, `apt-get install mesa-vulkan-drivers` gives the software
//! Vulkan driver (llvmpipe), which runs it.
#![cfg(feature = "wgpu")]

use burn::module::Module;
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

#[test]
fn every_family_gives_the_cpu_logits_on_wgpu() {
    let Some(gpu) = wgpu_device() else {
        eprintln!("no wgpu adapter here (Debian: apt-get install mesa-vulkan-drivers): skipped");
        return;
    };
    let families = [
        ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 2], vec![1, 2], 4).with_patch_size(2).with_num_classes(3)),
        ModelConfig::DaVit(DaVitConfig::new(vec![8, 12], vec![1, 1], vec![2, 3]).with_window_size(3).with_img_size([18, 14]).with_num_classes(3)),
        ModelConfig::MaxVit(MaxVitConfig::new([32, 32], vec![8, 16], vec![1, 1], 8).with_dim_head(8).with_partition_ratio(16).with_num_classes(3)),
        ModelConfig::Atlas(AtlasConfig::new([64, 64], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(3)),
    ];
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

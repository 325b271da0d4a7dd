//! `train.precision = "bf16"`: every family, as a classifier and as a segmenter's backbone,
//! computes its forward pass in bf16 on the f32 weights and stays within bf16's rounding of the
//! f32 forward; a training step gives f32 gradients close to f32's.

use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{DType, Distribution, FloatDType};
use kiln_models::atlas::AtlasConfig;
use kiln_models::davit::DaVitConfig;
use kiln_models::maxvit::MaxVitConfig;
use kiln_models::swin::SwinConfig;
use kiln_models::{AuxHeadConfig, Backbone, LoadedModel, LoadedSegmenter, ModelConfig, SegmenterConfig};
use kiln_train::config::schema::Precision;
use kiln_train::network::Network;
use kiln_train::precision::MixedPrecision;

/// A tiny model of every family, with BatchNorm (MaxViT, Atlas) and without; no stochastic
/// depth, whose masks come from the random stream every test of this binary draws from at once.
fn families() -> [ModelConfig; 4] {
    [
        ModelConfig::Swin(SwinConfig::new([32, 32], 8, vec![1, 2], vec![1, 2], 4).with_patch_size(2).with_num_classes(5).with_drop_path_rate(0.0)),
        ModelConfig::DaVit(DaVitConfig::new(vec![8, 12], vec![1, 1], vec![2, 3]).with_window_size(3).with_img_size([18, 14]).with_num_classes(5)),
        ModelConfig::MaxVit(MaxVitConfig::new([32, 32], vec![8, 16], vec![1, 1], 8).with_dim_head(8).with_partition_ratio(16).with_num_classes(5)),
        ModelConfig::Atlas(AtlasConfig::new([64, 64], 16, 2, vec![1, 1]).with_stem_dim(8).with_num_classes(5).with_drop_path_rate(0.0)),
    ]
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Max-abs difference over the largest magnitude of `want`.
fn relative(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0.0f32, |m, (g, w)| m.max((g - w).abs())) / scale
}

/// bf16 keeps 8 significant bits (rounding 2⁻⁹ ≈ 2e-3 relative per operation): a few layers of
/// such roundings, measured at 0.4–1.2% of the largest logit here, stay under 3%.
const BF16_TOLERANCE: f32 = 3e-2;

fn assert_bf16_close(what: &str, got: Tensor<4>, want: Tensor<4>) {
    assert_eq!(got.dtype(), DType::BF16, "{what}: the forward pass did not run in bf16");
    let err = relative(&values(got), &values(want));
    eprintln!("{what}: bf16 forward within {err:.2e} of f32's largest value");
    // not 0: the bf16 pass really rounded; under the bound: it computed the same function
    assert!(err > 0.0 && err <= BF16_TOLERANCE, "{what}: bf16 differs from f32 by {err:e} of the largest value");
}

#[test]
fn every_family_forwards_in_bf16_within_bf16_rounding_of_f32() {
    let device = Device::flex();
    for config in families() {
        let family = config.family();
        device.seed(3);
        let net = LoadedModel::build(family, config.clone(), &device).unwrap();
        let [h, w] = config.img_size();
        let x = Tensor::<4>::random([2, config.in_chans(), h, w], Distribution::Normal(0.0, 1.0), &device);
        let want = net.model.forward(x.clone());
        let bf16 = MixedPrecision::new(Precision::Bf16, &net.partition().0);
        let got = bf16.compute_copy(&net.model).forward(x.clone().cast(DType::BF16));
        // the f32 weights (and BatchNorm's shared running statistics) are untouched by the copy
        assert_eq!(values(net.model.forward(x)), values(want.clone()), "{family}: the cast copy changed the f32 model");
        assert_bf16_close(family, got.unsqueeze::<4>(), want.unsqueeze::<4>());
    }
}

#[test]
fn every_family_segments_in_bf16_within_bf16_rounding_of_f32() {
    let device = Device::flex();
    for backbone in families() {
        let family = backbone.family();
        let [h, w] = backbone.img_size();
        device.seed(5);
        let config = SegmenterConfig::new(backbone, 4).with_channels(8).with_pool_scales(vec![1, 2]).with_aux(AuxHeadConfig::new().with_channels(4));
        let net = LoadedSegmenter::build(family, config, &device).unwrap();
        let x = Tensor::<4>::random([2, 3, h, w], Distribution::Normal(0.0, 1.0), &device);
        let bf16 = MixedPrecision::new(Precision::Bf16, &net.partition().0);
        let got = bf16.compute_copy(&net.model).forward(x.clone().cast(DType::BF16));
        assert_bf16_close(&format!("{family} segmenter"), got, net.model.forward(x));
    }
}

/// `‖a − b‖ / ‖b‖` over every parameter's gradient, and whether all are f32.
fn gradient_difference<M: burn::module::Module>(model: &M, got: &GradientsParams, want: &GradientsParams) -> (f64, bool) {
    struct Compare<'a> {
        got: &'a GradientsParams,
        want: &'a GradientsParams,
        sums: (f64, f64),
        all_f32: bool,
        count: usize,
    }
    impl burn::module::ModuleVisitor for Compare<'_> {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            if let Some(want) = self.want.get::<D>(param.id) {
                let got = self.got.get::<D>(param.id).expect("a bf16 gradient wherever there is an f32 one");
                self.all_f32 &= got.dtype() == DType::F32;
                let (got, want) = (values(got), values(want));
                if std::env::var("DEBUG_GRADS").is_ok() { let d: f64 = got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt(); let n: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt(); eprintln!("  {:?} {d:.3e} / {n:.3e}", want.len()); }
                self.sums.0 += got.iter().zip(&want).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>();
                self.sums.1 += want.iter().map(|b| (*b as f64).powi(2)).sum::<f64>();
                self.count += 1;
            }
        }
    }
    let mut compare = Compare { got, want, sums: (0.0, 0.0), all_f32: true, count: 0 };
    model.visit(&mut compare);
    assert!(compare.count > 10, "{} gradients compared", compare.count);
    ((compare.sums.0 / compare.sums.1).sqrt(), compare.all_f32)
}

#[test]
fn a_bf16_training_step_gives_f32_gradients_close_to_f32s() {
    let device = Device::flex().autodiff();
    for config in families() {
        let family = config.family();
        let net = LoadedModel::build(family, config.clone(), &device).unwrap();
        let [h, w] = config.img_size();
        let x = Tensor::<4>::random([4, config.in_chans(), h, w], Distribution::Normal(0.0, 1.0), &device);
        let buffers = net.partition().0;
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
        let mut steps = Vec::new();
        for precision in [Precision::F32, Precision::Bf16] {
            let mixed = MixedPrecision::new(precision, &buffers);
            steps.push(mixed.step(&net.model, 1, |model, dtype: FloatDType| {
                let logits = model.forward(x.clone().cast(dtype)).cast(DType::F32);
                burn::nn::loss::CrossEntropyLossConfig::new().init(&device).forward(logits, targets.clone())
            }));
        }
        let ((loss32, grads32), (loss16, grads16)) = (&steps[0], &steps[1]);
        let (diff, all_f32) = gradient_difference(&net.model, grads16, grads32);
        eprintln!("{family}: loss {loss16} in bf16, {loss32} in f32; gradients within {diff:.2e}");
        assert!(all_f32, "{family}: a gradient reached the f32 weights in another dtype");
        assert!(((loss16 - loss32) / loss32).abs() < 1e-2, "{family}: loss {loss16} in bf16, {loss32} in f32");
        assert!(diff > 0.0 && diff < 0.1, "{family}: bf16 gradients differ from f32's by {diff:e}");
    }
}

//! How the optimiser treats each parameter (weight decay, layer-wise lr, a frozen backbone), as
//! the network declares it, and the optimiser an experiment names.

use std::collections::HashSet;

use burn::module::{Module, ModuleMapper, Param, ParamGroup, ParamId};
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, ModuleOptimizer, SgdConfig};
use burn::prelude::*;
use burn::store::ModuleSnapshot;
use kiln_models::LayerOrdinal;

use crate::config::schema::{ExperimentConfig, OptimizerName};
use crate::network::Network;

/// How the optimiser treats each parameter, as the network declares it ([`Network`]), by
/// [`ParamId`]: burn's optimiser matches groups against paths that carry enum variant names
/// (`Swin.layers.0...`, which Kiln's checkpoint keys carry too, so they stay), where the
/// network's declarations use the model's own names (timm's keys); ids join the two.
pub(crate) struct ParamPlan {
    /// What the network keeps out of weight decay (norms, biases, relative-position tables).
    no_decay: Vec<ParamId>,
    /// Layer-wise lr decay: the parameters whose lr is scaled, grouped by their multiplier.
    lr_scales: Vec<(ParamGroup, f64)>,
    /// Everything outside the head (classifier or decode heads), with `model.freeze_backbone`.
    frozen: HashSet<ParamId>,
    /// The buffers (BatchNorm statistics): no optimiser's, but averaged over data-parallel ranks.
    pub(crate) buffers: Vec<ParamId>,
}

impl ParamPlan {
    pub(crate) fn new<N: Network>(exp: &ExperimentConfig, net: &N) -> Self {
        // by the model's own names; learnable parameters apart from buffers
        let (buffers, params): (Vec<(ParamId, String, usize)>, _) = net
            .module()
            .collect(None, None, true)
            .into_iter()
            .map(|t| (ParamId::from(t.param_id.expect("module tensors carry their parameter id")), t.name, t.shape.len()))
            .partition(|(_, name, _)| net.is_buffer(name));
        let buffers = buffers.into_iter().map(|(id, _, _)| id).collect();
        let no_decay = params.iter().filter(|(_, name, rank)| net.no_weight_decay(name, *rank)).map(|(id, _, _)| *id).collect();
        let names: Vec<String> = params.iter().map(|(_, name, _)| name.clone()).collect();
        let mut by_scale: Vec<(f64, Vec<ParamId>)> = Vec::new();
        if let Some(decay) = exp.optim.layer_decay {
            let scales = kiln_models::backbone::layer_decay_scales(&names, decay, |p| net.layer_ordinal(p));
            for ((id, _, _), scale) in params.iter().zip(scales) {
                match by_scale.iter_mut().find(|(s, _)| *s == scale) {
                    Some((_, ids)) => ids.push(*id),
                    None => by_scale.push((scale, vec![*id])),
                }
            }
        }
        let lr_scales = by_scale.into_iter().filter(|(scale, _)| *scale != 1.0).map(|(scale, ids)| (ParamGroup::from_ids(ids), scale)).collect();
        let frozen = if exp.model.freeze_backbone {
            params.iter().filter(|(_, name, _)| net.layer_ordinal(name) != LayerOrdinal::Head).map(|(id, _, _)| *id).collect()
        } else {
            HashSet::new()
        };
        Self { no_decay, lr_scales, frozen, buffers }
    }

    /// The learning rate of every parameter at a step whose base rate is `lr`.
    pub(crate) fn learning_rates(&self, lr: f64) -> ModuleLearningRate {
        self.lr_scales.iter().fold(ModuleLrScheduler::new(lr), |rates, (group, scale)| rates.with_group(group.clone(), lr * scale)).step()
    }

    /// Stops gradients at the frozen parameters: they get none, so the optimiser (weight decay
    /// included) leaves them as they are.
    pub(crate) fn freeze<M: Module>(&self, model: M) -> M {
        struct Freeze<'a>(&'a HashSet<ParamId>);
        impl ModuleMapper for Freeze<'_> {
            fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
                if self.0.contains(&param.id) { param.set_require_grad(false) } else { param }
            }
        }
        if self.frozen.is_empty() { model } else { model.map(&mut Freeze(&self.frozen)) }
    }
}

/// AdamW or SGD; with `no_weight_decay_on_norm_bias`, the plan's no-decay parameters get no
/// weight decay, as timm's `param_groups_weight_decay`. `optim.clip_grad` is not the
/// optimiser's: burn clips each tensor by its own norm, timm all of them by their global norm,
/// which the loop does on the averaged gradient (`distributed::GradientSync`).
pub(crate) fn optimizer(exp: &ExperimentConfig, plan: &ParamPlan) -> ModuleOptimizer {
    let o = &exp.optim;
    let group = ParamGroup::from_ids(plan.no_decay.clone());
    match o.name {
        OptimizerName::Adamw => {
            let config = AdamWConfig::new()
                .with_beta_1(o.betas[0] as f32)
                .with_beta_2(o.betas[1] as f32)
                .with_epsilon(o.eps as f32);
            let decayed = config.clone().with_weight_decay(o.weight_decay as f32).init();
            if o.no_weight_decay_on_norm_bias {
                decayed.with_group(group, config.with_weight_decay(0.0).build(), None)
            } else {
                decayed
            }
        }
        OptimizerName::Sgd => {
            let momentum = (o.momentum > 0.0).then(|| {
                MomentumConfig::new().with_momentum(o.momentum).with_dampening(0.0).with_nesterov(o.nesterov)
            });
            let config = SgdConfig::new().with_momentum(momentum);
            let decayed = config
                .clone()
                .with_weight_decay(Some(burn::optim::decay::WeightDecayConfig::new(o.weight_decay as f32)))
                .init();
            if o.no_weight_decay_on_norm_bias {
                decayed.with_group(group, config.with_weight_decay(None).build(), None)
            } else {
                decayed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::optim::GradientsParams;
    use burn::store::{ModuleSnapshot, bridge};
    use kiln_models::swin::SwinConfig;
    use kiln_models::{Backbone, LoadedModel, Model, ModelConfig};

    use super::*;

    fn experiment(extra: &str) -> ExperimentConfig {
        let text = format!("[model]\nname = \"swin_tiny_patch4_window7_224\"\n{extra}\n[optim]\nname = \"adamw\"\nweight_decay = 1.0\n");
        toml::from_str(&text).unwrap()
    }

    fn weights(model: &Model) -> Vec<(String, Vec<f32>)> {
        model.collect(None, None, true).into_iter().map(|t| (t.name.clone(), bridge::into_data(t).unwrap().try_to_vec::<f32>().unwrap())).collect()
    }

    /// One AdamW step at lr 0.1, weight decay 1, with all-zero gradients: Adam's update is zero,
    /// so each weight is multiplied by `1 − 0.1·lr_scale` if it is decayed and kept otherwise.
    /// Returns, per parameter of a tiny Swin (stem, two blocks, head), the factor it moved by.
    fn decay_factors(exp: &ExperimentConfig) -> Vec<(String, f32)> {
        let device = Device::flex().autodiff();
        let config = ModelConfig::Swin(SwinConfig::new([16, 16], 8, vec![1, 1], vec![1, 2], 4).with_patch_size(2).with_num_classes(3));
        let model = LoadedModel::build("swin_tiny_patch4_window7_224", config, &device).unwrap();
        let plan = ParamPlan::new(exp, &model);
        let net = plan.freeze(model.model);
        let before = weights(&net);
        let loss = net.forward(Tensor::ones([2, 3, 16, 16], &device)).sum().mul_scalar(0.0);
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        let net = optimizer(exp, &plan).step(plan.learning_rates(0.1), net, grads);
        before
            .into_iter()
            .zip(weights(&net))
            .map(|((name, a), (_, b))| {
                let (i, _) = a.iter().enumerate().max_by(|x, y| x.1.abs().total_cmp(&y.1.abs())).unwrap();
                (name, if a[i] == 0.0 { 1.0 } else { b[i] / a[i] })
            })
            .collect()
    }

    fn factor(factors: &[(String, f32)], name: &str) -> f32 {
        factors.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    #[test]
    fn weight_decay_skips_norms_biases_and_position_tables() {
        let factors = decay_factors(&experiment(""));
        for (name, f) in &factors {
            let kept = ["bias", "gamma", "beta", "relative_position_bias_table"].iter().any(|s| name.ends_with(s));
            let expected = if kept { 1.0 } else { 0.9 };
            assert!((f - expected).abs() < 1e-6, "{name}: moved by {f}, expected {expected}");
        }
        assert!(factors.iter().any(|(n, _)| n.ends_with("relative_position_bias_table")));
    }

    #[test]
    fn layer_decay_scales_each_layers_learning_rate() {
        let mut exp = experiment("");
        exp.optim.layer_decay = Some(0.5);
        let factors = decay_factors(&exp);
        // four groups: stem 0.5^3, first block 0.5^2, second block (with its patch merging and
        // the final norm) 0.5, head 1
        for (name, scale) in [
            ("patch_embed.proj.weight", 0.125),
            ("layers.0.blocks.0.attn.qkv.weight", 0.25),
            ("layers.1.downsample.reduction.weight", 0.5),
            ("layers.1.blocks.0.mlp.fc2.weight", 0.5),
            ("head.fc.weight", 1.0),
        ] {
            let expected = 1.0 - 0.1 * scale;
            let f = factor(&factors, name);
            assert!((f - expected).abs() < 1e-6, "{name}: moved by {f}, expected {expected}");
        }
    }

    #[test]
    fn a_frozen_backbone_gets_no_update_and_the_head_does() {
        let mut exp = experiment("");
        exp.model.freeze_backbone = true;
        let factors = decay_factors(&exp);
        for (name, f) in &factors {
            let expected = if name == "head.fc.weight" { 0.9 } else { 1.0 };
            assert!((f - expected).abs() < 1e-7, "{name}: moved by {f}, expected {expected}");
        }
    }
}

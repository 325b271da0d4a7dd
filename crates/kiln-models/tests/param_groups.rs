//! The model says which parameters are not weight-decayed and which tensors are buffers
//! (`no_weight_decay` and `is_buffer` on `ModelConfig` and `SegmenterConfig`). For every
//! registered family, as a classifier and as a segmenter's backbone, they give exactly the sets
//! the trainer used to pick by name: buffers by field (`running_mean`, `running_var`), no decay
//! for rank ≤ 1 and for relative-position tables.

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use kiln_models::{AuxHeadConfig, ModelConfig, SegmenterConfig, registry};

/// `(is buffer, not decayed)` by the rule `kiln-train`'s `ParamPlan` applied before the models
/// declared it.
fn by_name(path: &str, rank: usize) -> (bool, bool) {
    let buffer = kiln_models::backbone::is_buffer_field(path.rsplit('.').next().unwrap_or_default());
    (buffer, rank <= 1 || path.ends_with("relative_position_bias_table"))
}

/// The first registered variant of each family.
fn one_per_family() -> Vec<ModelConfig> {
    let mut seen = Vec::new();
    let mut configs = Vec::new();
    for entry in registry() {
        if !seen.contains(&entry.family()) {
            seen.push(entry.family());
            configs.push((entry.config)());
        }
    }
    configs
}

/// Compares `declared` with [`by_name`] on every tensor of `module`; returns how many buffers and
/// rank ≥ 2 no-decay parameters it saw, so the caller can check the comparison was not vacuous.
fn assert_same_sets<M: ModuleSnapshot>(what: &str, module: &M, declared: impl Fn(&str, usize) -> (bool, bool)) -> (usize, usize) {
    let (mut buffers, mut tables) = (0, 0);
    for t in module.collect(None, None, true) {
        let rank = t.shape.len();
        let expected = by_name(&t.name, rank);
        assert_eq!(declared(&t.name, rank), expected, "{what}: {} (rank {rank}): (buffer, no decay)", t.name);
        buffers += expected.0 as usize;
        tables += (!expected.0 && expected.1 && rank >= 2) as usize;
    }
    (buffers, tables)
}

#[test]
fn every_family_declares_the_no_decay_and_buffer_sets_of_the_former_name_rule() {
    let device = Device::flex();
    let (mut buffers, mut tables) = (0, 0);
    for config in one_per_family() {
        let family = config.family();
        let model = config.init(&device).unwrap();
        let (b, t) = assert_same_sets(family, &model, |p, r| (config.is_buffer(p), config.no_weight_decay(p, r)));
        let segmenter = SegmenterConfig::new(config, 5).with_channels(8).with_pool_scales(vec![1, 2]).with_aux(AuxHeadConfig::new().with_channels(4));
        let model = segmenter.init(&device).unwrap();
        let (sb, st) = assert_same_sets(&format!("{family} segmenter"), &model, |p, r| (segmenter.is_buffer(p), segmenter.no_weight_decay(p, r)));
        assert!(sb > b, "{family} segmenter: the heads' BatchNorm statistics are buffers");
        assert_eq!(st, t, "{family} segmenter: the heads have no tables");
        buffers += b;
        tables += t;
    }
    // Swin's and MaxViT's relative-position tables; MaxViT's and Atlas's BatchNorm statistics
    assert!(buffers > 0 && tables > 0, "buffers {buffers}, tables {tables}");
}

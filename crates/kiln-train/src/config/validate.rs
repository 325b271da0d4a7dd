//! Semantic checks: values that parse but cannot be trained with (a negative learning rate, a
//! batch of 0, warm-up longer than training, a mean with the wrong number of channels). Every
//! check reports through a [`Checker`] (`checker.rs`), which knows where each key was set.

use kiln_data::FASHION_MNIST_CLASSES;

use super::checker::Checker;
use super::model::ResolvedModel;
use super::schema::{ClassList, DatasetKind, ExperimentConfig, GrayscaleMode, OptimizerName, ScheduleName, Task};

/// Classes the data has, when the configuration alone says so (Fashion-MNIST's 10, or the
/// length of an inline `class_list`).
pub fn known_class_count(config: &ExperimentConfig) -> Option<usize> {
    match (&config.data.class_list, config.data.dataset) {
        (Some(ClassList::Names(names)), _) => Some(names.len()),
        (Some(ClassList::File(_)), _) => None,
        (None, DatasetKind::FashionMnist) => Some(FASHION_MNIST_CLASSES.len()),
        (None, DatasetKind::ImageFolder | DatasetKind::Ade20k) => None,
    }
}

/// Every semantic check of a resolved experiment. `model` is `None` when `model.name` did not
/// resolve; checks that need the model are then skipped.
pub fn check_experiment(config: &ExperimentConfig, model: Option<&ResolvedModel>, checker: &mut Checker<'_>) {
    check_model(config, checker);
    check_data(config, checker);
    check_augmentation(config, model, checker);
    check_optim(config, checker);
    check_schedule(config, checker);
    check_loop(config, checker);
    check_task(config, checker);
}

/// What belongs to one task only: the data set kind, the subset keys, the metric of `best`,
/// and the `[segmentation]` values.
fn check_task(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let data = &config.data;
    let segmentation = config.task == Task::Segmentation;
    if segmentation != (data.dataset == DatasetKind::Ade20k) {
        let message = if segmentation {
            format!(
                "task = \"segmentation\" ({}) trains on label maps: set data.dataset = \"ade20k\" (the ADE20K layout)",
                c.where_set("task")
            )
        } else {
            "the ADE20K layout holds label maps: set task = \"segmentation\" to train on it".to_string()
        };
        c.fail("data.dataset", message);
    }
    let (own, other) = if segmentation { ("segmentation", "classification") } else { ("classification", "segmentation") };
    let classification_only = [
        ("data.class_list", data.class_list.is_some()),
        ("data.per_class", data.per_class.is_some()),
        ("data.fraction", data.fraction.is_some()),
        ("data.pad_to", data.pad_to.is_some()),
        ("augmentation.mixup", config.augmentation.mixup > 0.0),
        ("augmentation.cutmix", config.augmentation.cutmix > 0.0),
        ("augmentation.auto_augment", config.augmentation.auto_augment.is_some()),
        ("augmentation.reprob", config.augmentation.reprob > 0.0),
    ];
    let segmentation_only = [
        ("data.reduce_zero_label", data.reduce_zero_label.is_some() && data.dataset != DatasetKind::Ade20k),
        ("data.classes_file", data.classes_file.is_some()),
        ("data.image_list", data.image_list.is_some()),
        ("data.max_images", data.max_images.is_some()),
        ("data.max_val_images", data.max_val_images.is_some()),
        ("data.val_batch_size", data.val_batch_size != 1),
    ];
    let foreign = if segmentation { &classification_only[..] } else { &segmentation_only[..] };
    for (key, _) in foreign.iter().filter(|(_, set)| *set) {
        c.fail(key, format!("a {other} setting, but this experiment's task is {own}; remove the key"));
    }
    if let Some(metric) = config.checkpoint.keep_best_by
        && !metric.fits(config.task)
    {
        let choices = if segmentation { "mIoU, aAcc, mAcc or loss" } else { "top1, top5 or loss" };
        c.fail("checkpoint.keep_best_by", format!("not a {own} metric; use {choices}"));
    }
    for (key, count) in [("data.max_images", data.max_images), ("data.max_val_images", data.max_val_images)] {
        if let Some(count) = count {
            c.at_least_one(key, count, "the number of images kept");
        }
    }
    if data.image_list.is_some() && data.max_images.is_some() {
        c.fail("data.max_images", "keep images by data.image_list or by data.max_images, not both");
    }
    if segmentation {
        c.at_least_one("data.val_batch_size", data.val_batch_size, "the validation batch size");
        check_segmentation(config, c);
    }
}

fn check_segmentation(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let seg = &config.segmentation;
    c.at_least_one("segmentation.channels", seg.channels, "the decode head's channels");
    if seg.pool_scales.is_empty() || seg.pool_scales.contains(&0) {
        c.fail("segmentation.pool_scales", format!("pyramid-pooling bins must be positive, e.g. [1, 2, 3, 6]; got {:?}", seg.pool_scales));
    }
    c.below_one("segmentation.dropout", seg.dropout, "the dropout rate");
    if seg.aux_head {
        c.at_least_one("segmentation.aux_channels", seg.aux_channels, "the auxiliary head's channels");
    }
    c.non_negative("segmentation.aux_weight", seg.aux_weight, "the auxiliary loss weight");
    if seg.scale.contains(&0) {
        c.fail("segmentation.scale", format!("the resize target [long, short] must be positive, got {:?}", seg.scale));
    }
    let [low, high] = seg.ratio_range;
    if !(low > 0.0 && low <= high && high.is_finite()) {
        c.fail("segmentation.ratio_range", format!("needs 0 < min <= max, got {:?}", seg.ratio_range));
    }
    if !(seg.cat_max_ratio > 0.0 && seg.cat_max_ratio <= 1.0) {
        c.fail("segmentation.cat_max_ratio", format!("a share of the crop in (0, 1] (1 turns it off), got {}", seg.cat_max_ratio));
    }
    c.probability("segmentation.flip_prob", seg.flip_prob, "the flip probability");
    if let (Some(crop), Some(size)) = (seg.crop_size, config.model.img_size)
        && crop != size
    {
        c.fail(
            "segmentation.crop_size",
            format!(
                "the backbone is built for {}x{} inputs (model.img_size, {}); make the crop the same size",
                size.height,
                size.width,
                c.where_set("model.img_size")
            ),
        );
    }
    if let Some(stride) = seg.test_stride
        && (stride.height == 0 || stride.width == 0)
    {
        c.fail("segmentation.test_stride", "the window step must be positive");
    }
    if let Some(scale) = seg.test_scale
        && scale.contains(&0)
    {
        c.fail("segmentation.test_scale", format!("the resize target [long, short] must be positive, got {scale:?}"));
    }
    if seg.tta_scales.iter().any(|s| !(*s > 0.0 && s.is_finite())) {
        c.fail("segmentation.tta_scales", format!("scale factors must be positive, got {:?}", seg.tta_scales));
    }
}

fn check_model(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let model = &config.model;
    if let Some(classes) = model.num_classes {
        c.at_least_one("model.num_classes", classes, "the number of classes");
        if let Some(known) = known_class_count(config)
            && known != classes
            && classes > 0
        {
            let source = match config.data.class_list {
                Some(_) => format!("data.class_list lists {known} classes ({})", c.where_set("data.class_list")),
                None => format!("{} has {known} classes", config.data.dataset.as_str()),
            };
            c.fail(
                "model.num_classes",
                format!("{classes} classes, but {source}; remove model.num_classes to take it from the data"),
            );
        }
    }
    if let Some(chans) = model.in_chans
        && chans != 1
        && chans != 3
    {
        c.fail("model.in_chans", format!("the data pipeline makes 1 (luma) or 3 (RGB) channels, not {chans}"));
    }
    if let Some(size) = model.img_size
        && (size.height == 0 || size.width == 0)
    {
        c.fail("model.img_size", "the input size must be positive");
    }
    if let Some(rate) = model.drop_path_rate {
        c.below_one("model.drop_path_rate", rate, "the stochastic-depth rate");
    }
    if let Some(rate) = model.drop_rate {
        c.below_one("model.drop_rate", rate, "the dropout rate");
    }
    if let Some(path) = &model.pretrained
        && path.as_os_str().is_empty()
    {
        c.fail("model.pretrained", "empty path; name a timm state dict or a Kiln checkpoint, or remove the key");
    }
    if model.freeze_backbone && model.pretrained.is_none() {
        c.fail(
            "model.freeze_backbone",
            "freezing a randomly initialised backbone trains only the head on random features; set model.pretrained",
        );
    }
}

fn check_data(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let data = &config.data;
    c.at_least_one("data.batch_size", data.batch_size, "the batch size");
    if let Some(fraction) = data.fraction
        && !(fraction > 0.0 && fraction <= 1.0)
    {
        c.fail("data.fraction", format!("the fraction of images kept must be in (0, 1], got {fraction}"));
    }
    if let Some(per_class) = data.per_class {
        c.at_least_one("data.per_class", per_class, "images per class");
    }
    if let Some(pad) = data.pad_to {
        c.at_least_one("data.pad_to", pad, "the padded side");
    }
    match &data.class_list {
        Some(ClassList::Names(names)) => {
            if names.is_empty() {
                c.fail("data.class_list", "an empty class list keeps nothing; list classes or remove the key");
            }
            let mut seen = std::collections::BTreeSet::new();
            if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
                c.fail("data.class_list", format!("`{twice}` is listed twice"));
            }
            if data.dataset == DatasetKind::FashionMnist
                && let Some(unknown) = names.iter().find(|n| !FASHION_MNIST_CLASSES.contains(&n.as_str()))
            {
                c.fail(
                    "data.class_list",
                    format!("Fashion-MNIST has no class `{unknown}`; its classes: {}", FASHION_MNIST_CLASSES.join(", ")),
                );
            }
        }
        Some(ClassList::File(path)) if path.as_os_str().is_empty() => {
            c.fail("data.class_list", "empty path; name a text file with one class per line, or list the classes");
        }
        _ => {}
    }
    match data.dataset {
        DatasetKind::FashionMnist => {
            check_splits(config, "Fashion-MNIST's", ["train", "test"], c);
            if let Some(pad) = data.pad_to
                && pad > 0
                && pad < 28
            {
                c.fail("data.pad_to", format!("Fashion-MNIST images are 28x28; padding makes them larger, not {pad}"));
            }
        }
        DatasetKind::Ade20k => {
            check_splits(config, "the ADE20K layout's", ["training", "validation"], c);
            check_root(config, c);
        }
        DatasetKind::ImageFolder => check_root(config, c),
    }
    if let (Some(mode), Some(chans)) = (data.grayscale, config.model.in_chans) {
        let wanted = match mode {
            GrayscaleMode::Luma => 1,
            GrayscaleMode::ExpandRgb => 3,
        };
        if chans != wanted && (chans == 1 || chans == 3) {
            let mode_name = if wanted == 1 { "luma" } else { "expand_rgb" };
            c.fail(
                "data.grayscale",
                format!(
                    "`{mode_name}` makes {wanted}-channel images but model.in_chans is {chans} ({}); \
                     use `{}` or change model.in_chans",
                    c.where_set("model.in_chans"),
                    if chans == 1 { "luma" } else { "expand_rgb" },
                ),
            );
        }
    }
}

/// A data set with fixed split names: `data.train_split` and `data.val_split` must be one.
fn check_splits(config: &ExperimentConfig, owner: &str, [a, b]: [&str; 2], c: &mut Checker<'_>) {
    let data = &config.data;
    for (key, split) in [("data.train_split", &data.train_split), ("data.val_split", &data.val_split)] {
        if let Some(split) = split
            && split != a
            && split != b
        {
            c.fail(key, format!("{owner} splits are `{a}` and `{b}`, not `{split}`"));
        }
    }
}

/// An image folder or ADE20K tree has no default location.
fn check_root(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let data = &config.data;
    let layout = if data.dataset == DatasetKind::Ade20k { "images/" } else { "" };
    if data.root.is_none() {
        c.fail(
            "data.root",
            format!(
                "required for {} (data.dataset, {}): the directory holding {layout}{}/ and {layout}{}/",
                data.dataset.as_str(),
                c.where_set("data.dataset"),
                data.train_split.as_deref().unwrap_or("train"),
                data.val_split.as_deref().unwrap_or("val"),
            ),
        );
    }
}

fn check_augmentation(config: &ExperimentConfig, model: Option<&ResolvedModel>, c: &mut Checker<'_>) {
    let aug = &config.augmentation;
    let [scale_min, scale_max] = aug.rrc_scale;
    if !(scale_min > 0.0 && scale_min <= scale_max && scale_max <= 1.0) {
        c.fail("augmentation.rrc_scale", format!("needs 0 < min <= max <= 1 (area fractions), got {:?}", aug.rrc_scale));
    }
    let [ratio_min, ratio_max] = aug.rrc_ratio;
    if !(ratio_min > 0.0 && ratio_min <= ratio_max && ratio_max.is_finite()) {
        c.fail("augmentation.rrc_ratio", format!("needs 0 < min <= max (aspect ratios), got {:?}", aug.rrc_ratio));
    }
    c.probability("augmentation.hflip", aug.hflip, "the flip probability");
    c.non_negative("augmentation.color_jitter", aug.color_jitter, "the colour-jitter strength");
    c.probability("augmentation.reprob", aug.reprob, "the random-erasing probability");
    c.non_negative("augmentation.mixup", aug.mixup, "the mixup alpha");
    c.non_negative("augmentation.cutmix", aug.cutmix, "the CutMix alpha");
    c.probability("augmentation.mixup_prob", aug.mixup_prob, "the mixing probability");
    c.probability("augmentation.mixup_switch_prob", aug.mixup_switch_prob, "the CutMix switch probability");
    c.below_one("augmentation.label_smoothing", aug.label_smoothing, "label smoothing");
    if let Some(policy) = &aug.auto_augment
        && let Err(message) = check_auto_augment(policy)
    {
        c.fail("augmentation.auto_augment", message);
    }
    if let Some(crop) = aug.crop_pct
        && !(crop > 0.0 && crop <= 1.0)
    {
        c.fail("augmentation.crop_pct", format!("the centre-crop fraction must be in (0, 1], got {crop}"));
    }
    let chans = config.model.in_chans;
    for (key, values) in [("augmentation.mean", &aug.mean), ("augmentation.std", &aug.std)] {
        match (values, chans) {
            (Some(values), Some(chans)) if values.len() != chans => c.fail(
                key,
                format!(
                    "{} value{} for {chans} input channel{} (model.in_chans, {}); give one per channel",
                    values.len(),
                    if values.len() == 1 { "" } else { "s" },
                    if chans == 1 { "" } else { "s" },
                    c.where_set("model.in_chans"),
                ),
            ),
            (Some(values), _) if values.iter().any(|v| !v.is_finite()) => c.fail(key, "every value must be a finite number"),
            (None, Some(chans)) if model.is_some() => c.fail(
                key,
                format!(
                    "the model's default is for 3 channels but model.in_chans is {chans}; set one value per channel \
                     (Fashion-MNIST: mean = [0.2860], std = [0.3530])"
                ),
            ),
            _ => {}
        }
    }
    if let Some(std) = &aug.std
        && std.iter().any(|s| *s <= 0.0)
    {
        c.fail("augmentation.std", "standard deviations must be positive");
    }
}

/// Checks a timm RandAugment string as kiln-data reads it: `rand` then `-`-separated sections,
/// each a key (`m`, `n`, `p`, `mstd`, `mmax`, `inc`) and a number.
pub fn check_auto_augment(policy: &str) -> Result<(), String> {
    const SECTIONS: [&str; 6] = ["m", "n", "p", "mstd", "mmax", "inc"];
    let mut sections = policy.split('-');
    let name = sections.next().unwrap_or_default();
    if name != "rand" {
        return Err(format!(
            "`{policy}`: Kiln implements timm's RandAugment, written rand-<sections> (e.g. rand-m9-mstd0.5-inc1); \
             AutoAugment and AugMix policies (original, v0, 3a, augmix-...) are not available"
        ));
    }
    for section in sections {
        let split = section.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(section.len());
        let (key, value) = section.split_at(split);
        if !SECTIONS.contains(&key) || value.parse::<f64>().is_err() {
            return Err(format!(
                "`{section}` in `{policy}` is not a RandAugment section; each is a key and a number, keys: {}",
                SECTIONS.join(", ")
            ));
        }
    }
    Ok(())
}

fn check_optim(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let optim = &config.optim;
    if let Some(lr) = optim.lr {
        c.positive("optim.lr", lr, "the learning rate");
    }
    c.non_negative("optim.weight_decay", optim.weight_decay, "weight decay");
    c.below_one("optim.momentum", optim.momentum, "momentum");
    for (i, beta) in optim.betas.iter().enumerate() {
        if !(0.0..1.0).contains(beta) {
            c.fail("optim.betas", format!("beta{} must be in [0, 1), got {beta}", i + 1));
        }
    }
    c.positive("optim.eps", optim.eps, "epsilon");
    if let Some(decay) = optim.layer_decay
        && !(decay > 0.0 && decay <= 1.0)
    {
        c.fail("optim.layer_decay", format!("layer decay multiplies the lr per layer and must be in (0, 1], got {decay}"));
    }
    if let Some(clip) = optim.clip_grad {
        c.positive("optim.clip_grad", clip, "the gradient-norm limit (remove the key to turn clipping off)");
    }
    if optim.name == OptimizerName::Sgd && optim.nesterov && optim.momentum == 0.0 {
        c.fail("optim.nesterov", "Nesterov SGD needs momentum > 0; set optim.momentum or optim.nesterov = false");
    }
}

fn check_schedule(config: &ExperimentConfig, c: &mut Checker<'_>) {
    let schedule = &config.schedule;
    c.at_least_one("schedule.epochs", schedule.epochs, "the number of epochs");
    if let Some(iters) = schedule.iters {
        c.at_least_one("schedule.iters", iters, "the number of iterations");
        if let Some(origin) = c.origin("schedule.epochs") {
            c.fail("schedule.iters", format!("set the length in epochs or in iterations, not both (schedule.epochs is set at {origin})"));
        }
        if schedule.warmup_iters.is_some_and(|w| w >= iters) {
            c.fail("schedule.warmup_iters", format!("warm-up does not end before training does (schedule.iters = {iters})"));
        }
    }
    if schedule.name == ScheduleName::Poly {
        c.positive("schedule.power", schedule.power, "the poly exponent");
    }
    let epochs = schedule.warmup_epochs.unwrap_or(0);
    let iters = schedule.warmup_iters.unwrap_or(0);
    if epochs > 0 && iters > 0 {
        c.fail(
            "schedule.warmup_iters",
            format!(
                "set warm-up in epochs or in iterations, not both (schedule.warmup_epochs = {epochs}, {}); \
                 to count iterations over a base that counts epochs, also set schedule.warmup_epochs = 0",
                c.where_set("schedule.warmup_epochs")
            ),
        );
    }
    if epochs > 0 && schedule.epochs > 0 && epochs >= schedule.epochs {
        c.fail(
            "schedule.warmup_epochs",
            format!(
                "warm-up of {epochs} epochs does not end before training does (schedule.epochs = {}, {})",
                schedule.epochs,
                c.where_set("schedule.epochs")
            ),
        );
    }
    c.non_negative("schedule.min_lr", schedule.min_lr, "the minimum learning rate");
    c.non_negative("schedule.warmup_lr", schedule.warmup_lr, "the warm-up start learning rate");
    if let Some(lr) = config.optim.lr
        && lr > 0.0
        && schedule.min_lr > lr
    {
        c.fail(
            "schedule.min_lr",
            format!("the floor {} is above the peak optim.lr = {lr} ({})", schedule.min_lr, c.where_set("optim.lr")),
        );
    }
    if schedule.name == ScheduleName::Step {
        c.positive("schedule.decay_epochs", schedule.decay_epochs, "the decay interval");
        if !(schedule.decay_rate > 0.0 && schedule.decay_rate <= 1.0) {
            c.fail("schedule.decay_rate", format!("the decay factor must be in (0, 1], got {}", schedule.decay_rate));
        }
    }
}

fn check_loop(config: &ExperimentConfig, c: &mut Checker<'_>) {
    c.at_least_one("train.accum_steps", config.train.accum_steps, "accumulation steps");
    let decay = config.train.ema_decay;
    if !(decay > 0.0 && decay < 1.0) {
        c.fail("train.ema_decay", format!("the EMA decay must be in (0, 1), got {decay}"));
    }
    let device = config.train.device.as_str();
    let (kind, index) = device.split_once(':').map_or((device, None), |(k, i)| (k, Some(i)));
    if !["flex", "wgpu", "cuda"].contains(&kind) || index.is_some_and(|i| i.parse::<usize>().is_err()) {
        c.fail("train.device", format!("unknown device `{device}`; use flex (CPU), wgpu or cuda, optionally with an index (cuda:1)"));
    }
    if let Some(why) = crate::precision::unsupported(config.train.precision, kind) {
        c.fail("train.precision", why);
    }
    let devices = &config.train.devices;
    let cuda = |d: &String| d.strip_prefix("cuda").is_some_and(|rest| rest.is_empty() || rest.strip_prefix(':').is_some_and(|i| i.parse::<usize>().is_ok()));
    if !devices.iter().all(cuda) {
        c.fail("train.devices", format!("{devices:?}: several devices in one process train through burn's collectives, which only CUDA has; list CUDA devices (\"cuda:0\", \"cuda:1\"), or launch one process per device with mpirun (README)"));
    } else if (1..devices.len()).any(|i| devices[..i].contains(&devices[i])) {
        c.fail("train.devices", format!("{devices:?} names a device twice"));
    }
    c.at_least_one("eval.interval_epochs", config.eval.interval_epochs, "the evaluation interval");
    if let Some(iters) = config.eval.interval_iters {
        c.at_least_one("eval.interval_iters", iters, "the evaluation interval");
    }
    if let Some(iters) = config.checkpoint.interval_iters {
        c.at_least_one("checkpoint.interval_iters", iters, "the checkpoint interval");
    }
    if config.eval.ema && !config.train.ema {
        c.fail("eval.ema", format!("evaluating EMA weights needs train.ema = true (train.ema is {})", c.where_set("train.ema")));
    }
    c.at_least_one("checkpoint.interval_epochs", config.checkpoint.interval_epochs, "the checkpoint interval");
    c.at_least_one("logging.interval_iters", config.logging.interval_iters, "the logging interval");
    if let Some(dir) = &config.logging.output_dir
        && dir.as_os_str().is_empty()
    {
        c.fail("logging.output_dir", "empty path; remove the key for runs/<experiment name>");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_augment_strings_as_timm_parses_them() {
        for ok in ["rand-m9-mstd0.5-inc1", "rand-m15-n2-mmax15", "rand-m9-n3-mstd0.5-p0.7", "rand"] {
            assert_eq!(check_auto_augment(ok), Ok(()), "{ok}");
        }
        assert!(check_auto_augment("augmix-m5-w4-d2").unwrap_err().contains("not available"));
        assert!(check_auto_augment("randaugment-m9").unwrap_err().contains("rand-<sections>"));
        assert!(check_auto_augment("rand-q9").unwrap_err().contains("`q9`"));
        assert!(check_auto_augment("rand-m").unwrap_err().contains("`m`"));
        assert!(check_auto_augment("rand-tweights").is_err(), "kiln-data has no weighted op sets");
    }
}

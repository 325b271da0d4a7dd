//! Experiment configuration: TOML files, `_base_` inheritance, `--set` overrides, typed
//! sections, and errors that name the file, the key and the line.
//!
//! An experiment file inherits shared parts and says what differs (mmsegmentation's layout):
//!
//! ```toml
//! _base_ = ["_base_/models/swin_tiny.toml", "_base_/datasets/fashion_mnist.toml"]
//!
//! [model.arch]          # fields of the family's config, applied onto the registered model
//! embed_dim = 48
//!
//! [optim]
//! name = "adamw"
//! lr = 2e-3
//! ```
//!
//! Loading ([`load`]) goes:
//! 1. read the file and, depth first, every file its `_base_` lists (paths relative to the
//!    including file); merge bases in list order, then the file itself: tables merge key by key,
//!    anything else is replaced. Cycles and missing files are errors naming the `_base_` entry.
//! 2. apply `--set dotted.key=value` overrides in order (the value is read as TOML, `1e-3`,
//!    `true`, `[2, 2]`, falling back to a plain string).
//! 3. parse into [`ExperimentConfig`]: unknown keys and wrong types are errors at the file and
//!    line (or `--set` argument) that set them.
//! 4. resolve `model.name` in the registry and apply `[model]` changes onto its configuration;
//!    fill what the files leave open from the model's registered defaults, the data and timm's
//!    rules (see [`ResolvedConfig`]).
//! 5. check values that parse but cannot be trained with; every problem is reported at once.
//!
//! Sections: `task`, `[model]`, `[data]`, `[augmentation]`, `[optim]`, `[schedule]`, `[train]`,
//! `[eval]`, `[checkpoint]`, `[logging]`, and `[segmentation]` for `task = "segmentation"`; see [`schema`] for every key and its (timm) default.

mod checker;
mod error;
mod model;
pub mod schema;
mod tree;
mod typed;
mod validate;

#[cfg(test)]
mod test_files;
#[cfg(test)]
mod tests;

use std::fs;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, Origin, Problem};
pub use kiln_models::{ModelConfig, PretrainedCfg};
pub use schema::{
    AugmentationSection, BestMetric, CheckpointSection, ClassList, DataSection, DatasetKind, EvalSection,
    ExperimentConfig, GrayscaleMode, ImgSize, LoggingSection, ModelSection, OptimSection, OptimizerName, ScheduleName,
    ScheduleSection, SegmentationSection, Task, TestMode, TrainSection,
};
pub use tree::{Override, Provenance};

use model::{ResolvedModel, resolve_model};
use checker::Checker;
use validate::{check_experiment, known_class_count};

/// File name of the resolved configuration inside a run directory.
pub const RESOLVED_CONFIG_FILE: &str = "config.toml";

/// Warm-up when a configuration sets neither `warmup_epochs` nor `warmup_iters` (timm's).
const DEFAULT_WARMUP_EPOCHS: usize = 5;

/// Where Fashion-MNIST is shipped, relative to the repository root.
const FASHION_MNIST_ROOT: &str = "datasets/fashion-mnist";

/// An experiment ready to train: every section typed and checked, every default written out.
///
/// After [`load`], these `Option`s of [`ExperimentConfig`] are always `Some`: `model.in_chans`,
/// `model.img_size`, `data.root` (Fashion-MNIST) and the splits, `data.grayscale` (Fashion-MNIST,
/// or one input channel), `augmentation.crop_pct`, `augmentation.mean` / `std`, `optim.lr`,
/// `logging.output_dir`, and one of `schedule.warmup_epochs` / `warmup_iters`. `model.num_classes`
/// is `Some` when the data's classes are known from the configuration (Fashion-MNIST, an inline
/// `class_list`); otherwise the trainer takes it from the image folder.
#[derive(Debug, Clone)]
pub struct ResolvedConfig {
    /// Every section, with defaults and derived values filled in.
    pub experiment: ExperimentConfig,
    /// The architecture to build: the registered configuration of `model.name` with the
    /// experiment's `[model]` changes applied.
    pub model: ModelConfig,
    /// Evaluation defaults registered with `model.name` (interpolation, crop, mean/std).
    pub pretrained_cfg: PretrainedCfg,
    /// The experiment file.
    pub source: PathBuf,
    /// The `--set` arguments, in order.
    pub overrides: Vec<String>,
    provenance: Provenance,
}

/// Loads, merges, overrides, parses, resolves and checks an experiment.
///
/// `overrides` are `--set` arguments without the flag (`"optim.lr=1e-3"`), applied in order
/// after every file.
///
/// # Errors
/// [`ConfigError::Read`], [`ConfigError::Syntax`], [`ConfigError::BadBase`],
/// [`ConfigError::BaseCycle`] while reading files; [`ConfigError::BadOverride`] for a malformed
/// `--set`; [`ConfigError::Invalid`] listing every unknown key, wrong type or impossible value
/// with the file and line (or `--set` argument) that set it.
pub fn load(path: impl AsRef<Path>, overrides: &[String]) -> Result<ResolvedConfig, ConfigError> {
    let source = path.as_ref().to_path_buf();
    let overrides_parsed = overrides.iter().map(|arg| Override::parse(arg)).collect::<Result<Vec<_>, _>>()?;
    let mut tree = tree::load_file(&source)?;
    for set in &overrides_parsed {
        tree.apply(set);
    }
    let invalid = |problems| ConfigError::Invalid { file: source.clone(), problems };

    let mut experiment = typed::parse_experiment(&tree.table, &tree.provenance).map_err(|p| invalid(vec![p]))?;
    let mut checker = Checker::new(&tree.provenance);
    fill_data_defaults(&mut experiment);
    let model = resolve_model(&experiment.model, &mut checker);
    if let Some(model) = &model {
        fill_model_defaults(&mut experiment, model);
    }
    fill_training_defaults(&mut experiment, &source);
    check_experiment(&experiment, model.as_ref(), &mut checker);

    let problems = checker.into_problems();
    match model {
        Some(model) if problems.is_empty() => Ok(ResolvedConfig {
            experiment,
            pretrained_cfg: model.entry.pretrained.clone(),
            model: model.config,
            source,
            overrides: overrides.to_vec(),
            provenance: tree.provenance,
        }),
        _ => Err(invalid(problems)),
    }
}

impl ResolvedConfig {
    /// The resolved configuration as TOML: a header naming the source, the overrides and the
    /// architecture, then every section with every value spelled out. Loading the text again
    /// gives the same experiment.
    pub fn to_toml(&self) -> String {
        let mut text = format!("# Resolved by Kiln from {}", self.source.display());
        for set in &self.overrides {
            text.push_str(&format!(" --set {set}"));
        }
        text.push_str(".\n# Every value is written out: training from this file repeats the experiment.\n");
        text.push_str(&format!("# Architecture ({}): {}\n\n", self.model.family(), self.model.to_json()));
        let mut table = toml::Table::try_from(&self.experiment).expect("an experiment serialises to TOML");
        if self.experiment.schedule.iters.is_some()
            && let Some(toml::Value::Table(schedule)) = table.get_mut("schedule")
        {
            // an iteration-based length: the epoch count plays no part and may not be set beside it
            schedule.remove("epochs");
        }
        text.push_str(&toml::to_string(&table).expect("an experiment serialises to TOML"));
        text
    }

    /// Writes [`to_toml`](Self::to_toml) to `run_dir/config.toml` (write, then rename, so a
    /// reader never sees half a file) and returns the path.
    ///
    /// # Errors
    /// [`ConfigError::Write`] when the directory or the file cannot be written.
    pub fn write_to_run_dir(&self, run_dir: &Path) -> Result<PathBuf, ConfigError> {
        let path = run_dir.join(RESOLVED_CONFIG_FILE);
        let write_error = |e: std::io::Error| ConfigError::Write { path: path.clone(), reason: e.to_string() };
        fs::create_dir_all(run_dir).map_err(write_error)?;
        let partial = run_dir.join(format!("{RESOLVED_CONFIG_FILE}.partial"));
        fs::write(&partial, self.to_toml()).map_err(write_error)?;
        fs::rename(&partial, &path).map_err(write_error)?;
        Ok(path)
    }

    /// Where `key` (dotted) was set; `None` for values no file or `--set` sets.
    pub fn origin(&self, key: &str) -> Option<&Origin> {
        self.provenance.get(key)
    }

    /// Where every key was set.
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Peak learning rate (given, or from timm's batch-size rule).
    pub fn lr(&self) -> f64 {
        self.experiment.optim.lr.expect("filled in by load")
    }

    /// The run directory.
    pub fn output_dir(&self) -> &Path {
        self.experiment.logging.output_dir.as_deref().expect("filled in by load")
    }

    /// Images per optimiser update: `data.batch_size * train.accum_steps`.
    pub fn global_batch_size(&self) -> usize {
        self.experiment.data.batch_size * self.experiment.train.accum_steps
    }
}

/// Dataset root and splits of Fashion-MNIST / an image folder, and the class count when the
/// configuration knows it.
fn fill_data_defaults(experiment: &mut ExperimentConfig) {
    let known_classes = known_class_count(experiment);
    let data = &mut experiment.data;
    let (train, val) = match data.dataset {
        DatasetKind::FashionMnist => {
            data.root.get_or_insert_with(|| PathBuf::from(FASHION_MNIST_ROOT));
            ("train", "test")
        }
        DatasetKind::ImageFolder => ("train", "val"),
        DatasetKind::Ade20k => {
            if data.reduce_zero_label.is_none() {
                // ADE20K's own label maps keep 0 for "other"; a data set with its own class list
                // counts its classes from 0
                let own_classes = data.classes_file.is_some() || data.root.as_ref().is_some_and(|r| r.join("classes.txt").is_file());
                data.reduce_zero_label = Some(!own_classes);
            }
            ("training", "validation")
        }
    };
    data.train_split.get_or_insert_with(|| train.to_string());
    data.val_split.get_or_insert_with(|| val.to_string());
    if experiment.model.num_classes.is_none() {
        experiment.model.num_classes = known_classes;
    }
}

/// Values the model decides unless the files do: input channels and size, drop rates, and the
/// evaluation crop and normalisation registered with the name.
fn fill_model_defaults(experiment: &mut ExperimentConfig, model: &ResolvedModel) {
    let fields = model.fields();
    let number = |field: &str| fields.get(field).and_then(|v| v.as_f64());
    let section = &mut experiment.model;
    section.in_chans = Some(model.config.in_chans());
    section.img_size = Some(model.config.img_size().into());
    if section.drop_path_rate.is_none() {
        section.drop_path_rate = number("drop_path_rate");
    }
    if section.drop_rate.is_none() {
        section.drop_rate = number("drop_rate");
    }

    let pretrained = &model.entry.pretrained;
    let augmentation = &mut experiment.augmentation;
    augmentation.crop_pct.get_or_insert(pretrained.crop_pct);
    if model.config.in_chans() == pretrained.mean.len() {
        augmentation.mean.get_or_insert_with(|| pretrained.mean.to_vec());
        augmentation.std.get_or_insert_with(|| pretrained.std.to_vec());
    }
    let segmentation = &mut experiment.segmentation;
    segmentation.crop_size.get_or_insert(model.config.img_size().into());
    segmentation.test_scale.get_or_insert(segmentation.scale);
    if segmentation.test_mode == TestMode::Slide && segmentation.test_stride.is_none() {
        let [h, w] = segmentation.crop_size.expect("set above").to_array();
        // mmseg's 341 for a 512 crop
        segmentation.test_stride = Some([(2 * h / 3).max(1), (2 * w / 3).max(1)].into());
    }
    if experiment.data.grayscale.is_none() {
        experiment.data.grayscale = match (model.config.in_chans(), experiment.data.dataset) {
            (1, _) => Some(GrayscaleMode::Luma),
            (3, DatasetKind::FashionMnist) => Some(GrayscaleMode::ExpandRgb),
            _ => None,
        };
    }
}

/// timm train.py's learning rate for an experiment that sets none, trained on `ranks`
/// data-parallel ranks: `lr_base * global_batch / lr_base_size` (square-rooted for adaptive
/// optimisers), `lr_base` 0.1 and `lr_base_size` 256, where `global_batch` is `data.batch_size *
/// train.accum_steps * ranks`.
pub fn timm_lr(experiment: &ExperimentConfig, ranks: usize) -> f64 {
    let ratio = (experiment.data.batch_size * experiment.train.accum_steps * ranks) as f64 / 256.0;
    let scale = match experiment.optim.name {
        OptimizerName::Adamw => ratio.sqrt(),
        OptimizerName::Sgd => ratio,
    };
    0.1 * scale
}

/// timm's learning-rate rule, the default warm-up, and the run directory.
fn fill_training_defaults(experiment: &mut ExperimentConfig, source: &Path) {
    if experiment.optim.lr.is_none() {
        experiment.optim.lr = Some(timm_lr(experiment, 1));
    }
    experiment.checkpoint.keep_best_by.get_or_insert(match experiment.task {
        Task::Classification => BestMetric::Top1,
        Task::Segmentation => BestMetric::Miou,
    });
    let schedule = &mut experiment.schedule;
    if schedule.warmup_epochs.is_none() && schedule.warmup_iters.is_none() {
        schedule.warmup_epochs = Some(DEFAULT_WARMUP_EPOCHS);
    }
    if experiment.logging.output_dir.is_none() {
        let stem = source.file_stem().map_or_else(|| "experiment".into(), |s| s.to_string_lossy().into_owned());
        experiment.logging.output_dir = Some(Path::new("runs").join(stem));
    }
}

//! Builds the train and validation loaders an experiment describes.

use std::path::PathBuf;
use std::sync::Arc;

use kiln_data::{
    CropMode, DataError, Dataset, DataLoader, EvalTransform, FashionMnistSplit, IdxDataset, ImageFolder, Interpolation,
    LabelledImages, LoaderConfig, Mixup, RgbImage, Shard, Subset, SubsetSpec, TrainTransformConfig, read_class_list,
};

use kiln_models::PretrainedCfg;

use crate::config::ResolvedConfig;
use crate::config::schema::{ClassList, DatasetKind};

/// The two loaders of a classification run.
pub struct ClassificationData {
    /// Shuffled, augmented, last incomplete batch dropped.
    pub train: DataLoader,
    /// In order, evaluation transform, every example.
    pub val: DataLoader,
    /// Class names by label.
    pub classes: Vec<String>,
}

/// Opens the data sets and builds both loaders, for this rank's `shard` of every batch.
pub fn build(cfg: &ResolvedConfig, shard: Shard) -> Result<ClassificationData, DataError> {
    let exp = &cfg.experiment;
    let data = &exp.data;
    let root = data.root.clone().unwrap_or_else(|| PathBuf::from("datasets/fashion-mnist"));
    let open = |split: &str| -> Result<Arc<dyn Dataset>, DataError> {
        let dataset: Arc<dyn Dataset> = match data.dataset {
            DatasetKind::FashionMnist => {
                let split = if split == "train" { FashionMnistSplit::Train } else { FashionMnistSplit::Test };
                Arc::new(IdxDataset::fashion_mnist(&root, split)?)
            }
            DatasetKind::ImageFolder => Arc::new(ImageFolder::open(root.join(split))?),
            DatasetKind::Ade20k => {
                return Err(DataError::InvalidData("the ADE20K layout holds segmentation data; set task = \"segmentation\"".into()));
            }
        };
        let classes = match &data.class_list {
            Some(ClassList::Names(names)) => Some(names.clone()),
            Some(ClassList::File(path)) => Some(read_class_list(path)?),
            None => None,
        };
        let dataset = if classes.is_some() || data.per_class.is_some() || data.fraction.is_some() {
            let spec = SubsetSpec { classes, per_class: data.per_class, fraction: data.fraction, seed: exp.train.seed };
            Arc::new(Subset::new(dataset, &spec)?) as Arc<dyn Dataset>
        } else {
            dataset
        };
        Ok(match data.pad_to {
            Some(side) => Arc::new(Padded { inner: dataset, side }),
            None => dataset,
        })
    };
    let train_set = open(data.train_split.as_deref().unwrap_or("train"))?;
    let val_set = open(data.val_split.as_deref().unwrap_or("val"))?;
    let classes = train_set.classes().to_vec();

    let aug = &exp.augmentation;
    let [height, width] = cfg.model.img_size();
    let channels = cfg.model.in_chans();
    let [mean, std] = normalisation(cfg);
    let mut train_transform = TrainTransformConfig::imagenet([height, width]);
    train_transform.scale = aug.rrc_scale;
    train_transform.ratio = aug.rrc_ratio;
    train_transform.hflip = aug.hflip;
    train_transform.color_jitter = (aug.color_jitter > 0.0).then(|| kiln_data::ColorJitter::uniform(aug.color_jitter));
    train_transform.auto_augment = aug.auto_augment.clone();
    train_transform.interpolation = aug.interpolation;
    train_transform.mean = mean;
    train_transform.std = std;
    train_transform.channels = channels;
    train_transform.re_prob = aug.reprob;
    train_transform.re_mode = aug.remode;
    let crop_pct = aug.crop_pct.unwrap_or(cfg.pretrained_cfg.crop_pct);
    let eval_transform = eval_transform(&cfg.pretrained_cfg, [height, width], channels, crop_pct, mean, std)?;

    let mut train_config = LoaderConfig { shard, ..LoaderConfig::train(data.batch_size, exp.train.seed) };
    let mut val_config = LoaderConfig { shard, ..LoaderConfig::eval(data.batch_size) };
    if data.workers > 0 {
        train_config.workers = data.workers;
        val_config.workers = data.workers;
    }
    let mut train = DataLoader::new(train_set, Arc::new(train_transform.build()?), train_config)?;
    if aug.mixup > 0.0 || aug.cutmix > 0.0 {
        let mut mixup = Mixup::new(classes.len());
        mixup.mixup_alpha = aug.mixup;
        mixup.cutmix_alpha = aug.cutmix;
        mixup.prob = aug.mixup_prob;
        mixup.switch_prob = aug.mixup_switch_prob;
        mixup.label_smoothing = aug.label_smoothing;
        train = train.with_mixup(mixup, None)?;
    }
    let val = DataLoader::new(val_set, Arc::new(eval_transform), val_config)?;
    Ok(ClassificationData { train, val, classes })
}

/// The input normalisation of an experiment, `[mean, std]`: `augmentation.mean`/`std` where set
/// (one value serves every channel), else the model's pretrained defaults. Classification and
/// segmentation both normalise by it.
pub fn normalisation(cfg: &ResolvedConfig) -> [[f32; 3]; 2] {
    let aug = &cfg.experiment.augmentation;
    let stats = |v: &Option<Vec<f64>>, default: [f64; 3]| -> [f32; 3] {
        let v = v.clone().unwrap_or_else(|| default.to_vec());
        let at = |i: usize| v.get(i).or(v.first()).copied().unwrap_or(0.0) as f32;
        [at(0), at(1), at(2)]
    };
    [stats(&aug.mean, cfg.pretrained_cfg.mean), stats(&aug.std, cfg.pretrained_cfg.std)]
}

/// timm's evaluation transform for a model with evaluation defaults `pretrained`, built for
/// `img_size`: resize by `img_size / crop_pct` with the model's interpolation, centre crop (or
/// squash, for the models timm squashes), normalise by `mean`/`std`. The validation loader and
/// `kiln predict` both preprocess through it.
pub fn eval_transform(
    pretrained: &PretrainedCfg,
    img_size: [usize; 2],
    channels: usize,
    crop_pct: f64,
    mean: [f32; 3],
    std: [f32; 3],
) -> Result<EvalTransform, DataError> {
    let transform = EvalTransform {
        img_size,
        crop_pct,
        interpolation: Interpolation::from_timm(pretrained.interpolation)?,
        mean,
        std,
        channels,
        crop_mode: CropMode::from_timm(pretrained.crop_mode)?,
    };
    transform.validate()?;
    Ok(transform)
}

/// Zero-pads every image to `side × side`, centred (torchvision's `Pad`), as the quickstart pads
/// Fashion-MNIST's 28 px to the 32 px its Swin tiles.
struct Padded {
    inner: Arc<dyn Dataset>,
    side: usize,
}

impl LabelledImages for Padded {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
}

impl Dataset for Padded {
    fn label(&self, index: usize) -> usize {
        self.inner.label(index)
    }
    fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError> {
        let (image, label) = self.inner.get(index)?;
        let side = self.side as u32;
        if image.width() >= side && image.height() >= side {
            return Ok((image, label));
        }
        let mut padded = RgbImage::new(side.max(image.width()), side.max(image.height()));
        let (left, top) = ((padded.width() - image.width()) / 2, (padded.height() - image.height()) / 2);
        image::imageops::replace(&mut padded, &image, left as i64, top as i64);
        Ok((padded, label))
    }
}

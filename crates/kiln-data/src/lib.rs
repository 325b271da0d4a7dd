//! Data for Kiln: data sets, decoding, timm's transforms and batching, with no tensor library.
//!
//! Everything here produces plain buffers: images as planar `[channels, height, width]` f32
//! ([`ImageTensor`]) and batches as `[batch, channels, height, width]` f32 with their labels and
//! soft targets ([`Batch`]); the trainer turns them into tensors.
//!
//! - **Decoding**: [`load_image`] decodes a file to 8-bit RGB as `PIL.Image.open(p).convert('RGB')`
//!   does.
//! - **Data sets** ([`Dataset`]; its size and class names are [`LabelledImages`], shared with
//!   [`SegDataset`]): [`ImageFolder`] (ImageNet's `train/<wnid>/*.JPEG`, and a flat `val/` with a
//!   labels file), [`IdxDataset`] (Fashion-MNIST, shipped in `datasets/fashion-mnist`), and
//!   [`Subset`]s of either by class list, count or fraction.
//! - **Evaluation**: [`EvalTransform`] is timm's `transforms_imagenet_eval`, with Pillow's
//!   resampling ([`resize`]) bit for bit.
//! - **Training**: [`TrainTransformConfig`] builds timm's `transforms_imagenet_train`
//!   ([`RandomResizedCrop`], [`RandomFlip`], [`RandAugment`], [`ColorJitter`], [`RandomErasing`]);
//!   the 8-bit operations are Pillow's, bit for bit ([`image_ops`]). [`Mixup`] mixes batches.
//! - **Batching**: [`DataLoader`] runs all of it on worker threads, reproducibly for a seed
//!   whatever the thread timing, and resumably from a [`LoaderPosition`].
//! - **Segmentation**: [`SegFolder`] reads the ADE20K layout (mmseg's `reduce_zero_label`,
//!   class lists with palettes, checked masks); [`SegTransformConfig`] builds mmseg's joint
//!   image + mask pipelines; [`SegLoader`] batches them on the same workers as [`DataLoader`];
//!   [`generate_fashion_scenes`] writes a small data set in that layout from Fashion-MNIST.
//!
//! ```no_run
//! use kiln_data::{CropMode, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, Interpolation, load_image};
//!
//! # fn main() -> Result<(), kiln_data::DataError> {
//! let transform = EvalTransform {
//!     img_size: [224, 224],
//!     crop_pct: 0.875,
//!     interpolation: Interpolation::from_timm("bicubic")?,
//!     mean: IMAGENET_MEAN,
//!     std: IMAGENET_STD,
//!     channels: 3,
//!     crop_mode: CropMode::from_timm("center")?,
//! };
//! let input = transform.apply(&load_image("cat.jpg")?);
//! assert_eq!(input.shape(), [3, 224, 224]);
//! # Ok(())
//! # }
//! ```

mod augment;
mod dataset;
mod error;
mod fashion_scenes;
mod folder;
mod idx;
pub mod image_ops;
mod labels;
mod load;
mod loader;
mod mixup;
mod rand_augment;
mod resample;
mod rng;
mod seg_loader;
mod seg_transform;
mod segmentation;
mod train_interpolation;
mod transform;

pub use augment::{
    ColorJitter, CropBox, ErasingMode, FlipAxis, RandomErasing, RandomFlip, RandomResizedCrop, TrainTransform,
    TrainTransformConfig,
};
pub use dataset::{Dataset, LabelledImages, Subset, SubsetSpec, read_class_list};
pub use error::DataError;
pub use fashion_scenes::{FashionScenesConfig, FashionScenesSummary, SplitSummary, generate_fashion_scenes};
pub use folder::{IMAGE_EXTENSIONS, ImageFolder};
pub use idx::{FASHION_MNIST_CLASSES, FashionMnistSplit, IdxDataset, IdxImages, read_idx_images, read_idx_labels};
pub use image::{GrayImage, RgbImage};
pub use labels::{imagenet1k_labels, imagenet1k_wnids};
pub use load::{load_image, load_luma_image, to_luma, to_rgb};
pub use loader::{Batch, DataLoader, EpochBatches, LoaderConfig, LoaderPosition, Shard, Throughput};
pub use mixup::{MixKind, MixOutcome, Mixup, mixup_target};
pub use rand_augment::{AugmentOp, OpParams, RandAugment, fill_from_mean};
pub use resample::{Interpolation, resize};
pub use rng::Rng;
pub use seg_loader::{SegBatch, SegLoader};
pub use seg_transform::{
    CropWindow, EvalResize, PhotoMetricDistortion, RandomCrop, RandomResize, SegEvalTransform, SegExample,
    SegTrainTransform, SegTransform, SegTransformConfig, keep_ratio_size, pad_to_size,
};
pub use segmentation::{
    IGNORE_INDEX, LabelMap, SegClasses, SegDataset, SegFolder, SegFolderConfig, SegSplit, SegSubset, read_stem_list,
    reduce_zero_label,
};
pub use train_interpolation::TrainInterpolation;
pub use transform::{
    CropMode, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, ImageTensor, ImageTransform, center_crop,
    to_normalized_tensor,
};

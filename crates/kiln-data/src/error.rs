//! Errors of kiln-data (image decoding, data sets, augmentation and batching), worded for the
//! person at the terminal: each names the file or setting at fault and says what to do.

use std::path::PathBuf;

/// What can go wrong reading images and data sets, or configuring preprocessing and batching.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No file at the path.
    #[error("image file {path} does not exist; check the path")]
    NotFound {
        /// The path asked for.
        path: PathBuf,
    },
    /// The file exists but cannot be read (a directory, no permission, an I/O failure).
    #[error("cannot read image file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The content is no image format Kiln recognises.
    #[error("{path} is not an image Kiln can read; supported formats are PNG, JPEG, BMP, TIFF and WebP")]
    NotAnImage {
        /// The file.
        path: PathBuf,
    },
    /// A recognised image format that this build does not decode.
    #[error("{path} is a {format} image, which Kiln does not decode; convert it to PNG or JPEG")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
        /// The format its content announces.
        format: String,
    },
    /// An image whose data is truncated, corrupt or uses a variant the decoder rejects.
    #[error("cannot decode image {path}: {reason}; the file may be truncated or corrupt, try re-saving it as PNG")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        reason: String,
    },
    /// An image whose dimensions exceed the decoder's memory limits (512 MiB).
    #[error("image {path} is too large to decode ({reason}); downscale it first")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The decoder's reason.
        reason: String,
    },
    /// An interpolation name timm does not know.
    #[error("unknown interpolation '{name}'; use one of nearest, bilinear, bicubic, box, hamming, lanczos")]
    UnknownInterpolation {
        /// The name given.
        name: String,
    },
    /// A crop mode Kiln does not implement.
    #[error("unknown or unsupported crop mode '{name}'; use center or squash")]
    UnknownCropMode {
        /// The name given.
        name: String,
    },
    /// A preprocessing configuration that cannot be applied.
    #[error("invalid preprocessing configuration: {0}")]
    InvalidTransform(String),
    /// A RandAugment string (timm's `auto_augment`, e.g. `rand-m9-mstd0.5-inc1`) Kiln cannot parse.
    #[error("cannot use auto_augment '{spec}': {reason}; write it as timm does, e.g. 'rand-m9-mstd0.5-inc1'")]
    InvalidAugment {
        /// The string given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A data set, split directory or labels file that is not there.
    #[error(
        "{what} {path} does not exist; check the data root in the config (datasets/README.md describes the layouts)"
    )]
    MissingPath {
        /// The path looked for.
        path: PathBuf,
        /// What it should have been, e.g. "image folder" or "idx file".
        what: &'static str,
    },
    /// A data set file or directory that exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// An idx file (MNIST format) whose header is not what the reader expects.
    #[error("{path} is not a valid idx file: {reason}")]
    BadIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong, e.g. the magic number found.
        reason: String,
    },
    /// An idx file shorter than its header announces.
    #[error(
        "idx file {path} is truncated: its header announces {expected} data bytes but it holds {actual}; download it again"
    )]
    TruncatedIdx {
        /// The file.
        path: PathBuf,
        /// Data bytes the header announces.
        expected: usize,
        /// Data bytes present.
        actual: usize,
    },
    /// An images file and a labels file that do not describe the same number of examples.
    #[error(
        "{images} holds {image_count} images but {labels} holds {label_count} labels; the two files must come from the same split"
    )]
    CountMismatch {
        /// The images file.
        images: PathBuf,
        /// Images it holds.
        image_count: usize,
        /// The labels file.
        labels: PathBuf,
        /// Labels it holds.
        label_count: usize,
    },
    /// A labels or class-list file with a line Kiln cannot use.
    #[error("{path}, line {line}: {reason}")]
    BadListFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line and how to fix it.
        reason: String,
    },
    /// A data set (or a subset of one) with no examples, which cannot be trained or evaluated on.
    #[error("{path} holds no usable images: {reason}")]
    EmptyDataset {
        /// The directory or file.
        path: PathBuf,
        /// Why nothing was found, and what was looked for.
        reason: String,
    },
    /// A data-loading configuration that cannot be applied (batch size, subset, mixup, ...).
    #[error("invalid data configuration: {0}")]
    InvalidData(String),
    /// A segmentation mask (annotation) that is missing or cannot be trained on: another size
    /// than its image, not single-channel 8-bit, or a label that is no class nor the ignore index.
    #[error("segmentation mask {path}: {reason}")]
    BadMask {
        /// The mask file (for a missing mask, where it was looked for).
        path: PathBuf,
        /// What is wrong and what to do about it.
        reason: String,
    },
}

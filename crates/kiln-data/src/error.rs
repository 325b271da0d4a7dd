//! Errors of image loading and preprocessing, worded for the person at the terminal.

use std::path::PathBuf;

/// What can go wrong reading an image or configuring its preprocessing.
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
}

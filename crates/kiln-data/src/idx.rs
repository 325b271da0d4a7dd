//! The idx format of MNIST and Fashion-MNIST, gzipped or raw, and Fashion-MNIST as a [`Dataset`].
//!
//! An idx file is a 4-byte magic number `00 00 <type> <dims>`, then `<dims>` big-endian `u32`
//! sizes, then the data in row-major order. Kiln reads unsigned-byte data (type `0x08`): images
//! are `[count, rows, columns]` (`dims = 3`), labels `[count]` (`dims = 1`). A file starting with
//! the gzip magic `1f 8b` is decompressed first, whatever its name.

use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use image::{GrayImage, RgbImage};

use crate::{DataError, Dataset, LabelledImages};

/// Fashion-MNIST's ten classes, by label (from its README).
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// The images of an idx file: `count` grayscale images of `rows` x `columns`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub columns: usize,
    /// `[count, rows, columns]` bytes, image-major then row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// Image `index` as an 8-bit grayscale image.
    ///
    /// # Panics
    /// If `index >= count`.
    pub fn image(&self, index: usize) -> GrayImage {
        let size = self.rows * self.columns;
        let bytes = self.pixels[index * size..(index + 1) * size].to_vec();
        GrayImage::from_raw(self.columns as u32, self.rows as u32, bytes).expect("rows * columns bytes")
    }
}

/// Reads an idx images file (`dims = 3`, unsigned bytes), gzipped or raw.
///
/// # Errors
/// [`DataError::MissingPath`] / [`DataError::Io`] when the file cannot be read;
/// [`DataError::BadIdx`] for a wrong magic number, data type or dimension count (a labels file
/// given as images, say), a corrupt gzip stream or bytes after the data;
/// [`DataError::TruncatedIdx`] when the data is shorter than the header announces.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_idx(path.as_ref(), 3)?;
    Ok(IdxImages { count: dims[0], rows: dims[1], columns: dims[2], pixels })
}

/// Reads an idx labels file (`dims = 1`, unsigned bytes), gzipped or raw.
///
/// # Errors
/// As [`read_idx_images`].
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(path.as_ref(), 1)?.1)
}

fn read_idx(path: &Path, expected_dims: usize) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let bad = |reason: String| DataError::BadIdx { path: path.to_path_buf(), reason };
    let raw = std::fs::read(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => DataError::MissingPath { path: path.to_path_buf(), what: "idx file" },
        _ => DataError::Io { path: path.to_path_buf(), source },
    })?;
    let bytes = if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| bad(format!("its gzip stream is truncated or corrupt ({e}); download it again")))?;
        out
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(bad(format!("it is {} bytes long, too short for the 4-byte magic number", bytes.len())));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!("magic number {magic:#010x} does not start with two zero bytes")));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "data type {:#04x} is not unsigned bytes (0x08), the only type Kiln reads (magic {magic:#010x})",
            bytes[2]
        )));
    }
    let dims = bytes[3] as usize;
    if dims != expected_dims {
        let kind = |d| if d == 1 { "labels (1 dimension)" } else { "images (3 dimensions)" };
        return Err(bad(format!(
            "it holds {dims}-dimensional data, expected {}; are the images and labels files swapped?",
            kind(expected_dims)
        )));
    }
    let header = 4 + 4 * dims;
    if bytes.len() < header {
        return Err(bad(format!("it ends inside its {header}-byte header ({} bytes)", bytes.len())));
    }
    let sizes: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected = sizes
        .iter()
        .try_fold(1usize, |acc, &s| acc.checked_mul(s))
        .ok_or_else(|| bad(format!("sizes {sizes:?} overflow")))?;
    let actual = bytes.len() - header;
    if actual < expected {
        return Err(DataError::TruncatedIdx { path: path.to_path_buf(), expected, actual });
    }
    if actual > expected {
        return Err(bad(format!(
            "{} bytes follow the {expected} data bytes its header announces ({sizes:?})",
            actual - expected
        )));
    }
    Ok((sizes, bytes[header..].to_vec()))
}

/// Which Fashion-MNIST split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FashionMnistSplit {
    /// 60,000 training examples (`train-*-ubyte`).
    Train,
    /// 10,000 test examples (`t10k-*-ubyte`).
    Test,
}

/// An idx images file with its labels file: Fashion-MNIST, MNIST, or any such pair.
#[derive(Debug, Clone)]
pub struct IdxDataset {
    images: IdxImages,
    labels: Vec<u8>,
    classes: Vec<String>,
}

impl IdxDataset {
    /// Reads an images file and its labels file; labels must be below `classes.len()`.
    ///
    /// # Errors
    /// As [`read_idx_images`] for either file; [`DataError::CountMismatch`] when the two files
    /// hold different numbers of examples; [`DataError::BadIdx`] for a label outside the classes.
    pub fn open(images: impl AsRef<Path>, labels: impl AsRef<Path>, classes: Vec<String>) -> Result<Self, DataError> {
        let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
        let images = read_idx_images(images_path)?;
        let labels = read_idx_labels(labels_path)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images: images_path.to_path_buf(),
                image_count: images.count,
                labels: labels_path.to_path_buf(),
                label_count: labels.len(),
            });
        }
        if let Some((index, &label)) = labels.iter().enumerate().find(|&(_, &l)| l as usize >= classes.len()) {
            return Err(DataError::BadIdx {
                path: labels_path.to_path_buf(),
                reason: format!("label {label} of example {index} is not below the {} classes", classes.len()),
            });
        }
        Ok(IdxDataset { images, labels, classes })
    }

    /// Fashion-MNIST from `dir` (e.g. the shipped `datasets/fashion-mnist`), which holds
    /// `{train,t10k}-{images-idx3,labels-idx1}-ubyte`, each gzipped (`.gz`) or not.
    ///
    /// # Errors
    /// As [`IdxDataset::open`]; [`DataError::MissingPath`] names the `.gz` file when neither form
    /// is present.
    pub fn fashion_mnist(dir: impl AsRef<Path>, split: FashionMnistSplit) -> Result<Self, DataError> {
        let dir = dir.as_ref();
        let prefix = match split {
            FashionMnistSplit::Train => "train",
            FashionMnistSplit::Test => "t10k",
        };
        let find = |stem: String| -> PathBuf {
            let raw = dir.join(&stem);
            if raw.is_file() { raw } else { dir.join(format!("{stem}.gz")) }
        };
        let classes = FASHION_MNIST_CLASSES.iter().map(|c| c.to_string()).collect();
        Self::open(find(format!("{prefix}-images-idx3-ubyte")), find(format!("{prefix}-labels-idx1-ubyte")), classes)
    }

    /// The images.
    pub fn images(&self) -> &IdxImages {
        &self.images
    }

    /// The labels, one per image.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }
}

impl LabelledImages for IdxDataset {
    fn len(&self) -> usize {
        self.images.count
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for IdxDataset {
    fn label(&self, index: usize) -> usize {
        self.labels[index] as usize
    }

    /// The grayscale image replicated to RGB.
    fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError> {
        let gray = self.images.image(index);
        let rgb = gray.as_raw().iter().flat_map(|&l| [l; 3]).collect();
        let image = RgbImage::from_raw(gray.width(), gray.height(), rgb).expect("three bytes per pixel");
        Ok((image, self.label(index)))
    }
}

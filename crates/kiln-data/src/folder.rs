//! Image folders in the ImageNet layout, as torchvision's `ImageFolder` and timm's folder reader
//! read them.
//!
//! Two layouts:
//!
//! - **class folders**: `<root>/<class>/**/<image>`, e.g. `train/n01440764/n01440764_10026.JPEG`.
//!   Classes are the sub-directory names sorted by byte order (Python's `sorted`), label `i` being
//!   the `i`-th; images are found recursively under each class folder and sorted by path.
//! - **flat with a labels file**: `<dir>/<image>` plus a file giving each image's class, e.g.
//!   ImageNet's `val/ILSVRC2012_val_00000001.JPEG` with Kaggle's `LOC_val_solution.csv`. The class
//!   order comes from elsewhere (the train split), so labels agree between splits.
//!
//! Accepted labels files (detected from the first line):
//!
//! - Kaggle's ImageNet `LOC_val_solution.csv`: a header `ImageId,PredictionString`, then
//!   `ILSVRC2012_val_00008726,n02119789 255 142 454 329 ...`; the class is the first word of the
//!   prediction string.
//! - Plain text, one `<file name> <class name>` per line, separated by whitespace or one comma
//!   (`ILSVRC2012_val_00000001.JPEG n01751748`); blank lines and `#` comments are skipped.
//!
//! In both, the file name may omit its extension. ImageNet's original
//! `ILSVRC2012_validation_ground_truth.txt` (bare 1-based ILSVRC ids, which are *not* in sorted
//! WNID order) is not accepted: convert it to one of the above first.
//!
//! Image files are recognised by extension, case-insensitively: `jpg`, `jpeg`, `png`, `bmp`,
//! `tif`, `tiff`, `webp`. Other files, and entries whose name starts with `.` (such as
//! `.ipynb_checkpoints`, which torchvision would take for a class), are ignored. A file that fails
//! to decode is reported, with its path, when it is read.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::load::read_text;
use crate::{DataError, Dataset, LabelledImages, load_image};

/// Extensions of the files an image folder lists (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp"];

/// A labelled image folder (either layout of the module docs).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    classes: Vec<String>,
    samples: Vec<(PathBuf, usize)>,
}

impl ImageFolder {
    /// Opens `<root>/<class>/...`, the classes being `root`'s sub-directories sorted by name
    /// (torchvision's `ImageFolder`; timm's `ImageDataset` on a folder).
    ///
    /// # Errors
    /// [`DataError::MissingPath`] when `root` does not exist; [`DataError::Io`] when a
    /// directory cannot be listed; [`DataError::EmptyDataset`] when `root` has no class folder
    /// or a class folder holds no image.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, DataError> {
        let root = root.as_ref();
        let classes = class_directories(root)?;
        Self::open_with_classes(root, &classes)
    }

    /// Opens `<root>/<class>/...` with labels indexed by `classes` (typically the train split's
    /// [`Dataset::classes`], so that a validation split missing a class keeps the same labels).
    /// Classes without a folder under `root` simply have no examples.
    ///
    /// # Errors
    /// As [`ImageFolder::open`], and [`DataError::InvalidData`] for a class folder whose name is
    /// not in `classes`.
    pub fn open_with_classes(root: impl AsRef<Path>, classes: &[String]) -> Result<Self, DataError> {
        let root = root.as_ref();
        let position: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
        let mut samples = Vec::new();
        for name in class_directories(root)? {
            let Some(&label) = position.get(name.as_str()) else {
                return Err(DataError::InvalidData(format!(
                    "{} is a class folder of {}, but '{name}' is not among the {} classes of the training split; the splits must have the same classes",
                    root.join(&name).display(),
                    root.display(),
                    classes.len()
                )));
            };
            let dir = root.join(&name);
            let mut files = Vec::new();
            collect_images(&dir, &mut files)?;
            if files.is_empty() {
                return Err(DataError::EmptyDataset {
                    path: dir,
                    reason: format!("the class folder has no image files ({})", IMAGE_EXTENSIONS.join(", ")),
                });
            }
            files.sort();
            samples.extend(files.into_iter().map(|f| (f, label)));
        }
        Ok(ImageFolder { root: root.to_path_buf(), classes: classes.to_vec(), samples })
    }

    /// Opens a flat directory of images whose classes are given by `labels_file` (either format
    /// of the module docs), with labels indexed by `classes` (the train split's).
    ///
    /// Every image in `dir` must have a label; labels of files that are not in `dir` are
    /// ignored, so a partial copy of a validation set can be used with the full labels file.
    ///
    /// # Errors
    /// [`DataError::MissingPath`] / [`DataError::Io`] for `dir` or `labels_file`;
    /// [`DataError::BadListFile`] for a line of `labels_file` that cannot be parsed or names an
    /// unknown class (with its line number); [`DataError::InvalidData`] for an image without a
    /// label; [`DataError::EmptyDataset`] for a directory with no image.
    pub fn open_flat(
        dir: impl AsRef<Path>,
        labels_file: impl AsRef<Path>,
        classes: &[String],
    ) -> Result<Self, DataError> {
        let (dir, labels_file) = (dir.as_ref(), labels_file.as_ref());
        let labels = read_labels_file(labels_file, classes)?;
        let mut files = Vec::new();
        for entry in list_dir(dir, "image directory")? {
            if entry.is_file && has_image_extension(&entry.path) {
                files.push(entry.path);
            }
        }
        if files.is_empty() {
            return Err(DataError::EmptyDataset {
                path: dir.to_path_buf(),
                reason: format!("no image files ({}) directly in the directory", IMAGE_EXTENSIONS.join(", ")),
            });
        }
        files.sort();
        let mut samples = Vec::with_capacity(files.len());
        for file in files {
            let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let stem = file.file_stem().and_then(|n| n.to_str()).unwrap_or_default();
            let Some(&label) = labels.get(name).or_else(|| labels.get(stem)) else {
                return Err(DataError::InvalidData(format!(
                    "{} has no entry in the labels file {}; every image of a flat split needs a label (use the labels file of this split)",
                    file.display(),
                    labels_file.display()
                )));
            };
            samples.push((file, label));
        }
        Ok(ImageFolder { root: dir.to_path_buf(), classes: classes.to_vec(), samples })
    }

    /// The directory opened.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every example: image path and label, in label order then path order (class folders) or
    /// path order (flat).
    pub fn samples(&self) -> &[(PathBuf, usize)] {
        &self.samples
    }
}

impl LabelledImages for ImageFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes
    }
}

impl Dataset for ImageFolder {
    fn label(&self, index: usize) -> usize {
        self.samples[index].1
    }

    /// Decodes with [`load_image`] (`Image.open(p).convert('RGB')`).
    fn get(&self, index: usize) -> Result<(RgbImage, usize), DataError> {
        let (path, label) = &self.samples[index];
        Ok((load_image(path)?, *label))
    }
}

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|known| known.eq_ignore_ascii_case(e)))
}

pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    pub(crate) is_dir: bool,
    pub(crate) is_file: bool,
}

/// The entries of `dir` not starting with `.`, symbolic links followed.
pub(crate) fn list_dir(dir: &Path, what: &'static str) -> Result<Vec<Entry>, DataError> {
    let io = |source: std::io::Error| match source.kind() {
        ErrorKind::NotFound => DataError::MissingPath { path: dir.to_path_buf(), what },
        _ => DataError::Io { path: dir.to_path_buf(), source },
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        let path = entry.path();
        // `metadata` follows links, as torchvision's os.walk(followlinks=True) does.
        let meta = std::fs::metadata(&path).map_err(|source| DataError::Io { path: path.clone(), source })?;
        entries.push(Entry { is_dir: meta.is_dir(), is_file: meta.is_file(), path });
    }
    Ok(entries)
}

/// The class folder names of `root`, sorted.
fn class_directories(root: &Path) -> Result<Vec<String>, DataError> {
    if root.is_file() {
        return Err(DataError::EmptyDataset {
            path: root.to_path_buf(),
            reason: "it is a file; expected a directory of class folders (<root>/<class>/<image>)".into(),
        });
    }
    let mut classes: Vec<String> = list_dir(root, "image folder")?
        .into_iter()
        .filter(|e| e.is_dir)
        .map(|e| e.path.file_name().expect("listed entries have names").to_string_lossy().into_owned())
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::EmptyDataset {
            path: root.to_path_buf(),
            reason: "no class folders; expected <root>/<class>/<image> (ImageNet's train/n01440764/*.JPEG), or a labels file for a flat directory".into(),
        });
    }
    Ok(classes)
}

fn collect_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for entry in list_dir(dir, "class folder")? {
        if entry.is_dir {
            collect_images(&entry.path, out)?;
        } else if entry.is_file && has_image_extension(&entry.path) {
            out.push(entry.path);
        }
    }
    Ok(())
}

/// File name (or stem) to label, from either labels-file format.
fn read_labels_file(path: &Path, classes: &[String]) -> Result<HashMap<String, usize>, DataError> {
    let text = read_text(path, "labels file")?;
    let position: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let mut lines =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#')).peekable();
    let kaggle = lines.peek().is_some_and(|(_, l)| l.trim().starts_with("ImageId,"));
    if kaggle {
        lines.next();
    }
    let mut labels = HashMap::new();
    for (number, line) in lines {
        let bad = |reason: String| DataError::BadListFile { path: path.to_path_buf(), line: number + 1, reason };
        let line = line.trim();
        let (file, class) = if kaggle {
            let (id, prediction) =
                line.split_once(',').ok_or_else(|| bad(format!("'{line}' is not 'ImageId,PredictionString'")))?;
            let class = prediction.split_whitespace().next().ok_or_else(|| bad(format!("'{line}' has no class")))?;
            (id.trim(), class)
        } else {
            let mut words = line.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty());
            match (words.next(), words.next(), words.next()) {
                (Some(file), Some(class), None) => (file, class),
                _ => return Err(bad(format!("'{line}' is not '<file name> <class name>'"))),
            }
        };
        let &label = position.get(class).ok_or_else(|| {
            bad(format!("class '{class}' is not among the {} classes of the training split", classes.len()))
        })?;
        if labels.insert(file.to_string(), label).is_some() {
            return Err(bad(format!("'{file}' is labelled twice")));
        }
    }
    Ok(labels)
}

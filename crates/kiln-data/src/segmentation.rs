//! Semantic segmentation data sets in the ADE20K layout, read as mmsegmentation's
//! `BaseSegDataset` / `ADE20KDataset` read them.
//!
//! ```text
//! ROOT/images/training/ADE_train_00000001.jpg      ROOT/annotations/training/ADE_train_00000001.png
//! ROOT/images/validation/ADE_val_00000001.jpg      ROOT/annotations/validation/ADE_val_00000001.png
//! ```
//!
//! Images (any of [`crate::IMAGE_EXTENSIONS`]) are paired with the `.png` mask of the same file
//! stem and sorted by path. A mask is a single-channel 8-bit map of class indices; 255
//! ([`IGNORE_INDEX`]) marks pixels no loss or metric counts. ADE20K's masks number the 150
//! classes from 1 and use 0 for "other": [`SegFolderConfig::reduce_zero_label`] maps them as
//! mmseg does (0 -> 255, v -> v - 1). Any data set in this layout works with its own class list
//! ([`SegClasses::read`]).
//!
//! Masks are checked when read, so training never learns silently from a bad one:
//! [`SegDataset::get`] fails, naming the mask, for another size than the image's, a colour or
//! 16-bit mask, or a label that is neither a class nor 255.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use image::{DynamicImage, GrayImage, RgbImage};

use crate::folder::{has_image_extension, list_dir};
use crate::load::read_text;
use crate::load::{decode_bytes, read_image_file};
use crate::{DataError, LabelledImages, Rng, load_image};

/// A segmentation mask: `[height, width]` class indices, [`IGNORE_INDEX`] where unlabelled.
pub type LabelMap = GrayImage;

/// The label of pixels that count in no loss and no metric (mmseg's `ignore_index`).
pub const IGNORE_INDEX: u8 = 255;

/// A segmentation data set the [`crate::SegLoader`] can read from several threads at once.
pub trait SegDataset: LabelledImages {
    /// The image file of example `index`, for messages and visualisation.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn path(&self, index: usize) -> &Path;

    /// Decodes example `index`: the RGB image and its checked mask, of the same size.
    ///
    /// # Errors
    /// The decoding error of a bad image, or [`DataError::BadMask`] naming the mask.
    ///
    /// # Panics
    /// If `index >= len()`.
    fn get(&self, index: usize) -> Result<(RgbImage, LabelMap), DataError>;
}

const ADE20K_CLASSES: &str = include_str!("../data/ade20k_classes.txt");

/// Class names and their display colours, indexed by label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegClasses {
    /// Names, by label.
    pub names: Vec<String>,
    /// `[r, g, b]` colour of each class, by label.
    pub palette: Vec<[u8; 3]>,
}

impl SegClasses {
    /// ADE20K's 150 classes and palette, as mmseg's `ADE20KDataset.METAINFO` lists them
    /// (label 0 is `wall`, after reduce-zero-label).
    pub fn ade20k() -> Self {
        Self::parse(ADE20K_CLASSES, Path::new("data/ade20k_classes.txt")).expect("the shipped ADE20K class list parses")
    }

    /// Reads a classes file: one class per line in label order, `name` or `name r g b` (a name
    /// may hold spaces; three trailing integers in `0..=255` are its colour). Blank lines and
    /// lines starting with `#` are skipped. Classes without a colour get
    /// [`SegClasses::generated_palette`]'s.
    ///
    /// # Errors
    /// [`DataError::MissingPath`] / [`DataError::Io`] when the file cannot be read;
    /// [`DataError::BadListFile`] for a repeated name, a colour on some lines only, or more than
    /// 255 classes (255 is the ignore index); [`DataError::EmptyDataset`] for no class.
    pub fn read(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        Self::parse(&read_text(path, "classes file")?, path)
    }

    fn parse(text: &str, path: &Path) -> Result<Self, DataError> {
        let mut names: Vec<String> = Vec::new();
        let mut colours: Vec<Option<[u8; 3]>> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| DataError::BadListFile { path: path.to_path_buf(), line: number + 1, reason };
            let words: Vec<&str> = line.split_whitespace().collect();
            let colour = match words.len().checked_sub(3) {
                Some(name_words @ 1..) => {
                    let rgb: Vec<u8> = words[name_words..].iter().filter_map(|w| w.parse().ok()).collect();
                    (rgb.len() == 3).then(|| (words[..name_words].join(" "), [rgb[0], rgb[1], rgb[2]]))
                }
                _ => None,
            };
            let (name, colour) = match colour {
                Some((name, rgb)) => (name, Some(rgb)),
                None => (words.join(" "), None),
            };
            if names.contains(&name) {
                return Err(bad(format!("class '{name}' is listed twice")));
            }
            if !colours.is_empty() && colours[0].is_some() != colour.is_some() {
                return Err(bad(format!(
                    "'{line}': give every class a colour 'name r g b', or none (a palette is then generated)"
                )));
            }
            names.push(name);
            colours.push(colour);
        }
        if names.is_empty() {
            return Err(DataError::EmptyDataset {
                path: path.to_path_buf(),
                reason: "the classes file names no class; write one 'name' or 'name r g b' per line".into(),
            });
        }
        if names.len() > IGNORE_INDEX as usize {
            return Err(DataError::BadListFile {
                path: path.to_path_buf(),
                line: 0,
                reason: format!("{} classes: 8-bit masks hold at most 255 (label 255 is ignored)", names.len()),
            });
        }
        let generated = Self::generated_palette(names.len());
        let palette = colours.iter().zip(generated).map(|(c, g)| c.unwrap_or(g)).collect();
        Ok(SegClasses { names, palette })
    }

    /// `names` with the generated palette.
    pub fn with_generated_palette(names: Vec<String>) -> Self {
        let palette = Self::generated_palette(names.len());
        SegClasses { names, palette }
    }

    /// A palette for `n` classes: PASCAL VOC's bit-interleaved colour map (label 0 black, then
    /// distinct saturated colours), deterministic unlike mmseg's random one.
    pub fn generated_palette(n: usize) -> Vec<[u8; 3]> {
        (0..n)
            .map(|label| {
                let (mut rgb, mut bits) = ([0u8; 3], label);
                for shift in (0..8).rev() {
                    for (c, channel) in rgb.iter_mut().enumerate() {
                        *channel |= (((bits >> c) & 1) as u8) << shift;
                    }
                    bits >>= 3;
                }
                rgb
            })
            .collect()
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no classes (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The text of a classes file [`SegClasses::read`] reads back: `name r g b` per line.
    pub fn to_file_text(&self) -> String {
        self.names.iter().zip(&self.palette).map(|(n, [r, g, b])| format!("{n} {r} {g} {b}\n")).collect()
    }
}

/// A split of the ADE20K layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegSplit {
    /// `images/training`, `annotations/training`.
    Training,
    /// `images/validation`, `annotations/validation`.
    Validation,
}

impl SegSplit {
    /// The directory name under `images/` and `annotations/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            SegSplit::Training => "training",
            SegSplit::Validation => "validation",
        }
    }
}

/// Which examples of a split to keep (in the split's sorted order).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SegSubset {
    /// Every image.
    #[default]
    All,
    /// The first `n` images by path (all when there are fewer).
    First(usize),
    /// `count` images chosen at random under `seed` (all when there are fewer).
    Random {
        /// Images kept.
        count: usize,
        /// Seed of the choice; the same seed keeps the same images.
        seed: u64,
    },
    /// The images with these file stems (e.g. `ADE_train_00000001`).
    Stems(Vec<String>),
    /// The images whose stems a list file names ([`read_stem_list`]).
    ListFile(PathBuf),
}

/// How to read a data set in the ADE20K layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegFolderConfig {
    /// mmseg's `reduce_zero_label`: label 0 becomes 255 (ignored), `v` becomes `v - 1`, 255
    /// stays. True for ADE20K, whose 0 means "other"; false where 0 is a real class.
    pub reduce_zero_label: bool,
    /// Classes after reduction.
    pub classes: SegClasses,
    /// Which examples to keep.
    pub subset: SegSubset,
}

impl SegFolderConfig {
    /// ADE20K (SceneParsing, 150 classes): reduce-zero-label, every image.
    pub fn ade20k() -> Self {
        SegFolderConfig { reduce_zero_label: true, classes: SegClasses::ade20k(), subset: SegSubset::All }
    }
}

/// One split of a data set in the ADE20K layout (module docs).
#[derive(Debug, Clone)]
pub struct SegFolder {
    root: PathBuf,
    classes: SegClasses,
    reduce_zero_label: bool,
    /// (image, mask) paths, sorted by image path.
    samples: Vec<(PathBuf, PathBuf)>,
}

impl SegFolder {
    /// Lists `root/images/<split>` and pairs every image with `root/annotations/<split>/<stem>.png`.
    ///
    /// # Errors
    /// [`DataError::MissingPath`] / [`DataError::Io`] for a split directory that cannot be
    /// listed; [`DataError::BadMask`] for an image without a mask (naming where it was looked
    /// for); [`DataError::InvalidData`] for two images of one stem, a subset naming an unknown
    /// stem or keeping nothing; [`DataError::EmptyDataset`] for a split without images.
    pub fn open(root: impl AsRef<Path>, split: SegSplit, config: &SegFolderConfig) -> Result<Self, DataError> {
        let root = root.as_ref();
        let images_dir = root.join("images").join(split.dir_name());
        let masks_dir = root.join("annotations").join(split.dir_name());
        let mut images: Vec<PathBuf> = list_dir(&images_dir, "segmentation image directory")?
            .into_iter()
            .filter(|e| e.is_file && has_image_extension(&e.path))
            .map(|e| e.path)
            .collect();
        images.sort();
        if images.is_empty() {
            return Err(DataError::EmptyDataset {
                path: images_dir,
                reason: "no image files; expected ROOT/images/<split>/*.jpg paired with ROOT/annotations/<split>/*.png"
                    .into(),
            });
        }
        let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut by_stem: HashMap<String, usize> = HashMap::new();
        for (i, image) in images.iter().enumerate() {
            if let Some(first) = by_stem.insert(stem(image), i) {
                return Err(DataError::InvalidData(format!(
                    "{} and {} have the same stem, so they would share one mask; keep one of them",
                    images[first].display(),
                    image.display()
                )));
            }
        }
        let keep: Vec<usize> = match &config.subset {
            SegSubset::All => (0..images.len()).collect(),
            SegSubset::First(n) => (0..images.len().min(*n)).collect(),
            SegSubset::Random { count, seed } => {
                let mut kept = Rng::derive(*seed, &[]).permutation(images.len());
                kept.truncate(*count);
                kept.sort_unstable();
                kept
            }
            SegSubset::Stems(stems) => Self::by_stems(stems, &by_stem, &images_dir, "the subset")?,
            SegSubset::ListFile(list) => {
                let what = format!("the list file {}", list.display());
                Self::by_stems(&read_stem_list(list)?, &by_stem, &images_dir, &what)?
            }
        };
        if keep.is_empty() {
            return Err(DataError::InvalidData(format!(
                "the subset {:?} keeps no image of {}",
                config.subset,
                images_dir.display()
            )));
        }
        let mut samples = Vec::with_capacity(keep.len());
        for i in keep {
            let mask = masks_dir.join(format!("{}.png", stem(&images[i])));
            if !mask.is_file() {
                return Err(DataError::BadMask {
                    path: mask,
                    reason: format!(
                        "it does not exist, but image {} needs it; every image needs a mask of the same file stem (add it, or leave the image out with a subset list)",
                        images[i].display()
                    ),
                });
            }
            samples.push((images[i].clone(), mask));
        }
        Ok(SegFolder {
            root: root.to_path_buf(),
            classes: config.classes.clone(),
            reduce_zero_label: config.reduce_zero_label,
            samples,
        })
    }

    fn by_stems(
        stems: &[String],
        by_stem: &HashMap<String, usize>,
        dir: &Path,
        what: &str,
    ) -> Result<Vec<usize>, DataError> {
        let mut kept = Vec::with_capacity(stems.len());
        for s in stems {
            let Some(&i) = by_stem.get(s) else {
                return Err(DataError::InvalidData(format!(
                    "{what} names image '{s}', which is not in {}; list file stems without directory",
                    dir.display()
                )));
            };
            kept.push(i);
        }
        kept.sort_unstable();
        kept.dedup();
        Ok(kept)
    }

    /// The data set's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every example's (image, mask) paths, sorted by image path.
    pub fn samples(&self) -> &[(PathBuf, PathBuf)] {
        &self.samples
    }

    /// The classes with their palette.
    pub fn class_info(&self) -> &SegClasses {
        &self.classes
    }

    /// Whether masks are read with reduce-zero-label.
    pub fn reduce_zero_label(&self) -> bool {
        self.reduce_zero_label
    }

    /// Reads the mask of example `index`, reduced if configured, and checks its labels.
    ///
    /// # Errors
    /// [`DataError::BadMask`] for a mask that is not single-channel 8-bit or holds a label that
    /// is neither below [`SegDataset::num_classes`] nor 255; decoding errors naming the mask.
    pub fn load_mask(&self, index: usize) -> Result<LabelMap, DataError> {
        let path = &self.samples[index].1;
        let bad = |reason: String| DataError::BadMask { path: path.clone(), reason };
        let bytes = read_image_file(path)?;
        // The decoder expands palette PNGs to RGB; name them before they look like colour masks.
        const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
        if bytes.starts_with(PNG_SIGNATURE) && bytes.get(25) == Some(&3) {
            return Err(bad(
                "it is a palette (indexed-colour) PNG; save the class indices as an 8-bit grayscale PNG (PIL: Image.fromarray(np.array(mask)).save(...))".into(),
            ));
        }
        let mut mask = match decode_bytes(path, &bytes)? {
            DynamicImage::ImageLuma8(mask) => mask,
            other => {
                return Err(bad(format!(
                    "it is {:?}, not single-channel 8-bit; masks hold one class index per pixel (convert colour masks to indices with the class palette)",
                    other.color()
                )));
            }
        };
        if self.reduce_zero_label {
            reduce_zero_label(&mut mask);
        }
        let classes = self.classes.len();
        if let Some((i, &label)) =
            mask.as_raw().iter().enumerate().find(|&(_, &l)| l as usize >= classes && l != IGNORE_INDEX)
        {
            let (x, y) = (i % mask.width() as usize, i / mask.width() as usize);
            return Err(bad(format!(
                "label {label} at x={x}, y={y} (after reduce_zero_label={}) is neither a class (0..{classes}) nor the ignore index 255; check that the classes file lists every class and that reduce_zero_label suits the data set (true for ADE20K's 0 = other)",
                self.reduce_zero_label
            )));
        }
        Ok(mask)
    }
}

impl LabelledImages for SegFolder {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn classes(&self) -> &[String] {
        &self.classes.names
    }
}

impl SegDataset for SegFolder {
    fn path(&self, index: usize) -> &Path {
        &self.samples[index].0
    }

    /// [`load_image`] and [`SegFolder::load_mask`], checking that the two have one size.
    fn get(&self, index: usize) -> Result<(RgbImage, LabelMap), DataError> {
        let (image_path, mask_path) = &self.samples[index];
        let image = load_image(image_path)?;
        let mask = self.load_mask(index)?;
        if image.dimensions() != mask.dimensions() {
            return Err(DataError::BadMask {
                path: mask_path.clone(),
                reason: format!(
                    "it is {}x{} but its image {} is {}x{}; a mask must label every pixel of its image",
                    mask.width(),
                    mask.height(),
                    image_path.display(),
                    image.width(),
                    image.height()
                ),
            });
        }
        Ok((image, mask))
    }
}

/// mmseg's `reduce_zero_label`: 0 -> 255 (ignored), `v` -> `v - 1`, 255 stays 255.
pub fn reduce_zero_label(mask: &mut LabelMap) {
    for label in mask.iter_mut() {
        *label = match *label {
            0 | IGNORE_INDEX => IGNORE_INDEX,
            v => v - 1,
        };
    }
}

/// Reads a list of image stems, one per line (`ADE_train_00000001`; an image extension is
/// dropped), skipping blank lines and `#` comments.
///
/// # Errors
/// [`DataError::MissingPath`] / [`DataError::Io`] when unreadable; [`DataError::BadListFile`] for
/// a line with several words.
pub fn read_stem_list(path: impl AsRef<Path>) -> Result<Vec<String>, DataError> {
    let path = path.as_ref();
    let mut stems = Vec::new();
    for (number, line) in read_text(path, "image list file")?.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.split_whitespace().count() > 1 {
            return Err(DataError::BadListFile {
                path: path.to_path_buf(),
                line: number + 1,
                reason: format!("'{line}' has several words; write one image stem per line"),
            });
        }
        let file = Path::new(line);
        let stem = if has_image_extension(file) { file.file_stem().unwrap_or_default() } else { file.as_os_str() };
        stems.push(stem.to_string_lossy().into_owned());
    }
    Ok(stems)
}

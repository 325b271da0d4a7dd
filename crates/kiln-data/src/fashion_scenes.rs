//! fashion-scenes: a small semantic segmentation data set composed from Fashion-MNIST, written
//! in the ADE20K layout so the whole segmentation path can be tried in minutes.
//!
//! Each image is a canvas (64x64 by default) with a faint background texture and 2-4
//! Fashion-MNIST items, each scaled by a random factor (bilinear, Pillow's [`resize`]) and placed
//! fully inside the canvas; a later item may cover at most
//! [`FashionScenesConfig::max_overlap`] of its own pixels' worth of earlier ones, and is left
//! out when it finds no such place. An item pixel brighter than
//! [`FashionScenesConfig::threshold`] is painted with the item's level and labelled with its
//! class + 1; everything else is background, label 0. Training images take their items from
//! Fashion-MNIST's train split and validation images from its test split, so no item leaks.
//! Label 0 is a real class here: read the result with `reduce_zero_label = false`.
//!
//! ```text
//! OUT/images/{training,validation}/00000.png        8-bit grayscale
//! OUT/annotations/{training,validation}/00000.png   8-bit labels 0..=10
//! OUT/classes.txt                                   background + Fashion-MNIST's ten, with colours
//! ```
//!
//! Everything is drawn from streams derived from the seed and the image's split and number, so
//! the files are byte-identical for a seed.

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageFormat};

use crate::{
    DataError, FASHION_MNIST_CLASSES, FashionMnistSplit, IdxDataset, Interpolation, Rng, SegClasses, SegSplit, resize,
};

/// How to generate fashion-scenes (`kiln data fashion-scenes`).
#[derive(Debug, Clone, PartialEq)]
pub struct FashionScenesConfig {
    /// Output root (the ADE20K layout is written under it).
    pub out: PathBuf,
    /// Fashion-MNIST's idx files (`datasets/fashion-mnist`).
    pub fashion_mnist: PathBuf,
    /// Training images.
    pub train: usize,
    /// Validation images.
    pub val: usize,
    /// Seed of every choice.
    pub seed: u64,
    /// Canvas side, in pixels.
    pub canvas: usize,
    /// Items per image, inclusive range.
    pub items: [usize; 2],
    /// Item scale factor range (Fashion-MNIST items are 28x28).
    pub scale_range: [f64; 2],
    /// Item pixels above this level are the item; the rest is background. 32 drops the faint halo
    /// bilinear upscaling spreads around an item and its sparse dark noise, keeping the garment.
    pub threshold: u8,
    /// Background levels are drawn from `0..=background_max`, kept below `threshold` so that a
    /// labelled pixel is always brighter than any background pixel.
    pub background_max: u8,
    /// Largest share of an item's pixels that may land on items already placed. Heavier
    /// occlusion leaves fragments no model (or person) can name; an item that finds no place
    /// within [`PLACEMENT_TRIES`] positions is left out of the scene.
    pub max_overlap: f64,
}

/// Positions tried per item before it is left out ([`FashionScenesConfig::max_overlap`]).
pub const PLACEMENT_TRIES: usize = 20;

impl FashionScenesConfig {
    /// The defaults: 10000 training and 500 validation 64x64 images of 2-4 items scaled by 1-1.6,
    /// threshold 32, background 0-28, seed 0, written to `out`.
    pub fn new(out: impl Into<PathBuf>, fashion_mnist: impl Into<PathBuf>) -> Self {
        FashionScenesConfig {
            out: out.into(),
            fashion_mnist: fashion_mnist.into(),
            train: 10000,
            val: 500,
            seed: 0,
            canvas: 64,
            items: [2, 4],
            scale_range: [1.0, 1.6],
            threshold: 32,
            background_max: 28,
            max_overlap: 0.2,
        }
    }

    /// The 11 classes: `background`, then Fashion-MNIST's ten; background black, the items in
    /// [`SegClasses::generated_palette`]'s colours.
    pub fn classes() -> SegClasses {
        let names = std::iter::once("background").chain(FASHION_MNIST_CLASSES).map(String::from).collect();
        SegClasses::with_generated_palette(names)
    }

    fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidData(msg));
        let [low, high] = self.scale_range;
        if !(low > 0.0 && low <= high && high.is_finite()) {
            return invalid(format!("scale_range {:?} must be positive, low <= high", self.scale_range));
        }
        if ((28.0 * high).round() as usize) > self.canvas {
            return invalid(format!("canvas {} cannot hold an item scaled by {high} (28 px items)", self.canvas));
        }
        if self.items[0] == 0 || self.items[0] > self.items[1] {
            return invalid(format!("items {:?} must be a range of at least one item", self.items));
        }
        if !(0.0..=1.0).contains(&self.max_overlap) {
            return invalid(format!("max_overlap {} must be a share of an item in [0, 1]", self.max_overlap));
        }
        if self.background_max >= self.threshold {
            return invalid(format!(
                "background_max {} must stay below threshold {} so that background never looks like an item",
                self.background_max, self.threshold
            ));
        }
        Ok(())
    }
}

/// What one split of a generated set holds.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitSummary {
    /// Images written.
    pub images: usize,
    /// Share of the split's pixels labelled with each class, by label (sums to 1).
    pub pixel_share: Vec<f64>,
}

/// What [`generate_fashion_scenes`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct FashionScenesSummary {
    /// The output root.
    pub out: PathBuf,
    /// Class names, by label.
    pub classes: Vec<String>,
    /// The training split.
    pub training: SplitSummary,
    /// The validation split.
    pub validation: SplitSummary,
}

/// Generates fashion-scenes (module docs) under `config.out`.
///
/// # Errors
/// [`DataError::InvalidData`] for impossible settings or an output split directory that already
/// holds files (choose an empty directory); Fashion-MNIST's reading errors; [`DataError::Io`]
/// naming a file that cannot be written.
pub fn generate_fashion_scenes(config: &FashionScenesConfig) -> Result<FashionScenesSummary, DataError> {
    config.validate()?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DataError::Io { path, source }
    };
    let classes = FashionScenesConfig::classes();
    let mut summaries = Vec::with_capacity(2);
    for (split, source, count) in [
        (SegSplit::Training, FashionMnistSplit::Train, config.train),
        (SegSplit::Validation, FashionMnistSplit::Test, config.val),
    ] {
        let items = IdxDataset::fashion_mnist(&config.fashion_mnist, source)?;
        let dirs = ["images", "annotations"].map(|d| config.out.join(d).join(split.dir_name()));
        for dir in &dirs {
            if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
                return Err(DataError::InvalidData(format!(
                    "{} already holds files; generate into an empty --out directory so no stale image is mixed in",
                    dir.display()
                )));
            }
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        let mut pixels = vec![0u64; classes.len()];
        for number in 0..count {
            let mut rng = Rng::derive(config.seed, &[split as u64, number as u64]);
            let (image, mask, _) = compose_scene(config, &items, &mut rng);
            mask.iter().for_each(|&l| pixels[l as usize] += 1);
            let name = format!("{number:05}.png");
            for (dir, picture) in dirs.iter().zip([&image, &mask]) {
                let path = dir.join(&name);
                picture
                    .save_with_format(&path, ImageFormat::Png)
                    .map_err(|e| DataError::Io { path: path.clone(), source: std::io::Error::other(e) })?;
            }
        }
        let total = pixels.iter().sum::<u64>().max(1) as f64;
        summaries.push(SplitSummary { images: count, pixel_share: pixels.iter().map(|&p| p as f64 / total).collect() });
    }
    let classes_path = config.out.join("classes.txt");
    std::fs::write(&classes_path, classes.to_file_text()).map_err(io(&classes_path))?;
    let validation = summaries.pop().expect("two splits");
    let training = summaries.pop().expect("two splits");
    Ok(FashionScenesSummary { out: config.out.clone(), classes: classes.names, training, validation })
}

/// One scene: the grayscale image and its labels, `[canvas, canvas]` each, and for every item
/// placed its pixel count and how many of them stay visible.
fn compose_scene(config: &FashionScenesConfig, items: &IdxDataset, rng: &mut Rng) -> (GrayImage, GrayImage, Vec<(usize, usize)>) {
    let side = config.canvas as u32;
    // A per-image base level plus per-pixel noise: faint, never above `background_max`.
    let base = rng.randint(0, config.background_max as usize / 2) as u8;
    let noise = config.background_max - base;
    let mut image = GrayImage::from_fn(side, side, |_, _| image::Luma([base + rng.randint(0, noise as usize) as u8]));
    let mut mask = GrayImage::new(side, side);
    // which placed item (1-based) shows at each pixel
    let mut owner = vec![0usize; config.canvas * config.canvas];
    let mut sizes = Vec::new();
    for _ in 0..rng.randint(config.items[0], config.items[1]) {
        let index = rng.below(items.labels().len() as u64) as usize;
        let size =
            ((items.images().columns as f64) * rng.uniform(config.scale_range[0], config.scale_range[1])).round();
        let item = resize(&items.images().image(index), size as u32, size as u32, Interpolation::Bilinear);
        let label = items.labels()[index] + 1;
        let shape: Vec<(u32, u32, image::Luma<u8>)> =
            item.enumerate_pixels().filter(|(_, _, level)| level.0[0] > config.threshold).map(|(x, y, l)| (x, y, *l)).collect();
        let allowed = (config.max_overlap * shape.len() as f64).floor() as usize;
        for _ in 0..PLACEMENT_TRIES {
            let x = rng.randint(0, config.canvas - size as usize) as u32;
            let y = rng.randint(0, config.canvas - size as usize) as u32;
            let covered = shape.iter().filter(|(ix, iy, _)| mask.get_pixel(x + ix, y + iy).0[0] != 0).count();
            if covered <= allowed {
                sizes.push(shape.len());
                for &(ix, iy, level) in &shape {
                    image.put_pixel(x + ix, y + iy, level);
                    mask.put_pixel(x + ix, y + iy, image::Luma([label]));
                    owner[((y + iy) * side + x + ix) as usize] = sizes.len();
                }
                break;
            }
        }
    }
    let placed = sizes.iter().enumerate().map(|(i, &n)| (n, owner.iter().filter(|&&o| o == i + 1).count())).collect();
    (image, mask, placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placements(max_overlap: f64) -> Vec<(usize, usize)> {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../datasets/fashion-mnist");
        let mut config = FashionScenesConfig::new("unused", root);
        (config.items, config.max_overlap) = ([4, 4], max_overlap);
        let items = IdxDataset::fashion_mnist(root, FashionMnistSplit::Test).unwrap();
        (0..40).flat_map(|n| compose_scene(&config, &items, &mut Rng::derive(1, &[n])).2).collect()
    }

    #[test]
    fn items_overlap_earlier_ones_by_at_most_the_allowed_share() {
        // without overlap every placed item stays whole
        let apart = placements(0.0);
        assert!(apart.iter().all(|(n, visible)| n == visible), "{apart:?}");
        assert!(apart.len() > 40, "more than one item fits a 64x64 canvas");
        // unrestricted, four items on 64x64 often cover each other
        let any = placements(1.0);
        assert_eq!(any.len(), 4 * 40, "every item finds a place");
        assert!(any.iter().filter(|(n, visible)| visible < n).count() > 40, "{any:?}");
        // a later item hides at most max_overlap of its own size of earlier ones, so with two
        // later items on top the first keeps at least 1 − 2·0.1 of a same-sized item, roughly
        let some = placements(0.1);
        let hidden: usize = some.iter().map(|(n, visible)| n - visible).sum();
        let total: usize = some.iter().map(|(n, _)| n).sum();
        assert!(hidden > 0 && (hidden as f64) < 0.1 * total as f64 * 1.5, "hidden {hidden} of {total}");
    }
}

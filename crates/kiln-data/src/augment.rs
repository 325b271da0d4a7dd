//! timm's training transforms (`transforms_imagenet_train`), as small values built from config.
//!
//! The pipeline, in timm's order ([`TrainTransform::transform`]):
//!
//! 1. [`RandomResizedCrop`] (torchvision's algorithm, Pillow's resampling);
//! 2. [`RandomFlip`] horizontal (`hflip`), then vertical (`vflip`);
//! 3. [`RandAugment`] (`auto_augment = "rand-..."`), or else [`ColorJitter`];
//! 4. `ToTensor` + `Normalize` ([`to_normalized_tensor`]);
//! 5. [`RandomErasing`] on the normalised tensor.
//!
//! Steps 1-3 work on 8-bit RGB with Pillow's arithmetic; a grayscale model (`channels == 1`) gets
//! the image converted to luma first (Pillow's `convert('L')`) and carried as gray RGB through
//! steps 1-3, which leaves every op's result gray and equal to running it in Pillow's `L` mode.
//! Mixup/CutMix mixes whole batches and lives in [`crate::Mixup`].

use image::{RgbImage, imageops};
use serde::{Deserialize, Serialize};

use crate::rand_augment::{OpParams, fill_from_mean};
use crate::transform::to_normalized_tensor;
use crate::{
    DataError, IMAGENET_MEAN, IMAGENET_STD, ImageTensor, ImageTransform, RandAugment, Rng, image_ops,
    resize, to_luma,
};
use crate::train_interpolation::TrainInterpolation;

/// A rectangle of an image, in pixels: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// torchvision's `RandomResizedCrop` (timm's `RandomResizedCropAndInterpolation`): a crop of
/// random area (a `scale` fraction of the image) and aspect ratio (log-uniform in `ratio`),
/// resized to `size`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomResizedCrop {
    /// Output `[height, width]`.
    pub size: [usize; 2],
    /// Range of the crop's area as a fraction of the image's; timm's default `[0.08, 1.0]`.
    pub scale: [f64; 2],
    /// Range of the crop's aspect ratio (width / height); timm's default `[3/4, 4/3]`.
    pub ratio: [f64; 2],
    /// Filter of the resize.
    pub interpolation: TrainInterpolation,
}

impl RandomResizedCrop {
    /// timm's ImageNet defaults: scale `[0.08, 1]`, ratio `[3/4, 4/3]`, random interpolation.
    pub fn imagenet(size: [usize; 2]) -> Self {
        RandomResizedCrop {
            size,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            interpolation: TrainInterpolation::Random,
        }
    }

    /// Checks that the crop can be applied.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for a zero output side, or a scale or ratio range that is
    /// not `0 < min <= max` and finite.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidTransform(msg));
        if self.size.contains(&0) {
            return invalid(format!("RandomResizedCrop size {:?} has a zero side", self.size));
        }
        for (name, [lo, hi]) in [("scale", self.scale), ("ratio", self.ratio)] {
            if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && lo <= hi) {
                return invalid(format!("RandomResizedCrop {name} [{lo}, {hi}] must satisfy 0 < min <= max"));
            }
        }
        Ok(())
    }

    /// The crop of an image of `width` x `height` (torchvision's `get_params`): up to 10 draws of
    /// an area and a log-uniform aspect ratio, sides `round(sqrt(area * ratio))` and
    /// `round(sqrt(area / ratio))` (half to even); the first that fits is placed uniformly. When
    /// none fits, the fallback is a centred crop of the whole image clamped to the ratio range.
    pub fn params(&self, width: usize, height: usize, rng: &mut Rng) -> CropBox {
        let area = (width * height) as f64;
        let log_ratio = [self.ratio[0].ln(), self.ratio[1].ln()];
        for _ in 0..10 {
            let target_area = area * rng.uniform(self.scale[0], self.scale[1]);
            let aspect = rng.uniform(log_ratio[0], log_ratio[1]).exp();
            let w = (target_area * aspect).sqrt().round_ties_even() as usize;
            let h = (target_area / aspect).sqrt().round_ties_even() as usize;
            if 0 < w && w <= width && 0 < h && h <= height {
                let top = rng.randint(0, height - h);
                let left = rng.randint(0, width - w);
                return CropBox { top, left, height: h, width: w };
            }
        }
        let in_ratio = width as f64 / height as f64;
        let (min_ratio, max_ratio) = (self.ratio[0].min(self.ratio[1]), self.ratio[0].max(self.ratio[1]));
        let (w, h) = if in_ratio < min_ratio {
            (width, ((width as f64 / min_ratio).round_ties_even() as usize).max(1))
        } else if in_ratio > max_ratio {
            (((height as f64 * max_ratio).round_ties_even() as usize).max(1), height)
        } else {
            (width, height)
        };
        CropBox { top: (height - h) / 2, left: (width - w) / 2, height: h, width: w }
    }

    /// Crops at [`RandomResizedCrop::params`] and resizes to `size` with Pillow's resampling
    /// (torchvision's `resized_crop` on a PIL image).
    pub fn apply(&self, image: &RgbImage, rng: &mut Rng) -> RgbImage {
        let crop = self.params(image.width() as usize, image.height() as usize, rng);
        let filter = self.interpolation.pick(rng);
        let view = imageops::crop_imm(image, crop.left as u32, crop.top as u32, crop.width as u32, crop.height as u32);
        resize(&view.to_image(), self.size[1] as u32, self.size[0] as u32, filter)
    }
}

/// Which way a [`RandomFlip`] mirrors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlipAxis {
    /// Left-right (torchvision's `RandomHorizontalFlip`).
    Horizontal,
    /// Top-bottom (torchvision's `RandomVerticalFlip`).
    Vertical,
}

/// Mirrors the image with probability `prob`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFlip {
    /// Probability of flipping (timm's `hflip` default 0.5, `vflip` 0).
    pub prob: f64,
    /// Direction.
    pub axis: FlipAxis,
}

impl RandomFlip {
    /// Flips `image` along `axis`, unconditionally.
    pub fn flip(axis: FlipAxis, image: &RgbImage) -> RgbImage {
        match axis {
            FlipAxis::Horizontal => imageops::flip_horizontal(image),
            FlipAxis::Vertical => imageops::flip_vertical(image),
        }
    }

    /// Flips with probability `prob` (`random() < prob`).
    pub fn apply(&self, image: RgbImage, rng: &mut Rng) -> RgbImage {
        if rng.bernoulli(self.prob) { Self::flip(self.axis, &image) } else { image }
    }
}

/// torchvision's `ColorJitter` on PIL images: brightness, contrast, saturation and hue adjusted
/// in a random order by factors drawn uniformly from `[max(0, 1 - v), 1 + v]` (hue: shift in
/// `[-hue, hue]` of a turn). A zero strength leaves that adjustment out, as torchvision does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColorJitter {
    /// Brightness strength.
    pub brightness: f64,
    /// Contrast strength.
    pub contrast: f64,
    /// Saturation strength.
    pub saturation: f64,
    /// Hue strength, at most 0.5.
    pub hue: f64,
}

impl ColorJitter {
    /// timm's scalar `color_jitter`: the same strength for brightness, contrast and saturation,
    /// no hue (timm's default is 0.4).
    pub fn uniform(strength: f64) -> Self {
        ColorJitter { brightness: strength, contrast: strength, saturation: strength, hue: 0.0 }
    }

    /// Checks the strengths.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for a negative or non-finite strength, or hue above 0.5.
    pub fn validate(&self) -> Result<(), DataError> {
        let all = [self.brightness, self.contrast, self.saturation, self.hue];
        if all.iter().any(|v| !(v.is_finite() && *v >= 0.0)) || self.hue > 0.5 {
            return Err(DataError::InvalidTransform(format!(
                "color_jitter {all:?} (brightness, contrast, saturation, hue) must be non-negative, hue at most 0.5"
            )));
        }
        Ok(())
    }

    /// Draws the order and the four factors, then applies the adjustments that are on.
    pub fn apply(&self, image: RgbImage, rng: &mut Rng) -> RgbImage {
        let order = rng.permutation(4);
        let factor = |v: f64, rng: &mut Rng| (v > 0.0).then(|| rng.uniform((1.0 - v).max(0.0), 1.0 + v));
        let brightness = factor(self.brightness, rng);
        let contrast = factor(self.contrast, rng);
        let saturation = factor(self.saturation, rng);
        let hue = (self.hue > 0.0).then(|| rng.uniform(-self.hue, self.hue));
        let mut image = image;
        for step in order {
            image = match (step, brightness, contrast, saturation, hue) {
                (0, Some(f), ..) => image_ops::adjust_brightness(&image, f),
                (1, _, Some(f), ..) => image_ops::adjust_contrast(&image, f),
                (2, _, _, Some(f), _) => image_ops::adjust_saturation(&image, f),
                (3, .., Some(f)) => image_ops::adjust_hue(&image, f),
                _ => image,
            };
        }
        image
    }
}

/// What [`RandomErasing`] writes into the erased rectangle (timm's `mode`); serialised as timm's
/// `--remode` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErasingMode {
    /// Zeros (the normalised mean).
    Const,
    /// One standard-normal value per channel.
    Rand,
    /// A standard-normal value per pixel and channel (timm's train default, `--remode pixel`).
    Pixel,
}

impl ErasingMode {
    /// Parses timm's `re_mode`: `"const"`, `"rand"` or `"pixel"`.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for any other name.
    pub fn from_timm(name: &str) -> Result<Self, DataError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "const" | "" => Ok(ErasingMode::Const),
            "rand" => Ok(ErasingMode::Rand),
            "pixel" => Ok(ErasingMode::Pixel),
            other => Err(DataError::InvalidTransform(format!("re_mode '{other}': use const, rand or pixel"))),
        }
    }
}

/// timm's `RandomErasing`, on a normalised `[channels, height, width]` tensor: with probability
/// `prob`, erase `count` rectangles (`min_count..=max_count`), each of area
/// `uniform(min_area, max_area) * area / count` and log-uniform aspect ratio, placed uniformly
/// where it fits strictly inside (10 attempts each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomErasing {
    /// Probability of erasing anything (timm's `re_prob`).
    pub prob: f64,
    /// Smallest erased area, as a fraction of the image (0.02).
    pub min_area: f64,
    /// Largest erased area, as a fraction of the image (1/3).
    pub max_area: f64,
    /// Smallest aspect ratio (0.3); the largest is `1 / min_aspect` unless `max_aspect` is set.
    pub min_aspect: f64,
    /// Largest aspect ratio; `None` for `1 / min_aspect`.
    pub max_aspect: Option<f64>,
    /// Fill.
    pub mode: ErasingMode,
    /// Fewest rectangles (1).
    pub min_count: usize,
    /// Most rectangles (timm's `re_count`, 1).
    pub max_count: usize,
}

impl RandomErasing {
    /// timm's defaults with the given probability, mode and count.
    pub fn new(prob: f64, mode: ErasingMode, max_count: usize) -> Self {
        RandomErasing {
            prob,
            min_area: 0.02,
            max_area: 1.0 / 3.0,
            min_aspect: 0.3,
            max_aspect: None,
            mode,
            min_count: 1,
            max_count,
        }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for a probability outside [0, 1], an area range outside
    /// `0 < min <= max <= 1`, a non-positive aspect, or `max_count < min_count`/zero counts.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidTransform(msg));
        if !(0.0..=1.0).contains(&self.prob) {
            return invalid(format!("random erasing probability {} must lie in [0, 1]", self.prob));
        }
        if !(self.min_area > 0.0 && self.min_area <= self.max_area && self.max_area <= 1.0) {
            return invalid(format!(
                "random erasing area [{}, {}] must satisfy 0 < min <= max <= 1",
                self.min_area, self.max_area
            ));
        }
        let max_aspect = self.max_aspect.unwrap_or(1.0 / self.min_aspect);
        if !(self.min_aspect > 0.0 && max_aspect.is_finite() && max_aspect > 0.0) {
            return invalid(format!("random erasing aspect [{}, {max_aspect}] must be positive", self.min_aspect));
        }
        if self.min_count == 0 || self.max_count < self.min_count {
            return invalid(format!("random erasing count {}..={} must be at least 1", self.min_count, self.max_count));
        }
        Ok(())
    }

    /// Erases in place; returns the rectangles erased (none when the coin says no, or no attempt
    /// fitted).
    pub fn apply(&self, tensor: &mut ImageTensor, rng: &mut Rng) -> Vec<CropBox> {
        let mut erased = Vec::new();
        if rng.random() > self.prob {
            return erased;
        }
        let [channels, img_h, img_w] = tensor.shape();
        let area = (img_h * img_w) as f64;
        let count =
            if self.min_count == self.max_count { self.min_count } else { rng.randint(self.min_count, self.max_count) };
        let max_aspect = self.max_aspect.unwrap_or(1.0 / self.min_aspect);
        let log_aspect = [self.min_aspect.ln(), max_aspect.ln()];
        for _ in 0..count {
            for _ in 0..10 {
                let target_area = rng.uniform(self.min_area, self.max_area) * area / count as f64;
                let aspect = rng.uniform(log_aspect[0], log_aspect[1]).exp();
                let h = (target_area * aspect).sqrt().round_ties_even() as usize;
                let w = (target_area / aspect).sqrt().round_ties_even() as usize;
                if w < img_w && h < img_h {
                    let top = rng.randint(0, img_h - h);
                    let left = rng.randint(0, img_w - w);
                    let channel_values: Vec<f32> = (0..channels)
                        .map(|_| if self.mode == ErasingMode::Rand { rng.normal() as f32 } else { 0.0 })
                        .collect();
                    for (c, &channel_value) in channel_values.iter().enumerate() {
                        for y in top..top + h {
                            let row = &mut tensor.data[(c * img_h + y) * img_w + left..][..w];
                            for v in row {
                                *v = match self.mode {
                                    ErasingMode::Pixel => rng.normal() as f32,
                                    _ => channel_value,
                                };
                            }
                        }
                    }
                    erased.push(CropBox { top, left, height: h, width: w });
                    break;
                }
            }
        }
        erased
    }
}

/// The settings of timm's `transforms_imagenet_train`, with its argument names and defaults;
/// [`TrainTransformConfig::build`] turns them into a [`TrainTransform`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransformConfig {
    /// Output `[height, width]`.
    pub img_size: [usize; 2],
    /// RandomResizedCrop area range (`scale`, default `[0.08, 1]`).
    pub scale: [f64; 2],
    /// RandomResizedCrop aspect-ratio range (`ratio`, default `[3/4, 4/3]`).
    pub ratio: [f64; 2],
    /// Horizontal flip probability (`hflip`, 0.5).
    pub hflip: f64,
    /// Vertical flip probability (`vflip`, 0).
    pub vflip: f64,
    /// Colour jitter (`color_jitter`, timm's 0.4 as [`ColorJitter::uniform`]); `None` for off.
    /// Ignored when `auto_augment` is set, unless `force_color_jitter`.
    pub color_jitter: Option<ColorJitter>,
    /// Apply colour jitter with this probability only (`color_jitter_prob`); `None` for always.
    pub color_jitter_prob: Option<f64>,
    /// Keep colour jitter on alongside RandAugment (`force_color_jitter`).
    pub force_color_jitter: bool,
    /// timm's `auto_augment` string, e.g. `"rand-m9-mstd0.5-inc1"` ([`RandAugment::from_timm`]).
    pub auto_augment: Option<String>,
    /// Filter of the crop's resize and of RandAugment's geometric ops (`interpolation`,
    /// default `random`).
    pub interpolation: TrainInterpolation,
    /// Normalisation mean (also RandAugment's fill colour, rounded to 8 bits).
    pub mean: [f32; 3],
    /// Normalisation standard deviation.
    pub std: [f32; 3],
    /// Output channels: 3 (RGB) or 1 (luma, normalised with `mean[0]`, `std[0]`).
    pub channels: usize,
    /// Random erasing probability (`re_prob`, 0 = off).
    pub re_prob: f64,
    /// Random erasing fill (`re_mode`; timm's train script defaults to pixel).
    pub re_mode: ErasingMode,
    /// Most rectangles erased per image (`re_count`, 1).
    pub re_count: usize,
}

impl TrainTransformConfig {
    /// timm's defaults for ImageNet training at `img_size`: RandomResizedCrop(0.08-1, 3/4-4/3,
    /// random filter), hflip 0.5, colour jitter 0.4, no RandAugment, ImageNet mean/std, RGB, no
    /// random erasing (pixel mode, one rectangle, once a probability is set).
    pub fn imagenet(img_size: [usize; 2]) -> Self {
        TrainTransformConfig {
            img_size,
            scale: [0.08, 1.0],
            ratio: [3.0 / 4.0, 4.0 / 3.0],
            hflip: 0.5,
            vflip: 0.0,
            color_jitter: Some(ColorJitter::uniform(0.4)),
            color_jitter_prob: None,
            force_color_jitter: false,
            auto_augment: None,
            interpolation: TrainInterpolation::Random,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channels: 3,
            re_prob: 0.0,
            re_mode: ErasingMode::Pixel,
            re_count: 1,
        }
    }

    /// Builds the transform, as `transforms_imagenet_train` does: flips only for a positive
    /// probability; colour jitter off when RandAugment is on (unless forced); erasing only for a
    /// positive `re_prob`.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for invalid sizes, ranges, probabilities, channel counts
    /// or mean/std; [`DataError::InvalidAugment`] for an `auto_augment` string Kiln cannot use.
    pub fn build(&self) -> Result<TrainTransform, DataError> {
        let invalid = |msg: String| Err(DataError::InvalidTransform(msg));
        if self.channels != 1 && self.channels != 3 {
            return invalid(format!("{} channels: images are read as RGB (3) or luma (1)", self.channels));
        }
        let (mean, std) = (&self.mean[..self.channels], &self.std[..self.channels]);
        if mean.iter().chain(std).any(|v| !v.is_finite()) || std.contains(&0.0) {
            return invalid(format!("mean {:?} / std {:?} must be finite, std non-zero", self.mean, self.std));
        }
        for (name, p) in
            [("hflip", self.hflip), ("vflip", self.vflip), ("color_jitter_prob", self.color_jitter_prob.unwrap_or(1.0))]
        {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("{name} {p} must be a probability in [0, 1]"));
            }
        }
        let crop = RandomResizedCrop {
            size: self.img_size,
            scale: self.scale,
            ratio: self.ratio,
            interpolation: self.interpolation,
        };
        crop.validate()?;
        let flip = |prob: f64, axis| (prob > 0.0).then_some(RandomFlip { prob, axis });
        let mean_for_fill = if self.channels == 1 { [self.mean[0]; 3] } else { self.mean };
        let rand_augment = match self.auto_augment.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(spec) => Some(RandAugment::from_timm(
                spec,
                OpParams {
                    fill: fill_from_mean(mean_for_fill),
                    interpolation: self.interpolation,
                    translate_pct: 0.45,
                },
            )?),
        };
        let color_jitter = match self.color_jitter {
            Some(jitter) if rand_augment.is_none() || self.force_color_jitter => {
                jitter.validate()?;
                Some(jitter)
            }
            _ => None,
        };
        let erasing = if self.re_prob > 0.0 {
            let erasing = RandomErasing::new(self.re_prob, self.re_mode, self.re_count);
            erasing.validate()?;
            Some(erasing)
        } else {
            None
        };
        Ok(TrainTransform {
            crop,
            hflip: flip(self.hflip, FlipAxis::Horizontal),
            vflip: flip(self.vflip, FlipAxis::Vertical),
            rand_augment,
            color_jitter,
            color_jitter_prob: self.color_jitter_prob,
            mean: self.mean,
            std: self.std,
            channels: self.channels,
            erasing,
        })
    }
}

/// timm's training transform, one composable value per step (see the module docs for the
/// order). Build it with [`TrainTransformConfig::build`], or assemble the fields yourself.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainTransform {
    /// Step 1.
    pub crop: RandomResizedCrop,
    /// Step 2, left-right.
    pub hflip: Option<RandomFlip>,
    /// Step 2, top-bottom.
    pub vflip: Option<RandomFlip>,
    /// Step 3.
    pub rand_augment: Option<RandAugment>,
    /// Step 3, after RandAugment when both are set.
    pub color_jitter: Option<ColorJitter>,
    /// Probability of applying `color_jitter`; `None` for always.
    pub color_jitter_prob: Option<f64>,
    /// Step 4 mean.
    pub mean: [f32; 3],
    /// Step 4 standard deviation.
    pub std: [f32; 3],
    /// Output channels, 1 or 3.
    pub channels: usize,
    /// Step 5.
    pub erasing: Option<RandomErasing>,
}

impl TrainTransform {
    /// Steps 1-3: the augmented 8-bit image, `[size[0], size[1]]` RGB (gray RGB when
    /// `channels == 1`).
    pub fn augment(&self, image: &RgbImage, rng: &mut Rng) -> RgbImage {
        let mut image = if self.channels == 1 {
            let luma = to_luma(image);
            let gray = luma.as_raw().iter().flat_map(|&l| [l; 3]).collect();
            RgbImage::from_raw(image.width(), image.height(), gray).expect("three bytes per pixel")
        } else {
            image.clone()
        };
        image = self.crop.apply(&image, rng);
        for flip in [self.hflip, self.vflip].into_iter().flatten() {
            image = flip.apply(image, rng);
        }
        if let Some(augment) = &self.rand_augment {
            image = augment.apply(&image, rng);
        }
        if let Some(jitter) = &self.color_jitter
            && self.color_jitter_prob.is_none_or(|p| rng.random() < p)
        {
            image = jitter.apply(image, rng);
        }
        image
    }
}

impl ImageTransform for TrainTransform {
    fn output_shape(&self) -> [usize; 3] {
        [self.channels, self.crop.size[0], self.crop.size[1]]
    }

    /// All five steps: `[channels, size[0], size[1]]` normalised, erased.
    fn transform(&self, image: &RgbImage, rng: &mut Rng) -> ImageTensor {
        let augmented = self.augment(image, rng);
        let mut tensor = if self.channels == 1 {
            let luma: Vec<u8> = augmented.as_raw().iter().step_by(3).copied().collect();
            to_normalized_tensor(&luma, 1, self.crop.size, self.mean, self.std)
        } else {
            to_normalized_tensor(augmented.as_raw(), 3, self.crop.size, self.mean, self.std)
        };
        if let Some(erasing) = &self.erasing {
            erasing.apply(&mut tensor, rng);
        }
        tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| Rgb([(x * 7 % 256) as u8, (y * 11 % 256) as u8, ((x * y) % 256) as u8]))
    }

    #[test]
    fn erasing_mode_writes_the_config_spelling() {
        assert_eq!(serde_json::to_string(&ErasingMode::Pixel).unwrap(), "\"pixel\"");
    }

    #[test]
    fn crop_params_fit_and_respect_ranges() {
        let rrc = RandomResizedCrop::imagenet([32, 32]);
        let mut rng = Rng::seed_from_u64(4);
        let (w, h) = (120, 80);
        for _ in 0..2000 {
            let c = rrc.params(w, h, &mut rng);
            assert!(c.width > 0 && c.height > 0 && c.left + c.width <= w && c.top + c.height <= h, "{c:?}");
        }
        // With a fixed scale and ratio the sides are the rounded square roots.
        let exact = RandomResizedCrop { scale: [0.25, 0.25], ratio: [1.0, 1.0], ..rrc.clone() };
        let c = exact.params(100, 64, &mut rng);
        assert_eq!((c.width, c.height), (40, 40)); // sqrt(0.25 * 6400) = 40
    }

    #[test]
    fn crop_fallback_is_torchvisions_centre_crop() {
        // An area above the image's can never fit: all ten attempts fail.
        let never = RandomResizedCrop { scale: [2.0, 3.0], ..RandomResizedCrop::imagenet([8, 8]) };
        let mut rng = Rng::seed_from_u64(0);
        // Wide 100x10 (ratio 10 > 4/3): full height, width round(10 * 4/3) = 13, centred.
        assert_eq!(never.params(100, 10, &mut rng), CropBox { top: 0, left: 43, height: 10, width: 13 });
        // Tall 10x100 (ratio 0.1 < 3/4): full width, height round(10 / 0.75) = 13.
        assert_eq!(never.params(10, 100, &mut rng), CropBox { top: 43, left: 0, height: 13, width: 10 });
        // In range: the whole image.
        assert_eq!(never.params(40, 35, &mut rng), CropBox { top: 0, left: 0, height: 35, width: 40 });
    }

    #[test]
    fn crop_output_size_and_determinism() {
        let img = picture(57, 43);
        let rrc = RandomResizedCrop { size: [24, 16], ..RandomResizedCrop::imagenet([0, 0]) };
        let out = rrc.apply(&img, &mut Rng::seed_from_u64(9));
        assert_eq!(out.dimensions(), (16, 24));
        assert_eq!(out, rrc.apply(&img, &mut Rng::seed_from_u64(9)));
    }

    #[test]
    fn full_crop_with_same_size_is_identity() {
        let img = picture(20, 20);
        let rrc = RandomResizedCrop {
            size: [20, 20],
            scale: [1.0, 1.0],
            ratio: [1.0, 1.0],
            interpolation: TrainInterpolation::Fixed(crate::Interpolation::Bicubic),
        };
        assert_eq!(rrc.apply(&img, &mut Rng::seed_from_u64(1)), img);
    }

    #[test]
    fn flip_twice_is_identity_and_flip_mirrors() {
        let img = picture(7, 5);
        for axis in [FlipAxis::Horizontal, FlipAxis::Vertical] {
            let once = RandomFlip::flip(axis, &img);
            assert_ne!(once, img);
            assert_eq!(RandomFlip::flip(axis, &once), img);
        }
        let h = RandomFlip::flip(FlipAxis::Horizontal, &img);
        assert_eq!(h.get_pixel(0, 2), img.get_pixel(6, 2));
        let always = RandomFlip { prob: 1.0, axis: FlipAxis::Vertical };
        let never = RandomFlip { prob: 0.0, axis: FlipAxis::Vertical };
        let mut rng = Rng::seed_from_u64(2);
        assert_eq!(always.apply(img.clone(), &mut rng), RandomFlip::flip(FlipAxis::Vertical, &img));
        assert_eq!(never.apply(img.clone(), &mut rng), img);
    }

    #[test]
    fn flip_probability_is_honoured() {
        let img = picture(4, 3);
        let flip = RandomFlip { prob: 0.5, axis: FlipAxis::Horizontal };
        let mut rng = Rng::seed_from_u64(12);
        let flipped = (0..2000).filter(|_| flip.apply(img.clone(), &mut rng) != img).count();
        assert!((900..1100).contains(&flipped), "{flipped}");
    }

    #[test]
    fn color_jitter_zero_is_identity_and_keeps_gray_gray() {
        let img = picture(9, 9);
        let off = ColorJitter { brightness: 0.0, contrast: 0.0, saturation: 0.0, hue: 0.0 };
        assert_eq!(off.apply(img.clone(), &mut Rng::seed_from_u64(0)), img);
        let gray = RgbImage::from_fn(9, 9, |x, y| Rgb([((x + y) * 13) as u8; 3]));
        let strong = ColorJitter { brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.5 };
        for seed in 0..10 {
            let out = strong.apply(gray.clone(), &mut Rng::seed_from_u64(seed));
            assert!(out.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        }
        assert!(ColorJitter { hue: 0.6, ..strong }.validate().is_err());
        assert!(ColorJitter { brightness: -0.1, ..strong }.validate().is_err());
    }

    #[test]
    fn erasing_touches_only_the_returned_boxes() {
        let mut rng = Rng::seed_from_u64(3);
        let erasing = RandomErasing::new(1.0, ErasingMode::Pixel, 3);
        let mut erased_any = false;
        for _ in 0..50 {
            let original = ImageTensor { data: vec![7.0; 3 * 20 * 30], channels: 3, height: 20, width: 30 };
            let mut t = original.clone();
            let boxes = erasing.apply(&mut t, &mut rng);
            assert!(boxes.len() <= 3);
            erased_any |= !boxes.is_empty();
            for c in 0..3 {
                for y in 0..20 {
                    for x in 0..30 {
                        let inside = boxes
                            .iter()
                            .any(|b| (b.top..b.top + b.height).contains(&y) && (b.left..b.left + b.width).contains(&x));
                        let v = t.data[(c * 20 + y) * 30 + x];
                        if !inside {
                            assert_eq!(v, 7.0, "outside pixel ({x}, {y}) changed");
                        } else {
                            assert_ne!(v, 7.0, "erased pixel ({x}, {y}) kept its value");
                        }
                    }
                }
            }
            for b in &boxes {
                assert!(b.height < 20 && b.width < 30 && b.top + b.height <= 20 && b.left + b.width <= 30);
            }
        }
        assert!(erased_any);
    }

    #[test]
    fn erasing_modes_and_probability() {
        let fresh = || ImageTensor { data: vec![5.0; 2 * 16 * 16], channels: 2, height: 16, width: 16 };
        let mut rng = Rng::seed_from_u64(8);
        let mut t = fresh();
        assert!(RandomErasing::new(0.0, ErasingMode::Pixel, 1).apply(&mut t, &mut rng).is_empty());
        assert_eq!(t, fresh());
        // Const erases to zero; rand to one value per channel.
        let mut t = fresh();
        let boxes = RandomErasing::new(1.0, ErasingMode::Const, 1).apply(&mut t, &mut rng);
        let b = boxes[0];
        assert!(t.data.iter().filter(|&&v| v == 0.0).count() == 2 * b.height * b.width);
        let mut t = fresh();
        let b = RandomErasing::new(1.0, ErasingMode::Rand, 1).apply(&mut t, &mut rng)[0];
        for c in 0..2 {
            let v0 = t.data[(c * 16 + b.top) * 16 + b.left];
            let plane = &t.data[c * 256..(c + 1) * 256];
            assert_eq!(plane.iter().filter(|&&v| v == v0).count(), b.height * b.width);
        }
    }

    #[test]
    fn build_follows_timm_rules() {
        let mut cfg = TrainTransformConfig::imagenet([32, 32]);
        let t = cfg.build().unwrap();
        assert!(t.color_jitter.is_some() && t.rand_augment.is_none() && t.erasing.is_none() && t.vflip.is_none());
        assert_eq!(t.hflip, Some(RandomFlip { prob: 0.5, axis: FlipAxis::Horizontal }));
        cfg.auto_augment = Some("rand-m9-mstd0.5-inc1".into());
        cfg.re_prob = 0.25;
        let t = cfg.build().unwrap();
        assert!(t.color_jitter.is_none(), "RandAugment turns colour jitter off");
        assert_eq!(t.rand_augment.as_ref().unwrap().params.fill, [124, 116, 104]);
        assert_eq!(t.erasing.unwrap().prob, 0.25);
        cfg.force_color_jitter = true;
        assert!(cfg.build().unwrap().color_jitter.is_some());
        for bad in [
            TrainTransformConfig { channels: 2, ..cfg.clone() },
            TrainTransformConfig { hflip: 1.5, ..cfg.clone() },
            TrainTransformConfig { scale: [0.5, 0.1], ..cfg.clone() },
            TrainTransformConfig { img_size: [0, 4], ..cfg.clone() },
            TrainTransformConfig { std: [0.0, 1.0, 1.0], ..cfg.clone() },
            TrainTransformConfig { re_count: 0, ..cfg.clone() },
        ] {
            assert!(matches!(bad.build(), Err(DataError::InvalidTransform(_))), "{bad:?}");
        }
    }

    #[test]
    fn train_transform_shapes_ranges_determinism() {
        let img = picture(50, 40);
        let mut cfg = TrainTransformConfig::imagenet([24, 20]);
        cfg.auto_augment = Some("rand-m9-mstd0.5-inc1".into());
        cfg.re_prob = 0.5;
        let t = cfg.build().unwrap();
        assert_eq!(t.output_shape(), [3, 24, 20]);
        let a = t.transform(&img, &mut Rng::seed_from_u64(77));
        assert_eq!(a.shape(), [3, 24, 20]);
        assert_eq!(a, t.transform(&img, &mut Rng::seed_from_u64(77)));
        assert_ne!(a, t.transform(&img, &mut Rng::seed_from_u64(78)));
        // Without erasing, every value is a normalised byte: within [(0 - mean) / std, (1 - mean) / std].
        let plain = TrainTransformConfig { re_prob: 0.0, ..cfg }.build().unwrap();
        let out = plain.transform(&img, &mut Rng::seed_from_u64(5));
        for (c, plane) in out.data.chunks(24 * 20).enumerate() {
            let (lo, hi) = (-IMAGENET_MEAN[c] / IMAGENET_STD[c], (1.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]);
            assert!(plane.iter().all(|&v| v >= lo - 1e-6 && v <= hi + 1e-6));
        }
    }

    #[test]
    fn grayscale_one_channel_equals_luma_of_the_three_channel_result() {
        let img = picture(30, 30);
        let mut cfg = TrainTransformConfig::imagenet([16, 16]);
        cfg.auto_augment = Some("rand-m9-n3-p1".into());
        cfg.channels = 1;
        cfg.mean = [0.5; 3];
        cfg.std = [0.25; 3];
        let t = cfg.build().unwrap();
        assert_eq!(t.rand_augment.as_ref().unwrap().params.fill, [128, 128, 128]);
        let out = t.transform(&img, &mut Rng::seed_from_u64(1));
        assert_eq!(out.shape(), [1, 16, 16]);
        // The 8-bit stage stays gray throughout, whatever the ops.
        for seed in 0..8 {
            let gray = t.augment(&img, &mut Rng::seed_from_u64(seed));
            assert!(gray.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]), "seed {seed}");
        }
    }
}

//! Joint image + mask transforms with mmsegmentation's semantics (its ADE20K pipelines).
//!
//! Training ([`SegTrainTransform`]), in mmseg's order:
//!
//! 1. [`RandomResize`]`(scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True)`: image with
//!    the configured filter, mask always nearest;
//! 2. [`RandomCrop`]`(crop_size, cat_max_ratio=0.75)`;
//! 3. [`RandomFlip`]`(prob=0.5)`, horizontal, on both ([`RandomFlip::apply_pair`]);
//! 4. [`PhotoMetricDistortion`], image only;
//! 5. normalisation ([`to_normalized_tensor`]) then [`pad_to_size`] to the crop size, image with 0
//!    and mask with 255, as mmseg's `SegDataPreProcessor` pads after normalising.
//!
//! Evaluation ([`SegEvalTransform`]): mmseg's test pipeline `Resize(scale=(2048, 512),
//! keep_ratio=True)` on the image only ([`EvalResize`]); the mask keeps its original size, since
//! metrics are computed at the original resolution.
//!
//! Resampling is Pillow's ([`resize`]), not OpenCV's as in mmcv: bilinear downscaling is
//! antialiased, and nearest takes the pixel under each output pixel's centre, so a mask stays
//! aligned with its bilinearly resized image. Images are 8-bit RGB throughout; with
//! `channels == 1` they are converted to luma first (kept as gray RGB, on which the colour
//! distortions are no-ops), and the tensor has one channel.

use image::{RgbImage, imageops};

use crate::{
    DataError, FlipAxis, IGNORE_INDEX, IMAGENET_MEAN, IMAGENET_STD, ImageTensor, Interpolation, LabelMap, RandomFlip,
    Rng, resize, to_luma, to_normalized_tensor,
};

/// One transformed example: `[channels, height, width]` image and its `[height', width']` mask
/// (the same size after a training transform; the original size after an evaluation one).
#[derive(Debug, Clone, PartialEq)]
pub struct SegExample {
    /// The normalised image.
    pub image: ImageTensor,
    /// The mask, [`IGNORE_INDEX`] where padded or unlabelled.
    pub mask: LabelMap,
}

/// A per-example preprocessing the [`crate::SegLoader`] runs on its worker threads.
pub trait SegTransform: Send + Sync {
    /// Transforms one decoded example. `rng` is the example's own stream (derived from the run
    /// seed, epoch and sample position), so the result does not depend on thread timing.
    fn transform(&self, image: &RgbImage, mask: &LabelMap, rng: &mut Rng) -> SegExample;
}

/// `[height, width]` of an image of `height` x `width` rescaled to fit `scale` with its aspect
/// ratio kept (mmcv's `rescale_size`): the factor is
/// `min(max(scale) / long_side, min(scale) / short_side)`, sides rounded as `int(side * f + 0.5)`.
pub fn keep_ratio_size(height: usize, width: usize, scale: [usize; 2]) -> [usize; 2] {
    let (long, short) = (scale[0].max(scale[1]) as f64, scale[0].min(scale[1]) as f64);
    let factor = f64::min(long / height.max(width) as f64, short / height.min(width) as f64);
    [height, width].map(|side| ((side as f64 * factor + 0.5) as usize).max(1))
}

/// mmseg's `RandomResize(scale, ratio_range, keep_ratio=True)`: draws `ratio` uniformly from
/// `ratio_range`, scales the target to `int(scale * ratio)` and rescales image and mask to fit
/// it ([`keep_ratio_size`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomResize {
    /// Target as mmseg writes it, e.g. `[2048, 512]`; only its larger and smaller side matter.
    pub scale: [usize; 2],
    /// Range of the ratio applied to `scale`, e.g. `[0.5, 2.0]`.
    pub ratio_range: [f64; 2],
    /// Filter of the image (the mask is always resized nearest).
    pub interpolation: Interpolation,
}

impl RandomResize {
    /// `[height, width]` after the resize with ratio `ratio`.
    pub fn size_for_ratio(&self, height: usize, width: usize, ratio: f64) -> [usize; 2] {
        let scale = self.scale.map(|s| ((s as f64 * ratio) as usize).max(1));
        keep_ratio_size(height, width, scale)
    }

    /// Resizes both, with one ratio drawn from `rng`.
    pub fn apply(&self, image: &RgbImage, mask: &LabelMap, rng: &mut Rng) -> (RgbImage, LabelMap) {
        let ratio = rng.uniform(self.ratio_range[0], self.ratio_range[1]);
        let [h, w] = self.size_for_ratio(image.height() as usize, image.width() as usize, ratio);
        resize_pair(image, mask, [h, w], self.interpolation)
    }
}

/// Resizes the image with `interpolation` and the mask nearest, to `[height, width]`.
fn resize_pair(
    image: &RgbImage,
    mask: &LabelMap,
    [h, w]: [usize; 2],
    interpolation: Interpolation,
) -> (RgbImage, LabelMap) {
    (resize(image, w as u32, h as u32, interpolation), resize(mask, w as u32, h as u32, Interpolation::Nearest))
}

/// A crop window: rows `top..top + height`, columns `left..left + width`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropWindow {
    /// First row.
    pub top: usize,
    /// First column.
    pub left: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

/// mmseg's `RandomCrop(crop_size, cat_max_ratio)`: a uniformly placed `crop_size` window (cut to
/// the image where the image is smaller, which [`pad_to_size`] then pads). With
/// `cat_max_ratio < 1` it tries up to 10 windows, keeping the first in which at least two
/// classes are present and the most frequent covers less than `cat_max_ratio` of the labelled
/// (non-255) pixels; after 10 failures an 11th window is used as it comes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomCrop {
    /// `[height, width]`.
    pub crop_size: [usize; 2],
    /// Largest share of one class in the crop; 1 turns the check off.
    pub cat_max_ratio: f64,
}

impl RandomCrop {
    /// The window for `mask` (whose size is the image's).
    pub fn window(&self, mask: &LabelMap, rng: &mut Rng) -> CropWindow {
        let (height, width) = (mask.height() as usize, mask.width() as usize);
        let mut draw = || {
            let top = rng.randint(0, height.saturating_sub(self.crop_size[0]));
            let left = rng.randint(0, width.saturating_sub(self.crop_size[1]));
            CropWindow { top, left, height: self.crop_size[0].min(height), width: self.crop_size[1].min(width) }
        };
        let mut window = draw();
        if self.cat_max_ratio < 1.0 {
            for _ in 0..10 {
                let mut counts = [0usize; 256];
                for row in mask.as_raw().chunks_exact(width).skip(window.top).take(window.height) {
                    row[window.left..window.left + window.width].iter().for_each(|&l| counts[l as usize] += 1);
                }
                counts[IGNORE_INDEX as usize] = 0;
                let present = counts.iter().filter(|&&c| c > 0).count();
                let (max, total) = (*counts.iter().max().unwrap(), counts.iter().sum::<usize>());
                if present > 1 && (max as f64) / (total as f64) < self.cat_max_ratio {
                    break;
                }
                window = draw();
            }
        }
        window
    }

    /// Crops both to one window.
    pub fn apply(&self, image: &RgbImage, mask: &LabelMap, rng: &mut Rng) -> (RgbImage, LabelMap) {
        let w = self.window(mask, rng);
        let (x, y, cw, ch) = (w.left as u32, w.top as u32, w.width as u32, w.height as u32);
        (imageops::crop_imm(image, x, y, cw, ch).to_image(), imageops::crop_imm(mask, x, y, cw, ch).to_image())
    }
}

impl RandomFlip {
    /// Flips image and mask together with probability `prob` (one draw).
    pub fn apply_pair(&self, image: RgbImage, mask: LabelMap, rng: &mut Rng) -> (RgbImage, LabelMap) {
        if !rng.bernoulli(self.prob) {
            return (image, mask);
        }
        let mask = match self.axis {
            FlipAxis::Horizontal => imageops::flip_horizontal(&mask),
            FlipAxis::Vertical => imageops::flip_vertical(&mask),
        };
        (RandomFlip::flip(self.axis, &image), mask)
    }
}

/// mmseg's `PhotoMetricDistortion`, on the image only. Each step happens with probability 1/2:
/// brightness (add `uniform(-delta, delta)`), then contrast first or last at random (multiply
/// by `uniform(contrast_range)`), saturation (multiply S by `uniform(saturation_range)`) and hue
/// (add an integer in `[-hue_delta, hue_delta)` to H, modulo 180), each in f32, clipped and
/// truncated to 8 bits as mmseg's `convert` does. HSV is OpenCV's 8-bit HSV (H in `0..180`); a
/// gray pixel has no saturation, so on grayscale images only brightness and contrast act.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhotoMetricDistortion {
    /// Brightness shift bound, in levels (32).
    pub brightness_delta: f64,
    /// Contrast factor range (`[0.5, 1.5]`).
    pub contrast_range: [f64; 2],
    /// Saturation factor range (`[0.5, 1.5]`).
    pub saturation_range: [f64; 2],
    /// Hue shift bound, in OpenCV hue units of 2 degrees (18).
    pub hue_delta: u32,
}

impl Default for PhotoMetricDistortion {
    /// mmseg's defaults.
    fn default() -> Self {
        PhotoMetricDistortion {
            brightness_delta: 32.0,
            contrast_range: [0.5, 1.5],
            saturation_range: [0.5, 1.5],
            hue_delta: 18,
        }
    }
}

impl PhotoMetricDistortion {
    /// Distorts `image` with draws from `rng`.
    pub fn apply(&self, mut image: RgbImage, rng: &mut Rng) -> RgbImage {
        // mmseg's `random.randint(2)`: a fair coin.
        let coin = |rng: &mut Rng| rng.below(2) == 1;
        let convert = |v: u8, alpha: f32, beta: f32| (v as f32 * alpha + beta).clamp(0.0, 255.0) as u8;
        if coin(rng) {
            let beta = rng.uniform(-self.brightness_delta, self.brightness_delta) as f32;
            image.iter_mut().for_each(|v| *v = convert(*v, 1.0, beta));
        }
        let contrast_first = coin(rng);
        let contrast = |image: &mut RgbImage, rng: &mut Rng| {
            if coin(rng) {
                let alpha = rng.uniform(self.contrast_range[0], self.contrast_range[1]) as f32;
                image.iter_mut().for_each(|v| *v = convert(*v, alpha, 0.0));
            }
        };
        if contrast_first {
            contrast(&mut image, rng);
        }
        if coin(rng) {
            let alpha = rng.uniform(self.saturation_range[0], self.saturation_range[1]) as f32;
            map_hsv(&mut image, |[h, s, v]| [h, convert(s, alpha, 0.0), v]);
        }
        if coin(rng) {
            let delta = rng.below(2 * self.hue_delta as u64) as i32 - self.hue_delta as i32;
            map_hsv(&mut image, |[h, s, v]| [(h as i32 + delta).rem_euclid(180) as u8, s, v]);
        }
        if !contrast_first {
            contrast(&mut image, rng);
        }
        image
    }
}

/// Applies `f` to every pixel in OpenCV's 8-bit HSV.
fn map_hsv(image: &mut RgbImage, f: impl Fn([u8; 3]) -> [u8; 3]) {
    for pixel in image.pixels_mut() {
        pixel.0 = hsv_to_rgb(f(rgb_to_hsv(pixel.0)));
    }
}

/// OpenCV's `RGB2HSV_b` (H in `0..180`), its fixed-point arithmetic with 12 fraction bits.
fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    const SHIFT: i32 = 12;
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    if diff == 0 {
        return [0, 0, v as u8];
    }
    let s = (diff * (((255 << SHIFT) as f64 / v as f64).round() as i32) + (1 << (SHIFT - 1))) >> SHIFT;
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let hdiv = ((180 << SHIFT) as f64 / (6.0 * diff as f64)).round() as i32;
    let mut h = (h * hdiv + (1 << (SHIFT - 1))) >> SHIFT;
    if h < 0 {
        h += 180;
    }
    [h as u8, s as u8, v as u8]
}

/// OpenCV's `HSV2RGB_b`: through floats, rounded back to 8 bits.
fn hsv_to_rgb([h, s, v]: [u8; 3]) -> [u8; 3] {
    if s == 0 {
        return [v; 3];
    }
    let (s, v) = (s as f32 / 255.0, v as f32 / 255.0);
    let h = h as f32 * (6.0 / 180.0);
    let sector = h.floor();
    let f = h - sector;
    let tab = [v, v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f))];
    // (b, g, r) indices into `tab` per sector, as OpenCV's `sector_data`.
    const SECTORS: [[usize; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
    let [bi, gi, ri] = SECTORS[(sector as usize) % 6];
    [tab[ri], tab[gi], tab[bi]].map(|x| (x * 255.0).round().clamp(0.0, 255.0) as u8)
}

/// Pads a normalised example at the bottom and right to `[height, width]`: the image with 0 (the
/// mean colour, after normalisation) and the mask with [`IGNORE_INDEX`], as mmseg's
/// `SegDataPreProcessor(pad_val=0, seg_pad_val=255)`. Larger examples are left as they are.
pub fn pad_to_size(example: SegExample, [height, width]: [usize; 2]) -> SegExample {
    let SegExample { image, mask } = example;
    let (h, w) = (image.height, image.width);
    if h >= height && w >= width {
        return SegExample { image, mask };
    }
    let (out_h, out_w) = (h.max(height), w.max(width));
    let mut data = vec![0f32; image.channels * out_h * out_w];
    for (src, dst) in image.data.chunks_exact(h * w).zip(data.chunks_exact_mut(out_h * out_w)) {
        for (src_row, dst_row) in src.chunks_exact(w).zip(dst.chunks_exact_mut(out_w)) {
            dst_row[..w].copy_from_slice(src_row);
        }
    }
    let mut padded = LabelMap::from_pixel(out_w as u32, out_h as u32, image::Luma([IGNORE_INDEX]));
    imageops::replace(&mut padded, &mask, 0, 0);
    SegExample { image: ImageTensor { data, channels: image.channels, height: out_h, width: out_w }, mask: padded }
}

/// The RGB image as the model's channels see it: unchanged for 3, luma as gray RGB for 1.
fn for_channels(image: &RgbImage, channels: usize) -> RgbImage {
    if channels == 1 { crate::image_ops::luma_to_rgb(&to_luma(image)) } else { image.clone() }
}

/// `[channels, height, width]` normalised tensor of an 8-bit RGB image (gray RGB for one channel).
fn normalise(image: &RgbImage, channels: usize, mean: [f32; 3], std: [f32; 3]) -> ImageTensor {
    let size = [image.height() as usize, image.width() as usize];
    if channels == 1 {
        let luma: Vec<u8> = image.as_raw().iter().step_by(3).copied().collect();
        to_normalized_tensor(&luma, 1, size, mean, std)
    } else {
        to_normalized_tensor(image.as_raw(), 3, size, mean, std)
    }
}

/// mmseg's ADE20K training pipeline (module docs); build it with [`SegTransformConfig::build_train`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegTrainTransform {
    /// Step 1.
    pub resize: RandomResize,
    /// Step 2.
    pub crop: RandomCrop,
    /// Step 3 (horizontal); `None` for off.
    pub flip: Option<RandomFlip>,
    /// Step 4; `None` for off.
    pub photometric: Option<PhotoMetricDistortion>,
    /// Normalisation mean, on the 0-1 scale of [`to_normalized_tensor`] (mmseg's 0-255 values
    /// divided by 255: `[123.675, 116.28, 103.53] / 255` is [`IMAGENET_MEAN`]).
    pub mean: [f32; 3],
    /// Normalisation standard deviation, 0-1 scale.
    pub std: [f32; 3],
    /// Output channels, 1 (luma) or 3.
    pub channels: usize,
}

impl SegTrainTransform {
    /// Steps 1-4: the augmented 8-bit image and its mask, at most `crop_size`.
    pub fn augment(&self, image: &RgbImage, mask: &LabelMap, rng: &mut Rng) -> (RgbImage, LabelMap) {
        let (image, mask) = self.resize.apply(&for_channels(image, self.channels), mask, rng);
        let (mut image, mut mask) = self.crop.apply(&image, &mask, rng);
        if let Some(flip) = &self.flip {
            (image, mask) = flip.apply_pair(image, mask, rng);
        }
        if let Some(photometric) = &self.photometric {
            image = photometric.apply(image, rng);
        }
        (image, mask)
    }
}

impl SegTransform for SegTrainTransform {
    /// All five steps: `[channels, crop_h, crop_w]` and a `[crop_h, crop_w]` mask.
    fn transform(&self, image: &RgbImage, mask: &LabelMap, rng: &mut Rng) -> SegExample {
        let (image, mask) = self.augment(image, mask, rng);
        let image = normalise(&image, self.channels, self.mean, self.std);
        pad_to_size(SegExample { image, mask }, self.crop.crop_size)
    }
}

/// How evaluation resizes the image (never the mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalResize {
    /// mmseg's `Resize(scale, keep_ratio=True)`, e.g. `[2048, 512]` ([`keep_ratio_size`]).
    KeepRatio {
        /// Target as mmseg writes it.
        scale: [usize; 2],
    },
    /// Straight to `[height, width]` (the original size keeps the image as it is).
    Fixed {
        /// `[height, width]`.
        size: [usize; 2],
    },
}

/// mmseg's test pipeline: the image resized ([`EvalResize`]) and normalised; the mask returned
/// at its original size for metrics at the original resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct SegEvalTransform {
    /// The resize.
    pub resize: EvalResize,
    /// Filter of the image.
    pub interpolation: Interpolation,
    /// Normalisation mean (0-1 scale, as [`SegTrainTransform::mean`]).
    pub mean: [f32; 3],
    /// Normalisation standard deviation.
    pub std: [f32; 3],
    /// Output channels, 1 (luma) or 3.
    pub channels: usize,
}

impl SegEvalTransform {
    /// `[height, width]` the image of `height` x `width` is resized to.
    pub fn resized_size(&self, height: usize, width: usize) -> [usize; 2] {
        match self.resize {
            EvalResize::KeepRatio { scale } => keep_ratio_size(height, width, scale),
            EvalResize::Fixed { size } => size,
        }
    }
}

impl SegTransform for SegEvalTransform {
    /// Draws nothing from `rng`.
    fn transform(&self, image: &RgbImage, mask: &LabelMap, _rng: &mut Rng) -> SegExample {
        let [h, w] = self.resized_size(image.height() as usize, image.width() as usize);
        let resized = resize(&for_channels(image, self.channels), w as u32, h as u32, self.interpolation);
        SegExample { image: normalise(&resized, self.channels, self.mean, self.std), mask: mask.clone() }
    }
}

/// The segmentation transforms as plain values (what a config file holds), with mmseg's ADE20K
/// settings as [`SegTransformConfig::ade20k`].
#[derive(Debug, Clone, PartialEq)]
pub struct SegTransformConfig {
    /// Training crop `[height, width]` (`crop_size`, 512x512 for ADE20K).
    pub crop_size: [usize; 2],
    /// RandomResize target and evaluation keep-ratio target (`scale`, `[2048, 512]`).
    pub scale: [usize; 2],
    /// RandomResize ratio range (`ratio_range`, `[0.5, 2.0]`).
    pub ratio_range: [f64; 2],
    /// RandomCrop's `cat_max_ratio` (0.75); 1 turns it off.
    pub cat_max_ratio: f64,
    /// Horizontal flip probability (0.5).
    pub flip_prob: f64,
    /// PhotoMetricDistortion with mmseg's defaults, or none.
    pub photometric: bool,
    /// Image filter of every resize (masks are always nearest).
    pub interpolation: Interpolation,
    /// Evaluation image size: `None` for mmseg's keep-ratio resize to `scale`, or a fixed
    /// `[height, width]`.
    pub eval_size: Option<[usize; 2]>,
    /// Normalisation mean, 0-1 scale (mmseg's 0-255 values / 255).
    pub mean: [f32; 3],
    /// Normalisation standard deviation, 0-1 scale.
    pub std: [f32; 3],
    /// Model input channels: 3 (RGB) or 1 (luma, normalised with `mean[0]`, `std[0]`).
    pub channels: usize,
}

impl SegTransformConfig {
    /// mmseg's ADE20K 512x512 pipeline: RandomResize((2048, 512), 0.5-2.0), RandomCrop(512,
    /// 0.75), flip 0.5, PhotoMetricDistortion, bilinear, keep-ratio evaluation resize, ImageNet
    /// mean/std (mmseg's `[123.675, 116.28, 103.53]`, `[58.395, 57.12, 57.375]` / 255), RGB.
    pub fn ade20k() -> Self {
        SegTransformConfig {
            crop_size: [512, 512],
            scale: [2048, 512],
            ratio_range: [0.5, 2.0],
            cat_max_ratio: 0.75,
            flip_prob: 0.5,
            photometric: true,
            interpolation: Interpolation::Bilinear,
            eval_size: None,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channels: 3,
        }
    }

    /// Checks that the values can be applied.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] naming the setting: a zero side in `crop_size`, `scale`
    /// or `eval_size`; a `ratio_range` that is not `0 < low <= high` or shrinks `scale` to
    /// nothing; `cat_max_ratio` outside `(0, 1]`; `flip_prob` outside `[0, 1]`; channels other
    /// than 1 or 3; a non-finite mean or a zero or non-finite std.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidTransform(msg));
        for (name, size) in
            [("crop_size", Some(self.crop_size)), ("scale", Some(self.scale)), ("eval_size", self.eval_size)]
        {
            if let Some(size) = size
                && size.contains(&0)
            {
                return invalid(format!("{name} {size:?} has a zero side"));
            }
        }
        let [low, high] = self.ratio_range;
        if !(low.is_finite() && high.is_finite() && low > 0.0 && low <= high) {
            return invalid(format!(
                "ratio_range {:?} must be two positive numbers, low <= high (mmseg: [0.5, 2.0])",
                self.ratio_range
            ));
        }
        if self.scale.iter().any(|&s| (s as f64 * low) < 1.0) {
            return invalid(format!("ratio_range low {low} shrinks scale {:?} to nothing", self.scale));
        }
        if !(self.cat_max_ratio > 0.0 && self.cat_max_ratio <= 1.0) {
            return invalid(format!("cat_max_ratio {} must lie in (0, 1]; 1 turns the check off", self.cat_max_ratio));
        }
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return invalid(format!("flip_prob {} must be a probability in [0, 1]", self.flip_prob));
        }
        if self.channels != 1 && self.channels != 3 {
            return invalid(format!("{} channels: images are read as RGB (3) or luma (1)", self.channels));
        }
        let (mean, std) = (&self.mean[..self.channels], &self.std[..self.channels]);
        if mean.iter().chain(std).any(|v| !v.is_finite()) || std.contains(&0.0) {
            return invalid(format!("mean {:?} / std {:?} must be finite, std non-zero", self.mean, self.std));
        }
        Ok(())
    }

    /// The training transform.
    ///
    /// # Errors
    /// [`SegTransformConfig::validate`]'s.
    pub fn build_train(&self) -> Result<SegTrainTransform, DataError> {
        self.validate()?;
        Ok(SegTrainTransform {
            resize: RandomResize {
                scale: self.scale,
                ratio_range: self.ratio_range,
                interpolation: self.interpolation,
            },
            crop: RandomCrop { crop_size: self.crop_size, cat_max_ratio: self.cat_max_ratio },
            flip: (self.flip_prob > 0.0).then_some(RandomFlip { prob: self.flip_prob, axis: FlipAxis::Horizontal }),
            photometric: self.photometric.then(PhotoMetricDistortion::default),
            mean: self.mean,
            std: self.std,
            channels: self.channels,
        })
    }

    /// The evaluation transform.
    ///
    /// # Errors
    /// [`SegTransformConfig::validate`]'s.
    pub fn build_eval(&self) -> Result<SegEvalTransform, DataError> {
        self.validate()?;
        let resize = match self.eval_size {
            None => EvalResize::KeepRatio { scale: self.scale },
            Some(size) => EvalResize::Fixed { size },
        };
        Ok(SegEvalTransform {
            resize,
            interpolation: self.interpolation,
            mean: self.mean,
            std: self.std,
            channels: self.channels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    /// Level of the image pixels of class `label`: far apart, so a bilinear blend of two
    /// classes is no class's level.
    fn code(label: u8) -> u8 {
        40 * label + 20
    }

    /// A 37x23 scene of four classes in blocks, plus an ignored stripe; the image's level
    /// encodes each pixel's label.
    fn scene() -> (RgbImage, LabelMap) {
        let mask = LabelMap::from_fn(37, 23, |x, y| {
            Luma([if x == 30 { IGNORE_INDEX } else { (x / 10 + 2 * (y / 12)) as u8 % 4 }])
        });
        let image = RgbImage::from_fn(37, 23, |x, y| match mask.get_pixel(x, y).0[0] {
            IGNORE_INDEX => Rgb([250; 3]),
            label => Rgb([code(label); 3]),
        });
        (image, mask)
    }

    /// Every labelled pixel whose neighbourhood of `radius` pixels is one class has that class's
    /// level (radius 0: every labelled pixel, for blend-free steps); returns how many were
    /// checked. A bilinear upscale by `f` blends over `f` output pixels, hence the radius.
    fn assert_aligned(image: &RgbImage, mask: &LabelMap, radius: u32) -> usize {
        assert_eq!(image.dimensions(), mask.dimensions());
        let (w, h) = mask.dimensions();
        let mut checked = 0;
        for (x, y, label) in mask.enumerate_pixels() {
            let label = label.0[0];
            if label == IGNORE_INDEX {
                continue;
            }
            let (xs, ys) =
                (x.saturating_sub(radius)..(x + radius + 1).min(w), y.saturating_sub(radius)..(y + radius + 1).min(h));
            if !xs.into_iter().all(|xx| ys.clone().all(|yy| mask.get_pixel(xx, yy).0[0] == label)) {
                continue;
            }
            assert_eq!(image.get_pixel(x, y).0, [code(label); 3], "pixel ({x}, {y}) of class {label} in {w}x{h}");
            checked += 1;
        }
        checked
    }

    fn labels_of(mask: &LabelMap) -> std::collections::BTreeSet<u8> {
        mask.iter().copied().collect()
    }

    #[test]
    fn keep_ratio_size_is_mmcv_rescale_size() {
        // 640x480 image into (2048, 512): min(2048/640, 512/480) = 1.0667 -> 683x512.
        assert_eq!(keep_ratio_size(480, 640, [2048, 512]), [512, 683]);
        // Long and thin: the long side limits.
        assert_eq!(keep_ratio_size(100, 4000, [2048, 512]), [51, 2048]);
        let resize = RandomResize { scale: [64, 16], ratio_range: [0.5, 2.0], interpolation: Interpolation::Bilinear };
        assert_eq!(resize.size_for_ratio(20, 40, 1.0), [16, 32]);
        assert_eq!(resize.size_for_ratio(20, 40, 0.5), [8, 16]);
        assert_eq!(resize.size_for_ratio(20, 40, 2.0), [32, 64]);
    }

    #[test]
    fn resize_keeps_mask_aligned_and_integral() {
        let (image, mask) = scene();
        let inputs = labels_of(&mask);
        for (seed, filter) in [(0, Interpolation::Bilinear), (1, Interpolation::Bilinear), (2, Interpolation::Nearest)]
        {
            let resize = RandomResize { scale: [80, 40], ratio_range: [0.5, 2.0], interpolation: filter };
            let mut rng = Rng::seed_from_u64(seed);
            let (a, m) = resize.apply(&image, &mask, &mut rng);
            let mut again = Rng::seed_from_u64(seed);
            let ratio = again.uniform(0.5, 2.0);
            assert_eq!([m.height(), m.width()].map(|s| s as usize), resize.size_for_ratio(23, 37, ratio));
            assert!(labels_of(&m).is_subset(&inputs));
            assert!(assert_aligned(&a, &m, if filter == Interpolation::Nearest { 0 } else { 4 }) > 50);
        }
    }

    #[test]
    fn crop_flip_pad_geometry_and_alignment() {
        let (image, mask) = scene();
        let crop = RandomCrop { crop_size: [16, 20], cat_max_ratio: 1.0 };
        let mut rng = Rng::seed_from_u64(4);
        let window = crop.window(&mask, &mut rng);
        let (ci, cm) = crop.apply(&image, &mask, &mut Rng::seed_from_u64(4));
        assert_eq!((cm.width(), cm.height()), (20, 16));
        assert_eq!(*cm.get_pixel(3, 5), *mask.get_pixel(window.left as u32 + 3, window.top as u32 + 5));
        assert_aligned(&ci, &cm, 0);
        // Smaller images are cropped as much as they allow.
        let big = RandomCrop { crop_size: [30, 100], cat_max_ratio: 1.0 };
        let (_, m) = big.apply(&image, &mask, &mut rng);
        assert_eq!(m.dimensions(), (37, 23));

        let flip = RandomFlip { prob: 1.0, axis: FlipAxis::Horizontal };
        let (fi, fm) = flip.apply_pair(ci.clone(), cm.clone(), &mut rng);
        assert_eq!(*fm.get_pixel(0, 2), *cm.get_pixel(19, 2));
        assert_aligned(&fi, &fm, 0);
        let never = RandomFlip { prob: 0.0, ..flip };
        assert_eq!(never.apply_pair(ci.clone(), cm.clone(), &mut rng), (ci.clone(), cm.clone()));

        let tensor = normalise(&ci, 3, [0.0; 3], [1.0; 3]);
        let padded = pad_to_size(SegExample { image: tensor, mask: cm.clone() }, [18, 25]);
        assert_eq!((padded.image.shape(), padded.mask.dimensions()), ([3, 18, 25], (25, 18)));
        for (x, y, label) in padded.mask.enumerate_pixels() {
            let value = padded.image.data[(y * 25 + x) as usize];
            if x >= 20 || y >= 16 {
                assert_eq!((label.0[0], value), (IGNORE_INDEX, 0.0), "padding at ({x}, {y})");
            } else {
                assert_eq!(*label, *cm.get_pixel(x, y));
                assert_eq!((value * 255.0).round() as u8, ci.get_pixel(x, y).0[0]);
            }
        }
    }

    #[test]
    fn cat_max_ratio_rejects_one_class_crops() {
        // 40 columns: class 0 on 0..30, class 1 on 30..40; a 20-wide crop is balanced enough
        // (both present, neither >= 75%) only at offsets 16..=20.
        let mask = LabelMap::from_fn(40, 4, |x, _| Luma([(x >= 30) as u8]));
        let balanced = |ratio: f64| {
            let crop = RandomCrop { crop_size: [4, 20], cat_max_ratio: ratio };
            (0..60).filter(|&s| (16..=20).contains(&crop.window(&mask, &mut Rng::seed_from_u64(s)).left)).count()
        };
        let (with, without) = (balanced(0.75), balanced(1.0));
        assert!(with >= 50 && without <= 30, "with {with}, without {without}");
        // Ignored pixels do not count as a class: class 0 alone never passes.
        let ignored = LabelMap::from_fn(40, 4, |x, _| Luma([if x >= 30 { IGNORE_INDEX } else { 0 }]));
        let crop = RandomCrop { crop_size: [4, 20], cat_max_ratio: 0.75 };
        let mut rng = Rng::seed_from_u64(0);
        crop.window(&ignored, &mut rng);
        let mut fresh = Rng::seed_from_u64(0);
        let windows: Vec<usize> = (0..11).map(|_| (fresh.randint(0, 0), fresh.randint(0, 20)).1).collect();
        assert_eq!(rng.next_u64(), fresh.next_u64(), "all 11 windows drawn: {windows:?}");
    }

    #[test]
    fn photometric_acts_on_the_image_only_and_keeps_gray_gray() {
        let (image, mask) = scene();
        let gray = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 30 + y) as u8; 3]));
        let distortion = PhotoMetricDistortion::default();
        let mut changed = 0;
        for seed in 0..20 {
            let out = distortion.apply(gray.clone(), &mut Rng::seed_from_u64(seed));
            assert!(out.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]), "gray stays gray");
            changed += (out != gray) as usize;
        }
        assert!(changed >= 10);
        // HSV round trip of OpenCV's 8-bit HSV is close to identity.
        for rgb in [[200, 30, 40], [10, 250, 90], [5, 6, 255], [128, 128, 127]] {
            let back = hsv_to_rgb(rgb_to_hsv(rgb));
            assert!(back.iter().zip(rgb).all(|(a, b)| (*a as i32 - b as i32).abs() <= 4), "{rgb:?} -> {back:?}");
        }
        let config = SegTransformConfig { photometric: true, ..SegTransformConfig::ade20k() };
        let train = SegTrainTransform {
            crop: RandomCrop { crop_size: [16, 16], cat_max_ratio: 1.0 },
            ..config.build_train().unwrap()
        };
        let (_, m1) = train.augment(&image, &mask, &mut Rng::seed_from_u64(5));
        let (_, m2) =
            SegTrainTransform { photometric: None, ..train.clone() }.augment(&image, &mask, &mut Rng::seed_from_u64(5));
        assert_eq!(m1, m2, "the photometric step leaves the mask alone");
    }

    #[test]
    fn train_pipeline_is_aligned_reproducible_and_padded() {
        let (image, mask) = scene();
        let config = SegTransformConfig {
            crop_size: [24, 24],
            scale: [60, 30],
            photometric: false,
            mean: [0.0; 3],
            std: [1.0; 3],
            ..SegTransformConfig::ade20k()
        };
        let train = config.build_train().unwrap();
        let mut inputs = labels_of(&mask);
        inputs.insert(IGNORE_INDEX);
        let mut checked = 0;
        for seed in 0..8 {
            let a = train.transform(&image, &mask, &mut Rng::seed_from_u64(seed));
            assert_eq!(a, train.transform(&image, &mask, &mut Rng::seed_from_u64(seed)));
            assert_eq!((a.image.shape(), a.mask.dimensions()), ([3, 24, 24], (24, 24)));
            assert!(labels_of(&a.mask).is_subset(&inputs));
            let bytes: Vec<u8> = a.image.data[..24 * 24].iter().map(|v| (v * 255.0).round() as u8).collect();
            let decoded = RgbImage::from_fn(24, 24, |x, y| Rgb([bytes[(y * 24 + x) as usize]; 3]));
            let real = LabelMap::from_fn(24, 24, |x, y| {
                // Padding is 0 in the image: only check inside the augmented image.
                if decoded.get_pixel(x, y).0[0] == 0 { Luma([IGNORE_INDEX]) } else { *a.mask.get_pixel(x, y) }
            });
            checked += assert_aligned(&decoded, &real, 4);
        }
        assert!(checked > 100, "{checked}");
        let one = SegTransformConfig { channels: 1, ..config.clone() }.build_train().unwrap();
        assert_eq!(one.transform(&image, &mask, &mut Rng::seed_from_u64(0)).image.shape(), [1, 24, 24]);
    }

    #[test]
    fn eval_resizes_the_image_only() {
        let (image, mask) = scene();
        let config = SegTransformConfig { scale: [60, 30], ..SegTransformConfig::ade20k() };
        let eval = config.build_eval().unwrap();
        let out = eval.transform(&image, &mask, &mut Rng::seed_from_u64(0));
        assert_eq!(out.image.shape(), [3, 30, 48]); // min(60/37, 30/23) = 1.304
        assert_eq!(out.mask, mask);
        let fixed = SegTransformConfig { eval_size: Some([16, 16]), channels: 1, ..config }.build_eval().unwrap();
        assert_eq!(fixed.transform(&image, &mask, &mut Rng::seed_from_u64(0)).image.shape(), [1, 16, 16]);
    }

    #[test]
    fn impossible_configs_are_named() {
        let base = SegTransformConfig::ade20k();
        for (config, needle) in [
            (SegTransformConfig { crop_size: [0, 512], ..base.clone() }, "crop_size"),
            (SegTransformConfig { ratio_range: [2.0, 0.5], ..base.clone() }, "ratio_range"),
            (SegTransformConfig { cat_max_ratio: 0.0, ..base.clone() }, "cat_max_ratio"),
            (SegTransformConfig { flip_prob: 1.5, ..base.clone() }, "flip_prob"),
            (SegTransformConfig { channels: 2, ..base.clone() }, "channels"),
            (SegTransformConfig { std: [0.0; 3], ..base.clone() }, "std"),
            (SegTransformConfig { eval_size: Some([0, 4]), ..base.clone() }, "eval_size"),
        ] {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(config.build_train().is_err() && config.build_eval().is_err());
        }
        base.validate().unwrap();
    }
}

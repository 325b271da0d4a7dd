//! timm's evaluation preprocessing (`transforms_imagenet_eval`, `crop_mode` `center` or `squash`).

use image::{GrayImage, ImageBuffer, Pixel, RgbImage};

use crate::{DataError, Interpolation, Rng, resize, to_luma};

/// ImageNet per-channel mean (timm's `IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet per-channel standard deviation (timm's `IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A preprocessed image: planar `[channels, height, width]` f32, ready to be a batch of one.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor {
    /// `channels * height * width` values, channel-major then row-major.
    pub data: Vec<f32>,
    /// Channels (1 or 3).
    pub channels: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
}

impl ImageTensor {
    /// `[channels, height, width]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Number of values, `channels * height * width`.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// How the image is fitted to `floor(img_size / crop_pct)` before the centre crop (timm's
/// `crop_mode`; its third mode, `border`, is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CropMode {
    /// Keep the aspect ratio: the shorter side (or, for a non-square target, the tighter one)
    /// is resized to the scale size; the crop then cuts the rest. timm's default.
    #[default]
    Center,
    /// Resize both sides straight to the scale size, distorting the aspect ratio; nothing is
    /// cut when `crop_pct` is 1 (timm's TF-ported MaxViT weights at 384 and 512 use this).
    Squash,
}

impl CropMode {
    /// The mode timm names `name` (`center` or `squash`).
    ///
    /// # Errors
    /// [`DataError::UnknownCropMode`] for any other name, `border` included.
    pub fn from_timm(name: &str) -> Result<Self, DataError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "center" => Ok(CropMode::Center),
            "squash" => Ok(CropMode::Squash),
            _ => Err(DataError::UnknownCropMode { name: name.to_string() }),
        }
    }
}

/// timm's `transforms_imagenet_eval`:
///
/// 1. `scale_size = floor(img_size / crop_pct)` per side;
/// 2. [`CropMode::Center`]: if the two scale sides are equal, torchvision `Resize(scale_size)` of
///    the shorter image side (the longer becomes `int(scale_size * long / short)`), else timm's
///    `ResizeKeepRatio` (both sides divided by the smaller of the two side ratios, rounded half
///    to even); [`CropMode::Squash`]: torchvision `Resize((scale_h, scale_w))`, both sides
///    straight to the scale size. Either with Pillow's resampling ([`resize`]);
/// 3. torchvision `CenterCrop(img_size)`, zero-padding first where the image is smaller;
/// 4. `ToTensor` (`/ 255`) and `Normalize(mean, std)`, in f32.
///
/// With `channels == 1` the image is first converted to luma (Pillow's `convert('L')`, as
/// timm's datasets do with `input_img_mode='L'`) and normalised with `mean[0]` and `std[0]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalTransform {
    /// Output `[height, width]`.
    pub img_size: [usize; 2],
    /// Fraction of the resized image the crop keeps; timm's default is 0.875. Values above 1
    /// make the crop larger than the resized image (zero padding).
    pub crop_pct: f64,
    /// Resampling filter of the resize.
    pub interpolation: Interpolation,
    /// Per-channel mean subtracted after scaling to [0, 1].
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after the mean.
    pub std: [f32; 3],
    /// Output channels: 3 (RGB) or 1 (luma).
    pub channels: usize,
    /// How the resize treats the aspect ratio.
    pub crop_mode: CropMode,
}

impl EvalTransform {
    /// timm's defaults for an ImageNet model: bicubic, ImageNet mean/std, RGB.
    pub fn imagenet(img_size: [usize; 2], crop_pct: f64) -> Self {
        EvalTransform {
            img_size,
            crop_pct,
            interpolation: Interpolation::Bicubic,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            channels: 3,
            crop_mode: CropMode::Center,
        }
    }

    /// Checks that the configuration can be applied.
    ///
    /// # Errors
    /// [`DataError::InvalidTransform`] for a zero output side, a `crop_pct` that is not a positive
    /// finite number or leaves a zero resize side, a channel count other than 1 or 3, or a zero or
    /// non-finite std.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidTransform(msg));
        if self.img_size.contains(&0) {
            return invalid(format!("img_size {:?} has a zero side", self.img_size));
        }
        if !(self.crop_pct.is_finite() && self.crop_pct > 0.0) {
            return invalid(format!("crop_pct {} must be a positive number (timm's default is 0.875)", self.crop_pct));
        }
        if self.scale_size().contains(&0) {
            return invalid(format!("crop_pct {} leaves nothing of img_size {:?}", self.crop_pct, self.img_size));
        }
        if self.channels != 1 && self.channels != 3 {
            return invalid(format!("{} channels: images are read as RGB (3) or luma (1)", self.channels));
        }
        let stds = &self.std[..self.channels];
        if stds.iter().chain(&self.mean[..self.channels]).any(|v| !v.is_finite()) || stds.contains(&0.0) {
            return invalid(format!("mean {:?} / std {:?} must be finite, std non-zero", self.mean, self.std));
        }
        Ok(())
    }

    /// `[height, width]` the image is resized to before the crop: `floor(img_size / crop_pct)`.
    pub fn scale_size(&self) -> [usize; 2] {
        self.img_size.map(|side| (side as f64 / self.crop_pct).floor() as usize)
    }

    /// `[height, width]` of an image of `height` x `width` after the resize step (before the crop).
    ///
    /// # Panics
    /// If `height` or `width` is zero.
    pub fn resized_size(&self, height: usize, width: usize) -> [usize; 2] {
        assert!(height > 0 && width > 0, "cannot preprocess an empty {width}x{height} image");
        let [scale_h, scale_w] = self.scale_size();
        if self.crop_mode == CropMode::Squash {
            [scale_h, scale_w]
        } else if scale_h == scale_w {
            // torchvision `_compute_resized_output_size` with an int size.
            let (short, long) = if width <= height { (width, height) } else { (height, width) };
            let new_long = ((scale_h * long) as f64 / short as f64) as usize;
            if width <= height { [new_long, scale_h] } else { [scale_h, new_long] }
        } else {
            // timm `ResizeKeepRatio.get_params` with longest=0 and no randomness; Python's round().
            let ratio = f64::min(height as f64 / scale_h as f64, width as f64 / scale_w as f64);
            [height, width].map(|side| (side as f64 / ratio).round_ties_even() as usize)
        }
    }

    /// Preprocesses an RGB image into a `[channels, img_size[0], img_size[1]]` tensor.
    ///
    /// # Panics
    /// If the configuration fails [`EvalTransform::validate`] or the image is empty.
    pub fn apply(&self, image: &RgbImage) -> ImageTensor {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let [height, width] = self.resized_size(image.height() as usize, image.width() as usize);
        let [crop_h, crop_w] = self.img_size.map(|s| s as u32);
        let bytes = if self.channels == 1 {
            let luma: GrayImage = to_luma(image);
            let resized = resize(&luma, width as u32, height as u32, self.interpolation);
            center_crop(&resized, crop_w, crop_h).into_raw()
        } else {
            let resized = resize(image, width as u32, height as u32, self.interpolation);
            center_crop(&resized, crop_w, crop_h).into_raw()
        };
        to_normalized_tensor(&bytes, self.channels, self.img_size, self.mean, self.std)
    }
}

impl ImageTransform for EvalTransform {
    fn output_shape(&self) -> [usize; 3] {
        [self.channels, self.img_size[0], self.img_size[1]]
    }

    /// [`EvalTransform::apply`]; draws nothing from `rng`.
    fn transform(&self, image: &RgbImage, _rng: &mut Rng) -> ImageTensor {
        self.apply(image)
    }
}

/// A per-image preprocessing the [`crate::DataLoader`] runs on its worker threads: timm's eval
/// transform ([`EvalTransform`]), its train transform ([`crate::TrainTransform`]), or your own.
pub trait ImageTransform: Send + Sync {
    /// `[channels, height, width]` of every output.
    fn output_shape(&self) -> [usize; 3];

    /// Preprocesses one decoded RGB image into a `[channels, height, width]` tensor. `rng` is the
    /// sample's own random stream (derived from the run seed, epoch and sample position), so the
    /// result does not depend on which thread runs it or when.
    fn transform(&self, image: &RgbImage, rng: &mut Rng) -> ImageTensor;
}

/// torchvision's `ToTensor` then `Normalize(mean, std)`: interleaved 8-bit `[height, width,
/// channels]` bytes to a planar f32 `[channels, height, width]` tensor of
/// `(byte / 255 - mean[c]) / std[c]`, computed in f32 as torchvision does.
///
/// # Panics
/// If `interleaved` does not hold `height * width * channels` bytes, or `channels > 3`.
pub fn to_normalized_tensor(
    interleaved: &[u8],
    channels: usize,
    [height, width]: [usize; 2],
    mean: [f32; 3],
    std: [f32; 3],
) -> ImageTensor {
    assert!(channels <= 3, "{channels} channels: expected 1 or 3");
    let plane = height * width;
    assert_eq!(interleaved.len(), plane * channels, "{height}x{width}x{channels} image expected");
    let mut data = vec![0f32; channels * plane];
    for (c, out) in data.chunks_exact_mut(plane).enumerate() {
        let (mean, std) = (mean[c], std[c]);
        for (v, &byte) in out.iter_mut().zip(interleaved.iter().skip(c).step_by(channels)) {
            // Division, not multiplication by reciprocals: torchvision divides, and the
            // results then agree to the last bit.
            *v = (byte as f32 / 255.0 - mean) / std;
        }
    }
    ImageTensor { data, channels, height, width }
}

/// torchvision's `CenterCrop((height, width))` of a PIL image: where the image is smaller than the
/// crop it is first zero-padded (`(crop - side) // 2` before, the rest after); the crop then
/// starts at `round((side - crop) / 2)`, Python's round (half to even).
///
/// Interleaved `[height, width, channels]` 8-bit in and out.
pub fn center_crop<P: Pixel<Subpixel = u8>>(
    image: &ImageBuffer<P, Vec<u8>>,
    width: u32,
    height: u32,
) -> ImageBuffer<P, Vec<u8>> {
    let channels = P::CHANNEL_COUNT as usize;
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let (left, top) = (crop_start(in_w, out_w), crop_start(in_h, out_h));
    let src = image.as_raw();
    let mut out = vec![0u8; out_w * out_h * channels];
    // Only the overlap of the crop window with the source is copied; the rest stays zero padding.
    let x_range = left.max(0)..(left + out_w as i64).min(in_w as i64);
    for (y, dst_row) in out.chunks_exact_mut(out_w * channels).enumerate() {
        let sy = top + y as i64;
        if sy < 0 || sy >= in_h as i64 || x_range.is_empty() {
            continue;
        }
        let src_row = &src[sy as usize * in_w * channels..][..in_w * channels];
        let dst_start = (x_range.start - left) as usize * channels;
        let span = x_range.end as usize * channels - x_range.start as usize * channels;
        dst_row[dst_start..dst_start + span].copy_from_slice(&src_row[x_range.start as usize * channels..][..span]);
    }
    ImageBuffer::from_raw(width, height, out).expect("cropped buffer has the target size")
}

/// Offset of the crop window along one side (negative: padding before the image).
fn crop_start(side: usize, crop: usize) -> i64 {
    if crop > side { -(((crop - side) / 2) as i64) } else { ((side - crop) as f64 / 2.0).round_ties_even() as i64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Luma, Rgb};

    fn transform(img_size: [usize; 2], crop_pct: f64) -> EvalTransform {
        EvalTransform::imagenet(img_size, crop_pct)
    }

    #[test]
    fn scale_size_floors() {
        assert_eq!(transform([224, 224], 0.875).scale_size(), [256, 256]);
        assert_eq!(transform([384, 384], 1.0).scale_size(), [384, 384]);
        assert_eq!(transform([16, 16], 0.9).scale_size(), [17, 17]); // 17.78
        assert_eq!(transform([12, 20], 0.9).scale_size(), [13, 22]);
    }

    #[test]
    fn square_target_resizes_the_shorter_side() {
        let t = transform([224, 224], 0.875);
        assert_eq!(t.resized_size(480, 640), [256, 341]); // int(256 * 640 / 480) = 341.33 -> 341
        assert_eq!(t.resized_size(640, 480), [341, 256]);
        assert_eq!(t.resized_size(100, 100), [256, 256]);
        assert_eq!(t.resized_size(23, 37), [256, 411]); // 411.83 truncates, not rounds
    }

    #[test]
    fn non_square_target_keeps_ratio_with_bankers_rounding() {
        let t = transform([12, 20], 0.9); // scale (13, 22)
        // ratio = min(23/13, 37/22) = 1.6818...; 23 / ratio = 13.675 -> 14, 37 / ratio = 22.
        assert_eq!(t.resized_size(23, 37), [14, 22]);
        // A .5 tie rounds to even: ratio = min(5/2, 8/4) = 2 -> 2.5 -> 2, 4.
        let tie = EvalTransform { img_size: [2, 4], crop_pct: 1.0, ..t };
        assert_eq!(tie.resized_size(5, 8), [2, 4]);
    }

    #[test]
    fn squash_resizes_both_sides_to_the_scale_size() {
        let squash = |img_size, crop_pct| EvalTransform { crop_mode: CropMode::Squash, ..transform(img_size, crop_pct) };
        // the aspect ratio is ignored: any image goes straight to floor(img_size / crop_pct)
        assert_eq!(squash([384, 384], 1.0).resized_size(480, 640), [384, 384]);
        assert_eq!(squash([384, 384], 1.0).resized_size(23, 37), [384, 384]);
        assert_eq!(squash([12, 20], 0.9).resized_size(100, 10), [13, 22]);
        // centre mode keeps the ratio for the same inputs
        assert_eq!(transform([384, 384], 1.0).resized_size(480, 640), [384, 512]);
    }

    #[test]
    fn squash_keeps_the_whole_image_where_center_crops_it() {
        // 8x4 (w x h): the left quarter black, the rest white; nearest keeps values exact
        let img = RgbImage::from_fn(8, 4, |x, _| if x < 2 { Rgb([0, 0, 0]) } else { Rgb([255, 255, 255]) });
        let plain = |crop_mode| EvalTransform {
            interpolation: Interpolation::Nearest,
            mean: [0.0; 3],
            std: [1.0; 3],
            crop_mode,
            ..transform([4, 4], 1.0)
        };
        let first_row = |t: EvalTransform| t.apply(&img).data[..4].to_vec();
        // squash: 8 -> 4 columns, nearest samples source columns 1, 3, 5, 7: the black survives
        assert_eq!(first_row(plain(CropMode::Squash)), vec![0.0, 1.0, 1.0, 1.0]);
        // center: height already 4, width stays 8, the crop keeps columns 2..6: all white
        assert_eq!(first_row(plain(CropMode::Center)), vec![1.0; 4]);
        assert!(CropMode::from_timm("squash").unwrap() == CropMode::Squash);
        assert!(CropMode::from_timm(" Center ").unwrap() == CropMode::Center);
        let err = CropMode::from_timm("border").unwrap_err();
        assert!(matches!(err, DataError::UnknownCropMode { .. }), "{err}");
    }

    #[test]
    fn crop_start_rounds_half_to_even() {
        assert_eq!(crop_start(10, 4), 3);
        assert_eq!(crop_start(9, 4), 2); // 2.5 -> 2
        assert_eq!(crop_start(11, 4), 4); // 3.5 -> 4
        assert_eq!(crop_start(4, 4), 0);
        assert_eq!(crop_start(3, 8), -2); // pad (8-3)//2 = 2 before, 3 after
    }

    #[test]
    fn center_crop_takes_the_middle() {
        let img = GrayImage::from_fn(5, 4, |x, y| Luma([(10 * y + x) as u8]));
        let out = center_crop(&img, 3, 2);
        assert_eq!(out.into_raw(), vec![11, 12, 13, 21, 22, 23]);
    }

    #[test]
    fn center_crop_pads_with_zeros() {
        let img = RgbImage::from_pixel(2, 3, Rgb([9, 9, 9]));
        // Width 2 -> 5: one column before, two after; height 3 -> 2 crops from row round(0.5)=0.
        let out = center_crop(&img, 5, 2);
        let row: Vec<u8> = [0, 9, 9, 0, 0].iter().flat_map(|&v| [v; 3]).collect();
        assert_eq!(out.into_raw(), [row.clone(), row].concat());
    }

    #[test]
    fn apply_normalises_planar() {
        let img = RgbImage::from_pixel(8, 8, Rgb([255, 0, 51]));
        let t = EvalTransform { interpolation: Interpolation::Bilinear, ..transform([4, 4], 0.5) };
        let out = t.apply(&img);
        assert_eq!(out.shape(), [3, 4, 4]);
        assert_eq!(out.data_len(), 48);
        let expect = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (0.2 - 0.406) / 0.225];
        for (c, plane) in out.data.chunks(16).enumerate() {
            assert!(plane.iter().all(|&v| (v - expect[c]).abs() < 1e-6), "channel {c}: {plane:?}");
        }
    }

    #[test]
    fn apply_luma_uses_first_mean_and_std() {
        let img = RgbImage::from_pixel(6, 6, Rgb([255, 255, 255]));
        let t = EvalTransform { channels: 1, mean: [0.5, 9.0, 9.0], std: [0.25, 9.0, 9.0], ..transform([3, 3], 1.0) };
        let out = t.apply(&img);
        assert_eq!(out.shape(), [1, 3, 3]);
        assert!(out.data.iter().all(|&v| v == 2.0), "{:?}", out.data);
    }

    #[test]
    fn padding_normalises_to_minus_mean_over_std() {
        let img = RgbImage::from_pixel(4, 4, Rgb([255, 255, 255]));
        let out = transform([8, 8], 2.0).apply(&img); // scale 4: no resize, crop 8 pads 2 each side
        let corner = [out.data[0], out.data[64], out.data[128]];
        let centre = out.data[3 * 8 + 3];
        assert_eq!(corner, [-0.485 / 0.229, -0.456 / 0.224, -0.406 / 0.225]);
        assert_eq!(centre, (1.0 - 0.485) / 0.229);
    }

    #[test]
    fn validate_rejects_bad_configs() {
        let ok = transform([224, 224], 0.875);
        assert!(ok.validate().is_ok());
        for bad in [
            EvalTransform { crop_pct: 0.0, ..ok.clone() },
            EvalTransform { crop_pct: f64::NAN, ..ok.clone() },
            EvalTransform { crop_pct: 1000.0, ..ok.clone() },
            EvalTransform { channels: 2, ..ok.clone() },
            EvalTransform { img_size: [0, 224], ..ok.clone() },
            EvalTransform { std: [0.0, 1.0, 1.0], ..ok.clone() },
        ] {
            let err = bad.validate().unwrap_err();
            assert!(matches!(err, DataError::InvalidTransform(_)), "{err}");
        }
    }

    #[test]
    #[should_panic(expected = "crop_pct")]
    fn apply_panics_on_invalid_config() {
        transform([4, 4], -1.0).apply(&RgbImage::new(4, 4));
    }
}

//! Reading image files the way timm's datasets do: `Image.open(path).convert('RGB')` (or `'L'`).

use std::io::{Cursor, ErrorKind};
use std::path::Path;

use image::{DynamicImage, GrayImage, ImageError, ImageReader, RgbImage};

use crate::DataError;

/// Reads and decodes the image at `path` into 8-bit RGB, `[height, width, 3]` interleaved.
///
/// The format is recognised from the file's content, never from its extension: PNG, JPEG, BMP,
/// TIFF and WebP decode. Other layouts are converted as Pillow's `convert('RGB')` does:
/// grayscale is replicated to the three channels, alpha is dropped (not composited onto a
/// background), palettes are expanded. 16-bit channels keep their high byte, which is what
/// Pillow does for 16-bit colour PNGs (for 16-bit *grayscale* Pillow saturates every value above
/// 255 to white instead; Kiln keeps the picture). EXIF orientation is not applied, as in timm.
///
/// # Errors
/// [`DataError::NotFound`], [`DataError::Unreadable`], [`DataError::NotAnImage`],
/// [`DataError::UnsupportedFormat`], [`DataError::Corrupt`] or [`DataError::TooLarge`], each
/// naming `path`.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage, DataError> {
    Ok(to_rgb(decode(path.as_ref())?))
}

/// Reads and decodes the image at `path` as 8-bit luma, `[height, width]`, for models with one
/// input channel: Pillow's `convert('L')` of what [`load_image`] returns (see [`to_luma`]).
///
/// # Errors
/// As [`load_image`].
pub fn load_luma_image(path: impl AsRef<Path>) -> Result<GrayImage, DataError> {
    Ok(to_luma(&load_image(path)?))
}

/// Converts RGB to luma exactly as Pillow's `convert('L')` does: ITU-R 601-2 weights in 16-bit
/// fixed point, `L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16`, rounding half up.
///
/// (Pillow documents the weights as `R*299/1000 + G*587/1000 + B*114/1000`; the code computes the
/// fixed-point form above, and this function follows the code. The weights sum to 65536, so a
/// gray pixel keeps its level.)
pub fn to_luma(image: &RgbImage) -> GrayImage {
    let luma = image
        .as_raw()
        .chunks_exact(3)
        .map(|p| ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as u8)
        .collect();
    GrayImage::from_raw(image.width(), image.height(), luma).expect("one luma byte per pixel")
}

/// Converts any decoded image to 8-bit RGB with the rules of [`load_image`].
pub fn to_rgb(image: DynamicImage) -> RgbImage {
    let (width, height) = (image.width(), image.height());
    let high_byte = |v: u16| (v >> 8) as u8;
    let rgb: Vec<u8> = match image {
        DynamicImage::ImageRgb8(rgb) => return rgb,
        DynamicImage::ImageLuma8(gray) => gray.as_raw().iter().flat_map(|&l| [l, l, l]).collect(),
        DynamicImage::ImageLumaA8(gray) => gray.as_raw().chunks_exact(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        DynamicImage::ImageRgba8(rgba) => rgba.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        DynamicImage::ImageLuma16(gray) => gray.as_raw().iter().flat_map(|&l| [high_byte(l); 3]).collect(),
        DynamicImage::ImageLumaA16(gray) => gray.as_raw().chunks_exact(2).flat_map(|p| [high_byte(p[0]); 3]).collect(),
        DynamicImage::ImageRgb16(rgb) => rgb.as_raw().iter().map(|&v| high_byte(v)).collect(),
        DynamicImage::ImageRgba16(rgba) => {
            rgba.as_raw().chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]].map(high_byte)).collect()
        }
        // Float images (and layouts added to `image` later): its own clamping, rounding conversion.
        other => return other.to_rgb8(),
    };
    RgbImage::from_raw(width, height, rgb).expect("three bytes per pixel")
}

fn decode(path: &Path) -> Result<DynamicImage, DataError> {
    decode_bytes(path, &read_image_file(path)?)
}

/// The bytes of the image file at `path`.
pub(crate) fn read_image_file(path: &Path) -> Result<Vec<u8>, DataError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => DataError::NotFound { path: path.to_path_buf() },
        _ => DataError::Unreadable { path: path.to_path_buf(), source },
    })
}

/// Decodes the bytes of the file at `path` into whatever layout the file holds.
pub(crate) fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<DynamicImage, DataError> {
    let format = image::guess_format(bytes).map_err(|_| DataError::NotAnImage { path: path.to_path_buf() })?;
    if !format.reading_enabled() {
        return Err(DataError::UnsupportedFormat { path: path.to_path_buf(), format: format!("{format:?}") });
    }
    let image = ImageReader::with_format(Cursor::new(bytes), format).decode().map_err(|e| match e {
        ImageError::Limits(reason) => DataError::TooLarge { path: path.to_path_buf(), reason: reason.to_string() },
        ImageError::Unsupported(reason) => {
            DataError::UnsupportedFormat { path: path.to_path_buf(), format: reason.to_string() }
        }
        other => DataError::Corrupt { path: path.to_path_buf(), reason: other.to_string() },
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(DataError::Corrupt { path: path.to_path_buf(), reason: "the image has no pixels".into() });
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, ImageBuffer, Luma, LumaA, Rgb, Rgba, RgbaImage};

    #[test]
    fn luma_uses_pillow_fixed_point_weights() {
        let rgb = RgbImage::from_raw(5, 1, vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 77, 77, 77]).unwrap();
        let luma = to_luma(&rgb);
        // 255*19595/65536 = 76.24 -> 76; 255*38470/65536 = 149.69 -> 150; 255*7471/65536 = 29.07 -> 29.
        // (10*19595 + 20*38470 + 30*7471 + 32768) >> 16 = 18; gray stays gray.
        assert_eq!(luma.as_raw(), &vec![76, 150, 29, 18, 77]);
    }

    #[test]
    fn luma_of_gray_is_identity_for_every_level() {
        let rgb = RgbImage::from_fn(256, 1, |x, _| Rgb([x as u8; 3]));
        let expected: Vec<u8> = (0..=255).collect();
        assert_eq!(to_luma(&rgb).into_raw(), expected);
    }

    #[test]
    fn alpha_is_dropped_not_composited() {
        let rgba = RgbaImage::from_raw(2, 1, vec![200, 100, 50, 0, 1, 2, 3, 128]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageRgba8(rgba)).into_raw(), vec![200, 100, 50, 1, 2, 3]);
        let la = GrayAlphaImage::from_pixel(1, 1, LumaA([9, 0]));
        assert_eq!(to_rgb(DynamicImage::ImageLumaA8(la)).into_raw(), vec![9, 9, 9]);
    }

    #[test]
    fn sixteen_bit_keeps_the_high_byte() {
        let gray: ImageBuffer<Luma<u16>, Vec<u16>> = ImageBuffer::from_raw(3, 1, vec![0x00ff, 0x0100, 0xfffe]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageLuma16(gray)).into_raw(), vec![0, 0, 0, 1, 1, 1, 255, 255, 255]);
        let rgba: ImageBuffer<Rgba<u16>, Vec<u16>> =
            ImageBuffer::from_raw(1, 1, vec![0x1234, 0xab00, 0x00ff, 7]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageRgba16(rgba)).into_raw(), vec![0x12, 0xab, 0x00]);
        let la: ImageBuffer<LumaA<u16>, Vec<u16>> = ImageBuffer::from_raw(1, 1, vec![0x8000, 0]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageLumaA16(la)).into_raw(), vec![0x80; 3]);
    }

    #[test]
    fn float_images_are_clamped() {
        let float = image::Rgb32FImage::from_raw(1, 1, vec![-1.0, 0.5, 2.0]).unwrap();
        assert_eq!(to_rgb(DynamicImage::ImageRgb32F(float)).into_raw(), vec![0, 128, 255]);
    }
}

/// Reads a UTF-8 text file, naming it as `what` if it is missing.
pub(crate) fn read_text(path: &Path, what: &'static str) -> Result<String, DataError> {
    std::fs::read_to_string(path).map_err(|source| match source.kind() {
        ErrorKind::NotFound => DataError::MissingPath { path: path.to_path_buf(), what },
        _ => DataError::Io { path: path.to_path_buf(), source },
    })
}

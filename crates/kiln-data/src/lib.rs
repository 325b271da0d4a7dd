//! Image input for Kiln: decoding files and timm's evaluation preprocessing, reproduced exactly.
//!
//! [`load_image`] decodes a file to 8-bit RGB as `PIL.Image.open(p).convert('RGB')` does;
//! [`EvalTransform`] turns it into the planar `[channels, height, width]` f32 tensor that timm's
//! `transforms_imagenet_eval` produces, with Pillow's resampling ([`resize`]) bit for bit. No
//! tensor library is involved: the output is a plain [`ImageTensor`].
//!
//! ```no_run
//! use kiln_data::{CropMode, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, Interpolation, load_image};
//!
//! # fn main() -> Result<(), kiln_data::DataError> {
//! let transform = EvalTransform {
//!     img_size: [224, 224],
//!     crop_pct: 0.875,
//!     interpolation: Interpolation::from_timm("bicubic")?,
//!     mean: IMAGENET_MEAN,
//!     std: IMAGENET_STD,
//!     channels: 3,
//!     crop_mode: CropMode::from_timm("center")?,
//! };
//! let input = transform.apply(&load_image("cat.jpg")?);
//! assert_eq!(input.shape(), [3, 224, 224]);
//! # Ok(())
//! # }
//! ```

mod error;
mod labels;
mod load;
mod resample;
mod transform;

pub use error::DataError;
pub use image::{GrayImage, RgbImage};
pub use labels::{imagenet1k_labels, imagenet1k_wnids};
pub use load::{load_image, load_luma_image, to_luma, to_rgb};
pub use resample::{Interpolation, resize};
pub use transform::{CropMode, EvalTransform, IMAGENET_MEAN, IMAGENET_STD, ImageTensor, center_crop};

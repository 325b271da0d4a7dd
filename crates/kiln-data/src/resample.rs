//! Pillow's `Image.resize`, reimplemented bit-exactly for 8-bit images.
//!
//! Convolution filters follow `ImagingResample` (libImaging/Resample.c): a separable two-pass
//! resize, horizontal first, whose kernel is widened by the downscale factor (antialiasing),
//! normalised, then quantised to fixed point with 22 fractional bits; each pass rounds and clips
//! to 8 bits. Nearest neighbour follows `ImagingScaleAffine` (libImaging/Geometry.c), which
//! Pillow uses for `NEAREST` instead of a kernel. The floating-point operations are done in the
//! same order as the C code, so the integer results match to the bit.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

use image::{ImageBuffer, Pixel};

use crate::DataError;

/// The resampling filter of a resize, named as timm (`pretrained_cfg['interpolation']`) and
/// Pillow name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Interpolation {
    /// Nearest neighbour (no antialiasing).
    Nearest,
    /// Triangle filter, support 1.
    Bilinear,
    /// Keys cubic with `a = -0.5`, support 2.
    Bicubic,
    /// Box filter, support 0.5 (area average when downscaling).
    Box,
    /// Hamming-windowed sinc, support 1.
    Hamming,
    /// Lanczos-3 windowed sinc, support 3.
    Lanczos,
}

impl Interpolation {
    /// Every filter, in the order timm lists them.
    pub const ALL: [Interpolation; 6] = [
        Interpolation::Nearest,
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Box,
        Interpolation::Hamming,
        Interpolation::Lanczos,
    ];

    /// Parses timm's name (`"bicubic"`, `"bilinear"`, `"nearest"`, `"box"`, `"hamming"`,
    /// `"lanczos"`), ignoring ASCII case.
    ///
    /// # Errors
    /// [`DataError::UnknownInterpolation`] for any other name (timm's train-time `"random"`
    /// included).
    pub fn from_timm(name: &str) -> Result<Self, DataError> {
        Self::ALL
            .into_iter()
            .find(|f| f.timm_name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| DataError::UnknownInterpolation { name: name.to_string() })
    }

    /// The name timm and Pillow use.
    pub const fn timm_name(self) -> &'static str {
        match self {
            Interpolation::Nearest => "nearest",
            Interpolation::Bilinear => "bilinear",
            Interpolation::Bicubic => "bicubic",
            Interpolation::Box => "box",
            Interpolation::Hamming => "hamming",
            Interpolation::Lanczos => "lanczos",
        }
    }

    /// The convolution kernel; `None` for nearest, which Pillow does not implement as a kernel.
    fn kernel(self) -> Option<Kernel> {
        let (filter, support): (fn(f64) -> f64, f64) = match self {
            Interpolation::Nearest => return None,
            Interpolation::Bilinear => (bilinear, 1.0),
            Interpolation::Bicubic => (bicubic, 2.0),
            Interpolation::Box => (box_filter, 0.5),
            Interpolation::Hamming => (hamming, 1.0),
            Interpolation::Lanczos => (lanczos, 3.0),
        };
        Some(Kernel { filter, support })
    }
}

impl FromStr for Interpolation {
    type Err = DataError;

    fn from_str(name: &str) -> Result<Self, DataError> {
        Self::from_timm(name)
    }
}

impl fmt::Display for Interpolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.timm_name())
    }
}

/// A resampling kernel and its support (half-width in source pixels at scale 1).
#[derive(Clone, Copy)]
struct Kernel {
    filter: fn(f64) -> f64,
    support: f64,
}

// The kernels, written as Pillow writes them: the same expressions give the same doubles.

fn box_filter(x: f64) -> f64 {
    if x > -0.5 && x <= 0.5 { 1.0 } else { 0.0 }
}

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn hamming(x: f64) -> f64 {
    let x = x.abs();
    if x == 0.0 {
        return 1.0;
    }
    if x >= 1.0 {
        return 0.0;
    }
    let x = x * PI;
    // Pillow's constants are C `float` literals (0.54f, 0.46f), widened to double.
    x.sin() / x * (0.54f32 as f64 + 0.46f32 as f64 * x.cos())
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * PI;
    x.sin() / x
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) { sinc(x) * sinc(x / 3.0) } else { 0.0 }
}

/// Fixed-point fraction bits of the 8-bit passes: 8 bits of result, 2 of headroom for the
/// kernels' negative lobes and overshoot, in a 32-bit accumulator.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// For each output pixel along one axis: the first source index, how many source pixels it
/// reads, and their fixed-point weights (`taps` slots per output pixel, unused ones zero).
struct AxisWeights {
    taps: usize,
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<i32>,
}

impl AxisWeights {
    /// `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the whole source range.
    fn new(in_size: usize, out_size: usize, kernel: Kernel) -> Self {
        let Kernel { filter, support } = kernel;
        // Pillow's resize box is a C float: the source extent goes through f32 first.
        let scale = (in_size as f32) as f64 / out_size as f64;
        let filter_scale = if scale < 1.0 { 1.0 } else { scale };
        let support = support * filter_scale;
        let taps = support.ceil() as usize * 2 + 1;
        let inv_filter_scale = 1.0 / filter_scale;
        let mut first = Vec::with_capacity(out_size);
        let mut count = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * taps];
        let mut row = vec![0f64; taps];
        for (out, fixed) in weights.chunks_exact_mut(taps).enumerate() {
            let center = (out as f64 + 0.5) * scale;
            // `as` truncates toward zero like C's (int) cast; negative starts clamp to 0 anyway.
            let start = ((center - support + 0.5) as i64).max(0);
            let end = ((center + support + 0.5) as i64).min(in_size as i64);
            let n = (end - start).max(0) as usize;
            let mut total = 0.0;
            for (i, w) in row[..n].iter_mut().enumerate() {
                *w = filter(((i as i64 + start) as f64 - center + 0.5) * inv_filter_scale);
                total += *w;
            }
            for (w, q) in row[..n].iter().zip(fixed.iter_mut()) {
                let w = if total != 0.0 { w / total } else { *w };
                // Round half away from zero, then truncate: C's (int)(±0.5 + w * 2^22).
                let scaled = w * (1u32 << PRECISION_BITS) as f64;
                *q = if w < 0.0 { (-0.5 + scaled) as i32 } else { (0.5 + scaled) as i32 };
            }
            first.push(start as usize);
            count.push(n);
        }
        AxisWeights { taps, first, count, weights }
    }

    /// The source range and fixed-point weights of output index `out`.
    fn taps_of(&self, out: usize) -> (usize, &[i32]) {
        (self.first[out], &self.weights[out * self.taps..][..self.count[out]])
    }

    /// Horizontal pass over one row of `N`-channel interleaved pixels: `N` sums per output pixel.
    /// (`N` is a constant so the channel loop unrolls.)
    fn resample_row<const N: usize>(&self, src: &[u8], dst: &mut [u8]) {
        for (x, out) in dst.chunks_exact_mut(N).enumerate() {
            let (start, weights) = self.taps_of(x);
            let mut acc = [HALF; N];
            for (pixel, &w) in src[start * N..].chunks_exact(N).zip(weights) {
                for c in 0..N {
                    acc[c] += pixel[c] as i32 * w;
                }
            }
            for c in 0..N {
                out[c] = clip8(acc[c]);
            }
        }
    }

    /// Vertical pass: output row `y` as the weighted sum of whole source rows of `stride` bytes.
    fn resample_rows(&self, src: &[u8], dst_row: &mut [u8], y: usize, acc: &mut [i32]) {
        let stride = dst_row.len();
        let (start, weights) = self.taps_of(y);
        acc.fill(HALF);
        for (row, &w) in src[start * stride..].chunks_exact(stride).zip(weights) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v as i32 * w;
            }
        }
        for (o, &a) in dst_row.iter_mut().zip(acc.iter()) {
            *o = clip8(a);
        }
    }
}

/// Rounding offset of the fixed-point sums: one half.
const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// A fixed-point sum back to 8 bits: floor division by 2^22 (the half was added up front), clipped.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes `image` to `width` x `height` exactly as Pillow's `Image.resize((width, height),
/// filter)` does for modes `L` and `RGB` (what torchvision's `Resize` calls for PIL images).
///
/// Input and output are interleaved `[height, width, channels]` 8-bit buffers. Channels are
/// resampled independently; for `LA`/`RGBA` Pillow premultiplies alpha first, which this does not.
/// The same size returns a copy, as Pillow does.
///
/// # Panics
/// If either target side is zero, or the image is empty while the target is not (Pillow raises
/// for both), or the pixel type has more than 4 channels.
pub fn resize<P: Pixel<Subpixel = u8>>(
    image: &ImageBuffer<P, Vec<u8>>,
    width: u32,
    height: u32,
    interpolation: Interpolation,
) -> ImageBuffer<P, Vec<u8>> {
    assert!(width > 0 && height > 0, "resize target {width}x{height} has a zero side");
    assert!(image.width() > 0 && image.height() > 0, "cannot resize an empty image to {width}x{height}");
    if (image.width(), image.height()) == (width, height) {
        return image.clone();
    }
    let channels = P::CHANNEL_COUNT as usize;
    assert!((1..=4).contains(&channels), "resize handles pixels of 1 to 4 channels, not {channels}");
    let (in_w, in_h) = (image.width() as usize, image.height() as usize);
    let (out_w, out_h) = (width as usize, height as usize);
    let data = match interpolation.kernel() {
        None => nearest(image.as_raw(), channels, (in_w, in_h), (out_w, out_h)),
        Some(kernel) => {
            let mut data = image.as_raw().clone();
            let mut cur_w = in_w;
            // Horizontal pass first, each pass only when its side changes (as Pillow does):
            // the intermediate is rounded to 8 bits, so the order matters to the result.
            if out_w != in_w {
                let axis = AxisWeights::new(in_w, out_w, kernel);
                let mut next = vec![0u8; out_w * in_h * channels];
                for (src_row, dst_row) in
                    data.chunks_exact(in_w * channels).zip(next.chunks_exact_mut(out_w * channels))
                {
                    match channels {
                        1 => axis.resample_row::<1>(src_row, dst_row),
                        2 => axis.resample_row::<2>(src_row, dst_row),
                        3 => axis.resample_row::<3>(src_row, dst_row),
                        _ => axis.resample_row::<4>(src_row, dst_row),
                    }
                }
                data = next;
                cur_w = out_w;
            }
            if out_h != in_h {
                let axis = AxisWeights::new(in_h, out_h, kernel);
                let stride = cur_w * channels;
                let mut next = vec![0u8; stride * out_h];
                let mut acc = vec![0i32; stride];
                for (y, dst_row) in next.chunks_exact_mut(stride).enumerate() {
                    axis.resample_rows(&data, dst_row, y, &mut acc);
                }
                data = next;
            }
            data
        }
    };
    ImageBuffer::from_raw(width, height, data).expect("resized buffer has the target size")
}

/// Pillow's `ImagingScaleAffine`: the source position of each output pixel is accumulated in
/// floating point (`pos += step`), starting half a step in, and truncated. Accumulation, not
/// `(i + 0.5) * step`, because the two can round to different pixels at exact boundaries.
/// Positions that fall outside the source leave zeros, as Pillow's fill does.
fn nearest(src: &[u8], channels: usize, (in_w, in_h): (usize, usize), (out_w, out_h): (usize, usize)) -> Vec<u8> {
    // Source index per output index, as Pillow tabulates them; `valid` is the range of output
    // indices that found a source pixel (Pillow's xmin..xmax), inside which it copies.
    fn table(in_size: usize, out_size: usize) -> (Vec<usize>, std::ops::Range<usize>) {
        let step = (in_size as f32) as f64 / out_size as f64;
        let mut pos = step * 0.5;
        let mut index = vec![0usize; out_size];
        let (mut lo, mut hi) = (out_size, 0);
        for (i, slot) in index.iter_mut().enumerate() {
            // C's COORD(): negative positions map to -1 (outside), others truncate.
            if pos >= 0.0 && (pos as usize) < in_size {
                *slot = pos as usize;
                lo = lo.min(i);
                hi = i + 1;
            }
            pos += step;
        }
        (index, lo..hi.max(lo))
    }
    let (xs, x_valid) = table(in_w, out_w);
    let step_y = (in_h as f32) as f64 / out_h as f64;
    let mut pos_y = step_y * 0.5;
    let mut out = vec![0u8; out_w * out_h * channels];
    for dst_row in out.chunks_exact_mut(out_w * channels) {
        if pos_y >= 0.0 && (pos_y as usize) < in_h {
            let src_row = &src[pos_y as usize * in_w * channels..][..in_w * channels];
            for x in x_valid.clone() {
                dst_row[x * channels..][..channels].copy_from_slice(&src_row[xs[x] * channels..][..channels]);
            }
        }
        pos_y += step_y;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, RgbImage};

    fn ramp(width: u32, height: u32) -> GrayImage {
        GrayImage::from_fn(width, height, |x, y| Luma([((x * 37 + y * 91) % 256) as u8]))
    }

    #[test]
    fn parses_timm_names() {
        assert_eq!(Interpolation::from_timm("bicubic").unwrap(), Interpolation::Bicubic);
        assert_eq!("Bilinear".parse::<Interpolation>().unwrap(), Interpolation::Bilinear);
        for f in Interpolation::ALL {
            assert_eq!(Interpolation::from_timm(f.timm_name()).unwrap(), f);
            assert_eq!(f.to_string(), f.timm_name());
        }
        let err = Interpolation::from_timm("random").unwrap_err();
        assert!(err.to_string().contains("'random'") && err.to_string().contains("bicubic"), "{err}");
    }

    #[test]
    fn kernels_have_pillow_shapes() {
        assert_eq!(bicubic(0.0), 1.0);
        assert_eq!(bicubic(1.0), 0.0);
        assert_eq!(bicubic(0.5), 0.5625);
        assert_eq!(bicubic(1.5), -0.0625);
        assert_eq!(bicubic(-1.5), -0.0625);
        assert_eq!(bicubic(2.0), 0.0);
        assert_eq!(bilinear(0.25), 0.75);
        assert_eq!(bilinear(-1.0), 0.0);
        // Box is half-open: (-0.5, 0.5].
        assert_eq!((box_filter(-0.5), box_filter(0.5)), (0.0, 1.0));
        assert_eq!(hamming(0.0), 1.0);
        assert_eq!(hamming(1.0), 0.0);
        assert!((lanczos(1.0)).abs() < 1e-15 && lanczos(3.0) == 0.0 && lanczos(-3.0).abs() < 1e-15);
    }

    #[test]
    fn weights_are_normalised_fixed_point() {
        for filter in Interpolation::ALL {
            let Some(kernel) = filter.kernel() else { continue };
            for (in_size, out_size) in [(37, 16), (16, 37), (100, 7), (5, 1)] {
                let axis = AxisWeights::new(in_size, out_size, kernel);
                for out in 0..out_size {
                    let sum: i32 = axis.weights[out * axis.taps..][..axis.count[out]].iter().sum();
                    // Each weight rounds separately: the sum is 2^22 within a few units.
                    assert!((sum - (1 << PRECISION_BITS)).abs() <= axis.count[out] as i32, "{filter} {sum}");
                    assert!(axis.first[out] + axis.count[out] <= in_size);
                }
            }
        }
    }

    #[test]
    fn downscale_widens_the_kernel() {
        // Bilinear at scale 1 reads 2 pixels; at 4x downscale its support grows to 4 each side.
        let bilinear = Interpolation::Bilinear.kernel().unwrap();
        let axis = AxisWeights::new(64, 16, bilinear);
        assert_eq!(axis.taps, 9);
        assert_eq!((axis.first[5], axis.count[5]), (18, 8));
        let up = AxisWeights::new(16, 64, bilinear);
        assert_eq!(up.taps, 3);
    }

    #[test]
    fn same_size_is_identity() {
        let img = ramp(7, 5);
        for f in Interpolation::ALL {
            assert_eq!(resize(&img, 7, 5, f), img);
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 9, image::Rgb([200, 0, 255]));
        for f in Interpolation::ALL {
            for (w, h) in [(4, 4), (30, 2), (13, 20), (1, 1)] {
                let out = resize(&img, w, h, f);
                assert!(out.pixels().all(|p| p.0 == [200, 0, 255]), "{f} {w}x{h}");
            }
        }
    }

    #[test]
    fn box_downscale_by_two_averages_pairs() {
        let img = GrayImage::from_raw(4, 1, vec![10, 20, 100, 201]).unwrap();
        // (10+20)/2 = 15; (100+201)/2 = 150.5 rounds half up in fixed point.
        assert_eq!(resize(&img, 2, 1, Interpolation::Box).into_raw(), vec![15, 151]);
    }

    #[test]
    fn bicubic_overshoot_is_clipped() {
        let img = GrayImage::from_raw(4, 1, vec![0, 0, 255, 255]).unwrap();
        let out = resize(&img, 16, 1, Interpolation::Bicubic).into_raw();
        // Ringing on both sides of the edge is clipped to the 8-bit range, not wrapped.
        assert_eq!(out.first(), Some(&0));
        assert_eq!(out.last(), Some(&255));
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "{out:?}");
    }

    #[test]
    fn nearest_picks_source_pixels() {
        let img = GrayImage::from_raw(4, 1, vec![1, 2, 3, 4]).unwrap();
        assert_eq!(resize(&img, 8, 1, Interpolation::Nearest).into_raw(), vec![1, 1, 2, 2, 3, 3, 4, 4]);
        assert_eq!(resize(&img, 2, 1, Interpolation::Nearest).into_raw(), vec![2, 4]);
        assert_eq!(resize(&img, 3, 2, Interpolation::Nearest).into_raw(), vec![1, 3, 4, 1, 3, 4]);
    }

    #[test]
    fn one_axis_only_resizes_that_axis() {
        let img = ramp(6, 4);
        let out = resize(&img, 6, 9, Interpolation::Bilinear);
        // Columns of a vertical-only resize depend only on the same source column.
        let col0: Vec<u8> = (0..4).map(|y| img.get_pixel(0, y).0[0]).collect();
        let single = GrayImage::from_raw(1, 4, col0).unwrap();
        let expected = resize(&single, 1, 9, Interpolation::Bilinear);
        for y in 0..9 {
            assert_eq!(out.get_pixel(0, y), expected.get_pixel(0, y));
        }
    }

    #[test]
    #[should_panic(expected = "zero side")]
    fn zero_target_panics() {
        resize(&ramp(3, 3), 0, 3, Interpolation::Bilinear);
    }
}

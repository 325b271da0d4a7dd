//! timm's RandAugment (`timm/data/auto_augment.py`: `rand_augment_transform`, `AugmentOp`),
//! configured by the same strings (`rand-m9-mstd0.5-inc1`) and applied with the same op set,
//! magnitude-to-argument mappings and per-op probability.
//!
//! The ops are Pillow's, bit for bit ([`crate::image_ops`]); only the random numbers differ from
//! a Python run (Kiln draws them from its own seeded [`Rng`]).

use image::RgbImage;

use crate::image_ops::{
    adjust_brightness, adjust_contrast, adjust_saturation, adjust_sharpness, affine, autocontrast, equalize, invert,
    posterize, rotate, solarize, solarize_add,
};
use crate::{DataError, Interpolation, Rng, TrainInterpolation};

/// timm's `_LEVEL_DENOM`: magnitudes run from 0 to 10.
const LEVEL_DENOM: f64 = 10.0;

/// One RandAugment operation, by its name in timm's `NAME_TO_OP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)] // each variant is the timm op of the same name
pub enum AugmentOp {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    PosterizeIncreasing,
    Solarize,
    SolarizeIncreasing,
    SolarizeAdd,
    Color,
    ColorIncreasing,
    Contrast,
    ContrastIncreasing,
    Brightness,
    BrightnessIncreasing,
    Sharpness,
    SharpnessIncreasing,
    ShearX,
    ShearY,
    TranslateXRel,
    TranslateYRel,
}

impl AugmentOp {
    /// timm's `_RAND_TRANSFORMS` (the op set of `inc0`, the default).
    pub const RAND_TRANSFORMS: [AugmentOp; 15] = [
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
        AugmentOp::Invert,
        AugmentOp::Rotate,
        AugmentOp::Posterize,
        AugmentOp::Solarize,
        AugmentOp::SolarizeAdd,
        AugmentOp::Color,
        AugmentOp::Contrast,
        AugmentOp::Brightness,
        AugmentOp::Sharpness,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateXRel,
        AugmentOp::TranslateYRel,
    ];

    /// timm's `_RAND_INCREASING_TRANSFORMS` (`inc1`): every op grows stronger with magnitude.
    pub const RAND_INCREASING_TRANSFORMS: [AugmentOp; 15] = [
        AugmentOp::AutoContrast,
        AugmentOp::Equalize,
        AugmentOp::Invert,
        AugmentOp::Rotate,
        AugmentOp::PosterizeIncreasing,
        AugmentOp::SolarizeIncreasing,
        AugmentOp::SolarizeAdd,
        AugmentOp::ColorIncreasing,
        AugmentOp::ContrastIncreasing,
        AugmentOp::BrightnessIncreasing,
        AugmentOp::SharpnessIncreasing,
        AugmentOp::ShearX,
        AugmentOp::ShearY,
        AugmentOp::TranslateXRel,
        AugmentOp::TranslateYRel,
    ];

    /// The name timm gives the op.
    pub fn timm_name(self) -> &'static str {
        match self {
            AugmentOp::AutoContrast => "AutoContrast",
            AugmentOp::Equalize => "Equalize",
            AugmentOp::Invert => "Invert",
            AugmentOp::Rotate => "Rotate",
            AugmentOp::Posterize => "Posterize",
            AugmentOp::PosterizeIncreasing => "PosterizeIncreasing",
            AugmentOp::Solarize => "Solarize",
            AugmentOp::SolarizeIncreasing => "SolarizeIncreasing",
            AugmentOp::SolarizeAdd => "SolarizeAdd",
            AugmentOp::Color => "Color",
            AugmentOp::ColorIncreasing => "ColorIncreasing",
            AugmentOp::Contrast => "Contrast",
            AugmentOp::ContrastIncreasing => "ContrastIncreasing",
            AugmentOp::Brightness => "Brightness",
            AugmentOp::BrightnessIncreasing => "BrightnessIncreasing",
            AugmentOp::Sharpness => "Sharpness",
            AugmentOp::SharpnessIncreasing => "SharpnessIncreasing",
            AugmentOp::ShearX => "ShearX",
            AugmentOp::ShearY => "ShearY",
            AugmentOp::TranslateXRel => "TranslateXRel",
            AugmentOp::TranslateYRel => "TranslateYRel",
        }
    }

    /// Whether the op moves pixels (and so resamples and fills).
    pub fn is_geometric(self) -> bool {
        matches!(
            self,
            AugmentOp::Rotate
                | AugmentOp::ShearX
                | AugmentOp::ShearY
                | AugmentOp::TranslateXRel
                | AugmentOp::TranslateYRel
        )
    }

    /// Applies the op at `magnitude` (already noised and clamped to `[0, max]`), drawing the
    /// random sign of signed ops and, for geometric ops under [`TrainInterpolation::Random`], the
    /// filter from `rng`. Follows timm's `LEVEL_TO_ARG` then `NAME_TO_OP`.
    pub fn apply(self, image: &RgbImage, magnitude: f64, params: &OpParams, rng: &mut Rng) -> RgbImage {
        let level = magnitude / LEVEL_DENOM;
        // timm's `_randomly_negate`: `-v if random() > 0.5 else v`.
        let negate = |v: f64, rng: &mut Rng| if rng.random() > 0.5 { -v } else { v };
        let enhance = level * 1.8 + 0.1;
        let enhance_increasing = |rng: &mut Rng| f64::max(0.1, 1.0 + negate(level * 0.9, rng));
        let solarize_threshold = f64::min(256.0, (level * 256.0).trunc());
        match self {
            AugmentOp::AutoContrast => autocontrast(image),
            AugmentOp::Equalize => equalize(image),
            AugmentOp::Invert => invert(image),
            AugmentOp::Rotate => {
                let degrees = negate(level * 30.0, rng);
                rotate(image, degrees, params.resample(rng), params.fill)
            }
            AugmentOp::Posterize => posterize(image, (level * 4.0) as u32),
            // Above magnitude 10 (with `mmax`) timm asks for negative bits: no bits kept, as for 0.
            AugmentOp::PosterizeIncreasing => posterize(image, (4 - (level * 4.0) as i64).max(0) as u32),
            AugmentOp::Solarize => solarize(image, solarize_threshold as u32),
            AugmentOp::SolarizeIncreasing => solarize(image, 256 - solarize_threshold as u32),
            AugmentOp::SolarizeAdd => solarize_add(image, f64::min(128.0, (level * 110.0).trunc()) as u32, 128),
            AugmentOp::Color => adjust_saturation(image, enhance),
            AugmentOp::ColorIncreasing => adjust_saturation(image, enhance_increasing(rng)),
            AugmentOp::Contrast => adjust_contrast(image, enhance),
            AugmentOp::ContrastIncreasing => adjust_contrast(image, enhance_increasing(rng)),
            AugmentOp::Brightness => adjust_brightness(image, enhance),
            AugmentOp::BrightnessIncreasing => adjust_brightness(image, enhance_increasing(rng)),
            AugmentOp::Sharpness => adjust_sharpness(image, enhance),
            AugmentOp::SharpnessIncreasing => adjust_sharpness(image, enhance_increasing(rng)),
            AugmentOp::ShearX => {
                let factor = negate(level * 0.3, rng);
                affine(image, [1.0, factor, 0.0, 0.0, 1.0, 0.0], params.resample(rng), params.fill)
            }
            AugmentOp::ShearY => {
                let factor = negate(level * 0.3, rng);
                affine(image, [1.0, 0.0, 0.0, factor, 1.0, 0.0], params.resample(rng), params.fill)
            }
            AugmentOp::TranslateXRel => {
                let pixels = negate(level * params.translate_pct, rng) * image.width() as f64;
                affine(image, [1.0, 0.0, pixels, 0.0, 1.0, 0.0], params.resample(rng), params.fill)
            }
            AugmentOp::TranslateYRel => {
                let pixels = negate(level * params.translate_pct, rng) * image.height() as f64;
                affine(image, [1.0, 0.0, 0.0, 0.0, 1.0, pixels], params.resample(rng), params.fill)
            }
        }
    }
}

/// What timm passes every op through `hparams`: the fill colour of geometric ops, their filter,
/// and the translation range.
#[derive(Debug, Clone, PartialEq)]
pub struct OpParams {
    /// Colour of the pixels a geometric op uncovers: timm's `img_mean`,
    /// `round(255 * mean)` per channel ([`fill_from_mean`]).
    pub fill: [u8; 3],
    /// Filter of geometric ops: one of nearest, bilinear, bicubic, or `Random` (bilinear or
    /// bicubic per op call, timm's `_RANDOM_INTERPOLATION`).
    pub interpolation: TrainInterpolation,
    /// Largest translation as a fraction of the image side (timm's `translate_pct`, 0.45).
    pub translate_pct: f64,
}

impl OpParams {
    fn resample(&self, rng: &mut Rng) -> Interpolation {
        self.interpolation.pick(rng)
    }
}

/// timm's `img_mean` hparam: `min(255, round(255 * m))` per channel, Python's round (half to even).
pub fn fill_from_mean(mean: [f32; 3]) -> [u8; 3] {
    mean.map(|m| (255.0 * m as f64).round_ties_even().clamp(0.0, 255.0) as u8)
}

/// RandAugment as timm builds it from a `rand-...` string: `num_layers` ops drawn uniformly with
/// replacement from `ops`, each applied with probability `prob` at a magnitude drawn around
/// `magnitude`.
#[derive(Debug, Clone, PartialEq)]
pub struct RandAugment {
    /// The op set to draw from.
    pub ops: Vec<AugmentOp>,
    /// Ops applied per image (`n`, default 2).
    pub num_layers: usize,
    /// Magnitude (`m`, default 10) on timm's 0..10 scale.
    pub magnitude: f64,
    /// Standard deviation of the Gaussian noise added to the magnitude per op call (`mstd`,
    /// default 0); infinity samples the magnitude uniformly from `[0, magnitude]` instead.
    pub magnitude_std: f64,
    /// Upper clamp of the noised magnitude (`mmax`, default 10).
    pub magnitude_max: f64,
    /// Probability that each drawn op is applied (`p`, default 0.5).
    pub prob: f64,
    /// Fill, filter and translation range of the ops.
    pub params: OpParams,
}

impl RandAugment {
    /// Parses timm's RandAugment string, as `rand_augment_transform` does: `rand` followed by
    /// dash-separated sections in any order, each a key and a number:
    ///
    /// | section | meaning | default |
    /// |---|---|---|
    /// | `m9` | magnitude, an integer | 10 |
    /// | `n2` | ops per image, an integer | 2 |
    /// | `p0.5` | probability of each op | 0.5 |
    /// | `mstd0.5` | magnitude noise std; above 100 means uniform in `[0, m]` | 0 |
    /// | `mmax10` | magnitude upper bound, an integer | 10 |
    /// | `inc1` | use the increasing op set ([`AugmentOp::RAND_INCREASING_TRANSFORMS`]) | 0 |
    ///
    /// `params` is what timm's `create_transform` passes as hparams (fill from the mean, the
    /// train interpolation, `translate_pct` 0.45).
    ///
    /// # Errors
    /// [`DataError::InvalidAugment`] for a string not starting with `rand` (AutoAugment and
    /// AugMix policies are not implemented), an unknown or malformed section, a weighted op set
    /// (`t...`, not implemented), or a filter Pillow cannot transform with.
    pub fn from_timm(spec: &str, params: OpParams) -> Result<Self, DataError> {
        let invalid = |reason: String| DataError::InvalidAugment { spec: spec.to_string(), reason };
        let mut sections = spec.trim().split('-');
        match sections.next() {
            Some("rand") => {}
            Some(other) => {
                return Err(invalid(format!(
                    "'{other}' policies are not implemented; Kiln implements RandAugment ('rand-...')"
                )));
            }
            None => return Err(invalid("empty string".into())),
        }
        let mut augment = RandAugment {
            ops: AugmentOp::RAND_TRANSFORMS.to_vec(),
            num_layers: 2,
            magnitude: LEVEL_DENOM,
            magnitude_std: 0.0,
            magnitude_max: LEVEL_DENOM,
            prob: 0.5,
            params,
        };
        let mut increasing = false;
        for section in sections {
            if section.starts_with('t') {
                return Err(invalid(format!(
                    "weighted op sets ('{section}') are not implemented; leave the 't' section out"
                )));
            }
            let digit = section.find(|c: char| c.is_ascii_digit()).ok_or_else(|| {
                invalid(format!("section '{section}' has no number; sections are m, n, p, mstd, mmax, inc"))
            })?;
            let (key, value) = section.split_at(digit);
            let int = || value.parse::<u32>().map_err(|_| invalid(format!("'{section}': '{value}' is not an integer")));
            let float = || {
                value
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| invalid(format!("'{section}': '{value}' is not a number")))
            };
            match key {
                "m" => augment.magnitude = int()? as f64,
                "n" => augment.num_layers = int()? as usize,
                "p" => augment.prob = float()?,
                "mstd" => {
                    let std = float()?;
                    augment.magnitude_std = if std > 100.0 { f64::INFINITY } else { std };
                }
                // timm: `self.magnitude_max or _LEVEL_DENOM`, so 0 means the default.
                "mmax" => augment.magnitude_max = Some(int()?).filter(|&m| m > 0).map_or(LEVEL_DENOM, |m| m as f64),
                "inc" => increasing = int()? != 0,
                _ => {
                    return Err(invalid(format!("unknown section '{section}'; sections are m, n, p, mstd, mmax, inc")));
                }
            }
        }
        if increasing {
            augment.ops = AugmentOp::RAND_INCREASING_TRANSFORMS.to_vec();
        }
        if !(0.0..=1.0).contains(&augment.prob) {
            return Err(invalid(format!("op probability {} must lie in [0, 1]", augment.prob)));
        }
        if let TrainInterpolation::Fixed(f) = augment.params.interpolation
            && !matches!(f, Interpolation::Nearest | Interpolation::Bilinear | Interpolation::Bicubic)
        {
            return Err(invalid(format!(
                "its rotate/shear/translate ops cannot resample with {f} (Pillow's transform has only nearest, bilinear and bicubic); set the train interpolation to one of those or 'random'"
            )));
        }
        Ok(augment)
    }

    /// The magnitude of one op call: noised by `magnitude_std`, clamped to `[0, magnitude_max]`
    /// (timm's `AugmentOp.__call__`).
    fn draw_magnitude(&self, rng: &mut Rng) -> f64 {
        let magnitude = if self.magnitude_std == f64::INFINITY {
            rng.uniform(0.0, self.magnitude)
        } else if self.magnitude_std > 0.0 {
            rng.gauss(self.magnitude, self.magnitude_std)
        } else {
            self.magnitude
        };
        magnitude.clamp(0.0, self.magnitude_max)
    }

    /// Augments one 8-bit RGB image: `num_layers` draws with replacement from `ops`, each applied
    /// with probability `prob` (timm's `RandAugment.__call__`).
    pub fn apply(&self, image: &RgbImage, rng: &mut Rng) -> RgbImage {
        let mut image = image.clone();
        if self.ops.is_empty() {
            return image;
        }
        for _ in 0..self.num_layers {
            let op = self.ops[rng.below(self.ops.len() as u64) as usize];
            if self.prob < 1.0 && rng.random() > self.prob {
                continue;
            }
            let magnitude = self.draw_magnitude(rng);
            image = op.apply(&image, magnitude, &self.params, rng);
        }
        image
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn params() -> OpParams {
        OpParams { fill: [124, 116, 104], interpolation: TrainInterpolation::Random, translate_pct: 0.45 }
    }

    #[test]
    fn parses_timm_strings() {
        let ra = RandAugment::from_timm("rand-m9-mstd0.5-inc1", params()).unwrap();
        assert_eq!((ra.magnitude, ra.magnitude_std, ra.num_layers, ra.prob), (9.0, 0.5, 2, 0.5));
        assert_eq!(ra.ops, AugmentOp::RAND_INCREASING_TRANSFORMS);
        let ra = RandAugment::from_timm("rand-n3-m7-p1.0-mmax15", params()).unwrap();
        assert_eq!((ra.magnitude, ra.num_layers, ra.prob, ra.magnitude_max), (7.0, 3, 1.0, 15.0));
        assert_eq!(ra.ops, AugmentOp::RAND_TRANSFORMS);
        let defaults = RandAugment::from_timm("rand", params()).unwrap();
        assert_eq!((defaults.magnitude, defaults.num_layers, defaults.magnitude_max), (10.0, 2, 10.0));
        assert!(RandAugment::from_timm("rand-mstd101", params()).unwrap().magnitude_std.is_infinite());
        assert_eq!(RandAugment::from_timm("rand-mmax0", params()).unwrap().magnitude_max, 10.0);
    }

    #[test]
    fn rejects_what_it_cannot_do_with_the_string_in_the_message() {
        for (spec, needle) in [
            ("original-mstd0.5", "RandAugment"),
            ("augmix-m5", "RandAugment"),
            ("rand-m9-x3", "unknown section 'x3'"),
            ("rand-m9.5", "not an integer"),
            ("rand-mfoo", "no number"),
            ("rand-tweights", "weighted"),
            ("rand-p1.5", "probability"),
        ] {
            let err = RandAugment::from_timm(spec, params()).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, DataError::InvalidAugment { .. }), "{spec}");
            assert!(msg.contains(spec) && msg.contains(needle), "{spec}: {msg}");
        }
        let lanczos = OpParams { interpolation: TrainInterpolation::Fixed(Interpolation::Lanczos), ..params() };
        assert!(RandAugment::from_timm("rand-m9", lanczos).unwrap_err().to_string().contains("lanczos"));
    }

    #[test]
    fn fill_is_rounded_mean() {
        assert_eq!(fill_from_mean(crate::IMAGENET_MEAN), [124, 116, 104]);
        assert_eq!(fill_from_mean([0.5, 0.0, 1.0]), [128, 0, 255]); // 127.5 rounds to even
    }

    #[test]
    fn magnitude_noise_is_clamped() {
        let mut ra = RandAugment::from_timm("rand-m10-mstd5", params()).unwrap();
        let mut rng = Rng::seed_from_u64(1);
        let draws: Vec<f64> = (0..500).map(|_| ra.draw_magnitude(&mut rng)).collect();
        assert!(draws.iter().all(|m| (0.0..=10.0).contains(m)));
        assert!(draws.iter().any(|&m| m < 10.0) && draws.contains(&10.0));
        ra.magnitude_std = f64::INFINITY;
        ra.magnitude = 4.0;
        let uniform: Vec<f64> = (0..500).map(|_| ra.draw_magnitude(&mut rng)).collect();
        assert!(uniform.iter().all(|m| (0.0..4.0).contains(m)));
    }

    #[test]
    fn zero_probability_is_identity_and_same_seed_same_result() {
        let img = RgbImage::from_fn(12, 9, |x, y| Rgb([(x * 20) as u8, (y * 25) as u8, ((x + y) * 9) as u8]));
        let never = RandAugment::from_timm("rand-m9-n4-p0", params()).unwrap();
        assert_eq!(never.apply(&img, &mut Rng::seed_from_u64(3)), img);
        let always = RandAugment::from_timm("rand-m9-n2-p1-mstd0.5-inc1", params()).unwrap();
        let a = always.apply(&img, &mut Rng::seed_from_u64(3));
        assert_eq!(a, always.apply(&img, &mut Rng::seed_from_u64(3)));
        assert_eq!(a.dimensions(), img.dimensions());
        let changed = (0..20).filter(|&s| always.apply(&img, &mut Rng::seed_from_u64(s)) != img).count();
        assert!(changed >= 15, "only {changed} of 20 seeds changed the image");
    }

    #[test]
    fn magnitude_to_argument_mappings() {
        // Deterministic ops at known magnitudes, against the ImageOps functions directly.
        let img = RgbImage::from_fn(8, 8, |x, y| Rgb([(x * 32) as u8, (y * 32) as u8, 200]));
        let p = params();
        let mut rng = Rng::seed_from_u64(0);
        // Posterize at m=5: int(0.5 * 4) = 2 bits; increasing: 4 - 2 = 2 bits too; at m=2.5: 1 / 3.
        assert_eq!(AugmentOp::Posterize.apply(&img, 5.0, &p, &mut rng), posterize(&img, 2));
        assert_eq!(AugmentOp::PosterizeIncreasing.apply(&img, 2.5, &p, &mut rng), posterize(&img, 3));
        // Solarize at m=5: threshold int(0.5 * 256) = 128; increasing: 256 - 128.
        assert_eq!(AugmentOp::Solarize.apply(&img, 5.0, &p, &mut rng), solarize(&img, 128));
        assert_eq!(AugmentOp::SolarizeIncreasing.apply(&img, 2.0, &p, &mut rng), solarize(&img, 256 - 51));
        // SolarizeAdd at m=10: min(128, int(110)) = 110 added below 128.
        assert_eq!(AugmentOp::SolarizeAdd.apply(&img, 10.0, &p, &mut rng), solarize_add(&img, 110, 128));
        // Enhance ops at m=5: factor 0.5 * 1.8 + 0.1 = 1.0, the identity.
        assert_eq!(AugmentOp::Contrast.apply(&img, 5.0, &p, &mut rng), img);
        // Geometric ops at magnitude 0 move nothing.
        for op in [
            AugmentOp::Rotate,
            AugmentOp::ShearX,
            AugmentOp::ShearY,
            AugmentOp::TranslateXRel,
            AugmentOp::TranslateYRel,
        ] {
            assert!(op.is_geometric());
            assert_eq!(op.apply(&img, 0.0, &p, &mut rng), img, "{}", op.timm_name());
        }
    }
}

//! timm's Mixup / CutMix (`timm/data/mixup.py`, `Mixup` with `mode='batch'`), and its soft,
//! label-smoothed targets.
//!
//! One draw per batch decides whether to mix (`prob`), and whether with Mixup or CutMix
//! (`switch_prob`, when both alphas are on). Image `i` is mixed with image `B - 1 - i` (the batch
//! flipped), and the targets the same way: `lam * y_i + (1 - lam) * y_{B-1-i}`, where `y` is the
//! one-hot label smoothed to `1 - smoothing + smoothing / classes` and `smoothing / classes`.

use crate::{DataError, Rng};

/// What one batch's mix did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MixKind {
    /// Not mixed (the coin said no, or mixing is off): `lam = 1`.
    None,
    /// Pixels blended, `lam * x + (1 - lam) * flip(x)`.
    Mixup,
    /// A rectangle pasted from the flipped batch: rows `y0..y1`, columns `x0..x1`.
    CutMix {
        /// First row.
        y0: usize,
        /// One past the last row.
        y1: usize,
        /// First column.
        x0: usize,
        /// One past the last column.
        x1: usize,
    },
}

/// The mix applied to one batch: its kind and the weight `lam` of each image's own label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MixOutcome {
    /// Weight of the image's own target (for CutMix, corrected to the pasted area's complement).
    pub lam: f64,
    /// What was done.
    pub kind: MixKind,
}

/// timm's `Mixup(mode='batch')` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Mixup {
    /// Mixup's Beta(alpha, alpha); 0 turns Mixup off.
    pub mixup_alpha: f64,
    /// CutMix's Beta(alpha, alpha); 0 turns CutMix off.
    pub cutmix_alpha: f64,
    /// CutMix box side range as fractions of the image sides, instead of alpha (forces CutMix's
    /// alpha to 1, as timm does).
    pub cutmix_minmax: Option<[f64; 2]>,
    /// Probability of mixing a batch at all.
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are on.
    pub switch_prob: f64,
    /// Label smoothing folded into the targets.
    pub label_smoothing: f64,
    /// Correct CutMix's `lam` to the box area actually pasted (after clipping at the border).
    pub correct_lam: bool,
    /// Classes of the targets.
    pub num_classes: usize,
}

impl Mixup {
    /// timm's `Mixup` defaults: mixup alpha 1, no CutMix, prob 1, switch 0.5, smoothing 0.1,
    /// lambda correction on.
    pub fn new(num_classes: usize) -> Self {
        Mixup {
            mixup_alpha: 1.0,
            cutmix_alpha: 0.0,
            cutmix_minmax: None,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.1,
            correct_lam: true,
            num_classes,
        }
    }

    fn cutmix_alpha(&self) -> f64 {
        if self.cutmix_minmax.is_some() { 1.0 } else { self.cutmix_alpha }
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`DataError::InvalidData`] when both alphas are 0 (and no `cutmix_minmax`), an alpha is
    /// negative, a probability or the smoothing is outside [0, 1], the minmax range is not
    /// `0 <= min < max <= 1`, or there are no classes.
    pub fn validate(&self) -> Result<(), DataError> {
        let invalid = |msg: String| Err(DataError::InvalidData(msg));
        if self.num_classes == 0 {
            return invalid("mixup needs at least one class".into());
        }
        if !(self.mixup_alpha >= 0.0
            && self.cutmix_alpha >= 0.0
            && self.mixup_alpha.is_finite()
            && self.cutmix_alpha.is_finite())
        {
            return invalid(format!(
                "mixup_alpha {} and cutmix_alpha {} must be >= 0",
                self.mixup_alpha, self.cutmix_alpha
            ));
        }
        if self.mixup_alpha == 0.0 && self.cutmix_alpha() == 0.0 {
            return invalid(
                "mixup is on but mixup_alpha and cutmix_alpha are both 0; set one above 0, or turn mixup off".into(),
            );
        }
        for (name, p) in
            [("prob", self.prob), ("switch_prob", self.switch_prob), ("label_smoothing", self.label_smoothing)]
        {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("mixup {name} {p} must lie in [0, 1]"));
            }
        }
        if let Some([lo, hi]) = self.cutmix_minmax
            && !(0.0 <= lo && lo < hi && hi <= 1.0)
        {
            return invalid(format!("cutmix_minmax [{lo}, {hi}] must satisfy 0 <= min < max <= 1"));
        }
        Ok(())
    }

    /// timm's `_params_per_batch`: `(lam, use_cutmix)`.
    fn draw(&self, rng: &mut Rng) -> (f64, bool) {
        if !rng.bernoulli(self.prob) {
            return (1.0, false);
        }
        let cutmix_alpha = self.cutmix_alpha();
        if self.mixup_alpha > 0.0 && cutmix_alpha > 0.0 {
            let use_cutmix = rng.bernoulli(self.switch_prob);
            let alpha = if use_cutmix { cutmix_alpha } else { self.mixup_alpha };
            (rng.beta(alpha, alpha), use_cutmix)
        } else if self.mixup_alpha > 0.0 {
            (rng.beta(self.mixup_alpha, self.mixup_alpha), false)
        } else {
            (rng.beta(cutmix_alpha, cutmix_alpha), true)
        }
    }

    /// timm's `rand_bbox` / `rand_bbox_minmax` and the lambda correction.
    fn cutmix_box(&self, height: usize, width: usize, lam: f64, rng: &mut Rng) -> (MixKind, f64) {
        let (y0, y1, x0, x1) = if let Some([lo, hi]) = self.cutmix_minmax {
            let side = |n: usize, rng: &mut Rng| {
                let (a, b) = ((n as f64 * lo) as usize, (n as f64 * hi) as usize);
                if b > a { rng.randint(a, b - 1) } else { a } // np.random.randint(a, b): b exclusive
            };
            let (cut_h, cut_w) = (side(height, rng), side(width, rng));
            let y0 = rng.randint(0, height - cut_h);
            let x0 = rng.randint(0, width - cut_w);
            (y0, y0 + cut_h, x0, x0 + cut_w)
        } else {
            let ratio = (1.0 - lam).sqrt();
            let (cut_h, cut_w) = ((height as f64 * ratio) as i64, (width as f64 * ratio) as i64);
            let cy = rng.randint(0, height - 1) as i64;
            let cx = rng.randint(0, width - 1) as i64;
            let clip = |v: i64, n: usize| v.clamp(0, n as i64) as usize;
            (
                clip(cy - cut_h / 2, height),
                clip(cy + (cut_h + 1) / 2, height),
                clip(cx - cut_w / 2, width),
                clip(cx + (cut_w + 1) / 2, width),
            )
        };
        let lam = if self.correct_lam || self.cutmix_minmax.is_some() {
            1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (height * width) as f64
        } else {
            lam
        };
        (MixKind::CutMix { y0, y1, x0, x1 }, lam)
    }

    /// Mixes a batch in place and returns its soft targets, `[batch, num_classes]`.
    ///
    /// `images` is `[batch, channels, height, width]` (`shape`), normalised; `labels` has
    /// `batch` entries below `num_classes`. With `enabled == false` (timm's `mixup_off_epoch`
    /// reached) nothing is mixed but the targets are still smoothed. An odd batch mixes its middle
    /// image with itself (timm requires even batches; the arithmetic needs no such rule).
    ///
    /// # Panics
    /// If the buffer sizes disagree with `shape`, or a label is out of range.
    pub fn apply(
        &self,
        images: &mut [f32],
        shape: [usize; 4],
        labels: &[usize],
        enabled: bool,
        rng: &mut Rng,
    ) -> (Vec<f32>, MixOutcome) {
        let [batch, channels, height, width] = shape;
        assert_eq!(images.len(), batch * channels * height * width, "images do not match shape {shape:?}");
        assert_eq!(labels.len(), batch, "one label per image");
        let (lam, use_cutmix) = if enabled { self.draw(rng) } else { (1.0, false) };
        let outcome = if lam == 1.0 {
            MixOutcome { lam: 1.0, kind: MixKind::None }
        } else if use_cutmix {
            let (kind, lam) = self.cutmix_box(height, width, lam, rng);
            let MixKind::CutMix { y0, y1, x0, x1 } = kind else { unreachable!() };
            let original = images.to_vec();
            let image_len = channels * height * width;
            for i in 0..batch {
                let j = batch - 1 - i;
                for c in 0..channels {
                    for y in y0..y1 {
                        let row = (c * height + y) * width;
                        let (dst, src) = (i * image_len + row, j * image_len + row);
                        images[dst + x0..dst + x1].copy_from_slice(&original[src + x0..src + x1]);
                    }
                }
            }
            MixOutcome { lam, kind }
        } else {
            let original = images.to_vec();
            let image_len = channels * height * width;
            let (own, other) = (lam as f32, (1.0 - lam) as f32);
            for i in 0..batch {
                let j = batch - 1 - i;
                let src = &original[j * image_len..(j + 1) * image_len];
                for (v, &o) in images[i * image_len..(i + 1) * image_len].iter_mut().zip(src) {
                    *v = *v * own + o * other;
                }
            }
            MixOutcome { lam, kind: MixKind::Mixup }
        };
        (mixup_target(labels, self.num_classes, outcome.lam, self.label_smoothing), outcome)
    }
}

/// timm's `mixup_target`: smoothed one-hot targets of `labels`, each mixed with the target of the
/// flipped batch, `lam * y_i + (1 - lam) * y_{B-1-i}`. `[batch, num_classes]`, rows summing to 1.
///
/// With `lam = 1` this is plain label smoothing: `1 - smoothing + smoothing / num_classes` on the
/// label, `smoothing / num_classes` elsewhere.
///
/// # Panics
/// If a label is not below `num_classes`.
pub fn mixup_target(labels: &[usize], num_classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    // As timm: the values in double, then filled into f32 tensors.
    let off = smoothing / num_classes as f64;
    let (on, off) = ((1.0 - smoothing + off) as f32, off as f32);
    let batch = labels.len();
    let one_hot = |label: usize| {
        assert!(label < num_classes, "label {label} is not below {num_classes} classes");
        let mut row = vec![off; num_classes];
        row[label] = on;
        row
    };
    let (own, other) = (lam as f32, (1.0 - lam) as f32);
    let mut targets = Vec::with_capacity(batch * num_classes);
    for (i, &label) in labels.iter().enumerate() {
        let (y1, y2) = (one_hot(label), one_hot(labels[batch - 1 - i]));
        targets.extend(y1.iter().zip(&y2).map(|(a, b)| a * own + b * other));
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(b: usize, c: usize, h: usize, w: usize) -> Vec<f32> {
        // Image i is filled with the value i, so the source of every pixel is visible.
        (0..b).flat_map(|i| std::iter::repeat_n(i as f32, c * h * w)).collect()
    }

    fn assert_rows_sum_to_one(targets: &[f32], classes: usize) {
        for row in targets.chunks(classes) {
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row sums to {sum}: {row:?}");
            assert!(row.iter().all(|&v| v >= 0.0));
        }
    }

    #[test]
    fn smoothing_targets() {
        let t = mixup_target(&[2, 0], 4, 1.0, 0.1);
        assert_eq!(t, vec![0.025, 0.025, 0.925, 0.025, 0.925, 0.025, 0.025, 0.025]);
        let plain = mixup_target(&[1], 3, 1.0, 0.0);
        assert_eq!(plain, vec![0.0, 1.0, 0.0]);
        let mixed = mixup_target(&[0, 1], 2, 0.7, 0.0);
        assert_eq!(mixed, vec![0.7, 0.3, 0.3, 0.7]);
    }

    #[test]
    fn mixup_blends_with_the_flipped_batch_and_targets_sum_to_one() {
        let mixup = Mixup { label_smoothing: 0.1, ..Mixup::new(5) };
        mixup.validate().unwrap();
        let labels = [0, 1, 2, 3];
        let mut rng = Rng::seed_from_u64(4);
        for _ in 0..20 {
            let mut x = batch(4, 2, 3, 3);
            let (targets, outcome) = mixup.apply(&mut x, [4, 2, 3, 3], &labels, true, &mut rng);
            assert_eq!(outcome.kind, MixKind::Mixup);
            assert!((0.0..=1.0).contains(&outcome.lam));
            let lam = outcome.lam as f32;
            for i in 0..4 {
                let expect = i as f32 * lam + (3 - i) as f32 * (1.0 - outcome.lam) as f32;
                assert!(x[i * 18..(i + 1) * 18].iter().all(|&v| (v - expect).abs() < 1e-5));
            }
            assert_eq!(targets.len(), 4 * 5);
            assert_rows_sum_to_one(&targets, 5);
            // The own label weighs lam (plus smoothing), the partner's 1 - lam.
            assert!((targets[0] - (lam * 0.9 + 0.02)).abs() < 1e-5);
            assert!((targets[3] - ((1.0 - lam) * 0.9 + 0.02)).abs() < 1e-5);
        }
    }

    #[test]
    fn cutmix_pastes_a_box_and_corrects_lam() {
        let cutmix = Mixup { mixup_alpha: 0.0, cutmix_alpha: 1.0, label_smoothing: 0.0, ..Mixup::new(3) };
        let mut rng = Rng::seed_from_u64(6);
        let (h, w) = (8, 10);
        for _ in 0..30 {
            let mut x = batch(2, 3, h, w);
            let (targets, outcome) = cutmix.apply(&mut x, [2, 3, h, w], &[0, 2], true, &mut rng);
            let MixKind::CutMix { y0, y1, x0, x1 } = outcome.kind else { panic!("{outcome:?}") };
            let area = (y1 - y0) * (x1 - x0);
            assert!((outcome.lam - (1.0 - area as f64 / (h * w) as f64)).abs() < 1e-12);
            for i in 0..2 {
                for c in 0..3 {
                    for y in 0..h {
                        for xx in 0..w {
                            let v = x[((i * 3 + c) * h + y) * w + xx];
                            let inside = (y0..y1).contains(&y) && (x0..x1).contains(&xx);
                            assert_eq!(v, if inside { (1 - i) as f32 } else { i as f32 });
                        }
                    }
                }
            }
            assert_rows_sum_to_one(&targets, 3);
            assert!(
                (targets[0] - outcome.lam as f32).abs() < 1e-6
                    && (targets[2] - (1.0 - outcome.lam) as f32).abs() < 1e-6
            );
        }
    }

    #[test]
    fn switch_prob_and_prob() {
        let both = Mixup { cutmix_alpha: 1.0, switch_prob: 0.5, ..Mixup::new(2) };
        let mut rng = Rng::seed_from_u64(1);
        let mut cutmixes = 0;
        for _ in 0..400 {
            let mut x = batch(2, 1, 4, 4);
            let (_, o) = both.apply(&mut x, [2, 1, 4, 4], &[0, 1], true, &mut rng);
            cutmixes += matches!(o.kind, MixKind::CutMix { .. }) as usize;
        }
        assert!((150..250).contains(&cutmixes), "{cutmixes}");
        let never = Mixup { prob: 0.0, ..both.clone() };
        let mut x = batch(2, 1, 4, 4);
        let (t, o) = never.apply(&mut x, [2, 1, 4, 4], &[0, 1], true, &mut rng);
        assert_eq!((o.lam, o.kind), (1.0, MixKind::None));
        assert_eq!(x, batch(2, 1, 4, 4));
        assert_eq!(t, mixup_target(&[0, 1], 2, 1.0, 0.1));
        // Disabled (mixup_off_epoch): no draw, no mixing, smoothed targets.
        let (_, o) = both.apply(&mut x, [2, 1, 4, 4], &[0, 1], false, &mut rng);
        assert_eq!(o.kind, MixKind::None);
    }

    #[test]
    fn minmax_boxes_stay_in_range() {
        let m = Mixup { mixup_alpha: 0.0, cutmix_alpha: 0.0, cutmix_minmax: Some([0.2, 0.8]), ..Mixup::new(2) };
        m.validate().unwrap();
        let mut rng = Rng::seed_from_u64(2);
        for _ in 0..100 {
            let mut x = batch(2, 1, 10, 20);
            let (_, o) = m.apply(&mut x, [2, 1, 10, 20], &[0, 1], true, &mut rng);
            let MixKind::CutMix { y0, y1, x0, x1 } = o.kind else { panic!() };
            assert!((2..8).contains(&(y1 - y0)) && (4..16).contains(&(x1 - x0)) && y1 <= 10 && x1 <= 20);
        }
    }

    #[test]
    fn invalid_settings() {
        for bad in [
            Mixup { mixup_alpha: 0.0, ..Mixup::new(3) },
            Mixup { prob: 2.0, ..Mixup::new(3) },
            Mixup { label_smoothing: -0.1, ..Mixup::new(3) },
            Mixup { cutmix_minmax: Some([0.5, 0.2]), ..Mixup::new(3) },
            Mixup::new(0),
        ] {
            assert!(matches!(bad.validate(), Err(DataError::InvalidData(_))), "{bad:?}");
        }
    }
}

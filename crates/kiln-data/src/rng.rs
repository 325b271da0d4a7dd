//! The seeded random number generator behind every augmentation, shuffle and mix.
//!
//! Kiln owns its generator (xoshiro256++ seeded through SplitMix64, both public-domain
//! algorithms by Blackman and Vigna) instead of borrowing one from a crate, so the numbers a seed
//! gives are part of Kiln's reproducibility contract and do not move when a dependency is
//! upgraded. Runs are reproducible independently of thread timing because every unit of work
//! draws from its own stream, [`Rng::derive`]d from the run seed and the unit's coordinates (for
//! example `(seed, epoch, sample position)`), never from a shared generator.

use std::f64::consts::PI;

/// A small, fast, seedable pseudo-random generator (xoshiro256++).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: [u64; 4],
}

/// One step of SplitMix64: a bijective 64-bit mixer, used to seed and to derive streams.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub fn seed_from_u64(seed: u64) -> Self {
        let mut sm = seed;
        let state = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Rng { state }
    }

    /// The generator of one stream of a run: `Rng::derive(seed, &[stream, epoch, index])`.
    ///
    /// Different key lists give unrelated sequences (each key is mixed in through SplitMix64), so
    /// what one sample, batch or epoch draws never depends on how many numbers another drew.
    pub fn derive(seed: u64, keys: &[u64]) -> Self {
        let mut sm = seed;
        let mut hash = splitmix64(&mut sm);
        for &key in keys {
            let mut k = key ^ hash;
            hash = splitmix64(&mut k) ^ hash.rotate_left(23);
        }
        Rng::seed_from_u64(hash)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform double in `[0, 1)` with 53 random bits (Python's `random.random()`).
    pub fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform double between `low` and `high`: `low + (high - low) * random()`, as Python's
    /// `random.uniform` computes it.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.random()
    }

    /// `true` with probability `p` (`random() < p`).
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.random() < p
    }

    /// A uniform integer in `0..n`, without modulo bias.
    ///
    /// # Panics
    /// If `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "cannot draw from an empty range");
        // Lemire's multiply-and-reject.
        loop {
            let wide = self.next_u64() as u128 * n as u128;
            let low = wide as u64;
            if low >= n.wrapping_neg() % n {
                return (wide >> 64) as u64;
            }
        }
    }

    /// A uniform integer in `low..=high` (Python's `random.randint`).
    ///
    /// # Panics
    /// If `low > high`.
    pub fn randint(&mut self, low: usize, high: usize) -> usize {
        assert!(low <= high, "empty range {low}..={high}");
        low + self.below((high - low) as u64 + 1) as usize
    }

    /// A standard normal sample (Box-Muller; one sample per call).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.random(); // (0, 1]: the logarithm stays finite
        let u2 = self.random();
        (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
    }

    /// A normal sample with mean `mu` and standard deviation `sigma` (Python's `random.gauss`).
    pub fn gauss(&mut self, mu: f64, sigma: f64) -> f64 {
        mu + sigma * self.normal()
    }

    /// A Gamma(`shape`, 1) sample: Marsaglia and Tsang's method, with the `U^(1/shape)` boost for
    /// `shape < 1`.
    ///
    /// # Panics
    /// If `shape` is not positive.
    pub fn gamma(&mut self, shape: f64) -> f64 {
        assert!(shape > 0.0, "gamma shape {shape} must be positive");
        if shape < 1.0 {
            let boost = (1.0 - self.random()).powf(1.0 / shape);
            return self.gamma(shape + 1.0) * boost;
        }
        let d = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * d).sqrt();
        loop {
            let (x, v) = loop {
                let x = self.normal();
                let v = 1.0 + c * x;
                if v > 0.0 {
                    break (x, v * v * v);
                }
            };
            let u = 1.0 - self.random();
            if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
                return d * v;
            }
        }
    }

    /// A Beta(`a`, `b`) sample in `[0, 1]`, with numpy's algorithm choice: Johnk's method when both
    /// parameters are at most 1 (stable for the small alphas mixup uses), else a ratio of gammas.
    ///
    /// # Panics
    /// If `a` or `b` is not positive.
    pub fn beta(&mut self, a: f64, b: f64) -> f64 {
        assert!(a > 0.0 && b > 0.0, "beta parameters ({a}, {b}) must be positive");
        if a <= 1.0 && b <= 1.0 {
            loop {
                let (u, v) = (self.random(), self.random());
                let (x, y) = (u.powf(1.0 / a), v.powf(1.0 / b));
                let sum = x + y;
                if sum <= 1.0 && u + v > 0.0 {
                    if sum > 0.0 {
                        return x / sum;
                    }
                    // Both powers underflowed: finish in log space.
                    let (log_x, log_y) = (u.ln() / a, v.ln() / b);
                    let log_m = log_x.max(log_y);
                    let (log_x, log_y) = (log_x - log_m, log_y - log_m);
                    return (log_x - (log_x.exp() + log_y.exp()).ln()).exp();
                }
            }
        }
        let ga = self.gamma(a);
        let gb = self.gamma(b);
        ga / (ga + gb)
    }

    /// Shuffles `items` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A uniformly random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        self.shuffle(&mut order);
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mean_and_var(samples: &[f64]) -> (f64, f64) {
        let n = samples.len() as f64;
        let mean = samples.iter().sum::<f64>() / n;
        (mean, samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n)
    }

    #[test]
    fn same_seed_same_sequence_and_different_seeds_differ() {
        let draw = |rng: &mut Rng| (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>();
        assert_eq!(draw(&mut Rng::seed_from_u64(7)), draw(&mut Rng::seed_from_u64(7)));
        assert_ne!(draw(&mut Rng::seed_from_u64(7)), draw(&mut Rng::seed_from_u64(8)));
        // Derived streams differ by any key, and by key order.
        let a = draw(&mut Rng::derive(1, &[0, 3, 5]));
        assert_eq!(a, draw(&mut Rng::derive(1, &[0, 3, 5])));
        for other in [[0, 3, 6], [0, 5, 3], [1, 3, 5]] {
            assert_ne!(a, draw(&mut Rng::derive(1, &other)), "{other:?}");
        }
        assert_ne!(draw(&mut Rng::derive(1, &[])), draw(&mut Rng::derive(2, &[])));
    }

    #[test]
    fn sequence_is_pinned() {
        // The values a seed gives are part of the reproducibility contract: changing the
        // generator changes every run's augmentations, so it must be a deliberate decision.
        let mut rng = Rng::seed_from_u64(0);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, PINNED_SEED0);
    }

    // xoshiro256++ seeded by SplitMix64(0), checked against an independent transcription of the
    // reference C code (Blackman and Vigna's xoshiro256plusplus.c, splitmix64.c).
    const PINNED_SEED0: [u64; 3] = [0x53175d61490b23df, 0x61da6f3dc380d507, 0x5c0fdf91ec9a7bfc];

    #[test]
    fn uniform_ranges() {
        let mut rng = Rng::seed_from_u64(3);
        for _ in 0..10_000 {
            let x = rng.random();
            assert!((0.0..1.0).contains(&x));
            let y = rng.uniform(-2.0, 5.0);
            assert!((-2.0..5.0).contains(&y));
            assert!(rng.below(3) < 3);
            let k = rng.randint(4, 6);
            assert!((4..=6).contains(&k));
        }
        // Every value of a small range turns up.
        let mut seen = [false; 5];
        for _ in 0..200 {
            seen[rng.randint(0, 4)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::seed_from_u64(11);
        let samples: Vec<f64> = (0..40_000).map(|_| rng.normal()).collect();
        let (mean, var) = mean_and_var(&samples);
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.03, "{var}");
    }

    #[test]
    fn gamma_and_beta_have_their_means() {
        let mut rng = Rng::seed_from_u64(5);
        for shape in [0.3, 1.0, 2.5] {
            let samples: Vec<f64> = (0..20_000).map(|_| rng.gamma(shape)).collect();
            let (mean, var) = mean_and_var(&samples);
            assert!((mean - shape).abs() < 0.05 * shape.max(1.0), "gamma({shape}) mean {mean}");
            assert!((var - shape).abs() < 0.1 * shape.max(1.0), "gamma({shape}) var {var}");
        }
        // Mixup's alpha 0.8 and 0.2, CutMix's 1.0, and an asymmetric pair through the gamma path.
        for (a, b) in [(0.8, 0.8), (0.2, 0.2), (1.0, 1.0), (2.0, 0.5)] {
            let samples: Vec<f64> = (0..20_000).map(|_| rng.beta(a, b)).collect();
            assert!(samples.iter().all(|x| (0.0..=1.0).contains(x)));
            let (mean, var) = mean_and_var(&samples);
            let expect_var = a * b / ((a + b).powi(2) * (a + b + 1.0));
            assert!((mean - a / (a + b)).abs() < 0.01, "beta({a},{b}) mean {mean}");
            assert!((var - expect_var).abs() < 0.01, "beta({a},{b}) var {var} vs {expect_var}");
        }
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut rng = Rng::seed_from_u64(9);
        let mut p = rng.permutation(100);
        assert_ne!(p, (0..100).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..100).collect::<Vec<_>>());
        assert!(rng.permutation(0).is_empty());
    }
}

//! The vector instruction sets the kernels are compiled for, chosen at run time ([`Isa`],
//! [`widest_simd`]), and scalar functions written so loops over them vectorise: no library calls,
//! no branches.

/// Which compiled form of the kernels runs: the widest this CPU has.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Isa {
    #[cfg(target_arch = "x86_64")]
    Avx512,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    Portable,
}

impl Isa {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx512f") {
                return Isa::Avx512;
            }
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                return Isa::Avx2;
            }
        }
        Isa::Portable
    }

    /// Every form this CPU can run (for tests).
    #[cfg(test)]
    pub(crate) fn all_available() -> Vec<Self> {
        let mut all = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
                all.push(Isa::Avx2);
            }
            if is_x86_feature_detected!("avx512f") {
                all.push(Isa::Avx512);
            }
        }
        all
    }
}

/// `eˣ` to about one part in 10⁷: `eˣ = 2ⁿ·eʳ` with `n = round(x·log₂e)` and `|r| ≤ ln2/2` in a
/// degree-6 polynomial. Inputs are clamped to [−87, 88], so below −87 (masked logits) it gives
/// `e⁻⁸⁷` and it never overflows; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 in two parts, so `n·LN2_HI` is exact (Cody and Waite)
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // adding then subtracting 1.5·2²³ rounds to the nearest integer in any SIMD width
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t is 1.5·2²³ + n exactly, so its low bits are n: no float-to-int conversion (NaN in, NaN
    // out through p)
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    f32::from_bits((n.wrapping_add(127) as u32) << 23) * p
}

/// `erf(x)` to 1.5·10⁻⁷ absolute in exact arithmetic (Abramowitz and Stegun 7.1.26), 3·10⁻⁷ in f32.
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t * (0.254_829_6 + t * (-0.284_496_74 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// `1 / (1 + e⁻ˣ)`.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// A loop to compile once per instruction set by [`widest_simd`]. `run` must be
/// `#[inline(always)]`: each instruction set's copy then inlines it whatever its size. (A
/// closure called from the three copies is left out of line by LLVM when it is large, and stays
/// at the SSE2 baseline; so are the `FnOnce` shims of function items.)
pub(crate) trait SimdKernel {
    type Output;
    fn run(self) -> Self::Output;
}

/// Runs `kernel` compiled for the widest vector instruction set this CPU has (AVX-512 or AVX2
/// with FMA on x86-64): its element loops vectorise at 16 or 8 lanes instead of the SSE2
/// baseline's 4. Element-wise results are the same bits at any width.
#[inline(always)]
pub(crate) fn widest_simd<K: SimdKernel>(kernel: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<K: SimdKernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<K: SimdKernel>(kernel: K) -> K::Output {
            kernel.run()
        }
        match Isa::detect() {
            // SAFETY: `Isa::detect` found the features on this CPU
            Isa::Avx512 => return unsafe { avx512(kernel) },
            Isa::Avx2 => return unsafe { avx2(kernel) },
            Isa::Portable => {}
        }
    }
    kernel.run()
}

/// `a + b` element-wise, into `a`: the reduce step that adds up per-task partial sums.
pub(crate) fn add_partials(mut a: Vec<f32>, b: Vec<f32>) -> Vec<f32> {
    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    a
}

/// Σ aᵢ with eight partial sums, so the loop vectorises.
#[inline(always)]
pub(crate) fn sum(a: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let a8 = a.chunks_exact(8);
    let tail: f32 = a8.remainder().iter().sum();
    for a in a8 {
        for k in 0..8 {
            acc[k] += a[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ aᵢbᵢ with eight partial sums, so the loop vectorises.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (a, b) in a8.zip(b8) {
        for k in 0..8 {
            acc[k] += a[k] * b[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_a_few_ulps_of_std() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let (got, want) = (exp(x), x.exp());
            assert!((got - want).abs() <= 4e-7 * want, "exp({x}) = {got}, std {want}");
        }
        assert!(exp(-150.0) < 1e-37 && exp(-150.0) >= 0.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn partial_sums_add_every_element_tail_included() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let want_sum: f64 = a.iter().map(|&v| v as f64).sum();
            let want_dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            assert!((sum(&a) as f64 - want_sum).abs() < 1e-5, "sum of {len}");
            assert!((dot(&a, &b) as f64 - want_dot).abs() < 1e-5, "dot of {len}");
        }
    }

    #[test]
    fn erf_is_within_its_published_bound() {
        for i in -600..=600 {
            let x = i as f64 * 0.01;
            let want = libm_erf(x);
            let got = erf(x as f32) as f64;
            assert!((got - want).abs() <= 3e-7, "erf({x}) = {got}, want {want}");
        }
    }

    /// erf in f64 from its Taylor series (|x| ≤ 3) and continued fraction beyond, as the reference.
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0f64);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc(a) = e^{-a²}/√π · 1/(a + 1/2/(a + 1/(a + 3/2/(a + ...))))
            let mut frac = a;
            for k in (1..60).rev() {
                frac = a + (k as f64 / 2.0) / frac;
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / frac
        };
        v.copysign(x)
    }
}

//! Branch-free f32 exponentials and logarithms that the compiler can vectorise, and a runtime
//! switch to AVX-512 or AVX2 + FMA code for elementwise loops.
//!
//! The C library's `expf`/`log1pf` are accurate but are called one element at a time; the
//! elementwise kernels of a network (softplus, sigmoid, ELU) spend most of their time in them.
//! The functions here use the classic range reduction exp(x) = 2ᵏ·exp(r), |r| ≤ ln2/2, with a
//! minimax polynomial for exp(r) (the coefficients of Cephes' `expf`, S. Moshier), and
//! log(1 + y) = 2·atanh(y / (2 + y)) with its odd series. Every branch is a select, so a loop over
//! a slice becomes SIMD code. Accuracy against f64 references is tested in this file: a few ulps
//! (see each function).

/// e^x, within 2 ulps of the correctly rounded value for x in [−87, 88.72]; 0 below −87.3 (where
/// the true value is under 1.22e-38: subnormal below −87.34, and within 4 % of the smallest normal
/// f32 above) and +∞ above 88.72 (the true value exceeds f32::MAX above 88.7228).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // ln 2 split in two for an exact k·ln2_hi
    const LN2_LO: f32 = -2.121_944_4e-4;
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³: adding it rounds to the nearest integer
    let xc = x.clamp(-87.3, 88.72);
    let t = xc * LOG2E + MAGIC;
    let k = t - MAGIC;
    let ki = t.to_bits() as i32 - MAGIC.to_bits() as i32;
    let r = xc - k * LN2_HI - k * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
    let er = p * r * r + r + 1.0;
    // 2ᵏ as two normal factors 2^(k/2)·2^(k − k/2): k reaches 128 near the top of the range,
    // where 2ᵏ alone is not a finite f32 although e^x still is.
    let k_half = ki >> 1;
    let scale_a = f32::from_bits(((k_half + 127) << 23) as u32);
    let scale_b = f32::from_bits(((ki - k_half + 127) << 23) as u32);
    let y = er * scale_a * scale_b;
    let y = if x < -87.3 { 0.0 } else { y };
    if x > 88.72 { f32::INFINITY } else { y }
}

/// e^x − 1 without the cancellation of `exp(x) - 1` near 0: a Taylor polynomial for |x| < 0.35
/// (truncation below 2e-8 relative), `exp(x) - 1` elsewhere (within 4 ulps).
#[inline(always)]
pub fn expm1(x: f32) -> f32 {
    let small = x
        * (1.0
            + x * (0.5
                + x * (1.0 / 6.0
                    + x * (1.0 / 24.0
                        + x * (1.0 / 120.0 + x * (1.0 / 720.0 + x * (1.0 / 5040.0)))))));
    if x.abs() < 0.35 { small } else { exp(x) - 1.0 }
}

/// ln(1 + y) for y in [0, 1], accurate to a few ulps in relative terms even for tiny y:
/// 2·atanh(s) with s = y/(2 + y) ≤ 1/3, summed to s¹³ (truncation below 3e-8 relative).
#[inline(always)]
pub fn log1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y);
    let s2 = s * s;
    let series = 1.0
        + s2 * (1.0 / 3.0
            + s2 * (1.0 / 5.0
                + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0 + s2 * (1.0 / 11.0 + s2 * (1.0 / 13.0))))));
    2.0 * s * series
}

/// ln(1 + eˣ), stably: max(x, 0) + ln(1 + e^−|x|).
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    x.max(0.0) + log1p_unit(exp(-x.abs()))
}

/// 1 / (1 + e⁻ˣ).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

use std::mem::MaybeUninit;

/// Runs `f` compiled for the best vector extension this CPU has: AVX-512, AVX2 + FMA, or the
/// portable (SSE2) baseline. `f` is inlined into each of the three copies, so a loop inside it is
/// vectorised three times and the choice is made once per call, at run time.
#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx2,fma")]
        unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        match simd_level() {
            // SAFETY: the CPU supports the features each function was compiled for.
            SimdLevel::Avx512 => return unsafe { avx512(f) },
            SimdLevel::Avx2 => return unsafe { avx2(f) },
            SimdLevel::Baseline => {}
        }
    }
    f()
}

/// Writes `f(x[i])` to `out[i]` — every element of `out`, which may start uninitialised — vectorised
/// for this CPU (see [`dispatch`]): the compiler vectorises the loop because `f` is inlined and
/// branch-free.
#[inline(always)]
pub fn map_into(x: &[f32], out: &mut [MaybeUninit<f32>], f: impl Fn(f32) -> f32 + Copy) {
    assert_eq!(x.len(), out.len());
    dispatch(
        #[inline(always)]
        || {
            for (o, &v) in out.iter_mut().zip(x) {
                o.write(f(v));
            }
        },
    )
}

/// Writes `(p[i], q[i]) = f(x[i])` — two results from one pass, such as a function and its
/// derivative that share an exponential — vectorised for this CPU like [`map_into`].
#[inline(always)]
pub fn map_into2(
    x: &[f32],
    p: &mut [MaybeUninit<f32>],
    q: &mut [MaybeUninit<f32>],
    f: impl Fn(f32) -> (f32, f32) + Copy,
) {
    assert!(x.len() == p.len() && x.len() == q.len());
    dispatch(
        #[inline(always)]
        || {
            for ((p, q), &v) in p.iter_mut().zip(q.iter_mut()).zip(x) {
                let (a, b) = f(v);
                p.write(a);
                q.write(b);
            }
        },
    )
}

/// Writes `f(a[i], b[i mod b.len()])` to every `out[i]`: elementwise when `b` is as long as `a`,
/// and `b` repeated along the rows of `a` when it is shorter (a broadcast over leading axes, such
/// as a bias added to every row). Vectorised for this CPU (see [`dispatch`]).
#[inline(always)]
pub fn zip_into(
    a: &[f32],
    b: &[f32],
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32) -> f32 + Copy,
) {
    assert_eq!(a.len(), out.len());
    if a.is_empty() {
        return; // an empty tensor's gradient: nothing to write, whatever b holds
    }
    assert!(
        !b.is_empty() && a.len().is_multiple_of(b.len()),
        "zip_into: {} by {}",
        a.len(),
        b.len()
    );
    dispatch(
        #[inline(always)]
        || {
            for (o, a) in out.chunks_exact_mut(b.len()).zip(a.chunks_exact(b.len())) {
                for ((o, &x), &y) in o.iter_mut().zip(a).zip(b) {
                    o.write(f(x, y));
                }
            }
        },
    )
}

/// `out[i] = f(a[i], b[i], c[i])` for three slices of one length, with this CPU's vectors (the
/// fused derivatives of the activations, which read x, f(x) and the incoming gradient).
pub fn zip3_into(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    out: &mut [MaybeUninit<f32>],
    f: impl Fn(f32, f32, f32) -> f32 + Copy,
) {
    assert!(
        a.len() == out.len() && b.len() == out.len() && c.len() == out.len(),
        "zip3_into: lengths {}, {}, {} into {}",
        a.len(),
        b.len(),
        c.len(),
        out.len()
    );
    dispatch(
        #[inline(always)]
        || {
            for (((o, &x), &y), &z) in out.iter_mut().zip(a).zip(b).zip(c) {
                o.write(f(x, y, z));
            }
        },
    )
}

/// Σᵢ a\[i\]·b\[i\], in 16 interleaved lanes combined pairwise at the end. Inlined into its caller,
/// so that a loop of dot products inside one [`dispatch`] runs with that CPU's vectors.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    const LANES: usize = 16;
    let mut lanes = [0.0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for ((l, &x), &y) in lanes.iter_mut().zip(x).zip(y) {
            *l += x * y;
        }
    }
    combine_lanes(lanes, |a, b| a + b) + tail
}

// ANCHOR: dots
/// The dot products of `R` rows with `N` columns, `out[r][j]` = [`dot`]`(a[r], b[j])` bit for
/// bit, computed side by side. In a loop of single dot products each one is a chain of dependent
/// additions that waits for the one before; here the R·N chains advance together, and each
/// stretch of a row is loaded once for all N columns. All slices have one length.
#[inline(always)]
pub fn dots<const R: usize, const N: usize>(a: [&[f32]; R], b: [&[f32]; N]) -> [[f32; N]; R] {
    const LANES: usize = 16;
    let k = b[0].len();
    assert!(
        a.iter().chain(&b).all(|v| v.len() == k),
        "dots: slices of different lengths"
    );
    let full = k - k % LANES;
    // lanes + x ⊙ y, lane by lane, on arrays passed by value so that they stay in registers.
    #[inline(always)]
    fn mul_add_lanes(lanes: [f32; LANES], x: &[f32; LANES], y: &[f32; LANES]) -> [f32; LANES] {
        std::array::from_fn(|l| lanes[l] + x[l] * y[l])
    }
    let mut lanes = [[[0.0f32; LANES]; N]; R];
    for c in (0..full).step_by(LANES) {
        let y: [&[f32; LANES]; N] =
            std::array::from_fn(|j| b[j][c..c + LANES].try_into().expect("LANES floats"));
        for r in 0..R {
            let x: &[f32; LANES] = a[r][c..c + LANES].try_into().expect("LANES floats");
            for j in 0..N {
                lanes[r][j] = mul_add_lanes(lanes[r][j], x, y[j]);
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|j| {
            let tail: f32 = a[r][full..]
                .iter()
                .zip(&b[j][full..])
                .map(|(x, y)| x * y)
                .sum();
            combine_lanes(lanes[r][j], |p, q| p + q) + tail
        })
    })
}
// ANCHOR_END: dots

/// Combines 16 partial results pairwise — lane i with lane i + 8, then i + 4, i + 2, i + 1 — so
/// that a sum over the lanes rounds like a balanced tree.
#[inline(always)]
pub fn combine_lanes(mut lanes: [f32; 16], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut width = lanes.len();
    while width > 1 {
        width /= 2;
        for i in 0..width {
            lanes[i] = f(lanes[i], lanes[i + width]);
        }
    }
    lanes[0]
}

/// y ← y + α·x. Inlined into its caller, like [`dot`].
#[inline(always)]
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    for (y, &x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// The vector extensions the loops here can use.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SimdLevel {
    Avx512,
    Avx2,
    Baseline,
}

/// What this CPU supports (checked once).
#[cfg(target_arch = "x86_64")]
#[inline]
fn simd_level() -> SimdLevel {
    use std::sync::OnceLock;
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let avx2 = is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
        if avx2 && is_x86_feature_detected!("avx512f") {
            SimdLevel::Avx512
        } else if avx2 {
            SimdLevel::Avx2
        } else {
            SimdLevel::Baseline
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The distance in units in the last place between an f32 and an f64 reference.
    fn ulps(got: f32, want: f64) -> f64 {
        let w = want as f32;
        let ulp = (f32::from_bits(w.abs().to_bits() + 1) - w.abs()) as f64;
        ((got as f64) - want).abs() / ulp
    }

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_within_2_ulps() {
        // The dense stretch at the top is where 2ᵏ alone would overflow (k = 128 from 88.38).
        for x in grid(-87.0, 88.0, 200_000).chain(grid(88.0, 88.72, 20_000)) {
            let e = ulps(exp(x), (x as f64).exp());
            assert!(e <= 2.0, "exp({x}): {e} ulps");
        }
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn expm1_relative_error() {
        for x in grid(-20.0, 20.0, 200_000).chain(grid(-1e-3, 1e-3, 10_000)) {
            let want = (x as f64).exp_m1();
            let rel = ((expm1(x) as f64 - want) / want.abs().max(f64::MIN_POSITIVE)).abs();
            // Past the switch at |x| = 0.35, exp's 2 ulps (exp_within_2_ulps) at e^0.35 ≈ 1.42
            // are 2.4e-7, relative to e^0.35 − 1 ≈ 0.42 up to 5.7e-7, and the subtraction rounds
            // by 7e-8 more: 6.4e-7. Below it the series' 7 terms add a few roundings of 6e-8.
            assert!(x == 0.0 || rel < 1e-6, "expm1({x}): relative error {rel}");
        }
    }

    #[test]
    fn softplus_and_sigmoid_match_f64() {
        for x in grid(-80.0, 80.0, 200_000) {
            let xd = x as f64;
            let sp = xd.max(0.0) + (-xd.abs()).exp().ln_1p();
            let e = ulps(softplus(x), sp);
            assert!(e <= 4.0, "softplus({x}): {e} ulps");
            let sg = 1.0 / (1.0 + (-xd).exp());
            let e = ulps(sigmoid(x), sg);
            assert!(e <= 4.0, "sigmoid({x}): {e} ulps");
        }
    }

    /// `dots` promises the bits of `dot`, for every length: whole 16-lane stretches, a tail, and
    /// both; rows and columns of several sizes.
    #[test]
    fn dots_give_the_bits_of_dot() {
        let v = |n: usize, seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 333.0 - 1.5)
                .collect()
        };
        for k in [1, 15, 16, 17, 48, 128, 131] {
            let a: Vec<Vec<f32>> = (0..4).map(|r| v(k, r)).collect();
            let b: Vec<Vec<f32>> = (0..3).map(|j| v(k, 10 + j)).collect();
            let got = dispatch(|| dots([&a[0], &a[1], &a[2], &a[3]], [&b[0], &b[1], &b[2]]));
            let one = dispatch(|| dots([&a[1]], [&b[2]]));
            for r in 0..4 {
                for j in 0..3 {
                    let want = dispatch(|| dot(&a[r], &b[j]));
                    assert_eq!(
                        got[r][j].to_bits(),
                        want.to_bits(),
                        "k {k}, row {r}, col {j}"
                    );
                }
            }
            assert_eq!(
                one[0][0].to_bits(),
                dot(&a[1], &b[2]).to_bits(),
                "k {k}, 1 × 1"
            );
        }
    }

    #[test]
    fn map_into_matches_scalar_calls() {
        let x: Vec<f32> = grid(-30.0, 30.0, 1001).collect();
        let out = super::super::filled(x.len(), |o| map_into(&x, o, softplus));
        for (o, &v) in out.iter().zip(&x) {
            assert_eq!(o.to_bits(), softplus(v).to_bits());
        }
    }

    #[test]
    fn zip_into_repeats_the_shorter_operand() {
        let a: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let b = [0.5f32, 1.5, 2.5];
        let out = super::super::filled(12, |o| zip_into(&a, &b, o, |x, y| x * y + 1.0));
        for (i, o) in out.iter().enumerate() {
            assert_eq!(*o, a[i] * b[i % 3] + 1.0, "element {i}");
        }
        let out = super::super::filled(12, |o| zip_into(&a, &a, o, |x, y| x - 2.0 * y));
        assert!(out.iter().zip(&a).all(|(o, x)| *o == -x));
    }
}

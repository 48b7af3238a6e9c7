//! Counter-based random numbers that agree across devices: Philox4x32-10 (Salmon et al., SC 2011)
//! with Box–Muller, computed the same way on the CPU here and on a Vulkan device in
//! `shaders/philox.glsl`. A draw is a pure function of `(seed, counter)`, so a Langevin loop can
//! draw its noise on the device with no state and no host round trip, and the CPU can reproduce
//! the same noise to check it (up to the last bits of `log`, `cos` and `sin`).

use super::{Device, Tensor};
use ndarray::{ArrayD, IxDyn};

/// The Philox4x32-10 block for `counter` and `key`.
// ANCHOR: philox_cpu
pub fn philox4x32_10(mut ctr: [u32; 4], mut key: [u32; 2]) -> [u32; 4] {
    const M0: u64 = 0xD251_1F53;
    const M1: u64 = 0xCD9E_8D57;
    const W0: u32 = 0x9E37_79B9;
    const W1: u32 = 0xBB67_AE85;
    for _ in 0..10 {
        let p0 = M0 * ctr[0] as u64;
        let p1 = M1 * ctr[2] as u64;
        let (hi0, lo0) = ((p0 >> 32) as u32, p0 as u32);
        let (hi1, lo1) = ((p1 >> 32) as u32, p1 as u32);
        ctr = [hi1 ^ ctr[1] ^ key[0], lo1, hi0 ^ ctr[3] ^ key[1], lo0];
        key = [key[0].wrapping_add(W0), key[1].wrapping_add(W1)];
    }
    ctr
}
// ANCHOR_END: philox_cpu

/// The known-answer vectors of Random123's `kat_vectors` for philox4x32 with 10 rounds:
/// counter, key, output. [`philox4x32_10`] is checked against them, and so is the device's
/// Philox in the Vulkan tests.
pub const KNOWN_ANSWERS: [([u32; 4], [u32; 2], [u32; 4]); 3] = [
    (
        [0, 0, 0, 0],
        [0, 0],
        [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8],
    ),
    (
        [0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff],
        [0xffffffff, 0xffffffff],
        [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd],
    ),
    (
        [0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344],
        [0xa4093822, 0x299f31d0],
        [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1],
    ),
];

/// Four standard normals from four random words, by Box–Muller with 24-bit uniforms (the
/// formula of `normals_from_bits` in `shaders/philox.glsl`).
fn normals_from_bits(w: [u32; 4]) -> [f32; 4] {
    const INV24: f32 = 1.0 / 16_777_216.0;
    let pi = std::f32::consts::PI;
    let pair = |a: u32, b: u32| {
        let u1 = ((a >> 8) as f32 + 1.0) * INV24;
        let theta = (b >> 8) as f32 * INV24 * (2.0 * pi) - pi;
        let r = (-2.0 * u1.ln()).sqrt();
        (r * theta.cos(), r * theta.sin())
    };
    let (z0, z1) = pair(w[0], w[1]);
    let (z2, z3) = pair(w[2], w[3]);
    [z0, z1, z2, z3]
}

/// `n` standard normals for `(seed, counter)`: element `i` is lane `i mod 4` of the block from
/// counter `(i / 4, 0, counter_lo, counter_hi)` and key `seed`.
fn normals(n: usize, seed: u64, counter: u64) -> Vec<f32> {
    let key = [seed as u32, (seed >> 32) as u32];
    let mut out = Vec::with_capacity(n);
    for j in 0..n.div_ceil(4) {
        let ctr = [j as u32, 0, counter as u32, (counter >> 32) as u32];
        let z = normals_from_bits(philox4x32_10(ctr, key));
        out.extend_from_slice(&z[..(n - 4 * j).min(4)]);
    }
    out
}

impl Tensor {
    /// Standard normals of `shape` on `device`, drawn from `rng`: on the CPU exactly
    /// `Tensor::randn(shape, rng)`; on a Vulkan device drawn there by Philox, keyed by one seed
    /// taken from `rng` (so no noise is uploaded, and a seeded run stays reproducible).
    pub fn randn_on(shape: &[usize], device: &Device, rng: &mut impl rand::Rng) -> Tensor {
        match device {
            Device::Cpu => Tensor::randn(shape, rng),
            #[cfg(feature = "vulkan")]
            Device::Vulkan(_) => Tensor::randn_philox(shape, rng.random(), 0, device),
        }
    }

    /// Standard normals of `shape` on `device`, a pure function of `(seed, counter)` (Philox
    /// with Box–Muller): the same numbers on every device, up to the rounding of `log`, `cos`
    /// and `sin`. On a Vulkan device they are drawn there, with no copy.
    pub fn randn_philox(shape: &[usize], seed: u64, counter: u64, device: &Device) -> Tensor {
        match device {
            Device::Cpu => {
                let n = shape.iter().product();
                Tensor::from_array(
                    ArrayD::from_shape_vec(IxDyn(shape), normals(n, seed, counter)).expect("shape"),
                )
            }
            #[cfg(feature = "vulkan")]
            Device::Vulkan(ctx) => {
                Tensor::make(super::vulkan::randn(ctx, shape, seed, counter), None, false)
            }
        }
    }

    // ANCHOR: langevin_step
    /// One Langevin step, `x + (α/2)·score + √α·z`, with `z = randn_philox(x.shape(), seed,
    /// step)`. It records no graph (samplers run without gradients). On a Vulkan device it is
    /// one fused kernel that draws `z` as it goes, so a whole Langevin loop stays on the device.
    ///
    /// # Panics
    /// If `score`'s shape differs from `x`'s, or the two live on different devices.
    pub fn langevin_step(&self, score: &Tensor, alpha: f32, seed: u64, step: u64) -> Tensor {
        assert_eq!(
            self.shape(),
            score.shape(),
            "langevin_step: x {:?} vs score {:?}",
            self.shape(),
            score.shape()
        );
        #[cfg(feature = "vulkan")]
        if let Some(d) = super::vulkan::langevin_step(self, score, alpha, seed, step) {
            return Tensor::make(d, None, false);
        }
        let z = Tensor::randn_philox(self.shape(), seed, step, &Device::Cpu);
        super::no_grad(|| {
            self.add(&score.mul_scalar(0.5 * alpha))
                .add(&z.mul_scalar(alpha.sqrt()))
                .detach()
        })
    }
    // ANCHOR_END: langevin_step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn philox_gives_the_known_answers() {
        for (ctr, key, want) in KNOWN_ANSWERS {
            assert_eq!(
                philox4x32_10(ctr, key),
                want,
                "counter {ctr:x?} key {key:x?}"
            );
        }
    }

    /// Element i is lane i mod 4 of the block at counter (i / 4, 0, counter): the layout the
    /// device kernel follows too. The same (seed, counter) gives the same bits; another counter
    /// or seed, other numbers.
    #[test]
    fn randn_philox_is_a_function_of_seed_and_counter() {
        let (seed, counter) = (0x1234_5678_9abc_def0_u64, 0x0fed_cba9_8765_4321_u64);
        let z = Tensor::randn_philox(&[3, 3], seed, counter, &Device::Cpu).to_vec();
        let key = [seed as u32, (seed >> 32) as u32];
        for (i, &v) in z.iter().enumerate() {
            let ctr = [(i / 4) as u32, 0, counter as u32, (counter >> 32) as u32];
            let want = normals_from_bits(philox4x32_10(ctr, key))[i % 4];
            assert_eq!(v.to_bits(), want.to_bits(), "element {i}");
        }
        let again = Tensor::randn_philox(&[9], seed, counter, &Device::Cpu).to_vec();
        assert_eq!(z, again);
        for other in [
            Tensor::randn_philox(&[9], seed, counter + 1, &Device::Cpu),
            Tensor::randn_philox(&[9], seed ^ 1, counter, &Device::Cpu),
        ] {
            let other = other.to_vec();
            assert!(
                z.iter().zip(&other).all(|(a, b)| a != b),
                "{z:?} vs {other:?}"
            );
        }
    }

    /// 2¹⁸ draws: mean 0 and variance 1 within 5 standard errors (1/√n = 0.002 for the mean,
    /// √(2/n) = 0.0028 for the variance), and the tails of a normal: |z| > 3 for 0.27% of them
    /// (binomial SE 0.01%), |z| > 5 for almost none. A uniform misread as a normal, a lost factor
    /// of 2π or a √2 would each miss by far more.
    #[test]
    fn randn_philox_draws_standard_normals() {
        let n = 1usize << 18;
        let z = Tensor::randn_philox(&[n], 7, 3, &Device::Cpu).to_vec();
        let nf = n as f64;
        let mean = z.iter().map(|&v| v as f64).sum::<f64>() / nf;
        let var = z.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (nf - 1.0);
        assert!(mean.abs() <= 5.0 / nf.sqrt(), "mean {mean}");
        assert!(
            (var - 1.0).abs() <= 5.0 * (2.0 / nf).sqrt(),
            "variance {var}"
        );
        let beyond = |t: f32| z.iter().filter(|v| v.abs() > t).count() as f64 / nf;
        let p3 = 0.002_699_796;
        assert!((beyond(3.0) - p3).abs() <= 5.0 * (p3 * (1.0 - p3) / nf).sqrt());
        assert!(beyond(5.0) <= 10.0 / nf);
    }

    /// On the CPU, a Langevin step is x + (α/2)·s + √α·z with z = randn_philox(seed, step): the
    /// formula the fused device kernel is checked against.
    #[test]
    fn langevin_step_is_the_formula_with_philox_noise() {
        let x = Tensor::from_vec((0..10).map(|i| i as f32 * 0.3 - 1.0).collect(), &[2, 5]);
        let s = Tensor::from_vec((0..10).map(|i| 1.0 - i as f32 * 0.2).collect(), &[2, 5]);
        let (alpha, seed, step) = (0.01f32, 99u64, 41u64);
        let z = Tensor::randn_philox(&[2, 5], seed, step, &Device::Cpu).to_vec();
        let got = x.langevin_step(&s, alpha, seed, step).to_vec();
        let (xs, ss) = (x.to_vec(), s.to_vec());
        for i in 0..10 {
            let want = xs[i] as f64
                + 0.5 * alpha as f64 * ss[i] as f64
                + (alpha as f64).sqrt() * z[i] as f64;
            assert!(
                (got[i] as f64 - want).abs() <= 1e-6,
                "element {i}: {} vs {want}",
                got[i]
            );
        }
        // Another step number draws other noise.
        assert_ne!(got, x.langevin_step(&s, alpha, seed, step + 1).to_vec());
    }

    /// Box–Muller written out in f64 from the block's words (whose Philox is checked against
    /// Random123 above): lanes 2k and 2k + 1 are r·cos θ and r·sin θ of one pair, with
    /// r = √(−2 ln u), u = ((w₂ₖ >> 8) + 1)/2²⁴ and θ = 2π·(w₂ₖ₊₁ >> 8)/2²⁴ − π. The f32 path
    /// rounds θ by about 4e-7 (2π·θ and the − π), and ln, cos, sin by an ulp or two, so with
    /// r ≤ 5.8 it is within 3e-6 of the f64 value; 2e-5 is allowed. Lanes in another order or a
    /// pair whose second normal is not r·sin θ is off by O(1), and yet keeps the marginal law the
    /// moment test below checks.
    #[test]
    fn lanes_are_box_muller_pairs_of_the_block_words() {
        let (seed, counter) = (0x0bad_cafe_dead_beef_u64, 0x1234_5678_u64);
        let blocks = 64;
        let z = Tensor::randn_philox(&[4 * blocks], seed, counter, &Device::Cpu).to_vec();
        let key = [seed as u32, (seed >> 32) as u32];
        let two24 = 16_777_216.0f64;
        for j in 0..blocks {
            let ctr = [j as u32, 0, counter as u32, (counter >> 32) as u32];
            let w = philox4x32_10(ctr, key);
            for k in 0..2 {
                let u = ((w[2 * k] >> 8) as f64 + 1.0) / two24;
                let theta = std::f64::consts::TAU * (w[2 * k + 1] >> 8) as f64 / two24
                    - std::f64::consts::PI;
                let r = (-2.0 * u.ln()).sqrt();
                for (lane, want) in [(2 * k, r * theta.cos()), (2 * k + 1, r * theta.sin())] {
                    let got = z[4 * j + lane] as f64;
                    assert!(
                        (got - want).abs() <= 2e-5,
                        "block {j}, lane {lane}: {got} vs Box–Muller's {want}"
                    );
                }
            }
        }
    }

    /// Every draw is finite: the uniform in the logarithm is (m + 1)/2²⁴ for the word's top 24
    /// bits m, never 0, so the largest radius is √(−2 ln 2⁻²⁴) = √(48 ln 2) ≈ 5.768, reached by
    /// the all-zero word (where θ = −π, so z₀ = −r). The all-ones word gives u = 1 and r = 0.
    #[test]
    fn the_extreme_words_give_finite_normals() {
        let r_max = (48.0 * std::f64::consts::LN_2).sqrt();
        let z = normals_from_bits([0; 4]);
        assert!(z.iter().all(|v| v.is_finite()), "{z:?}");
        // f32 rounding of ln and of r: a few ulp of 5.77.
        assert!((z[0] as f64 + r_max).abs() <= 1e-5, "{z:?} vs −{r_max}");
        assert_eq!(normals_from_bits([u32::MAX; 4])[0], 0.0);
    }
}

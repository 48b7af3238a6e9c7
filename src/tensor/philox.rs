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

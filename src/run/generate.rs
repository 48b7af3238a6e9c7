//! Pictures from a trained score network: samples, the annealing strip, and inpainting.
//!
//! All three run annealed Langevin dynamics ([`crate::sample`]) with the network as the score
//! function, from uniform noise on `[0, 1)` as the paper (§5: "initial samples are uniform
//! noise"). Pictures are shown as the sampler leaves them, clamped to `[0, 1]` when written,
//! without a final denoising step (NCSN v1 has none).

use ndarray::{Array4, ArrayView4, Axis, s};
use rand::Rng;

use super::config::Occlusion;
use super::train::{ScoreNet, to_array4};
use crate::Tensor;
use crate::sample::{AnnealedConfig, annealed_langevin, annealed_langevin_inpaint};
use crate::score::GeometricSigmas;

/// Samples and the states of the chains between noise levels.
#[derive(Clone, Debug)]
pub struct Generated {
    /// The final samples, `(N, C, H, W)`.
    pub samples: Array4<f32>,
    /// The batch before the first level and after each level: `L + 1` arrays `(N, C, H, W)` (one,
    /// the starting noise, when T = 0 and the chains never move).
    pub stages: Vec<Array4<f32>>,
}

// ANCHOR: generate
/// Draws `n` pictures of shape `(c, side, side)` with annealed Langevin dynamics (Algorithm 1)
/// from uniform noise, recording the chains after every noise level.
pub fn generate(
    model: &impl ScoreNet,
    sigmas: &GeometricSigmas,
    config: &AnnealedConfig,
    n: usize,
    (c, side): (usize, usize),
    rng: &mut impl Rng,
) -> Generated {
    let x0 = Tensor::rand(&[n, c, side, side], rng).to(&model.device()); // uniform noise on [0, 1)
    let config = AnnealedConfig {
        record_every: config.n_steps_each.max(1), //        once per noise level
        ..*config
    };
    let out = annealed_langevin(
        |x, i| model.score(x, &vec![i; x.shape()[0]]),
        &x0,
        sigmas,
        &config,
        rng,
    );
    Generated {
        samples: to_array4(&out.x),
        stages: out.trajectory.iter().map(to_array4).collect(),
    }
}
// ANCHOR_END: generate

/// The annealing strip: for each of the first `rows` chains, its state before the first level and
/// after each level, left to right, as one batch `(rows · (L + 1), C, H, W)` to be laid out `L + 1`
/// to a row.
///
/// # Panics
/// If `stages` is empty.
pub fn annealing_strip(stages: &[Array4<f32>], rows: usize) -> Array4<f32> {
    let (n, c, h, w) = stages.first().expect("annealing_strip: no stages").dim();
    let rows = rows.min(n);
    let cols = stages.len();
    let mut out = Array4::zeros((rows * cols, c, h, w));
    for r in 0..rows {
        for (k, stage) in stages.iter().enumerate() {
            out.index_axis_mut(Axis(0), r * cols + k)
                .assign(&stage.index_axis(Axis(0), r));
        }
    }
    out
}

/// The mask of the known pixels for an occlusion of pictures `h` high and `w` wide: 1 on the kept
/// half, 0 on the hidden one, shape `(1, 1, h, w)`.
pub fn occlusion_mask((h, w): (usize, usize), occlusion: Occlusion) -> Array4<f32> {
    let mut m = Array4::zeros((1, 1, h, w));
    match occlusion {
        Occlusion::Right => m.slice_mut(s![.., .., .., ..w / 2]).fill(1.0),
        Occlusion::Bottom => m.slice_mut(s![.., .., ..h / 2, ..]).fill(1.0),
    }
    m
}

// ANCHOR: inpaint
/// Completes each picture of `originals` (`(M, C, H, W)` in `[0, 1]`) `k` times with the
/// inpainting sampler (the paper's Fig. 6): the hidden half starts as uniform noise and is sampled;
/// the kept half follows the original re-noised to each level. Returns the `M · k` completions,
/// those of picture m at rows `m·k .. (m+1)·k`.
pub fn inpaint(
    model: &impl ScoreNet,
    sigmas: &GeometricSigmas,
    config: &AnnealedConfig,
    originals: ArrayView4<f32>,
    k: usize,
    occlusion: Occlusion,
    rng: &mut impl Rng,
) -> Array4<f32> {
    let (m, c, h, w) = originals.dim();
    let mut known = Array4::zeros((m * k, c, h, w));
    for (i, mut row) in known.outer_iter_mut().enumerate() {
        row.assign(&originals.index_axis(Axis(0), i / k));
    }
    let mask = occlusion_mask((h, w), occlusion);
    let device = model.device();
    let x0 = Tensor::rand(&[m * k, c, h, w], rng).to(&device);
    let out = annealed_langevin_inpaint(
        |x, i| model.score(x, &vec![i; x.shape()[0]]),
        &x0,
        &Tensor::from_array(known.into_dyn()).to(&device),
        &Tensor::from_array(mask.into_dyn()).to(&device),
        sigmas,
        &AnnealedConfig {
            record_every: 0,
            ..*config
        },
        rng,
    );
    to_array4(&out.x)
}
// ANCHOR_END: inpaint

/// The inpainting figure as one batch laid out `k + 2` to a row: for each original, the original,
/// the occluded input (hidden half grey), then its `k` completions.
pub fn inpainting_grid(
    originals: ArrayView4<f32>,
    completions: ArrayView4<f32>,
    occlusion: Occlusion,
) -> Array4<f32> {
    let (m, c, h, w) = originals.dim();
    let k = completions.dim().0 / m.max(1);
    let mask = occlusion_mask((h, w), occlusion);
    let cols = k + 2;
    let mut out = Array4::zeros((m * cols, c, h, w));
    for i in 0..m {
        let orig = originals.index_axis(Axis(0), i);
        out.index_axis_mut(Axis(0), i * cols).assign(&orig);
        let mut occluded = orig.to_owned();
        let keep = mask.index_axis(Axis(0), 0);
        occluded.zip_mut_with(
            &keep.broadcast((c, h, w)).expect("mask broadcasts"),
            |v, &m| {
                if m == 0.0 {
                    *v = 0.5
                }
            },
        );
        out.index_axis_mut(Axis(0), i * cols + 1).assign(&occluded);
        for j in 0..k {
            out.index_axis_mut(Axis(0), i * cols + 2 + j)
                .assign(&completions.index_axis(Axis(0), i * k + j));
        }
    }
    out
}

//! Annealed Langevin dynamics (§4.3, Algorithm 1).
//!
//! Run Langevin dynamics for T steps at each noise level σ₁ > … > σ_L in turn, with the score of
//! the perturbed density q_{σᵢ} and the step αᵢ = ε·σᵢ²/σ_L², starting each level where the last one
//! stopped:
//!
//! $$ \tilde x_t \leftarrow \tilde x_{t-1} + \frac{\alpha_i}{2} s_\theta(\tilde x_{t-1}, \sigma_i)
//!    + \sqrt{\alpha_i}\, z_t . $$
//!
//! The choice αᵢ ∝ σᵢ² keeps the "signal-to-noise ratio" αᵢ s_θ/(2√αᵢ z) of the update independent
//! of the level, since ‖s_θ(·, σ)‖ ∝ 1/σ (§4.3).
//!
//! # The reference code's convention
//! The reference image sampler (`anneal_Langevin_dynamics` in `runners/anneal_runner.py`) writes the
//! update as x + αᵢ′ s + √(2αᵢ′) z with αᵢ′ = `step_lr`·σᵢ²/σ_L². That is Algorithm 1 with
//! αᵢ = 2αᵢ′, i.e. ε = 2·`step_lr`: the reference's `step_lr = 2e-5` runs the paper's algorithm with
//! ε = 4e-5, twice the ε = 2e-5 stated in the paper's §5. [`AnnealedConfig::from_reference_step_lr`]
//! converts. The reference toy runner (`anneal_langevin_dynamics` in `runners/toy_runner.py`) uses
//! Algorithm 1's form directly, with ε = `lr`.

use super::{Samples, langevin_step, record};
use crate::score::GeometricSigmas;
use crate::{Tensor, no_grad};
use rand::Rng;

/// ε, T and recording for annealed Langevin dynamics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnnealedConfig {
    /// ε in Algorithm 1: the step at the last (smallest) level; level i uses ε·σᵢ²/σ_L².
    pub step_size: f32,
    /// T, the number of steps at each level.
    pub n_steps_each: usize,
    /// Record the batch every this many steps, counted over all levels (0: never).
    pub record_every: usize,
}

impl AnnealedConfig {
    /// ε = 0.1, T = 100: the paper's Fig. 3 setting for the toy mixture.
    pub fn paper_toy() -> Self {
        AnnealedConfig {
            step_size: 0.1,
            n_steps_each: 100,
            record_every: 0,
        }
    }

    /// ε = 2e-5, T = 100: the paper's §5 setting for images.
    pub fn paper_images() -> Self {
        AnnealedConfig {
            step_size: 2e-5,
            n_steps_each: 100,
            record_every: 0,
        }
    }

    /// The configuration equivalent to the reference image sampler called with `step_lr` and
    /// `n_steps_each`: ε = 2·`step_lr` (see the [module docs](self)).
    pub fn from_reference_step_lr(step_lr: f32, n_steps_each: usize) -> Self {
        AnnealedConfig {
            step_size: 2.0 * step_lr,
            n_steps_each,
            record_every: 0,
        }
    }

    /// αᵢ = ε·(σᵢ/σ_L)², the step at level i.
    pub fn step_at(&self, sigmas: &GeometricSigmas, i: usize) -> f32 {
        let r = sigmas.get(i) / sigmas.last();
        self.step_size * r * r
    }
}

// ANCHOR: annealed
/// Algorithm 1 from `x0`. `score(x, i)` must return s(x, σᵢ) for the 0-based level index i.
pub fn annealed_langevin(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    sigmas: &GeometricSigmas,
    config: &AnnealedConfig,
    rng: &mut impl Rng,
) -> Samples {
    no_grad(|| {
        let mut x = x0.detach();
        let mut trajectory = Vec::new();
        let mut step = 0;
        for i in 0..sigmas.len() {
            let alpha = config.step_at(sigmas, i); //         αᵢ = ε·σᵢ²/σ_L²
            for _ in 0..config.n_steps_each {
                record(&mut trajectory, config.record_every, step, &x);
                let s = score(&x, i);
                x = langevin_step(&x, &s, alpha, rng); //     x + αᵢ/2·s + √αᵢ·z
                step += 1;
            }
        }
        record(&mut trajectory, config.record_every, step, &x);
        Samples { x, trajectory }
    })
}
// ANCHOR_END: annealed

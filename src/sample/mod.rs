//! Samplers driven by a score: Langevin dynamics and the reverse of a diffusion, generic over the
//! score function and the data's shape.
//!
//! | file | sampler | paper |
//! |---|---|---|
//! | [`langevin`] | Langevin dynamics with a fixed step | Eq. 4 |
//! | [`annealed`] | annealed Langevin dynamics over a noise schedule | Algorithm 1 |
//! | [`inpaint`] | annealed Langevin dynamics that keeps known entries fixed | Algorithm 2 (appendix) |
//! | [`sde`] | reverse diffusion, predictor–corrector sampling, the probability-flow ODE and its log-likelihoods, DDPM's ancestral sampler | Song et al. (2021), Ho et al. (2020) |
//!
//! A score function is a closure: `FnMut(&Tensor) -> Tensor` for plain Langevin dynamics and
//! `FnMut(&Tensor, usize) -> Tensor` for the annealed samplers and those of [`sde`], whose second
//! argument is the 0-based index i of the current noise level σᵢ, or the step t of a
//! [`VpSchedule`] (a noise-conditional network takes it as its label; a closed-form score looks
//! σᵢ up in the schedule). Any batch shape works: `(N, 2)` toy points or
//! `(N, C, H, W)` images.
//!
//! Every sampler runs under [`no_grad`](crate::no_grad): a thousand steps record no graph, and a
//! network's parameters are read, never differentiated (only the divergence adapters of [`sde`]
//! record a graph, inside each call, to differentiate the score in x). Noise comes from the `rng`
//! passed in, so a seeded `ChaCha8Rng` makes a run reproducible.

pub mod annealed;
pub mod inpaint;
pub mod langevin;
pub mod sde;

pub use annealed::{AnnealedConfig, annealed_langevin};
pub use inpaint::annealed_langevin_inpaint;
pub use langevin::{LangevinConfig, langevin_dynamics, langevin_step};
pub use sde::{
    FlowLikelihood, Probe, VpSchedule, ddpm_ancestral, exact_divergence, flow_log_likelihood,
    gaussian_log_prob, hutchinson_divergence, predictor_corrector, probability_flow,
    reverse_diffusion, vp_from_ve,
};

use crate::Tensor;

/// The result of a sampler: the final batch and, if asked for, snapshots along the way.
#[derive(Clone, Debug)]
pub struct Samples {
    /// The samples after the last step.
    pub x: Tensor,
    /// The batch at step 0 and then after every `record_every` steps (empty if recording was off).
    pub trajectory: Vec<Tensor>,
}

/// Appends `x` to `trajectory` when `step` is a multiple of `every` (never when `every` is 0).
pub(crate) fn record(trajectory: &mut Vec<Tensor>, every: usize, step: usize, x: &Tensor) {
    if every > 0 && step.is_multiple_of(every) {
        trajectory.push(x.clone());
    }
}

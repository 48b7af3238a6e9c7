//! Langevin dynamics (§2.2, Eq. 4).
//!
//! Given only the score ∇ₓ log p, the chain
//!
//! $$ \tilde x_t = \tilde x_{t-1} + \frac{\epsilon}{2} \nabla_x \log p(\tilde x_{t-1}) + \sqrt{\epsilon}\, z_t,
//!    \qquad z_t \sim \mathcal N(0, I), $$
//!
//! is the Euler–Maruyama discretisation of the diffusion dx = ½∇log p(x) dt + dW, whose stationary
//! law is p. As ε → 0 and T → ∞ the law of x̃_T tends to p (in practice the Metropolis–Hastings
//! correction the discretisation would need is ignored, as in the paper). This is exactly the
//! reference toy runner's `langevin_dynamics(score, init, lr=0.1, step=1000)`.

use super::{Samples, record};
use crate::{Tensor, no_grad};
use rand::Rng;

/// The step size ε, the number of steps T, and how often to record the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LangevinConfig {
    /// ε in Eq. 4.
    pub step_size: f32,
    /// T, the number of steps.
    pub n_steps: usize,
    /// Record the batch every this many steps (0: never).
    pub record_every: usize,
}

impl LangevinConfig {
    /// ε = 0.1, T = 1000: the paper's Fig. 3 setting (and the reference's defaults).
    pub fn paper_toy() -> Self {
        LangevinConfig {
            step_size: 0.1,
            n_steps: 1000,
            record_every: 0,
        }
    }
}

// ANCHOR: langevin_step
/// One step of Eq. 4: x + ε/2·s + √ε·z, with z ~ N(0, I) drawn from `rng`.
pub fn langevin_step(x: &Tensor, score: &Tensor, eps: f32, rng: &mut impl Rng) -> Tensor {
    if !x.device().is_cpu() {
        // On a device: the fused kernel, with z drawn there from a seed taken from `rng`.
        return x.langevin_step(score, eps, rng.random(), 0);
    }
    let z = Tensor::randn(x.shape(), rng);
    x.add(&score.mul_scalar(eps / 2.0))
        .add(&z.mul_scalar(eps.sqrt()))
}
// ANCHOR_END: langevin_step

// ANCHOR: langevin
/// Runs T steps of Langevin dynamics from `x0` with the score function `score`.
pub fn langevin_dynamics(
    mut score: impl FnMut(&Tensor) -> Tensor,
    x0: &Tensor,
    config: &LangevinConfig,
    rng: &mut impl Rng,
) -> Samples {
    no_grad(|| {
        let mut x = x0.detach();
        let mut trajectory = Vec::new();
        for t in 0..config.n_steps {
            record(&mut trajectory, config.record_every, t, &x);
            let s = score(&x);
            x = langevin_step(&x, &s, config.step_size, rng);
        }
        record(&mut trajectory, config.record_every, config.n_steps, &x);
        Samples { x, trajectory }
    })
}
// ANCHOR_END: langevin

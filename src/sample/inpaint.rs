//! Inpainting with annealed Langevin dynamics (the paper's Algorithm 2, appendix B.3).
//!
//! Given a reference `y` and a mask m (1 where an entry is known), only the unknown entries are
//! sampled. At each level σᵢ the known entries are re-noised once, ỹ = y + σᵢz, so that the whole
//! batch looks like a sample of q_{σᵢ} to the score network; after every Langevin step they are
//! reset to ỹ:
//!
//! $$ \tilde x_t \leftarrow \tilde x_{t-1} + \frac{\alpha_i}{2} s_\theta(\tilde x_{t-1}, \sigma_i)
//!    + \sqrt{\alpha_i}\, z_t, \qquad \tilde x_t \leftarrow \tilde x_t \odot (1 - m) + \tilde y \odot m. $$
//!
//! The reference's `anneal_Langevin_dynamics_inpainting` does the same for a mask that keeps the
//! left half of each image (with its own step convention; see [`super::annealed`]).

use super::{AnnealedConfig, Samples, langevin_step, record};
use crate::score::GeometricSigmas;
use crate::{Tensor, no_grad};
use rand::Rng;

// ANCHOR: inpaint
/// Algorithm 2: annealed Langevin dynamics from `x0` in which the entries where `mask` is 1 follow
/// `known` re-noised to each level. `known` and `mask` broadcast against `x0` (e.g. one reference
/// image and one mask for a whole batch of completions).
pub fn annealed_langevin_inpaint(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    known: &Tensor,
    mask: &Tensor,
    sigmas: &GeometricSigmas,
    config: &AnnealedConfig,
    rng: &mut impl Rng,
) -> Samples {
    no_grad(|| {
        let shape = x0.shape().to_vec();
        let known = known.broadcast_to(&shape);
        let keep = mask.broadcast_to(&shape); //                 m
        let free = keep.neg().add_scalar(1.0); //                1 − m
        let mut x = x0.detach();
        let mut trajectory = Vec::new();
        let mut step = 0;
        for i in 0..sigmas.len() {
            let alpha = config.step_at(sigmas, i);
            let z = Tensor::randn_on(&shape, &x.device(), rng);
            let y_tilde = known.add(&z.mul_scalar(sigmas.get(i))).mul(&keep); // ỹ ⊙ m
            x = x.mul(&free).add(&y_tilde);
            for _ in 0..config.n_steps_each {
                record(&mut trajectory, config.record_every, step, &x);
                let s = score(&x, i);
                x = langevin_step(&x, &s, alpha, rng).mul(&free).add(&y_tilde);
                step += 1;
            }
        }
        record(&mut trajectory, config.record_every, step, &x);
        Samples { x, trajectory }
    })
}
// ANCHOR_END: inpaint

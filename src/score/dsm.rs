//! Denoising score matching (Vincent, 2011), the paper's Eq. 2.
//!
//! Perturb the data with Gaussian noise, x̃ = x + σz with z ~ N(0, I), so that x̃ has the density
//! q_σ(x̃) = ∫ q_σ(x̃ | x) p(x) dx. The score of the *conditional* q_σ(x̃ | x) = N(x̃; x, σ²I) is known,
//! ∇ log q_σ(x̃ | x) = −(x̃ − x)/σ² = −z/σ, and regressing on it,
//!
//! $$ \tfrac12 \mathbb E_{p(x)} \mathbb E_{q_\sigma(\tilde x\mid x)}
//!    \Big\| s_\theta(\tilde x) + \frac{\tilde x - x}{\sigma^2} \Big\|^2, $$
//!
//! differs from the Fisher divergence to the *marginal* score, ½E‖s_θ(x̃) − ∇ log q_σ(x̃)‖², by a
//! constant independent of θ. The minimiser is therefore s*(x̃) = ∇ log q_σ(x̃) = E[−z/σ | x̃], which
//! is also Tweedie's formula: x̃ + σ² s*(x̃) = E[x | x̃]. No derivative of the network is needed.

use super::flat;
use crate::Tensor;
use rand::Rng;

// ANCHOR: dsm
/// The DSM loss for given noise `z` (same shape as `x`): x̃ = x + σz, target −z/σ,
/// ½‖s(x̃) − target‖² summed over each sample's entries and averaged over the batch.
pub fn dsm_loss_with(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    z: &Tensor,
    sigma: f32,
) -> Tensor {
    let x_tilde = x.add(&z.mul_scalar(sigma)); //    x̃ = x + σz
    let target = z.mul_scalar(-1.0 / sigma); //      −(x̃ − x)/σ² = −z/σ
    let s = score(&x_tilde);
    let diff = flat(&s.sub(&target));
    diff.square().sum(&[1], false).mul_scalar(0.5).mean_all()
}
// ANCHOR_END: dsm

/// [`dsm_loss_with`] with z ~ N(0, I) drawn from `rng`.
pub fn dsm_loss(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    sigma: f32,
    rng: &mut impl Rng,
) -> Tensor {
    let z = Tensor::randn_on(x.shape(), &x.device(), rng);
    dsm_loss_with(score, x, &z, sigma)
}

//! Energy-based models: a density p_θ(x) = e^{−E_θ(x)}/Z_θ given by a free scalar function E_θ,
//! and the three classical ways to fit one without computing Z_θ = ∫ e^{−E_θ}.
//!
//! | function | method | needs |
//! |---|---|---|
//! | [`contrastive_loss`] with [`PersistentChains`] | maximum likelihood, samples by Langevin MCMC | samples of p_θ |
//! | [`nce_loss`] | noise-contrastive estimation (Gutmann & Hyvärinen, 2010) | a noise density q to sample and evaluate |
//! | [`energy_score`] with [`crate::score::esm_loss`] | score matching (Hyvärinen, 2005) | ∇ₓ² E_θ |
//!
//! An energy is any closure `Fn(&Tensor) -> Tensor` mapping a batch `(N, …)` to one energy per
//! row, of shape `(N,)` or `(N, 1)`, differentiable in its parameters and in x. Its score is
//! s(x) = −∇ₓ E_θ(x): Z_θ does not depend on x, so it drops out, which is what lets score matching
//! and Langevin dynamics work with unnormalised models.

use crate::sample::{LangevinConfig, langevin_dynamics};
use crate::tensor::with_grad_mode;
use crate::{Tensor, grad};
use rand::Rng;

/// E(x) as a vector `(N,)`, whichever of `(N,)` or `(N, 1)` the closure returns.
fn energies(energy: &impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    let e = energy(x);
    let n = x.shape()[0];
    assert_eq!(
        e.numel(),
        n,
        "energy: {} values for a batch of shape {:?}; want one per row",
        e.numel(),
        x.shape()
    );
    e.reshape(&[n])
}

// ANCHOR: energy_score
/// The score of an energy model, s(x) = −∇ₓ E_θ(x), by one backward pass through Σₙ E(xₙ) (rows
/// do not interact in an energy applied row by row). With `create_graph` the result stays
/// differentiable in θ, as [`crate::score::esm_loss`] needs (its trace term then differentiates
/// E twice in x, and the optimiser's backward pass once more in θ); without it the score is a
/// constant, for sampling. Works inside [`crate::no_grad`] (a sampler's loop): the pass records
/// its own graph.
pub fn energy_score(
    energy: impl Fn(&Tensor) -> Tensor,
    create_graph: bool,
) -> impl Fn(&Tensor) -> Tensor {
    move |x: &Tensor| {
        with_grad_mode(true, || {
            let leaf = if create_graph && x.requires_grad() {
                x.clone() //                                  keep the caller's graph through x
            } else {
                x.detach().requires_grad_()
            };
            let total = energies(&energy, &leaf).sum_all(); //   Σₙ E(xₙ)
            let g = grad(&[&total], &[&leaf], create_graph).remove(0);
            g.neg() //                                         s = −∇ₓ E
        })
    }
}
// ANCHOR_END: energy_score

// ANCHOR: contrastive
/// The loss whose θ-gradient is the gradient of the negative log-likelihood, when `samples` are
/// draws of the model p_θ itself:
///
/// L = mean E_θ(data) − mean E_θ(samples),   ∇_θ L = E_data[∇_θ E_θ] − E_{p_θ}[∇_θ E_θ] = −∇_θ E_data[log p_θ],
///
/// since ∇_θ log Z_θ = −E_{p_θ}[∇_θ E_θ]. The samples enter as constants (detached): only the
/// energy's own dependence on θ is differentiated. L is not the likelihood and its value means
/// little (it drifts with the energy's offset); its gradient pushes the energy down at the data
/// and up where the model puts mass the data does not have.
pub fn contrastive_loss(
    energy: impl Fn(&Tensor) -> Tensor,
    data: &Tensor,
    samples: &Tensor,
) -> Tensor {
    let positive = energies(&energy, data).mean_all(); //               mean E(data)
    let negative = energies(&energy, &samples.detach()).mean_all(); //  mean E(samples)
    positive.sub(&negative)
}

/// Persistent Markov chains for maximum-likelihood training (Tieleman, 2008: "persistent
/// contrastive divergence"): a batch of points kept between training steps and moved, at each
/// step, by a few steps of Langevin dynamics with the current model's score. Restarting the
/// chains at every step would need many steps to reach p_θ; kept alive, they follow the model
/// as it changes slowly, and a few steps suffice.
pub struct PersistentChains {
    /// The chains' current points.
    pub x: Tensor,
    /// The Langevin steps taken at each [`Self::advance`].
    pub config: LangevinConfig,
}

impl PersistentChains {
    /// Chains starting at `x0`, moved by `config` at each step.
    pub fn new(x0: Tensor, config: LangevinConfig) -> Self {
        PersistentChains {
            x: x0.detach(),
            config,
        }
    }

    /// Moves the chains by `config.n_steps` Langevin steps with the score of `energy`, and returns
    /// the new points (detached).
    pub fn advance(&mut self, energy: impl Fn(&Tensor) -> Tensor, rng: &mut impl Rng) -> &Tensor {
        let score = energy_score(energy, false);
        self.x = langevin_dynamics(score, &self.x, &self.config, rng).x;
        &self.x
    }
}
// ANCHOR_END: contrastive

// ANCHOR: nce
/// Noise-contrastive estimation with as many noise points as data points: a logistic classifier
/// told data from noise y ~ q by the logit
///
/// G(x) = −E_θ(x) − c − log q(x),
///
/// where c is a learned scalar (`log_z`, shape `[]` or `[1]`), the model's guess of log Z_θ. The
/// loss is the classifier's cross-entropy, −mean log σ(G(data)) − mean log(1 − σ(G(noise))) =
/// mean softplus(−G(data)) + mean softplus(G(noise)). Its minimiser over all functions is
/// G = log p − log q: there −E_θ − c = log p, so the model is normalised by c without ever
/// integrating (Gutmann & Hyvärinen, 2010, Theorem 1). `log_q_data` and `log_q_noise` are
/// log q at the data and at the noise, shape `(N,)`.
pub fn nce_loss(
    energy: impl Fn(&Tensor) -> Tensor,
    log_z: &Tensor,
    data: &Tensor,
    log_q_data: &Tensor,
    noise: &Tensor,
    log_q_noise: &Tensor,
) -> Tensor {
    let c = log_z.reshape(&[]);
    let logit = |x: &Tensor, log_q: &Tensor| {
        let n = x.shape()[0];
        energies(&energy, x).neg().sub(&c).sub(&log_q.reshape(&[n])) //                      G = −E − c − log q
    };
    let data_term = logit(data, log_q_data).neg().softplus().mean_all(); //   −log σ(G(data))
    let noise_term = logit(noise, log_q_noise).softplus().mean_all(); //     −log(1 − σ(G(noise)))
    data_term.add(&noise_term)
}
// ANCHOR_END: nce

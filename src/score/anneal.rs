//! The noise-conditional objective of NCSN (§4.2, Eq. 5–6) and its noise schedule.
//!
//! Choose noise levels σ₁ > σ₂ > … > σ_L forming a geometric sequence: σ₁ large enough to cover
//! the space between modes, σ_L small enough that q_{σ_L} ≈ p. One network s_θ(x̃, σ) is trained
//! with denoising score matching ([`super::dsm`]) at every level at once:
//!
//! $$ \ell(\theta; \sigma) = \tfrac12 \mathbb E_{p(x)} \mathbb E_{\tilde x \sim \mathcal N(x, \sigma^2 I)}
//!    \Big\| s_\theta(\tilde x, \sigma) + \frac{\tilde x - x}{\sigma^2} \Big\|^2 \qquad \text{(Eq. 5)} $$
//!
//! $$ \mathcal L(\theta; \{\sigma_i\}) = \frac1L \sum_{i=1}^{L} \lambda(\sigma_i)\, \ell(\theta; \sigma_i),
//!    \qquad \lambda(\sigma) = \sigma^2 \qquad \text{(Eq. 6)} $$
//!
//! With λ(σ) = σ² every term has the same order of magnitude: ‖σ s_θ‖ ∝ 1 at the optimum and
//! (x̃ − x)/σ ~ N(0, I). As in the reference's `anneal_dsm_score_estimation`, the average over
//! levels is estimated by drawing one level index uniformly for each sample of the batch, and the
//! power of λ is a parameter (`anneal_power`, 2 by default).

use super::flat;
use crate::Tensor;
use rand::Rng;

// ANCHOR: geometric_sigmas
/// A geometric sequence of noise levels σ₁ > … > σ_L, the reference's
/// `np.exp(np.linspace(np.log(sigma_begin), np.log(sigma_end), num_classes))`.
#[derive(Clone, Debug, PartialEq)]
pub struct GeometricSigmas {
    sigmas: Vec<f32>,
}

impl GeometricSigmas {
    /// `n` levels from `begin` down to `end` (both included) with a constant ratio, computed in
    /// f64 as exp of evenly spaced logarithms and rounded to f32 at the end, step for step as
    /// NumPy's `linspace` spaces them (so the levels are the reference's to the bit). `begin` and
    /// `end` are f64 as the reference's config values are: from an f32 0.01 (0.0099999998) the
    /// paper's σ₉ would come out one unit in the last place off. Panics unless both are positive
    /// and n ≥ 1.
    pub fn new(begin: f64, end: f64, n: usize) -> Self {
        assert!(
            begin > 0.0 && end > 0.0 && n >= 1,
            "GeometricSigmas: need begin, end > 0 and n ≥ 1, got ({begin}, {end}, {n})"
        );
        let (lb, le) = (begin.ln(), end.ln());
        // linspace: start + i·step with step = (stop − start)/(n − 1); the last point is stop.
        let step = if n > 1 {
            (le - lb) / (n - 1) as f64
        } else {
            0.0
        };
        let sigmas = (0..n)
            .map(|i| {
                let log = if n > 1 && i == n - 1 {
                    le
                } else {
                    i as f64 * step + lb
                };
                log.exp() as f32
            })
            .collect();
        GeometricSigmas { sigmas }
    }
    // ANCHOR_END: geometric_sigmas

    /// The paper's CIFAR-10/MNIST schedule: 10 levels from 1 to 0.01.
    pub fn paper() -> Self {
        Self::new(1.0, 0.01, 10)
    }

    /// All levels, largest first.
    pub fn sigmas(&self) -> &[f32] {
        &self.sigmas
    }

    /// The number of levels L.
    pub fn len(&self) -> usize {
        self.sigmas.len()
    }

    /// Always false: a schedule has at least one level.
    pub fn is_empty(&self) -> bool {
        self.sigmas.is_empty()
    }

    /// σᵢ for a 0-based level index.
    pub fn get(&self, i: usize) -> f32 {
        self.sigmas[i]
    }

    /// σ₁, the largest level.
    pub fn first(&self) -> f32 {
        self.sigmas[0]
    }

    /// σ_L, the smallest level.
    pub fn last(&self) -> f32 {
        self.sigmas[self.sigmas.len() - 1]
    }

    /// The common ratio σᵢ₊₁/σᵢ (1 for a single level).
    pub fn ratio(&self) -> f32 {
        if self.len() < 2 {
            1.0
        } else {
            self.sigmas[1] / self.sigmas[0]
        }
    }

    /// σ for each label, as a tensor of shape `(N, 1, …, 1)` with `ndim` axes: ready to broadcast
    /// against a batch (the reference's `sigmas[labels].view(N, *([1] * ...))`).
    pub fn gather(&self, labels: &[usize], ndim: usize) -> Tensor {
        let mut shape = vec![1; ndim.max(1)];
        shape[0] = labels.len();
        Tensor::from_vec(labels.iter().map(|&l| self.sigmas[l]).collect(), &shape)
    }

    /// Level indices drawn uniformly, one per sample (`torch.randint(0, L, (N,))`).
    pub fn sample_labels(&self, n: usize, rng: &mut impl Rng) -> Vec<usize> {
        (0..n).map(|_| rng.random_range(0..self.len())).collect()
    }
}

// ANCHOR: anneal_dsm
/// The annealed DSM loss of Eq. 6 for given labels (one level index per sample) and noise `z`:
/// x̃ = x + σ_{label} z, ℓ = ½‖s(x̃, labels) + z/σ‖² per sample, weighted by σ^`anneal_power` and
/// averaged over the batch.
pub fn anneal_dsm_loss_with(
    score: impl Fn(&Tensor, &[usize]) -> Tensor,
    x: &Tensor,
    labels: &[usize],
    z: &Tensor,
    sigmas: &GeometricSigmas,
    anneal_power: f32,
) -> Tensor {
    let sigma = sigmas.gather(labels, x.ndim()).to(&x.device()); //      (N, 1, …): σ of each sample
    weighted_dsm_loss_with(|x_tilde| score(x_tilde, labels), x, z, &sigma, anneal_power)
}

/// Eq. 6's sum for noise levels given per sample: `sigma` of shape `(N, 1, …)` broadcasts against
/// `x`, and `score` is the network already told each row's level. The annealed loss above and the
/// [continuous one](continuous_dsm_loss_with) differ only in where σ comes from.
pub fn weighted_dsm_loss_with(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    z: &Tensor,
    sigma: &Tensor,
    anneal_power: f32,
) -> Tensor {
    let x_tilde = x.add(&z.mul(sigma)); //                x̃ = x + σz
    let target = z.div(sigma).neg(); //                   −(x̃ − x)/σ² = −z/σ
    let s = score(&x_tilde);
    let per_sample = flat(&s.sub(&target))
        .square()
        .sum(&[1], true)
        .mul_scalar(0.5);
    let weight = flat(sigma).powf(anneal_power); //       λ(σ) = σ^power, (N, 1)
    per_sample.mul(&weight).mean_all()
}
// ANCHOR_END: anneal_dsm

/// [`anneal_dsm_loss_with`] with uniformly drawn labels and z ~ N(0, I) (the reference's
/// `anneal_dsm_score_estimation`).
pub fn anneal_dsm_loss(
    score: impl Fn(&Tensor, &[usize]) -> Tensor,
    x: &Tensor,
    sigmas: &GeometricSigmas,
    anneal_power: f32,
    rng: &mut impl Rng,
) -> Tensor {
    let labels = sigmas.sample_labels(x.shape()[0], rng);
    let z = Tensor::randn_on(x.shape(), &x.device(), rng);
    anneal_dsm_loss_with(score, x, &labels, &z, sigmas, anneal_power)
}

// ANCHOR: noise_range
/// A continuum of noise levels [σ_min, σ_max], for a network conditioned on σ itself rather than
/// on one of L levels. Training draws σ log-uniformly, σ = σ_min·(σ_max/σ_min)^u with u ~ U[0, 1):
/// the continuous version of picking one of NCSN's geometric levels uniformly, and the law of
/// σ(t) for t ~ U[0, 1] in the VE SDE of Song et al. (2021), whose σ(t) is that same geometric
/// interpolation. A sampler then asks the network for whatever levels it needs ([`Self::levels`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoiseRange {
    min: f64,
    max: f64,
}

impl NoiseRange {
    /// The levels from `min` to `max`. Panics unless 0 < min < max and both are finite.
    pub fn new(min: f64, max: f64) -> Self {
        assert!(
            min > 0.0 && min < max && max.is_finite(),
            "NoiseRange: need 0 < min < max < ∞, got ({min}, {max})"
        );
        NoiseRange { min, max }
    }

    /// σ_min.
    pub fn min(&self) -> f64 {
        self.min
    }

    /// σ_max.
    pub fn max(&self) -> f64 {
        self.max
    }

    /// Where σ lies on the range's log scale: 0 at σ_min, 1 at σ_max, and the same straight line
    /// beyond them.
    pub fn position(&self, sigma: f32) -> f32 {
        ((f64::from(sigma) / self.min).ln() / (self.max / self.min).ln()) as f32
    }

    /// `n` levels drawn log-uniformly from the range, computed in f64 and rounded to f32.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        let ratio = self.max / self.min;
        (0..n)
            .map(|_| (self.min * ratio.powf(rng.random::<f64>())) as f32) // σ_min·(σ_max/σ_min)^u
            .collect()
    }

    /// `n` geometric levels from σ_max down to σ_min, for the samplers.
    pub fn levels(&self, n: usize) -> GeometricSigmas {
        GeometricSigmas::new(self.max, self.min, n)
    }
}

/// DSM with one noise level per sample, given in `sigmas` (on the host: a network conditioned on
/// σ reads it there), and noise `z`: [`weighted_dsm_loss_with`] with σ of shape `(N, 1, …)`.
/// `score(x̃, sigmas)` returns s(x̃ₙ, σₙ) row by row.
pub fn continuous_dsm_loss_with(
    score: impl Fn(&Tensor, &[f32]) -> Tensor,
    x: &Tensor,
    sigmas: &[f32],
    z: &Tensor,
    anneal_power: f32,
) -> Tensor {
    let n = x.shape()[0];
    assert_eq!(
        sigmas.len(),
        n,
        "continuous_dsm_loss_with: {} levels for a batch of {n}",
        sigmas.len()
    );
    let mut shape = vec![1; x.ndim().max(1)];
    shape[0] = n;
    let sigma = Tensor::from_vec(sigmas.to_vec(), &shape).to(&x.device());
    weighted_dsm_loss_with(|x_tilde| score(x_tilde, sigmas), x, z, &sigma, anneal_power)
}

/// [`continuous_dsm_loss_with`] with σ drawn from `range` (one per sample), then z ~ N(0, I).
pub fn continuous_dsm_loss(
    score: impl Fn(&Tensor, &[f32]) -> Tensor,
    x: &Tensor,
    range: &NoiseRange,
    anneal_power: f32,
    rng: &mut impl Rng,
) -> Tensor {
    let sigmas = range.sample(x.shape()[0], rng);
    let z = Tensor::randn_on(x.shape(), &x.device(), rng);
    continuous_dsm_loss_with(score, x, &sigmas, &z, anneal_power)
}
// ANCHOR_END: noise_range

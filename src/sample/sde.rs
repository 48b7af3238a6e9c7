//! Sampling by reversing a diffusion: score SDEs (Song et al., ICLR 2021) and DDPM's ancestral
//! sampler (Ho et al., NeurIPS 2020), written with the score.
//!
//! NCSN's noise levels σ₁ > … > σ_L are snapshots of one process: the data diffused by Brownian
//! motion whose variance grows to σ². Taken continuously, that is the *variance-exploding* (VE)
//! SDE dx = √(dσ²/dt) dw, whose marginal at time t is exactly the perturbed density q_{σ(t)}. A
//! diffusion run backwards in time is again a diffusion (Anderson, 1982), and its drift needs only
//! the score of the marginals:
//!
//! $$ dx = -\frac{d\sigma^2}{dt}\, \nabla_x \log q_{\sigma(t)}(x)\, dt + \sqrt{\frac{d\sigma^2}{dt}}\, d\bar w , $$
//!
//! run from t = 1 (σ large, q ≈ N(0, σ²I)) down to t = 0. So the score a noise-conditional
//! network learns is enough to sample by simulating this SDE, without Langevin dynamics. Four
//! samplers, each with the same score closure as the [annealed](super::annealed) ones:
//!
//! | function | what it simulates |
//! |---|---|
//! | [`reverse_diffusion`] | the reverse VE SDE, one Euler–Maruyama step per level |
//! | [`predictor_corrector`] | the same with Langevin steps at each level before it moves on |
//! | [`probability_flow`] | the probability-flow ODE dx/dσ = −σ s(x, σ), deterministic (Heun) |
//! | [`ddpm_ancestral`] | DDPM's sampler, the reverse of the variance-preserving (VP) SDE |
//!
//! Run the other way, from the data up to σ₁, the flow also gives log-likelihoods:
//! [`flow_log_likelihood`] integrates the divergence of the score along each path, which a
//! closed form, [`exact_divergence`] (autograd, D passes) or [`hutchinson_divergence`] (one
//! pass, unbiased) supplies.
//!
//! With the exact score all four draw from the data distribution, up to their discretisation and
//! the mismatch of the starting distribution: the tests check it on a Gaussian, where each chain
//! is linear and its law known exactly, and on the toy mixture, whose mode weights plain Langevin
//! dynamics gets wrong.

use super::{AnnealedConfig, Samples, langevin_step, record};
use crate::score::{GeometricSigmas, flat};
use crate::tensor::with_grad_mode;
use crate::{Tensor, grad, grad_with, no_grad};
use rand::Rng;

// ANCHOR: reverse_diffusion
/// The reverse-time VE SDE discretised on the levels σ₁ > … > σ_L, Euler–Maruyama from `x0`
/// (which should be a draw from q_{σ₁}, or N(0, σ₁²I) when σ₁ dwarfs the data):
///
/// x ← x + (σᵢ² − σᵢ₊₁²) s(x, σᵢ) + √(σᵢ² − σᵢ₊₁²) z,   with σ_{L+1} = 0,
///
/// the last step taken without its noise, so that it returns x + σ_L² s(x, σ_L), the posterior
/// mean of the data given x (Tweedie's formula). This is the "reverse diffusion predictor" of
/// Song et al. (2021) for the VE SDE, with their final denoising step. `score(x, i)` must return
/// s(x, σᵢ) for the 0-based level index i, as for [`annealed_langevin`](super::annealed_langevin).
///
/// Where annealed Langevin dynamics runs T steps *at* each level, this moves *between* levels:
/// one step per level, so it needs many finely spaced levels (hundreds to thousands) rather than
/// NCSN's ten.
pub fn reverse_diffusion(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    sigmas: &GeometricSigmas,
    record_every: usize,
    rng: &mut impl Rng,
) -> Samples {
    backwards(x0, sigmas.len(), record_every, rng, |x, i, _| {
        ve_predictor(x, &score(x, i), sigmas, i)
    })
}

/// One reverse-diffusion step from level i given the score `s` = s(x, σᵢ) there: the mean
/// x + dᵢ·s and the noise's standard deviation √dᵢ, with dᵢ = σᵢ² − σᵢ₊₁² the variance the
/// forward process added between the levels (σ_{L+1} = 0).
fn ve_predictor(x: &Tensor, s: &Tensor, sigmas: &GeometricSigmas, i: usize) -> (Tensor, f32) {
    let next = sigmas.sigmas().get(i + 1).copied().unwrap_or(0.0);
    let d = sigmas.get(i).powi(2) - next * next;
    (x.add(&s.mul_scalar(d)), d.sqrt())
}
// ANCHOR_END: reverse_diffusion

// ANCHOR: predictor_corrector
/// Predictor–corrector sampling (after Song et al., 2021, Algorithm 2 for the VE SDE, which takes
/// the predictor first; here each level starts with the corrector, so that its steps are exactly
/// annealed Langevin dynamics' and the prior is corrected before the first move) on the levels
/// σ₁ > … > σ_L: at each level, first `corrector.n_steps_each` steps of Langevin dynamics with
/// NCSN's step αᵢ = ε·σᵢ²/σ_L² (the corrector, exactly the steps of
/// [`annealed_langevin`](super::annealed_langevin)), then one [`reverse_diffusion`] step to the
/// next level (the predictor), the last without noise. With no corrector steps it is
/// [`reverse_diffusion`]; without the predictor it would be annealed Langevin dynamics. The
/// corrector repairs what the predictor's coarse steps get wrong, so a few levels suffice where
/// the predictor alone wants hundreds. Records the batch before level 0 and after every
/// `corrector.record_every` levels.
pub fn predictor_corrector(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    sigmas: &GeometricSigmas,
    corrector: &AnnealedConfig,
    rng: &mut impl Rng,
) -> Samples {
    backwards(
        x0,
        sigmas.len(),
        corrector.record_every,
        rng,
        |x, i, rng| {
            let alpha = corrector.step_at(sigmas, i); //           αᵢ = ε·σᵢ²/σ_L²
            let mut x = x.clone();
            for _ in 0..corrector.n_steps_each {
                x = langevin_step(&x, &score(&x, i), alpha, rng); //  corrector: x + αᵢ/2·s + √αᵢ·z
            }
            ve_predictor(&x, &score(&x, i), sigmas, i) //           predictor: to σᵢ₊₁
        },
    )
}
// ANCHOR_END: predictor_corrector

// ANCHOR: probability_flow
/// The probability-flow ODE of the VE SDE from `x0` at σ₁ down to σ_L, by Heun's method with one
/// step between consecutive levels.
///
/// The ODE dx/dt = −½ (dσ²/dt) ∇ log q_{σ(t)}(x) moves every point deterministically, and its
/// solutions have the same marginals q_{σ(t)} as the SDE's (Song et al., 2021, §4.3). With σ as
/// the clock it reads dx/dσ = −σ s(x, σ). Each step from σᵢ to σᵢ₊₁ (h = σᵢ₊₁ − σᵢ < 0) takes
/// an Euler step, evaluates the slope at its end, and moves with the mean of the two slopes:
/// second order in h, two score evaluations per step. No noise is drawn: the same `x0` always
/// gives the same samples, and the map from `x0` to the samples is invertible (run it the other
/// way). Returns the points at σ_L, not denoised.
pub fn probability_flow(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    sigmas: &GeometricSigmas,
    record_every: usize,
) -> Samples {
    no_grad(|| {
        let mut x = x0.detach();
        let mut trajectory = Vec::new();
        let l = sigmas.len();
        // The slope dx/dσ = −σ s(x, σ) at level i.
        let mut slope = |x: &Tensor, i: usize| score(x, i).mul_scalar(-sigmas.get(i));
        for i in 0..l - 1 {
            record(&mut trajectory, record_every, i, &x);
            let h = sigmas.get(i + 1) - sigmas.get(i);
            let k1 = slope(&x, i);
            let euler = x.add(&k1.mul_scalar(h)); //                      x + h·k₁
            let k2 = slope(&euler, i + 1);
            x = x.add(&k1.add(&k2).mul_scalar(h / 2.0)); //               x + h·(k₁ + k₂)/2
        }
        record(&mut trajectory, record_every, l - 1, &x);
        Samples { x, trajectory }
    })
}
// ANCHOR_END: probability_flow

// ANCHOR: flow_log_likelihood
/// Log-likelihoods from the probability-flow ODE (Song et al., 2021, §4.3 and App. D.2): for each
/// row of `x`, taken as a point at the smallest level σ_L, an estimate of log q_{σ_L}(x) in nats.
///
/// Along a path of dx/dσ = f(x, σ) = −σ s(x, σ) the density of the flowing cloud changes by the
/// instantaneous change of variables, d log q_σ(x(σ))/dσ = −∇·f = σ ∇·s(x(σ), σ). Integrated
/// from the data at σ_L up to σ₁,
///
/// log q_{σ_L}(x) = log q_{σ₁}(x(σ₁)) − ∫_{σ_L}^{σ₁} σ ∇·s(x(σ), σ) dσ.
///
/// So the flow is run the other way from [`probability_flow`], up the levels, by Heun's method
/// on the augmented state (x, ℓ) with ℓ the running integral: one step from σᵢ₊₁ up to σᵢ
/// (h = σᵢ − σᵢ₊₁ > 0) takes the slopes (−σ s, σ ∇·s) at both ends of an Euler step and moves
/// both parts with their mean. `score_div(x, i)` must return s(x, σᵢ) and its divergence
/// ∇ₓ·s(x, σᵢ), one per row (shape `(N,)` or `(N, 1)`): from a closed form
/// ([`closed_form_score_and_divergence`](crate::score::closed_form_score_and_divergence)), from
/// a network by autograd ([`exact_divergence`]) or by Hutchinson's estimator
/// ([`hutchinson_divergence`]). `prior_log_prob(z)` must return log q_{σ₁}(z) per row, or the
/// prior a sampler starts from, N(0, σ₁²I) ([`gaussian_log_prob`]).
///
/// What it estimates, and how well:
/// * **q_{σ_L}, not p.** The flow starts at σ_L, so it scores the data blurred by N(0, σ_L²I),
///   which is what a sampler that stops at σ_L draws from. It tends to log p only as σ_L → 0,
///   and for data on a manifold (images) it has no limit.
/// * **Deterministic.** With an exact divergence the same inputs give the same numbers; the
///   errors are those of the ODE solver and of the prior.
/// * **Discretisation.** Heun's method is second order: the error falls fourfold each time the
///   levels double (the tests measure it).
/// * **Prior mismatch.** With N(0, σ₁²I) in place of q_{σ₁} the estimate is off by
///   log N(z; 0, σ₁²I) − log q_{σ₁}(z) at the latent code z, small only when σ₁ dwarfs the data.
/// * **Units.** Nats per point; [`FlowLikelihood::bits_per_dim`] turns them into bits per
///   dimension, −log q /(D ln 2). (For images scaled to [0, 1] from 256 levels, the usual figure
///   adds 8 bits for the bin width and needs dequantised data; not done here.)
///
/// Runs under [`no_grad`]: only a divergence adapter records a graph, inside its own call. With
/// a single level there is no step, and the estimate is the prior's.
pub fn flow_log_likelihood(
    mut score_div: impl FnMut(&Tensor, usize) -> (Tensor, Tensor),
    x: &Tensor,
    sigmas: &GeometricSigmas,
    prior_log_prob: impl FnOnce(&Tensor) -> Tensor,
) -> FlowLikelihood {
    no_grad(|| {
        let n = x.shape()[0];
        let mut x = x.detach();
        let mut integral = Tensor::full_on(&[n], 0.0, &x.device()); //   ℓ = ∫ σ ∇·s dσ, from 0
        // The slopes of the augmented state at level i: (dx/dσ, dℓ/dσ) = (−σ s, σ ∇·s).
        let mut slopes = |x: &Tensor, i: usize| {
            let (s, div) = score_div(x, i);
            let sigma = sigmas.get(i);
            (s.mul_scalar(-sigma), div.reshape(&[n]).mul_scalar(sigma))
        };
        for i in (1..sigmas.len()).rev() {
            let h = sigmas.get(i - 1) - sigmas.get(i); //                 up from σᵢ to σᵢ₋₁: h > 0
            let (k1, d1) = slopes(&x, i);
            let euler = x.add(&k1.mul_scalar(h)); //                      x + h·k₁
            let (k2, d2) = slopes(&euler, i - 1);
            x = x.add(&k1.add(&k2).mul_scalar(h / 2.0)); //               x + h·(k₁ + k₂)/2
            integral = integral.add(&d1.add(&d2).mul_scalar(h / 2.0)); // ℓ + h·(σ∇·s₁ + σ∇·s₂)/2
        }
        let prior = prior_log_prob(&x).reshape(&[n]); //                  log q_{σ₁}(x(σ₁))
        FlowLikelihood {
            log_likelihood: prior.sub(&integral), //                      log q_{σ₁} − ∫ σ ∇·s dσ
            latent: x,
            prior_log_prob: prior,
            divergence_integral: integral,
        }
    })
}

/// What [`flow_log_likelihood`] returns, per point: the estimate of log q_{σ_L}(x) in nats and
/// its two parts, and the point's latent code.
#[derive(Clone, Debug)]
pub struct FlowLikelihood {
    /// log q_{σ_L}(x) ≈ log q_{σ₁}(x(σ₁)) − ∫ σ ∇·s dσ, shape `(N,)`.
    pub log_likelihood: Tensor,
    /// x(σ₁), where the flow takes each point at the top level (the shape of `x`):
    /// [`probability_flow`] from here comes back to `x`, up to its discretisation.
    pub latent: Tensor,
    /// The prior's log-density at the latent codes, log q_{σ₁}(x(σ₁)), shape `(N,)`.
    pub prior_log_prob: Tensor,
    /// ∫_{σ_L}^{σ₁} σ ∇·s(x(σ), σ) dσ along each path, shape `(N,)`: what the log-density loses
    /// on the way up. Mostly negative: where log q is concave (∇·s < 0) the flow spreads the
    /// points out as σ grows, and the density falls.
    pub divergence_integral: Tensor,
}

impl FlowLikelihood {
    /// The estimates in bits per dimension, −log q_{σ_L}(x) / (D ln 2), D the size of a point.
    pub fn bits_per_dim(&self) -> Vec<f64> {
        let n = self.latent.shape()[0].max(1);
        let d = (self.latent.numel() / n) as f64;
        self.log_likelihood
            .to_vec()
            .iter()
            .map(|&l| -f64::from(l) / (d * std::f64::consts::LN_2))
            .collect()
    }
}

/// log N(z; 0, σ²I) for each row of `z` (any trailing shape, D entries per row), shape `(N,)`:
/// the prior of the VE samplers, to pass to [`flow_log_likelihood`] with σ = σ₁.
pub fn gaussian_log_prob(z: &Tensor, sigma: f32) -> Tensor {
    let z = flat(z);
    let d = z.shape()[1] as f64;
    let norm = -0.5 * d * (2.0 * std::f64::consts::PI * f64::from(sigma).powi(2)).ln();
    z.square()
        .sum(&[1], false)
        .mul_scalar(-0.5 / (sigma * sigma)) //    −‖z‖²/2σ²
        .add_scalar(norm as f32) //               − (D/2) ln 2πσ²
}
// ANCHOR_END: flow_log_likelihood

// ANCHOR: exact_divergence
/// A score closure turned into one that also returns its divergence ∇ₓ·s(x, σᵢ), exactly, by
/// automatic differentiation: what [`flow_log_likelihood`] needs from a network.
///
/// The divergence is the trace of the Jacobian ∂s/∂x. Reverse mode gives one row of it per pass:
/// the gradient of Σₙ s_d(xₙ) has, in row n, ∇ₓ s_d(xₙ), whose d-th entry is ∂s_d/∂x_d at xₙ
/// (rows do not interact in a network applied row by row; batch statistics would break this).
/// So D passes, as for exact score matching ([`esm_loss`](crate::score::esm_loss)): fine for the
/// toy data, hopeless for images, where [`hutchinson_divergence`] replaces the trace by an
/// unbiased estimate from one pass. Records a graph inside each call (whatever the caller's grad
/// mode) and returns both tensors detached.
pub fn exact_divergence(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
) -> impl FnMut(&Tensor, usize) -> (Tensor, Tensor) {
    move |x, i| {
        with_grad_mode(true, || {
            let shape = x.shape().to_vec();
            let xf = flat(&x.detach()).requires_grad_(); //          (N, D), a leaf we differentiate in
            let s = flat(&score(&xf.reshape(&shape), i)); //         s(x, σᵢ), (N, D)
            let (n, d) = (s.shape()[0], s.shape()[1]);
            let mut div = Tensor::full_on(&[n, 1], 0.0, &x.device());
            for j in 0..d {
                let s_j = s.narrow(1, j, 1).sum_all(); //             Σₙ s_j(xₙ)
                let row = &grad(&[&s_j], &[&xf], false)[0]; //       ∇ₓ s_j, (N, D)
                div = div.add(&row.narrow(1, j, 1)); //               + ∂s_j/∂x_j
            }
            (s.detach().reshape(&shape), div.reshape(&[n]).detach())
        })
    }
}
// ANCHOR_END: exact_divergence

// ANCHOR: hutchinson_divergence
/// The distribution of the probe vectors of [`hutchinson_divergence`]: both have E\[v\] = 0 and
/// E\[v vᵀ\] = I.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Entries ±1 with probability ½ each: the smallest variance of any probe with independent
    /// entries (Hutchinson, 1990), Var\[vᵀJv\] = ½ Σ_{j≠k} (J_jk + J_kj)².
    Rademacher,
    /// Entries N(0, 1): Var\[vᵀJv\] = ½ Σ_{j,k} (J_jk + J_kj)², the diagonal included.
    Gaussian,
}

/// A score closure turned into one that also returns Hutchinson's estimate of its divergence,
/// vᵀ (∂s/∂x) v with a random probe v (E\[v vᵀ\] = I, so E\[vᵀ J v\] = tr J): one backward pass
/// whatever the dimension, the vector-Jacobian product vᵀJ, dotted with v. This is how Song et
/// al. (App. D.2, after FFJORD) compute likelihoods of images.
///
/// A fresh probe is drawn from `rng` at every call, where the points live. Song et al. fix one
/// probe for a whole solve, since their adaptive solver wants a smooth right-hand side; on these
/// fixed levels fresh probes are as unbiased, and their errors average out over the steps instead
/// of adding up. The estimate is unbiased for the exact-divergence likelihood of the same levels
/// (the path x(σ) does not depend on the probes), not for its exponential.
pub fn hutchinson_divergence<R: Rng>(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    probe: Probe,
    rng: &mut R,
) -> impl FnMut(&Tensor, usize) -> (Tensor, Tensor) {
    move |x, i| {
        with_grad_mode(true, || {
            let shape = x.shape().to_vec();
            let xf = flat(&x.detach()).requires_grad_(); //          (N, D)
            let s = flat(&score(&xf.reshape(&shape), i)); //         s(x, σᵢ), (N, D)
            let z = Tensor::randn_on(s.shape(), &s.device(), rng);
            let v = match probe {
                Probe::Rademacher => z.sign(), //                     ±1
                Probe::Gaussian => z,
            };
            let v = std::slice::from_ref(&v); //                      the cotangent of s
            let vj = &grad_with(&[&s], v, &[&xf], false)[0]; //         vᵀ ∂s/∂x, (N, D)
            let div = vj.mul(&v[0]).sum(&[1], false); //                vᵀ (∂s/∂x) v, (N,)
            (s.detach().reshape(&shape), div.detach())
        })
    }
}
// ANCHOR_END: hutchinson_divergence

// ANCHOR: vp_schedule
/// The noise schedule of a variance-preserving diffusion (DDPM): β₀, …, β_{T−1}, and the step
/// x_t = √(1 − β_t) x_{t−1} + √β_t z that shrinks the data while it adds noise, so that
/// x_t = √ᾱ_t x + √(1 − ᾱ_t) z with ᾱ_t = Π_{s ≤ t} (1 − β_s).
#[derive(Clone, Debug, PartialEq)]
pub struct VpSchedule {
    betas: Vec<f64>,
    alpha_bars: Vec<f64>,
}

impl VpSchedule {
    /// `n` values of β evenly spaced from `beta_first` to `beta_last` (both included). Panics
    /// unless 0 < β < 1 at both ends and n ≥ 2.
    pub fn linear(beta_first: f64, beta_last: f64, n: usize) -> Self {
        let ok = |b: f64| b > 0.0 && b < 1.0;
        assert!(
            ok(beta_first) && ok(beta_last) && n >= 2,
            "VpSchedule: need 0 < β < 1 and n ≥ 2, got ({beta_first}, {beta_last}, {n})"
        );
        let step = (beta_last - beta_first) / (n - 1) as f64;
        let betas: Vec<f64> = (0..n).map(|i| beta_first + step * i as f64).collect();
        let alpha_bars = betas
            .iter()
            .scan(1.0, |prod, b| {
                *prod *= 1.0 - b;
                Some(*prod)
            })
            .collect();
        VpSchedule { betas, alpha_bars }
    }

    /// Ho et al.'s schedule: T = 1000 values of β from 10⁻⁴ to 0.02. ᾱ at the end is 4·10⁻⁵,
    /// so x_T is N(0, I) to within a scale of 0.0064 on the data.
    pub fn ddpm() -> Self {
        Self::linear(1e-4, 0.02, 1000)
    }

    /// The number of steps T.
    pub fn len(&self) -> usize {
        self.betas.len()
    }

    /// Always false: a schedule has at least two steps.
    pub fn is_empty(&self) -> bool {
        self.betas.is_empty()
    }

    /// β_t for a 0-based step t.
    pub fn beta(&self, t: usize) -> f64 {
        self.betas[t]
    }

    /// ᾱ_t = Π_{s ≤ t} (1 − β_s): x_t = √ᾱ_t x + √(1 − ᾱ_t) z.
    pub fn alpha_bar(&self, t: usize) -> f64 {
        self.alpha_bars[t]
    }

    /// The VE level of step t: x_t = √ᾱ_t (x + σ_t z) with σ_t = √((1 − ᾱ_t)/ᾱ_t), so x_t/√ᾱ_t
    /// is the data perturbed as NCSN perturbs it. From 0.01 at t = 0 to 158 at t = 999 for
    /// [`Self::ddpm`].
    pub fn ve_sigma(&self, t: usize) -> f64 {
        let ab = self.alpha_bars[t];
        ((1.0 - ab) / ab).sqrt()
    }
}
// ANCHOR_END: vp_schedule

// ANCHOR: vp_from_ve
/// The score DDPM's sampler needs, from a VE score network: `score_ve(y, σ)` must return
/// s(y, σ) = ∇ log q_σ(y), the score of the data perturbed by N(0, σ²I). Since
/// x_t = √ᾱ_t · y with y = x + σ_t z ([`VpSchedule::ve_sigma`]), the law of x_t is that of y
/// scaled by √ᾱ_t, and
///
/// ∇ log p_t(x_t) = s(x_t/√ᾱ_t, σ_t)/√ᾱ_t.
///
/// So one network trained on NCSN's perturbations serves both diffusions (Song et al., 2021, §3.4
/// make the same point with the SDEs' marginals).
pub fn vp_from_ve<'a>(
    mut score_ve: impl FnMut(&Tensor, f32) -> Tensor + 'a,
    schedule: &'a VpSchedule,
) -> impl FnMut(&Tensor, usize) -> Tensor + 'a {
    move |x, t| {
        let inv = (1.0 / schedule.alpha_bar(t).sqrt()) as f32; //        1/√ᾱ_t
        let sigma = schedule.ve_sigma(t) as f32; //                        σ_t
        score_ve(&x.mul_scalar(inv), sigma).mul_scalar(inv)
    }
}
// ANCHOR_END: vp_from_ve

// ANCHOR: ddpm_ancestral
/// DDPM's ancestral sampler (Ho et al., 2020, Algorithm 2) from `x0` ~ N(0, I), with the score in
/// place of the noise predictor:
///
/// x ← (x + β_t s(x, t)) / √(1 − β_t) + √β_t z,   t = T − 1, …, 0, no noise at t = 0.
///
/// `score(x, t)` must return the score of the law of x_t = √ᾱ_t x + √(1 − ᾱ_t) z. A DDPM
/// network ε_θ predicts the noise z instead; the two are one function, ε_θ(x, t) =
/// −√(1 − ᾱ_t) s(x, t) (Tweedie's formula for the noise), and with it the update above is Ho et
/// al.'s (x − β_t/√(1 − ᾱ_t) ε_θ)/√(1 − β_t) + σ_t z with their choice σ_t² = β_t.
pub fn ddpm_ancestral(
    mut score: impl FnMut(&Tensor, usize) -> Tensor,
    x0: &Tensor,
    schedule: &VpSchedule,
    record_every: usize,
    rng: &mut impl Rng,
) -> Samples {
    let n = schedule.len();
    backwards(x0, n, record_every, rng, |x, step, _| {
        let t = n - 1 - step; //                                 t = T − 1, …, 0
        let beta = schedule.beta(t);
        let mean = x
            .add(&score(x, t).mul_scalar(beta as f32))
            .mul_scalar((1.0 / (1.0 - beta).sqrt()) as f32); //  (x + βₜ·s(x, t))/√(1 − βₜ)
        (mean, beta.sqrt() as f32) //                             then √βₜ·z
    })
}
// ANCHOR_END: ddpm_ancestral

// ANCHOR: backwards
/// The loop the stochastic samplers share: `n` steps from `x0`, each `step(x, k, rng)` returning
/// the mean of the next point and the standard deviation of the noise added to it, except in the
/// last step, which returns its mean: the chain ends on an estimate of the data, not on one more
/// draw of noise. The noise is drawn where `x` lives (on a Vulkan device, there), after whatever
/// `step` drew from `rng` itself. Records the batch at step 0 and after every `record_every`
/// steps, as the Langevin samplers do.
fn backwards<R: Rng>(
    x0: &Tensor,
    n: usize,
    record_every: usize,
    rng: &mut R,
    mut step: impl FnMut(&Tensor, usize, &mut R) -> (Tensor, f32),
) -> Samples {
    no_grad(|| {
        let mut x = x0.detach();
        let mut trajectory = Vec::new();
        for k in 0..n {
            record(&mut trajectory, record_every, k, &x);
            let (mean, std) = step(&x, k, rng);
            x = if k + 1 < n {
                let z = Tensor::randn_on(mean.shape(), &mean.device(), rng);
                mean.add(&z.mul_scalar(std))
            } else {
                mean
            };
        }
        record(&mut trajectory, record_every, n, &x);
        Samples { x, trajectory }
    })
}
// ANCHOR_END: backwards

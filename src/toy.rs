//! Toy distributions with closed-form densities and scores.
//!
//! Everything a two-dimensional experiment in the paper needs, on plain [`ndarray`] batches: points
//! come in as an `(N, D)` array of `f32` (one point per row) and log-densities come back as an
//! `Array1<f32>` of length `N`, scores ∇ₓ log p(x) as an `(N, D)` `Array2<f32>`. Parameters are `f64`
//! and all arithmetic is done in `f64`, with log-sum-exp wherever densities are summed, so a score far
//! from every mode (where each Gaussian term underflows even in `f64`) is still accurate and never NaN.
//!
//! | type | what it is | log p | score | perturbed q_σ |
//! |------|------------|-------|-------|---------------|
//! | [`GaussianMixture`] | Σₖ πₖ N(μₖ, σₖ²I), any D | yes | yes | [`GaussianMixture::perturbed`] |
//! | [`Ring`] | circle of radius r convolved with N(0, s²I) | yes | yes | [`Ring::perturbed`] |
//! | [`UniformSquare`] | uniform on a square | yes | no (zero inside, undefined on the edge) | — |
//! | [`Embedded`] | any toy mapped into a d-dimensional subspace of ℝᴰ | no (no density) | no | [`perturb`] |
//!
//! [`ToyDistribution`] is the common sampling interface; [`ClosedFormScore`] adds log p and its score,
//! and [`ClosedFormLaplacian`] the divergence of the score, Δ log p (the mixture and the ring have it).
//! Sampling takes any [`rand::Rng`]; for reproducible draws use
//! `rand_chacha::ChaCha8Rng::seed_from_u64(seed)`: the same seed gives the same bits.
//!
//! Shapes follow the crate's policy: a batch with the wrong number of columns is a programmer error and
//! panics with both shapes.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};
use ndarray_rand::RandomExt;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// ln(2π).
const LN_2PI: f64 = 1.837_877_066_409_345_5;

/// A distribution that can be sampled: the common interface of every toy here.
pub trait ToyDistribution {
    /// The dimension D of a sample.
    fn dim(&self) -> usize;
    /// `n` independent draws, as an `(n, D)` array. Deterministic given the state of `rng`.
    fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f32>;
}

/// A distribution with a closed-form log-density and score s(x) = ∇ₓ log p(x).
///
/// These are the ground truth against which learned score networks and samplers are checked.
pub trait ClosedFormScore: ToyDistribution {
    /// log p(x) for each row of `x` (shape `(N, D)`), as a length-`N` array.
    fn log_prob(&self, x: ArrayView2<f32>) -> Array1<f32>;
    /// ∇ₓ log p(x) for each row of `x` (shape `(N, D)`), as an `(N, D)` array.
    fn score(&self, x: ArrayView2<f32>) -> Array2<f32>;
}

/// A distribution whose score has a closed-form divergence: the Laplacian of its log-density,
/// Δ log p(x) = ∇ₓ · ∇ₓ log p(x) = tr ∇ₓ² log p(x).
///
/// The probability-flow ODE turns it into log-likelihoods
/// ([`flow_log_likelihood`](crate::sample::flow_log_likelihood)): it is the exact divergence
/// against which the autograd and Hutchinson estimates of a network's divergence are checked.
pub trait ClosedFormLaplacian: ClosedFormScore {
    /// Δ log p(x) for each row of `x` (shape `(N, D)`), as a length-`N` array.
    fn laplacian_log_prob(&self, x: ArrayView2<f32>) -> Array1<f32>;

    /// The score and Δ log p together, as [`score`](ClosedFormScore::score) and
    /// [`laplacian_log_prob`](Self::laplacian_log_prob) give them (a type may share the work).
    fn score_and_laplacian(&self, x: ArrayView2<f32>) -> (Array2<f32>, Array1<f32>) {
        (self.score(x), self.laplacian_log_prob(x))
    }
}

fn check_cols(what: &str, x: &ArrayView2<f32>, d: usize) {
    assert!(
        x.ncols() == d,
        "{what}: expected points of shape (N, {d}), got shape {:?}",
        x.shape()
    );
}

/// Applies `f` to each row of `x` (copied into an `f64` buffer), collecting one `f64` per row.
fn map_rows_scalar(x: ArrayView2<f32>, mut f: impl FnMut(&[f64]) -> f64) -> Array1<f32> {
    let mut buf = vec![0.0f64; x.ncols()];
    let mut out = Array1::<f32>::zeros(x.nrows());
    for (row, o) in x.outer_iter().zip(out.iter_mut()) {
        buf.iter_mut()
            .zip(row.iter())
            .for_each(|(b, &v)| *b = v as f64);
        *o = f(&buf) as f32;
    }
    out
}

/// Applies `f(row, out_row)` to each row of `x` in `f64`, collecting an `(N, D)` array.
fn map_rows_vector(x: ArrayView2<f32>, mut f: impl FnMut(&[f64], &mut [f64])) -> Array2<f32> {
    let d = x.ncols();
    let mut buf = vec![0.0f64; d];
    let mut res = vec![0.0f64; d];
    let mut out = Array2::<f32>::zeros(x.raw_dim());
    for (row, mut o) in x.outer_iter().zip(out.outer_iter_mut()) {
        buf.iter_mut()
            .zip(row.iter())
            .for_each(|(b, &v)| *b = v as f64);
        f(&buf, &mut res);
        o.iter_mut()
            .zip(res.iter())
            .for_each(|(o, &r)| *o = r as f32);
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// Gaussian mixture
// ---------------------------------------------------------------------------------------------------

/// A mixture of isotropic Gaussians in ℝᴰ:
///
/// $$ p(x) = \sum_{k=1}^{K} \pi_k  \mathcal N(x; \mu_k, \sigma_k^2 I). $$
///
/// The score is a responsibility-weighted average of the component scores,
///
/// $$ \nabla_x \log p(x) = \sum_k r_k(x) \frac{\mu_k - x}{\sigma_k^2}, \qquad
///    r_k(x) = \frac{\pi_k \mathcal N(x; \mu_k, \sigma_k^2 I)}{\sum_j \pi_j \mathcal N(x; \mu_j, \sigma_j^2 I)}, $$
///
/// with the responsibilities computed by log-sum-exp in `f64`.
#[derive(Clone, Debug, PartialEq)]
pub struct GaussianMixture {
    weights: Vec<f64>,
    log_weights: Vec<f64>,
    means: Array2<f64>,
    stds: Vec<f64>,
}

impl GaussianMixture {
    /// A mixture with mixing weights `weights` (K of them, positive; they are normalised to sum to
    /// one), component means `means` (shape `(K, D)`) and per-component standard deviations `stds`
    /// (K of them, positive).
    ///
    /// # Panics
    /// If the lengths disagree, K = 0, D = 0, or a weight or standard deviation is not positive and
    /// finite.
    pub fn new(weights: &[f64], means: Array2<f64>, stds: &[f64]) -> Self {
        let k = means.nrows();
        assert!(
            k > 0 && means.ncols() > 0,
            "GaussianMixture: empty means, shape {:?}",
            means.shape()
        );
        assert!(
            weights.len() == k && stds.len() == k,
            "GaussianMixture: {} weights and {} stds for means of shape {:?}",
            weights.len(),
            stds.len(),
            means.shape()
        );
        assert!(
            weights.iter().all(|w| w.is_finite() && *w > 0.0),
            "GaussianMixture: weights must be positive and finite, got {weights:?}"
        );
        assert!(
            stds.iter().all(|s| s.is_finite() && *s > 0.0),
            "GaussianMixture: stds must be positive and finite, got {stds:?}"
        );
        assert!(
            means.iter().all(|m| m.is_finite()),
            "GaussianMixture: means must be finite"
        );
        let total: f64 = weights.iter().sum();
        let weights: Vec<f64> = weights.iter().map(|w| w / total).collect();
        let log_weights = weights.iter().map(|w| w.ln()).collect();
        GaussianMixture {
            weights,
            log_weights,
            means,
            stds: stds.to_vec(),
        }
    }

    /// The paper's two-dimensional toy (Song & Ermon 2019, §3.2 and Fig. 2–3):
    ///
    /// $$ p = \tfrac15 \mathcal N((-5,-5), I) + \tfrac45 \mathcal N((5,5), I). $$
    pub fn paper() -> Self {
        let means = Array2::from_shape_vec((2, 2), vec![-5.0, -5.0, 5.0, 5.0]).unwrap();
        GaussianMixture::new(&[0.2, 0.8], means, &[1.0, 1.0])
    }

    /// Number of components K.
    pub fn n_components(&self) -> usize {
        self.weights.len()
    }

    /// The normalised mixing weights πₖ.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// The component means μₖ, shape `(K, D)`.
    pub fn means(&self) -> ArrayView2<'_, f64> {
        self.means.view()
    }

    /// The component standard deviations σₖ.
    pub fn stds(&self) -> &[f64] {
        &self.stds
    }

    /// The mean of the mixture, Σₖ πₖ μₖ.
    pub fn mean(&self) -> Array1<f64> {
        let w = ArrayView1::from(&self.weights[..]);
        w.dot(&self.means)
    }

    /// The covariance of the mixture,
    /// \\( \sum_k \pi_k (\sigma_k^2 I + \mu_k \mu_k^\top) - m m^\top \\) with m the mixture mean.
    pub fn covariance(&self) -> Array2<f64> {
        let d = self.dim();
        let m = self.mean();
        let mut c = Array2::<f64>::zeros((d, d));
        for (k, mu) in self.means.outer_iter().enumerate() {
            let w = self.weights[k];
            for i in 0..d {
                c[[i, i]] += w * self.stds[k] * self.stds[k];
                for j in 0..d {
                    c[[i, j]] += w * mu[i] * mu[j];
                }
            }
        }
        for i in 0..d {
            for j in 0..d {
                c[[i, j]] -= m[i] * m[j];
            }
        }
        c
    }

    // ANCHOR: mixture_score
    /// Writes log(πₖ N(x; μₖ, σₖ²I)) into `a` and returns their log-sum-exp, log p(x).
    fn log_joint(&self, x: &[f64], a: &mut [f64]) -> f64 {
        let d = x.len() as f64;
        for (k, mu) in self.means.outer_iter().enumerate() {
            let var = self.stds[k] * self.stds[k];
            let sq: f64 = x
                .iter()
                .zip(mu.iter())
                .map(|(xi, mi)| (xi - mi) * (xi - mi))
                .sum();
            a[k] = self.log_weights[k] - 0.5 * d * (LN_2PI + var.ln()) - 0.5 * sq / var;
        }
        log_sum_exp(a)
    }

    /// ∇ₓ log p(x) in `f64` for one point: Σₖ rₖ(x) (μₖ − x)/σₖ², with the responsibilities
    /// rₖ = exp(aₖ − logsumexp(a)) from the log-joint terms aₖ = log πₖ + log N(x; μₖ, σₖ²I).
    pub(crate) fn score_f64(&self, x: &[f64], a: &mut [f64], out: &mut [f64]) {
        let log_p = self.log_joint(x, a); // a[k] = log πₖN(x; μₖ, σₖ²I), log_p = logsumexp(a)
        out.fill(0.0);
        for (k, mu) in self.means.outer_iter().enumerate() {
            let r = (a[k] - log_p).exp(); // responsibility, in [0, 1] even when every N(x; ..) underflows
            let w = r / (self.stds[k] * self.stds[k]);
            for ((o, xi), mi) in out.iter_mut().zip(x).zip(mu.iter()) {
                *o += w * (mi - xi);
            }
        }
    }
    // ANCHOR_END: mixture_score

    // ANCHOR: mixture_laplacian
    /// Δ log p(x) in `f64` for one point. With gₖ = (μₖ − x)/σₖ² the gradient of the log-joint
    /// term aₖ, the score is s = Σₖ rₖ gₖ, and since ∇rₖ = rₖ (gₖ − s) its Jacobian is
    /// Σₖ rₖ (−I/σₖ²) + Σₖ rₖ gₖ (gₖ − s)ᵀ. Its trace, Σₖ rₖ (‖gₖ‖² − D/σₖ²) − ‖s‖², is written
    /// as the responsibility-weighted spread of the component scores about their mean,
    ///
    /// Δ log p = Σₖ rₖ (‖gₖ − s‖² − D/σₖ²),
    ///
    /// which has no cancellation: ‖gₖ‖² and ‖s‖² both grow like ‖x‖² far from the modes.
    pub(crate) fn laplacian_f64(&self, x: &[f64], a: &mut [f64], s: &mut [f64]) -> f64 {
        self.score_f64(x, a, s); //  s = Σₖ rₖ gₖ; a[k] = log πₖN(x; μₖ, σₖ²I)
        let log_p = log_sum_exp(a);
        let d = x.len() as f64;
        let mut lap = 0.0;
        for (k, mu) in self.means.outer_iter().enumerate() {
            let r = (a[k] - log_p).exp(); //                                   rₖ(x)
            let var = self.stds[k] * self.stds[k];
            let spread: f64 = (x.iter().zip(mu.iter()).zip(s.iter()))
                .map(|((xi, mi), si)| ((mi - xi) / var - si).powi(2))
                .sum(); //                                                      ‖gₖ − s‖²
            lap += r * (spread - d / var); //                                  rₖ (‖gₖ − s‖² − D/σₖ²)
        }
        lap
    }
    // ANCHOR_END: mixture_laplacian

    /// log p(x) in `f64` for one point.
    #[cfg(test)]
    pub(crate) fn log_prob_f64(&self, x: &[f64]) -> f64 {
        let mut a = vec![0.0; self.n_components()];
        self.log_joint(x, &mut a)
    }

    /// The responsibilities rₖ(x) = P(component k | x), shape `(N, K)`; each row sums to one.
    pub fn responsibilities(&self, x: ArrayView2<f32>) -> Array2<f32> {
        check_cols("GaussianMixture::responsibilities", &x, self.dim());
        let k = self.n_components();
        let mut a = vec![0.0; k];
        let mut out = Array2::<f32>::zeros((x.nrows(), k));
        let mut buf = vec![0.0; self.dim()];
        for (row, mut o) in x.outer_iter().zip(out.outer_iter_mut()) {
            buf.iter_mut()
                .zip(row.iter())
                .for_each(|(b, &v)| *b = v as f64);
            let lp = self.log_joint(&buf, &mut a);
            o.iter_mut()
                .zip(&a)
                .for_each(|(o, &ak)| *o = (ak - lp).exp() as f32);
        }
        out
    }

    // ANCHOR: perturbed
    /// The noise-perturbed distribution q_σ, the law of x̃ = x + σz with x ~ p and z ~ N(0, I).
    ///
    /// Convolving N(μₖ, σₖ²I) with N(0, σ²I) gives N(μₖ, (σₖ² + σ²)I), and convolution is linear,
    /// so q_σ is the same mixture with every component variance grown by σ²:
    ///
    /// $$ q_\sigma(\tilde x) = \sum_k \pi_k \mathcal N(\tilde x; \mu_k, (\sigma_k^2 + \sigma^2) I). $$
    pub fn perturbed(&self, sigma: f64) -> GaussianMixture {
        assert!(
            sigma.is_finite() && sigma >= 0.0,
            "perturbed: sigma must be ≥ 0, got {sigma}"
        );
        let stds: Vec<f64> = self
            .stds
            .iter()
            .map(|s| (s * s + sigma * sigma).sqrt())
            .collect();
        GaussianMixture::new(&self.weights, self.means.clone(), &stds)
    }
    // ANCHOR_END: perturbed

    /// The law of a·x + σz with x ~ p and z ~ N(0, I): the components N(a μₖ, (a² σₖ² + σ²) I)
    /// with the same weights. With a = 1 it is [`perturbed`](Self::perturbed); with a = √ᾱ_t and
    /// σ = √(1 − ᾱ_t) it is the marginal x_t of a variance-preserving diffusion
    /// ([`VpSchedule`](crate::sample::VpSchedule)). Panics unless a is finite and σ ≥ 0 is finite.
    pub fn diffused(&self, scale: f64, sigma: f64) -> GaussianMixture {
        assert!(
            scale.is_finite() && sigma.is_finite() && sigma >= 0.0,
            "diffused: need a finite scale and sigma ≥ 0, got ({scale}, {sigma})"
        );
        let stds: Vec<f64> = self
            .stds
            .iter()
            .map(|s| (scale * scale * s * s + sigma * sigma).sqrt())
            .collect();
        GaussianMixture::new(&self.weights, self.means.mapv(|m| scale * m), &stds)
    }

    // ANCHOR: posterior_mean
    /// The posterior mean E[x | x̃] for x̃ = x + σz, x ~ p, z ~ N(0, I), for each row of `x_tilde`.
    ///
    /// Given the component k, x and x̃ are jointly Gaussian and
    /// E[x | x̃, k] = μₖ + σₖ²/(σₖ² + σ²) (x̃ − μₖ). Averaging over k with the responsibilities of
    /// x̃ under q_σ (see [`perturbed`](Self::perturbed)):
    ///
    /// $$ \mathbb E[x \mid \tilde x] = \sum_k r^\sigma_k(\tilde x) \Big( \mu_k + \frac{\sigma_k^2}{\sigma_k^2 + \sigma^2} (\tilde x - \mu_k) \Big). $$
    ///
    /// By Tweedie's formula this equals x̃ + σ² ∇ log q_σ(x̃), which the tests check.
    pub fn posterior_mean(&self, x_tilde: ArrayView2<f32>, sigma: f64) -> Array2<f32> {
        check_cols("GaussianMixture::posterior_mean", &x_tilde, self.dim());
        let q = self.perturbed(sigma);
        let mut a = vec![0.0; self.n_components()];
        map_rows_vector(x_tilde, |xt, out| {
            let log_q = q.log_joint(xt, &mut a); // a[k] = log πₖ N(x̃; μₖ, (σₖ² + σ²)I)
            out.fill(0.0);
            for (k, mu) in self.means.outer_iter().enumerate() {
                let r = (a[k] - log_q).exp();
                let var = self.stds[k] * self.stds[k];
                let shrink = var / (var + sigma * sigma);
                for ((o, xi), mi) in out.iter_mut().zip(xt).zip(mu.iter()) {
                    *o += r * (mi + shrink * (xi - mi));
                }
            }
        })
    }
    // ANCHOR_END: posterior_mean
}

impl ToyDistribution for GaussianMixture {
    fn dim(&self) -> usize {
        self.means.ncols()
    }

    /// Draws, for each sample, one uniform to pick the component (inverse CDF of the weights) and
    /// then D standard normals.
    fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f32> {
        let d = self.dim();
        let mut out = Array2::<f32>::zeros((n, d));
        for mut row in out.outer_iter_mut() {
            let u: f64 = rng.random();
            let mut k = 0;
            let mut acc = self.weights[0];
            while u >= acc && k + 1 < self.weights.len() {
                k += 1;
                acc += self.weights[k];
            }
            let s = self.stds[k];
            for (o, m) in row.iter_mut().zip(self.means.row(k)) {
                let z: f64 = rng.sample(StandardNormal);
                *o = (m + s * z) as f32;
            }
        }
        out
    }
}

impl ClosedFormScore for GaussianMixture {
    /// log p(x) = logsumexpₖ [log πₖ − (D/2) log(2πσₖ²) − ‖x − μₖ‖²/(2σₖ²)].
    fn log_prob(&self, x: ArrayView2<f32>) -> Array1<f32> {
        check_cols("GaussianMixture::log_prob", &x, self.dim());
        let mut a = vec![0.0; self.n_components()];
        map_rows_scalar(x, |p| self.log_joint(p, &mut a))
    }

    /// ∇ₓ log p(x) = Σₖ rₖ(x) (μₖ − x)/σₖ².
    fn score(&self, x: ArrayView2<f32>) -> Array2<f32> {
        check_cols("GaussianMixture::score", &x, self.dim());
        let mut a = vec![0.0; self.n_components()];
        map_rows_vector(x, |p, out| self.score_f64(p, &mut a, out))
    }
}

impl ClosedFormLaplacian for GaussianMixture {
    /// Δ log p(x) = Σₖ rₖ(x) (‖gₖ − s‖² − D/σₖ²) with gₖ = (μₖ − x)/σₖ² and s the score.
    fn laplacian_log_prob(&self, x: ArrayView2<f32>) -> Array1<f32> {
        check_cols("GaussianMixture::laplacian_log_prob", &x, self.dim());
        let mut a = vec![0.0; self.n_components()];
        let mut s = vec![0.0; self.dim()];
        map_rows_scalar(x, |p| self.laplacian_f64(p, &mut a, &mut s))
    }

    /// One pass: the Laplacian's computation leaves the score behind.
    fn score_and_laplacian(&self, x: ArrayView2<f32>) -> (Array2<f32>, Array1<f32>) {
        check_cols("GaussianMixture::score_and_laplacian", &x, self.dim());
        let mut a = vec![0.0; self.n_components()];
        let mut s = vec![0.0; self.dim()];
        let mut score = Array2::<f32>::zeros(x.raw_dim());
        let lap = Array1::from_iter(x.outer_iter().zip(score.outer_iter_mut()).map(
            |(row, mut out)| {
                let p: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
                let lap = self.laplacian_f64(&p, &mut a, &mut s);
                out.iter_mut().zip(&s).for_each(|(o, &v)| *o = v as f32);
                lap as f32
            },
        ));
        (score, lap)
    }
}

// ANCHOR: log_sum_exp
/// log Σᵢ exp(aᵢ), computed as m + log Σᵢ exp(aᵢ − m) with m = maxᵢ aᵢ so that the largest term is
/// exp(0) = 1: nothing overflows, and the sum is at least 1 so its log is finite. −∞ for an empty
/// slice or one of −∞ only.
pub fn log_sum_exp(a: &[f64]) -> f64 {
    let m = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + a.iter().map(|ai| (ai - m).exp()).sum::<f64>().ln()
}
// ANCHOR_END: log_sum_exp

// ---------------------------------------------------------------------------------------------------
// Ring
// ---------------------------------------------------------------------------------------------------

/// A noisy ring in ℝ²: a point uniform on the circle of radius r plus isotropic Gaussian noise,
/// x = r (cos θ, sin θ) + s z with θ ~ U[0, 2π) and z ~ N(0, I).
///
/// The noise is mostly radial (a tangential displacement only slides the point along the ring), and
/// the density has a closed form. Averaging N(x; r u(θ), s²I) over θ and using
/// \\( \frac{1}{2\pi}\int_0^{2\pi} e^{z\cos\theta} d\theta = I_0(z) \\) (modified Bessel function):
///
/// $$ p(x) = \frac{1}{2\pi s^2} \exp\Big(-\frac{\lVert x \rVert^2 + r^2}{2 s^2}\Big) I_0\Big(\frac{r\lVert x \rVert}{s^2}\Big). $$
///
/// With \\( I_0' = I_1 \\) its score is
///
/// $$ \nabla_x \log p(x) = -\frac{x}{s^2} + \frac{r}{s^2} \frac{I_1(z)}{I_0(z)} \frac{x}{\lVert x \rVert},
///    \qquad z = \frac{r \lVert x \rVert}{s^2}: $$
///
/// a pull of strength ≈ (r − ‖x‖)/s² towards the circle (I₁/I₀ → 1 for large z). It is smooth
/// everywhere, also at the origin, where I₁(z)/z → ½ and the score vanishes. The Bessel functions are
/// evaluated exponentially scaled (e^{−z}I₀, e^{−z}I₁) so nothing overflows.
///
/// Because the ring is already "circle ∗ Gaussian", its perturbation q_σ is the same ring with
/// s² + σ² (see [`Ring::perturbed`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ring {
    radius: f64,
    std: f64,
}

impl Ring {
    /// A ring of radius `radius` ≥ 0 and noise standard deviation `std` > 0.
    ///
    /// # Panics
    /// If `radius` is negative or `std` is not positive (or either is not finite).
    pub fn new(radius: f64, std: f64) -> Self {
        assert!(
            radius.is_finite() && radius >= 0.0,
            "Ring: radius must be ≥ 0, got {radius}"
        );
        assert!(
            std.is_finite() && std > 0.0,
            "Ring: std must be > 0, got {std}"
        );
        Ring { radius, std }
    }

    /// The radius r.
    pub fn radius(&self) -> f64 {
        self.radius
    }

    /// The noise standard deviation s.
    pub fn std(&self) -> f64 {
        self.std
    }

    /// The covariance (r²/2 + s²) I (the mean is zero).
    pub fn covariance(&self) -> Array2<f64> {
        Array2::eye(2) * (0.5 * self.radius * self.radius + self.std * self.std)
    }

    /// The law of x + σz: the same ring with noise standard deviation √(s² + σ²).
    pub fn perturbed(&self, sigma: f64) -> Ring {
        assert!(
            sigma.is_finite() && sigma >= 0.0,
            "perturbed: sigma must be ≥ 0, got {sigma}"
        );
        Ring::new(self.radius, (self.std * self.std + sigma * sigma).sqrt())
    }

    pub(crate) fn log_prob_f64(&self, x: &[f64]) -> f64 {
        let (r, s2) = (self.radius, self.std * self.std);
        let rho = x[0].hypot(x[1]);
        let (i0e, _) = bessel_i01e(r * rho / s2);
        // exp(−(ρ² + r²)/2s²) I₀(rρ/s²) = exp(−(ρ − r)²/2s²) · e^{−z} I₀(z)
        -(LN_2PI + s2.ln()) - (rho - r) * (rho - r) / (2.0 * s2) + i0e.ln()
    }

    // ANCHOR: ring_score
    pub(crate) fn score_f64(&self, x: &[f64], out: &mut [f64]) {
        let (r, s2) = (self.radius, self.std * self.std);
        let rho = x[0].hypot(x[1]);
        let z = r * rho / s2;
        // (r/s²) (I₁/I₀)(z) / ρ = (r/s²)² (I₁/I₀)(z) / z, and (I₁/I₀)(z)/z → 1/2 as z → 0.
        let ratio_over_z = if z < 1e-6 {
            0.5 - z * z / 16.0
        } else {
            let (i0e, i1e) = bessel_i01e(z);
            i1e / i0e / z
        };
        let c = -1.0 / s2 + (r / s2) * (r / s2) * ratio_over_z;
        out[0] = c * x[0];
        out[1] = c * x[1];
    }
    // ANCHOR_END: ring_score

    /// Δ log p(x) in `f64` for one point. log p depends on ρ = ‖x‖ alone, f(ρ) =
    /// −ρ²/2s² + log I₀(z) + const with z = cρ and c = r/s², and in the plane Δf = f'' + f'/ρ.
    /// With R = I₁/I₀, f' = −ρ/s² + cR(z) and, since R' = 1 − R/z − R²,
    /// f'' = −1/s² + c²(1 − R/z − R²), while f'/ρ = −1/s² + c²R/z: the R/z terms cancel and
    ///
    /// Δ log p = −2/s² + (r/s²)² (1 − R(z)²),
    ///
    /// smooth at the origin (R(0) = 0).
    pub(crate) fn laplacian_f64(&self, x: &[f64]) -> f64 {
        let (r, s2) = (self.radius, self.std * self.std);
        let (i0e, i1e) = bessel_i01e(r * x[0].hypot(x[1]) / s2);
        let ratio = i1e / i0e; //                               R(z) = I₁(z)/I₀(z)
        -2.0 / s2 + (r / s2) * (r / s2) * (1.0 - ratio * ratio)
    }
}

impl ToyDistribution for Ring {
    fn dim(&self) -> usize {
        2
    }

    /// Draws, for each sample, one uniform angle and then two standard normals.
    fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((n, 2));
        for mut row in out.outer_iter_mut() {
            let theta = rng.random::<f64>() * std::f64::consts::TAU;
            let z0: f64 = rng.sample(StandardNormal);
            let z1: f64 = rng.sample(StandardNormal);
            row[0] = (self.radius * theta.cos() + self.std * z0) as f32;
            row[1] = (self.radius * theta.sin() + self.std * z1) as f32;
        }
        out
    }
}

impl ClosedFormScore for Ring {
    /// log p(x) = −log(2πs²) − (‖x‖ − r)²/(2s²) + log(e^{−z} I₀(z)), z = r‖x‖/s².
    fn log_prob(&self, x: ArrayView2<f32>) -> Array1<f32> {
        check_cols("Ring::log_prob", &x, 2);
        map_rows_scalar(x, |p| self.log_prob_f64(p))
    }

    /// ∇ₓ log p(x) = x (−1/s² + (r/s²)² (I₁(z)/I₀(z))/z), z = r‖x‖/s².
    fn score(&self, x: ArrayView2<f32>) -> Array2<f32> {
        check_cols("Ring::score", &x, 2);
        map_rows_vector(x, |p, out| self.score_f64(p, out))
    }
}

impl ClosedFormLaplacian for Ring {
    /// Δ log p(x) = −2/s² + (r/s²)² (1 − (I₁(z)/I₀(z))²), z = r‖x‖/s².
    fn laplacian_log_prob(&self, x: ArrayView2<f32>) -> Array1<f32> {
        check_cols("Ring::laplacian_log_prob", &x, 2);
        map_rows_scalar(x, |p| self.laplacian_f64(p))
    }
}

/// Exponentially scaled modified Bessel functions of the first kind, (e^{−z} I₀(z), e^{−z} I₁(z)),
/// for z ≥ 0, to about 1e-15 relative accuracy.
///
/// Below z = 30 the power series I_ν(z) = Σₖ (z/2)^{2k+ν} / (k! (k+ν)!) (all terms positive, so no
/// cancellation; I₀(30) ≈ 8e11 is far from overflow). From z = 30 the asymptotic expansion
/// e^{−z} I_ν(z) ≈ (2πz)^{−1/2} Σₖ (−1)ᵏ aₖ(ν)/zᵏ with aₖ(ν) = Πⱼ₌₁ᵏ (4ν² − (2j−1)²) / (k! 8ᵏ),
/// whose terms shrink until k ≈ 2z, so stopping at 1e-17 is reached long before it diverges.
pub(crate) fn bessel_i01e(z: f64) -> (f64, f64) {
    debug_assert!(z >= 0.0);
    if z < 30.0 {
        let q = 0.25 * z * z;
        let (mut t0, mut t1, mut s0, mut s1) = (1.0f64, 1.0f64, 1.0f64, 1.0f64);
        for k in 1..500 {
            let k = k as f64;
            t0 *= q / (k * k);
            t1 *= q / (k * (k + 1.0));
            s0 += t0;
            s1 += t1;
            if t0 <= 1e-17 * s0 && t1 <= 1e-17 * s1 {
                break;
            }
        }
        let e = (-z).exp();
        (s0 * e, 0.5 * z * s1 * e)
    } else {
        let asymptotic = |nu2x4: f64| {
            let (mut term, mut sum) = (1.0f64, 1.0f64);
            for k in 1..200 {
                let odd = (2 * k - 1) as f64;
                term *= -(nu2x4 - odd * odd) / (8.0 * k as f64 * z);
                sum += term;
                if term.abs() <= 1e-17 * sum.abs() {
                    break;
                }
            }
            sum / (std::f64::consts::TAU * z).sqrt()
        };
        (asymptotic(0.0), asymptotic(4.0))
    }
}

// ---------------------------------------------------------------------------------------------------
// Uniform square
// ---------------------------------------------------------------------------------------------------

/// The uniform distribution on the square [lo, hi]², a sampling-only and negative example.
///
/// Its density is p(x) = 1/(hi − lo)² inside the square and 0 outside. The score ∇ₓ log p(x) is zero
/// inside (log p is constant there), undefined outside (log p = −∞) and undefined on the boundary
/// (log p jumps). A score model can learn nothing about *where* the data is from the interior, and
/// Langevin dynamics driven by the true score would be a pure random walk: this is the situation that
/// perturbing the data with noise fixes, since the perturbed density is smooth and positive
/// everywhere. No score method is offered.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformSquare {
    lo: f64,
    hi: f64,
}

impl UniformSquare {
    /// The uniform distribution on [lo, hi]².
    ///
    /// # Panics
    /// If `lo < hi` does not hold or either is not finite.
    pub fn new(lo: f64, hi: f64) -> Self {
        assert!(
            lo.is_finite() && hi.is_finite() && lo < hi,
            "UniformSquare: need lo < hi, got [{lo}, {hi}]"
        );
        UniformSquare { lo, hi }
    }

    /// log p(x): −2 log(hi − lo) on the closed square, −∞ outside.
    pub fn log_prob(&self, x: ArrayView2<f32>) -> Array1<f32> {
        check_cols("UniformSquare::log_prob", &x, 2);
        let inside_lp = -2.0 * (self.hi - self.lo).ln();
        map_rows_scalar(x, |p| {
            if p.iter().all(|&v| v >= self.lo && v <= self.hi) {
                inside_lp
            } else {
                f64::NEG_INFINITY
            }
        })
    }
}

impl ToyDistribution for UniformSquare {
    fn dim(&self) -> usize {
        2
    }

    /// Two uniforms per sample.
    fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f32> {
        let w = self.hi - self.lo;
        Array2::from_shape_simple_fn((n, 2), || (self.lo + w * rng.random::<f64>()) as f32)
    }
}

// ---------------------------------------------------------------------------------------------------
// Data on a linear manifold
// ---------------------------------------------------------------------------------------------------

/// A toy distribution in ℝᵈ carried into a d-dimensional linear subspace of ℝᴰ (D ≥ d) by a fixed
/// orthonormal map: x = B z with z drawn from the latent toy and B a D × d matrix with orthonormal
/// columns (stored as its d × D transpose, `basis`, so a batch maps as x = z · basis).
///
/// This is the manifold-hypothesis example of the paper's Fig. 1: the data has no density in ℝᴰ, so
/// the score is undefined off the subspace and score matching has nothing to estimate there. Adding
/// small Gaussian noise with [`perturb`] gives the data full support again.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedded<P> {
    latent: P,
    basis: Array2<f64>,
}

impl<P: ToyDistribution> Embedded<P> {
    /// Embeds `latent` (dimension d) into ℝ^`ambient_dim` with a random orthonormal basis drawn from
    /// `seed`: a d × D matrix of standard normals (ChaCha8, `seed`), orthonormalised row by row with
    /// modified Gram–Schmidt in `f64`.
    ///
    /// # Panics
    /// If `ambient_dim` < d.
    pub fn new(latent: P, ambient_dim: usize, seed: u64) -> Self {
        let d = latent.dim();
        assert!(
            ambient_dim >= d,
            "Embedded: ambient dimension {ambient_dim} < latent dimension {d}"
        );
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut basis = Array2::<f64>::random_using((d, ambient_dim), StandardNormal, &mut rng);
        for i in 0..d {
            for j in 0..i {
                let (done, mut rest) = basis.view_mut().split_at(Axis(0), i);
                let mut row = rest.row_mut(0);
                let proj = row.dot(&done.row(j));
                row.scaled_add(-proj, &done.row(j));
            }
            let mut row = basis.row_mut(i);
            let norm = row.dot(&row).sqrt();
            row /= norm;
        }
        Embedded { latent, basis }
    }

    /// The latent distribution.
    pub fn latent(&self) -> &P {
        &self.latent
    }

    /// The orthonormal rows spanning the subspace, shape `(d, D)`.
    pub fn basis(&self) -> ArrayView2<'_, f64> {
        self.basis.view()
    }

    /// Maps latent points `(N, d)` into the subspace: z · basis, shape `(N, D)`.
    pub fn embed(&self, z: ArrayView2<f32>) -> Array2<f32> {
        check_cols("Embedded::embed", &z, self.basis.nrows());
        z.mapv(|v| v as f64).dot(&self.basis).mapv(|v| v as f32)
    }

    /// Coordinates of points `(N, D)` in the subspace: x · basisᵀ, shape `(N, d)`. For points on the
    /// subspace this inverts [`embed`](Self::embed).
    pub fn project(&self, x: ArrayView2<f32>) -> Array2<f32> {
        check_cols("Embedded::project", &x, self.basis.ncols());
        x.mapv(|v| v as f64).dot(&self.basis.t()).mapv(|v| v as f32)
    }
}

impl<P: ToyDistribution> ToyDistribution for Embedded<P> {
    fn dim(&self) -> usize {
        self.basis.ncols()
    }

    /// Samples the latent toy and embeds the draws.
    fn sample(&self, n: usize, rng: &mut impl Rng) -> Array2<f32> {
        self.embed(self.latent.sample(n, rng).view())
    }
}

// ---------------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------------

/// x + σz with z ~ N(0, I) drawn from `rng` (row by row), in `f32`: the noisy data x̃ whose law is
/// q_σ. With a small σ this gives data on a manifold (see [`Embedded`]) full support.
pub fn perturb(x: ArrayView2<f32>, sigma: f64, rng: &mut impl Rng) -> Array2<f32> {
    // from_shape_fn visits indices in row-major order whatever the layout of `x`, so the noise
    // drawn for element (i, j) does not depend on how `x` is strided.
    Array2::from_shape_fn(x.raw_dim(), |ij| {
        let z: f64 = rng.sample(StandardNormal);
        (x[ij] as f64 + sigma * z) as f32
    })
}

/// For each mode (a row of `modes`, shape `(K, D)`), the fraction of `samples` (shape `(N, D)`) whose
/// nearest mode in Euclidean distance it is; ties go to the lower index. The fractions sum to one
/// (for N > 0; all zero for N = 0), less the share of samples with a coordinate that is not
/// finite (a diverged chain), which are nearest to no mode and counted in none.
///
/// With the paper's mixture and `modes = mix.means()` this reports the mode weights a sampler
/// recovers: ≈ (0.2, 0.8) for annealed Langevin dynamics, far off for plain Langevin dynamics.
pub fn mode_fractions(samples: ArrayView2<f32>, modes: ArrayView2<f64>) -> Vec<f64> {
    check_cols("mode_fractions", &samples, modes.ncols());
    let mut counts = vec![0usize; modes.nrows()];
    for x in samples.outer_iter() {
        if !x.iter().all(|v| v.is_finite()) {
            continue;
        }
        let mut best = (0, f64::INFINITY);
        for (k, m) in modes.outer_iter().enumerate() {
            let d2: f64 = x
                .iter()
                .zip(m.iter())
                .map(|(&a, b)| (a as f64 - b) * (a as f64 - b))
                .sum();
            if d2 < best.1 {
                best = (k, d2);
            }
        }
        counts[best.0] += 1;
    }
    let n = samples.nrows().max(1) as f64;
    counts.into_iter().map(|c| c as f64 / n).collect()
}

/// The fraction of `samples` nearer to mode `k` (row `k` of `modes`) than to any other mode; see
/// [`mode_fractions`].
pub fn mode_fraction(samples: ArrayView2<f32>, modes: ArrayView2<f64>, k: usize) -> f64 {
    assert!(
        k < modes.nrows(),
        "mode_fraction: mode {k} of {}",
        modes.nrows()
    );
    mode_fractions(samples, modes)[k]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log Σ exp computed stably: equal to the naive sum where that is safe (within 10⁻¹² of
    /// values near 1), finite where the naive one overflows (e^1000), and −∞ for an empty sum.
    #[test]
    fn log_sum_exp_is_stable() {
        let v = [0.5, -1.0, 2.0];
        let naive = v.iter().map(|x: &f64| x.exp()).sum::<f64>().ln();
        assert!((log_sum_exp(&v) - naive).abs() < 1e-12);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-9);
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
    }
    use ndarray::{Array, array};
    use rand_chacha::ChaCha8Rng;

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    /// Monte Carlo check: the mean of the i.i.d. `terms` equals `expected` within 5 standard errors
    /// (standard error estimated from the terms themselves). By the CLT the chance that a correct
    /// implementation fails one such check is P(|Z| > 5) ≈ 5.7e-7; the seeds are fixed, so the
    /// outcome is deterministic, and the bound was fixed before the seeds were run.
    fn assert_mc(terms: &[f64], expected: f64, what: &str) {
        let n = terms.len() as f64;
        let mean = terms.iter().sum::<f64>() / n;
        let var = terms.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / (n - 1.0);
        let se = (var / n).sqrt();
        assert!(
            (mean - expected).abs() <= 5.0 * se,
            "{what}: Monte Carlo mean {mean} vs expected {expected}, |diff| = {} > 5 SE = {}",
            (mean - expected).abs(),
            5.0 * se
        );
    }

    /// Sample mean and covariance against the analytic ones, entry by entry. Each covariance entry
    /// is checked as the mean of the i.i.d. terms (xᵢ − mᵢ)(xⱼ − mⱼ) centred at the *true* mean m,
    /// which is an unbiased estimate of Σᵢⱼ, so [`assert_mc`] applies exactly.
    fn assert_moments(x: &Array2<f32>, mean: &Array1<f64>, cov: &Array2<f64>, what: &str) {
        let d = x.ncols();
        let x = x.mapv(|v| v as f64);
        for i in 0..d {
            let col: Vec<f64> = x.column(i).to_vec();
            assert_mc(&col, mean[i], &format!("{what}: mean[{i}]"));
            for j in 0..=i {
                let t: Vec<f64> = x
                    .outer_iter()
                    .map(|r| (r[i] - mean[i]) * (r[j] - mean[j]))
                    .collect();
                assert_mc(&t, cov[[i, j]], &format!("{what}: cov[{i},{j}]"));
            }
        }
    }

    fn three_component_3d() -> GaussianMixture {
        let means = array![[0.0, 1.0, -2.0], [3.0, -1.0, 0.5], [-2.0, -2.0, 2.0]];
        GaussianMixture::new(&[1.0, 2.0, 0.5], means, &[0.5, 1.5, 0.8])
    }

    /// Central differences (f(x + h eᵢ) − f(x − h eᵢ)) / 2h of an f64 log-density.
    fn fd_grad(f: &dyn Fn(&[f64]) -> f64, x: &[f64], h: f64) -> Vec<f64> {
        (0..x.len())
            .map(|i| {
                let (mut a, mut b) = (x.to_vec(), x.to_vec());
                a[i] += h;
                b[i] -= h;
                (f(&a) - f(&b)) / (2.0 * h)
            })
            .collect()
    }

    // Finite-difference tolerance, all in f64. With step h the central difference has truncation
    // error h²/6 · |∂³ log p| and rounding error ≈ ε |log p| / h (ε = 2.2e-16).
    // * Mixtures here: log p is a log-sum-exp of quadratics; its third derivative along an axis is
    //   r(1−r)(1−2r)·Δ³ ≤ 0.1 Δ³ with Δ the difference of the component slopes, ≤ ~15 (plus the
    //   quadratic parts, whose third derivative is zero), so ≤ ~350: truncation ≤ 6e-9 at h = 1e-5.
    //   |log p| ≤ ~2000 at the far test points: rounding ≤ 4.4e-8.
    // * Ring: the third derivative is (r/s²)³ (log I₀)''', and |(log I₀)'''| ≤ 0.2. For r ≤ 4,
    //   s ≥ 0.5 that is ≤ 4096 · 0.2 ≈ 800, truncation ≤ 1.4e-8; for the thin ring (2, 0.3),
    //   r/s² = 22.2 and it is ≤ 11,000 · 0.2 ≈ 2,200, truncation ≤ 3.7e-8.
    // So 1e-6 · (1 + |s|) leaves a margin of 20× or more while a wrong score (a missing factor, a sign,
    // a wrong responsibility) is off by O(1).
    const FD_H: f64 = 1e-5;
    fn fd_tol(s: f64) -> f64 {
        1e-6 * (1.0 + s.abs())
    }

    fn test_points_2d() -> Vec<[f64; 2]> {
        let mut pts = vec![
            [0.0, 0.0],
            [5.0, 5.0],
            [-5.0, -5.0],
            [8.0, -8.0],
            [-8.0, 8.0],
            [30.0, -30.0],
            [-40.0, 25.0],
            [0.3, -0.2],
            [1e-7, 0.0],
        ];
        let mut r = rng(7);
        for _ in 0..40 {
            pts.push([r.random_range(-10.0..10.0), r.random_range(-10.0..10.0)]);
        }
        pts
    }

    #[test]
    fn mixture_score_matches_finite_differences() {
        let mix = GaussianMixture::paper();
        let mut a = vec![0.0; 2];
        let mut s = vec![0.0; 2];
        for p in test_points_2d() {
            mix.score_f64(&p, &mut a, &mut s);
            let fd = fd_grad(&|x| mix.log_prob_f64(x), &p, FD_H);
            for i in 0..2 {
                assert!(
                    (s[i] - fd[i]).abs() <= fd_tol(s[i]),
                    "at {p:?}: score {s:?}, fd {fd:?}"
                );
            }
        }
        let mix = three_component_3d();
        let mut a = vec![0.0; 3];
        let mut s = vec![0.0; 3];
        let mut r = rng(8);
        for _ in 0..40 {
            let p: Vec<f64> = (0..3).map(|_| r.random_range(-6.0..6.0)).collect();
            mix.score_f64(&p, &mut a, &mut s);
            let fd = fd_grad(&|x| mix.log_prob_f64(x), &p, FD_H);
            for i in 0..3 {
                assert!(
                    (s[i] - fd[i]).abs() <= fd_tol(s[i]),
                    "at {p:?}: score {s:?}, fd {fd:?}"
                );
            }
        }
    }

    /// Σᵢ of central differences (sᵢ(x + h eᵢ) − sᵢ(x − h eᵢ)) / 2h of an f64 score: its divergence.
    fn fd_divergence(score: &mut dyn FnMut(&[f64], &mut [f64]), x: &[f64], h: f64) -> f64 {
        let mut s = vec![0.0; x.len()];
        (0..x.len())
            .map(|i| {
                let (mut a, mut b) = (x.to_vec(), x.to_vec());
                a[i] += h;
                b[i] -= h;
                score(&a, &mut s);
                let plus = s[i];
                score(&b, &mut s);
                (plus - s[i]) / (2.0 * h)
            })
            .sum()
    }

    // The closed-form Laplacians against central differences of the score, in f64 at h = 1e-4.
    // Truncation: h²/6 · |∂ᵢ³ sᵢ| = h²/6 · |∂ᵢ⁴ log p| per axis. For the mixtures the quartic part
    // along an axis is r(1−r)(1−6r+6r²)Δ⁴ ≤ Δ⁴/8 with Δ the difference of the component slopes
    // (10 for the paper's mixture, ≤ ~15 for the 3-D one): ≤ 6,400, so ≤ 1.1e-5 per axis. For the
    // thin ring (2, 0.3), (r/s²)⁴ ≈ 2.4e5 times |(log I₀)''''| ≤ 0.125: ≤ 1.5e-5 per axis.
    // Rounding: ε|s|/h ≤ 2.2e-16 · 100 / 1e-4 ≈ 2e-10. So 1e-4 · (1 + |Δ log p|) leaves a margin of
    // three or more, while a dropped term (−‖s‖², or D/σₖ² in place of Σ rₖ D/σₖ²) is off by O(1)
    // and more between the modes. Measured: the largest error is 2.0e-7 · (1 + |Δ log p|) for the
    // mixtures and 6.5e-7 · (1 + |Δ log p|) for the rings, far inside the bound.
    const FD_LAP_H: f64 = 1e-4;
    fn fd_lap_tol(lap: f64) -> f64 {
        1e-4 * (1.0 + lap.abs())
    }

    #[test]
    fn mixture_laplacian_matches_finite_differences_of_the_score() {
        for (mix, points) in [
            (
                GaussianMixture::paper(),
                test_points_2d().iter().map(|p| p.to_vec()).collect(),
            ),
            (three_component_3d(), {
                let mut r = rng(9);
                (0..40)
                    .map(|_| {
                        (0..3)
                            .map(|_| r.random_range(-6.0..6.0))
                            .collect::<Vec<f64>>()
                    })
                    .collect::<Vec<_>>()
            }),
        ] {
            let d = mix.dim();
            let (mut a, mut s) = (vec![0.0; mix.n_components()], vec![0.0; d]);
            for p in points {
                let lap = mix.laplacian_f64(&p, &mut a, &mut s);
                let fd = fd_divergence(&mut |x, out| mix.score_f64(x, &mut a, out), &p, FD_LAP_H);
                assert!(
                    (lap - fd).abs() <= fd_lap_tol(lap),
                    "at {p:?}: Δ log p {lap}, finite differences {fd}"
                );
            }
        }
        // The array method is the f64 one, and on a single Gaussian (the mixture perturbed so far
        // that one component would do) it is −D/σ²: here ⅕N(0, 4I) + ⅘N(0, 4I) in the plane.
        let single = GaussianMixture::new(&[1.0, 4.0], array![[0.0, 0.0], [0.0, 0.0]], &[2.0, 2.0]);
        let lap = single.laplacian_log_prob(array![[0.3f32, -7.0], [40.0, 2.0]].view());
        assert!(lap.iter().all(|&l| (l + 0.5).abs() < 1e-6), "{lap:?}");
        // The one-pass score and Laplacian are the two methods', bit for bit.
        let mix = GaussianMixture::paper();
        let x = array![[0.3f32, -7.0], [40.0, 2.0], [5.0, 5.0], [0.0, 0.0]];
        let (s, lap) = mix.score_and_laplacian(x.view());
        assert_eq!(s, mix.score(x.view()));
        assert_eq!(lap, mix.laplacian_log_prob(x.view()));
    }

    #[test]
    fn ring_laplacian_matches_finite_differences_of_the_score() {
        for ring in [
            Ring::new(2.0, 0.3),
            Ring::new(4.0, 0.5),
            Ring::new(0.0, 1.0),
        ] {
            for p in test_points_2d() {
                let lap = ring.laplacian_f64(&p);
                let fd = fd_divergence(&mut |x, out| ring.score_f64(x, out), &p, FD_LAP_H);
                assert!(
                    (lap - fd).abs() <= fd_lap_tol(lap),
                    "{ring:?} at {p:?}: Δ log p {lap}, finite differences {fd}"
                );
            }
        }
        // Radius 0 is a plain Gaussian N(0, s²I): Δ log p = −2/s².
        let lap = Ring::new(0.0, 2.0).laplacian_log_prob(array![[1.0f32, -2.0]].view());
        assert!((lap[0] + 0.5).abs() < 1e-7, "{lap:?}");
    }

    /// At points equidistant from both modes of the paper's mixture the responsibilities are exactly
    /// the weights (0.2, 0.8), so the score is 0.2 (μ₁ − x) + 0.8 (μ₂ − x) in closed form, even where
    /// both Gaussians underflow to 0 in f64 (‖x − μ‖²/2 = 925 at (30, −30)).
    #[test]
    fn mixture_score_far_from_modes_is_exact() {
        let mix = GaussianMixture::paper();
        let x = array![[8.0f32, -8.0], [30.0, -30.0], [-1e4, 1e4]];
        let s = mix.score(x.view());
        let want = array![[-5.0f32, 11.0], [-27.0, 33.0], [1e4 + 3.0, -1e4 + 3.0]];
        for (g, w) in s.iter().zip(want.iter()) {
            assert!(g.is_finite());
            assert!(
                (g - w).abs() <= 1e-6 * (1.0 + w.abs()),
                "score {s:?} vs {want:?}"
            );
        }
        assert!(mix.log_prob(x.view()).iter().all(|v| v.is_finite()));
        let r = mix.responsibilities(x.view());
        assert!((r[[1, 0]] - 0.2).abs() < 1e-6 && (r[[1, 1]] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn ring_score_matches_finite_differences() {
        for ring in [
            Ring::new(2.0, 0.3),
            Ring::new(4.0, 0.5),
            Ring::new(0.0, 1.0),
        ] {
            let mut s = [0.0; 2];
            for p in test_points_2d() {
                ring.score_f64(&p, &mut s);
                let fd = fd_grad(&|x| ring.log_prob_f64(x), &p, FD_H);
                for i in 0..2 {
                    assert!(
                        (s[i] - fd[i]).abs() <= fd_tol(s[i]),
                        "{ring:?} at {p:?}: score {s:?}, fd {fd:?}"
                    );
                }
            }
        }
        // Radius 0 is a plain Gaussian: score −x/s².
        let s = Ring::new(0.0, 2.0).score(array![[1.0f32, -2.0]].view());
        assert!((s[[0, 0]] + 0.25).abs() < 1e-7 && (s[[0, 1]] - 0.5).abs() < 1e-7);
    }

    /// e^{−z} I_ν(z) = (1/π) ∫₀^π e^{z(cos θ − 1)} cos(νθ) dθ by the trapezoid rule with M = 20000
    /// points: for a smooth periodic integrand the error decays like e^{−cM/√z}, far below 1e-15 here.
    #[test]
    fn bessel_matches_quadrature_and_known_values() {
        let quad = |z: f64, nu: f64| {
            let m = 20000;
            let h = std::f64::consts::PI / m as f64;
            let f = |t: f64| (z * (t.cos() - 1.0)).exp() * (nu * t).cos();
            let inner: f64 = (1..m).map(|j| f(j as f64 * h)).sum();
            (inner + 0.5 * (f(0.0) + f(std::f64::consts::PI))) * h / std::f64::consts::PI
        };
        for z in [
            0.0, 1e-3, 0.5, 1.0, 5.0, 10.0, 29.999, 30.0, 30.001, 50.0, 100.0, 1000.0,
        ] {
            let (i0e, i1e) = bessel_i01e(z);
            let (q0, q1) = (quad(z, 0.0), quad(z, 1.0));
            assert!((i0e - q0).abs() <= 1e-13 * q0, "I0e({z}) = {i0e} vs {q0}");
            assert!((i1e - q1).abs() <= 1e-13 * q0, "I1e({z}) = {i1e} vs {q1}");
        }
        // I₀(1) and I₁(1) (Abramowitz & Stegun, Table 9.8).
        let (i0e, i1e) = bessel_i01e(1.0);
        assert!((i0e * 1f64.exp() - 1.266_065_877_752_008_4).abs() < 1e-14);
        assert!((i1e * 1f64.exp() - 0.565_159_103_992_485).abs() < 1e-14);
    }

    /// ∫ p = 1 by the midpoint rule on a square grid. For these smooth, Gaussian-tailed densities the
    /// rule is spectrally accurate: by Poisson summation its error is Σ_{m≠0} p̂(2πm/h), with
    /// |p̂(ω)| ≤ e^{−s²ω²/2} for the narrowest std s (the ring's transform is J₀(r|ω|) e^{−s²|ω|²/2}):
    /// e^{−1974} for s = 1, h = 0.1; e^{−493} for s = 0.5, h = 0.1; e^{−1263} for s = 0.4, h = 0.05.
    /// The mass outside the box is below 1e-11 (≥ 7 std from every mode). For the square the cell
    /// edges fall on its edges, so the rule is exact. What remains is f32 rounding of log p: a
    /// relative error ≤ 6e-8 · |log p| in each density value, ≤ 1e-6 where the mass is.
    /// Tolerance 1e-5.
    #[test]
    fn densities_integrate_to_one() {
        let integrate = |lp: &dyn Fn(ArrayView2<f32>) -> Array1<f32>, half: f64, h: f64| {
            let n = (2.0 * half / h).round() as usize;
            let c = |i: usize| -half + (i as f64 + 0.5) * h;
            let pts = Array::from_shape_fn((n * n, 2), |(k, j)| {
                if j == 0 {
                    c(k % n) as f32
                } else {
                    c(k / n) as f32
                }
            });
            lp(pts.view())
                .iter()
                .map(|&v| (v as f64).exp())
                .sum::<f64>()
                * h
                * h
        };
        let paper = GaussianMixture::paper();
        let total = integrate(&|x| paper.log_prob(x), 12.0, 0.1);
        assert!((total - 1.0).abs() < 1e-5, "paper mixture: {total}");
        let means = array![[0.0, 1.0], [3.0, -1.0], [-2.0, -2.0]];
        let mix = GaussianMixture::new(&[1.0, 2.0, 0.5], means, &[0.5, 1.5, 0.8]);
        let total = integrate(&|x| mix.log_prob(x), 14.0, 0.1);
        assert!((total - 1.0).abs() < 1e-5, "3-component mixture: {total}");
        let ring = Ring::new(3.0, 0.4);
        let total = integrate(&|x| ring.log_prob(x), 6.0, 0.05);
        assert!((total - 1.0).abs() < 1e-5, "ring: {total}");
        let sq = UniformSquare::new(-1.0, 1.0);
        let total = integrate(&|x| sq.log_prob(x), 2.0, 0.05);
        assert!((total - 1.0).abs() < 1e-5, "square: {total}");
    }

    #[test]
    fn sample_moments_match_analytic() {
        let paper = GaussianMixture::paper();
        let x = paper.sample(20_000, &mut rng(1));
        assert_moments(&x, &paper.mean(), &paper.covariance(), "paper mixture");
        assert_eq!(paper.mean(), array![3.0, 3.0]);
        assert_eq!(paper.covariance(), array![[17.0, 16.0], [16.0, 17.0]]);

        let mix = three_component_3d();
        let x = mix.sample(20_000, &mut rng(2));
        assert_moments(&x, &mix.mean(), &mix.covariance(), "3-d mixture");

        let ring = Ring::new(3.0, 0.4);
        let x = ring.sample(20_000, &mut rng(3));
        assert_moments(&x, &Array1::zeros(2), &ring.covariance(), "ring");

        // Perturbing samples of p with σ matches the moments of q_σ = perturbed(σ).
        let q = paper.perturbed(2.0);
        let x = perturb(paper.sample(20_000, &mut rng(4)).view(), 2.0, &mut rng(5));
        assert_moments(&x, &q.mean(), &q.covariance(), "perturbed mixture");

        let sq = UniformSquare::new(-1.0, 3.0);
        let x = sq.sample(20_000, &mut rng(6));
        assert!(x.iter().all(|&v| (-1.0..=3.0).contains(&v)));
        assert_moments(
            &x,
            &array![1.0, 1.0],
            &(Array2::eye(2) * (16.0 / 12.0)),
            "square",
        );
    }

    /// Tweedie's formula, E[x | x̃] = x̃ + σ² ∇ log q_σ(x̃), holds exactly for the closed forms.
    #[test]
    fn posterior_mean_satisfies_tweedie() {
        for mix in [GaussianMixture::paper(), three_component_3d()] {
            for sigma in [0.1, 1.0, 3.0, 20.0] {
                let q = mix.perturbed(sigma);
                let xt = q.sample(200, &mut rng(11));
                let m = mix.posterior_mean(xt.view(), sigma);
                let tweedie = &xt + &(q.score(xt.view()) * (sigma * sigma) as f32);
                for ((a, b), x) in m.iter().zip(tweedie.iter()).zip(xt.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + x.abs()),
                        "σ = {sigma}: {a} vs {b}"
                    );
                }
            }
        }
    }

    /// The posterior mean against Monte Carlo, two ways.
    ///
    /// 1. Self-normalised importance sampling at fixed x̃: draw xᵢ ~ p, weight wᵢ = N(x̃; xᵢ, σ²I);
    ///    Σ wᵢxᵢ / Σ wᵢ → E[x | x̃], with the delta-method standard error
    ///    √(Σ wᵢ² (xᵢ − m̂)²) / Σ wᵢ; checked within 5 standard errors.
    /// 2. The defining property of a conditional expectation: E[(x − m(x̃)) g(x̃)] = 0 for every g.
    ///    Checked on i.i.d. pairs (x, x̃) for g = 1, x̃₁, x̃₂ and a step function, each within 5
    ///    standard errors (see `assert_mc`); the wrong guess m(x̃) = x̃ is rejected by the same test.
    #[test]
    fn posterior_mean_matches_monte_carlo() {
        let mix = GaussianMixture::paper();
        let sigma = 2.0;
        let n = 50_000;
        let x = mix.sample(n, &mut rng(21)).mapv(|v| v as f64);
        for xt in [[0.0f32, 0.0], [1.0, 1.0], [-3.0, -2.0], [4.0, 6.0]] {
            let m = mix.posterior_mean(ndarray::aview2(&[xt]), sigma);
            let w: Vec<f64> = x
                .outer_iter()
                .map(|r| {
                    let d2 = (r[0] - xt[0] as f64).powi(2) + (r[1] - xt[1] as f64).powi(2);
                    (-d2 / (2.0 * sigma * sigma)).exp()
                })
                .collect();
            let wsum: f64 = w.iter().sum();
            for i in 0..2 {
                let est = x.column(i).iter().zip(&w).map(|(v, w)| v * w).sum::<f64>() / wsum;
                let se = x
                    .column(i)
                    .iter()
                    .zip(&w)
                    .map(|(v, w)| (w * (v - est)).powi(2))
                    .sum::<f64>()
                    .sqrt()
                    / wsum;
                let got = m[[0, i]] as f64;
                assert!(
                    (got - est).abs() <= 5.0 * se,
                    "x̃ = {xt:?}: E[x|x̃]_{i} = {got}, IS {est} ± {se}"
                );
            }
        }

        let xt = perturb(x.mapv(|v| v as f32).view(), sigma, &mut rng(22));
        let m = mix.posterior_mean(xt.view(), sigma);
        let xt = xt.mapv(|v| v as f64);
        let m = m.mapv(|v| v as f64);
        type G<'a> = &'a dyn Fn(ArrayView1<f64>) -> f64;
        let tests: [(&str, G); 4] = [
            ("1", &|_| 1.0),
            ("x̃₁", &|r| r[0]),
            ("x̃₂", &|r| r[1]),
            ("1[x̃₁+x̃₂>0]", &|r| {
                if r[0] + r[1] > 0.0 { 1.0 } else { 0.0 }
            }),
        ];
        let terms =
            |guess: &Array2<f64>, i: usize, g: &dyn Fn(ArrayView1<f64>) -> f64| -> Vec<f64> {
                (0..n)
                    .map(|k| (x[[k, i]] - guess[[k, i]]) * g(xt.row(k)))
                    .collect()
            };
        for (name, g) in tests {
            for i in 0..2 {
                assert_mc(
                    &terms(&m, i, g),
                    0.0,
                    &format!("E[(x − m(x̃))_{i} · {name}]"),
                );
            }
        }
        // The test has teeth: the wrong guess m(x̃) = x̃ has E[(x − x̃)₁ x̃₁] = E[−σz₁(x₁ + σz₁)] = −σ²,
        // which the same check confirms, about 80 standard errors away from the 0 it would need.
        let t = terms(&xt, 0, &|r| r[0]);
        assert_mc(&t, -sigma * sigma, "wrong guess m(x̃) = x̃");
        let mean = t.iter().sum::<f64>() / n as f64;
        let se = (t.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0) / n as f64)
            .sqrt();
        assert!(mean.abs() > 20.0 * se, "{mean} ± {se}");
    }

    #[test]
    fn sampling_is_deterministic() {
        let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        let paper = GaussianMixture::paper();
        let ring = Ring::new(2.0, 0.2);
        let sq = UniformSquare::new(0.0, 1.0);
        let emb = Embedded::new(paper.clone(), 10, 5);
        let draw = |seed: u64| {
            let mut r = rng(seed);
            let a = paper.sample(100, &mut r);
            let b = ring.sample(100, &mut r);
            let c = sq.sample(100, &mut r);
            let d = emb.sample(100, &mut r);
            let e = perturb(a.view(), 0.5, &mut r);
            [a, b, c, d, e].iter().map(bits).collect::<Vec<_>>()
        };
        assert_eq!(draw(42), draw(42));
        let (x, y) = (draw(42), draw(43));
        for (a, b) in x.iter().zip(&y) {
            assert_ne!(a, b);
        }
        assert_eq!(
            Embedded::new(ring, 5, 9).basis(),
            Embedded::new(ring, 5, 9).basis()
        );
        // The noise does not depend on the memory layout of the input.
        let x = paper.sample(7, &mut rng(1));
        let a = perturb(x.t(), 0.3, &mut rng(2));
        let c_order = x.t().as_standard_layout().into_owned();
        assert!(c_order.is_standard_layout() && !x.t().is_standard_layout());
        let b = perturb(c_order.view(), 0.3, &mut rng(2));
        assert_eq!(bits(&a), bits(&b));
    }

    #[test]
    fn embedded_lies_in_an_orthonormal_subspace() {
        let emb = Embedded::new(GaussianMixture::paper(), 16, 3);
        let b = emb.basis();
        assert_eq!(b.shape(), &[2, 16]);
        let gram = b.dot(&b.t());
        for i in 0..2 {
            for j in 0..2 {
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((gram[[i, j]] - want).abs() < 1e-12, "{gram:?}");
            }
        }
        let x = emb.sample(500, &mut rng(4));
        assert_eq!(x.shape(), &[500, 16]);
        // Back-projection recovers x (f32 rounding of ~10-sized values: ≤ ~1e-5).
        let back = emb.embed(emb.project(x.view()).view());
        assert!(x.iter().zip(back.iter()).all(|(a, b)| (a - b).abs() < 1e-4));
        // Perturbing leaves the subspace.
        let xp = perturb(x.view(), 0.01, &mut rng(5));
        let off = &xp - &emb.embed(emb.project(xp.view()).view());
        assert!(off.iter().any(|v| v.abs() > 1e-3));
    }

    #[test]
    fn mode_fractions_recover_weights() {
        let paper = GaussianMixture::paper();
        let x = paper.sample(20_000, &mut rng(31));
        let f = mode_fractions(x.view(), paper.means());
        assert!((f[0] + f[1] - 1.0).abs() < 1e-12);
        // Binomial: SE = √(0.2 · 0.8 / n); a draw is nearer the other mode with prob Q(7.07) ≈ 1e-12.
        let se = (0.2f64 * 0.8 / 20_000.0).sqrt();
        assert!((f[0] - 0.2).abs() <= 5.0 * se, "{f:?}");
        assert_eq!(mode_fraction(x.view(), paper.means(), 1), f[1]);
        let pts = array![[0.0f32, 0.0], [1.0, 1.0], [-4.0, -6.0], [9.0, 9.0]];
        assert_eq!(mode_fractions(pts.view(), paper.means()), vec![0.5, 0.5]); // (0,0) ties → mode 0
        // A diverged chain is nearest to no mode (NaN compares false, and would fall to mode 0).
        let diverged = array![
            [f32::NAN, 5.0],
            [5.0, 5.0],
            [f32::INFINITY, 0.0],
            [-5.0, -5.0]
        ];
        assert_eq!(
            mode_fractions(diverged.view(), paper.means()),
            vec![0.25, 0.25]
        );
        assert_eq!(
            mode_fractions(Array2::<f32>::zeros((0, 2)).view(), paper.means()),
            vec![0.0, 0.0]
        );
    }

    #[test]
    fn square_log_prob_inside_and_outside() {
        let sq = UniformSquare::new(-1.0, 1.0);
        let lp = sq.log_prob(array![[0.0f32, 0.0], [1.0, -1.0], [1.01, 0.0]].view());
        assert!((lp[0] + 4f32.ln()).abs() < 1e-6 && lp[0] == lp[1]);
        assert_eq!(lp[2], f32::NEG_INFINITY);
    }

    #[test]
    #[should_panic(expected = "expected points of shape (N, 2), got shape [4, 3]")]
    fn wrong_dimension_panics_with_shapes() {
        GaussianMixture::paper().score(Array2::<f32>::zeros((4, 3)).view());
    }

    /// At an infinite coordinate the density is 0: log p = −∞ and not NaN. Every component's
    /// log-joint is then −∞, and log-sum-exp must return its maximum −∞ as it is (subtracting
    /// that maximum would make each term −∞ − (−∞) = NaN). A chain that diverged reads as
    /// impossible, not as undefined.
    #[test]
    fn log_density_at_infinity_is_minus_infinity() {
        let x = array![[f32::INFINITY, 0.0], [1.0, f32::NEG_INFINITY]];
        let lp = GaussianMixture::paper().log_prob(x.view());
        assert_eq!(lp.to_vec(), vec![f32::NEG_INFINITY; 2]);
        let x = array![[0.0f32, f32::INFINITY, 2.0]];
        let lp = three_component_3d().log_prob(x.view());
        assert_eq!(lp.to_vec(), vec![f32::NEG_INFINITY]);
    }
}

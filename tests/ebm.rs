//! Energy-based models fitted three ways on one-dimensional Gaussian data, where the model family
//! E(x) = ½ a x² − b x holds the truth (a = 1/s², b = μ/s²) and each method's answer is known:
//! exact score matching and maximum likelihood both match the sample's mean and variance, and
//! noise-contrastive estimation is consistent and normalises itself. Plus the pieces, exactly:
//! the energy's score, the gradient of the contrastive loss, and the NCE loss's formula.

use ncsn::ebm::{PersistentChains, contrastive_loss, energy_score, nce_loss};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::sample::{LangevinConfig, gaussian_log_prob};
use ncsn::score::esm_loss;
use ncsn::{Tensor, no_grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// The data: n draws of N(1.5, 0.5²), shape (n, 1).
fn data(n: usize, seed: u64) -> Tensor {
    Tensor::randn(&[n, 1], &mut rng(seed))
        .mul_scalar(0.5)
        .add_scalar(1.5)
}

/// The sample mean and the (biased, maximum-likelihood) variance, in f64.
fn moments(x: &Tensor) -> (f64, f64) {
    let v: Vec<f64> = x.to_vec().iter().map(|&e| f64::from(e)).collect();
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (m, v.iter().map(|e| (e - m).powi(2)).sum::<f64>() / n)
}

/// The quadratic energy ½ a x² − b x with trainable a (starting at 1) and b (at 0).
struct Quadratic {
    a: Tensor,
    b: Tensor,
}

impl Quadratic {
    fn new() -> Self {
        Quadratic {
            a: Tensor::ones(&[1]).requires_grad_(),
            b: Tensor::zeros(&[1]).requires_grad_(),
        }
    }

    fn energy(&self) -> impl Fn(&Tensor) -> Tensor + '_ {
        |x: &Tensor| x.square().mul(&self.a).mul_scalar(0.5).sub(&x.mul(&self.b))
    }

    fn params(&self) -> Vec<(String, Tensor)> {
        vec![("a".into(), self.a.clone()), ("b".into(), self.b.clone())]
    }

    fn values(&self) -> (f64, f64) {
        (f64::from(self.a.item()), f64::from(self.b.item()))
    }
}

fn adam(params: Vec<(String, Tensor)>, lr: f64) -> Adam {
    Adam::new(
        params,
        AdamConfig {
            lr,
            ..AdamConfig::default()
        },
    )
}

/// The energy's score is −∇ₓE: for the quadratic, b − a x, exactly (one multiply and one
/// subtract in f32 on each side), and for a small network, central differences of its energy in
/// f64 within 10⁻³(1 + |s|) (f32 differences with h = 10⁻², error ~ h²·|E'''| + u|E|/h ≈ 10⁻⁴).
/// With `create_graph` the score stays differentiable in the parameters: ∂/∂a of Σ s(x) is −Σ x.
/// It also works inside `no_grad`, as a sampler calls it.
#[test]
fn the_energy_score_is_minus_its_gradient() {
    let q = Quadratic::new();
    q.a.set_data(Tensor::from_vec(vec![3.0], &[1]).storage());
    q.b.set_data(Tensor::from_vec(vec![-2.0], &[1]).storage());
    let x = Tensor::from_vec(vec![-1.5, 0.0, 0.25, 2.0], &[4, 1]);
    let s = no_grad(|| energy_score(q.energy(), false)(&x)).to_vec();
    assert_eq!(s, vec![2.5, -2.0, -2.75, -8.0]);
    let s = energy_score(q.energy(), true)(&x).sum_all();
    let da = ncsn::grad(&[&s], &[&q.a], false).remove(0).item();
    assert_eq!(da, 1.5 - 0.0 - 0.25 - 2.0, "∂/∂a of Σ (b − a x)");

    let store = ncsn::nn::ParamStore::new();
    let mlp = ncsn::nn::Mlp::new(
        &store.root(),
        &[2, 16, 1],
        ncsn::nn::Activation::Softplus,
        &mut rng(1),
    );
    use ncsn::nn::Module;
    let e = |x: &Tensor| mlp.forward(x);
    let x = Tensor::randn(&[5, 2], &mut rng(2));
    let s = no_grad(|| energy_score(e, false)(&x)).to_vec();
    let xs = x.to_vec();
    let h = 1e-2f32;
    for (k, &got) in s.iter().enumerate() {
        let at = |d: f32| {
            let mut v = xs.clone();
            v[k] += d;
            let row = k / 2;
            f64::from(no_grad(|| e(&Tensor::from_vec(v, &[5, 2]))).to_vec()[row])
        };
        let want = -(at(h) - at(-h)) / (2.0 * f64::from(h));
        assert!(
            (f64::from(got) - want).abs() <= 1e-3 * (1.0 + want.abs()),
            "entry {k}: {got} vs {want}"
        );
    }
}

/// The contrastive loss's gradient is the likelihood gradient: for the quadratic,
/// ∂L/∂a = ½(mean x_d² − mean x_s²) and ∂L/∂b = −(mean x_d − mean x_s), with data x_d and
/// samples x_s, within f32 round-off of the means (10⁻⁵ relative). The samples are constants: a
/// sample tensor that requires a gradient gets none.
#[test]
fn the_contrastive_gradient_is_the_likelihood_gradient() {
    let q = Quadratic::new();
    let xd = data(64, 3);
    let xs = Tensor::randn(&[48, 1], &mut rng(4)).requires_grad_();
    let loss = contrastive_loss(q.energy(), &xd, &xs);
    let g = ncsn::grad(&[&loss], &[&q.a, &q.b], false);
    let mean = |t: &Tensor, p: i32| {
        let v = t.to_vec();
        v.iter().map(|&e| f64::from(e).powi(p)).sum::<f64>() / v.len() as f64
    };
    let want_a = 0.5 * (mean(&xd, 2) - mean(&xs, 2));
    let want_b = -(mean(&xd, 1) - mean(&xs, 1));
    for (what, got, want) in [("a", &g[0], want_a), ("b", &g[1], want_b)] {
        let got = f64::from(got.item());
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "∂L/∂{what}: {got} vs {want}"
        );
    }
    let grads = ncsn::backward(&contrastive_loss(q.energy(), &xd, &xs));
    assert!(grads.get(&xs).is_none(), "the samples got a gradient");
}

/// The NCE loss is its formula: mean softplus(−G(data)) + mean softplus(G(noise)) with
/// G = −E − c − log q, computed in f64 from the same numbers (within 10⁻⁵ relative, f32
/// round-off of a few dozen terms). Swapping the two softplus arguments' signs, or adding log q
/// instead of subtracting it, changes the value by far more.
#[test]
fn the_nce_loss_is_its_formula() {
    let q = Quadratic::new();
    q.a.set_data(Tensor::from_vec(vec![2.0], &[1]).storage());
    q.b.set_data(Tensor::from_vec(vec![1.0], &[1]).storage());
    let c = Tensor::from_vec(vec![0.7], &[1]);
    let xd = data(10, 5);
    let xn = Tensor::randn(&[10, 1], &mut rng(6)).mul_scalar(2.0);
    let log_q = |x: &Tensor| gaussian_log_prob(x, 2.0); //   the noise N(0, 2²)
    let got = f64::from(nce_loss(q.energy(), &c, &xd, &log_q(&xd), &xn, &log_q(&xn)).item());
    let softplus = |v: f64| v.exp().ln_1p();
    let g = |x: f64| {
        let log_q = -x * x / 8.0 - (2.0 * std::f64::consts::PI * 4.0).ln() / 2.0;
        -(x * x - x) - 0.7 - log_q //   −E(x) − c − log q(x), E = x² − x
    };
    let f64s = |t: &Tensor| {
        t.to_vec()
            .iter()
            .map(|&e| f64::from(e))
            .collect::<Vec<f64>>()
    };
    let want = f64s(&xd).iter().map(|&x| softplus(-g(x))).sum::<f64>() / 10.0
        + f64s(&xn).iter().map(|&x| softplus(g(x))).sum::<f64>() / 10.0;
    assert!((got - want).abs() <= 1e-5 * (1.0 + want), "{got} vs {want}");
}

/// Exact score matching on the quadratic family is moment matching: the loss
/// E[−a + ½(b − a x)²] is convex, and zero gradient means b = a m̂ and a = 1/v̂ with m̂, v̂ the
/// sample's mean and variance. Through `energy_score` (a second derivative in x, a third in θ
/// for the optimiser), Adam finds them: within 10⁻³ relative after 3000 full-batch steps
/// (measured: 1.4·10⁻⁶ and 1.1·10⁻⁷; a half missing in the ½‖s‖² term would give a = 2/v̂).
#[test]
fn score_matching_an_energy_matches_the_moments() {
    let x = data(2000, 7);
    let (m, v) = moments(&x);
    let q = Quadratic::new();
    let mut opt = adam(q.params(), 0.02);
    for _ in 0..3000 {
        let loss = esm_loss(energy_score(q.energy(), true), &x);
        opt.step(&loss.backward());
    }
    let (a, b) = q.values();
    assert!(
        (a * v - 1.0).abs() < 1e-3,
        "a = {a}, want 1/v̂ = {}",
        1.0 / v
    );
    assert!(
        (b / (a * m) - 1.0).abs() < 1e-3,
        "b = {b}, want a·m̂ = {}",
        a * m
    );
}

/// Maximum likelihood with persistent Langevin chains reaches the maximum-likelihood answer
/// a = 1/v̂, b = m̂/v̂ (the model's mean b/a = m̂), up to what its noisy gradient allows. The
/// gradient compares 2000 chains with the data, and the chains move only 5 Langevin steps
/// (ε = 0.01) per update, so they trail the model; their step also makes their stationary
/// variance v/(1 − εa/4), 1% above the model's. Measured, as the mean of the last 500 steps:
/// a 2.5% below 1/v̂, the mean b/a 0.002 above m̂ (Adam at a constant 0.05 wanders ±10% of a,
/// hence the smaller last steps). The bounds, 5% on a and 0.02 on the mean (twice the standard
/// error 0.5/√2000 of one batch of chains' mean), leave room for that and no more: a sign error in
/// the contrastive loss, or chains that never move from their N(0, 1) start, end far outside.
#[test]
fn maximum_likelihood_with_persistent_chains_matches_the_moments() {
    let x = data(2000, 8);
    let (m, v) = moments(&x);
    let q = Quadratic::new();
    let mut opt = adam(q.params(), 0.05);
    let mut r = rng(9);
    let config = LangevinConfig {
        step_size: 0.01,
        n_steps: 5,
        record_every: 0,
    };
    let mut chains = PersistentChains::new(Tensor::randn(&[2000, 1], &mut r), config);
    let (mut sum_a, mut sum_b) = (0.0, 0.0);
    let steps = 2500;
    for step in 0..steps {
        // Large steps to get there, then small ones to settle: at 0.05 Adam's moves are as
        // large as the gradient's noise lets them be, ±10% of a.
        opt.config.lr = if step < 1500 { 0.05 } else { 0.005 };
        let samples = chains.advance(q.energy(), &mut r).clone();
        let loss = contrastive_loss(q.energy(), &x, &samples);
        opt.step(&loss.backward());
        if step >= steps - 500 {
            let (a, b) = q.values();
            sum_a += a / 500.0;
            sum_b += b / 500.0;
        }
    }
    assert!(
        (sum_a * v - 1.0).abs() < 0.05,
        "a = {sum_a}, want 1/v̂ = {}",
        1.0 / v
    );
    let mean = sum_b / sum_a;
    assert!(
        (mean - m).abs() < 0.02,
        "the model's mean b/a = {mean}, want m̂ = {m}"
    );
}

/// Noise-contrastive estimation with noise N(0, 2²) fits the quadratic family and normalises it:
/// a and b near the truth (4 and 6), and the learned c near log Z(a, b) = b²/2a + ½ ln(2π/a),
/// the normaliser of the fitted energy, which NCE never computes. Measured after 3000 full-batch
/// steps on 4000 points and 4000 noise draws: a = 4.0008, b = 5.9969, c = 4.7325 against
/// log Z = 4.7202. The bounds: 10% on a and b, about three standard errors of an estimate from
/// 4000 points (the maximum-likelihood one has 2.2% on a, and NCE with this noise is less
/// efficient); 0.05 on c − log Z, four times the gap measured. Adding log q to the logit
/// instead of subtracting it, or dropping c, fails them.
#[test]
fn noise_contrastive_estimation_fits_and_normalises() {
    let n = 4000;
    let x = data(n, 10);
    let noise = Tensor::randn(&[n, 1], &mut rng(11)).mul_scalar(2.0);
    let log_q = |x: &Tensor| gaussian_log_prob(x, 2.0); //   the noise N(0, 2²)
    let (lq_data, lq_noise) = (log_q(&x), log_q(&noise));
    let q = Quadratic::new();
    let c = Tensor::zeros(&[1]).requires_grad_();
    let mut params = q.params();
    params.push(("c".into(), c.clone()));
    let mut opt = adam(params, 0.02);
    for _ in 0..3000 {
        let loss = nce_loss(q.energy(), &c, &x, &lq_data, &noise, &lq_noise);
        opt.step(&loss.backward());
    }
    let (a, b) = q.values();
    let c = f64::from(c.item());
    let log_z = b * b / (2.0 * a) + 0.5 * (2.0 * std::f64::consts::PI / a).ln();
    assert!((a / 4.0 - 1.0).abs() < 0.1, "a = {a}");
    assert!((b / 6.0 - 1.0).abs() < 0.1, "b = {b}");
    assert!((c - log_z).abs() < 0.05, "c = {c}, log Z(a, b) = {log_z}");
}

//! The samplers that reverse a diffusion (`ncsn::sample::sde`), held to what they must do with
//! the exact score.
//!
//! On Gaussian data every one of these chains is linear in x with Gaussian noise, so the law of
//! its output is Gaussian with a mean and variance that a scalar recursion gives exactly (in
//! f64). Each test checks the samples against that recursion (Monte Carlo: within K = 5 standard
//! errors, as in `score_identities.rs`), and the recursion against the data (the sampler's own
//! discretisation error, stated for each). On the toy mixture they must recover the mode weights
//! that plain Langevin dynamics gets wrong.

use ncsn::Tensor;
use ncsn::sample::{
    AnnealedConfig, VpSchedule, ddpm_ancestral, langevin_step, predictor_corrector,
    probability_flow, reverse_diffusion,
};
use ncsn::score::{GeometricSigmas, closed_form_score, tensor_from_array2, tensor_to_array2};
use ncsn::toy::{ClosedFormScore, GaussianMixture, ToyDistribution, mode_fraction};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Standard errors allowed by every Monte Carlo check.
const K: f64 = 5.0;

/// The data of the Gaussian tests: N(M, S2) in one dimension.
const M: f64 = 1.5;
const S2: f64 = 0.25;

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// n draws of N(mean, var) as an (n, 1) tensor.
fn normal(n: usize, mean: f64, var: f64, rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::randn(&[n, 1], rng)
        .mul_scalar(var.sqrt() as f32)
        .add_scalar(mean as f32)
}

/// Mean and unbiased variance of the entries of `t`.
fn moments(t: &Tensor) -> (f64, f64) {
    let v: Vec<f64> = t.to_vec().iter().map(|&x| f64::from(x)).collect();
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (
        m,
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0),
    )
}

/// The samples' mean and variance against a Gaussian law (mean, var): the mean within K·√(var/n),
/// the variance within K·var·√(2/n) (the standard error of a Gaussian sample's variance).
fn assert_law(what: &str, x: &Tensor, mean: f64, var: f64) {
    let n = x.numel() as f64;
    let (m, v) = moments(x);
    assert!(
        (m - mean).abs() <= K * (var / n).sqrt(),
        "{what}: mean {m}, want {mean}"
    );
    assert!(
        (v - var).abs() <= K * var * (2.0 / n).sqrt(),
        "{what}: variance {v}, want {var}"
    );
}

/// The score of N(M, S2) perturbed by N(0, σ²): −(x − M)/(S2 + σ²).
fn gaussian_ve_score(sigmas: &GeometricSigmas) -> impl FnMut(&Tensor, usize) -> Tensor + '_ {
    move |x, i| {
        let var = S2 + f64::from(sigmas.get(i)).powi(2);
        x.add_scalar(-M as f32).mul_scalar((-1.0 / var) as f32)
    }
}

/// The exact law (mean, variance) of predictor–corrector sampling on the data N(M, S2), started
/// from N(`mean`, `var`), with `corrector` steps of Langevin dynamics at each level (none:
/// reverse diffusion). At level i, with bᵢ = S2 + σᵢ², a corrector step maps x to
/// M + (1 − αᵢ/(2bᵢ))(x − M) + √αᵢ z and the predictor to M + (1 − dᵢ/bᵢ)(x − M) + √dᵢ z
/// (dᵢ = σᵢ² − σᵢ₊₁², no noise in the last step); each is linear, so the mean and variance follow.
fn ve_law(sigmas: &GeometricSigmas, corrector: &AnnealedConfig, mean: f64, var: f64) -> (f64, f64) {
    let (mut mean, mut v) = (mean, var);
    for i in 0..sigmas.len() {
        let b = S2 + f64::from(sigmas.get(i)).powi(2);
        let a = f64::from(corrector.step_at(sigmas, i));
        for _ in 0..corrector.n_steps_each {
            mean = M + (1.0 - a / (2.0 * b)) * (mean - M);
            v = (1.0 - a / (2.0 * b)).powi(2) * v + a;
        }
        let next = sigmas.sigmas().get(i + 1).map_or(0.0, |&s| s);
        let d = f64::from(sigmas.get(i).powi(2) - next * next);
        mean = M + (1.0 - d / b) * (mean - M);
        v = v * (1.0 - d / b).powi(2) + if i + 1 < sigmas.len() { d } else { 0.0 };
    }
    (mean, v)
}

/// No corrector steps.
const NO_CORRECTOR: AnnealedConfig = AnnealedConfig {
    step_size: 1.0,
    n_steps_each: 0,
    record_every: 0,
};

/// Reverse diffusion on Gaussian data. One step maps x to M + (x − M)(1 − dᵢ/bᵢ) + √dᵢ z, with
/// dᵢ = σᵢ² − σᵢ₊₁² and bᵢ = S2 + σᵢ², so the mean stays M and the variance follows
/// v ← v (1 − dᵢ/bᵢ)² + dᵢ (no noise in the last step): `ve_law` without a corrector. Started
/// from q_{σ₁} exactly, 300 levels from 10 to 0.01 end at a variance 2.3 % above S2: each step
/// adds dᵢ²/bᵢ too much, the Euler–Maruyama error, and the last (noise-free) step takes away
/// σ_L²-worth. A noise of √(2dᵢ), Langevin's, would end near 2·S2; noise in the last step would
/// add only σ_L², too little for this check to see, which is why the single-level test below
/// pins it.
#[test]
fn reverse_diffusion_on_a_gaussian_has_the_law_of_its_recursion_and_ends_at_the_data() {
    let sigmas = GeometricSigmas::new(10.0, 0.01, 300);
    let n = 8000;
    let b0 = S2 + f64::from(sigmas.first()).powi(2);
    let x0 = normal(n, M, b0, &mut rng(1));
    let out = reverse_diffusion(gaussian_ve_score(&sigmas), &x0, &sigmas, 0, &mut rng(2));
    let (_, v) = ve_law(&sigmas, &NO_CORRECTOR, M, b0);
    assert!(
        (v / S2 - 1.0).abs() < 0.03,
        "the recursion ends at variance {v}, not near {S2}"
    );
    assert_law("reverse diffusion", &out.x, M, v);
}

/// With one level there is one step, the last, and it draws no noise: it is Tweedie's denoiser
/// x + σ₁² s(x, σ₁), bit for bit, and leaves the generator untouched.
#[test]
fn reverse_diffusion_ends_with_tweedies_denoiser_and_no_noise() {
    let sigmas = GeometricSigmas::new(0.5, 0.5, 1);
    let x0 = normal(64, 0.0, 1.0, &mut rng(3));
    let mut r = rng(4);
    let out = reverse_diffusion(gaussian_ve_score(&sigmas), &x0, &sigmas, 1, &mut r);
    let want = x0.add(&gaussian_ve_score(&sigmas)(&x0, 0).mul_scalar(0.25));
    assert_eq!(out.x.to_vec(), want.to_vec());
    assert_eq!(r, rng(4), "the last step drew noise");
    assert_eq!(out.trajectory.len(), 2, "the start and the end");
}

/// Predictor–corrector sampling with no corrector steps is reverse diffusion, bit for bit and
/// draw for draw.
#[test]
fn predictor_corrector_without_corrector_steps_is_reverse_diffusion() {
    let sigmas = GeometricSigmas::new(10.0, 0.01, 12);
    let x0 = normal(64, M, 100.25, &mut rng(15));
    let none = AnnealedConfig {
        step_size: 1e-4,
        n_steps_each: 0,
        record_every: 0,
    };
    let (mut a, mut b) = (rng(16), rng(16));
    let pc = predictor_corrector(gaussian_ve_score(&sigmas), &x0, &sigmas, &none, &mut a);
    let rd = reverse_diffusion(gaussian_ve_score(&sigmas), &x0, &sigmas, 0, &mut b);
    assert_eq!(pc.x.to_vec(), rd.x.to_vec());
    assert_eq!(a, b);
}

/// Predictor–corrector sampling level by level, recomputed here with the same generator: at
/// level i, T Langevin steps with αᵢ = ε·σᵢ²/σ_L² and s(x, σᵢ) (annealed Langevin dynamics'
/// steps), then the predictor x + dᵢ·s(x, σᵢ) + √dᵢ·z, the last without noise. Bit for bit.
#[test]
fn predictor_corrector_is_algorithm_2_level_by_level() {
    let sigmas = GeometricSigmas::new(2.0, 0.5, 3);
    let corrector = AnnealedConfig {
        step_size: 0.01,
        n_steps_each: 3,
        record_every: 0,
    };
    let x0 = normal(16, 0.0, 4.0, &mut rng(19));
    let mut score = gaussian_ve_score(&sigmas);
    let out = predictor_corrector(&mut score, &x0, &sigmas, &corrector, &mut rng(20));
    let mut r = rng(20);
    let mut x = x0.clone();
    for i in 0..3 {
        let ratio = sigmas.get(i) / sigmas.last();
        let alpha = corrector.step_size * ratio * ratio; //       αᵢ = ε·(σᵢ/σ_L)², in step_at's order
        for _ in 0..3 {
            x = langevin_step(&x, &score(&x, i), alpha, &mut r);
        }
        let next = if i < 2 { sigmas.get(i + 1) } else { 0.0 };
        let d = sigmas.get(i).powi(2) - next * next;
        x = x.add(&score(&x, i).mul_scalar(d));
        if i < 2 {
            x = x.add(&Tensor::randn(&[16, 1], &mut r).mul_scalar(d.sqrt()));
        }
    }
    assert_eq!(out.x.to_vec(), x.to_vec());
}

/// On NCSN's ten levels (here 10 → 0.01) the predictor alone is far too coarse: by the recursion
/// of the test above it ends at 2.36 times the data's variance, each step adding dᵢ²/bᵢ too
/// much. Twenty Langevin steps at each level (ε = 10⁻⁴, so αᵢ/bᵢ ≈ 1 where σᵢ ≫ s: each step
/// halves the distance to the level's law) bring it to 2.7 % above. The corrector's recursion
/// is v ← (1 − αᵢ/(2bᵢ))² v + αᵢ; the samples must have the law the two recursions give.
#[test]
fn the_corrector_repairs_what_ten_levels_get_wrong() {
    let sigmas = GeometricSigmas::new(10.0, 0.01, 10);
    let corrector = AnnealedConfig {
        step_size: 1e-4,
        n_steps_each: 20,
        record_every: 0,
    };
    let start = (M + 1.0, S2 + f64::from(sigmas.first()).powi(2));
    let (_, alone) = ve_law(&sigmas, &NO_CORRECTOR, start.0, start.1);
    let (mean, v) = ve_law(&sigmas, &corrector, start.0, start.1);
    assert!(
        alone / S2 > 2.3,
        "the predictor alone ends at variance {alone}"
    );
    assert!((v / S2 - 1.0).abs() < 0.03, "with the corrector: {v}");
    // Started one unit off the data's mean, to see the corrector pull it back too.
    let x0 = normal(8000, M + 1.0, S2 + 100.0, &mut rng(17));
    let out = predictor_corrector(
        gaussian_ve_score(&sigmas),
        &x0,
        &sigmas,
        &corrector,
        &mut rng(18),
    );
    assert_law("predictor–corrector", &out.x, mean, v);
}

/// The probability-flow ODE on Gaussian data has the exact solution
/// x(σ) = M + (x(σ₁) − M) √((S2 + σ²)/(S2 + σ₁²)) (the slope −σ s = σ (x − M)/(S2 + σ²) makes
/// ln|x − M| grow as ½ ln(S2 + σ²)). Heun's method is second order: doubling the levels from 100
/// to 200 must cut the largest error by more than 3 (4 in the limit; Euler's method, first order,
/// would give 2), and at 200 levels it is below 10⁻³ of the spread.
#[test]
fn probability_flow_on_a_gaussian_is_the_exact_flow_to_second_order() {
    let x0 = Tensor::from_vec((0..41).map(|i| -20.0 + i as f32).collect(), &[41, 1]);
    let error = |levels: usize| {
        let sigmas = GeometricSigmas::new(10.0, 0.01, levels);
        let out = probability_flow(gaussian_ve_score(&sigmas), &x0, &sigmas, 0);
        let (s1, sl) = (f64::from(sigmas.first()), f64::from(sigmas.last()));
        let shrink = ((S2 + sl * sl) / (S2 + s1 * s1)).sqrt();
        x0.to_vec()
            .iter()
            .zip(out.x.to_vec())
            .map(|(&a, b)| (f64::from(b) - (M + (f64::from(a) - M) * shrink)).abs())
            .fold(0.0, f64::max)
    };
    let (e100, e200) = (error(100), error(200));
    assert!(
        e100 > 3.0 * e200,
        "error {e100} at 100 levels, {e200} at 200: not second order"
    );
    // The points end within ±1 of M (20·shrink ≈ 1), so 10⁻³ is relative to that spread.
    assert!(e200 < 1e-3, "error {e200} at 200 levels");
}

/// The flow draws no noise: it is a function of its start. It ends where its trajectory's last
/// snapshot is, and the trajectory starts at x0.
#[test]
fn probability_flow_is_deterministic_and_records_its_path() {
    let sigmas = GeometricSigmas::new(5.0, 0.1, 21);
    let x0 = normal(16, 0.0, 25.0, &mut rng(5));
    let a = probability_flow(gaussian_ve_score(&sigmas), &x0, &sigmas, 4);
    let b = probability_flow(gaussian_ve_score(&sigmas), &x0, &sigmas, 0);
    assert_eq!(a.x.to_vec(), b.x.to_vec());
    // Snapshots at steps 0, 4, 8, 12, 16 and 20, the end: six.
    assert_eq!(a.trajectory.len(), 6);
    assert_eq!(a.trajectory[0].to_vec(), x0.to_vec());
    assert_eq!(a.trajectory[5].to_vec(), a.x.to_vec());
    assert!(b.trajectory.is_empty());
}

/// Ho et al.'s schedule: β from 10⁻⁴ to 0.02 in 1000 even steps, ᾱ the running product of
/// 1 − β (checked against a product taken afresh), ending at ᾱ ≈ 4.0·10⁻⁵ (exp of Σ ln(1 − β)
/// = −10.12), so that x_T keeps a scale of 0.0064 of the data.
#[test]
fn the_ddpm_schedule_is_ho_et_al_s() {
    let s = VpSchedule::ddpm();
    assert_eq!(s.len(), 1000);
    assert_eq!((s.beta(0), s.beta(999)), (1e-4, 0.02));
    assert!((s.beta(500) - (1e-4 + 500.0 * (0.02 - 1e-4) / 999.0)).abs() < 1e-15);
    let mut prod = 1.0;
    for t in 0..1000 {
        prod *= 1.0 - s.beta(t);
        assert!((s.alpha_bar(t) - prod).abs() <= 1e-15 * prod.max(1e-300).max(1.0) * 10.0);
    }
    let last = s.alpha_bar(999);
    assert!((3.9e-5..4.1e-5).contains(&last), "ᾱ_T = {last}");
}

/// DDPM's sampler on Gaussian data, from N(0, 1). The score of x_t is −(x − aₜM)/vₜ with
/// aₜ = √ᾱₜ and vₜ = ᾱₜS2 + 1 − ᾱₜ, so one step maps x to
/// (x (1 − βₜ/vₜ) + βₜ aₜ M / vₜ)/√(1 − βₜ) + √βₜ z, and the mean and variance follow a scalar
/// recursion. With the 1000 steps of Ho et al. it ends at a variance 0.3 % above S2 and a mean
/// 2·10⁻⁵ from M: the chain is the data's law up to its discretisation.
#[test]
fn ddpm_on_a_gaussian_has_the_law_of_its_recursion_and_ends_at_the_data() {
    let schedule = VpSchedule::ddpm();
    let score = |x: &Tensor, t: usize| {
        let ab = schedule.alpha_bar(t);
        let v = ab * S2 + 1.0 - ab;
        x.add_scalar(-(ab.sqrt() * M) as f32)
            .mul_scalar((-1.0 / v) as f32)
    };
    let n = 8000;
    let x0 = normal(n, 0.0, 1.0, &mut rng(6));
    let out = ddpm_ancestral(score, &x0, &schedule, 0, &mut rng(7));
    let (mut mean, mut var) = (0.0, 1.0);
    for t in (0..schedule.len()).rev() {
        let (b, ab) = (schedule.beta(t), schedule.alpha_bar(t));
        let v = ab * S2 + 1.0 - ab;
        let k = (1.0 - b).sqrt();
        mean = (mean * (1.0 - b / v) + b * ab.sqrt() * M / v) / k;
        var = var * (1.0 - b / v).powi(2) / (k * k) + if t > 0 { b } else { 0.0 };
    }
    assert!((mean - M).abs() < 1e-4, "the recursion ends at mean {mean}");
    assert!(
        (var / S2 - 1.0).abs() < 0.01,
        "the recursion ends at variance {var}"
    );
    assert_law("DDPM", &out.x, mean, var);
}

/// DDPM's Algorithm 2 step by step, on a two-step schedule: from t = 1 with noise drawn from the
/// generator, then t = 0 without any, each step (x + βₜ s(x, t))/√(1 − βₜ), the score asked for
/// at the step's own t. Recomputed here with the same generator, the samples agree bit for bit
/// and the generator is left where one draw leaves it.
#[test]
fn ddpm_ancestral_is_algorithm_2_step_by_step() {
    let schedule = VpSchedule::linear(0.1, 0.3, 2);
    let x0 = normal(32, 0.0, 1.0, &mut rng(13));
    let score = |x: &Tensor, t: usize| x.mul_scalar(-(1.0 + t as f32)); // any t-dependent field
    let mut r = rng(14);
    let out = ddpm_ancestral(score, &x0, &schedule, 0, &mut r);
    let mut mine = rng(14);
    let step = |x: &Tensor, t: usize| {
        let b = schedule.beta(t);
        x.add(&score(x, t).mul_scalar(b as f32))
            .mul_scalar((1.0 / (1.0 - b).sqrt()) as f32)
    };
    let x1 = step(&x0, 1)
        .add(&Tensor::randn(&[32, 1], &mut mine).mul_scalar(schedule.beta(1).sqrt() as f32));
    let want = step(&x1, 0);
    assert_eq!(out.x.to_vec(), want.to_vec());
    assert_eq!(r, mine, "one draw of noise, in the first step only");
}

/// The paper's mixture ⅕N((−5,−5), I) + ⅘N((5,5), I), whose weights Langevin dynamics with the
/// exact score gets wrong (about ½ each; `toy_mixture` shows it). Each sampler here, with the
/// exact score of the marginals and started from the right distribution, puts 0.8 of its samples
/// in the (5, 5) mode, within K standard errors of √(0.16/n) = 0.009 at n = 2000 (the score-SDE
/// samplers from q_{σ₁}: σ₁ = 20, data + σ₁z; DDPM from N(0, I)). A sampler that lost the
/// weights, as Langevin does, would be more than 30 standard errors off.
#[test]
fn exact_scores_recover_the_mixture_weights() {
    let p = GaussianMixture::paper();
    let n = 2000;
    let sigmas = GeometricSigmas::new(20.0, 0.01, 500);
    let ve_score =
        |x: &Tensor, i: usize| closed_form_score(&p.perturbed(f64::from(sigmas.get(i))))(x);
    let mut r = rng(8);
    let start = tensor_from_array2(p.sample(n, &mut r))
        .add(&Tensor::randn(&[n, 2], &mut r).mul_scalar(sigmas.first()));
    let schedule = VpSchedule::ddpm();
    let vp_score = |x: &Tensor, t: usize| {
        let ab = schedule.alpha_bar(t);
        closed_form_score(&p.diffused(ab.sqrt(), (1.0 - ab).sqrt()))(x)
    };
    let results = [
        (
            "reverse diffusion",
            reverse_diffusion(ve_score, &start, &sigmas, 0, &mut rng(9)).x,
        ),
        (
            "probability flow",
            probability_flow(ve_score, &start, &sigmas, 0).x,
        ),
        (
            "DDPM",
            ddpm_ancestral(
                vp_score,
                &Tensor::randn(&[n, 2], &mut rng(10)),
                &schedule,
                0,
                &mut rng(11),
            )
            .x,
        ),
    ];
    let se = (0.16 / n as f64).sqrt();
    for (what, x) in results {
        let x = tensor_to_array2(&x);
        let f = mode_fraction(x.view(), p.means(), 1);
        assert!((f - 0.8).abs() <= K * se, "{what}: fraction in (5, 5) {f}");
        // And they sit in the modes with the data's spread: their mean log-density is the
        // data's, −H(p) = −ln 2π − 1 + Σ πₖ ln πₖ (the modes are 14 apart, so the entropy of the
        // weights plus that of a unit Gaussian in the plane, to within 10⁻¹⁰), within K standard
        // errors of the samples' own.
        let lp: Vec<f64> = p.log_prob(x.view()).iter().map(|&v| f64::from(v)).collect();
        let m = lp.iter().sum::<f64>() / n as f64;
        let var = lp.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let want = -(2.0 * std::f64::consts::PI).ln() - 1.0 + 0.8 * 0.8f64.ln() + 0.2 * 0.2f64.ln();
        assert!(
            (m - want).abs() <= K * (var / n as f64).sqrt(),
            "{what}: mean log p {m}, the data's {want}"
        );
    }
}

/// `diffused(a, σ)` is the law of a·x + σz: its mean and covariance are those of such draws
/// (within K standard errors), and with a = 1 it is `perturbed(σ)`.
#[test]
fn a_diffused_mixture_is_the_law_of_scaled_and_noised_draws() {
    let p = GaussianMixture::paper();
    assert_eq!(p.diffused(1.0, 3.0), p.perturbed(3.0));
    let (a, sigma, n) = (0.6, 0.8, 20000);
    let q = p.diffused(a, sigma);
    let mut r = rng(12);
    let x = p.sample(n, &mut r);
    let z = tensor_to_array2(&Tensor::randn(&[n, 2], &mut r));
    let y = x.mapv(|v| a as f32 * v) + z.mapv(|v| sigma as f32 * v);
    let (mean, cov) = (q.mean(), q.covariance());
    for j in 0..2 {
        let col: Vec<f64> = y.column(j).iter().map(|&v| f64::from(v)).collect();
        let m = col.iter().sum::<f64>() / n as f64;
        let se = (cov[[j, j]] / n as f64).sqrt();
        assert!(
            (m - mean[j]).abs() <= K * se,
            "mean {j}: {m} vs {}",
            mean[j]
        );
        let v = col.iter().map(|c| (c - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        // The variance of a sample variance is at most (κ − 1)σ⁴/n with kurtosis κ ≤ 3 here
        // (a mixture of two well-separated bumps is platykurtic), so 2σ⁴/n bounds it.
        let se_v = cov[[j, j]] * (2.0 / n as f64).sqrt();
        assert!(
            (v - cov[[j, j]]).abs() <= K * se_v,
            "var {j}: {v} vs {}",
            cov[[j, j]]
        );
    }
}

/// The stochastic samplers record as the flow does: the batch they start from, then the batch
/// after every `record_every` steps, the last of them the batch they return. 20 levels recorded
/// every 4 give the steps 0, 4, …, 20: six snapshots, the sixth the result; DDPM's 10 steps
/// recorded every 5 give three, and predictor–corrector counts levels, not corrector steps.
#[test]
fn the_stochastic_samplers_record_their_start_and_their_result() {
    let sigmas = GeometricSigmas::new(5.0, 0.1, 20);
    let x0 = normal(8, 0.0, 25.0, &mut rng(30));
    let rd = reverse_diffusion(gaussian_ve_score(&sigmas), &x0, &sigmas, 4, &mut rng(31));
    let corrector = AnnealedConfig {
        step_size: 0.01,
        n_steps_each: 3,
        record_every: 4,
    };
    let pc = predictor_corrector(
        gaussian_ve_score(&sigmas),
        &x0,
        &sigmas,
        &corrector,
        &mut rng(32),
    );
    let schedule = VpSchedule::linear(0.01, 0.2, 10);
    let score = |x: &Tensor, _: usize| x.neg();
    let ddpm = ddpm_ancestral(score, &x0, &schedule, 5, &mut rng(33));
    for (name, s, len) in [
        ("reverse diffusion", &rd, 6),
        ("predictor–corrector", &pc, 6),
        ("DDPM", &ddpm, 3),
    ] {
        assert_eq!(s.trajectory.len(), len, "{name}: snapshots");
        assert_eq!(s.trajectory[0].to_vec(), x0.to_vec(), "{name}: the start");
        assert_eq!(
            s.trajectory[len - 1].to_vec(),
            s.x.to_vec(),
            "{name}: the result"
        );
    }
}

/// A schedule needs 0 < β < 1 at both ends (β = 1 would divide by √(1 − β) = 0 in the sampler)
/// and at least two steps (one step has no spacing: β would come out NaN).
#[test]
fn a_vp_schedule_refuses_bad_betas_and_a_single_step() {
    for (first, last, n) in [
        (1e-4, 0.02, 1),
        (1e-4, 0.02, 0),
        (0.0, 0.02, 10),
        (1e-4, 1.0, 10),
        (f64::NAN, 0.02, 10),
    ] {
        let made = std::panic::catch_unwind(|| VpSchedule::linear(first, last, n));
        assert!(
            made.is_err(),
            "VpSchedule::linear({first}, {last}, {n}) was accepted"
        );
    }
}

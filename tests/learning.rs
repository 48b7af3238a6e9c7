//! End to end: small networks trained with the crate's objectives learn the scores the theory says
//! they learn. Each run is seeded, so it gives the same bits every time; the tolerances are margins
//! over the measured error, and well under the error of a network that learned something else.

mod common;

use ncsn::nn::{Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::score::{
    ContinuousNoiseMlp, GeometricSigmas, NoiseConditionalMlp, NoiseRange, ScoreMlp,
    anneal_dsm_loss, continuous_dsm_loss, dsm_loss, esm_loss, ssm_vr_loss,
};
use ncsn::toy::{ClosedFormScore, GaussianMixture, ToyDistribution};
use ncsn::{Tensor, no_grad};
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// `n` draws of the data at ±2, equally likely, as an `(n, 1)` batch.
fn two_points(n: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let x: Vec<f32> = (0..n)
        .map(|_| if rng.random_bool(0.5) { 2.0 } else { -2.0 })
        .collect();
    Tensor::from_vec(x, &[n, 1])
}

/// The data at ±2 perturbed with σ: ½N(−2, σ²) + ½N(2, σ²).
fn two_points_perturbed(sigma: f64) -> GaussianMixture {
    let means = Array2::from_shape_vec((2, 1), vec![-2.0, 2.0]).unwrap();
    GaussianMixture::new(&[0.5, 0.5], means, &[sigma, sigma])
}

/// The largest |learned − want| over the points `t` of a one-dimensional score.
fn worst_gap(net: &ScoreMlp, want: &GaussianMixture, t: &[f32]) -> f32 {
    let learned = no_grad(|| net.forward(&Tensor::from_vec(t.to_vec(), &[t.len(), 1]))).to_vec();
    let points = Array2::from_shape_vec((t.len(), 1), t.to_vec()).unwrap();
    let exact = want.score(points.view());
    common::worst(learned.iter().zip(exact.iter()).map(|(l, e)| (l - e).abs()))
}

/// Denoising score matching on data at ±2 (equal weights) with σ = 1 learns the score of the
/// *perturbed* data, q_σ = ½N(−2, 1) + ½N(2, 1), which the mixture type computes independently
/// of the book's formula (2 tanh(2x̃) − x̃). The targets −(x̃ − x)/σ² lie on two lines, and only
/// their mean given x̃ fits both. Measured: 0.125 at most on [−3, 3] (the tolerance is twice that,
/// for another CPU's rounding taking training elsewhere). Learning for the wrong σ would show far
/// above it: the score for σ = 0.5 differs by more than 1 at x̃ = 1, as the test checks.
#[test]
fn dsm_learns_the_score_of_the_perturbed_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 1, 64, &mut rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    for _ in 0..4000 {
        let x = two_points(256, &mut rng);
        opt.step(&dsm_loss(|x| net.forward(x), &x, 1.0, &mut rng).backward());
    }
    let q_sigma = two_points_perturbed(1.0);
    let t: Vec<f32> = (0..=60).map(|i| -3.0 + 0.1 * i as f32).collect();
    let gap = worst_gap(&net, &q_sigma, &t);
    assert!(gap < 0.25, "DSM: the learned score is {gap} from q_σ's");
    // The book's closed form is the same function.
    let points = Array2::from_shape_vec((t.len(), 1), t.clone()).unwrap();
    for (&t, &s) in t.iter().zip(q_sigma.score(points.view()).iter()) {
        let tanh_form = 2.0 * (2.0 * t).tanh() - t;
        assert!(
            (s - tanh_form).abs() <= 1e-5 * (1.0 + s.abs()),
            "{t}: {s} vs {tanh_form}"
        );
    }
    // And a mixture with the wrong noise is far from it, so the tolerance tells them apart.
    let narrow = two_points_perturbed(0.5);
    let p1 = Array2::from_shape_vec((1, 1), vec![1.0f32]).unwrap();
    let (right, wrong) = (
        q_sigma.score(p1.view())[[0, 0]],
        narrow.score(p1.view())[[0, 0]],
    );
    assert!((right - wrong).abs() > 1.0, "{right} vs {wrong}");
}

/// Sliced score matching (SSM-VR) and exact score matching learn the score of the data itself,
/// here the light-and-heavy mixture ⅕N(−2, 0.5²) + ⅘N(2, 0.5²) in one dimension, measured where
/// the data is: within two standard deviations of each mode's mean (95% of its mass), μ ± 2σ in
/// steps of 0.1σ, where the score runs from −4 to 4. Measured: at most 0.368 for SSM-VR (at
/// x = −1, the light mode's inner edge) and 0.429 for ESM (at x = 3, the heavy mode's outer edge),
/// against 4.43 untrained; the tolerance, 0.8, is nearly twice the larger, for another CPU's
/// rounding taking training elsewhere. (Out to the 1st and 99th percentiles, μ ± 2.33σ, SSM-VR
/// misses by 0.96 at x = −0.84, between the modes, where only the light mode's last percent of
/// data falls: the low-density failure again, and why the test stops at 2σ.)
///
/// A network that learned the wrong distribution fails. The data with extra noise σₑ = 0.35 has
/// modes N(μ, 0.25 + 0.1225) and, near a mode, the score −(x − μ)/0.3725 against the data's
/// −(x − μ)/0.25: at |x − μ| = 1 (2σ) they differ by 4 − 2.685 = 1.315, as the test checks on the
/// grid. A network as close to that score as these are to the data's (0.429) would still be at
/// least 1.315 − 0.429 = 0.886 from the data's score, over the tolerance.
#[test]
fn sliced_and_exact_score_matching_learn_the_data_score() {
    let means = Array2::from_shape_vec((2, 1), vec![-2.0, 2.0]).unwrap();
    let p = GaussianMixture::new(&[0.2, 0.8], means.clone(), &[0.5, 0.5]);
    let t: Vec<f32> = (0..=40)
        .flat_map(|i| {
            let u = -2.0 + 0.1 * i as f32; // μ + uσ, |u| ≤ 2
            [-2.0 + u * 0.5, 2.0 + u * 0.5]
        })
        .collect();
    let tolerance = 0.8;
    // The named wrong answer, the score of the data with extra noise 0.35, is far off on the grid.
    let blurred = GaussianMixture::new(&[0.2, 0.8], means, &[(0.25f64 + 0.35 * 0.35).sqrt(); 2]);
    let points = Array2::from_shape_vec((t.len(), 1), t.clone()).unwrap();
    let wrong = common::worst(
        (p.score(points.view()) - blurred.score(points.view()))
            .iter()
            .map(|g| g.abs()),
    );
    assert!(
        (wrong - 1.315).abs() < 0.01 && wrong > tolerance,
        "the blurred score is {wrong} from the data's"
    );
    for exact in [false, true] {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let store = ParamStore::new();
        let net = ScoreMlp::new(&store.root(), 1, 64, &mut rng);
        let untrained = worst_gap(&net, &p, &t);
        let mut opt = Adam::new(store.named_params(), AdamConfig::default());
        for _ in 0..4000 {
            let x = Tensor::from_array(p.sample(256, &mut rng).into_dyn());
            let loss = if exact {
                esm_loss(|x| net.forward(x), &x)
            } else {
                ssm_vr_loss(|x| net.forward(x), &x, 1, &mut rng).loss
            };
            opt.step(&loss.backward());
        }
        let gap = worst_gap(&net, &p, &t);
        let name = if exact { "ESM" } else { "SSM-VR" };
        assert!(untrained > 2.0, "{name}: untrained gap {untrained}");
        assert!(
            gap < tolerance,
            "{name}: the learned score is {gap} from the data's (tolerance {tolerance})"
        );
    }
}

/// The noise-conditional objective (Eq. 6, λ(σ) = σ²) trains one network for every level: on data
/// at ±2 with σ = 2, 1, 0.5, the network at level i learns the score of the data perturbed with
/// σᵢ, ½N(−2, σᵢ²) + ½N(2, σᵢ²), where that data is: within 2σᵢ of ±2, inside [−3, 3]. The gap is
/// in units of the level's scale 1/σᵢ (the targets −z/σᵢ have that size). Measured: 0.037, 0.087
/// and 0.076. Between the modes at σ = 0.5, where almost no perturbed data falls, the network is
/// off by 2.35 — the low-density failure, in one dimension, and why the test looks near the data.
/// A network that mixed up the levels would show: at x̃ = 1 the scores for σ = 0.5 and σ = 1
/// differ by 1.5 in units of 1/0.5, as the test checks.
#[test]
fn annealed_dsm_learns_every_level() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let sigmas = GeometricSigmas::new(2.0, 0.5, 3);
    let store = ParamStore::new();
    let net = NoiseConditionalMlp::new(&store.root(), 1, 64, sigmas.clone(), &mut rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    for _ in 0..4000 {
        let x = two_points(256, &mut rng);
        let loss = anneal_dsm_loss(|x, l| net.forward(x, l), &x, &sigmas, 2.0, &mut rng);
        opt.step(&loss.backward());
    }
    let t: Vec<f32> = (0..=60).map(|i| -3.0 + 0.1 * i as f32).collect();
    let points = Array2::from_shape_vec((t.len(), 1), t.clone()).unwrap();
    for (i, &sigma) in sigmas.sigmas().iter().enumerate() {
        let learned =
            no_grad(|| net.forward_level(&Tensor::from_vec(t.clone(), &[t.len(), 1]), i)).to_vec();
        let exact = two_points_perturbed(sigma as f64).score(points.view());
        let near_data = |t: f32| (t - 2.0).abs().min((t + 2.0).abs()) <= 2.0 * sigma;
        let gap = common::worst(
            t.iter()
                .zip(learned.iter().zip(exact.iter()))
                .filter(|(t, _)| near_data(**t))
                .map(|(_, (l, e))| (l - e).abs() * sigma),
        );
        assert!(
            gap < 0.25,
            "level {i} (σ = {sigma}): gap {gap} in units of 1/σ"
        );
    }
    let p1 = Array2::from_shape_vec((1, 1), vec![1.0f32]).unwrap();
    let at = |sigma: f64| two_points_perturbed(sigma).score(p1.view())[[0, 0]];
    assert!(
        (at(0.5) - at(1.0)).abs() * 0.5 > 1.0,
        "{} vs {}",
        at(0.5),
        at(1.0)
    );
}

/// One network for a continuum of levels: trained with DSM at σ drawn log-uniformly from
/// [0.25, 4] on data at ±2, the continuous-σ MLP learns the score of ½N(−2, σ²) + ½N(2, σ²) at
/// levels it never saw as such (every draw is a different σ), measured at five σ across the range,
/// near the data (within 2σ of ±2), in units of 1/σ as in `annealed_dsm_learns_every_level`.
/// The measure is the root-mean-square gap over those points: the largest single gap depends on
/// the seed far more (over seeds 0–19 it reached 0.50, where the root-mean-square gap stays
/// below 0.15 for every seed and σ; 0.089 with this seed). The bound 0.25 is a quarter of the
/// targets' scale. A network that sees σ only through the division of its output fails: at
/// x = 2.6 the exact scores at σ = 0.3 and 3.5 are −6.67 and −0.16, 1.95 apart in units of
/// 1/0.3, and such a network's root-mean-square gap reaches 0.68.
#[test]
fn continuous_dsm_learns_every_sigma_of_its_range() {
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let range = NoiseRange::new(0.25, 4.0);
    let store = ParamStore::new();
    let net = ContinuousNoiseMlp::new(&store.root(), 1, 64, range, 2.0, &mut rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    for _ in 0..4000 {
        let x = two_points(256, &mut rng);
        let loss = continuous_dsm_loss(|x, s| net.forward(x, s), &x, &range, 2.0, &mut rng);
        opt.step(&loss.backward());
    }
    let t: Vec<f32> = (0..=80).map(|i| -4.0 + 0.1 * i as f32).collect();
    let points = Array2::from_shape_vec((t.len(), 1), t.clone()).unwrap();
    let mut gaps = Vec::new();
    for sigma in [0.3f32, 0.6, 1.1, 2.0, 3.5] {
        let x = Tensor::from_vec(t.clone(), &[t.len(), 1]);
        let learned = no_grad(|| net.forward_sigma(&x, sigma)).to_vec();
        let exact = two_points_perturbed(sigma as f64).score(points.view());
        let near_data = |t: f32| (t - 2.0).abs().min((t + 2.0).abs()) <= 2.0 * sigma;
        let squares: Vec<f32> = t
            .iter()
            .zip(learned.iter().zip(exact.iter()))
            .filter(|(t, _)| near_data(**t))
            .map(|(_, (l, e))| ((l - e) * sigma).powi(2))
            .collect();
        gaps.push((squares.iter().sum::<f32>() / squares.len() as f32).sqrt());
    }
    assert!(
        gaps.iter().all(|&g| g < 0.25),
        "root-mean-square gaps in units of 1/σ at σ = 0.3 … 3.5: {gaps:?}"
    );
}

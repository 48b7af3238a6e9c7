//! Draws the toy figures: the paper's mixture (density, true scores, i.i.d. samples, the perturbed
//! density q_σ and its scores), the ring, and denoising score matching in one dimension (its
//! regression targets, the score it should learn and the score a small network learns), as SVG
//! files in `toy_out/` (or the directory given with `--out`, as in the other examples).
//!
//! ```text
//! cargo run --release --example toy_figures [-- --out DIR]
//! ```

use clap::Parser;
use ncsn::nn::{Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::plot::{self, ArrowScale, Figure, Grid, Series};
use ncsn::score::{ScoreMlp, dsm_loss};
use ncsn::toy::{ClosedFormScore, GaussianMixture, Ring, ToyDistribution, UniformSquare};
use ncsn::{Tensor, no_grad};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Draw the toy distributions' densities, scores and samples as SVG figures")]
struct Args {
    /// Directory for the figures.
    #[arg(long, value_name = "DIR", default_value = "toy_out")]
    out: std::path::PathBuf,
}

fn main() {
    let out = Args::parse().out;
    if let Err(e) = run(&out) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(out: &std::path::Path) -> ncsn::Result<()> {
    std::fs::create_dir_all(out).map_err(|e| ncsn::Error::io(out, e))?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);

    let p = GaussianMixture::paper();
    let fine = Grid::square(-8.0, 8.0, 120);
    let coarse = Grid::square(-8.0, 8.0, 21);
    let lp = p.log_prob(fine.points().view());

    // Fig. 2, left: the data density and its scores.
    plot::heatmap(
        out.join("mixture_density.svg"),
        &Figure::new("log p(x), ⅕N((−5,−5),I) + ⅘N((5,5),I)"),
        &fine,
        lp.view(),
    )?;
    let s = p.score(coarse.points().view());
    plot::quiver(
        out.join("mixture_scores.svg"),
        &Figure::new("Data scores ∇ₓ log p(x)"),
        &coarse,
        s.view(),
        ArrowScale::Linear,
        Some((&fine, lp.view())),
    )?;
    // Fig. 3, left: i.i.d. samples.
    let x = p.sample(1280, &mut rng);
    plot::scatter(
        out.join("mixture_samples.svg"),
        &Figure::new("i.i.d. samples"),
        x.view(),
        &fine,
        Some(lp.view()),
    )?;

    // The perturbed density q_σ fills the low-density region between the modes.
    let q = p.perturbed(5.0);
    let smooth = Grid::square(-8.0, 8.0, 80); // q_σ varies slowly: 80² background cells will do
    let lq = q.log_prob(smooth.points().view());
    plot::quiver(
        out.join("mixture_perturbed_scores.svg"),
        &Figure::new("Scores of q_σ, σ = 5"),
        &coarse,
        q.score(coarse.points().view()).view(),
        ArrowScale::Sqrt,
        Some((&smooth, lq.view())),
    )?;

    // The ring and the uniform square.
    let ring = Ring::new(4.0, 0.4);
    let grid = Grid::square(-6.0, 6.0, 120);
    let ring_grid = Grid::square(-6.0, 6.0, 80); // as for q_σ: smooth, half the file
    let lr = ring.log_prob(ring_grid.points().view());
    let arrows = Grid::square(-6.0, 6.0, 17);
    plot::quiver(
        out.join("ring_scores.svg"),
        &Figure::new("Ring: scores (√-scaled arrows)"),
        &arrows,
        ring.score(arrows.points().view()).view(),
        ArrowScale::Sqrt,
        Some((&ring_grid, lr.view())),
    )?;
    let sq = UniformSquare::new(-2.0, 2.0);
    plot::heatmap(
        out.join("square_density.svg"),
        &Figure::new("Uniform square: log p"),
        &grid,
        sq.log_prob(grid.points().view()).view(),
    )?;

    // Line plot: log p along the diagonal for a few σ.
    let series: Vec<Series> = [0.0, 1.0, 3.0, 10.0]
        .iter()
        .map(|&sigma| {
            let q = p.perturbed(sigma);
            let t: Vec<f64> = (0..=200).map(|i| -10.0 + 0.1 * i as f64).collect();
            let pts = ndarray::Array2::from_shape_fn((t.len(), 2), |(i, _)| t[i] as f32);
            let lq = q.log_prob(pts.view());
            Series::new(
                format!("σ = {sigma}"),
                t.iter()
                    .zip(lq.iter())
                    .map(|(&t, &l)| (t, (l as f64).exp()))
                    .collect(),
            )
        })
        .collect();
    plot::lines(
        out.join("diagonal_density.svg"),
        &Figure::new("q_σ(t, t) along the diagonal").labels("t", "density"),
        &series,
        true,
    )?;
    let worst = dsm_figure(out, &mut rng)?;
    ncsn::io::print_stdout(&format!(
        "DSM in one dimension: the learned score is within {worst:.3} of q_σ's on [−4, 4]\n\
         figures written to {}\n",
        out.display()
    ))
}

/// Denoising score matching on data at ±M (equal weights) with noise σ. The regression target
/// −(x̃ − x)/σ² of each pair lies on one of two lines of slope −1/σ², one per data point; its
/// mean given x̃ is the score of q_σ ([`two_point_score`]), and that is what a network trained
/// with DSM learns. Writes `dsm_targets.svg` and returns the largest gap between the learned and
/// the exact score on [−4, 4].
fn dsm_figure(out: &std::path::Path, rng: &mut ChaCha8Rng) -> ncsn::Result<f32> {
    const M: f32 = 2.0;
    const SIGMA: f32 = 1.0;
    // ANCHOR: dsm_training
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 1, 64, rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    for _ in 0..4000 {
        let x = two_points(M, 256, rng); // 256 draws of ±2
        opt.step(&dsm_loss(|x| net.forward(x), &x, SIGMA, rng).backward());
    }
    // ANCHOR_END: dsm_training

    // 400 pairs (x̃, −(x̃ − x)/σ²), the regression's inputs and targets.
    let targets = dsm_targets(&two_points(M, 400, rng).to_vec(), SIGMA, rng);
    let t: Vec<f32> = (0..=200).map(|i| -5.0 + 0.05 * i as f32).collect();
    let exact: Vec<f32> = t.iter().map(|&t| two_point_score(t, M, SIGMA)).collect();
    let learned = no_grad(|| net.forward(&Tensor::from_vec(t.clone(), &[t.len(), 1]))).to_vec();
    let curve = |v: &[f32]| {
        t.iter()
            .zip(v)
            .map(|(&t, &v)| (t as f64, v as f64))
            .collect()
    };
    plot::lines(
        out.join("dsm_targets.svg"),
        &Figure::new(format!(
            "Denoising score matching: data at ±{M}, σ = {SIGMA}"
        ))
        .labels("x̃", "score"),
        &[
            Series::dots("targets −(x̃ − x)/σ²", targets),
            Series::new("score of q_σ (exact)", curve(&exact)),
            Series::new("learned by DSM", curve(&learned)),
        ],
        false,
    )?;
    Ok(largest_gap(&t, &exact, &learned, 4.0))
}

/// `n` draws of ±`m`, each sign with probability ½, as an `(n, 1)` tensor.
fn two_points(m: f32, n: usize, rng: &mut ChaCha8Rng) -> Tensor {
    let x: Vec<f32> = (0..n)
        .map(|_| if rng.random_bool(0.5) { m } else { -m })
        .collect();
    Tensor::from_vec(x, &[n, 1])
}

/// The score of q_σ, the data ±`m` (equal weights) blurred by N(0, σ²), at `t`:
/// (m tanh(m t/σ²) − t)/σ². The posterior mean of the data point given t is m tanh(m t/σ²), and
/// Tweedie's formula turns it into the score.
fn two_point_score(t: f32, m: f32, sigma: f32) -> f32 {
    let var = sigma * sigma;
    (m * (m * t / var).tanh() - t) / var
}

/// One noisy copy x̃ = x + σz of each data point x, paired with its regression target
/// −(x̃ − x)/σ², as `(x̃, target)` points for the figure.
fn dsm_targets(x: &[f32], sigma: f32, rng: &mut ChaCha8Rng) -> Vec<(f64, f64)> {
    x.iter()
        .map(|&x| {
            let z: f32 = rng.sample(rand_distr::StandardNormal);
            let x_tilde = x + sigma * z;
            (x_tilde as f64, (-(x_tilde - x) / (sigma * sigma)) as f64)
        })
        .collect()
}

/// The largest |exact − learned| over the points of `t` within [−`half_width`, `half_width`];
/// NaN if any gap there is NaN, so that a diverged network does not report a gap of 0.
fn largest_gap(t: &[f32], exact: &[f32], learned: &[f32], half_width: f32) -> f32 {
    t.iter()
        .zip(exact.iter().zip(learned))
        .filter(|(t, _)| t.abs() <= half_width)
        .map(|(_, (e, l))| (e - l).abs())
        .fold(0.0, |m, g| if g > m || g.is_nan() { g } else { m })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// log q_σ(t) for the data ±m (equal weights) blurred by N(0, σ²), in f64 and without the
    /// normalising constant (it does not depend on t).
    fn log_q(t: f64, m: f64, sigma: f64) -> f64 {
        let a = -(t - m).powi(2) / (2.0 * sigma * sigma);
        let b = -(t + m).powi(2) / (2.0 * sigma * sigma);
        let top = a.max(b);
        top + (0.5 * (a - top).exp() + 0.5 * (b - top).exp()).ln()
    }

    /// The closed form against two independent computations in f64, at three (m, σ):
    /// - a central difference of log q_σ with step 10⁻⁴, whose error (h²/6 times the score's
    ///   second derivative) is below 10⁻⁶ here;
    /// - what the regression learns, the mean target given x̃ with each data point weighted by its
    ///   posterior probability N(x̃; x, σ²)/Σ (Tweedie's formula).
    ///
    /// The formula's own rounding in f32 is about 10⁻⁶ of the score's size, so 10⁻⁴ (1 + |s|)
    /// leaves room for both and none for a wrong factor.
    #[test]
    fn the_two_point_score_is_the_derivative_of_log_q_and_the_mean_target() {
        for (m, sigma) in [(2.0f64, 1.0f64), (1.0, 0.5), (3.0, 2.0)] {
            for i in 0..=100 {
                let t = -5.0 + 0.1 * i as f64;
                let h = 1e-4;
                let fd = (log_q(t + h, m, sigma) - log_q(t - h, m, sigma)) / (2.0 * h);
                let w = |x: f64| (-(t - x).powi(2) / (2.0 * sigma * sigma)).exp();
                let target = |x: f64| -(t - x) / (sigma * sigma);
                let mean = (w(m) * target(m) + w(-m) * target(-m)) / (w(m) + w(-m));
                let s = two_point_score(t as f32, m as f32, sigma as f32) as f64;
                for (what, want) in [("d/dt log q", fd), ("the mean target", mean)] {
                    assert!(
                        (s - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "m = {m}, σ = {sigma}, t = {t}: {s} against {what} = {want}"
                    );
                }
            }
        }
    }

    /// Every pair lies on its data point's line (x̃ + σ² · target is ±m), both lines are hit, and
    /// the noise has variance σ²: over 4,000 pairs the mean of (x̃ − x)² is within 5 standard
    /// errors (σ² √(2/n) each) of σ². σ = 0.5, so a noise of σ² instead of σ would be far off.
    #[test]
    fn dsm_targets_lie_on_two_lines_with_noise_of_variance_sigma_squared() {
        let (m, sigma, n) = (2.0f32, 0.5f32, 4000);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let x = two_points(m, n, &mut rng).to_vec();
        assert!(x.iter().all(|&x| x == m || x == -m));
        let plus = x.iter().filter(|&&x| x == m).count() as f64 / n as f64;
        assert!(
            (plus - 0.5).abs() < 5.0 * (0.25 / n as f64).sqrt(),
            "share of +m: {plus}"
        );
        let pairs = dsm_targets(&x, sigma, &mut rng);
        assert_eq!(pairs.len(), n);
        let var = f64::from(sigma * sigma);
        let mut sq = 0.0;
        for (&x, &(x_tilde, target)) in x.iter().zip(&pairs) {
            let on_line = x_tilde + var * target;
            assert!(
                (on_line - f64::from(x)).abs() < 1e-5,
                "({x_tilde}, {target}) from {x}"
            );
            sq += (x_tilde - f64::from(x)).powi(2);
        }
        let mean_sq = sq / n as f64;
        let se = var * (2.0 / n as f64).sqrt();
        assert!(
            (mean_sq - var).abs() < 5.0 * se,
            "mean (x̃ − x)² = {mean_sq}, want {var}"
        );
    }

    #[test]
    fn the_largest_gap_looks_only_inside_the_window_and_keeps_a_nan() {
        let t = [-5.0, -4.0, 0.0, 4.0, 4.5];
        let exact = [0.0; 5];
        assert_eq!(
            largest_gap(&t, &exact, &[9.0, 0.5, -0.25, 0.75, 9.0], 4.0),
            0.75
        );
        assert_eq!(
            largest_gap(&t, &exact, &[9.0, -1.0, 0.0, 0.0, 9.0], 4.0),
            1.0
        );
        let nan_first = largest_gap(&t, &exact, &[0.0, f32::NAN, 2.0, 0.0, 0.0], 4.0);
        let nan_last = largest_gap(&t, &exact, &[0.0, 2.0, 0.0, f32::NAN, 0.0], 4.0);
        assert!(
            nan_first.is_nan() && nan_last.is_nan(),
            "{nan_first}, {nan_last}"
        );
        assert_eq!(
            largest_gap(&t, &exact, &[f32::NAN, 0.0, 0.0, 0.0, 0.0], 4.0),
            0.0
        );
    }
}

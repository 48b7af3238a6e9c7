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
/// mean given x̃ is the score of q_σ, (M tanh(M x̃/σ²) − x̃)/σ² (the posterior mean of x is
/// M tanh(M x̃/σ²): Tweedie's formula), and that is what a network trained with DSM learns.
/// Writes `dsm_targets.svg` and returns the largest gap between the learned and the exact score
/// on [−4, 4].
fn dsm_figure(out: &std::path::Path, rng: &mut ChaCha8Rng) -> ncsn::Result<f32> {
    const M: f32 = 2.0;
    const SIGMA: f32 = 1.0;
    let data = |n: usize, rng: &mut ChaCha8Rng| {
        let x: Vec<f32> = (0..n)
            .map(|_| if rng.random_bool(0.5) { M } else { -M })
            .collect();
        Tensor::from_vec(x, &[n, 1])
    };
    // ANCHOR: dsm_training
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 1, 64, rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    for _ in 0..4000 {
        let x = data(256, rng); // 256 draws of ±2
        opt.step(&dsm_loss(|x| net.forward(x), &x, SIGMA, rng).backward());
    }
    // ANCHOR_END: dsm_training

    // 400 pairs (x̃, −(x̃ − x)/σ²), the regression's inputs and targets.
    let x = data(400, rng).to_vec();
    let targets: Vec<(f64, f64)> = x
        .iter()
        .map(|&x| {
            let z: f32 = rng.sample(rand_distr::StandardNormal);
            let x_tilde = x + SIGMA * z;
            (x_tilde as f64, (-(x_tilde - x) / (SIGMA * SIGMA)) as f64)
        })
        .collect();
    let t: Vec<f32> = (0..=200).map(|i| -5.0 + 0.05 * i as f32).collect();
    let exact: Vec<f32> = t
        .iter()
        .map(|&t| (M * (M * t / (SIGMA * SIGMA)).tanh() - t) / (SIGMA * SIGMA))
        .collect();
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
    Ok(t.iter()
        .zip(exact.iter().zip(&learned))
        .filter(|(t, _)| t.abs() <= 4.0)
        .map(|(_, (e, l))| (e - l).abs())
        // NaN-propagating: a diverged network must not report a gap of 0.
        .fold(0.0, |m, g| if g > m || g.is_nan() { g } else { m }))
}

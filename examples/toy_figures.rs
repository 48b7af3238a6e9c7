//! Draws the toy figures: the paper's mixture (density, true scores, i.i.d. samples, the perturbed
//! density q_σ and its scores) and the ring, as SVG files in `toy_out/` (or the directory given as
//! the first argument).
//!
//! ```text
//! cargo run --release --example toy_figures [out_dir]
//! ```

use clap::Parser;
use ncsn::plot::{self, ArrowScale, Figure, Grid, Series};
use ncsn::toy::{ClosedFormScore, GaussianMixture, Ring, ToyDistribution, UniformSquare};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Draw the toy distributions' densities, scores and samples as SVG figures")]
struct Args {
    /// Directory for the figures.
    #[arg(default_value = "toy_out")]
    out_dir: std::path::PathBuf,
}

fn main() {
    let out = Args::parse().out_dir;
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
    let lq = q.log_prob(fine.points().view());
    plot::quiver(
        out.join("mixture_perturbed_scores.svg"),
        &Figure::new("Scores of q_σ, σ = 5"),
        &coarse,
        q.score(coarse.points().view()).view(),
        ArrowScale::Sqrt,
        Some((&fine, lq.view())),
    )?;

    // The ring and the uniform square.
    let ring = Ring::new(4.0, 0.4);
    let grid = Grid::square(-6.0, 6.0, 120);
    let lr = ring.log_prob(grid.points().view());
    let arrows = Grid::square(-6.0, 6.0, 17);
    plot::quiver(
        out.join("ring_scores.svg"),
        &Figure::new("Ring: scores (√-scaled arrows)"),
        &arrows,
        ring.score(arrows.points().view()).view(),
        ArrowScale::Sqrt,
        Some((&grid, lr.view())),
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
    println!("figures written to {}", out.display());
    Ok(())
}

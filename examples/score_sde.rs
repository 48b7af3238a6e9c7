//! Beyond annealed Langevin dynamics: the paper's toy mixture sampled by reversing a diffusion
//! (Song et al., 2021: reverse diffusion, predictor–corrector sampling and the probability-flow
//! ODE; Ho et al., 2020: DDPM's ancestral sampler), each with the exact score of its noised
//! marginals, beside Langevin and annealed Langevin dynamics with exact scores. Prints what
//! fraction of each sampler's points lands in the heavy mode (the data's is 0.8) and the mean
//! log-density of its points, and writes a scatter plot for each of the three samplers on 1000
//! levels and the paths of the two VE ones to `score_sde_out/` (or `--out DIR`).
//!
//! ```text
//! cargo run --release --example score_sde [-- --out DIR --samples N --seed S]
//! ```

use clap::Parser;
use ncsn::Tensor;
use ncsn::plot::{self, Figure, Grid};
use ncsn::sample::{
    AnnealedConfig, LangevinConfig, Samples, VpSchedule, annealed_langevin, ddpm_ancestral,
    langevin_dynamics, predictor_corrector, probability_flow, reverse_diffusion,
};
use ncsn::score::{GeometricSigmas, closed_form_score, tensor_to_array2};
use ncsn::toy::{ClosedFormScore, GaussianMixture, mode_fraction};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Sample the toy mixture by reversing a diffusion (score SDEs, DDPM)")]
struct Args {
    /// Directory for the figures.
    #[arg(long, value_name = "DIR", default_value = "score_sde_out")]
    out: std::path::PathBuf,
    /// Points drawn by each sampler.
    #[arg(long, default_value_t = 1280, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    samples: u64,
    /// Seed of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// One sampler's row of the table.
struct Row {
    name: &'static str,
    evaluations: usize,
    x: Tensor,
    trajectory: Vec<Tensor>,
    secs: f64,
}

fn run(args: &Args) -> ncsn::Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| ncsn::Error::io(&args.out, e))?;
    let n = args.samples as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let p = GaussianMixture::paper();
    let timed = |name, evaluations, f: &mut dyn FnMut() -> Samples| {
        let t0 = Instant::now();
        let Samples { x, trajectory } = f();
        Row {
            name,
            evaluations,
            x,
            trajectory,
            secs: t0.elapsed().as_secs_f64(),
        }
    };
    let mut rows = Vec::new();

    // The paper's Fig. 3 samplers, from uniform points on [−8, 8]².
    let start = Tensor::uniform(&[n, 2], -8.0, 8.0, &mut rng);
    rows.push(timed("Langevin, ε = 0.1, T = 1000", 1000, &mut || {
        langevin_dynamics(
            closed_form_score(&p),
            &start,
            &LangevinConfig::paper_toy(),
            &mut rng,
        )
    }));
    let fig3 = GeometricSigmas::new(20.0, 1.0, 10);
    rows.push(timed("annealed Langevin, σ 20 → 1", 1000, &mut || {
        annealed_langevin(
            |x, i| ve_score(&p, &fig3, x, i),
            &start,
            &fig3,
            &AnnealedConfig::paper_toy(),
            &mut rng,
        )
    }));

    // ANCHOR: ve_samplers
    // The VE SDE on 1000 levels from σ = 50 (about three times the distance between the modes)
    // down to 0.01, started from its prior N(0, 50² I): no data is needed to start. The batch is
    // recorded every 10 levels, for the figure of the paths.
    let levels = GeometricSigmas::new(50.0, 0.01, 1000);
    let prior = Tensor::randn(&[n, 2], &mut rng).mul_scalar(levels.first());
    let reverse = timed("reverse diffusion (VE)", 1000, &mut || {
        reverse_diffusion(
            |x, i| ve_score(&p, &levels, x, i),
            &prior,
            &levels,
            10,
            &mut rng,
        )
    });
    let flow = timed("probability flow (VE, Heun)", 2 * 999, &mut || {
        probability_flow(|x, i| ve_score(&p, &levels, x, i), &prior, &levels, 10)
    });
    // ANCHOR_END: ve_samplers
    // ANCHOR: ddpm_sampler
    // DDPM's 1000 steps, started from N(0, I); the score of x_t is that of the mixture scaled by
    // √ᾱ_t and blurred by √(1 − ᾱ_t).
    let schedule = VpSchedule::ddpm();
    let noise = Tensor::randn(&[n, 2], &mut rng);
    let ddpm = timed("DDPM ancestral (VP)", 1000, &mut || {
        let score = |x: &Tensor, t: usize| {
            let ab = schedule.alpha_bar(t);
            closed_form_score(&p.diffused(ab.sqrt(), (1.0 - ab).sqrt()))(x)
        };
        ddpm_ancestral(score, &noise, &schedule, 0, &mut rng)
    });
    // ANCHOR_END: ddpm_sampler

    // The density behind the points on a 48 × 48 grid: enough to show the modes, and an SVG
    // file of about a hundred kilobytes.
    let grid = Grid::square(-8.0, 8.0, 48);
    let density = p.log_prob(grid.points().view());
    for (row, file) in [
        (&reverse, "sde_reverse_diffusion.svg"),
        (&flow, "sde_probability_flow.svg"),
        (&ddpm, "sde_ddpm.svg"),
    ] {
        let title = format!("{}: {:.2} in (5, 5)", row.name, heavy_fraction(&p, &row.x));
        plot::scatter(
            args.out.join(file),
            &Figure::new(title),
            tensor_to_array2(&row.x).view(),
            &grid,
            Some(density.view()),
        )?;
    }
    // The paths of the first 40 points, where they cross the frame: the flow's are smooth, the
    // reverse SDE's jitter with the noise drawn at each level.
    for (row, file) in [
        (&reverse, "sde_paths_reverse_diffusion.svg"),
        (&flow, "sde_paths_probability_flow.svg"),
    ] {
        plot::paths(
            args.out.join(file),
            &Figure::new(format!("{}: paths of 40 points", row.name)),
            &paths_of(&row.trajectory, 40.min(n)),
            &grid,
            Some(density.view()),
        )?;
    }
    rows.extend([reverse, flow, ddpm]);

    // ANCHOR: pc_sampler
    // NCSN's own ten levels, σ 20 → 1, from N(0, 20² I): the predictor alone, and the predictor
    // after the T = 100 Langevin steps (ε = 0.1) of annealed Langevin dynamics at each level.
    let prior = Tensor::randn(&[n, 2], &mut rng).mul_scalar(fig3.first());
    let coarse = timed("reverse diffusion, 10 levels", 10, &mut || {
        reverse_diffusion(|x, i| ve_score(&p, &fig3, x, i), &prior, &fig3, 0, &mut rng)
    });
    let pc = timed("predictor–corrector, 10 levels", 1010, &mut || {
        let corrector = AnnealedConfig::paper_toy();
        predictor_corrector(
            |x, i| ve_score(&p, &fig3, x, i),
            &prior,
            &fig3,
            &corrector,
            &mut rng,
        )
    });
    // ANCHOR_END: pc_sampler
    // Shown beside annealed Langevin dynamics, the corrector alone on the same levels.
    rows.splice(2..2, [coarse, pc]);

    let entropy =
        -(0.8f64 * 0.8f64.ln() + 0.2 * 0.2f64.ln()) + (2.0 * std::f64::consts::PI).ln() + 1.0;
    let mut table = format!(
        "{:<32} {:>12} {:>14} {:>12} {:>8}\n",
        "sampler (exact scores)", "evaluations", "in (5, 5)", "mean log p", "time (s)"
    );
    for row in &rows {
        table += &format!(
            "{:<32} {:>12} {:>14.3} {:>12.3} {:>8.2}\n",
            row.name,
            row.evaluations,
            heavy_fraction(&p, &row.x),
            mean_log_prob(&p, &row.x),
            row.secs
        );
    }
    table += &format!(
        "{:<32} {:>12} {:>14.3} {:>12.3}\n\nfigures written to {}\n",
        "the data",
        "",
        0.8,
        -entropy,
        args.out.display()
    );
    ncsn::io::print_stdout(&table)
}

/// The score of the mixture perturbed at level i, s(x, σᵢ), in closed form.
fn ve_score(p: &GaussianMixture, sigmas: &GeometricSigmas, x: &Tensor, i: usize) -> Tensor {
    closed_form_score(&p.perturbed(f64::from(sigmas.get(i))))(x)
}

/// The paths of the first `k` points through the recorded batches.
fn paths_of(trajectory: &[Tensor], k: usize) -> Vec<Vec<(f64, f64)>> {
    let snapshots: Vec<_> = trajectory.iter().map(tensor_to_array2).collect();
    (0..k)
        .map(|i| {
            snapshots
                .iter()
                .map(|a| (f64::from(a[[i, 0]]), f64::from(a[[i, 1]])))
                .collect()
        })
        .collect()
}

/// The fraction of the points nearest to the mode at (5, 5).
fn heavy_fraction(p: &GaussianMixture, x: &Tensor) -> f64 {
    mode_fraction(tensor_to_array2(x).view(), p.means(), 1)
}

/// The mean of log p over the finite points: the data's own is −H(p).
fn mean_log_prob(p: &GaussianMixture, x: &Tensor) -> f64 {
    let lp = p.log_prob(tensor_to_array2(x).view());
    let finite: Vec<f64> = lp
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| f64::from(v))
        .collect();
    finite.iter().sum::<f64>() / finite.len().max(1) as f64
}

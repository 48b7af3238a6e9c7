//! Beyond annealed Langevin dynamics: the paper's toy mixture sampled by reversing a diffusion
//! (Song et al., 2021: reverse diffusion, predictor–corrector sampling and the probability-flow
//! ODE; Ho et al., 2020: DDPM's ancestral sampler), each with the exact score of its noised
//! marginals, beside Langevin and annealed Langevin dynamics with exact scores. Prints what
//! fraction of each sampler's points lands in the heavy mode (the data's is 0.8) and the mean
//! log-density of its points, and writes a scatter plot for each of the three samplers on 1000
//! levels and the paths of the two VE ones to `score_sde_out/` (or `--out DIR`). Then it scores
//! fresh draws of the data by the probability flow's log-likelihood, with the exact score.
//!
//! Last, it trains one network for every σ from 0.01 to 200 (`ContinuousNoiseMlp`, DSM at
//! log-uniform σ) and runs the same samplers with it in place of the exact scores: a second table,
//! a figure of the network's error against σ, scatter plots of its samples, and its own
//! log-likelihood of the same fresh draws. `--train-steps 0` skips that part.
//!
//! ```text
//! cargo run --release --example score_sde [-- --out DIR --samples N --seed S --train-steps K]
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ncsn::Tensor;
use ncsn::nn::ParamStore;
use ncsn::optim::{Adam, AdamConfig, Ema};
use ncsn::plot::{self, Figure, Grid, Series};
use ncsn::sample::{
    AnnealedConfig, LangevinConfig, Samples, VpSchedule, annealed_langevin, ddpm_ancestral,
    exact_divergence, flow_log_likelihood, gaussian_log_prob, langevin_dynamics,
    predictor_corrector, probability_flow, reverse_diffusion, vp_from_ve,
};
use ncsn::score::{
    ContinuousNoiseMlp, GeometricSigmas, NoiseRange, closed_form_score, continuous_dsm_loss,
    tensor_from_array2, tensor_to_array2,
};
use ncsn::toy::{ClosedFormScore, GaussianMixture, ToyDistribution, mode_fraction};
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
    /// Training steps of the network for every σ (0: exact scores only).
    #[arg(long, default_value_t = 8000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    train_steps: u64,
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

    let entropy = separated_entropy(p.weights(), 2);
    let mut table = format!(
        "{:<32} {:>12} {:>14} {:>12} {:>12} {:>8}\n",
        "sampler (exact scores)",
        "evaluations",
        "in (5, 5)",
        "off the modes",
        "mean log p",
        "time (s)"
    );
    for row in &rows {
        table += &format!(
            "{:<32} {:>12} {:>14.3} {:>12.4} {:>12.3} {:>8.2}\n",
            row.name,
            row.evaluations,
            heavy_fraction(&p, &row.x),
            off_the_modes(&p, &row.x),
            mean_log_prob(&p, &row.x),
            row.secs
        );
    }
    table += &format!(
        "{:<32} {:>12} {:>14.3} {:>12.4} {:>12.3}\n",
        "the data",
        "",
        0.8,
        unit_gaussian_tail(OFF_THE_MODES),
        -entropy,
    );
    ncsn::io::print_stdout(&table)?;
    flow_likelihoods(args)?;
    if args.train_steps > 0 {
        learned(args, &p, &mut rng)?;
    }
    ncsn::io::print_stdout(&format!("\nfigures written to {}\n", args.out.display()))
}

/// Trains one network for every σ of a range, then samples with it as with the exact scores.
fn learned(args: &Args, p: &GaussianMixture, rng: &mut ChaCha8Rng) -> ncsn::Result<()> {
    let n = args.samples as usize;
    // ANCHOR: learned_training
    // σ from 0.01 to 200: past DDPM's largest VE level (158) and the VE prior's 50. The input
    // scale uses the data's standard deviation per coordinate, √17 ≈ 4.1 for this mixture.
    let range = NoiseRange::new(0.01, 200.0);
    let data_std = (p.covariance().diag().mean().unwrap_or(1.0)).sqrt() as f32;
    let store = ParamStore::new();
    let net = ContinuousNoiseMlp::new(&store.root(), 2, 128, range, data_std, rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let mut ema = Ema::new(store.named_params(), 0.999);
    let steps = args.train_steps as usize;
    let bar = progress(steps, "DSM at log-uniform σ");
    let t0 = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        // A cosine decay of the step size, from Adam's 10⁻³ to 0 at the last step.
        opt.config.lr = cosine_lr(step, steps);
        let x = tensor_from_array2(p.sample(512, rng));
        let loss = continuous_dsm_loss(|x, s| net.forward(x, s), &x, &range, 2.0, rng);
        opt.step(&loss.backward());
        ema.update();
        losses.push(loss.item());
        if step % 100 == 0 || step + 1 == steps {
            bar.set_prefix(format!("{:.3}", recent_mean(&losses)));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    ema.copy_to_params(); // sample with the average of the last steps' weights
    // ANCHOR_END: learned_training
    let train_secs = t0.elapsed().as_secs_f64();

    // How far the network is from the exact score, level by level: the relative error
    // E‖s_θ − s‖²/E‖s‖² over points drawn from q_σ.
    let probe = GeometricSigmas::new(range.max(), range.min(), 41);
    let mut error = Vec::new();
    for &sigma in probe.sigmas() {
        let q = p.perturbed(f64::from(sigma));
        let y = tensor_from_array2(q.sample(2000, rng));
        let exact = closed_form_score(&q)(&y);
        let diff = ncsn::no_grad(|| net.forward_sigma(&y, sigma)) // no graph: nothing to train
            .sub(&exact)
            .square()
            .sum_all()
            .item();
        error.push((
            f64::from(sigma).log10(),
            f64::from(diff / exact.square().sum_all().item()),
        ));
    }
    plot::lines(
        args.out.join("sde_learned_error.svg"),
        &Figure::new("The learned score against the exact one, by noise level")
            .labels("log₁₀ σ", "relative squared error"),
        &[Series::new("E‖s_θ − s‖² / E‖s‖² over q_σ", error.clone())],
        true,
    )?;

    // ANCHOR: learned_samplers
    let score = |x: &Tensor, sigma: f32| net.forward_sigma(x, sigma); // the samplers record no graph
    let levels = range.levels(1000);
    let fig3 = GeometricSigmas::new(20.0, 1.0, 10);
    let schedule = VpSchedule::ddpm();
    let mut rows = Vec::new();
    let mut run = |name: &'static str, f: &mut dyn FnMut(&mut ChaCha8Rng) -> Samples| {
        let t0 = Instant::now();
        let x = f(rng).x;
        rows.push((name, x, t0.elapsed().as_secs_f64()));
    };
    run("annealed Langevin, σ 20 → 1", &mut |rng| {
        let start = Tensor::uniform(&[n, 2], -8.0, 8.0, rng);
        let at = |x: &Tensor, i| score(x, fig3.get(i));
        annealed_langevin(at, &start, &fig3, &AnnealedConfig::paper_toy(), rng)
    });
    run("predictor–corrector, 10 levels", &mut |rng| {
        let prior = Tensor::randn(&[n, 2], rng).mul_scalar(fig3.first());
        let at = |x: &Tensor, i| score(x, fig3.get(i));
        predictor_corrector(at, &prior, &fig3, &AnnealedConfig::paper_toy(), rng)
    });
    run("reverse diffusion (VE)", &mut |rng| {
        let prior = Tensor::randn(&[n, 2], rng).mul_scalar(levels.first());
        reverse_diffusion(|x, i| score(x, levels.get(i)), &prior, &levels, 0, rng)
    });
    run("probability flow (VE, Heun)", &mut |rng| {
        let prior = Tensor::randn(&[n, 2], rng).mul_scalar(levels.first());
        probability_flow(|x, i| score(x, levels.get(i)), &prior, &levels, 0)
    });
    run("DDPM ancestral (VP)", &mut |rng| {
        let noise = Tensor::randn(&[n, 2], rng);
        ddpm_ancestral(vp_from_ve(score, &schedule), &noise, &schedule, 0, rng)
    });
    // ANCHOR_END: learned_samplers

    let grid = Grid::square(-8.0, 8.0, 48);
    let density = p.log_prob(grid.points().view());
    for (name, x, _) in &rows[2..] {
        let file = match *name {
            "reverse diffusion (VE)" => "sde_learned_reverse_diffusion.svg",
            "probability flow (VE, Heun)" => "sde_learned_probability_flow.svg",
            _ => "sde_learned_ddpm.svg",
        };
        let title = format!(
            "{name}, learned score: {:.2} in (5, 5)",
            heavy_fraction(p, x)
        );
        plot::scatter(
            args.out.join(file),
            &Figure::new(title),
            tensor_to_array2(x).view(),
            &grid,
            Some(density.view()),
        )?;
    }

    // ANCHOR: learned_likelihood
    // The model's own log-likelihood of fresh data (the draws `flow_likelihoods` scores with the
    // exact score): the flow from σ = 0.01 up to 200 with the network's score and its exact
    // divergence by autograd, and the prior N(0, 200² I) at the top.
    let data = tensor_from_array2(p.sample(n, &mut ChaCha8Rng::seed_from_u64(args.seed + 1)));
    let flow_levels = range.levels(500);
    let t0 = Instant::now();
    let model = flow_log_likelihood(
        exact_divergence(|x, i| net.forward_sigma(x, flow_levels.get(i))),
        &data,
        &flow_levels,
        |z| gaussian_log_prob(z, flow_levels.first()),
    );
    let nll_secs = t0.elapsed().as_secs_f64();
    let model_nats = f64::from(model.log_likelihood.mean_all().item());
    let exact_nats = mean_log_prob(p, &data);
    // ANCHOR_END: learned_likelihood
    let at_least = |lo: f64| largest_error_from(&error, lo);
    let mut table = format!(
        "\none network for every σ in [0.01, 200]: {steps} steps in {train_secs:.1} s, mean of the \
         last 100 losses {:.3}\nrelative squared error of its score: at most {:.4} for σ ≥ 0.1, \
         {:.3} for σ ≥ 0.01\nits log-likelihood of the {n} fresh draws by the flow (500 levels): \
         {model_nats:.4} nats, {:.4} bits/dim, in {nll_secs:.1} s (exact log p: {exact_nats:.4})\n\n",
        recent_mean(&losses),
        at_least(-1.0 - 1e-9),
        at_least(f64::NEG_INFINITY),
        bits_per_dim(model_nats, 2),
    );
    table += &format!(
        "{:<32} {:>14} {:>12} {:>12} {:>8}\n",
        "sampler (learned score)", "in (5, 5)", "off the modes", "mean log p", "time (s)"
    );
    for (name, x, secs) in &rows {
        table += &format!(
            "{:<32} {:>14.3} {:>12.4} {:>12.3} {:>8.2}\n",
            name,
            heavy_fraction(p, x),
            off_the_modes(p, x),
            mean_log_prob(p, x),
            secs
        );
    }
    ncsn::io::print_stdout(&table)
}

/// A progress bar on stderr, with the recent loss as its prefix.
fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} {elapsed_precise} loss {prefix}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
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

/// How far from both modes' centres a point is counted off the modes: 3.5 of the components'
/// standard deviations, 1.
const OFF_THE_MODES: f64 = 3.5;

/// The fraction of the points farther than [`OFF_THE_MODES`] from both modes' centres: where the
/// data has almost no mass, between the modes or beyond them.
fn off_the_modes(p: &GaussianMixture, x: &Tensor) -> f64 {
    let x = tensor_to_array2(x);
    let far = x
        .outer_iter()
        .filter(|row| {
            p.means().outer_iter().all(|m| {
                let d2: f64 = row
                    .iter()
                    .zip(&m)
                    .map(|(&a, &b)| (f64::from(a) - b).powi(2))
                    .sum();
                d2 > OFF_THE_MODES * OFF_THE_MODES
            })
        })
        .count();
    far as f64 / x.nrows().max(1) as f64
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

/// The probability that a point of a unit Gaussian in the plane lies farther than `r` from its
/// centre, exp(−r²/2) (‖z‖²/2 is exponential with mean 1): the data's share off the modes, up
/// to the other mode's tail, which is far smaller.
fn unit_gaussian_tail(r: f64) -> f64 {
    (-r * r / 2.0).exp()
}

/// The entropy of a mixture of unit Gaussians in `dim` dimensions with these weights whose
/// components do not overlap: that of the weights, −Σ πₖ ln πₖ, plus a component's, (D/2) ln 2πe.
fn separated_entropy(weights: &[f64], dim: usize) -> f64 {
    -weights.iter().map(|w| w * w.ln()).sum::<f64>()
        + dim as f64 / 2.0 * ((2.0 * std::f64::consts::PI).ln() + 1.0)
}

/// A log-likelihood of `nats` per point in bits per dimension, −nats / (D ln 2).
fn bits_per_dim(nats: f64, dim: usize) -> f64 {
    -nats / (dim as f64 * std::f64::consts::LN_2)
}

/// The mean of some values, in f64.
fn mean_f64(v: &[f32]) -> f64 {
    v.iter().map(|&v| f64::from(v)).sum::<f64>() / v.len() as f64
}

/// The mean of the last 100 losses, or of all of them if there are fewer (0 for none): a single
/// one is as noisy as its targets −z/σ.
fn recent_mean(losses: &[f32]) -> f32 {
    let tail = &losses[losses.len().saturating_sub(100)..];
    tail.iter().sum::<f32>() / tail.len().max(1) as f32
}

/// The step size at `step` of `steps`: a cosine decay from Adam's 10⁻³ at the first step towards
/// 0 at the last, ½·10⁻³ (1 + cos(π·step/steps)).
fn cosine_lr(step: usize, steps: usize) -> f64 {
    let progress = step as f64 / steps as f64;
    0.5e-3 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// The largest relative error among the points (log₁₀ σ, error) with log₁₀ σ ≥ `lo` (0 if none),
/// NaN if any of them is NaN: a network that diverged must not print as a small error (`f64::max`
/// drops a NaN).
fn largest_error_from(error: &[(f64, f64)], lo: f64) -> f64 {
    error
        .iter()
        .filter(|e| e.0 >= lo)
        .map(|e| e.1)
        .fold(0.0, |worst: f64, e| {
            if worst.is_nan() || e.is_nan() {
                f64::NAN
            } else {
                worst.max(e)
            }
        })
}

// ANCHOR: flow_likelihoods
/// The log-likelihood the probability flow assigns to fresh draws of the data (from a generator
/// of their own, so the samplers' draws above are untouched), with the exact score and divergence
/// on 500 levels 50 → 0.01: half the VE samplers' 1000, which would cut the error in the mean,
/// 3·10⁻⁴ nats, fourfold for twice the time. One run up the levels gives the latent codes and the
/// integral of the divergence; the estimate is the prior at the codes minus the integral, with the
/// samplers' prior N(0, 50² I) and with the exact q₅₀. Beside them, the exact mean log q_{σ_L} and
/// log p of the same points.
fn flow_likelihoods(args: &Args) -> ncsn::Result<()> {
    use ncsn::sample::{flow_log_likelihood, gaussian_log_prob};
    use ncsn::score::{closed_form_score_and_divergence, tensor_from_array2};
    use ncsn::toy::ToyDistribution;
    let p = GaussianMixture::paper();
    let n = args.samples as usize;
    let x = tensor_from_array2(p.sample(n, &mut ChaCha8Rng::seed_from_u64(args.seed + 1)));
    let levels = GeometricSigmas::new(50.0, 0.01, 500);
    let flow = flow_log_likelihood(
        |x, i| closed_form_score_and_divergence(&p.perturbed(f64::from(levels.get(i))))(x),
        &x,
        &levels,
        |z| gaussian_log_prob(z, levels.first()),
    );
    let mean = |v: Vec<f32>| mean_f64(&v);
    let data = tensor_to_array2(&x);
    let top = p.perturbed(f64::from(levels.first()));
    let at_codes = top.log_prob(tensor_to_array2(&flow.latent).view()).to_vec();
    let last = p.perturbed(f64::from(levels.last()));
    let rows = [
        (
            "flow, prior N(0, 50² I)",
            mean(flow.log_likelihood.to_vec()),
        ),
        (
            "flow, exact prior q₅₀",
            mean(at_codes) - mean(flow.divergence_integral.to_vec()),
        ),
        (
            "exact log q_σL, σL = 0.01",
            mean(last.log_prob(data.view()).to_vec()),
        ),
        ("exact log p", mean(p.log_prob(data.view()).to_vec())),
    ];
    let mut text = format!(
        "\nthe flow's log-likelihood of {n} draws of the data (500 levels 50 → 0.01, exact divergence)\n\
         {:<32} {:>12} {:>10}\n",
        "", "mean (nats)", "bits/dim"
    );
    for (name, nats) in rows {
        let bits = bits_per_dim(nats, 2); //   D = 2
        text += &format!("{name:<32} {nats:>12.4} {bits:>10.4}\n");
    }
    ncsn::io::print_stdout(&text)
}
// ANCHOR_END: flow_likelihoods

#[cfg(test)]
mod tests {
    use super::*;

    fn points(rows: &[[f32; 2]]) -> Tensor {
        Tensor::from_vec(rows.concat(), &[rows.len(), 2])
    }

    /// Off the modes means strictly farther than 3.5 from both centres, (−5, −5) and (5, 5).
    /// (8.5, 5) and (−8.5, −5) lie exactly 3.5 from one (3.5² = 12.25 in f64, exactly) and count
    /// as on it; (9, 5) is 4 from (5, 5) and (0, 0) is √50 from both, so two of the five are off.
    /// The squared distance compared with 3.5 rather than 3.5² would count the two on the circles
    /// too, and `any` in place of `all` every point (each is far from one centre or the other).
    #[test]
    fn off_the_modes_counts_points_strictly_beyond_3_5_from_both_centres() {
        let p = GaussianMixture::paper();
        let x = points(&[
            [8.5, 5.0],
            [9.0, 5.0],
            [0.0, 0.0],
            [-5.0, -5.0],
            [-8.5, -5.0],
        ]);
        assert_eq!(off_the_modes(&p, &x), 2.0 / 5.0);
        assert_eq!(off_the_modes(&p, &points(&[[5.0, 5.0]])), 0.0);
        assert_eq!(off_the_modes(&p, &Tensor::zeros(&[0, 2])), 0.0);
    }

    /// The data's own share off the modes is the unit Gaussian's tail at 3.5, exp(−3.5²/2) =
    /// 0.00219 (the other mode, 14 away, adds nothing visible). 200,000 draws of the mixture (seed
    /// 7) give a binomial count whose standard error is √(0.00219/200,000) = 1.05·10⁻⁴ of the
    /// fraction; 5 of them is 5.2·10⁻⁴, while the tail without its ½ (4.8·10⁻⁶) is off by
    /// 2.2·10⁻³, and a squared distance compared with 3.5 (a radius of 1.87) counts 0.17.
    #[test]
    fn the_datas_share_off_the_modes_is_the_gaussian_tail() {
        assert_eq!(unit_gaussian_tail(0.0), 1.0);
        // The median of ‖z‖ for z ~ N(0, I₂) is √(2 ln 2).
        assert!((unit_gaussian_tail((2.0 * std::f64::consts::LN_2).sqrt()) - 0.5).abs() < 1e-15);
        let p = GaussianMixture::paper();
        let x = tensor_from_array2(p.sample(200_000, &mut ChaCha8Rng::seed_from_u64(7)));
        let (got, want) = (off_the_modes(&p, &x), unit_gaussian_tail(OFF_THE_MODES));
        let se = (want / 200_000.0).sqrt();
        assert!(
            (got - want).abs() <= 5.0 * se,
            "{got} off the modes, expected {want} ± {se}"
        );
    }

    /// The nearest mode of (5, 5), (4, 4) and (0.1, 0.1) is (5, 5), the heavy one; of (−5, −5)
    /// the other. A non-finite point is nearest to none.
    #[test]
    fn heavy_fraction_counts_the_points_nearest_to_5_5() {
        let p = GaussianMixture::paper();
        let x = points(&[
            [5.0, 5.0],
            [4.0, 4.0],
            [-5.0, -5.0],
            [0.1, 0.1],
            [f32::NAN, 5.0],
        ]);
        assert_eq!(heavy_fraction(&p, &x), 3.0 / 5.0);
    }

    /// At a centre the other component's density is e⁻¹⁰⁰ of it, so log p is ln πₖ − ln 2π to
    /// within f32 rounding (10⁻⁶ here); the mean over (5, 5) and (−5, −5) is
    /// (ln 0.8 + ln 0.2)/2 − ln 2π. Rows with a NaN (log p NaN) or an infinity (log p −∞) are
    /// left out, not counted as zeros; with no finite row the mean is 0.
    #[test]
    fn mean_log_prob_averages_the_finite_rows_only() {
        let p = GaussianMixture::paper();
        let x = points(&[
            [5.0, 5.0],
            [f32::NAN, 0.0],
            [f32::INFINITY, 0.0],
            [-5.0, -5.0],
        ]);
        let want = (0.8f64.ln() + 0.2f64.ln()) / 2.0 - (2.0 * std::f64::consts::PI).ln();
        let got = mean_log_prob(&p, &x);
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
        assert_eq!(mean_log_prob(&p, &points(&[[f32::NAN, 0.0]])), 0.0);
    }

    /// Path i is point i of each recorded batch in order, x then y: with the value 100s + 10i + c
    /// at coordinate c of point i in batch s, the first two of four points through three batches.
    #[test]
    fn paths_follow_each_point_through_the_batches() {
        let batches: Vec<Tensor> = (0..3)
            .map(|s| {
                let v = (0..4)
                    .flat_map(|i| (0..2).map(move |c| (100 * s + 10 * i + c) as f32))
                    .collect();
                Tensor::from_vec(v, &[4, 2])
            })
            .collect();
        let want: Vec<Vec<(f64, f64)>> = (0..2)
            .map(|i| {
                (0..3)
                    .map(|s| ((100 * s + 10 * i) as f64, (100 * s + 10 * i + 1) as f64))
                    .collect()
            })
            .collect();
        assert_eq!(paths_of(&batches, 2), want);
        assert!(paths_of(&[], 2).iter().all(|p| p.is_empty()));
    }

    /// The data row's mean log p is −H(p). For well-separated unit components H(p) is the weights'
    /// entropy plus ln 2πe, 3.3383 for the paper's mixture: a single unit Gaussian in the plane
    /// has ln 2πe exactly, and the mean of −log p over 100,000 draws of the mixture (seed 8) agrees
    /// within 5 standard errors (−log p has a standard deviation of about 1.15, so 0.018), where a
    /// dropped +1, or D/2 taken as 1/2, moves it by 1 or more.
    #[test]
    fn the_datas_entropy_is_the_weights_plus_a_components() {
        let two_pi_e = (2.0 * std::f64::consts::PI * std::f64::consts::E).ln();
        assert!((separated_entropy(&[1.0], 2) - two_pi_e).abs() < 1e-14);
        assert!((separated_entropy(&[0.5, 0.5], 4) - (2.0f64.ln() + 2.0 * two_pi_e)).abs() < 1e-14);
        let p = GaussianMixture::paper();
        let h = separated_entropy(p.weights(), 2);
        assert!((h - 3.3383).abs() < 1e-4, "{h}");
        let x = p.sample(100_000, &mut ChaCha8Rng::seed_from_u64(8));
        let lp: Vec<f64> = p.log_prob(x.view()).iter().map(|&v| f64::from(v)).collect();
        let mean = lp.iter().sum::<f64>() / lp.len() as f64;
        let sd = (lp.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / lp.len() as f64).sqrt();
        let se = sd / (lp.len() as f64).sqrt();
        assert!(
            (mean + h).abs() <= 5.0 * se,
            "mean log p {mean}, −H {}, ± {se}",
            -h
        );
    }

    /// Bits per dimension: −6 ln 2 nats over 2 dimensions are 3 bits each, and a likelihood
    /// above 1 gives negative bits.
    #[test]
    fn bits_per_dim_divide_the_nats_by_d_ln_2() {
        let ln2 = std::f64::consts::LN_2;
        assert!((bits_per_dim(-6.0 * ln2, 2) - 3.0).abs() < 1e-15);
        assert!((bits_per_dim(4.0 * ln2, 1) + 4.0).abs() < 1e-15);
        assert_eq!(mean_f64(&[1.0, 2.0, 6.0]), 3.0);
    }

    /// The training summary: the mean of the last 100 losses (of 0, 1, …, 149: 50 to 149, mean
    /// 99.5), of all when there are fewer, 0 when there are none; the step size from 10⁻³ at the
    /// first step through ½·10⁻³ halfway; the largest error from log₁₀ σ = `lo` on, that level
    /// included.
    #[test]
    fn the_training_summary_and_the_step_sizes() {
        let losses: Vec<f32> = (0..150).map(|v| v as f32).collect();
        assert_eq!(recent_mean(&losses), 99.5);
        assert_eq!(recent_mean(&[2.0, 4.0]), 3.0);
        assert_eq!(recent_mean(&[]), 0.0);
        assert!((cosine_lr(0, 8000) - 1e-3).abs() < 1e-18);
        assert!((cosine_lr(4000, 8000) - 0.5e-3).abs() < 1e-18);
        assert!(cosine_lr(7999, 8000) < 1e-9);
        let error = [(-2.0, 0.9), (-1.0, 0.7), (0.0, 0.3), (1.0, 0.2)];
        assert_eq!(largest_error_from(&error, -1.0), 0.7);
        assert_eq!(largest_error_from(&error, -0.5), 0.3);
        assert_eq!(largest_error_from(&error, f64::NEG_INFINITY), 0.9);
        assert_eq!(largest_error_from(&error, 2.0), 0.0);
        let diverged = [(-1.0, 0.5), (0.0, f64::NAN), (1.0, 0.2)];
        assert!(largest_error_from(&diverged, -1.0).is_nan());
        assert_eq!(largest_error_from(&diverged, 0.5), 0.2);
    }
}

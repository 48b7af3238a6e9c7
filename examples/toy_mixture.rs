//! The paper's toy experiments (Song & Ermon 2019, §3 and Figs. 1–3) on
//! p = ⅕·N((−5,−5), I) + ⅘·N((5,5), I):
//!
//! * **Fig. 2**: a score MLP trained with SSM-VR is accurate where the data is and wrong in the
//!   low-density regions;
//! * **Fig. 3**: with exact scores, Langevin dynamics does not recover the mode weights, annealed
//!   Langevin dynamics does (and a badly chosen schedule blows up);
//! * **Fig. 1**: sliced score matching on data confined to a subspace has no lower bound, and
//!   training runs off below the bound that a tiny Gaussian perturbation gives it;
//! * **NCSN**: a noise-conditional MLP trained with annealed DSM and sampled with annealed Langevin
//!   dynamics recovers the mode weights from learned scores.
//!
//! ```text
//! cargo run --release --example toy_mixture [-- --out DIR --seed N]
//! ```
//!
//! Writes `results.json` and SVG figures into `--out` (default `toy_mixture_out/`); a run that
//! stops early leaves no `results.json` there, not even an earlier run's.

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ncsn::nn::{Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig, Ema};
use ncsn::plot::{self, ArrowScale, Figure, Grid, Series};
use ncsn::run::count_in;
use ncsn::sample::{AnnealedConfig, LangevinConfig, annealed_langevin, langevin_dynamics};
use ncsn::score::{
    GeometricSigmas, NoiseConditionalMlp, ScoreMlp, anneal_dsm_loss, closed_form_score,
    sliced_score_matching, ssm_loss, tensor_from_array2, tensor_to_array2,
};
use ncsn::toy::{
    ClosedFormScore, Embedded, GaussianMixture, ToyDistribution, mode_fractions, perturb,
};
use ncsn::{Tensor, no_grad, sharded_backward};
use ndarray::{Array2, ArrayView2, Axis};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(
    about = "Reproduce the toy experiments of Song & Ermon (2019)",
    allow_negative_numbers = true
)]
struct Args {
    /// Directory for results.json and the figures.
    #[arg(long, default_value = "toy_mixture_out")]
    out: PathBuf,
    /// Seed of every random draw (ChaCha8).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// SSM-VR training steps for Fig. 2 (the reference: 10,000).
    #[arg(long, default_value_t = 10_000, value_parser = count_in(1, MAX_STEPS))]
    ssm_steps: usize,
    /// Number of samples for the exact-score sampling experiments (the reference: 1280; more
    /// samples shrink the binomial standard error of the mode fraction, √(0.16/n)). The figures
    /// show the first 1280.
    #[arg(long, default_value_t = 10_000, value_parser = count_in(1, MAX_SAMPLES))]
    n_samples: usize,
    /// Number of samples drawn with the learned NCSN scores.
    #[arg(long, default_value_t = 2_500, value_parser = count_in(1, MAX_SAMPLES))]
    ncsn_samples: usize,
    /// SSM training steps for each of the two manifold runs (Fig. 1; at least 3, to fit a line
    /// to the tail of the loss).
    #[arg(long, default_value_t = 5_000, value_parser = count_in(3, MAX_STEPS))]
    manifold_steps: usize,
    /// Annealed DSM training steps for the noise-conditional MLP.
    #[arg(long, default_value_t = 5_000, value_parser = count_in(1, MAX_STEPS))]
    ncsn_steps: usize,
    /// Batch size for the noise-conditional MLP (its DSM targets −z/σ are noisy: larger batches,
    /// and the moving average of --ncsn-ema, steady the mode weights it learns).
    #[arg(long, default_value_t = 512, value_parser = count_in(1, MAX_BATCH))]
    ncsn_batch: usize,
    /// Decay of the moving average of the noise-conditional MLP's weights that samples (0: sample
    /// with the last step's weights).
    #[arg(long, default_value_t = 0.999, value_parser = decay)]
    ncsn_ema: f64,
}

/// Parses a moving average's decay: in [0, 1).
fn decay(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(mu) if (0.0..1.0).contains(&mu) => Ok(mu),
        Ok(mu) => Err(format!("{mu} is not in [0, 1)")),
        Err(e) => Err(e.to_string()),
    }
}

// The bounds of the counts above, so that a mistyped count is a message naming its flag rather
// than an allocation the size of the memory.
/// Training steps: 1000× the reference's 10,000. Each keeps its loss in memory (4 bytes).
const MAX_STEPS: usize = 10_000_000;
/// Samples: 100× the default 10,000; at this bound the standard error of the mode fraction,
/// √(0.16/n), is 0.0004. The learned-score samplers run them as one batch through the MLP, 128 hidden
/// units wide: 0.5 GB for each activation at this bound.
const MAX_SAMPLES: usize = 1_000_000;
/// The noise-conditional MLP's training batch: 128× the default 512.
const MAX_BATCH: usize = 65_536;

const BATCH: usize = 128;
/// The standard deviation of the noise that gives Fig. 1's data on the plane a density: the
/// paper's N(0, 0.0001).
const MANIFOLD_NOISE: f64 = 0.01;
/// Shards of each SSM-VR batch, evaluated in parallel. Fixed rather than taken from the core
/// count, so that a seed gives the same numbers on every machine.
const SHARDS: usize = 2;
/// Points per scatter plot (the reference's 1280).
const FIG_POINTS: usize = 1280;
const LO: f32 = -8.0;
const HI: f32 = 8.0;

fn bar(len: usize, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len as u64);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>28} [{bar:30}] {pos}/{len} {elapsed_precise} loss {prefix}",
        )
        .expect("template")
        .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

/// Runs `steps` optimisation steps of `step` (which returns the loss), with a progress bar.
/// Stops early, with a message, on a non-finite loss.
fn train(steps: usize, what: &str, mut step: impl FnMut() -> f32) -> (Vec<f32>, f64) {
    let pb = bar(steps, what);
    let t0 = Instant::now();
    let mut losses = Vec::with_capacity(steps);
    for i in 0..steps {
        let l = step();
        if !l.is_finite() {
            pb.println(format!(
                "{what}: loss is {l} at step {i}; stopping this run"
            ));
            losses.push(l);
            break;
        }
        losses.push(l);
        if i % 100 == 0 || i + 1 == steps {
            pb.set_prefix(format!("{l:.4}"));
            pb.set_position(i as u64 + 1);
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    pb.finish();
    (losses, secs)
}

/// Uniform points on [LO, HI]² (the samplers' initialisation).
fn uniform_init(n: usize, rng: &mut ChaCha8Rng) -> Tensor {
    Tensor::uniform(&[n, 2], LO, HI, rng)
}

/// ½‖s − s_true‖² averaged over the rows of `x`.
fn fisher(model: &ScoreMlp, p: &GaussianMixture, x: ArrayView2<f32>) -> f64 {
    let est = no_grad(|| tensor_to_array2(&model.forward(&tensor_from_array2(x.to_owned()))));
    let truth = p.score(x);
    let d = &est - &truth;
    0.5 * d.mapv(|v| (v as f64) * (v as f64)).sum() / x.nrows() as f64
}

/// The first [`FIG_POINTS`] rows of a batch, for a scatter plot.
fn first_rows(x: &Tensor) -> Array2<f32> {
    let a = tensor_to_array2(x);
    let k = FIG_POINTS.min(a.nrows());
    a.slice(ndarray::s![..k, ..]).to_owned()
}

/// The finite rows of `x`.
fn finite_rows(x: &Array2<f32>) -> Array2<f32> {
    let rows: Vec<_> = x
        .outer_iter()
        .filter(|r| r.iter().all(|v| v.is_finite()))
        .collect();
    if rows.is_empty() {
        return Array2::zeros((0, x.ncols()));
    }
    ndarray::stack(Axis(0), &rows).expect("rows of equal length")
}

/// The fraction of samples in the (5, 5) mode (nearest mean), among finite samples, and the
/// fraction of samples that are not finite.
fn fraction_55(samples: &Tensor, p: &GaussianMixture) -> (f64, f64) {
    let all = tensor_to_array2(samples);
    let fin = finite_rows(&all);
    let k55 = p
        .means()
        .outer_iter()
        .position(|m| m[0] > 0.0)
        .expect("a mode at (5, 5)");
    let frac = if fin.nrows() == 0 {
        f64::NAN
    } else {
        mode_fractions(fin.view(), p.means())[k55]
    };
    (frac, 1.0 - fin.nrows() as f64 / all.nrows() as f64)
}

/// Over the last `k` losses: the mean, the slope of a least-squares line (change per 1000 steps),
/// and the standard deviation of the residuals around that line (the fluctuation statistic: it
/// measures the noise of the curve, not its drift). A run stopped by a loss that is not finite
/// ends with that loss: the statistics are of the finite losses before it (NaN with fewer than
/// 3, too few for a line and its residuals).
fn tail_stats(losses: &[f32], k: usize) -> (f64, f64, f64) {
    let finite: Vec<f64> = losses
        .iter()
        .filter(|v| v.is_finite())
        .map(|&v| v as f64)
        .collect();
    let tail = &finite[finite.len().saturating_sub(k)..];
    if tail.len() < 3 {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let n = tail.len() as f64;
    let mean = tail.iter().sum::<f64>() / n;
    let tbar = (n - 1.0) / 2.0;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, v) in tail.iter().enumerate() {
        sxy += (i as f64 - tbar) * (v - mean);
        sxx += (i as f64 - tbar) * (i as f64 - tbar);
    }
    let slope = sxy / sxx;
    let resid = tail
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let r = v - mean - slope * (i as f64 - tbar);
            r * r
        })
        .sum::<f64>();
    (mean, 1000.0 * slope, (resid / (n - 2.0)).sqrt())
}

/// The checks of the results table, apart from the runs so that unit tests can hold them to their
/// thresholds (the toy experiments chapter discusses them).
mod expect {
    use super::MANIFOLD_NOISE;

    /// Fig. 2: the learned score is accurate where the data is.
    pub fn accurate_on_data(fisher_data: f64) -> bool {
        fisher_data <= 0.05
    }

    /// Fig. 2: and at least ten times less accurate where the density is low.
    pub fn worse_off_data(fisher_low: f64, fisher_data: f64) -> bool {
        fisher_low >= 10.0 * fisher_data
    }

    /// Fig. 3: Langevin dynamics without annealing leaves the modes about equally filled.
    pub fn near_half(fraction: f64) -> bool {
        (fraction - 0.5).abs() < 0.15
    }

    /// Fig. 3: annealed Langevin dynamics with the true scores finds the mixture's weight 0.8.
    pub fn annealed_weight(fraction: f64) -> bool {
        (fraction - 0.8).abs() <= 0.03
    }

    /// Fig. 3: levels down to σ = 0.1 with the step of σ = 10 make most chains diverge.
    pub fn blows_up(non_finite: f64) -> bool {
        non_finite > 0.5
    }

    /// NCSN: annealed Langevin dynamics with the learned scores finds the weight 0.8 too.
    pub fn ncsn_weight(fraction: f64) -> bool {
        (fraction - 0.8).abs() <= 0.05
    }

    /// Fig. 1: with N(0, σ²I) noise the objective is smallest at the true score, where it is
    /// −½E‖∇log p_σ‖² ≈ −(D − d)/(2σ²): the 2 directions normal to the plane each contribute
    /// 1/σ² to E‖∇log p_σ‖² (the plane's own directions, about 1 each, are left out). The loss on
    /// the plane itself, unperturbed, goes below it.
    pub fn perturbed_floor() -> f64 {
        -(4.0 - 2.0) / (2.0 * MANIFOLD_NOISE * MANIFOLD_NOISE)
    }
}

fn svg(out: &Path, name: &str) -> PathBuf {
    out.join(format!("{name}.svg"))
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> ncsn::Result<()> {
    // Every training step builds and frees a graph of some hundred 32 KiB buffers per shard.
    // Left to its defaults, glibc hands the freed top of its heap back to the kernel and the
    // next step faults the same pages in again; told to keep them, a step reuses them.
    ncsn::tensor::keep_freed_memory();
    let t_start = Instant::now();
    std::fs::create_dir_all(&args.out).map_err(|e| ncsn::Error::io(&args.out, e))?;
    let out = args.out.as_path();
    // A previous run's results must not pass for this run's if this one stops early: they go
    // now, and this run's are written at the end, all at once.
    let results_path = out.join("results.json");
    match std::fs::remove_file(&results_path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(ncsn::Error::io(&results_path, e));
        }
        _ => {}
    }
    let p = GaussianMixture::paper();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);

    // ------------------------------------------------------------------ Fig. 2: SSM-VR scores
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 2, 128, &mut rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let (ssm_losses, ssm_secs) = train(args.ssm_steps, "Fig. 2: SSM-VR training", || {
        // SSM-VR (the reference's `sliced_score_estimation_vr`, one Gaussian direction per
        // sample), on two shards of the batch at once: one per core (see `sharded_backward`).
        let x = tensor_from_array2(p.sample(BATCH, &mut rng));
        let v = Tensor::randn(x.shape(), &mut rng);
        let (loss, grads) = sharded_backward(BATCH, SHARDS, |r| {
            let rows = |t: &Tensor| t.narrow(0, r.start, r.len());
            sliced_score_matching(|x| net.forward(x), &rows(&x), &rows(&v), true).loss
        });
        opt.step(&grads);
        loss
    });
    let data = p.sample(10_000, &mut rng);
    let fisher_data = fisher(&net, &p, data.view());
    // This example's own 101 × 101 evaluation grid on [−8, 8]², spacing 0.16, both ends included.
    // The reference draws its densities on a 100 × 100 np.linspace grid, its arrows on 20 × 20.
    let lin: Vec<f32> = (0..101)
        .map(|i| LO + (HI - LO) * i as f32 / 100.0)
        .collect();
    let grid_pts = Array2::from_shape_fn((101 * 101, 2), |(k, c)| {
        if c == 0 { lin[k % 101] } else { lin[k / 101] }
    });
    let log_p = p.log_prob(grid_pts.view());
    let low_rows: Vec<_> = grid_pts
        .outer_iter()
        .zip(log_p.iter())
        .filter(|(_, lp)| **lp < (1e-4f32).ln())
        .map(|(r, _)| r)
        .collect();
    let low = ndarray::stack(Axis(0), &low_rows).expect("rows");
    let fisher_low = fisher(&net, &p, low.view());

    let fine = Grid::square(LO as f64, HI as f64, 100);
    let fine_logp = p.log_prob(fine.points().view());
    let coarse = Grid::square(LO as f64, HI as f64, 20);
    let coarse_pts = coarse.points();
    plot::heatmap(
        svg(out, "fig2_density"),
        &Figure::new("Data density"),
        &fine,
        fine_logp.view(),
    )?;
    plot::quiver(
        svg(out, "fig2_data_scores"),
        &Figure::new("Data scores"),
        &coarse,
        p.score(coarse_pts.view()).view(),
        ArrowScale::Linear,
        Some((&fine, fine_logp.view())),
    )?;
    let est = no_grad(|| tensor_to_array2(&net.forward(&tensor_from_array2(coarse_pts.clone()))));
    plot::quiver(
        svg(out, "fig2_estimated_scores"),
        &Figure::new("Estimated scores (SSM-VR)"),
        &coarse,
        est.view(),
        ArrowScale::Linear,
        Some((&fine, fine_logp.view())),
    )?;

    // ------------------------------------------------------------------ Fig. 3: exact scores
    let n = args.n_samples;
    let iid = p.sample(n, &mut rng);
    plot::scatter(
        svg(out, "fig3_iid"),
        &Figure::new("i.i.d. samples"),
        iid.slice(ndarray::s![..FIG_POINTS.min(n), ..]),
        &fine,
        None,
    )?;
    let t0 = Instant::now();
    let lang = langevin_dynamics(
        closed_form_score(&p),
        &uniform_init(n, &mut rng),
        &LangevinConfig::paper_toy(),
        &mut rng,
    );
    let lang_secs = t0.elapsed().as_secs_f64();
    let (lang_frac, _) = fraction_55(&lang.x, &p);
    plot::scatter(
        svg(out, "fig3_langevin"),
        &Figure::new("Langevin dynamics (exact scores)"),
        first_rows(&lang.x).view(),
        &fine,
        None,
    )?;

    // Annealed Langevin with the scores of the perturbed mixtures q_σ (closed form).
    let run_annealed = |sigmas: &GeometricSigmas, rng: &mut ChaCha8Rng| {
        let perturbed: Vec<GaussianMixture> = sigmas
            .sigmas()
            .iter()
            .map(|&s| p.perturbed(s as f64))
            .collect();
        let scores: Vec<_> = perturbed.iter().map(closed_form_score).collect();
        let x0 = uniform_init(n, rng);
        annealed_langevin(
            |x, i| scores[i](x),
            &x0,
            sigmas,
            &AnnealedConfig::paper_toy(),
            rng,
        )
    };
    let sigmas = GeometricSigmas::new(20.0, 1.0, 10);
    let ann = run_annealed(&sigmas, &mut rng);
    let (ann_frac, _) = fraction_55(&ann.x, &p);
    plot::scatter(
        svg(out, "fig3_annealed"),
        &Figure::new("Annealed Langevin dynamics (exact scores)"),
        first_rows(&ann.x).view(),
        &fine,
        None,
    )?;
    let bad_sigmas = GeometricSigmas::new(10.0, 0.1, 10);
    let bad = run_annealed(&bad_sigmas, &mut rng);
    let (bad_frac, bad_nonfinite) = fraction_55(&bad.x, &p);
    let bad_alpha1 = AnnealedConfig::paper_toy().step_at(&bad_sigmas, 0);

    // ------------------------------------------------------------------ Fig. 1: manifold
    // The paper's mixture carried into a 2-D plane of ℝ⁴: no density in ℝ⁴.
    let manifold = Embedded::new(p.clone(), 4, args.seed.wrapping_add(1));
    let manifold_run = |noise_std: f64, label: &str, rng: &mut ChaCha8Rng| {
        let store = ParamStore::new();
        let net = ScoreMlp::new(&store.root(), 4, 128, rng);
        let mut opt = Adam::new(store.named_params(), AdamConfig::default());
        let (losses, _) = train(args.manifold_steps, label, || {
            let mut x = manifold.sample(BATCH, rng);
            if noise_std > 0.0 {
                x = perturb(x.view(), noise_std, rng);
            }
            let x = tensor_from_array2(x);
            let loss = ssm_loss(
                |x| net.forward(x),
                &x,
                ncsn::score::Projection::Gaussian,
                1,
                rng,
            )
            .loss;
            opt.step(&loss.backward());
            loss.item()
        });
        losses
    };
    let loss_plain = manifold_run(0.0, "Fig. 1: SSM on the manifold", &mut rng);
    let loss_noisy = manifold_run(MANIFOLD_NOISE, "Fig. 1: SSM, N(0, 1e-4) noise", &mut rng);
    let tail = (args.manifold_steps / 5).max(3);
    let (m_plain, slope_plain, sd_plain) = tail_stats(&loss_plain, tail);
    let (m_noisy, slope_noisy, sd_noisy) = tail_stats(&loss_noisy, tail);
    let floor = expect::perturbed_floor();
    plot::lines(
        svg(out, "fig1_loss"),
        &Figure::new("Sliced score matching on a 2-D plane in ℝ⁴").labels("step", "loss"),
        &[
            Series::from_values("data on the plane", &loss_plain),
            Series::from_values("perturbed by N(0, 0.0001 I)", &loss_noisy),
        ],
        false,
    )?;

    // ------------------------------------------------------------------ NCSN on the toy
    let store = ParamStore::new();
    let ncsn = NoiseConditionalMlp::new(&store.root(), 2, 128, sigmas.clone(), &mut rng);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let mut ema = (args.ncsn_ema > 0.0).then(|| Ema::new(store.named_params(), args.ncsn_ema));
    let (ncsn_losses, ncsn_secs) = train(args.ncsn_steps, "NCSN: annealed DSM training", || {
        let x = tensor_from_array2(p.sample(args.ncsn_batch, &mut rng));
        let loss = anneal_dsm_loss(|x, l| ncsn.forward(x, l), &x, &sigmas, 2.0, &mut rng);
        opt.step(&loss.backward());
        if let Some(ema) = ema.as_mut() {
            ema.update();
        }
        loss.item()
    });
    // Sample with the average of the last steps' weights, not the last step's alone.
    if let Some(ema) = &ema {
        ema.copy_to_params();
    }
    let x0 = uniform_init(args.ncsn_samples, &mut rng);
    let learned = annealed_langevin(
        |x, i| ncsn.forward_level(x, i),
        &x0,
        &sigmas,
        &AnnealedConfig::paper_toy(),
        &mut rng,
    );
    let (ncsn_frac, ncsn_nonfinite) = fraction_55(&learned.x, &p);
    plot::scatter(
        svg(out, "ncsn_annealed"),
        &Figure::new("Annealed Langevin dynamics (learned NCSN scores)"),
        first_rows(&learned.x).view(),
        &fine,
        None,
    )?;
    let x0 = uniform_init(args.ncsn_samples, &mut rng);
    let learned_plain = langevin_dynamics(
        |x| ncsn.forward_level(x, sigmas.len() - 1),
        &x0,
        &LangevinConfig::paper_toy(),
        &mut rng,
    );
    let (ncsn_lang_frac, _) = fraction_55(&learned_plain.x, &p);

    // ------------------------------------------------------------------ report
    let total = t_start.elapsed().as_secs_f64();
    // The table is printed after results.json is written: a reader that stops early (`| head`)
    // must not cost the results.
    let mut table = format!(
        "\n{:<62} {:>12} {:>16} {:>4}\n{}\n",
        "quantity",
        "value",
        "expected",
        "ok",
        "-".repeat(98)
    );
    let mut row = |name: &str, value: String, expected: &str, ok: Option<bool>| {
        let ok = ok.map_or("-", |ok| if ok { "yes" } else { "NO" });
        table.push_str(&format!("{name:<62} {value:>12} {expected:>16} {ok:>4}\n"));
    };
    let v = |x: f64| format!("{x:.4}");
    row(
        "Fig. 2  ½E‖s_θ − ∇log p‖² over samples of p",
        v(fisher_data),
        "≤ 0.05",
        Some(expect::accurate_on_data(fisher_data)),
    );
    row(
        &format!(
            "Fig. 2  same, over {} grid points with p < 1e-4",
            low.nrows()
        ),
        v(fisher_low),
        "≥ 10 × data",
        Some(expect::worse_off_data(fisher_low, fisher_data)),
    );
    row(
        "Fig. 2  ratio low-density / data",
        v(fisher_low / fisher_data),
        "≥ 10",
        Some(expect::worse_off_data(fisher_low, fisher_data)),
    );
    row(
        "Fig. 3  Langevin (T = 1000, ε = 0.1): fraction in (5,5)",
        v(lang_frac),
        "near 0.5",
        Some(expect::near_half(lang_frac)),
    );
    row(
        "Fig. 3  annealed, σ 20 → 1: fraction in (5,5)",
        v(ann_frac),
        "0.80 ± 0.03",
        Some(expect::annealed_weight(ann_frac)),
    );
    row(
        &format!("Fig. 3  annealed, σ 10 → 0.1 (α₁ = {bad_alpha1:.0}): non-finite"),
        format!("{:.1}%", 100.0 * bad_nonfinite),
        "blows up",
        Some(expect::blows_up(bad_nonfinite)),
    );
    // The perturbed objective is bounded below by its value at the true score; the plane's is
    // not, and training follows it down past that bound.
    row(
        "Fig. 1  SSM on the plane: loss, mean of the last 20%",
        v(m_plain),
        &format!("< {floor:.0}"),
        Some(m_plain < floor),
    );
    row(
        "Fig. 1  SSM, perturbed N(0, 1e-4): loss, mean of last 20%",
        v(m_noisy),
        &format!("≥ {floor:.0}"),
        Some(m_noisy >= floor),
    );
    // The trends and the noise around them, shown side by side, not checked.
    for (what, slope, sd) in [
        ("on the plane", slope_plain, sd_plain),
        ("perturbed", slope_noisy, sd_noisy),
    ] {
        row(
            &format!("Fig. 1  {what}: loss slope per 1000 steps (last 20%)"),
            v(slope),
            "-",
            None,
        );
        row(
            &format!("Fig. 1  {what}: fluctuation around that line"),
            v(sd),
            "-",
            None,
        );
    }
    row(
        "NCSN    annealed Langevin, learned scores: fraction in (5,5)",
        v(ncsn_frac),
        "0.80 ± 0.05",
        Some(expect::ncsn_weight(ncsn_frac)),
    );
    row(
        "NCSN    Langevin at σ_L only, learned scores",
        v(ncsn_lang_frac),
        "near 0.5",
        Some(expect::near_half(ncsn_lang_frac)),
    );
    // Timings depend on the machine and its load: reported, not checked.
    row(
        &format!("SSM-VR training time, {} steps (s)", args.ssm_steps),
        format!("{ssm_secs:.2}"),
        "≤ 3 (10k, quiet)",
        None,
    );
    row("total wall time (s)", format!("{total:.2}"), "< 60", None);

    let results = json!({
        "seed": args.seed,
        "fig2": {
            "ssm_vr_steps": args.ssm_steps,
            "batch": BATCH,
            "train_seconds": ssm_secs,
            "final_loss": ssm_losses.last(),
            "fisher_data": fisher_data,
            "fisher_low_density": fisher_low,
            "low_density_points": low.nrows(),
            "ratio": fisher_low / fisher_data,
        },
        "fig3": {
            "n_samples": n,
            "binomial_standard_error": (0.16 / n as f64).sqrt(),
            "langevin": {"step_size": 0.1, "n_steps": 1000, "fraction_55": lang_frac, "seconds": lang_secs},
            "annealed": {"sigmas": sigmas.sigmas(), "step_size": 0.1, "n_steps_each": 100, "fraction_55": ann_frac},
            "annealed_10_to_0.1": {
                "sigmas": bad_sigmas.sigmas(),
                "alpha_1": bad_alpha1,
                "non_finite_fraction": bad_nonfinite,
                "fraction_55_among_finite": if bad_frac.is_finite() { json!(bad_frac) } else { json!(null) },
            },
        },
        "fig1": {
            "ambient_dim": 4,
            "steps": args.manifold_steps,
            "tail": tail,
            "perturbed_bound": floor,
            "plain": {"tail_mean": m_plain, "tail_slope_per_1000": slope_plain, "tail_fluctuation_sd": sd_plain, "losses_recorded": loss_plain.len()},
            "perturbed_1e-4": {"tail_mean": m_noisy, "tail_slope_per_1000": slope_noisy, "tail_fluctuation_sd": sd_noisy, "losses_recorded": loss_noisy.len()},
        },
        "ncsn": {
            "steps": args.ncsn_steps,
            "batch": args.ncsn_batch,
            "ema": args.ncsn_ema,
            "sigmas": sigmas.sigmas(),
            "train_seconds": ncsn_secs,
            "final_loss": ncsn_losses.last(),
            "n_samples": args.ncsn_samples,
            "annealed_fraction_55": ncsn_frac,
            "annealed_non_finite": ncsn_nonfinite,
            "langevin_smallest_sigma_fraction_55": ncsn_lang_frac,
        },
        "total_seconds": total,
    });
    ncsn::io::write_atomic(
        &results_path,
        serde_json::to_string_pretty(&results)
            .expect("json")
            .as_bytes(),
    )?;
    table.push_str(&format!(
        "\nwrote {} and figures to {}\n",
        results_path.display(),
        out.display()
    ));
    ncsn::io::print_stdout(&table)
}

// `cargo test` runs these (`test = true` for this example in Cargo.toml); the rest of the example
// is its training runs, checked by running it (see the book's chapter on the toy experiments).
#[cfg(test)]
mod tests {
    use super::*;

    /// The tail statistics of Fig. 1 on losses whose answer is known exactly. The last four finite
    /// losses are 3 + 0.25·i plus residuals (+1, −1, −1, +1), which sum to zero and are orthogonal
    /// to i − 1.5, so the least-squares line is 3 + 0.25·i itself: mean 3.375, slope 250 per 1000
    /// steps, and residual standard deviation √(4/(4 − 2)) = √2. Every value is a small dyadic
    /// fraction, exact in f32 and f64, so only the square root rounds: 1e-12 is ample. Earlier
    /// losses lie outside the tail, and a final non-finite loss (a run it stopped) is left out.
    #[test]
    fn tail_stats_fit_a_line_to_the_last_finite_losses() {
        let tail = [4.0f32, 2.25, 2.5, 4.75];
        let want = (3.375, 250.0, 2f64.sqrt());
        let close = |got: (f64, f64, f64)| {
            (got.0 - want.0).abs() < 1e-12
                && (got.1 - want.1).abs() < 1e-12
                && (got.2 - want.2).abs() < 1e-12
        };
        let losses = [100.0f32, -50.0, 4.0, 2.25, 2.5, 4.75, f32::NAN];
        assert!(
            close(tail_stats(&losses, 4)),
            "{:?}, want {want:?}",
            tail_stats(&losses, 4)
        );
        // A tail longer than the run takes the whole run.
        assert!(
            close(tail_stats(&tail, 100)),
            "{:?}, want {want:?}",
            tail_stats(&tail, 100)
        );
        // Fewer than three finite losses: no line, no residuals.
        let (m, s, sd) = tail_stats(&[1.0, f32::INFINITY, 2.0, f32::NAN], 10);
        assert!(m.is_nan() && s.is_nan() && sd.is_nan(), "{:?}", (m, s, sd));
    }

    /// `--ncsn-ema` is a decay in [0, 1): 1 would freeze the average at the initial weights.
    #[test]
    fn ema_decay_is_in_zero_to_one() {
        assert_eq!(decay("0"), Ok(0.0));
        assert_eq!(decay("0.999"), Ok(0.999));
        for bad in ["1", "1.5", "-0.1", "NaN", "x"] {
            assert!(decay(bad).is_err(), "a decay of {bad} accepted");
        }
    }

    /// The fraction in the (5, 5) mode is taken among the finite samples, and the non-finite
    /// fraction counts every row with a non-finite coordinate: of five rows, three near (5, 5),
    /// one near (−5, −5) and one with a NaN coordinate, 3/4 and 1/5.
    #[test]
    fn fraction_55_counts_the_upper_mode_among_finite_rows() {
        let x = Tensor::from_vec(
            vec![4.0, 6.0, 5.5, 5.0, 0.5, 0.2, -5.0, -4.0, f32::NAN, 5.0],
            &[5, 2],
        );
        let (frac, nonfinite) = fraction_55(&x, &GaussianMixture::paper());
        // 1 − 4/5 rounds in f64: 1e-12 of room.
        assert!(
            frac == 0.75 && (nonfinite - 0.2).abs() < 1e-12,
            "fraction {frac} in (5, 5), {nonfinite} non-finite; want 0.75 and 0.2"
        );
    }

    /// Each check of the table at both sides of its threshold, so that a threshold moved (0.5
    /// for 0.05, say) or a bound computed without its ½ fails here and not only in a run.
    #[test]
    fn the_table_checks_hold_their_thresholds() {
        use super::expect::*;
        assert!(accurate_on_data(0.0088) && accurate_on_data(0.05) && !accurate_on_data(0.051));
        assert!(worse_off_data(1.0, 0.1) && !worse_off_data(0.99, 0.1));
        for (fraction, want) in [
            (0.36, true),
            (0.5, true),
            (0.64, true),
            (0.34, false),
            (0.66, false),
        ] {
            assert_eq!(near_half(fraction), want, "near 0.5: {fraction}");
        }
        for (fraction, want) in [
            (0.775, true),
            (0.8, true),
            (0.825, true),
            (0.765, false),
            (0.835, false),
        ] {
            assert_eq!(annealed_weight(fraction), want, "0.80 ± 0.03: {fraction}");
        }
        for (fraction, want) in [(0.755, true), (0.845, true), (0.745, false), (0.855, false)] {
            assert_eq!(ncsn_weight(fraction), want, "0.80 ± 0.05: {fraction}");
        }
        assert!(blows_up(1.0) && blows_up(0.51) && !blows_up(0.5));
        // −2/(2·10⁻⁴): −10,000, up to the rounding of 0.01² in f64.
        let floor = perturbed_floor();
        assert!((floor + 10_000.0).abs() < 1e-9, "{floor}");
    }

    /// The manifold runs fit a line to the tail of their losses: fewer than 3 steps are refused
    /// at the command line, naming the flag.
    #[test]
    fn manifold_steps_below_three_are_refused() {
        let parse = |v: &str| Args::try_parse_from(["toy_mixture", "--manifold-steps", v]);
        assert_eq!(parse("3").unwrap().manifold_steps, 3);
        let err = parse("2").expect_err("2 steps accepted").to_string();
        assert!(err.contains("--manifold-steps"), "{err}");
    }
}

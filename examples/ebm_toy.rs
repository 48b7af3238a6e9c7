//! Energy-based models on the paper's toy mixture ⅕N((−5,−5), I) + ⅘N((5,5), I): one energy
//! network E_θ(x) (2 → 64 → 64 → 1, softplus) fitted by noise-contrastive estimation and one by
//! maximum likelihood with persistent Langevin chains (`ncsn::ebm`). Prints each model's weight on
//! the (5, 5) mode and its mean log-density of fresh data (normalised on a fine grid), and writes
//! the two fitted log-densities beside the true one to `ebm_toy_out/` (or `--out DIR`).
//!
//! ```text
//! cargo run --release --example ebm_toy [-- --out DIR --steps K --seed S]
//! ```

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ncsn::Tensor;
use ncsn::ebm::{PersistentChains, contrastive_loss, nce_loss};
use ncsn::nn::{Activation, Mlp, Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::plot::{self, Figure, Grid};
use ncsn::sample::{LangevinConfig, gaussian_log_prob};
use ncsn::score::{tensor_from_array2, tensor_to_array2};
use ncsn::toy::{ClosedFormScore, GaussianMixture, ToyDistribution, log_sum_exp, mode_fraction};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Parser)]
#[command(about = "Fit energy-based models to the toy mixture by NCE and by maximum likelihood")]
struct Args {
    /// Directory for the figures.
    #[arg(long, value_name = "DIR", default_value = "ebm_toy_out")]
    out: std::path::PathBuf,
    /// Training steps of each model.
    #[arg(long, default_value_t = 3000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    steps: u64,
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

/// The noise of NCE: N(m, s²I), centred on the data's mean with a standard deviation that covers
/// both modes.
const NOISE_MEAN: f32 = 3.0;
const NOISE_STD: f32 = 6.0;

fn run(args: &Args) -> ncsn::Result<()> {
    std::fs::create_dir_all(&args.out).map_err(|e| ncsn::Error::io(&args.out, e))?;
    let p = GaussianMixture::paper();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    let steps = args.steps as usize;
    let batch = 512;

    // ANCHOR: nce
    let nce_store = ParamStore::new();
    let nce_energy = Mlp::new(
        &nce_store.root(),
        &[2, 64, 64, 1],
        Activation::Softplus,
        &mut rng,
    );
    let log_z = nce_store.root().param("log_z", Tensor::zeros(&[1]));
    let mut opt = Adam::new(nce_store.named_params(), AdamConfig::default());
    let bar = progress(steps, "NCE");
    for _ in 0..steps {
        let x = tensor_from_array2(p.sample(batch, &mut rng));
        let y = Tensor::randn(&[batch, 2], &mut rng)
            .mul_scalar(NOISE_STD)
            .add_scalar(NOISE_MEAN);
        let e = |x: &Tensor| nce_energy.forward(x);
        let loss = nce_loss(e, &log_z, &x, &noise_log_prob(&x), &y, &noise_log_prob(&y));
        opt.step(&loss.backward());
        bar.inc(1);
    }
    bar.finish_and_clear();
    // ANCHOR_END: nce

    // ANCHOR: ml
    let ml_store = ParamStore::new();
    let ml_energy = Mlp::new(
        &ml_store.root(),
        &[2, 64, 64, 1],
        Activation::Softplus,
        &mut rng,
    );
    let mut opt = Adam::new(ml_store.named_params(), AdamConfig::default());
    let config = LangevinConfig {
        step_size: 0.01,
        n_steps: 10,
        record_every: 0,
    };
    let start = Tensor::uniform(&[batch, 2], -8.0, 8.0, &mut rng);
    let mut chains = PersistentChains::new(start, config);
    let bar = progress(steps, "maximum likelihood");
    for _ in 0..steps {
        let x = tensor_from_array2(p.sample(batch, &mut rng));
        let e = |x: &Tensor| ml_energy.forward(x);
        let samples = chains.advance(e, &mut rng).clone();
        let loss = contrastive_loss(e, &x, &samples);
        opt.step(&loss.backward());
        bar.inc(1);
    }
    bar.finish_and_clear();
    // ANCHOR_END: ml
    let chains_heavy = mode_fraction(tensor_to_array2(&chains.x).view(), p.means(), 1);

    // Both models on a fine grid, normalised there (the grid holds all but a sliver of the mass):
    // the mode weight is the mass nearer (5, 5) than (−5, −5).
    let grid = Grid::square(-10.0, 10.0, 200);
    let points = tensor_from_array2(grid.points());
    let cell = grid.cell().0 * grid.cell().1;
    let fresh = tensor_from_array2(p.sample(4096, &mut ChaCha8Rng::seed_from_u64(args.seed + 1)));
    let truth = p.log_prob(tensor_to_array2(&fresh).view());
    let truth_mean = truth.iter().map(|&v| f64::from(v)).sum::<f64>() / truth.len() as f64;
    let mut table = format!(
        "{:<24} {:>12} {:>14} {:>18}\n",
        "model", "in (5, 5)", "∫ e^(−E−c)", "mean log p (fresh)"
    );
    let shown = [
        (
            "noise-contrastive",
            &nce_energy,
            Some(f64::from(log_z.item())),
            "ebm_nce.svg",
        ),
        ("maximum likelihood", &ml_energy, None, "ebm_ml.svg"),
    ];
    for (name, energy, c, file) in shown {
        let neg_e: Vec<f64> = ncsn::no_grad(|| energy.forward(&points))
            .to_vec()
            .iter()
            .map(|&v| -f64::from(v))
            .collect();
        let log_z_grid = log_sum_exp(&neg_e) + cell.ln();
        let heavy: f64 = grid
            .points()
            .outer_iter()
            .zip(&neg_e)
            .filter(|(x, _)| x[0] + x[1] > 0.0)
            .map(|(_, &l)| (l - log_z_grid).exp() * cell)
            .sum();
        let at_fresh = ncsn::no_grad(|| energy.forward(&fresh)).to_vec();
        let mean = -at_fresh.iter().map(|&v| f64::from(v)).sum::<f64>() / at_fresh.len() as f64
            - log_z_grid;
        let normaliser = c.map_or("-".to_string(), |c| {
            format!("{:.4}", (log_z_grid - c).exp())
        });
        table += &format!("{name:<24} {heavy:>12.3} {normaliser:>14} {mean:>18.3}\n");
        // The figure on a coarser grid (a 200 × 200 one makes a 1.4 MB SVG).
        let coarse = Grid::square(-10.0, 10.0, 64);
        let at_coarse = ncsn::no_grad(|| energy.forward(&tensor_from_array2(coarse.points())));
        let log_density: Vec<f32> = at_coarse
            .to_vec()
            .iter()
            .map(|&e| (-f64::from(e) - log_z_grid) as f32)
            .collect();
        plot::heatmap(
            args.out.join(file),
            &Figure::new(format!("{name}: log p_θ, {heavy:.2} in (5, 5)")),
            &coarse,
            ndarray::ArrayView1::from(&log_density),
        )?;
    }
    table += &format!(
        "{:<24} {:>12.3} {:>14} {:>18.3}\n\nthe {batch} persistent chains end with {chains_heavy:.3} of \
         them in the (5, 5) half (they started uniform on [−8, 8]²)\nfigures written to {}\n",
        "the data",
        0.8,
        "",
        truth_mean,
        args.out.display()
    );
    let coarse = Grid::square(-10.0, 10.0, 64);
    plot::heatmap(
        args.out.join("ebm_true.svg"),
        &Figure::new("the data: log p, 0.80 in (5, 5)"),
        &coarse,
        p.log_prob(coarse.points().view()).view(),
    )?;
    ncsn::io::print_stdout(&table)
}

/// log N(x; m, s²I) of the noise, one per row.
fn noise_log_prob(x: &Tensor) -> Tensor {
    gaussian_log_prob(&x.add_scalar(-NOISE_MEAN), NOISE_STD)
}

/// A progress bar on stderr.
fn progress(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {elapsed_precise}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The noise's log-density is N((3, 3), 6²I)'s: at its centre −ln(2π·36), and 1/2 lower at
    /// one standard deviation along an axis (f32, so within 10⁻⁵).
    #[test]
    fn the_noise_density_is_the_documented_gaussian() {
        let x = Tensor::from_vec(vec![3.0, 3.0, 9.0, 3.0], &[2, 2]);
        let got = noise_log_prob(&x).to_vec();
        let centre = -(2.0 * std::f64::consts::PI * 36.0).ln();
        assert!((f64::from(got[0]) - centre).abs() < 1e-5, "{got:?}");
        assert!((f64::from(got[1]) - (centre - 0.5)).abs() < 1e-5, "{got:?}");
    }
}

//! What a run does, in one serialisable value: [`RunConfig`], built from a [`Preset`].
//!
//! A run directory holds the configuration it was trained with as `config.json`, and every
//! checkpoint carries it too, so that a checkpoint can be sampled from without knowing the command
//! line that made it.

use serde::{Deserialize, Serialize};

use crate::sample::AnnealedConfig;
use crate::score::GeometricSigmas;

/// The image data sets the examples know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// MNIST: 28×28 grey digits.
    Mnist,
    /// CIFAR-10: 32×32 colour pictures.
    Cifar10,
}

impl DatasetKind {
    /// The name used in paths and messages (`mnist`, `cifar10`).
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// `(channels, side)` of one picture.
    pub fn image_shape(self) -> (usize, usize) {
        match self {
            DatasetKind::Mnist => (1, 28),
            DatasetKind::Cifar10 => (3, 32),
        }
    }
}

/// A named set of settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// Small enough for a 2-core laptop: a narrower network, a smaller batch, fewer steps.
    #[default]
    Cpu,
    /// The paper's settings (§5, appendix B.1): 200k steps of batch 128, ngf as in the paper.
    Paper,
}

/// How the right or lower half of a picture is hidden for inpainting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Occlusion {
    /// Hide the right half (the reference keeps the left 16 columns of 32).
    Right,
    /// Hide the lower half.
    Bottom,
}

// ANCHOR: size_limits
// The largest value of each size-like setting, checked by `RunConfig::validate` on the command
// line's settings and on every stored configuration alike. A count is also an allocation: the
// samples, the network's width, its batch, the recorded pictures are all sized from it, and a
// count far beyond any real run would abort the process on a failed allocation (or panic on a
// size that overflows) instead of stopping it with a message. Each bound is well above what the
// paper uses (CIFAR-10: ngf 128, batch 128, 10 levels, T = 100, 200,000 steps), so that no real
// run meets it, and low enough that what it allows still fits a large machine.

/// `ngf`: 4× the paper's CIFAR-10 width. The parameters grow as ngf² (30 million at 128), so 512
/// has about 480 million, 7.7 GB with their gradients and Adam's two moments.
pub const MAX_NGF: usize = 512;
/// `batch_size`: 32× the paper's 128 (see also [`MAX_CHAINS_TIMES_NGF`]).
pub const MAX_BATCH_SIZE: usize = 4_096;
/// `num_classes`, the number of noise levels L: 100× the paper's 10, above the few hundred later
/// schedules use for pictures this small. Each level adds a row to every conditional
/// normalisation's table and a recorded copy of the samples (see [`MAX_RECORDED_VALUES`]).
pub const MAX_NUM_CLASSES: usize = 1_000;
/// `n_iters`, and `checkpoint_every` and `test_every`, which count the same steps: 500× the
/// paper's 200,000. The loss log keeps a row per step in memory.
pub const MAX_N_ITERS: usize = 100_000_000;
/// `n_steps_each`, Langevin's T: 1000× the paper's 100.
pub const MAX_N_STEPS_EACH: usize = 100_000;
/// `n_samples`: a grid of 100 × 100 pictures. All of them are one batch through the network, so
/// [`MAX_CHAINS_TIMES_NGF`] bounds them further.
pub const MAX_N_SAMPLES: usize = 10_000;
/// `holdout`: more pictures than MNIST and CIFAR-10 hold together (at most a fifth of the data
/// is held out in any case).
pub const MAX_HOLDOUT: usize = 1_000_000;
/// `strip_rows`, `inpaint_images`, `inpaint_completions`, `nearest_k`: rows and columns of a
/// figure, 1000 being far more than a figure shows.
pub const MAX_FIGURE_COUNT: usize = 1_000;
/// `nearest_queries`: as many as there may be samples.
pub const MAX_NEAREST_QUERIES: usize = MAX_N_SAMPLES;
/// The pictures that go through the network in one batch, times `ngf`: every activation is
/// `chains × ngf × H × W` (or twice that width), and sampling, inpainting and the neighbour search
/// run all their chains as one batch. 4× the paper's CIFAR-10 training batch (128 × 128): 512
/// samples from its network, or a batch of 128 through the widest one. A training step of the
/// MNIST network at batch 128 (64 × 128 = 8,192) peaks at 4.1 GiB (see the RefineNet chapter of
/// the book), so a training batch at this bound needs some 35–45 GiB.
pub const MAX_CHAINS_TIMES_NGF: usize = 1 << 16;
/// The values of the pictures a stage keeps at once: the samples with their state after every
/// noise level (`n_samples × (L + 1) × C × H × W`), the inpainting figure and the neighbour
/// figure. 2³⁰ `f32`s are 4 GiB; the paper's 64 samples of CIFAR-10 keep 2.2 million.
pub const MAX_RECORDED_VALUES: usize = 1 << 30;
// ANCHOR_END: size_limits

// ANCHOR: run_config
/// Everything a run needs to know: model size, noise schedule, optimisation, sampling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    /// The data set.
    pub dataset: DatasetKind,
    /// The preset these settings started from.
    pub preset: Preset,
    /// Base width of the RefineNet (`ngf`; the paper: 64 for MNIST, 128 for CIFAR-10).
    pub ngf: usize,
    /// Largest noise level σ₁.
    pub sigma_begin: f64,
    /// Smallest noise level σ_L.
    pub sigma_end: f64,
    /// Number of noise levels L.
    pub num_classes: usize,
    /// λ(σ) = σ^anneal_power (2: the paper's λ(σ) = σ²).
    pub anneal_power: f32,
    /// Adam's learning rate.
    pub lr: f64,
    /// Pictures per training batch.
    pub batch_size: usize,
    /// Training steps (the reference's `n_iters`).
    pub n_iters: usize,
    /// Seed of every random draw of the run.
    pub seed: u64,
    /// Write a checkpoint every this many steps (and at the end).
    pub checkpoint_every: usize,
    /// Evaluate the DSM loss on one test batch every this many steps (the reference: 100).
    pub test_every: usize,
    /// Decay of the exponential moving average of the weights, if one is kept (NCSN v1 keeps none).
    pub ema_mu: Option<f64>,
    /// Pictures held out of the training set for the test loss when the data has no test split.
    pub holdout: usize,
    /// The CRC-32 of the training pictures, recorded when a run trains, so that resuming can tell
    /// whether it is given the same pictures (absent in configurations from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_data_crc32: Option<u32>,
    /// ε of annealed Langevin dynamics (Algorithm 1): the step at the smallest level.
    pub step_size: f32,
    /// T: Langevin steps at each noise level.
    pub n_steps_each: usize,
    /// Pictures in the samples grid.
    pub n_samples: usize,
    /// Samples shown in the annealing strip, one row each.
    pub strip_rows: usize,
    /// Test pictures completed by inpainting.
    pub inpaint_images: usize,
    /// Completions drawn for each of them.
    pub inpaint_completions: usize,
    /// Which half inpainting hides.
    pub occlusion: Occlusion,
    /// Nearest neighbours shown for each sample.
    pub nearest_k: usize,
    /// Samples whose neighbours are looked up.
    pub nearest_queries: usize,
}
// ANCHOR_END: run_config

impl RunConfig {
    /// The settings of `preset` for `dataset`.
    ///
    /// `paper` follows §5 and appendix B.1 of the paper: 10 noise levels from 1 to 0.01,
    /// λ(σ) = σ², Adam with learning rate 1e-3, batch 128, 200,000 steps, ngf 64 for MNIST and 128
    /// for CIFAR-10, and annealed Langevin dynamics with T = 100, ε = 2e-5 from uniform noise.
    ///
    /// `cpu` keeps the objective, the noise levels and the sampler, and shrinks the rest for two
    /// CPU cores: ngf 16, batch 32, 4,500 steps for MNIST (500 for CIFAR-10), 25 samples. On an
    /// idle 2-core machine the MNIST run takes about half an hour (0.35 s a step, 91 s for the
    /// samples); see the book's chapter on images.
    pub fn preset(dataset: DatasetKind, preset: Preset) -> Self {
        let paper = RunConfig {
            dataset,
            preset,
            ngf: match dataset {
                DatasetKind::Mnist => 64,
                DatasetKind::Cifar10 => 128,
            },
            sigma_begin: 1.0,
            sigma_end: 0.01,
            num_classes: 10,
            anneal_power: 2.0,
            lr: 1e-3,
            batch_size: 128,
            n_iters: 200_000,
            seed: 0,
            checkpoint_every: 5_000,
            test_every: 100,
            ema_mu: None,
            holdout: 1_000,
            train_data_crc32: None,
            step_size: 2e-5,
            n_steps_each: 100,
            n_samples: 64,
            strip_rows: 4,
            inpaint_images: 8,
            inpaint_completions: 6,
            occlusion: Occlusion::Right,
            nearest_k: 5,
            nearest_queries: 8,
        };
        match preset {
            Preset::Paper => paper,
            Preset::Cpu => RunConfig {
                ngf: 16,
                batch_size: 32,
                n_iters: match dataset {
                    DatasetKind::Mnist => 4_500,
                    DatasetKind::Cifar10 => 500,
                },
                checkpoint_every: 250,
                test_every: 100,
                n_samples: 25,
                strip_rows: 4,
                inpaint_images: 4,
                inpaint_completions: 4,
                nearest_queries: 5,
                ..paper
            },
        }
    }

    /// Checks the settings a run cannot work with, and names the first one that is off together
    /// with the command-line flag that sets it: counts of zero, sizes above the bounds of
    /// [`MAX_NGF`] and the other `MAX_*` constants, and products of sizes that would need more
    /// memory than [`MAX_CHAINS_TIMES_NGF`] and [`MAX_RECORDED_VALUES`] allow. Called on every
    /// configuration a run starts from:
    /// the command line's ([`crate::run::Args::config`]) and a checkpoint's or `config.json`'s
    /// ([`RunConfig::from_json`]).
    pub fn validate(&self) -> crate::Result<()> {
        let fail = |field: &str, flag: &str, value: &dyn std::fmt::Display, need: &str| {
            let flag = if flag.is_empty() {
                String::new()
            } else {
                format!(" ({flag})")
            };
            Err(crate::Error::Invalid(format!(
                "{field}{flag} is {value}: {need}"
            )))
        };
        let at_least_one = [
            ("n_iters", "--steps", self.n_iters),
            ("batch_size", "--batch-size", self.batch_size),
            ("n_steps_each", "--n-steps-each", self.n_steps_each),
            ("n_samples", "--n-samples", self.n_samples),
            (
                "checkpoint_every",
                "--checkpoint-every",
                self.checkpoint_every,
            ),
            ("num_classes", "", self.num_classes),
            ("test_every", "", self.test_every),
            ("holdout", "", self.holdout),
            ("strip_rows", "", self.strip_rows),
            ("inpaint_images", "", self.inpaint_images),
            ("inpaint_completions", "", self.inpaint_completions),
            ("nearest_k", "", self.nearest_k),
            ("nearest_queries", "", self.nearest_queries),
        ];
        for (field, flag, value) in at_least_one {
            if value == 0 {
                return fail(field, flag, &value, "it must be at least 1");
            }
        }
        // The bounds of the `MAX_*` table above, with the flag that sets each (none: only a
        // stored configuration can).
        let at_most = [
            ("ngf", "--ngf", self.ngf, MAX_NGF),
            (
                "batch_size",
                "--batch-size",
                self.batch_size,
                MAX_BATCH_SIZE,
            ),
            ("n_iters", "--steps", self.n_iters, MAX_N_ITERS),
            (
                "checkpoint_every",
                "--checkpoint-every",
                self.checkpoint_every,
                MAX_N_ITERS,
            ),
            (
                "n_steps_each",
                "--n-steps-each",
                self.n_steps_each,
                MAX_N_STEPS_EACH,
            ),
            ("n_samples", "--n-samples", self.n_samples, MAX_N_SAMPLES),
            ("num_classes", "", self.num_classes, MAX_NUM_CLASSES),
            ("test_every", "", self.test_every, MAX_N_ITERS),
            ("holdout", "", self.holdout, MAX_HOLDOUT),
            ("strip_rows", "", self.strip_rows, MAX_FIGURE_COUNT),
            ("inpaint_images", "", self.inpaint_images, MAX_FIGURE_COUNT),
            (
                "inpaint_completions",
                "",
                self.inpaint_completions,
                MAX_FIGURE_COUNT,
            ),
            ("nearest_k", "", self.nearest_k, MAX_FIGURE_COUNT),
            (
                "nearest_queries",
                "",
                self.nearest_queries,
                MAX_NEAREST_QUERIES,
            ),
        ];
        for (field, flag, value, max) in at_most {
            if value > max {
                return fail(field, flag, &value, &format!("it must be at most {max}"));
            }
        }
        // Products of sizes that are each within bounds. With the bounds above none of them
        // overflows a 64-bit usize.
        let ngf = self.ngf;
        let chains = [
            ("batch_size", "--batch-size", self.batch_size),
            ("n_samples", "--n-samples", self.n_samples),
            ("nearest_queries", "", self.nearest_queries),
            (
                "inpaint_images × inpaint_completions",
                "",
                self.inpaint_images * self.inpaint_completions,
            ),
        ];
        for (field, flag, n) in chains {
            if n * ngf > MAX_CHAINS_TIMES_NGF {
                let flags = if flag.is_empty() {
                    "--ngf".to_string()
                } else {
                    format!("{flag}, --ngf")
                };
                return fail(
                    &format!("{field} × ngf"),
                    &flags,
                    &format_args!("{n} × {ngf}"),
                    &format!(
                        "one batch of that many pictures through a network that wide needs too \
                         much memory; the product must be at most {MAX_CHAINS_TIMES_NGF}"
                    ),
                );
            }
        }
        let (c, side) = self.dataset.image_shape();
        let picture = c * side * side;
        let kept = [
            (
                "n_samples × (num_classes + 1)",
                "--n-samples",
                self.n_samples,
                self.num_classes + 1,
            ),
            (
                "inpaint_images × (inpaint_completions + 2)",
                "",
                self.inpaint_images,
                self.inpaint_completions + 2,
            ),
            (
                "nearest_queries × (nearest_k + 1)",
                "",
                self.nearest_queries,
                self.nearest_k + 1,
            ),
        ];
        for (field, flag, a, b) in kept {
            if a * b * picture > MAX_RECORDED_VALUES {
                return fail(
                    field,
                    flag,
                    &format_args!("{a} × {b}"),
                    &format!(
                        "that many pictures of {c}×{side}×{side} values kept at once exceed \
                         {MAX_RECORDED_VALUES} values"
                    ),
                );
            }
        }
        if self.ngf < 2 {
            // CondInstanceNorm++ normalises each picture's channel means by their unbiased
            // variance across channels, which is 0/0 for a single channel.
            return fail(
                "ngf",
                "--ngf",
                &self.ngf,
                "the network needs at least 2 channels (CondInstanceNorm++ takes a variance \
                 across them)",
            );
        }
        if !(self.step_size.is_finite() && self.step_size > 0.0) {
            return fail(
                "step_size",
                "--step-size",
                &self.step_size,
                "Langevin's step size ε must be a positive number",
            );
        }
        if let Some(mu) = self.ema_mu
            && !(0.0..1.0).contains(&mu)
        {
            return fail(
                "ema_mu",
                "--ema",
                &mu,
                "the decay of a moving average must be in [0, 1) (e.g. 0.999)",
            );
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return fail(
                "lr",
                "",
                &self.lr,
                "the learning rate must be a positive number",
            );
        }
        if !(self.sigma_end > 0.0
            && self.sigma_end < self.sigma_begin
            && self.sigma_begin.is_finite())
        {
            return fail(
                "sigma_begin, sigma_end",
                "",
                &format_args!("{}, {}", self.sigma_begin, self.sigma_end),
                "the noise levels need σ₁ > σ_L > 0",
            );
        }
        if !self.anneal_power.is_finite() {
            return fail(
                "anneal_power",
                "",
                &self.anneal_power,
                "it must be a number",
            );
        }
        Ok(())
    }

    /// The noise levels σ₁ > … > σ_L.
    pub fn sigmas(&self) -> GeometricSigmas {
        GeometricSigmas::new(self.sigma_begin, self.sigma_end, self.num_classes)
    }

    /// The sampler's settings (no recording).
    pub fn annealed(&self) -> AnnealedConfig {
        AnnealedConfig {
            step_size: self.step_size,
            n_steps_each: self.n_steps_each,
            record_every: 0,
        }
    }

    /// The configuration as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a RunConfig always serialises")
    }

    /// A configuration from JSON (as written by [`RunConfig::to_json`]), checked with
    /// [`RunConfig::validate`].
    pub fn from_json(json: &str) -> crate::Result<Self> {
        let config: Self = serde_json::from_str(json)
            .map_err(|e| crate::Error::Invalid(format!("not a valid run configuration: {e}")))?;
        config.validate().map_err(|e| match e {
            crate::Error::Invalid(m) => {
                crate::Error::Invalid(format!("not a valid run configuration: {m}"))
            }
            e => e,
        })?;
        Ok(config)
    }
}

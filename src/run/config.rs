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
    /// with the command-line flag that sets it. Called on every configuration a run starts from:
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

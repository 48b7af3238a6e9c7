//! The command line of the image examples and the pipeline it drives: load the data, train,
//! sample, inpaint, look up nearest neighbours, write `results.json`.
//!
//! `examples/mnist.rs` and `examples/cifar10.rs` are a few lines each: they parse [`Args`] and call
//! [`run`] with their data set and the network to build. Everything else lives here, so that the
//! two examples cannot drift apart and the tests can run the whole pipeline on tiny data with a
//! tiny network.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Axis;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::config::{DatasetKind, Preset, RunConfig};
use super::generate::{annealing_strip, generate, inpaint, inpainting_grid};
use super::nearest::{Neighbour, nearest_grid, nearest_neighbours};
use super::train::{
    RunDir, ScoreNet, Stream, TrainOptions, checkpoint_config, evaluate_dsm, load_weights,
    resume_mismatch, split_holdout, stream_rng, train,
};
use crate::data::{Dataset, Split, Transform, cifar10, mnist};
use crate::io::{GridOptions, save_grid, save_grid_with};
use crate::nn::{CondRefineNetDilated, ParamStore, RefineNetConfig};
use crate::tensor::{Device, Tensor};
use crate::{Error, Result};

/// The command line shared by `cargo run --release --example mnist` and `--example cifar10`.
///
/// With none of `--train`, `--sample`, `--inpaint`, `--nearest`, all four run in that order.
/// With some of them, only those run (sampling, inpainting and the neighbour search then use the
/// run directory's checkpoint, or `--checkpoint PATH`).
#[derive(Clone, Debug, Default, Parser)]
#[command(
    // `--seed -1` is then a bad value for --seed, not an unexpected argument "-1".
    allow_negative_numbers = true,
    about = "Train NCSN on images and sample from it (Song & Ermon, 2019)",
    long_about = "Train NCSN on images and sample from it (Song & Ermon, 2019).\n\n\
        With none of --train, --sample, --inpaint and --nearest, all four run, in that order, \
        and write into one run directory (started again, a run resumes from its checkpoint). \
        With some of them, only those run: sampling, inpainting and the neighbour search then \
        use the run directory's checkpoint, or --checkpoint PATH."
)]
pub struct Args {
    /// Train (resuming from the run directory's checkpoint if there is one).
    #[arg(long)]
    pub train: bool,
    /// Draw samples with annealed Langevin dynamics; write the grid and the annealing strip.
    #[arg(long)]
    pub sample: bool,
    /// Complete half-hidden test pictures (the paper's Fig. 6).
    #[arg(long)]
    pub inpaint: bool,
    /// Find each sample's nearest training pictures (the paper's Fig. 9–10, pixel distance).
    #[arg(long)]
    pub nearest: bool,
    /// Sample from this checkpoint instead of the run directory's (not with training, and only
    /// into a run directory that holds no checkpoint of its own).
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// The data directory [default: `../shared/data/DATASET` beside the repository].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The run directory [default: `runs/DATASET-PRESET`].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Settings to start from.
    #[arg(long, value_enum, default_value_t = Preset::Cpu)]
    pub preset: Preset,
    /// Training steps (overrides the preset).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed of every random draw (overrides the preset's 0; when only sampling from a
    /// checkpoint, the seed it was trained with).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Pictures per training batch (overrides the preset).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Base width of the network (overrides the preset).
    #[arg(long)]
    pub ngf: Option<usize>,
    /// Pictures in the samples grid (overrides the preset).
    #[arg(long)]
    pub n_samples: Option<usize>,
    /// Langevin steps per noise level, T (overrides the preset's 100).
    #[arg(long)]
    pub n_steps_each: Option<usize>,
    /// Step size ε of annealed Langevin dynamics (overrides the preset's 2e-5).
    #[arg(long)]
    pub step_size: Option<f32>,
    /// Write a checkpoint every this many steps (overrides the preset).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Keep an exponential moving average of the weights with this decay and sample with it.
    #[arg(long)]
    pub ema: Option<f64>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// Where tensors live: `cpu`, or `vulkan` (a build with `--features vulkan`, a Vulkan loader
    /// and a device; the error says which is missing).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl Args {
    /// The configuration: the preset for `kind` with this command line's overrides, checked with
    /// [`RunConfig::validate`] (an error names the flag that is off).
    pub fn config(&self, kind: DatasetKind) -> Result<RunConfig> {
        let mut c = RunConfig::preset(kind, self.preset);
        let set = |field: &mut usize, v: Option<usize>| {
            if let Some(v) = v {
                *field = v
            }
        };
        set(&mut c.n_iters, self.steps);
        set(&mut c.batch_size, self.batch_size);
        set(&mut c.ngf, self.ngf);
        set(&mut c.n_samples, self.n_samples);
        set(&mut c.n_steps_each, self.n_steps_each);
        set(&mut c.checkpoint_every, self.checkpoint_every);
        if let Some(s) = self.seed {
            c.seed = s;
        }
        if let Some(e) = self.step_size {
            c.step_size = e;
        }
        if self.ema.is_some() {
            c.ema_mu = self.ema;
        }
        c.validate()?;
        Ok(c)
    }

    /// The data directory: `--data`, or else `../shared/data/<dataset>` beside the repository
    /// (or `shared/data/<dataset>` inside it, where a checkout keeps `shared/` there).
    pub fn data_dir(&self, kind: DatasetKind) -> PathBuf {
        if let Some(d) = &self.data {
            return d.clone();
        }
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        // The repository's parent by name, so that messages show `/work/shared/...`, not
        // `/work/main/../shared/...`.
        let beside = repo
            .parent()
            .map_or_else(|| repo.join(".."), Path::to_path_buf)
            .join("shared/data")
            .join(kind.name());
        let inside = repo.join("shared/data").join(kind.name());
        if !beside.is_dir() && inside.is_dir() {
            inside
        } else {
            beside
        }
    }

    /// The run directory: `--out`, or `runs/<dataset>-<preset>`.
    pub fn out_dir(&self, kind: DatasetKind) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let preset = match self.preset {
                Preset::Cpu => "cpu",
                Preset::Paper => "paper",
            };
            PathBuf::from("runs").join(format!("{}-{preset}", kind.name()))
        })
    }

    /// Whether no stage was named (then all run).
    fn all(&self) -> bool {
        !(self.train || self.sample || self.inpaint || self.nearest)
    }
}

/// Parses a count that must be at least 1, for command lines (`value_parser = at_least_one`): a
/// batch, a number of samples or steps.
pub fn at_least_one(s: &str) -> std::result::Result<usize, String> {
    count_in(1, usize::MAX)(s)
}

/// A parser of counts from `min` to `max` for command lines
/// (`value_parser = count_in(1, 65_536)`). A count sizes an allocation (a batch, samples, a log of
/// steps), so an upper bound turns a mistyped one into a message naming the flag, not a process
/// aborted by a failed allocation.
pub fn count_in(
    min: usize,
    max: usize,
) -> impl Fn(&str) -> std::result::Result<usize, String> + Clone + Send + Sync + 'static {
    move |s| match s.parse::<usize>() {
        Ok(n) if n < min => Err(format!("it must be at least {min}")),
        Ok(n) if n > max => Err(format!("it must be at most {max}")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a count ({e})")),
    }
}

/// The training and test pictures of `kind` in `dir`.
///
/// MNIST: `train-*` and `t10k-*` if both are there; with the `t10k-*` files alone (the copy in
/// `shared/data`), the last `holdout` of them (at most a fifth) are the test set and the rest the
/// training set. CIFAR-10: the `data_batch_*` files, and `test_batch.bin` if present, else a
/// held-out part as for MNIST. A split whose files are there but damaged is an error, never
/// replaced by a held-out part. A missing directory is an error that names it and says how to pass
/// another.
pub fn load_data(kind: DatasetKind, dir: &Path, holdout: usize) -> Result<(Dataset, Dataset)> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "{} data not found: {} is not a directory (pass --data DIR)",
            kind.name(),
            dir.display()
        )));
    }
    let held_out = |d: &Dataset| split_holdout(d, holdout.min(d.len() / 5).max(1));
    let context = |e: Error| match e {
        Error::Invalid(m) => {
            Error::Invalid(format!("{} data in {}: {m}", kind.name(), dir.display()))
        }
        e => e,
    };
    // A split is missing only when none of its files is there at all. One that is there but cannot
    // be read is an error, not a reason to fall back on a held-out part of the other split.
    let present = |names: &[&str]| {
        names.iter().any(|n| {
            [n.to_string(), format!("{n}.gz")]
                .iter()
                .any(|f| dir.join(f).symlink_metadata().is_ok())
        })
    };
    match kind {
        DatasetKind::Mnist => {
            let test = mnist::load_dir(dir, Split::Test).map_err(context)?;
            if present(&["train-images-idx3-ubyte", "train-labels-idx1-ubyte"]) {
                Ok((mnist::load_dir(dir, Split::Train).map_err(context)?, test))
            } else {
                held_out(&test).map_err(context)
            }
        }
        DatasetKind::Cifar10 => {
            let train = cifar10::load(dir, Split::Train).map_err(context)?;
            if present(&["test_batch.bin"]) {
                Ok((train, cifar10::load(dir, Split::Test).map_err(context)?))
            } else {
                held_out(&train).map_err(context)
            }
        }
    }
}

/// Wall times of the stages of a run, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Training (this invocation's steps).
    pub train_s: Option<f64>,
    /// Training steps per second.
    pub steps_per_s: Option<f64>,
    /// The test loss evaluation.
    pub test_loss_s: Option<f64>,
    /// Sampling the grid and the strip.
    pub sample_s: Option<f64>,
    /// Inpainting.
    pub inpaint_s: Option<f64>,
    /// The nearest-neighbour search (and the samples it needed, if it drew its own).
    pub nearest_s: Option<f64>,
    /// The whole invocation.
    pub total_s: Option<f64>,
}

/// Where a run wrote its files.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Paths {
    /// `config.json`.
    pub config: Option<PathBuf>,
    /// The checkpoint trained or sampled from.
    pub checkpoint: Option<PathBuf>,
    /// `loss.csv`.
    pub loss_csv: Option<PathBuf>,
    /// `loss.svg`.
    pub loss_plot: Option<PathBuf>,
    /// `samples.png`.
    pub samples: Option<PathBuf>,
    /// `annealing.png`.
    pub annealing: Option<PathBuf>,
    /// `inpainting.png`.
    pub inpainting: Option<PathBuf>,
    /// `nearest.png`.
    pub nearest: Option<PathBuf>,
}

/// `results.json`: what a run did, for comparing runs with a script. Each invocation updates the
/// fields of the stages it ran and keeps the others.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The configuration.
    pub config: Option<RunConfig>,
    /// Training steps done.
    pub iterations: Option<usize>,
    /// The step this invocation resumed training from.
    pub resumed_from: Option<usize>,
    /// Mean training loss over the last 100 rows of the loss log: fewer in a run of fewer steps,
    /// or in a resumed run whose log had lost rows (the resume warns of that).
    pub final_train_loss: Option<f32>,
    /// The annealed DSM loss over the test pictures (fixed seed, no gradients).
    pub test_dsm_loss: Option<f32>,
    /// How many test pictures that loss averaged over.
    pub test_images: Option<usize>,
    /// Which weights sampled: `"params"` or `"ema"`.
    pub sampling_weights: Option<String>,
    /// Wall times.
    pub timings: Timings,
    /// Files written.
    pub paths: Paths,
    /// For each sample of the memorisation check, its nearest training pictures.
    pub nearest: Option<Vec<Vec<Neighbour>>>,
}

impl Results {
    /// The results in `path`, or empty ones if there is no file yet. A file that cannot be read
    /// or parsed is an error naming it: replacing it would lose what earlier stages recorded.
    pub fn load_or_new(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            Error::format(
                path,
                format!("not the results of a run ({e}); move it away to start them afresh"),
            )
        })
    }

    /// Writes the results as pretty JSON (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("results serialise");
        crate::io::write_atomic(path, json.as_bytes())
    }
}

/// The configuration of a run that only samples from a checkpoint trained with `trained`: how the
/// network was trained (its shape, noise levels, seed, data) stays the checkpoint's, so that
/// `results.json` keeps the record of the training; how to sample (the number of samples, T, ε,
/// the inpainting and neighbour settings) is the command line's, `cli`. The seed of the sampling
/// streams is the training's unless `--seed` is given, so that sampling again reproduces the
/// samples of the run that trained; `--ema` chooses a moving average the checkpoint does not
/// record.
fn sampling_config(trained: &RunConfig, cli: &RunConfig, args: &Args) -> RunConfig {
    RunConfig {
        seed: args.seed.unwrap_or(trained.seed),
        ema_mu: args.ema.or(trained.ema_mu),
        step_size: cli.step_size,
        n_steps_each: cli.n_steps_each,
        n_samples: cli.n_samples,
        strip_rows: cli.strip_rows,
        inpaint_images: cli.inpaint_images,
        inpaint_completions: cli.inpaint_completions,
        occlusion: cli.occlusion,
        nearest_k: cli.nearest_k,
        nearest_queries: cli.nearest_queries,
        ..trained.clone()
    }
}

/// Whether two paths name the same file (both exist and resolve to one path).
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// The CRC-32 of a data set's pictures: their shape, then their bytes in `(N, C, H, W)` order.
/// At the 8 GB/s `crc32fast` reaches here, about 20 ms for CIFAR-10's 150 MB of training pictures.
fn pictures_crc32(data: &Dataset) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    for d in data.images.shape() {
        crc.update(&(*d as u64).to_le_bytes());
    }
    match data.images.as_slice() {
        Some(bytes) => crc.update(bytes),
        None => data.images.iter().for_each(|&b| crc.update(&[b])),
    }
    crc.finalize()
}

/// The paper's network, `CondRefineNetDilated`, sized for `kind` with the configuration's `ngf`
/// and number of noise levels.
pub fn refinenet(
    kind: DatasetKind,
    config: &RunConfig,
    rng: &mut ChaCha8Rng,
) -> CondRefineNetDilated {
    let (channels, image_size) = kind.image_shape();
    CondRefineNetDilated::new(
        RefineNetConfig {
            channels,
            image_size,
            ngf: config.ngf,
            num_classes: config.num_classes,
            logit_transform: false,
        },
        rng,
    )
}

/// `n` distinct indices below `len`, drawn from `rng` (fewer if `len < n`).
fn pick(len: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<usize> {
    rand::seq::index::sample(rng, len, n.min(len)).into_vec()
}

/// The network, counting its evaluations on a progress bar: the samplers evaluate it once per
/// Langevin step, so the bar counts the steps of the L × T schedule (on a device, the steps
/// recorded; the device runs them a command buffer behind). Without a terminal to draw on, a
/// plain line every 100 steps.
struct Counted<'a, M> {
    model: &'a M,
    bar: ProgressBar,
    what: &'static str,
    plain: bool,
    start: Instant,
}

impl<'a, M: ScoreNet> Counted<'a, M> {
    fn new(model: &'a M, args: &Args, what: &'static str, steps: usize) -> Self {
        let bar = if args.quiet {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(steps as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {msg} step {pos}/{len} {per_sec} ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.set_message(what);
            bar
        };
        let plain = !args.quiet && !std::io::stderr().is_terminal();
        Counted {
            model,
            bar,
            what,
            plain,
            start: Instant::now(),
        }
    }
}

impl<M: ScoreNet> ScoreNet for Counted<'_, M> {
    fn params(&self) -> &ParamStore {
        self.model.params()
    }
    fn score(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let s = self.model.score(x, labels);
        self.bar.inc(1);
        let (done, total) = (self.bar.position(), self.bar.length().unwrap_or(0));
        if self.plain && done % 100 == 0 {
            let rate = done as f64 / self.start.elapsed().as_secs_f64();
            eprintln!(
                "{}: step {done}/{total} {rate:.2} steps/s ETA {:.0} s",
                self.what,
                total.saturating_sub(done) as f64 / rate
            );
        }
        s
    }
    fn device(&self) -> Device {
        self.model.device()
    }
}

impl<M> Drop for Counted<'_, M> {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Prints a line unless quiet.
fn say(args: &Args, msg: impl AsRef<str>) {
    if !args.quiet {
        eprintln!("{}", msg.as_ref());
    }
}

/// Runs the stages `args` asks for on data set `kind`, with the network `build` makes from the
/// configuration and an initialisation generator; returns (and writes) the results.
pub fn run<M: ScoreNet>(
    kind: DatasetKind,
    args: &Args,
    build: impl Fn(&RunConfig, &mut ChaCha8Rng) -> M,
) -> Result<Results> {
    let t_all = Instant::now();
    // A long run allocates the same large activations every step: keep them in the process.
    crate::tensor::keep_freed_memory();
    let mut config = args.config(kind)?;
    let all = args.all();
    let trains = all || args.train;
    if let (true, Some(other)) = (trains, &args.checkpoint) {
        // Trained on, another run's weights would make a run that is neither.
        return Err(Error::Invalid(format!(
            "--checkpoint {} names weights to sample from; it cannot be combined with training \
             (--train, or no stage named, which trains). Sample with --sample, --inpaint or \
             --nearest",
            other.display()
        )));
    }
    let data_dir = args.data_dir(kind);
    let (train_set, test_set) = load_data(kind, &data_dir, config.holdout)?;
    let (channels, side) = kind.image_shape();
    for (split, set) in [("training", &train_set), ("test", &test_set)] {
        if set.image_shape() != (channels, side, side) {
            return Err(Error::Invalid(format!(
                "{}: the {split} pictures are {:?}, {} needs {:?}",
                data_dir.display(),
                set.image_shape(),
                kind.name(),
                (channels, side, side)
            )));
        }
    }
    if trains {
        config.train_data_crc32 = Some(pictures_crc32(&train_set));
    }
    if trains && config.batch_size > train_set.len() {
        return Err(Error::Invalid(format!(
            "batch_size (--batch-size) is {}, more than the {} training pictures in {}",
            config.batch_size,
            train_set.len(),
            data_dir.display()
        )));
    }

    // Which weights: the run's own checkpoint, or one given on the command line. A checkpoint
    // stores the configuration it was trained with, which fixes the network's shape.
    let out_dir = args.out_dir(kind);
    let run_checkpoint = RunDir::checkpoint_in(&out_dir);
    let sampling_from = args.checkpoint.clone().unwrap_or(run_checkpoint.clone());
    if let Some(other) = &args.checkpoint {
        // Another run's weights, sampled into this run's directory, would be recorded beside
        // this run's training.
        if run_checkpoint.is_file() && !same_file(other, &run_checkpoint) {
            return Err(Error::Invalid(format!(
                "{} holds a run of its own ({}); sample from --checkpoint {} into another --out",
                out_dir.display(),
                run_checkpoint.display(),
                other.display()
            )));
        }
    }
    if trains {
        // Resuming: the command line must build the network the checkpoint holds.
        if run_checkpoint.is_file()
            && let Some(c) = checkpoint_config(&run_checkpoint)?
            && let Some(field) = resume_mismatch(&c, &config)
        {
            return Err(Error::Invalid(format!(
                "{}: this run was trained with {field}; pass the same settings to resume it, \
                 or another --out to start a new run",
                run_checkpoint.display()
            )));
        }
    } else {
        if !sampling_from.is_file() {
            return Err(Error::Invalid(format!(
                "no checkpoint at {}: train first (--train) or pass --checkpoint PATH",
                sampling_from.display()
            )));
        }
        if let Some(c) = checkpoint_config(&sampling_from)? {
            if c.dataset != kind {
                return Err(Error::Invalid(format!(
                    "{} was trained on {}; sample from it with the {} example",
                    sampling_from.display(),
                    c.dataset.name(),
                    c.dataset.name()
                )));
            }
            config = sampling_config(&c, &config, args);
            // Each setting was checked on its own; together (the checkpoint's width, this
            // command line's number of samples) they must fit as well.
            config.validate().map_err(|e| match e {
                Error::Invalid(m) => Error::Invalid(format!(
                    "sampling from {} (trained with --ngf {}): {m}",
                    sampling_from.display(),
                    c.ngf
                )),
                e => e,
            })?;
        }
    }
    let device = Device::parse(&args.device)?;
    let model = build(&config, &mut stream_rng(config.seed, Stream::Init));
    model.params().to_device(&device);
    // Sampling only: the weights go in before anything is written, so that a checkpoint that
    // does not fit the network stops the run as bad arguments do.
    let loaded_ema = if trains {
        None
    } else {
        Some(load_weights(&sampling_from, model.params(), true)?)
    };
    // Created only now, so that a run stopped by bad arguments, data or weights leaves nothing
    // behind.
    let run_dir = RunDir::create(&out_dir)?;
    let mut results = Results::load_or_new(&run_dir.results())?;
    say(
        args,
        format!(
            "{}: {} training / {} test pictures, network with {} parameters on {device}, run \
             directory {}",
            kind.name(),
            train_set.len(),
            test_set.len(),
            model.params().num_scalars(),
            run_dir.path().display()
        ),
    );
    results.config = Some(config.clone());

    if trains {
        let transform = match kind {
            DatasetKind::Mnist => Transform::mnist(),
            DatasetKind::Cifar10 => Transform::cifar10(),
        };
        let opts = TrainOptions {
            progress: !args.quiet,
        };
        let report = train(
            &model,
            &train_set,
            Some(&test_set),
            transform,
            &config,
            &run_dir,
            opts,
        )?;
        say(
            args,
            format!(
                "trained steps {}..{} in {:.1} s ({:.2} steps/s)",
                report.resumed_from, report.steps, report.seconds, report.steps_per_sec
            ),
        );
        results.iterations = Some(report.steps);
        results.resumed_from = Some(report.resumed_from);
        results.final_train_loss = report.final_loss;
        results.timings.train_s = Some(report.seconds);
        results.timings.steps_per_s = Some(report.steps_per_sec);
        results.paths.config = Some(run_dir.config());
        results.paths.loss_csv = Some(run_dir.loss_csv());
        results.paths.loss_plot = Some(run_dir.loss_plot());
    }
    // Trained with a moving average: sample with it, from the checkpoint just written.
    let ema = match loaded_ema {
        Some(ema) => ema,
        None if config.ema_mu.is_some() => load_weights(&sampling_from, model.params(), true)?,
        None => false,
    };
    results.sampling_weights = Some(if ema { "ema" } else { "params" }.into());
    results.paths.checkpoint = Some(sampling_from.clone());

    if trains {
        let t = Instant::now();
        let n = test_set.len().min(500);
        let loss = evaluate_dsm(&model, &test_set, &config, n)?;
        results.test_dsm_loss = Some(loss);
        results.test_images = Some(n);
        results.timings.test_loss_s = Some(t.elapsed().as_secs_f64());
        say(args, format!("test DSM loss over {n} pictures: {loss:.4}"));
    }

    let sigmas = config.sigmas();
    let annealed = config.annealed();
    let mut samples = None;
    if all || args.sample {
        let t = Instant::now();
        say(args, format!("sampling {} pictures ...", config.n_samples));
        let mut rng = stream_rng(config.seed, Stream::Sample);
        let steps = sigmas.len() * annealed.n_steps_each;
        let g = generate(
            &Counted::new(&model, args, "sampling", steps),
            &sigmas,
            &annealed,
            config.n_samples,
            (channels, side),
            &mut rng,
        );
        let grid_cols = (config.n_samples as f64).sqrt().ceil() as usize;
        let path = run_dir.join("samples.png");
        save_grid(&path, g.samples.view(), grid_cols)?;
        let strip = annealing_strip(&g.stages, config.strip_rows);
        let strip_path = run_dir.join("annealing.png");
        save_grid(&strip_path, strip.view(), g.stages.len())?;
        results.timings.sample_s = Some(t.elapsed().as_secs_f64());
        results.paths.samples = Some(path);
        results.paths.annealing = Some(strip_path);
        samples = Some(g.samples);
    }
    if all || args.inpaint {
        let t = Instant::now();
        say(args, "inpainting ...");
        let mut rng = stream_rng(config.seed, Stream::Inpaint);
        let idx = pick(test_set.len(), config.inpaint_images, &mut rng);
        let originals = test_set.gather_f32(&idx);
        let k = config.inpaint_completions;
        let steps = sigmas.len() * annealed.n_steps_each;
        let done = inpaint(
            &Counted::new(&model, args, "inpainting", steps),
            &sigmas,
            &annealed,
            originals.view(),
            k,
            config.occlusion,
            &mut rng,
        );
        let grid = inpainting_grid(originals.view(), done.view(), config.occlusion);
        let path = run_dir.join("inpainting.png");
        save_grid(&path, grid.view(), k + 2)?;
        results.timings.inpaint_s = Some(t.elapsed().as_secs_f64());
        results.paths.inpainting = Some(path);
    }
    if all || args.nearest {
        let t = Instant::now();
        let queries = match samples {
            Some(s) => s,
            None => {
                say(args, "sampling for the neighbour search ...");
                let mut rng = stream_rng(config.seed, Stream::Sample);
                let n = config.nearest_queries;
                let counted = Counted::new(
                    &model,
                    args,
                    "sampling",
                    sigmas.len() * annealed.n_steps_each,
                );
                generate(&counted, &sigmas, &annealed, n, (channels, side), &mut rng).samples
            }
        };
        let q = queries.slice_axis(
            Axis(0),
            (0..config.nearest_queries.min(queries.dim().0)).into(),
        );
        let found = nearest_neighbours(q, &train_set, config.nearest_k);
        let grid = nearest_grid(q, &train_set, &found);
        let path = run_dir.join("nearest.png");
        save_grid_with(
            &path,
            grid.view(),
            &GridOptions {
                nrow: config.nearest_k + 1,
                ..GridOptions::default()
            },
        )?;
        let closest = found
            .iter()
            .filter_map(|l| l.first().map(|n| n.distance))
            .fold(f32::INFINITY, f32::min);
        say(
            args,
            format!("closest training picture to any sample: L2 distance {closest:.3}"),
        );
        results.nearest = Some(found);
        results.timings.nearest_s = Some(t.elapsed().as_secs_f64());
        results.paths.nearest = Some(path);
    }
    results.timings.total_s = Some(t_all.elapsed().as_secs_f64());
    results.save(&run_dir.results())?;
    say(args, format!("wrote {}", run_dir.results().display()));
    Ok(results)
}

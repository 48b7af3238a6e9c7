//! The training loop of NCSN: annealed denoising score matching with Adam, with everything a long
//! run needs around it.
//!
//! [`train`] runs the loop of the reference's `AnnealRunner.train`: draw a mini-batch, dequantise
//! it, draw one noise level per picture, take the annealed DSM loss (Eq. 6) and one Adam step; every
//! `test_every` steps evaluate the same loss on a test batch without gradients. Around that loop:
//!
//! - a **run directory** ([`RunDir`]) with the configuration used (`config.json`), the loss log
//!   (`loss.csv`: step, training loss, test loss where one was taken) and its plot (`loss.svg`);
//! - a **progress bar** with the step, the loss, steps per second and the time left;
//! - **checkpoints** every `checkpoint_every` steps and at the end, written atomically to
//!   `checkpoint.safetensors`: the parameters, Adam's moments, the EMA of the weights if one is
//!   kept, the step, and the position of the training random stream;
//! - **resume**: if the run directory holds a checkpoint, training continues from it and sees the
//!   same batches, noise levels and noise it would have seen without the interruption, so that an
//!   interrupted run ends with the same bits as an uninterrupted one;
//! - a **NaN guard**: a loss that is not finite stops training with an error naming the step, before
//!   the optimizer touches the weights and without writing a checkpoint, so the last good one stays.
//!
//! # Random streams
//!
//! All draws come from `ChaCha8Rng::seed_from_u64(config.seed)` on separate streams
//! ([`Stream`]), so that, e.g., evaluating the test loss more or less often never changes the
//! training batches.

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{ArrayD, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::RunConfig;
use crate::data::{BatchOptions, Batches, Dataset, Transform};
use crate::io::checkpoint::{self, Checkpoint, Tensors};
use crate::nn::ParamStore;
use crate::optim::{Adam, AdamConfig, Ema};
use crate::plot::{self, Figure, Series};
use crate::score::{GeometricSigmas, anneal_dsm_loss};
use crate::tensor::Device;
use crate::{Error, Result, Tensor, no_grad};

/// A noise-conditional score network as training and sampling see it: parameters in a
/// [`ParamStore`] and s_θ(x, y) for a batch `(N, C, H, W)` and one noise-level index per picture.
pub trait ScoreNet {
    /// The parameters, under the names checkpoints use.
    fn params(&self) -> &ParamStore;
    /// s_θ(x, σ_y) with y = `labels[n]` for each picture n of `x`.
    fn score(&self, x: &Tensor, labels: &[usize]) -> Tensor;
    /// The device the parameters live on: inputs are made there ("data follows the model"), so
    /// moving the parameters with [`ParamStore::to_device`] moves the whole run.
    fn device(&self) -> Device {
        self.params()
            .params()
            .first()
            .map(Tensor::device)
            .unwrap_or(Device::Cpu)
    }
}

/// The independent random streams of a run (`ChaCha8Rng::set_stream`), all from `config.seed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// The mini-batches: order, flips, dequantisation ([`Batches`]).
    Batches = 0,
    /// The noise levels and the noise of the training loss.
    Loss = 1,
    /// Test batches and their noise.
    Test = 2,
    /// The network's initial weights.
    Init = 3,
    /// Annealed Langevin sampling.
    Sample = 4,
    /// Inpainting: the pictures chosen and the sampler's noise.
    Inpaint = 5,
}

/// A generator for `stream` of a run seeded with `seed`.
pub fn stream_rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// The files of a run, all in one directory.
#[derive(Clone, Debug)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `path`, created if it does not exist. Temporary files that an
    /// interrupted run left there are removed ([`checkpoint::remove_stale_temporaries`]).
    pub fn create(path: impl AsRef<Path>) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        if root.exists() && !root.is_dir() {
            return Err(Error::Invalid(format!(
                "{}: exists and is not a directory (pass another --out)",
                root.display()
            )));
        }
        fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        // What an interrupted write left behind (the files it meant to replace are whole).
        checkpoint::remove_stale_temporaries(&root)?;
        Ok(RunDir { root })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A file in the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `checkpoint.safetensors`: the latest training state.
    pub fn checkpoint(&self) -> PathBuf {
        Self::checkpoint_in(&self.root)
    }

    /// Where [`RunDir::checkpoint`] is for a run directory at `path` (which need not exist).
    pub fn checkpoint_in(path: &Path) -> PathBuf {
        path.join("checkpoint.safetensors")
    }

    /// The checkpoint to resume from, if the directory holds one.
    pub fn latest_checkpoint(&self) -> Option<PathBuf> {
        let p = self.checkpoint();
        p.is_file().then_some(p)
    }

    /// `config.json`: the configuration of the run.
    pub fn config(&self) -> PathBuf {
        self.join("config.json")
    }

    /// `loss.csv`: `step,loss,test_loss`, one row per step.
    pub fn loss_csv(&self) -> PathBuf {
        self.join("loss.csv")
    }

    /// `loss.svg`: the loss curves.
    pub fn loss_plot(&self) -> PathBuf {
        self.join("loss.svg")
    }

    /// `results.json`: what the run produced.
    pub fn results(&self) -> PathBuf {
        self.join("results.json")
    }
}

/// One row of the loss log.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossRow {
    /// The step, counting from 1.
    pub step: usize,
    /// The training loss of that step's batch.
    pub loss: f32,
    /// The loss on a test batch, on the steps where one was taken.
    pub test_loss: Option<f32>,
}

/// Writes the loss log as CSV (atomically).
pub fn write_loss_csv(path: &Path, rows: &[LossRow]) -> Result<()> {
    let mut s = String::from("step,loss,test_loss\n");
    for r in rows {
        let test = r.test_loss.map(|t| t.to_string()).unwrap_or_default();
        s.push_str(&format!("{},{},{}\n", r.step, r.loss, test));
    }
    checkpoint::write_atomic(path, s.as_bytes())
}

/// Reads a loss log written by [`write_loss_csv`]; a malformed line is an error naming the file
/// and the line.
pub fn read_loss_csv(path: &Path) -> Result<Vec<LossRow>> {
    let text = fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let bad = || Error::format(path, format!("line {}: malformed row {line:?}", i + 1));
        let mut f = line.split(',');
        let (Some(step), Some(loss), Some(test), None) = (f.next(), f.next(), f.next(), f.next())
        else {
            return Err(bad());
        };
        rows.push(LossRow {
            step: step.parse().map_err(|_| bad())?,
            loss: loss.parse().map_err(|_| bad())?,
            test_loss: if test.is_empty() {
                None
            } else {
                Some(test.parse().map_err(|_| bad())?)
            },
        });
    }
    Ok(rows)
}

/// Plots the training loss (and the test losses) against the step, log scale.
pub fn plot_losses(path: &Path, rows: &[LossRow]) -> Result<()> {
    let train: Vec<(f64, f64)> = rows
        .iter()
        .map(|r| (r.step as f64, r.loss as f64))
        .collect();
    let test: Vec<(f64, f64)> = rows
        .iter()
        .filter_map(|r| r.test_loss.map(|t| (r.step as f64, t as f64)))
        .collect();
    let fig = Figure::new("annealed DSM loss")
        .labels("step", "loss")
        .size(720, 420);
    plot::lines(
        path,
        &fig,
        &[Series::new("train", train), Series::new("test", test)],
        true,
    )
}

/// The prefix of Adam's entries in a training checkpoint (the same as `io::training`'s files).
pub use crate::io::training::OPTIMIZER_PREFIX;
/// The prefix of the EMA's entries in a training checkpoint.
pub const EMA_PREFIX: &str = "ema.";

/// The training state beside the weights: where the run stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    /// Steps done (also the number of batches consumed).
    pub step: usize,
    /// The word position of the [`Stream::Loss`] generator after that step.
    pub loss_rng_word_pos: u128,
}

// ANCHOR: save_checkpoint
/// Writes a training checkpoint atomically: the parameters under their own names, Adam's state
/// under `optimizer.`, the EMA under `ema.`, and as metadata the step, the position of the loss
/// stream and the configuration (JSON).
pub fn save_training_checkpoint(
    path: &Path,
    params: &ParamStore,
    adam: &Adam,
    ema: Option<&Ema>,
    pos: Position,
    config: &RunConfig,
) -> Result<()> {
    let mut ckpt = Checkpoint::new()
        .with_metadata("step", pos.step)
        .with_metadata("loss_rng_word_pos", pos.loss_rng_word_pos)
        .with_metadata("config", config.to_json());
    for (name, t) in params.named_params() {
        ckpt.tensors.insert(name, t.to_array());
    }
    let (adam_tensors, adam_meta) = adam.state_dict();
    for (name, t) in adam_tensors {
        ckpt.tensors.insert(format!("{OPTIMIZER_PREFIX}{name}"), t);
    }
    for (k, v) in adam_meta {
        ckpt.metadata.insert(format!("{OPTIMIZER_PREFIX}{k}"), v);
    }
    if let Some(ema) = ema {
        for (name, t) in ema.shadow() {
            ckpt.tensors.insert(format!("{EMA_PREFIX}{name}"), t);
        }
    }
    ckpt.save(path)
}
// ANCHOR_END: save_checkpoint

/// The entries of `tensors` whose names start with `prefix`, with the prefix removed.
fn strip_prefix(tensors: &Tensors, prefix: &str) -> Tensors {
    tensors
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

/// The model's own tensors of a checkpoint: everything that is not optimizer or EMA state.
fn model_tensors(tensors: &Tensors) -> Tensors {
    tensors
        .iter()
        .filter(|(k, _)| !k.starts_with(OPTIMIZER_PREFIX) && !k.starts_with(EMA_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Prefixes an [`Error::Invalid`] with the file it is about.
fn at(path: &Path, e: Error) -> Error {
    match e {
        Error::Invalid(msg) => Error::Invalid(format!("{}: {msg}", path.display())),
        e => e,
    }
}

/// The error that stops training at `step` for `why`, saying which checkpoint is left to resume
/// from.
fn stopped(run: &RunDir, step: usize, why: &str) -> Error {
    let kept = match run.latest_checkpoint() {
        Some(p) => format!("the last good checkpoint is kept at {}", p.display()),
        None => "no checkpoint had been written yet".to_string(),
    };
    Error::Invalid(format!(
        "training stopped at step {step}: {why}; {kept}. Try a smaller learning rate, or resume \
         from the checkpoint"
    ))
}

/// The name of the first parameter holding a value that is not finite, if any.
fn first_non_finite(store: &ParamStore) -> Option<String> {
    store
        .named_params()
        .into_iter()
        .find(|(_, t)| !t.storage().iter().all(|v| v.is_finite()))
        .map(|(name, _)| name)
}

/// Restores a training state written by [`save_training_checkpoint`] into the parameters, Adam and
/// the EMA, and returns where the run stood. The file is read and checked whole (format, every
/// name and shape, and that the configuration it stores trained the run `run_config` describes:
/// the same seed, batch, noise levels, … as [`crate::run::Args`] would be refused otherwise)
/// before anything changes; an error names the file and the fault.
pub fn load_training_checkpoint(
    path: &Path,
    params: &ParamStore,
    adam: &mut Adam,
    ema: Option<&mut Ema>,
    run_config: &RunConfig,
) -> Result<Position> {
    let ckpt = Checkpoint::load(path)?;
    let meta = |key: &str| -> Result<String> {
        ckpt.metadata.get(key).cloned().ok_or_else(|| {
            Error::format(
                path,
                format!("not a training checkpoint: no `{key}` in its metadata"),
            )
        })
    };
    let step: usize = meta("step")?
        .parse()
        .map_err(|_| Error::format(path, "metadata `step` is not a number"))?;
    let word_pos: u128 = meta("loss_rng_word_pos")?
        .parse()
        .map_err(|_| Error::format(path, "metadata `loss_rng_word_pos` is not a number"))?;
    let model = model_tensors(&ckpt.tensors);
    let expected: Vec<(String, Vec<usize>)> = params
        .named_params()
        .into_iter()
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect();
    checkpoint::check_shapes(&model, expected.iter().map(|(n, s)| (n, s)))
        .map_err(|e| at(path, e))?;
    if let Some(json) = ckpt.metadata.get("config") {
        let config = RunConfig::from_json(json).map_err(|e| at(path, e))?;
        if let Some(field) = resume_mismatch(&config, run_config) {
            return Err(Error::Invalid(format!(
                "{}: this run was trained with {field}; resume it with the same settings",
                path.display()
            )));
        }
        if step > config.n_iters {
            return Err(Error::format(
                path,
                format!(
                    "metadata `step` is {step}, beyond the {} steps of the run it belongs to",
                    config.n_iters
                ),
            ));
        }
    }
    // Bounded also without a stored configuration: resuming replays `step` batches.
    if step > super::config::MAX_N_ITERS {
        return Err(Error::format(
            path,
            format!(
                "metadata `step` is {step}, beyond the most steps a run may have ({})",
                super::config::MAX_N_ITERS
            ),
        ));
    }
    let ema_tensors = strip_prefix(&ckpt.tensors, EMA_PREFIX);
    match ema {
        Some(_) => checkpoint::check_shapes(&ema_tensors, expected.iter().map(|(n, s)| (n, s)))
            .map_err(|e| at(path, Error::Invalid(format!("EMA: {e}"))))?,
        // Dropping a moving average that took the whole run to build would lose work.
        None if !ema_tensors.is_empty() => {
            return Err(Error::format(
                path,
                "holds a moving average of the weights (EMA), and this run keeps none: \
                 resume it with the same --ema",
            ));
        }
        None => {}
    }
    let adam_meta: std::collections::BTreeMap<String, String> = ckpt
        .metadata
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(OPTIMIZER_PREFIX)
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    if step > 0 && adam_meta.is_empty() {
        // Adam restarted from zero moments is another optimisation, not this run resumed.
        return Err(Error::format(
            path,
            format!("no optimizer state, although training stopped at step {step}"),
        ));
    }
    adam.load_state_dict(&strip_prefix(&ckpt.tensors, OPTIMIZER_PREFIX), &adam_meta)
        .map_err(|e| at(path, e))?;
    if let Some(ema) = ema {
        ema.load_shadow(&ema_tensors).map_err(|e| at(path, e))?;
    }
    params.load_state_dict(&model).map_err(|e| at(path, e))?;
    Ok(Position {
        step,
        loss_rng_word_pos: word_pos,
    })
}

/// The first setting that a resumed run must share with its checkpoint and that differs, as the
/// checkpoint's value in the words of its flag. These fix the network's shape and noise levels,
/// or the course of training: the random streams (`--seed`), the batches (`--batch-size`, the
/// held-out pictures), the loss (λ's power), Adam's learning rate and the moving average
/// (`--ema`), and the training pictures themselves (their CRC-32). A run resumed with any of them
/// changed would be neither the old run nor a new one.
/// The number of steps, how often to checkpoint and everything about sampling may change.
pub(crate) fn resume_mismatch(stored: &RunConfig, now: &RunConfig) -> Option<String> {
    if stored.dataset != now.dataset {
        Some(format!("the {} data set", stored.dataset.name()))
    } else if stored.ngf != now.ngf {
        Some(format!("--ngf {}", stored.ngf))
    } else if stored.num_classes != now.num_classes {
        Some(format!("{} noise levels", stored.num_classes))
    } else if (stored.sigma_begin, stored.sigma_end) != (now.sigma_begin, now.sigma_end) {
        Some(format!(
            "noise levels from {} to {}",
            stored.sigma_begin, stored.sigma_end
        ))
    } else if stored.seed != now.seed {
        Some(format!("--seed {}", stored.seed))
    } else if stored.batch_size != now.batch_size {
        Some(format!("--batch-size {}", stored.batch_size))
    } else if stored.ema_mu != now.ema_mu {
        Some(match stored.ema_mu {
            Some(mu) => format!("--ema {mu}"),
            None => "no --ema (no moving average)".to_string(),
        })
    } else if stored.lr != now.lr {
        Some(format!("learning rate {}", stored.lr))
    } else if stored.anneal_power != now.anneal_power {
        Some(format!("λ(σ) = σ^{}", stored.anneal_power))
    } else if stored.holdout != now.holdout {
        Some(format!("{} held-out pictures", stored.holdout))
    } else if let (Some(was), Some(is)) = (stored.train_data_crc32, now.train_data_crc32)
        && was != is
    {
        Some(format!(
            "other training pictures (their CRC-32 was {was:08x}, these have {is:08x}: \
             another --data?)"
        ))
    } else {
        None
    }
}

/// Loads the weights to sample with from a checkpoint: the EMA's when the checkpoint has them and
/// `prefer_ema` is set, the trained parameters otherwise. Returns whether the EMA was used.
pub fn load_weights(path: &Path, params: &ParamStore, prefer_ema: bool) -> Result<bool> {
    let ckpt = Checkpoint::load(path)?;
    let ema = strip_prefix(&ckpt.tensors, EMA_PREFIX);
    let use_ema = prefer_ema && !ema.is_empty();
    let tensors = if use_ema {
        ema
    } else {
        model_tensors(&ckpt.tensors)
    };
    params.load_state_dict(&tensors).map_err(|e| at(path, e))?;
    Ok(use_ema)
}

/// The configuration stored in a checkpoint, if it has one.
pub fn checkpoint_config(path: &Path) -> Result<Option<RunConfig>> {
    let ckpt = Checkpoint::load(path)?;
    match ckpt.metadata.get("config") {
        None => Ok(None),
        Some(json) => RunConfig::from_json(json)
            .map(Some)
            .map_err(|e| at(path, e)),
    }
}

/// What [`train`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainReport {
    /// The step the run resumed from (0 for a fresh run).
    pub resumed_from: usize,
    /// The step reached.
    pub steps: usize,
    /// The mean training loss of the last 100 rows of `log` (all of them when it has fewer).
    pub final_loss: Option<f32>,
    /// The last test-batch loss taken.
    pub last_test_loss: Option<f32>,
    /// Wall time of the steps run by this call, in seconds.
    pub seconds: f64,
    /// Steps per second of this call.
    pub steps_per_sec: f64,
    /// The whole loss log, resumed rows included.
    pub log: Vec<LossRow>,
}

/// Settings of [`train`] that are not part of the run's configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrainOptions {
    /// Show a progress bar on the terminal.
    pub progress: bool,
}

/// The annealed DSM loss of `model` on one test batch, without gradients.
fn test_loss(
    model: &impl ScoreNet,
    test: &Dataset,
    config: &RunConfig,
    sigmas: &GeometricSigmas,
    step: usize,
) -> f32 {
    // A stream of its own per step: how often the test loss is taken changes nothing else.
    let mut rng = stream_rng(config.seed, Stream::Test);
    rng.set_word_pos((step as u128) << 40);
    let idx: Vec<usize> = (0..config.batch_size.min(test.len()))
        .map(|_| rng.random_range(0..test.len()))
        .collect();
    let mut x = test.gather_f32(&idx);
    crate::data::dequantize(&mut x, &mut rng);
    let x = Tensor::from_array(x.into_dyn()).to(&model.device());
    no_grad(|| {
        anneal_dsm_loss(
            |x, l| model.score(x, l),
            &x,
            sigmas,
            config.anneal_power,
            &mut rng,
        )
        .item()
    })
}

/// The annealed DSM loss averaged over (up to) `max_images` pictures of `data` in order, in batches
/// of the training size, dequantised, without gradients, with a fixed seed: the number `results.json`
/// reports as the test loss. Fails when that leaves no picture (an average over nothing is no loss)
/// or the batch size is 0.
pub fn evaluate_dsm(
    model: &impl ScoreNet,
    data: &Dataset,
    config: &RunConfig,
    max_images: usize,
) -> Result<f32> {
    if config.batch_size == 0 {
        return Err(Error::Invalid("evaluate_dsm: the batch size is 0".into()));
    }
    let n = data.len().min(max_images);
    if n == 0 {
        return Err(Error::Invalid(format!(
            "evaluate_dsm: no picture to evaluate ({} in the set, at most {max_images} asked for)",
            data.len()
        )));
    }
    let sigmas = config.sigmas();
    let mut rng = stream_rng(config.seed, Stream::Test);
    let mut total = 0.0f64;
    let mut start = 0;
    while start < n {
        let end = (start + config.batch_size).min(n);
        let idx: Vec<usize> = (start..end).collect();
        let mut x = data.gather_f32(&idx);
        crate::data::dequantize(&mut x, &mut rng);
        let x = Tensor::from_array(x.into_dyn()).to(&model.device());
        let loss = no_grad(|| {
            anneal_dsm_loss(
                |x, l| model.score(x, l),
                &x,
                &sigmas,
                config.anneal_power,
                &mut rng,
            )
            .item()
        });
        total += loss as f64 * (end - start) as f64;
        start = end;
    }
    Ok((total / n as f64) as f32)
}

// ANCHOR: train
/// Trains `model` on `train_set` for `config.n_iters` steps in `run`, resuming from the run
/// directory's checkpoint if there is one; see the [module docs](self).
///
/// `transform` is what each batch goes through (the reference: dequantisation, plus flips for
/// CIFAR-10). `test_set`, if given, is where the test loss is taken every `config.test_every`
/// steps. Fails on an empty training set, an empty test set that is to be evaluated, an unreadable
/// or mismatched checkpoint, a failed write, or a loss that is not finite (the last good checkpoint
/// is kept).
pub fn train(
    model: &impl ScoreNet,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    transform: Transform,
    config: &RunConfig,
    run: &RunDir,
    options: TrainOptions,
) -> Result<TrainReport> {
    if let Some(t) = test_set
        && t.is_empty()
        && config.test_every > 0
    {
        // Its loss would be a mean over nothing: NaN in the log, every `test_every` steps.
        return Err(Error::Invalid(format!(
            "the test set is empty, and test_every is {}: pass a test set with pictures, or none",
            config.test_every
        )));
    }
    let sigmas = config.sigmas();
    let store = model.params();
    let mut adam = Adam::new(
        store.named_params(),
        AdamConfig {
            lr: config.lr,
            ..AdamConfig::default()
        },
    );
    let mut ema = config.ema_mu.map(|mu| Ema::new(store.named_params(), mu));
    let mut loss_rng = stream_rng(config.seed, Stream::Loss);
    let mut batches = Batches::with_rng(
        train_set,
        BatchOptions::new(config.batch_size, transform),
        stream_rng(config.seed, Stream::Batches),
    )?;

    // Resume where the last checkpoint left off.
    let mut log = Vec::new();
    let mut start = 0;
    if let Some(path) = run.latest_checkpoint() {
        let pos = load_training_checkpoint(&path, store, &mut adam, ema.as_mut(), config)?;
        start = pos.step;
        loss_rng.set_word_pos(pos.loss_rng_word_pos);
        batches.skip_batches(start);
        if run.loss_csv().is_file() {
            log = read_loss_csv(&run.loss_csv())?;
            log.retain(|r| r.step <= start);
        }
        if log.len() != start || log.iter().enumerate().any(|(i, r)| r.step != i + 1) {
            // Only a log that was deleted, edited, or written by a version that saved it after
            // the checkpoint and was stopped in between: the training state itself is whole.
            eprintln!(
                "warning: {} records {} of the {start} steps {} was saved after; the missing \
                 rows are lost, and the log goes on from step {}",
                run.loss_csv().display(),
                log.len(),
                path.display(),
                start + 1
            );
        }
    }
    checkpoint::write_atomic(run.config(), config.to_json().as_bytes())?;

    let bar = if options.progress {
        let bar = ProgressBar::new(config.n_iters as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] step {pos}/{len} {msg} {per_sec} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start as u64);
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };

    let save =
        |step: usize, adam: &Adam, ema: Option<&Ema>, pos: u128, log: &[LossRow]| -> Result<()> {
            let position = Position {
                step,
                loss_rng_word_pos: pos,
            };
            // A finite loss can still bring a non-finite gradient (an overflow in the backward
            // pass), and Adam would have turned the weights to NaN: the checkpoint on disk is
            // then the last good one, and must stay so.
            if let Some(name) = first_non_finite(store) {
                return Err(stopped(
                    run,
                    step,
                    &format!(
                        "parameter `{name}` is not finite after the update (a gradient overflowed)"
                    ),
                ));
            }
            // The log first: if the run is stopped between the two writes, the log runs ahead of
            // the checkpoint (resuming drops the extra rows) rather than behind it (rows lost).
            write_loss_csv(&run.loss_csv(), log)?;
            save_training_checkpoint(&run.checkpoint(), store, adam, ema, position, config)?;
            // The picture last, and only a warning: no figure is worth stopping training for.
            if let Err(e) = plot_losses(&run.loss_plot(), log) {
                eprintln!("warning: the loss plot was not drawn: {e}");
            }
            Ok(())
        };

    let device = model.device();
    let t0 = Instant::now();
    let mut smoothed = None::<f32>;
    for step in start + 1..=config.n_iters {
        let batch = batches.next().expect("batches never end");
        let x = Tensor::from_array(batch.images.into_dyn()).to(&device);
        let loss = anneal_dsm_loss(
            |x, l| model.score(x, l),
            &x,
            &sigmas,
            config.anneal_power,
            &mut loss_rng,
        );
        let value = loss.item();
        if !value.is_finite() {
            bar.abandon();
            log.push(LossRow {
                step,
                loss: value,
                test_loss: None,
            });
            write_loss_csv(&run.loss_csv(), &log)?;
            return Err(stopped(
                run,
                step,
                &format!("the loss is {value} (not finite)"),
            ));
        }
        let grads = loss.backward();
        drop(loss);
        adam.step(&grads);
        drop(grads);
        if let Some(ema) = ema.as_mut() {
            ema.update();
        }
        let test_loss = match test_set {
            Some(t) if config.test_every > 0 && step % config.test_every == 0 => {
                Some(test_loss(model, t, config, &sigmas, step))
            }
            _ => None,
        };
        log.push(LossRow {
            step,
            loss: value,
            test_loss,
        });
        let s = smoothed.map_or(value, |s| 0.95 * s + 0.05 * value);
        smoothed = Some(s);
        bar.set_position(step as u64);
        bar.set_message(format!("loss {s:.4}"));
        if options.progress && !std::io::stderr().is_terminal() && step % 50 == 0 {
            // No terminal to draw the bar on (a log file): a plain line now and then.
            let rate = (step - start) as f64 / t0.elapsed().as_secs_f64();
            let left = (config.n_iters - step) as f64 / rate;
            eprintln!(
                "step {step}/{} loss {s:.4} {rate:.3} steps/s ETA {left:.0} s",
                config.n_iters
            );
        }
        if step % config.checkpoint_every.max(1) == 0 || step == config.n_iters {
            save(step, &adam, ema.as_ref(), loss_rng.get_word_pos(), &log)?;
        }
    }
    bar.finish();
    let seconds = t0.elapsed().as_secs_f64();
    let ran = config.n_iters.saturating_sub(start);
    let tail = &log[log.len().saturating_sub(100)..];
    Ok(TrainReport {
        resumed_from: start,
        steps: config.n_iters.max(start),
        final_loss: (!tail.is_empty())
            .then(|| tail.iter().map(|r| r.loss).sum::<f32>() / tail.len() as f32),
        last_test_loss: log.iter().rev().find_map(|r| r.test_loss),
        seconds,
        steps_per_sec: if seconds > 0.0 {
            ran as f64 / seconds
        } else {
            0.0
        },
        log,
    })
}
// ANCHOR_END: train

/// Splits off the last `n` pictures of `data` as a held-out set: `(rest, held_out)`. For data sets
/// without a test split (the MNIST copy in `shared/data` is the 10k test digits alone). Fails if
/// `n` leaves no training picture.
pub fn split_holdout(data: &Dataset, n: usize) -> Result<(Dataset, Dataset)> {
    if n >= data.len() {
        return Err(Error::Invalid(format!(
            "cannot hold out {n} of {} pictures and still train",
            data.len()
        )));
    }
    let cut = data.len() - n;
    let part = |r: std::ops::Range<usize>| {
        Dataset::new(
            data.images.slice_axis(Axis(0), r.clone().into()).to_owned(),
            data.labels.as_ref().map(|l| l[r].to_vec()),
        )
    };
    Ok((part(0..cut)?, part(cut..data.len())?))
}

/// A batch `(N, C, H, W)` of tensors as an array (for the picture writers).
pub fn to_array4(t: &Tensor) -> ndarray::Array4<f32> {
    let a: ArrayD<f32> = t.to_array();
    a.into_dimensionality()
        .unwrap_or_else(|_| panic!("to_array4: shape {:?} is not 4-D", t.shape()))
}

impl ScoreNet for crate::nn::CondRefineNetDilated {
    fn params(&self) -> &ParamStore {
        &self.store
    }
    fn score(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        self.forward(x, labels)
    }
}

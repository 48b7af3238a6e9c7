//! Training runs on images (`ncsn::run`): resume is bit-exact, a NaN loss stops training and keeps
//! the last good checkpoint, bad checkpoints give clear errors, the nearest-neighbour search agrees
//! with brute force, the inpainting sampler keeps the known half, and the whole pipeline runs end to
//! end on tiny MNIST files written here. A tiny noise-conditional network stands in for the
//! RefineNet so that every test runs in well under a second of compute.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ncsn::data::{Dataset, Transform};
use ncsn::io::Checkpoint;
use ncsn::nn::ParamStore;
use ncsn::run::config;
use ncsn::run::{
    self, Args, DatasetKind, LossRow, Occlusion, Preset, RunConfig, RunDir, ScoreNet, Stream,
    TrainOptions, nearest_neighbours, occlusion_mask, stream_rng,
};
use ncsn::{Error, Tensor};
use ndarray::{Array4, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ncsn-run-{tag}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// s(x, i) = a[i] ⊙ x + b[i], a gain and an offset per channel and level: small, but its
/// gradients reach every parameter.
/// `nan_after` makes the forward pass return NaN from that call on (for the NaN guard).
struct TinyNet {
    store: ParamStore,
    a: Tensor,
    b: Tensor,
    channels: usize,
    calls: Cell<usize>,
    nan_after: Option<usize>,
    bad_gradient_after: Option<usize>,
}

impl TinyNet {
    fn new(channels: usize, levels: usize, rng: &mut ChaCha8Rng) -> Self {
        let store = ParamStore::new();
        let root = store.root();
        let a = root.param("a", Tensor::uniform(&[levels, channels], -1.0, 1.0, rng));
        let b = root.param("b", Tensor::uniform(&[levels, channels], -0.1, 0.1, rng));
        TinyNet {
            store,
            a,
            b,
            channels,
            calls: Cell::new(0),
            nan_after: None,
            bad_gradient_after: None,
        }
    }
}

impl ScoreNet for TinyNet {
    fn params(&self) -> &ParamStore {
        &self.store
    }
    fn score(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        let n = labels.len();
        let c = self.channels;
        let a = self.a.index_select(0, labels).reshape(&[n, c, 1, 1]);
        let b = self.b.index_select(0, labels).reshape(&[n, c, 1, 1]);
        let out = x.mul(&a).add(&b);
        self.calls.set(self.calls.get() + 1);
        let out = match self.bad_gradient_after {
            // Adds 0·√(a − a) = 0: the loss stays finite, but the gradient of √ at 0 is
            // infinite, and 0·∞ gives `a` a NaN gradient.
            Some(k) if self.calls.get() > k => {
                out.add(&self.a.sub(&self.a).sqrt().sum_all().mul_scalar(0.0))
            }
            _ => out,
        };
        match self.nan_after {
            Some(k) if self.calls.get() > k => out.mul_scalar(f32::NAN),
            _ => out,
        }
    }
}

/// Runs the MNIST pipeline with `args` and the tiny network in place of the RefineNet.
fn run_tiny(args: &Args) -> ncsn::Result<run::Results> {
    run::run(DatasetKind::Mnist, args, |c, rng| {
        TinyNet::new(1, c.num_classes, rng)
    })
}

fn tiny_dataset(n: usize, c: usize, side: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = Array4::from_shape_fn((n, c, side, side), |_| rng.random::<u8>());
    Dataset::new(images, None).unwrap()
}

fn tiny_config(n_iters: usize, checkpoint_every: usize) -> RunConfig {
    RunConfig {
        batch_size: 4,
        n_iters,
        checkpoint_every,
        test_every: 2,
        ema_mu: Some(0.9),
        lr: 1e-2,
        seed: 7,
        ..RunConfig::preset(DatasetKind::Mnist, Preset::Cpu)
    }
}

fn net(seed: u64) -> TinyNet {
    TinyNet::new(1, 10, &mut ChaCha8Rng::seed_from_u64(seed))
}

/// Trains `model` on `data` into `dir` as the MNIST pipeline does (its transform, no test set,
/// default options): the call most tests here make.
fn train_mnist(
    model: &TinyNet,
    data: &Dataset,
    config: &RunConfig,
    dir: &RunDir,
) -> ncsn::Result<run::TrainReport> {
    run::train(
        model,
        data,
        None,
        Transform::mnist(),
        config,
        dir,
        TrainOptions::default(),
    )
}

fn params_bits(store: &ParamStore) -> Vec<(String, Vec<u32>)> {
    store
        .named_params()
        .into_iter()
        .map(|(n, t)| (n, t.to_vec().iter().map(|v| v.to_bits()).collect()))
        .collect()
}

/// TinyNet with the score s(x̃, i) = −x̃/σᵢ² (gain −1/σᵢ², no offset) for `config`'s noise levels.
/// With λ(σ) = σ⁴ each picture's annealed DSM loss is then ½‖x‖² of the picture alone, whatever its
/// level and noise (see `evaluate_dsm_averages_over_pictures`).
fn picture_loss_net(config: &RunConfig) -> TinyNet {
    let sigmas = config.sigmas();
    let m = TinyNet::new(1, sigmas.len(), &mut ChaCha8Rng::seed_from_u64(5));
    let gains: Vec<f32> = sigmas.sigmas().iter().map(|&s| -1.0 / (s * s)).collect();
    m.a.set_data(Tensor::from_vec(gains, m.a.shape()).storage());
    m.b.set_data(Tensor::zeros(m.b.shape()).storage());
    m
}

/// Trains `m` on `train_set` with test losses taken on `test_set`, in a run directory of its own
/// that is removed afterwards.
fn train_tested(
    m: &TinyNet,
    train_set: &Dataset,
    test_set: &Dataset,
    config: &RunConfig,
    tag: &str,
) -> run::TrainReport {
    let tmp = TempDir::new(tag);
    let dir = RunDir::create(tmp.path()).unwrap();
    run::train(
        m,
        train_set,
        Some(test_set),
        Transform::mnist(),
        config,
        &dir,
        TrainOptions::default(),
    )
    .unwrap()
}

/// `evaluate_dsm`, the test loss `results.json` reports, is the annealed DSM loss averaged over
/// pictures, the first `max_images` of them, the last batch ragged.
///
/// The score s(x̃, i) = −x̃/σᵢ² (TinyNet's gain a[i] = −1/σᵢ², no offset) with λ(σ) = σ⁴ makes each
/// picture's loss a function of the picture alone: ½σ⁴‖s(x̃) + z/σ‖² = ½σ⁴‖−x/σ²‖² = ½‖x‖²,
/// whatever its level and noise. (λ = σ⁴, not the default σ², so that an evaluation that ignored
/// `anneal_power` would be wrong too.) A pixel of value v dequantises to x = (v + U)/256 with U
/// uniform on [0, 1), so E[x²] = ((v + ½)² + 1/12)/256², and a 1 × 6 × 6 picture has expected
/// loss 18·E[x²]: A = 18·(1/3)/65536 = 9.16·10⁻⁵ for black (v = 0), B = 18·65280.33/65536 =
/// 17.9298 for white (v = 255).
///
/// Twelve pictures, eight black then four white, of which the first 10 are evaluated in batches of
/// 4: black, black, and a ragged batch of two white. The average over pictures is
/// (8A + 2B)/10 = 3.5860. Wrong answers are far from it: the unweighted mean of the three batch
/// means, (2A + B)/3 = 5.977; dropping the ragged batch, A ≈ 0; all 12 pictures, (8A + 4B)/12 =
/// 5.977.
///
/// Tolerance: only the dequantisation is random. A white pixel's ½x² has standard deviation about
/// ½·(2·255.5/256²)·√(1/12) = 1.13·10⁻³ (x² is nearly linear in U), a white picture's loss
/// √36·1.13·10⁻³ = 6.8·10⁻³, the average of two of them over 10 pictures √2·6.8·10⁻³/10 =
/// 9.6·10⁻⁴ (the black pictures add 10⁻⁵ at most); five standard errors are 4.8·10⁻³. The f32
/// arithmetic adds relative errors of about 10⁻⁶ (s = −x/σ² − z/σ, whose second part the target's
/// z/σ cancels: terms of about 10⁴ and 10² at σ = 0.01), 4·10⁻⁶ here. We allow 5·10⁻³, 480 times
/// below the nearest wrong answer's distance of 2.39. Measured: 3.58579, 2.4·10⁻⁴ (a quarter of
/// a standard error) from the average.
#[test]
fn evaluate_dsm_averages_over_pictures() {
    let config = RunConfig {
        anneal_power: 4.0,
        ..tiny_config(1, 1)
    };
    assert_eq!(config.batch_size, 4);
    let m = picture_loss_net(&config);
    let images = Array4::from_shape_fn((12, 1, 6, 6), |(i, ..)| if i < 8 { 0u8 } else { 255 });
    let data = Dataset::new(images, None).unwrap();
    let loss = run::evaluate_dsm(&m, &data, &config, 10).unwrap() as f64;
    let expected_loss = |v: f64| 18.0 * ((v + 0.5).powi(2) + 1.0 / 12.0) / 65536.0;
    let (black, white) = (expected_loss(0.0), expected_loss(255.0));
    let want = (8.0 * black + 2.0 * white) / 10.0;
    assert!(
        (loss - want).abs() <= 5e-3,
        "test loss {loss} vs {want}, the average over the 10 pictures (the mean of the batch \
         means would be {}; without the ragged batch, {black})",
        (2.0 * black + white) / 3.0
    );
}

/// An empty test set is refused, not averaged into NaN (train's log) or 0 (`evaluate_dsm`'s mean
/// over nothing, which would read as a perfect model). `train` refuses before it touches the
/// network or the run directory; with `test_every` 0 the test set is never read, and an empty one
/// trains as no test set does.
#[test]
fn an_empty_test_set_is_refused_not_averaged() {
    let config = tiny_config(2, 2);
    let m = net(3);
    let train_set = tiny_dataset(8, 1, 6, 1);
    let empty = Dataset::new(Array4::zeros((0, 1, 6, 6)), None).unwrap();

    let err = run::evaluate_dsm(&m, &empty, &config, 10)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no picture to evaluate"), "{err}");
    let err = run::evaluate_dsm(&m, &train_set, &config, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no picture to evaluate"), "{err}");

    let tmp = TempDir::new("empty-test-set");
    let dir = RunDir::create(tmp.path()).unwrap();
    let before = params_bits(&m.store);
    let err = run::train(
        &m,
        &train_set,
        Some(&empty),
        Transform::mnist(),
        &config,
        &dir,
        TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("the test set is empty"), "{err}");
    assert_eq!(params_bits(&m.store), before);
    assert!(!dir.checkpoint().exists() && !dir.loss_csv().exists());

    let never_tested = RunConfig {
        test_every: 0,
        ..config
    };
    let report = run::train(
        &m,
        &train_set,
        Some(&empty),
        Transform::mnist(),
        &never_tested,
        &dir,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!(report.log.len(), 2);
    assert!(report.log.iter().all(|r| r.test_loss.is_none()));
}

/// A run's random streams are distinct: the first 256 bits of every pair of streams differ, for
/// two seeds, and a stream is a function of the seed (the same seed, the same bits). Streams that
/// coincided would, say, draw the initial weights from the mini-batches' numbers; two streams of
/// ChaCha8 agreeing on 256 bits by chance has probability 2⁻²⁵⁶.
#[test]
fn a_runs_random_streams_are_distinct() {
    let streams = [
        Stream::Batches,
        Stream::Loss,
        Stream::Test,
        Stream::Init,
        Stream::Sample,
        Stream::Inpaint,
    ];
    for seed in [0, 7] {
        let words = |s: Stream| -> [u64; 4] {
            let mut rng = stream_rng(seed, s);
            std::array::from_fn(|_| rng.random::<u64>())
        };
        for (i, &a) in streams.iter().enumerate() {
            assert_eq!(words(a), words(a), "{a:?}: the same seed, the same bits");
            for &b in &streams[i + 1..] {
                assert_ne!(words(a), words(b), "seed {seed}: {a:?} and {b:?} coincide");
            }
        }
    }
}

/// The test loss is taken on a stream of its own, positioned by the step: each evaluation draws
/// its own test batch and noise, and how often it is taken changes nothing else.
///
/// With a learning rate of 10⁻³⁰ Adam's steps (about lr each) round away on any weight larger
/// than 10⁻²² in size (half an ulp of it exceeds them), so the weights keep their bits (asserted)
/// and the test losses
/// logged at steps 2, 4, 6 and 8 are one model's. They must still all differ: each is a batch of
/// 4 of 20 test pictures with fresh noise. An evaluation that restarted its stream would log one
/// number four times. Then, with lr 10⁻², runs that take the test loss every 2 and every 3 steps
/// must end with the same weights to the bit and log the same test loss at step 6.
#[test]
fn each_test_loss_is_a_fresh_draw_and_its_frequency_changes_nothing_else() {
    let (train_set, test_set) = (tiny_dataset(10, 1, 6, 1), tiny_dataset(20, 1, 6, 2));
    let train = |lr: f64, test_every: usize| -> (Vec<(String, Vec<u32>)>, Vec<LossRow>) {
        let m = net(4);
        let config = RunConfig {
            lr,
            test_every,
            ..tiny_config(8, 8)
        };
        let report = train_tested(&m, &train_set, &test_set, &config, "test-loss");
        (params_bits(&m.store), report.log)
    };
    let tested = |log: &[LossRow]| -> Vec<(usize, f32)> {
        log.iter()
            .filter_map(|r| r.test_loss.map(|t| (r.step, t)))
            .collect()
    };

    let (still, log) = train(1e-30, 2);
    assert_eq!(still, params_bits(&net(4).store), "lr 1e-30 moved a weight");
    let losses = tested(&log);
    assert_eq!(
        losses.iter().map(|&(s, _)| s).collect::<Vec<_>>(),
        [2, 4, 6, 8]
    );
    // Finite first: NaN ≠ NaN, so losses that had all gone NaN would pass the test below.
    assert!(
        losses.iter().all(|l| l.1.is_finite()),
        "test losses: {losses:?}"
    );
    for (i, a) in losses.iter().enumerate() {
        for b in &losses[i + 1..] {
            assert_ne!(
                a.1, b.1,
                "test losses at steps {} and {} coincide",
                a.0, b.0
            );
        }
    }

    let (every2, log2) = train(1e-2, 2);
    let (every3, log3) = train(1e-2, 3);
    assert_eq!(every2, every3, "the test frequency changed the training");
    let at6 = |log: &[LossRow]| tested(log).into_iter().find(|&(s, _)| s == 6).unwrap().1;
    assert_eq!(
        at6(&log2).to_bits(),
        at6(&log3).to_bits(),
        "test loss at step 6"
    );
}

/// The run's moving average (`--ema μ`) is updated after every step, as the reference's EMAHelper:
/// after two steps θ₀ → θ₁ → θ₂ the checkpoint's `ema.` tensors hold
/// μ(μθ₀ + (1 − μ)θ₁) + (1 − μ)θ₂, which needs θ₁ from a one-step run of the same seed (the
/// same bits: see the resume test above). Tolerance: a few f32 roundings of values of size ≤ 1,
/// 10⁻⁶·(1 + |v|). An average never updated stays θ₀, and one updated once stays
/// μθ₀ + (1 − μ)θ₁; both are off by 1e-3 or more here (a step of Adam with lr 10⁻² moves a
/// weight by about 10⁻²). Sampling from that checkpoint (`load_weights`) then takes the average
/// when asked, and the trained weights otherwise.
#[test]
fn the_runs_moving_average_follows_every_step() {
    let train_set = tiny_dataset(10, 1, 6, 1);
    let values = |store: &ParamStore| -> Vec<(String, Vec<f32>)> {
        store
            .named_params()
            .into_iter()
            .map(|(n, t)| (n, t.to_vec()))
            .collect()
    };
    let train = |steps: usize| -> (Vec<(String, Vec<f32>)>, Checkpoint) {
        let tmp = TempDir::new("ema");
        let dir = RunDir::create(tmp.path()).unwrap();
        let m = net(3);
        let config = RunConfig {
            test_every: 0,
            ..tiny_config(steps, steps)
        };
        train_mnist(&m, &train_set, &config, &dir).unwrap();
        (
            values(&m.store),
            Checkpoint::load(dir.checkpoint()).unwrap(),
        )
    };
    let theta0 = values(&net(3).store);
    let (theta1, _) = train(1);
    let (theta2, ckpt) = train(2);
    let mu = 0.9f64;
    let mut moved = 0.0f64;
    for (((name, t0), (_, t1)), (_, t2)) in theta0.iter().zip(&theta1).zip(&theta2) {
        let ema = &ckpt.tensors[&format!("ema.{name}")];
        for (k, &got) in ema.iter().enumerate() {
            let (a, b, c) = (t0[k] as f64, t1[k] as f64, t2[k] as f64);
            let want = mu * (mu * a + (1.0 - mu) * b) + (1.0 - mu) * c;
            let got = got as f64;
            assert!(
                (got - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{name}[{k}]: {got} vs {want}"
            );
            moved = moved.max((want - a).abs());
        }
    }
    assert!(moved > 1e-4, "training moved the average by only {moved}");

    // Sampling takes the average when asked and the checkpoint has one, bit for bit, and the
    // trained weights otherwise; the two differ, so loading the wrong one cannot pass.
    let tmp = TempDir::new("ema-load");
    let path = tmp.path().join("ckpt.safetensors");
    ckpt.save(&path).unwrap();
    let mut differ = false;
    for (prefer_ema, prefix) in [(true, "ema."), (false, "")] {
        let m = net(99);
        assert_eq!(
            run::load_weights(&path, &m.store, prefer_ema).unwrap(),
            prefer_ema
        );
        for (name, t) in m.store.named_params() {
            let want = &ckpt.tensors[&format!("{prefix}{name}")];
            assert_eq!(
                t.to_vec(),
                want.iter().copied().collect::<Vec<_>>(),
                "{prefix}{name}"
            );
            differ |= *want != ckpt.tensors[&format!("ema.{name}")];
        }
    }
    assert!(differ, "the average and the weights coincide");
}

#[test]
fn resumed_run_ends_with_the_same_bits_as_an_uninterrupted_one() {
    let train_set = tiny_dataset(10, 1, 6, 1); // 10 pictures, batch 4: epochs cross the stop
    let test_set = tiny_dataset(5, 1, 6, 2);
    let t = Transform::mnist();

    let whole = TempDir::new("whole");
    let dir = RunDir::create(whole.path()).unwrap();
    let m1 = net(3);
    let r1 = run::train(
        &m1,
        &train_set,
        Some(&test_set),
        t,
        &tiny_config(9, 4),
        &dir,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!((r1.resumed_from, r1.steps), (0, 9));

    // The same run stopped after its checkpoint at step 4, then started again in a new process
    // (a fresh network with different initial weights: everything must come from the checkpoint).
    let split = TempDir::new("split");
    let dir2 = RunDir::create(split.path()).unwrap();
    let m2 = net(3);
    run::train(
        &m2,
        &train_set,
        Some(&test_set),
        t,
        &tiny_config(4, 4),
        &dir2,
        TrainOptions::default(),
    )
    .unwrap();
    let m3 = net(99);
    let r3 = run::train(
        &m3,
        &train_set,
        Some(&test_set),
        t,
        &tiny_config(9, 4),
        &dir2,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!((r3.resumed_from, r3.steps), (4, 9));

    assert_eq!(params_bits(&m1.store), params_bits(&m3.store));
    assert_eq!(r1.log.len(), 9);
    assert_eq!(r1.log, r3.log, "loss logs differ");
    // Adam's moments and the EMA match too: the final checkpoints are identical tensor for tensor.
    let c1 = Checkpoint::load(dir.checkpoint()).unwrap();
    let c3 = Checkpoint::load(dir2.checkpoint()).unwrap();
    assert!(c1.tensors.keys().any(|k| k.starts_with("optimizer.")));
    assert!(c1.tensors.keys().any(|k| k.starts_with("ema.")));
    assert_eq!(c1.tensors, c3.tensors);
    assert_eq!(c1.metadata, c3.metadata);
    // ...and so are the files, byte for byte.
    let bytes = |d: &RunDir| std::fs::read(d.checkpoint()).unwrap();
    assert!(bytes(&dir) == bytes(&dir2), "the checkpoint files differ");
    // The CSV on disk holds each step once.
    let csv = std::fs::read_to_string(dir2.loss_csv()).unwrap();
    assert_eq!(csv.lines().count(), 1 + 9);

    // Resumed with another seed, the run would be neither the old one nor a new one: the library
    // refuses it as the command line does, before the network or the files change.
    let m4 = net(99);
    let before = params_bits(&m4.store);
    let other_seed = RunConfig {
        seed: 1,
        ..tiny_config(12, 4)
    };
    let err = run::train(
        &m4,
        &train_set,
        Some(&test_set),
        t,
        &other_seed,
        &dir2,
        TrainOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("checkpoint.safetensors") && err.contains("--seed"),
        "{err}"
    );
    assert_eq!(params_bits(&m4.store), before);
    assert!(bytes(&dir2) == bytes(&dir));
}

/// Trains `m` on `data` for 10 steps, with checkpoints every 2, until it stops with an error:
/// the error's message, and the run directory with the folder that holds it.
fn train_until_stopped(
    m: &TinyNet,
    data: &Dataset,
    test_set: Option<&Dataset>,
    name: &str,
) -> (String, RunDir, TempDir) {
    let tmp = TempDir::new(name);
    let dir = RunDir::create(tmp.path()).unwrap();
    let err = run::train(
        m,
        data,
        test_set,
        Transform::mnist(),
        &tiny_config(10, 2),
        &dir,
        TrainOptions::default(),
    )
    .unwrap_err();
    (err.to_string(), dir, tmp)
}

/// A finite loss whose gradient is not finite turns the weights to NaN through Adam; the next
/// checkpoint must not replace the last good one with them. Checkpoints every 2 steps, no test
/// set (one network call per step), and a NaN gradient from step 4 on, a checkpoint step whose
/// loss is still finite: the checkpoint of step 2 stays, and the error names the parameter and
/// the step. (Without the check, step 4's checkpoint held NaN weights.)
#[test]
fn a_non_finite_gradient_never_reaches_a_checkpoint() {
    let data = tiny_dataset(8, 1, 6, 1);
    let mut m = net(3);
    m.bad_gradient_after = Some(3);
    let (msg, dir, _tmp) = train_until_stopped(&m, &data, None, "bad-gradient");
    assert!(msg.contains("step 4") && msg.contains("`a`"), "{msg}");
    assert!(msg.contains("checkpoint.safetensors"), "{msg}");
    let ckpt = Checkpoint::load(dir.checkpoint()).unwrap();
    assert_eq!(ckpt.metadata_as::<usize>("step").unwrap(), Some(2));
    for (name, t) in &ckpt.tensors {
        assert!(t.iter().all(|v| v.is_finite()), "{name} in the checkpoint");
    }
}

#[test]
fn a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let data = tiny_dataset(8, 1, 6, 1);
    let mut m = net(3);
    // Each training step calls the network once, each test evaluation (every 2 steps) once more:
    // steps 1..=4 make 6 calls, so the 7th call, in step 5, is the first NaN.
    m.nan_after = Some(6);
    let (msg, dir, _tmp) = train_until_stopped(&m, &data, Some(&data), "nan");
    assert!(msg.contains("step 5"), "{msg}");
    assert!(msg.contains("not finite"), "{msg}");
    assert!(msg.contains("checkpoint.safetensors"), "{msg}");
    let ckpt = Checkpoint::load(dir.checkpoint()).unwrap();
    assert_eq!(ckpt.metadata_as::<usize>("step").unwrap(), Some(4));
    for (_, p) in m.store.named_params() {
        assert!(p.to_vec().iter().all(|v| v.is_finite()));
    }
    // The log shows the bad step, and a resumed run starts again from step 4.
    let csv = std::fs::read_to_string(dir.loss_csv()).unwrap();
    assert!(csv.lines().last().unwrap().starts_with("5,NaN"), "{csv}");
    let fresh = net(3);
    let r = run::train(
        &fresh,
        &data,
        Some(&data),
        Transform::mnist(),
        &tiny_config(6, 2),
        &dir,
        TrainOptions::default(),
    )
    .unwrap();
    assert_eq!((r.resumed_from, r.steps), (4, 6));
    assert!(r.log.iter().all(|row| row.loss.is_finite()));
}

#[test]
fn a_corrupt_or_foreign_checkpoint_in_the_run_directory_is_a_clear_error() {
    let data = tiny_dataset(8, 1, 6, 1);
    let tmp = TempDir::new("corrupt");
    let dir = RunDir::create(tmp.path()).unwrap();
    let train = |m: &TinyNet| train_mnist(m, &data, &tiny_config(4, 2), &dir);

    train(&net(3)).unwrap();
    let bytes = std::fs::read(dir.checkpoint()).unwrap();

    // Tensor data XOR-ed, the file otherwise whole: the checksum in the header refuses it, so the
    // run does not resume from damaged weights.
    let mut flipped = bytes.clone();
    let data = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let end = bytes.len().min(data + 400);
    flipped[data..end].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(dir.checkpoint(), &flipped).unwrap();
    let m = net(5);
    let before = params_bits(&m.store);
    let err = train(&m).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("do not match their checksum"),
        "{msg}"
    );
    assert_eq!(
        params_bits(&m.store),
        before,
        "a failed load changed the weights"
    );

    // Truncated: the first half of a real checkpoint.
    std::fs::write(dir.checkpoint(), &bytes[..bytes.len() / 2]).unwrap();
    let m = net(5);
    let before = params_bits(&m.store);
    let err = train(&m).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");
    assert_eq!(
        params_bits(&m.store),
        before,
        "a failed load changed the weights"
    );

    // Garbage.
    std::fs::write(dir.checkpoint(), b"not a checkpoint at all").unwrap();
    let err = train(&net(3)).unwrap_err();
    assert!(err.to_string().contains("checkpoint.safetensors"), "{err}");

    // A valid file for another network (3 channels instead of 1): names and shapes reported.
    std::fs::remove_file(dir.checkpoint()).unwrap();
    let data3 = tiny_dataset(8, 3, 6, 1);
    let other = TinyNet::new(3, 10, &mut ChaCha8Rng::seed_from_u64(1));
    train_mnist(&other, &data3, &tiny_config(2, 2), &dir).unwrap();
    let err = train(&net(3)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("checkpoint.safetensors") && msg.contains("wrong shape"),
        "{msg}"
    );
    assert!(msg.contains("`a`"), "{msg}");

    // Parameters only, no training state: says what is missing.
    std::fs::remove_file(dir.checkpoint()).unwrap();
    let m = net(3);
    Checkpoint::new()
        .with_tensor("a", m.a.to_array())
        .with_tensor("b", m.b.to_array())
        .save(dir.checkpoint())
        .unwrap();
    let err = train(&m).unwrap_err();
    assert!(
        err.to_string().contains("not a training checkpoint"),
        "{err}"
    );
}

#[test]
fn nearest_neighbours_agree_with_brute_force() {
    let train = tiny_dataset(300, 1, 5, 11);
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let mut queries = Array4::from_shape_fn((4, 1, 5, 5), |_| rng.random::<f32>());
    // Query 0 is training picture 123 exactly.
    queries
        .index_axis_mut(Axis(0), 0)
        .assign(&train.gather_f32(&[123]).index_axis(Axis(0), 0));
    let found = nearest_neighbours(queries.view(), &train, 7);
    assert_eq!(found.len(), 4);
    assert_eq!(found[0][0].index, 123);
    assert!(found[0][0].distance < 1e-6);
    let all = train.to_f32();
    for (q, list) in queries.outer_iter().zip(&found) {
        let mut brute: Vec<(f32, usize)> = all
            .outer_iter()
            .enumerate()
            .map(|(i, t)| {
                let d2: f32 = q.iter().zip(t.iter()).map(|(a, b)| (a - b) * (a - b)).sum();
                (d2.sqrt(), i)
            })
            .collect();
        brute.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let got: Vec<usize> = list.iter().map(|n| n.index).collect();
        let want: Vec<usize> = brute[..7].iter().map(|p| p.1).collect();
        assert_eq!(got, want);
        for (n, (d, _)) in list.iter().zip(&brute) {
            assert!((n.distance - d).abs() < 1e-4);
        }
    }
}

/// Ties go to the smaller index, and queries are clamped to [0, 1] before they are compared, as
/// the module promises (so that the answer does not depend on the threads, and a sample is
/// compared as it is shown). Training pictures 40, 90 and 250 of 300 are the same all-white
/// picture; a query of 1.7 everywhere is that picture once clamped: its three nearest are
/// 40, 90, 250 in that order, at distance 0 exactly (every clamped pixel is 1.0 = 255/255), and
/// the fourth is the next closest by brute force over the clamped query. Unclamped, the distance
/// would be 0.7·5 = 3.5.
#[test]
fn nearest_neighbour_ties_go_to_the_smaller_index_and_queries_are_clamped() {
    let mut data = tiny_dataset(300, 1, 5, 13);
    for i in [250, 40, 90] {
        data.images.index_axis_mut(Axis(0), i).fill(255);
    }
    let queries = Array4::from_elem((1, 1, 5, 5), 1.7f32);
    let found = nearest_neighbours(queries.view(), &data, 4);
    let got: Vec<usize> = found[0].iter().map(|n| n.index).collect();
    assert_eq!(&got[..3], &[40, 90, 250]);
    assert!(
        found[0][..3].iter().all(|n| n.distance == 0.0),
        "{:?}",
        found[0]
    );
    // The fourth: the nearest of the others to the all-ones picture.
    let all = data.to_f32();
    let fourth = (0..300)
        .filter(|i| ![40, 90, 250].contains(i))
        .min_by(|&a, &b| {
            let d = |i: usize| {
                all.index_axis(Axis(0), i)
                    .iter()
                    .map(|v| (1.0 - v) * (1.0 - v))
                    .sum::<f32>()
            };
            d(a).total_cmp(&d(b)).then(a.cmp(&b))
        })
        .unwrap();
    assert_eq!(got[3], fourth);
}

#[test]
fn inpainting_keeps_the_known_half_and_samples_the_rest() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let m = net(3);
    let originals = tiny_dataset(2, 1, 6, 4).to_f32();
    let config = RunConfig::preset(DatasetKind::Mnist, Preset::Cpu);
    let annealed = ncsn::sample::AnnealedConfig {
        n_steps_each: 3,
        ..config.annealed()
    };
    let out = run::inpaint(
        &m,
        &config.sigmas(),
        &annealed,
        originals.view(),
        3,
        Occlusion::Right,
        &mut rng,
    );
    assert_eq!(out.dim(), (6, 1, 6, 6));
    let mask = occlusion_mask((6, 6), Occlusion::Right);
    assert_eq!(mask.sum(), 18.0);
    let sigma_last = config.sigmas().get(config.num_classes - 1);
    for (i, c) in out.outer_iter().enumerate() {
        let o = originals.index_axis(Axis(0), i / 3);
        for y in 0..6 {
            for x in 0..6 {
                let (v, want) = (c[[0, y, x]], o[[0, y, x]]);
                if x < 3 {
                    // The kept half is the original plus noise of the last level, σ_L = 0.01.
                    assert!(
                        (v - want).abs() < 6.0 * sigma_last,
                        "kept pixel moved: {v} vs {want}"
                    );
                } else {
                    assert!(v.is_finite());
                }
            }
        }
    }
    // Completions of the same picture differ in the hidden half.
    let (a, b) = (out.index_axis(Axis(0), 0), out.index_axis(Axis(0), 1));
    assert!((0..6).any(|y| (a[[0, y, 5]] - b[[0, y, 5]]).abs() > 1e-3));
    // The grid: original, occluded input, then the completions.
    let grid = run::inpainting_grid(originals.view(), out.view(), Occlusion::Right);
    assert_eq!(grid.dim().0, 2 * 5);
    assert_eq!(
        grid.index_axis(Axis(0), 0),
        originals.index_axis(Axis(0), 0)
    );
    assert_eq!(grid[[1, 0, 2, 5]], 0.5);
}

#[test]
fn presets_and_configs() {
    let p = RunConfig::preset(DatasetKind::Cifar10, Preset::Paper);
    assert_eq!(
        (p.ngf, p.batch_size, p.n_iters, p.num_classes),
        (128, 128, 200_000, 10)
    );
    assert_eq!(
        (p.sigma_begin, p.sigma_end, p.anneal_power, p.lr),
        (1.0, 0.01, 2.0, 1e-3)
    );
    assert_eq!((p.n_steps_each, p.step_size), (100, 2e-5));
    assert_eq!(RunConfig::preset(DatasetKind::Mnist, Preset::Paper).ngf, 64);
    let s = p.sigmas();
    assert!((s.ratio() - 0.01f32.powf(1.0 / 9.0)).abs() < 1e-6);
    let cpu = RunConfig::preset(DatasetKind::Mnist, Preset::Cpu);
    assert!(cpu.ngf < 64 && cpu.n_iters < 200_000);
    assert_eq!(RunConfig::from_json(&cpu.to_json()).unwrap(), cpu);
    assert!(RunConfig::from_json("{\"ngf\": 3}").is_err());

    // Command-line overrides.
    let args = <Args as clap::Parser>::try_parse_from([
        "mnist", "--preset", "paper", "--steps", "12", "--seed", "4", "--ngf", "8",
    ])
    .unwrap();
    let c = args.config(DatasetKind::Mnist).unwrap();
    assert_eq!((c.n_iters, c.seed, c.ngf, c.batch_size), (12, 4, 8, 128));
    assert!(<Args as clap::Parser>::try_parse_from(["mnist", "--preset", "gpu"]).is_err());
    // A negative number is a bad value of its flag, not an argument of its own.
    let err = <Args as clap::Parser>::try_parse_from(["mnist", "--seed", "-1"]).unwrap_err();
    assert!(err.to_string().contains("'-1' for '--seed"), "{err}");
    let args =
        <Args as clap::Parser>::try_parse_from(["mnist", "--step-size", "-0.00002"]).unwrap();
    let err = args.config(DatasetKind::Mnist).unwrap_err().to_string();
    assert!(
        err.contains("step size") || err.contains("step_size"),
        "{err}"
    );
}

/// The `paper` preset is the reference's `anneal.yml` and `AnnealRunner` for both data sets, every
/// field a run trains or samples with: 10 noise levels from σ₁ = 1 to σ_L = 0.01, λ(σ) = σ²,
/// Adam at 1e-3, batch 128, 200,000 steps, a checkpoint every 5,000 (`snapshot_freq`), a test
/// batch every 100 steps, no moving average, T = 100 and ε = 2e-5, ngf 64 and 128. The `cpu`
/// preset shrinks the run but keeps the objective, the noise levels and the sampler, as its
/// documentation says. Exact comparisons: these are constants.
#[test]
fn the_paper_preset_is_the_references_and_cpu_keeps_its_levels_and_sampler() {
    for (kind, ngf) in [(DatasetKind::Mnist, 64), (DatasetKind::Cifar10, 128)] {
        let p = RunConfig::preset(kind, Preset::Paper);
        assert_eq!((p.dataset, p.preset, p.ngf), (kind, Preset::Paper, ngf));
        assert_eq!(
            (p.sigma_begin, p.sigma_end, p.num_classes, p.anneal_power),
            (1.0, 0.01, 10, 2.0),
            "{kind:?}"
        );
        assert_eq!(
            (
                p.lr,
                p.batch_size,
                p.n_iters,
                p.checkpoint_every,
                p.test_every
            ),
            (1e-3, 128, 200_000, 5_000, 100),
            "{kind:?}"
        );
        assert_eq!(p.ema_mu, None, "{kind:?}: NCSN v1 keeps no moving average");
        assert_eq!((p.n_steps_each, p.step_size), (100, 2e-5), "{kind:?}");
        // The schedule itself: L levels, σ₁ first, σ_L last (to f32 rounding of the endpoints).
        let s = p.sigmas();
        assert_eq!(s.len(), 10, "{kind:?}");
        assert_eq!((s.get(0), s.get(9)), (1.0, 0.01), "{kind:?}");

        let c = RunConfig::preset(kind, Preset::Cpu);
        assert_eq!(
            (
                c.sigma_begin,
                c.sigma_end,
                c.num_classes,
                c.anneal_power,
                c.lr
            ),
            (
                p.sigma_begin,
                p.sigma_end,
                p.num_classes,
                p.anneal_power,
                p.lr
            ),
            "{kind:?}: the cpu preset keeps the noise levels and the objective"
        );
        assert_eq!(
            (c.n_steps_each, c.step_size, c.ema_mu),
            (p.n_steps_each, p.step_size, p.ema_mu),
            "{kind:?}: the cpu preset keeps the sampler"
        );
    }
}

/// Writes MNIST IDX files (`t10k-*` only, as in `shared/data`) of `n` random 28×28 digits.
fn write_mnist(dir: &Path, n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut images = vec![0, 0, 8, 3];
    for d in [n as u32, 28, 28] {
        images.extend(d.to_be_bytes());
    }
    images.extend((0..n * 784).map(|_| rng.random::<u8>()));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join("t10k-images-idx3-ubyte"), images).unwrap();
    std::fs::write(dir.join("t10k-labels-idx1-ubyte"), labels).unwrap();
}

/// A fresh scratch directory with `n` tiny MNIST digits in its `data/` (see [`write_mnist`]).
fn with_mnist(tag: &str, n: usize) -> (TempDir, PathBuf) {
    let tmp = TempDir::new(tag);
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist(&data, n);
    (tmp, data)
}

#[test]
fn the_pipeline_runs_end_to_end_and_writes_its_results() {
    let (tmp, data) = with_mnist("pipeline", 24);
    let out = tmp.path().join("out");
    let args = <Args as clap::Parser>::try_parse_from([
        "mnist",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--n-samples",
        "6",
        "--n-steps-each",
        "2",
        "--quiet",
    ])
    .unwrap();
    let config_seen = Cell::new(0);
    let results = run::run(DatasetKind::Mnist, &args, |c, rng| {
        config_seen.set(c.n_iters);
        TinyNet::new(1, c.num_classes, rng)
    })
    .unwrap();
    assert_eq!(config_seen.get(), 3);
    assert_eq!(results.iterations, Some(3));
    assert!(results.test_dsm_loss.unwrap().is_finite());
    // 24 pictures: a fifth (4) held out as the test set.
    assert_eq!(results.test_images, Some(4));
    let p = &results.paths;
    for f in [
        &p.config,
        &p.checkpoint,
        &p.loss_csv,
        &p.loss_plot,
        &p.samples,
        &p.annealing,
        &p.inpainting,
        &p.nearest,
    ] {
        let f = f.as_ref().expect("path recorded");
        assert!(f.is_file(), "{} missing", f.display());
    }
    let strip = image::open(p.annealing.as_ref().unwrap()).unwrap();
    // L + 1 = 11 columns of 28 pixels with 2-pixel padding.
    assert_eq!(strip.width(), 11 * 30 + 2);
    // The other figures' layouts, from their sizes in pixels (28-pixel pictures with 2-pixel
    // padding: n pictures across are 30·n + 2 wide). The 6 samples are laid out ⌈√6⌉ = 3 to a
    // row, in 2 rows; the inpainting figure has a row for each of the cpu preset's 4 originals:
    // the original, its occluded copy and its 4 completions; the neighbour figure a row for each
    // of its 5 queries: the query and its 5 neighbours.
    for (file, across, down) in [
        (&p.samples, 3, 2),
        (&p.inpainting, 4 + 2, 4),
        (&p.nearest, 5 + 1, 5),
    ] {
        let f = file.as_ref().unwrap();
        let picture = image::open(f).unwrap();
        assert_eq!(
            (picture.width(), picture.height()),
            (30 * across + 2, 30 * down + 2),
            "{}",
            f.display()
        );
    }
    let nearest = results.nearest.as_ref().unwrap();
    assert_eq!(nearest.len(), 5);
    assert!(
        nearest
            .iter()
            .all(|l| l.len() == 5 && l.iter().all(|n| n.index < 20))
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["config"]["n_iters"], 3);
    assert!(
        json["timings"]["train_s"]
            .as_f64()
            .is_some_and(f64::is_finite)
    );

    // Sampling alone from the checkpoint keeps the training results and updates the samples.
    let args2 = <Args as clap::Parser>::try_parse_from([
        "mnist",
        "--sample",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--n-samples",
        "4",
        "--n-steps-each",
        "1",
        "--quiet",
    ])
    .unwrap();
    let r2 = run::run(DatasetKind::Mnist, &args2, |c, rng| {
        TinyNet::new(1, c.num_classes, rng)
    })
    .unwrap();
    assert_eq!(r2.iterations, Some(3));
    assert_eq!(r2.sampling_weights.as_deref(), Some("params"));
}

/// Sampling again from a run's checkpoint is sampling from that run: the samples are the ones
/// the training invocation drew (same weights, same seed, though `--seed` is not repeated), and
/// `results.json` keeps the training's record, with this invocation's sampling settings.
#[test]
fn sampling_again_reproduces_the_run_and_keeps_its_record() {
    let (tmp, data) = with_mnist("resample", 24);
    let out = tmp.path().join("out");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let sampling = ["--n-samples", "4", "--n-steps-each", "2"];
    let mut train = vec!["--data", d, "--out", o, "--quiet", "--steps", "3"];
    train.extend(["--batch-size", "4", "--seed", "9"]);
    let trained = run_tiny(&cli(&[&train[..], &sampling[..]].concat())).unwrap();
    let samples = std::fs::read(out.join("samples.png")).unwrap();
    let read_config = || -> serde_json::Value {
        let text = std::fs::read_to_string(out.join("results.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["config"].clone()
    };
    let before = read_config();
    assert_eq!(before["seed"], 9);

    let again = ["--sample", "--data", d, "--out", o, "--quiet"];
    let r = run_tiny(&cli(&[&again[..], &sampling[..]].concat())).unwrap();
    assert!(std::fs::read(out.join("samples.png")).unwrap() == samples);
    assert_eq!(r.config, trained.config);
    assert_eq!(read_config(), before);

    // Other sampling settings are recorded as such; the training's fields stay.
    let r = run_tiny(&cli(&[
        &again[..],
        &["--n-samples", "2", "--n-steps-each", "1"],
    ]
    .concat()))
    .unwrap();
    let c = r.config.unwrap();
    assert_eq!((c.n_samples, c.n_steps_each), (2, 1));
    let t = trained.config.unwrap();
    assert_eq!((c.n_iters, c.batch_size, c.seed), (3, 4, 9));
    assert_eq!(c.train_data_crc32, t.train_data_crc32);
    assert!(t.train_data_crc32.is_some());
    // A seed given explicitly is this invocation's.
    let r = run_tiny(&cli(&[&again[..], &sampling[..], &["--seed", "3"]].concat())).unwrap();
    assert_eq!(r.config.unwrap().seed, 3);
    assert!(std::fs::read(out.join("samples.png")).unwrap() != samples);
}

/// `--checkpoint` names weights to sample from. Training with it, or sampling another run's
/// weights into a directory that holds a run of its own, would record one run's results beside
/// another's: both are refused before anything is written. Into a fresh directory, or naming the
/// run's own checkpoint, it samples.
#[test]
fn another_runs_checkpoint_is_sampled_only_into_a_directory_of_its_own() {
    let (tmp, data) = with_mnist("foreign", 24);
    let d = data.to_str().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let train = |out: &Path, seed: &str| {
        let o = out.to_str().unwrap();
        let list = [
            "--data", d, "--out", o, "--quiet", "--train", "--steps", "2",
        ];
        run_tiny(&cli(
            &[&list[..], &["--batch-size", "4", "--seed", seed]].concat()
        ))
        .unwrap();
    };
    train(&a, "1");
    train(&b, "2");
    let a_ckpt = a.join("checkpoint.safetensors");
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let (b_files, b_results) = (listing(&b), std::fs::read(b.join("results.json")).unwrap());

    // Training with another run's weights, whether `--train` or no stage is named.
    for stage in [&["--train"][..], &[]] {
        let fresh = tmp.path().join("fresh");
        let list = ["--data", d, "--out", fresh.to_str().unwrap(), "--quiet"];
        let ck = ["--checkpoint", a_ckpt.to_str().unwrap()];
        let err = run_tiny(&cli(&[&list[..], stage, &ck[..]].concat())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--checkpoint") && msg.contains("cannot be combined with training"),
            "{msg}"
        );
        assert!(!fresh.exists(), "nothing written");
    }

    // Sampling a's weights into b, which holds a run of its own.
    let sample = |out: &Path, ckpt: &Path| {
        let list = [
            "--sample",
            "--data",
            d,
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        let rest = ["--n-samples", "2", "--n-steps-each", "1"];
        let ck = ["--checkpoint", ckpt.to_str().unwrap()];
        run_tiny(&cli(&[&list[..], &rest[..], &ck[..]].concat()))
    };
    let msg = sample(&b, &a_ckpt).unwrap_err().to_string();
    assert!(
        msg.contains("holds a run of its own") && msg.contains("another --out"),
        "{msg}"
    );
    assert_eq!(listing(&b), b_files);
    assert!(std::fs::read(b.join("results.json")).unwrap() == b_results);

    // Weights that do not fit the network are refused before the directory exists.
    let misfit = tmp.path().join("misfit.safetensors");
    let wrong = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[3, 1]));
    Checkpoint::new()
        .with_tensor("a", wrong.clone())
        .with_tensor("b", wrong)
        .save(&misfit)
        .unwrap();
    let never = tmp.path().join("never");
    let msg = sample(&never, &misfit).unwrap_err().to_string();
    assert!(msg.contains("misfit.safetensors"), "{msg}");
    assert!(!never.exists(), "nothing written");

    // Into a directory of its own, or naming the run's own checkpoint, it samples.
    let own = tmp.path().join("from-a");
    let r = sample(&own, &a_ckpt).unwrap();
    assert_eq!(r.paths.checkpoint.as_deref(), Some(a_ckpt.as_path()));
    assert_eq!(r.config.unwrap().seed, 1);
    assert!(own.join("samples.png").is_file());
    sample(&a, &a_ckpt).unwrap();
}

/// A sampler that diverged gives NaN samples, hence NaN distances to the training pictures. JSON
/// has no NaN: they are written as `null` and must read back, or the run directory could not be
/// used again (its `results.json` is read before every stage).
#[test]
fn results_with_nan_distances_read_back() {
    let tmp = TempDir::new("nan-results");
    let path = tmp.path().join("results.json");
    let results = run::Results {
        nearest: Some(vec![vec![
            run::Neighbour {
                index: 3,
                distance: f32::NAN,
            },
            run::Neighbour {
                index: 1,
                distance: 2.5,
            },
        ]]),
        ..Default::default()
    };
    results.save(&path).unwrap();
    assert!(std::fs::read_to_string(&path).unwrap().contains("null"));
    let back = run::Results::load_or_new(&path).unwrap();
    let list = &back.nearest.unwrap()[0];
    assert_eq!(list[0].index, 3);
    assert!(list[0].distance.is_nan());
    assert_eq!(list[1].distance, 2.5);
}

#[test]
fn missing_data_and_missing_checkpoints_are_named() {
    let tmp = TempDir::new("missing");
    let nowhere = tmp.path().join("no-such-dir");
    let args = <Args as clap::Parser>::try_parse_from([
        "mnist",
        "--data",
        nowhere.to_str().unwrap(),
        "--out",
        tmp.path().to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    let err = run_tiny(&args).unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(err.to_string().contains("--data"), "{err}");

    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_mnist(&data, 12);
    let args = <Args as clap::Parser>::try_parse_from([
        "mnist",
        "--sample",
        "--data",
        data.to_str().unwrap(),
        "--out",
        tmp.path().join("run").to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    let err = run_tiny(&args).unwrap_err();
    assert!(err.to_string().contains("no checkpoint at"), "{err}");
}

#[test]
fn holdout_split_when_the_data_has_no_test_set() {
    let tmp = TempDir::new("holdout");
    write_mnist(tmp.path(), 30);
    let (train, test) = run::load_data(DatasetKind::Mnist, tmp.path(), 5).unwrap();
    assert_eq!((train.len(), test.len()), (25, 5));
    assert_eq!(test.labels.as_ref().unwrap()[0], 5); // picture 25 has label 25 % 10
    // At most a fifth is held out.
    let (train, test) = run::load_data(DatasetKind::Mnist, tmp.path(), 1000).unwrap();
    assert_eq!((train.len(), test.len()), (24, 6));
    // Fewer than five pictures: a fifth rounds down to none, and one is still held out, for a
    // test set to take the test loss on.
    let few = TempDir::new("holdout-few");
    write_mnist(few.path(), 4);
    let (train, test) = run::load_data(DatasetKind::Mnist, few.path(), 5).unwrap();
    assert_eq!((train.len(), test.len()), (3, 1), "4 pictures");
    // Holding out every picture leaves none to train on: refused; all but one is a split.
    let err = run::split_holdout(&train, 3)
        .map(|(rest, _)| rest.len())
        .expect_err("every picture held out, pictures left to train on");
    assert!(err.to_string().contains("cannot hold out 3 of 3"), "{err}");
    let (rest, held) = run::split_holdout(&train, 2).unwrap();
    assert_eq!((rest.len(), held.len()), (1, 2));
}

/// `generate` records the chains before the first level and after each of the L = 10 levels,
/// L + 1 stages with the samples last; with T = 0 the chains never move, and the one stage is
/// the starting noise, which the annealing strip still lays out.
#[test]
fn generate_records_a_stage_per_level_and_the_noise_alone_without_steps() {
    let m = net(3);
    let sigmas = tiny_config(1, 1).sigmas();
    for (t, stages) in [(2, 11), (0, 1)] {
        let config = ncsn::sample::AnnealedConfig {
            step_size: 1e-5,
            n_steps_each: t,
            record_every: 0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let g = run::generate(&m, &sigmas, &config, 3, (1, 4), &mut rng);
        assert_eq!(g.stages.len(), stages, "T = {t}");
        assert_eq!(g.stages.last(), Some(&g.samples), "T = {t}");
        let strip = run::annealing_strip(&g.stages, 2);
        assert_eq!(strip.dim(), (2 * stages, 1, 4, 4), "T = {t}");
    }
}

/// Samples start from uniform noise on [0, 1), as the paper's §5 ("initial samples are uniform
/// noise"): with T = 0 the chains never move and the samples are that noise. 3 × 16 draws: a
/// Gaussian start would put one outside [0, 1) with probability 1 − 0.34⁴⁸ (certainly), and the
/// spread check (some draw below 0.25, some above 0.75) fails for U[0, 1) with probability
/// 2·0.75⁴⁸ ≈ 2·10⁻⁶ — and the seed is fixed, so the outcome is too.
#[test]
fn samples_start_from_uniform_noise() {
    let m = net(3);
    let sigmas = tiny_config(1, 1).sigmas();
    let config = ncsn::sample::AnnealedConfig {
        step_size: 1e-5,
        n_steps_each: 0,
        record_every: 0,
    };
    let g = run::generate(
        &m,
        &sigmas,
        &config,
        3,
        (1, 4),
        &mut ChaCha8Rng::seed_from_u64(5),
    );
    let v: Vec<f32> = g.samples.iter().copied().collect();
    assert_eq!(v.len(), 48);
    assert_spread_over_unit_interval(&v);
}

/// Asserts what the starting-noise tests ask of draws of U[0, 1): every value in [0, 1), some
/// below 1/4 and some above 3/4.
fn assert_spread_over_unit_interval(values: &[f32]) {
    assert!(values.iter().all(|x| (0.0..1.0).contains(x)), "{values:?}");
    assert!(
        values.iter().any(|&x| x < 0.25) && values.iter().any(|&x| x > 0.75),
        "{values:?}"
    );
}

/// The figures' layouts, checked picture by picture with pictures whose every pixel names where
/// it came from (exact: values are copied, never computed).
///
/// * the annealing strip: row r is chain r, left to right its state before the first level and
///   after each level (a transposed strip would put chain 1's start in row 0);
/// * the inpainting grid: row i is original i, its occluded copy, then its k completions
///   `i·k .. (i+1)·k`;
/// * the neighbour grid: row i is query i, then its neighbours nearest first.
#[test]
fn the_figures_are_laid_out_row_by_row() {
    // Stages: 3 of them, 2 chains of 1 × 2 × 2 pictures; chain r at stage k holds 10·r + k.
    let stages: Vec<Array4<f32>> = (0..3)
        .map(|k| Array4::from_shape_fn((2, 1, 2, 2), |(r, _, _, _)| (10 * r + k) as f32))
        .collect();
    let strip = run::annealing_strip(&stages, 2);
    assert_eq!(strip.dim(), (6, 1, 2, 2));
    for r in 0..2 {
        for k in 0..3 {
            let want = (10 * r + k) as f32;
            assert!(
                strip
                    .index_axis(Axis(0), 3 * r + k)
                    .iter()
                    .all(|&v| v == want),
                "strip picture {} should be chain {r} at stage {k}",
                3 * r + k
            );
        }
    }

    // Inpainting: m = 2 originals (values 0.1, 0.2), k = 3 completions each (value 1 + index).
    let originals = Array4::from_shape_fn((2, 1, 2, 2), |(i, _, _, _)| 0.1 * (i + 1) as f32);
    let completions = Array4::from_shape_fn((6, 1, 2, 2), |(j, _, _, _)| 1.0 + j as f32);
    let grid = run::inpainting_grid(originals.view(), completions.view(), Occlusion::Right);
    assert_eq!(grid.dim(), (10, 1, 2, 2));
    for i in 0..2 {
        assert_eq!(
            grid.index_axis(Axis(0), 5 * i),
            originals.index_axis(Axis(0), i)
        );
        for j in 0..3 {
            assert_eq!(
                grid.index_axis(Axis(0), 5 * i + 2 + j),
                completions.index_axis(Axis(0), 3 * i + j),
                "row {i}, completion {j}"
            );
        }
    }

    // Neighbours: 2 queries, 2 neighbours each, training pictures of one value each.
    let train = Dataset::new(
        Array4::from_shape_fn((4, 1, 2, 2), |(n, _, _, _)| 50 * n as u8),
        None,
    )
    .unwrap();
    let queries = Array4::from_shape_fn((2, 1, 2, 2), |(q, _, _, _)| 0.9 - 0.1 * q as f32);
    let found = vec![
        vec![
            run::Neighbour {
                index: 3,
                distance: 0.0,
            },
            run::Neighbour {
                index: 1,
                distance: 0.0,
            },
        ],
        vec![
            run::Neighbour {
                index: 0,
                distance: 0.0,
            },
            run::Neighbour {
                index: 2,
                distance: 0.0,
            },
        ],
    ];
    let grid = run::nearest_grid(queries.view(), &train, &found);
    assert_eq!(grid.dim(), (6, 1, 2, 2));
    for (i, list) in found.iter().enumerate() {
        assert_eq!(
            grid.index_axis(Axis(0), 3 * i),
            queries.index_axis(Axis(0), i)
        );
        for (j, nb) in list.iter().enumerate() {
            assert_eq!(
                grid.index_axis(Axis(0), 3 * i + 1 + j),
                train.gather_f32(&[nb.index]).index_axis(Axis(0), 0),
                "query {i}, neighbour {j}"
            );
        }
    }
}

#[test]
fn occlusion_masks_and_the_loss_log_format() {
    // Pictures 4 high and 6 wide: each mask keeps its own half of its own axis.
    let right = occlusion_mask((4, 6), Occlusion::Right);
    let bottom = occlusion_mask((4, 6), Occlusion::Bottom);
    assert_eq!((right.dim(), bottom.dim()), ((1, 1, 4, 6), (1, 1, 4, 6)));
    for y in 0..4 {
        for x in 0..6 {
            assert_eq!(right[[0, 0, y, x]], f32::from(u8::from(x < 3)));
            assert_eq!(bottom[[0, 0, y, x]], f32::from(u8::from(y < 2)));
        }
    }

    let tmp = TempDir::new("csv");
    let path = tmp.path().join("loss.csv");
    let rows = vec![
        run::LossRow {
            step: 1,
            loss: 2.5,
            test_loss: None,
        },
        run::LossRow {
            step: 2,
            loss: 1.25,
            test_loss: Some(1.5),
        },
    ];
    run::train::write_loss_csv(&path, &rows).unwrap();
    assert_eq!(run::train::read_loss_csv(&path).unwrap(), rows);
    std::fs::write(&path, "step,loss,test_loss\n1,2.5,\n2,oops,\n").unwrap();
    let err = run::train::read_loss_csv(&path).unwrap_err().to_string();
    assert!(err.contains("loss.csv") && err.contains("line 3"), "{err}");
    // A row with a field too many is malformed too, not read as its first three.
    std::fs::write(&path, "step,loss,test_loss\n1,2.5,,7\n").unwrap();
    let err = run::train::read_loss_csv(&path).expect_err("a row of four fields was read");
    assert!(err.to_string().contains("line 2"), "{err}");
}

/// An image example's command line.
fn cli(list: &[&str]) -> Args {
    <Args as clap::Parser>::try_parse_from(std::iter::once("mnist").chain(list.iter().copied()))
        .unwrap()
}

#[test]
fn settings_a_run_cannot_use_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--ngf", "0"),
        ("--ngf", "1"),
        ("--steps", "0"),
        ("--n-steps-each", "0"),
        ("--n-samples", "0"),
        ("--batch-size", "0"),
        ("--checkpoint-every", "0"),
        ("--ema", "1"),
        ("--ema", "-0.5"),
        ("--ema", "NaN"),
        ("--step-size", "0"),
        ("--step-size", "-1"),
        ("--step-size", "inf"),
    ] {
        let err = cli(&[&format!("{flag}={value}")])
            .config(DatasetKind::Mnist)
            .unwrap_err();
        assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
    }
    // The examples' own counts (toy_mixture, refinenet_step).
    assert_eq!(run::at_least_one("3"), Ok(3));
    for bad in ["0", "-1", "x", ""] {
        assert!(run::at_least_one(bad).is_err(), "{bad:?}");
    }
    // Their bounded counts: both ends included, one past either refused with the bound.
    let count = run::count_in(0, 1_000);
    assert_eq!((count("0"), count("1000")), (Ok(0), Ok(1_000)));
    assert_eq!(count("1001"), Err("it must be at most 1000".to_string()));
    assert_eq!(
        run::count_in(1, 9)("0"),
        Err("it must be at least 1".to_string())
    );
    assert!(count("4611686018427387904").is_err());
    assert!(count("99999999999999999999999").is_err()); // beyond usize
    // The smallest values that work are accepted.
    let edge = [
        "--steps",
        "1",
        "--ngf",
        "2",
        "--ema",
        "0",
        "--n-steps-each",
        "1",
        "--batch-size",
        "1",
    ];
    assert!(cli(&edge).config(DatasetKind::Mnist).is_ok());
    // A stored configuration (a checkpoint's, config.json) is checked as well.
    let mut stored = RunConfig::preset(DatasetKind::Mnist, Preset::Cpu);
    stored.ngf = 1;
    let err = RunConfig::from_json(&stored.to_json()).unwrap_err();
    assert!(err.to_string().contains("ngf"), "{err}");
}

/// Sizes far beyond any real run are refused by `RunConfig::validate`, naming the field and its
/// flag, before anything is allocated for them: a count that large would otherwise abort the
/// process on a failed allocation or panic on a shape whose size overflows.
#[test]
fn huge_sizes_are_refused_naming_the_flag() {
    for (flag, value) in [
        ("--ngf", "100000000000"),
        ("--ngf", "4611686018427387904"),
        ("--n-samples", "4611686018427387904"),
        ("--n-samples", "1000000000000"),
        ("--batch-size", "1000000000000"),
        ("--n-steps-each", "4611686018427387904"),
        ("--steps", "4611686018427387904"),
        ("--checkpoint-every", "4611686018427387904"),
    ] {
        let err = cli(&[flag, value]).config(DatasetKind::Mnist).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(flag), "{flag} {value}: {msg}");
        assert!(msg.contains("at most"), "{flag} {value}: {msg}");
    }
    // Each size at its largest is accepted on its own; one more is refused.
    let small_net = ["--ngf", "2"];
    for (flag, max) in [
        ("--ngf", config::MAX_NGF),
        ("--n-samples", config::MAX_N_SAMPLES),
        ("--batch-size", config::MAX_BATCH_SIZE),
        ("--n-steps-each", config::MAX_N_STEPS_EACH),
        ("--steps", config::MAX_N_ITERS),
        ("--checkpoint-every", config::MAX_N_ITERS),
    ] {
        let at = |v: usize| {
            let v = v.to_string();
            let list: Vec<&str> = if flag == "--ngf" {
                vec![flag, &v]
            } else {
                [&small_net[..], &[flag, &v]].concat()
            };
            cli(&list).config(DatasetKind::Cifar10)
        };
        assert!(at(max).is_ok(), "{flag} {max}: {:?}", at(max));
        let err = at(max + 1).unwrap_err().to_string();
        assert!(err.contains(flag) && err.contains("at most"), "{err}");
    }
    // The paper's settings pass, and so does its network with four times its batch.
    let paper = RunConfig::preset(DatasetKind::Cifar10, Preset::Paper);
    paper.validate().unwrap();
    RunConfig {
        batch_size: 4 * paper.batch_size,
        ..paper.clone()
    }
    .validate()
    .unwrap();
    // Sizes that are each allowed but whose product is not: one batch through the widest network.
    let err = cli(&["--ngf", "512", "--batch-size", "4096"])
        .config(DatasetKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--batch-size") && err.contains("--ngf"),
        "{err}"
    );
    let err = cli(&["--ngf", "512", "--n-samples", "10000"])
        .config(DatasetKind::Cifar10)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--n-samples") && err.contains("--ngf"),
        "{err}"
    );

    // A stored configuration (a checkpoint's, config.json): every size-like field is bounded,
    // those without a flag too.
    let fields = [
        "ngf",
        "num_classes",
        "batch_size",
        "n_iters",
        "checkpoint_every",
        "test_every",
        "holdout",
        "n_steps_each",
        "n_samples",
        "strip_rows",
        "inpaint_images",
        "inpaint_completions",
        "nearest_k",
        "nearest_queries",
    ];
    for name in fields {
        let mut stored =
            serde_json::to_value(RunConfig::preset(DatasetKind::Mnist, Preset::Cpu)).unwrap();
        stored[name] = serde_json::json!(100_000_000_000u64);
        let err = RunConfig::from_json(&stored.to_string()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(name) && msg.contains("at most"),
            "{name}: {msg}"
        );
    }
    // The fields that are not sizes, each with a value that would train or sample nonsense: the
    // error names the field.
    let base = RunConfig::preset(DatasetKind::Mnist, Preset::Cpu);
    let bad: [(&str, RunConfig); 8] = [
        (
            "lr",
            RunConfig {
                lr: 0.0,
                ..base.clone()
            },
        ),
        (
            "lr",
            RunConfig {
                lr: f64::NAN,
                ..base.clone()
            },
        ),
        (
            "sigma_end",
            RunConfig {
                sigma_end: base.sigma_begin,
                ..base.clone()
            },
        ),
        (
            "sigma_end",
            RunConfig {
                sigma_end: 0.0,
                ..base.clone()
            },
        ),
        (
            "sigma_begin",
            RunConfig {
                sigma_begin: f64::INFINITY,
                ..base.clone()
            },
        ),
        (
            "anneal_power",
            RunConfig {
                anneal_power: f32::INFINITY,
                ..base.clone()
            },
        ),
        (
            "step_size",
            RunConfig {
                step_size: -1e-5,
                ..base.clone()
            },
        ),
        (
            "ema_mu",
            RunConfig {
                ema_mu: Some(1.0),
                ..base.clone()
            },
        ),
    ];
    for (field, config) in bad {
        let msg = config.validate().unwrap_err().to_string();
        assert!(msg.contains(field), "{field}: {msg}");
    }
    // Many noise levels recorded for many samples: the pictures kept are bounded too.
    let stored = RunConfig {
        num_classes: config::MAX_NUM_CLASSES,
        n_samples: 1_000,
        ..RunConfig::preset(DatasetKind::Cifar10, Preset::Cpu)
    };
    let err = stored.validate().unwrap_err().to_string();
    assert!(
        err.contains("n_samples") && err.contains("num_classes"),
        "{err}"
    );
}

/// Sampling from a checkpoint builds the network its stored configuration describes: a stored
/// width far too large is an error naming the checkpoint, not a network the size of the memory.
#[test]
fn a_checkpoint_with_a_huge_stored_width_is_refused() {
    let (tmp, data) = with_mnist("huge-ckpt", 24);
    let ckpt = tmp.path().join("huge.safetensors");
    let out = tmp.path().join("out");
    let m = TinyNet::new(1, 10, &mut ChaCha8Rng::seed_from_u64(1));
    let built = Cell::new(false);
    // Samples from a checkpoint whose stored configuration is `stored`, and checks that the run
    // is refused naming the checkpoint and `named`, with no network built and nothing written.
    let refused = |stored: &RunConfig, args: &Args, named: &str| {
        Checkpoint::new()
            .with_tensor("a", m.a.to_array())
            .with_tensor("b", m.b.to_array())
            .with_metadata("config", stored.to_json())
            .save(&ckpt)
            .unwrap();
        let err = run::run(DatasetKind::Mnist, args, |c, rng| {
            built.set(true);
            TinyNet::new(1, c.num_classes, rng)
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("huge.safetensors") && msg.contains(named),
            "{msg}"
        );
        assert!(!built.get(), "a network was built");
        assert!(!out.exists());
    };
    let stored = RunConfig {
        ngf: 100_000_000_000,
        ..RunConfig::preset(DatasetKind::Mnist, Preset::Cpu)
    };
    let args = cli(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--sample",
        "--n-samples",
        "2",
        "--n-steps-each",
        "1",
        "--checkpoint",
        ckpt.to_str().unwrap(),
    ]);
    refused(&stored, &args, "ngf");

    // A width that is allowed, with more samples than fit one batch through a network that wide:
    // each setting is fine alone (the command line's default width is 16), not together.
    let stored = RunConfig {
        ngf: config::MAX_NGF,
        ..stored
    };
    let many = config::MAX_CHAINS_TIMES_NGF / config::MAX_NGF + 1;
    let args = Args {
        n_samples: Some(many),
        ..args
    };
    args.config(DatasetKind::Mnist).unwrap();
    refused(&stored, &args, "--n-samples, --ngf");
}

#[test]
fn a_run_directory_fixes_the_network_and_bad_settings_write_nothing() {
    let (tmp, data) = with_mnist("settings", 24); // 20 training pictures, 4 held out
    let (d, out) = (data.to_str().unwrap(), tmp.path().join("out"));
    let o = out.to_str().unwrap();
    let built_with = Cell::new(0);
    let go = |list: &[&str]| {
        let args = cli(&[&["--data", d, "--out", o, "--quiet"], list].concat());
        run::run(DatasetKind::Mnist, &args, |c, rng| {
            built_with.set(c.ngf);
            TinyNet::new(1, c.num_classes, rng)
        })
    };

    // A batch larger than the data: refused before the run directory exists.
    let err = go(&["--batch-size", "100"]).unwrap_err();
    assert!(err.to_string().contains("--batch-size"), "{err}");
    assert!(err.to_string().contains("20 training pictures"), "{err}");
    assert!(!out.exists());

    let small = ["--steps", "2", "--batch-size", "4", "--ngf", "4"];
    go(&[&["--train"], &small[..]].concat()).unwrap();
    assert_eq!(built_with.get(), 4);
    // Sampling alone builds the network of the run's checkpoint, not the preset's (ngf 16).
    built_with.set(0);
    go(&["--sample", "--n-samples", "2", "--n-steps-each", "1"]).unwrap();
    assert_eq!(built_with.get(), 4);
    // Resuming with another width is refused, naming the one the run was trained with.
    let err = go(&["--train", "--steps", "3", "--batch-size", "4"]).unwrap_err();
    assert!(err.to_string().contains("--ngf 4"), "{err}");
    // With the same settings it resumes.
    let more = ["--train", "--steps", "3", "--batch-size", "4", "--ngf", "4"];
    let resumed = go(&more).unwrap();
    // `iterations` is the step reached, not the steps this invocation ran.
    assert_eq!(
        (resumed.resumed_from, resumed.iterations),
        (Some(2), Some(3)),
        "resumed from, and steps done"
    );

    // A file where the run directory should be.
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let args = cli(&[
        "--data",
        d,
        "--out",
        file.to_str().unwrap(),
        "--quiet",
        "--batch-size",
        "4",
    ]);
    let err = run_tiny(&args).unwrap_err();
    assert!(
        err.to_string()
            .contains("a-file: exists and is not a directory"),
        "{err}"
    );
}

/// MNIST IDX files of `n` random digits of `side` × `side` under `prefix` (`train` or `t10k`).
fn write_idx(dir: &Path, prefix: &str, n: usize, side: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let mut images = vec![0, 0, 8, 3];
    for d in [n, side, side] {
        images.extend((d as u32).to_be_bytes());
    }
    images.extend((0..n * side * side).map(|_| rng.random::<u8>()));
    let mut labels = vec![0, 0, 8, 1];
    labels.extend((n as u32).to_be_bytes());
    labels.extend((0..n).map(|i| (i % 10) as u8));
    std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
    std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
}

/// A split whose files are there but cannot be read is an error naming the file; only a split
/// with no file at all is replaced by pictures held out of the other one.
#[test]
fn a_damaged_split_is_an_error_not_a_reason_to_hold_out() {
    let tmp = TempDir::new("damaged-split");
    let dir = tmp.path();
    write_idx(dir, "t10k", 30, 28);
    std::fs::write(dir.join("train-images-idx3-ubyte"), [7u8; 1000]).unwrap();
    let err = run::load_data(DatasetKind::Mnist, dir, 5).unwrap_err();
    assert!(err.to_string().contains("train-"), "{err}");

    // CIFAR-10: a test_batch.bin that is not a readable file.
    let cifar = TempDir::new("damaged-cifar");
    let mut records = Vec::new();
    for i in 0..10u8 {
        records.push(i % 10);
        records.extend(std::iter::repeat_n(i, 3072));
    }
    std::fs::write(cifar.path().join("data_batch_1.bin"), &records).unwrap();
    let (train, test) = run::load_data(DatasetKind::Cifar10, cifar.path(), 2).unwrap();
    assert_eq!((train.len(), test.len()), (8, 2), "no test split: held out");
    std::fs::create_dir(cifar.path().join("test_batch.bin")).unwrap();
    let err = run::load_data(DatasetKind::Cifar10, cifar.path(), 2).unwrap_err();
    assert!(err.to_string().contains("test_batch.bin"), "{err}");
}

/// The test pictures must have the data set's size too: 1×1 test digits beside 28×28 training
/// ones are refused, naming the split, before anything is written.
#[test]
fn test_pictures_of_another_size_are_refused() {
    let tmp = TempDir::new("test-size");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_idx(&data, "train", 12, 28);
    write_idx(&data, "t10k", 6, 1);
    let out = tmp.path().join("out");
    let args = cli(&[
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--batch-size",
        "4",
    ]);
    let err = run_tiny(&args).unwrap_err();
    assert!(
        err.to_string().contains("test pictures are (1, 1, 1)"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Resuming continues one run: a seed, batch size or moving average other than the checkpoint's
/// is refused, naming the value the run was trained with; a device that cannot be had, or a
/// damaged `results.json`, stops the run with a clear error before anything is lost.
#[test]
fn a_resumed_run_keeps_its_course() {
    let (tmp, data) = with_mnist("course", 24);
    let (d, out) = (data.to_str().unwrap(), tmp.path().join("out"));
    let o = out.to_str().unwrap();
    let go = |list: &[&str]| {
        let args = cli(&[&["--data", d, "--out", o, "--quiet", "--train"], list].concat());
        run_tiny(&args)
    };

    // Refused before the run directory is made.
    let err = go(&["--device", "tpu", "--batch-size", "4"]).unwrap_err();
    assert!(err.to_string().contains("tpu"), "{err}");
    assert!(!out.exists());

    let first = [
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--ema",
        "0.9",
    ];
    go(&first).unwrap();
    for (list, named) in [
        (
            &["--steps", "3", "--batch-size", "4", "--ema", "0.9"][..],
            "--seed 3",
        ),
        (
            &[
                "--steps",
                "3",
                "--batch-size",
                "5",
                "--seed",
                "3",
                "--ema",
                "0.9",
            ][..],
            "--batch-size 4",
        ),
        (
            &["--steps", "3", "--batch-size", "4", "--seed", "3"][..],
            "--ema 0.9",
        ),
        (
            &[
                "--steps",
                "3",
                "--batch-size",
                "4",
                "--seed",
                "3",
                "--ema",
                "0.5",
            ][..],
            "--ema 0.9",
        ),
    ] {
        let err = go(list).unwrap_err();
        assert!(err.to_string().contains(named), "{list:?}: {err}");
    }
    let again = [
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--seed",
        "3",
        "--ema",
        "0.9",
    ];
    // Other pictures of the same size and number (another --data) are not the run's either.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    write_idx(&other, "t10k", 24, 28);
    let flags = [
        &[
            "--data",
            other.to_str().unwrap(),
            "--out",
            o,
            "--quiet",
            "--train",
        ],
        &again[..],
    ];
    let err = run_tiny(&cli(&flags.concat())).unwrap_err();
    assert!(err.to_string().contains("other training pictures"), "{err}");
    assert_eq!(go(&again).unwrap().resumed_from, Some(2));

    std::fs::write(out.join("results.json"), "{ not json").unwrap();
    let err = go(&again).unwrap_err();
    assert!(err.to_string().contains("results.json"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("results.json")).unwrap(),
        "{ not json",
        "left as it was"
    );
}

/// Resuming refuses every setting that fixes the course of training, also those without a flag
/// (a run directory's `config.json` can be edited, and a library caller passes a `RunConfig`):
/// the learning rate, λ's power, the held-out pictures and the noise levels, each named with the
/// checkpoint's value. A run resumed with any of them changed would be neither the old run nor a
/// new one. The unchanged settings then resume, and `--steps` may also shrink below the steps
/// done.
#[test]
fn resuming_with_another_objective_optimizer_or_schedule_is_refused() {
    let data = tiny_dataset(8, 1, 6, 1);
    let tmp = TempDir::new("mismatch");
    let dir = RunDir::create(tmp.path()).unwrap();
    let train = |config: &RunConfig| train_mnist(&net(3), &data, config, &dir);
    train(&tiny_config(2, 2)).unwrap();
    let base = tiny_config(4, 2);
    for (config, named) in [
        (
            RunConfig {
                lr: 2e-2,
                ..base.clone()
            },
            "learning rate 0.01",
        ),
        (
            RunConfig {
                anneal_power: 1.0,
                ..base.clone()
            },
            "λ(σ) = σ^2",
        ),
        (
            RunConfig {
                holdout: 10,
                ..base.clone()
            },
            "1000 held-out pictures",
        ),
        (
            RunConfig {
                sigma_end: 0.02,
                ..base.clone()
            },
            "noise levels from 1 to 0.01",
        ),
        (
            RunConfig {
                sigma_begin: 2.0,
                ..base.clone()
            },
            "noise levels from 1 to 0.01",
        ),
        (
            RunConfig {
                num_classes: 12,
                ..base.clone()
            },
            "10 noise levels",
        ),
        (
            RunConfig {
                dataset: DatasetKind::Cifar10,
                ..base.clone()
            },
            "the mnist data set",
        ),
    ] {
        let err = train(&config).unwrap_err().to_string();
        assert!(err.contains(named), "{named}: {err}");
    }
    assert_eq!(train(&base).unwrap().resumed_from, 2);
    // Resumed with fewer steps than it has done (4), the run trains no further, and reports the
    // step it stands at, not the number asked for.
    let past = train(&tiny_config(2, 2)).unwrap();
    assert_eq!(
        (past.resumed_from, past.steps, past.log.len()),
        (4, 4, 4),
        "resumed from, at, rows"
    );
}

/// A checkpoint whose training state does not add up is refused, naming the file: a step beyond
/// the run's length, or without a stored configuration beyond any run's (an edited or damaged count, which resuming would otherwise spend that many
/// batches skipping to), a moving average the run would drop, and a step count with no
/// optimizer state behind it.
#[test]
fn a_checkpoint_whose_state_does_not_add_up_is_refused() {
    let data = tiny_dataset(8, 1, 6, 1);
    let tmp = TempDir::new("state");
    let dir = RunDir::create(tmp.path()).unwrap();
    let train = |config: &RunConfig| train_mnist(&net(3), &data, config, &dir);
    train(&tiny_config(2, 2)).unwrap();
    let good = Checkpoint::load(dir.checkpoint()).unwrap();
    let refused = |edit: &dyn Fn(&mut Checkpoint), config: &RunConfig, expect: &str| {
        let mut c = good.clone();
        edit(&mut c);
        c.save(dir.checkpoint()).unwrap();
        let err = train(config).unwrap_err().to_string();
        assert!(
            err.contains("checkpoint.safetensors") && err.contains(expect),
            "{err}"
        );
    };
    refused(
        &|c| {
            c.metadata.insert("step".into(), "1000000000000".into());
        },
        &tiny_config(4, 2),
        "beyond the 2 steps",
    );
    // The same count in a checkpoint that stores no configuration (written elsewhere, or by hand):
    // still bounded, by the most steps any run may have.
    refused(
        &|c| {
            c.metadata.insert("step".into(), "1000000000000".into());
            c.metadata.remove("config");
        },
        &tiny_config(4, 2),
        "beyond the most steps a run may have",
    );
    refused(
        &|_| {},
        &RunConfig {
            ema_mu: None,
            ..tiny_config(4, 2)
        },
        "--ema",
    );
    refused(
        &|c| {
            c.metadata.retain(|k, _| !k.starts_with("optimizer."));
            c.tensors.retain(|k, _| !k.starts_with("optimizer."));
        },
        &tiny_config(4, 2),
        "no optimizer state",
    );
}

/// The loss log is written before the checkpoint, so that a run stopped between the two has a
/// log that runs ahead (resuming drops the extra rows), never one with rows missing. Here the
/// checkpoint cannot be written (a folder has its name): the log already holds the steps.
#[test]
fn the_loss_log_is_written_before_the_checkpoint() {
    let data = tiny_dataset(8, 1, 6, 1);
    let tmp = TempDir::new("log-first");
    let dir = RunDir::create(tmp.path()).unwrap();
    std::fs::create_dir(dir.checkpoint()).unwrap();
    train_mnist(&net(3), &data, &tiny_config(4, 2), &dir).unwrap_err();
    let rows = run::train::read_loss_csv(&dir.loss_csv()).unwrap();
    assert_eq!(rows.iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2]);
}

/// `final_loss`, which `results.json` reports as `final_train_loss`, is the mean training loss of
/// the last 100 steps: after 130 steps, the mean of the log's rows 31..=130, worked out here in
/// f64 from the log. The losses differ from step to step (each step draws a new batch, new noise
/// levels and new noise, and the network learns), so the mean of all 130 rows, or of the last 10,
/// is more than 1e-3 of it away (checked below): 100× the relative 1e-5 allowed here for the f32
/// summation of 100 positive terms (about 100·6e-8 in the worst case).
#[test]
fn the_final_loss_is_the_mean_of_the_last_100_steps() {
    let data = tiny_dataset(8, 1, 6, 1);
    let tmp = TempDir::new("final-loss");
    let dir = RunDir::create(tmp.path()).unwrap();
    let config = RunConfig {
        test_every: 1_000,
        ..tiny_config(130, 1_000)
    };
    let report = train_mnist(&net(3), &data, &config, &dir).unwrap();
    assert_eq!(report.log.len(), 130);
    let mean =
        |rows: &[LossRow]| rows.iter().map(|r| r.loss as f64).sum::<f64>() / rows.len() as f64;
    let want = mean(&report.log[30..]);
    let got = report.final_loss.unwrap() as f64;
    assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
    // The alternatives are far off (so that the check above can tell them apart).
    for other in [mean(&report.log), mean(&report.log[120..])] {
        assert!(
            (other - want).abs() > 1e-3 * want.abs(),
            "{other} vs {want}"
        );
    }
}

/// A run directory is swept of the temporary files of writes that were interrupted (their
/// process is gone and they have not been written for [`STALE_AFTER`]), and of nothing else: not
/// of a file written a moment ago by a process this one cannot see (another container's, say),
/// whose id looks just as gone.
#[test]
fn stale_temporary_files_are_removed_and_nothing_else() {
    use ncsn::io::checkpoint::STALE_AFTER;
    let tmp = TempDir::new("sweep");
    let own = format!(".loss.csv.{}-7.tmp", std::process::id());
    // Linux process ids stay below 2²² (pid_max), so process 999999999 cannot be running.
    let names = [
        ".checkpoint.safetensors.999999999-3.tmp",
        own.as_str(),
        ".notes.tmp",
        "checkpoint.safetensors.999999999-3.tmp",
        ".loss.csv.999999999-4.tmp", // written just now
    ];
    let long_ago = std::time::SystemTime::now() - 2 * STALE_AFTER;
    for (i, n) in names.iter().enumerate() {
        std::fs::write(tmp.path().join(n), b"x").unwrap();
        if i < 4 {
            let f = std::fs::File::options()
                .write(true)
                .open(tmp.path().join(n));
            f.unwrap().set_modified(long_ago).unwrap();
        }
    }
    RunDir::create(tmp.path()).unwrap();
    let left: Vec<bool> = names.iter().map(|n| tmp.path().join(n).exists()).collect();
    assert_eq!(left, [false, true, true, true, true]);
}

/// The `cpu` preset, field by field, as `RunConfig::preset` and the book's chapter on images
/// describe it: the `paper` preset with ngf 16, batches of 32, 4,500 steps for MNIST and 500 for
/// CIFAR-10, a checkpoint every 250 steps and a test batch every 100, 25 samples, an annealing
/// strip of 4 chains, 4 pictures completed 4 times each, and the 5 nearest neighbours of 5
/// samples. Exact: these are constants.
#[test]
fn the_cpu_preset_is_the_paper_shrunk_as_documented() {
    for (kind, steps) in [(DatasetKind::Mnist, 4_500), (DatasetKind::Cifar10, 500)] {
        let mut want = RunConfig::preset(kind, Preset::Paper);
        want.preset = Preset::Cpu;
        (want.ngf, want.batch_size, want.n_iters) = (16, 32, steps);
        (want.checkpoint_every, want.test_every) = (250, 100);
        (want.n_samples, want.strip_rows) = (25, 4);
        (want.inpaint_images, want.inpaint_completions) = (4, 4);
        (want.nearest_k, want.nearest_queries) = (5, 5);
        assert_eq!(RunConfig::preset(kind, Preset::Cpu), want, "{kind:?}");
    }
}

/// Every count of a stored configuration (a checkpoint's, `config.json`) must be at least 1, those
/// without a flag too: a count of 0 is refused naming its field. (`holdout` 0 would leave no test
/// picture to take the test loss on; a strip of 0 rows, no figure.)
#[test]
fn no_count_of_a_stored_configuration_may_be_zero() {
    let cpu = serde_json::to_value(RunConfig::preset(DatasetKind::Mnist, Preset::Cpu)).unwrap();
    for name in [
        "n_iters",
        "batch_size",
        "n_steps_each",
        "n_samples",
        "checkpoint_every",
        "num_classes",
        "test_every",
        "holdout",
        "strip_rows",
        "inpaint_images",
        "inpaint_completions",
        "nearest_k",
        "nearest_queries",
    ] {
        let mut zero = cpu.clone();
        zero[name] = serde_json::json!(0);
        match RunConfig::from_json(&zero.to_string()) {
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(name) && msg.contains("is 0: it must be at least 1"),
                    "{name}: {msg}"
                )
            }
            Ok(_) => panic!("{name} 0 was accepted"),
        }
    }
}

/// The products of sizes that `validate` bounds, each at its edge: accepted at the bound, refused
/// one step past it, naming the product.
///
/// * The neighbour search's queries are one batch through the network: 128 × ngf 512 = 2¹⁶ is
///   the most; 10,000 queries (allowed alone) are not.
/// * Inpainting runs images × completions chains at once: 64 × 64 × ngf 16 = 2¹⁶; 64 × 65 is
///   past it (and 100 × 100 far past it, though 100 + 100 chains would fit).
/// * Sampling keeps the samples before the first level and after each of the L levels: with
///   CIFAR-10's 3,072 values a picture, 1,000 samples × (348 + 1) = 1,072,128,000 values fit in
///   2³⁰ = 1,073,741,824, and × (349 + 1) do not (× 349 alone would).
#[test]
fn products_of_sizes_are_bounded_at_their_edges() {
    let mnist = RunConfig::preset(DatasetKind::Mnist, Preset::Cpu);
    let cifar = RunConfig::preset(DatasetKind::Cifar10, Preset::Cpu);
    let cases = [
        (
            RunConfig {
                ngf: 512,
                nearest_queries: 128,
                ..mnist.clone()
            },
            RunConfig {
                ngf: 512,
                nearest_queries: config::MAX_NEAREST_QUERIES,
                ..mnist.clone()
            },
            "nearest_queries × ngf",
        ),
        (
            RunConfig {
                inpaint_images: 64,
                inpaint_completions: 64,
                ..mnist.clone()
            },
            RunConfig {
                inpaint_images: 64,
                inpaint_completions: 65,
                ..mnist.clone()
            },
            "inpaint_images × inpaint_completions × ngf",
        ),
        (
            RunConfig {
                inpaint_images: 64,
                inpaint_completions: 64,
                ..mnist.clone()
            },
            RunConfig {
                inpaint_images: 100,
                inpaint_completions: 100,
                ..mnist.clone()
            },
            "inpaint_images × inpaint_completions × ngf",
        ),
        (
            RunConfig {
                n_samples: 1_000,
                num_classes: 348,
                ..cifar.clone()
            },
            RunConfig {
                n_samples: 1_000,
                num_classes: 349,
                ..cifar.clone()
            },
            "n_samples × (num_classes + 1)",
        ),
    ];
    for (fits, past, named) in cases {
        fits.validate()
            .unwrap_or_else(|e| panic!("{named} at its bound: {e}"));
        match past.validate() {
            Err(e) => assert!(e.to_string().contains(named), "{named}: {e}"),
            Ok(()) => panic!("{named} past its bound was accepted"),
        }
    }
}

/// Without `--out`, a run goes to `runs/<data set>-<preset>`, as `--help` says.
#[test]
fn the_default_run_directory_is_named_after_the_data_set_and_the_preset() {
    assert_eq!(
        cli(&[]).out_dir(DatasetKind::Mnist),
        Path::new("runs/mnist-cpu")
    );
    assert_eq!(
        cli(&["--preset", "paper"]).out_dir(DatasetKind::Cifar10),
        Path::new("runs/cifar10-paper")
    );
    assert_eq!(
        cli(&["--out", "elsewhere"]).out_dir(DatasetKind::Mnist),
        Path::new("elsewhere")
    );
}

/// What the pipeline writes is what the library computes from the run's own streams and
/// pictures: rebuilt here from the checkpoint (its moving average, which `--ema` samples with),
/// the test loss is `evaluate_dsm` over the test pictures, all 60 of them (the first 500 at most);
/// the samples and the annealing strip are `generate` on the sampling stream; the inpainting
/// figure completes test pictures picked by the inpainting stream, which then drives the sampler;
/// the neighbours are those of the first samples among the training pictures. Then `--nearest`
/// alone neither trains nor samples the grid, and looks up the neighbours of `nearest_queries`
/// fresh samples of the sampling stream. Everything is compared exactly (the same operations on
/// the same numbers), the figures byte for byte.
#[test]
fn the_pipelines_figures_and_losses_come_from_the_runs_streams_and_pictures() {
    let (tmp, data) = with_mnist("streams", 300); // 240 training pictures, 60 held out
    let out = tmp.path().join("out");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = ["--data", d, "--out", o, "--quiet", "--n-steps-each", "1"];
    let train = [
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--seed",
        "5",
        "--ema",
        "0.9",
    ];
    let results = run_tiny(&cli(
        &[&common[..], &train[..], &["--n-samples", "6"]].concat()
    ))
    .unwrap();
    let config = results.config.clone().unwrap();
    let (train_set, test_set) = run::load_data(DatasetKind::Mnist, &data, config.holdout).unwrap();
    assert_eq!((train_set.len(), test_set.len()), (240, 60));
    let m = TinyNet::new(1, 10, &mut stream_rng(5, Stream::Init));
    assert!(run::load_weights(&out.join("checkpoint.safetensors"), &m.store, true).unwrap());
    assert_eq!(results.sampling_weights.as_deref(), Some("ema"));

    let loss = run::evaluate_dsm(&m, &test_set, &config, 500).unwrap();
    assert_eq!(results.test_dsm_loss, Some(loss), "the test loss");
    assert_eq!(results.test_images, Some(60));

    let (sigmas, annealed) = (config.sigmas(), config.annealed());
    let sample = |n: usize| {
        let mut rng = stream_rng(5, Stream::Sample);
        run::generate(&m, &sigmas, &annealed, n, (1, 28), &mut rng)
    };
    let mine = TempDir::new("streams-mine");
    let same_png = |name: &str, pictures: &Array4<f32>, nrow: usize| {
        let path = mine.path().join(name);
        ncsn::io::save_grid(&path, pictures.view(), nrow).unwrap();
        assert!(
            std::fs::read(&path).unwrap() == std::fs::read(out.join(name)).unwrap(),
            "{name} is not what the run's streams give"
        );
    };
    let g = sample(6);
    same_png("samples.png", &g.samples, 3);
    same_png("annealing.png", &run::annealing_strip(&g.stages, 4), 11);

    let mut rng = stream_rng(5, Stream::Inpaint);
    let picked = rand::seq::index::sample(&mut rng, 60, 4).into_vec();
    let originals = test_set.gather_f32(&picked);
    let done = run::inpaint(
        &m,
        &sigmas,
        &annealed,
        originals.view(),
        4,
        Occlusion::Right,
        &mut rng,
    );
    let grid = run::inpainting_grid(originals.view(), done.view(), Occlusion::Right);
    same_png("inpainting.png", &grid, 6);

    let queries = g.samples.slice_axis(Axis(0), (0..5).into());
    let found = nearest_neighbours(queries, &train_set, 5);
    assert_eq!(results.nearest.as_ref(), Some(&found), "the neighbours");
    let t = &results.timings;
    for (stage, s) in [
        ("train", t.train_s),
        ("test loss", t.test_loss_s),
        ("sample", t.sample_s),
        ("inpaint", t.inpaint_s),
        ("nearest", t.nearest_s),
        ("total", t.total_s),
    ] {
        assert!(s.is_some_and(f64::is_finite), "{stage}: {s:?}");
    }

    // The neighbour search alone: 5 queries (the cpu preset's), though the grid would have 25.
    let checkpoint = std::fs::read(out.join("checkpoint.safetensors")).unwrap();
    let alone = run_tiny(&cli(&[&common[..], &["--nearest"]].concat())).unwrap();
    let queries = sample(5).samples;
    let found = nearest_neighbours(queries.view(), &train_set, 5);
    assert_eq!(alone.nearest.as_ref(), Some(&found), "--nearest alone");
    assert!(std::fs::read(out.join("checkpoint.safetensors")).unwrap() == checkpoint);
    assert_eq!((alone.iterations, alone.resumed_from), (Some(2), Some(0)));
}

/// Sampling from a checkpoint takes how to sample from the command line and how the network was
/// trained from the checkpoint: trained with the `paper` preset and sampled with the default
/// `cpu` one, the run records the cpu preset's inpainting and neighbour settings (4 pictures 4
/// times, 5 queries; paper: 8 × 6 and 8), this command line's `--ema`, and the paper run's
/// training settings, and lays its figures out accordingly.
#[test]
fn sampling_settings_are_the_command_lines_and_training_settings_the_checkpoints() {
    let (tmp, data) = with_mnist("sampling-settings", 24);
    let out = tmp.path().join("out");
    let (d, o) = (data.to_str().unwrap(), out.to_str().unwrap());
    let common = ["--data", d, "--out", o, "--quiet"];
    let paper = [
        "--train",
        "--preset",
        "paper",
        "--steps",
        "2",
        "--batch-size",
        "4",
    ];
    let trained = run_tiny(&cli(&[&common[..], &paper[..], &["--ngf", "4"]].concat())).unwrap();
    let sampling = ["--sample", "--inpaint", "--nearest", "--n-steps-each", "1"];
    let more = ["--n-samples", "3", "--ema", "0.5"];
    let args = cli(&[&common[..], &sampling[..], &more[..]].concat());
    let sampled = run_tiny(&args).unwrap();
    let cli_config = args.config(DatasetKind::Mnist).unwrap();
    let want = RunConfig {
        ema_mu: Some(0.5),
        step_size: cli_config.step_size,
        n_steps_each: 1,
        n_samples: 3,
        strip_rows: cli_config.strip_rows,
        inpaint_images: 4,
        inpaint_completions: 4,
        occlusion: cli_config.occlusion,
        nearest_k: cli_config.nearest_k,
        nearest_queries: 5,
        ..trained.config.unwrap()
    };
    assert_eq!(sampled.config, Some(want));
    // 28-pixel pictures, 2 pixels of padding: the inpainting figure 4 rows of 1 + 1 + 4, the
    // neighbour figure a row for each of the 3 samples (fewer than 5), each with 5 neighbours.
    for (file, across, down) in [("inpainting.png", 6, 4), ("nearest.png", 6, 3)] {
        let picture = image::open(out.join(file)).unwrap();
        assert_eq!(
            (picture.width(), picture.height()),
            (30 * across + 2, 30 * down + 2),
            "{file}"
        );
    }
}

/// A batch as large as the training set is a batch of every picture, and trains; only a larger
/// one is refused.
#[test]
fn a_batch_of_every_training_picture_trains() {
    let (tmp, data) = with_mnist("whole-batch", 24); // 20 training pictures, 4 held out
    let out = tmp.path().join("out");
    let list = ["--train", "--steps", "1", "--batch-size", "20", "--quiet"];
    let args = cli(&[
        &[
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &list[..],
    ]
    .concat());
    assert_eq!(run_tiny(&args).unwrap().iterations, Some(1));
}

/// Each test batch is drawn from the whole test set and dequantised as the training batches are,
/// and `last_test_loss` is the last one taken.
///
/// The score s(x̃, i) = −x̃/σᵢ² with λ(σ) = σ⁴ makes a picture's loss ½‖x‖², whatever its noise
/// (see `evaluate_dsm_averages_over_pictures`), and a learning rate of 10⁻³⁰ keeps the weights
/// (see `each_test_loss_is_a_fresh_draw_and_its_frequency_changes_nothing_else`). A 1 × 6 × 6
/// picture then has expected loss 18·((v + ½)² + 1/12)/256²: W = 17.93 for white (v = 255),
/// K = 9.16·10⁻⁵ for black.
///
/// * Test set [white, black], batches of 2 drawn with replacement, 8 of them: each draws the last
///   picture, the black one, with probability 3/4, so a loss below 10 (at most (W + K)/2 + 0.01)
///   is all but certain, and with the seed fixed, certain. Batches that never drew the last
///   picture would all be W.
/// * Test set [black, black]: every loss is about K. A black picture's loss has standard
///   deviation 1.4·10⁻⁵ (36 pixels of ½U²/256², U uniform), so K/4 is more than 4 standard
///   deviations below any batch's. Undequantised, a black picture is 0 and so is its loss (to
///   f32 rounding, below 10⁻¹⁰).
#[test]
fn each_test_batch_is_drawn_from_the_whole_test_set_and_dequantised() {
    let train_set = tiny_dataset(8, 1, 6, 1);
    let config = RunConfig {
        anneal_power: 4.0,
        lr: 1e-30,
        test_every: 1,
        ..tiny_config(8, 8)
    };
    let test_loss_log = |values: [u8; 2]| -> (Vec<f32>, Option<f32>) {
        let m = picture_loss_net(&config);
        let images = Array4::from_shape_fn((2, 1, 6, 6), |(i, ..)| values[i]);
        let test_set = Dataset::new(images, None).unwrap();
        let report = train_tested(&m, &train_set, &test_set, &config, "test-batches");
        let losses: Vec<f32> = report.log.iter().filter_map(|r| r.test_loss).collect();
        (losses, report.last_test_loss)
    };
    let (losses, last) = test_loss_log([255, 0]);
    assert_eq!(losses.len(), 8);
    assert!(
        losses.iter().any(|&l| l < 10.0),
        "the black picture, last, never drawn: {losses:?}"
    );
    assert_eq!(last, losses.last().copied(), "last_test_loss of {losses:?}");
    let (losses, _) = test_loss_log([0, 0]);
    let black = 18.0 / 3.0 / 65536.0;
    assert!(
        losses.iter().all(|&l| l > black / 4.0 && l < 4.0 * black),
        "black pictures, expected {black} each: {losses:?}"
    );
}

/// Inpainting starts the hidden half from uniform noise on [0, 1), as sampling starts: with T = 0
/// the chains never move, and the right half of each completion is that noise (the left half is
/// the original re-noised). 2 pictures × 3 completions × 18 hidden pixels: a Gaussian start
/// would put one outside [0, 1) with probability 1 − 0.34¹⁰⁸, and the spread check fails for
/// U[0, 1) with probability 2·0.75¹⁰⁸; the seed is fixed in any case.
#[test]
fn inpainting_starts_the_hidden_half_from_uniform_noise() {
    let originals = tiny_dataset(2, 1, 6, 4).to_f32();
    let config = tiny_config(1, 1);
    let annealed = ncsn::sample::AnnealedConfig {
        n_steps_each: 0,
        ..config.annealed()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let out = run::inpaint(
        &net(3),
        &config.sigmas(),
        &annealed,
        originals.view(),
        3,
        Occlusion::Right,
        &mut rng,
    );
    let hidden: Vec<f32> = out
        .slice(ndarray::s![.., .., .., 3..])
        .iter()
        .copied()
        .collect();
    assert_eq!(hidden.len(), 108);
    assert_spread_over_unit_interval(&hidden);
}

/// `results.json` is replaced whole, never written into: a reader that opened the old file
/// before still reads the old results (a rename over the name, not a truncation), and no
/// temporary file is left beside it.
#[test]
fn results_are_replaced_not_written_in_place() {
    let tmp = TempDir::new("results-replaced");
    let path = tmp.path().join("results.json");
    let first = run::Results {
        iterations: Some(1),
        ..Default::default()
    };
    first.save(&path).unwrap();
    let old = std::fs::read(&path).unwrap();
    let mut reader = std::fs::File::open(&path).unwrap();
    run::Results {
        iterations: Some(2),
        ..first
    }
    .save(&path)
    .unwrap();
    let mut seen = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut seen).unwrap();
    assert!(seen == old, "results.json was written in place");
    assert_eq!(
        run::Results::load_or_new(&path).unwrap().iterations,
        Some(2)
    );
    let names = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(names, 1, "a temporary file was left");
}

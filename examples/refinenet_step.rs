//! Times annealed-DSM training steps of CondRefineNetDilated, and optionally annealed Langevin
//! sampling with it, on the CPU or a Vulkan device:
//!
//! ```text
//! cargo run --release --example refinenet_step -- [batch] [steps]          # MNIST model, CPU
//! cargo run --release --example refinenet_step --features vulkan -- 128 5 \
//!     --config cifar10 --device vulkan --langevin 10                       # the GPU measurement
//! ```
//!
//! The criterion bench `benches/refinenet.rs` is the reference measurement on the CPU; this
//! prints the split between forward, backward and the Adam update of each step. With
//! `--langevin T` it also runs annealed Langevin dynamics (Algorithm 1) with T steps at each of
//! the 10 noise levels on a batch of `batch` chains and reports images per second for the
//! paper's full schedule of 10 × 100 steps. `benches/pytorch_refinenet.py` times the same with
//! the reference model in PyTorch.

use clap::{Parser, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use ncsn::nn::{CondRefineNetDilated, RefineNetConfig};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::run::config::{MAX_CHAINS_TIMES_NGF, MAX_N_STEPS_EACH};
use ncsn::run::count_in;
use ncsn::sample::{AnnealedConfig, annealed_langevin, langevin_step};
use ncsn::score::{GeometricSigmas, anneal_dsm_loss_with};
use ncsn::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
// Printing through `ncsn::io::print_stdout`: `| head` ends the output instead of a panic.
use ncsn::outln as println;
use std::time::Instant;

/// The two models of the paper.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Model {
    /// 1 × 28 × 28, ngf 64.
    Mnist,
    /// 3 × 32 × 32, ngf 128.
    Cifar10,
}

impl Model {
    fn config(self) -> RefineNetConfig {
        match self {
            Model::Mnist => RefineNetConfig::mnist(),
            Model::Cifar10 => RefineNetConfig::cifar10(),
        }
    }

    /// GFLOP per image of one forward pass: twice the multiply-adds of the convolutions, as
    /// `benches/pytorch_refinenet.py` counts them on the reference model with forward hooks.
    fn forward_gflop(self) -> f64 {
        match self {
            Model::Mnist => 3.7863,
            Model::Cifar10 => 19.7861,
        }
    }
}

/// The largest batch: 4× the paper's 128, the bound the image runs put on one batch through the
/// CIFAR-10 network (`MAX_CHAINS_TIMES_NGF` at ngf 128). A mistyped batch is a message, not an
/// allocation the size of the memory.
const MAX_BATCH: usize = MAX_CHAINS_TIMES_NGF / 128;
/// The most training steps timed (each keeps its time in memory).
const MAX_STEPS: usize = 1_000_000;

#[derive(Parser)]
#[command(
    about = "Times CondRefineNetDilated training steps and annealed Langevin sampling",
    allow_negative_numbers = true
)]
struct Args {
    /// Batch size (training) and number of chains (sampling).
    #[arg(default_value_t = 128, value_parser = count_in(1, MAX_BATCH))]
    batch: usize,
    /// Training steps to time.
    #[arg(default_value_t = 3, value_parser = count_in(0, MAX_STEPS))]
    steps: usize,
    /// The model.
    #[arg(long, value_enum, default_value_t = Model::Mnist)]
    config: Model,
    /// Where the model and its inputs live: `cpu`, or `vulkan` (build with `--features vulkan`).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Also time annealed Langevin dynamics with this many steps per noise level (0: don't).
    #[arg(long, default_value_t = 0, value_parser = count_in(0, MAX_N_STEPS_EACH))]
    langevin: usize,
    /// At the end, run one more training step and forward pass with the device's per-kernel
    /// timing on, and print where their device time went (Vulkan only).
    #[arg(long)]
    profile: bool,
}

/// What a run asked of a Vulkan device — dispatches, submissions, waiting, per-kernel device
/// time — with stand-ins that report nothing (or refuse `--profile`) in a build without the
/// `vulkan` feature.
#[cfg(feature = "vulkan")]
mod device_report {
    use ncsn::Device;
    use ncsn::backend::vulkan::{Activity, VulkanContext};
    use std::sync::Arc;

    /// On a Vulkan device, what a piece of work asked of it: start before, report after, with
    /// the dispatches and submissions in between and how the wall time divides between the host
    /// (recording, allocating, autograd) and waiting for the device.
    /// And the device memory: the bytes that buffers held at the peak of the work, and before it
    /// (the weights, Adam's moments, the batch).
    pub struct DeviceUse(Option<(Arc<VulkanContext>, Activity, u64)>);

    impl DeviceUse {
        pub fn start(device: &Device) -> Self {
            match device {
                Device::Vulkan(ctx) => {
                    ctx.reset_peak_memory();
                    let held = ctx.memory_use().live;
                    DeviceUse(Some((ctx.clone(), ctx.activity(), held)))
                }
                Device::Cpu => DeviceUse(None),
            }
        }

        pub fn report(&self, wall: f64) -> String {
            let Some((ctx, before, held)) = &self.0 else {
                return String::new();
            };
            let a = ctx.activity() - *before;
            let wait = a.waiting.as_secs_f64();
            let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
            format!(
                "\n    {} dispatches in {} submissions; host {:.3} s, waiting for the device \
                 {wait:.3} s; device memory: peak {:.1} MiB, {:.1} MiB held before",
                a.dispatches,
                a.submissions,
                wall - wait,
                mib(ctx.memory_use().peak),
                mib(*held)
            )
        }
    }

    /// Which variant of the kernels the device runs (see `VulkanContext::preserves_nan`).
    pub fn kernels(device: &Device) -> String {
        match device {
            Device::Vulkan(ctx) if ctx.preserves_nan() => {
                "kernels: NaN-preserving (SignedZeroInfNanPreserve declared)".into()
            }
            Device::Vulkan(_) => "kernels: plain (NCSN_VULKAN_KERNELS=plain, or the device \
                                  lacks shaderSignedZeroInfNanPreserveFloat32)"
                .into(),
            Device::Cpu => String::new(),
        }
    }

    /// Turns the device's per-kernel timing on or off.
    pub fn set_profiling(device: &Device, on: bool) -> ncsn::Result<()> {
        match device {
            Device::Vulkan(ctx) => ctx.set_profiling(on),
            Device::Cpu => Err(ncsn::Error::Invalid(
                "--profile times kernels on a Vulkan device: add --device vulkan".into(),
            )),
        }
    }

    /// Prints the device time per kernel measured since the profile was last taken, with the
    /// memory bandwidth each used at least (the bytes it must read and write over its time).
    /// Each of the three convolution kernels computes one product of the size of the forward
    /// pass's convolutions, `conv_gflop` over the batch (the input gradient skips the first
    /// layer's, a few parts in 10⁴), so their rows also show the rate they ran at.
    pub fn print_profile(device: &Device, what: &str, conv_gflop: f64) -> ncsn::Result<()> {
        let Device::Vulkan(ctx) = device else {
            return Ok(());
        };
        ctx.flush()?;
        let profile = ctx.take_profile();
        let total: f64 = profile.iter().map(|k| k.time.as_secs_f64()).sum();
        let count: u64 = profile.iter().map(|k| k.count).sum();
        println!("device time by kernel, {what}:");
        println!(
            "  {:<24} {:>8} {:>11} {:>7} {:>8} {:>10}",
            "kernel", "count", "time (ms)", "share", "GB/s", "GFLOP/s"
        );
        for k in &profile {
            let t = k.time.as_secs_f64();
            let rate = match k.kernel {
                "conv2d" | "conv2d_input_grad" | "conv2d_weight_grad" => {
                    format!("{:>10.0}", conv_gflop / t)
                }
                _ => String::new(),
            };
            println!(
                "  {:<24} {:>8} {:>11.3} {:>6.1}% {:>8.1} {rate}",
                k.kernel,
                k.count,
                1e3 * t,
                100.0 * t / total,
                k.bandwidth() / 1e9
            );
        }
        println!("  {:<24} {count:>8} {:>11.3}", "total", 1e3 * total);
        Ok(())
    }
}

#[cfg(not(feature = "vulkan"))]
mod device_report {
    use ncsn::Device;

    /// Only the CPU: nothing to report.
    pub struct DeviceUse;

    impl DeviceUse {
        pub fn start(_: &Device) -> Self {
            DeviceUse
        }
        pub fn report(&self, _: f64) -> String {
            String::new()
        }
    }

    pub fn kernels(_: &Device) -> String {
        String::new()
    }

    pub fn set_profiling(_: &Device, _: bool) -> ncsn::Result<()> {
        Err(ncsn::Error::Invalid(
            "--profile times kernels on a Vulkan device: build with --features vulkan and add \
             --device vulkan"
                .into(),
        ))
    }

    pub fn print_profile(_: &Device, _: &str, _: f64) -> ncsn::Result<()> {
        Ok(())
    }
}

use device_report::{DeviceUse, kernels, print_profile, set_profiling};

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> ncsn::Result<()> {
    // Freed activations stay in the process (what the training pipeline does too).
    ncsn::tensor::keep_freed_memory();
    let device = Device::parse(&args.device)?;
    let (batch, config) = (args.batch, args.config.config());
    let shape = [batch, config.channels, config.image_size, config.image_size];
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = CondRefineNetDilated::new(config, &mut rng);
    model.store.to_device(&device);
    let mut adam = Adam::new(model.store.named_params(), AdamConfig::default());
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let forward_gflop = args.config.forward_gflop();
    // Training counts 3× a forward pass: the forward, and the backward's two products per conv.
    let rate = |gflop: f64, secs: f64| {
        format!(
            "({:.0} GFLOP/s at {gflop:.2} GFLOP per image)",
            gflop * batch as f64 / secs
        )
    };
    println!("{:?} model on {device}, batch {batch}", args.config);
    if !device.is_cpu() {
        println!("{}", kernels(&device));
        println!(
            "(on a device, forward and backward are the time to record the kernels; the device \
             finishes them during 'adam + wait', and total is the whole step)"
        );
    }
    if args.profile {
        // Fail now rather than after the timed work.
        set_profiling(&device, false)?;
    }
    let x = Tensor::rand(&shape, &mut rng).to(&device);
    // A batch of noise levels and noise, on the device and synchronised.
    let draw = |rng: &mut ChaCha8Rng| -> ncsn::Result<(Vec<usize>, Tensor)> {
        let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();
        let z = Tensor::randn(&shape, rng).to(&device);
        device.synchronize()?;
        Ok((labels, z))
    };
    // One training step: the loss, and the instants at the start and after the forward pass,
    // the backward pass and Adam (with the loss read back).
    let mut train_step = |labels: &[usize], z: &Tensor| -> (f32, [Instant; 4]) {
        let t0 = Instant::now();
        let loss = anneal_dsm_loss_with(|x, y| model.forward(x, y), &x, labels, z, &sigmas, 2.0);
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        adam.step(&grads);
        let value = loss.item(); // waits for the device
        (value, [t0, t1, t2, Instant::now()])
    };
    let mut totals = Vec::with_capacity(args.steps);
    for step in 0..args.steps {
        let (labels, z) = draw(&mut rng)?;
        let usage = DeviceUse::start(&device);
        let (value, [t0, t1, t2, t3]) = train_step(&labels, &z);
        let total = (t3 - t0).as_secs_f64();
        println!(
            "step {step}: loss {value:.4}  forward {:.3} s  backward {:.3} s  adam + wait {:.3} s  \
             total {total:.3} s  {}{}",
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            rate(3.0 * forward_gflop, total),
            usage.report(total)
        );
        totals.push(total);
    }
    let timed = timed_steps(&totals);
    if let Some((mean, best)) = mean_and_best(timed) {
        println!(
            "training step over {} step(s){}: mean {mean:.4} s, best {best:.4} s {}",
            timed.len(),
            if totals.len() > 1 {
                " after the first"
            } else {
                ""
            },
            rate(3.0 * forward_gflop, mean)
        );
    }
    // Forward passes without a graph (what sampling runs): one to warm up, then `steps` timed,
    // each waiting for the device and reading nothing back, as PyTorch's side times them.
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let forward = || -> ncsn::Result<f64> {
        let t = Instant::now();
        let y = ncsn::no_grad(|| model.forward(&x, &labels));
        device.synchronize()?;
        drop(y);
        Ok(t.elapsed().as_secs_f64())
    };
    forward()?;
    let passes = (0..args.steps)
        .map(|_| forward())
        .collect::<ncsn::Result<Vec<f64>>>()?;
    if let Some((mean, best)) = mean_and_best(&passes) {
        println!(
            "forward over {} pass(es) after a warm-up: mean {mean:.4} s, best {best:.4} s {}",
            passes.len(),
            rate(forward_gflop, mean)
        );
    }
    if args.langevin > 0 {
        // Algorithm 1 with the paper's ε and T = `--langevin` steps per level, from uniform noise.
        let cfg = AnnealedConfig {
            n_steps_each: args.langevin,
            ..AnnealedConfig::paper_images()
        };
        let x0 = Tensor::rand(&shape, &mut rng).to(&device);
        // Warm-up: the update's kernels (Philox noise, the fused step), which no training step
        // runs, are built here rather than inside the timed run.
        langevin_step(&x0, &x0, 1e-6, &mut rng).to_vec();
        device.synchronize()?;
        let steps = sigmas.len() * args.langevin;
        // A bar on the terminal (indicatif draws nothing when stderr is not one, as in the GPU
        // kit's logs), moved once per score evaluation. On a device the host records ahead of
        // the device by at most one command buffer, so the bar runs a little ahead of the work.
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "annealed Langevin [{bar:30}] step {pos}/{len} {elapsed_precise} ETA {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        let usage = DeviceUse::start(&device);
        let t = Instant::now();
        let out = annealed_langevin(
            |x, i| {
                bar.inc(1);
                model.forward(x, &vec![i; batch])
            },
            &x0,
            &sigmas,
            &cfg,
            &mut rng,
        );
        let finite = out.x.to_vec().iter().all(|v| v.is_finite()); // waits for the device
        let s = t.elapsed().as_secs_f64();
        bar.finish_and_clear();
        println!(
            "annealed Langevin: {steps} steps of {batch} chains in {s:.3} s ({:.2} ms per step; \
             all finite: {finite}) → {:.2} images/s for the full 1000-step schedule{}",
            1e3 * s / steps as f64,
            images_per_second_full_schedule(batch, s, steps),
            usage.report(s)
        );
    }
    if args.profile {
        let (labels, z) = draw(&mut rng)?;
        set_profiling(&device, true)?;
        train_step(&labels, &z);
        let conv_gflop = forward_gflop * batch as f64;
        print_profile(&device, "one training step", conv_gflop)?;
        ncsn::no_grad(|| model.forward(&x, &labels)).to_vec();
        print_profile(&device, "one forward pass without a graph", conv_gflop)?;
        set_profiling(&device, false)?;
    }
    // Peak resident memory of the process (Linux).
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
    Ok(())
}

/// The mean and the least of some timings, if there are any.
fn mean_and_best(seconds: &[f64]) -> Option<(f64, f64)> {
    let best = seconds.iter().copied().reduce(f64::min)?;
    Some((seconds.iter().sum::<f64>() / seconds.len() as f64, best))
}

/// The step times the summary averages: all but the first when there are others, since the first
/// also builds the kernels' pipelines (on a device) and warms the allocator.
fn timed_steps(totals: &[f64]) -> &[f64] {
    if totals.len() > 1 {
        &totals[1..]
    } else {
        totals
    }
}

/// Images per second for the paper's full schedule, 10 levels × 100 steps, from a run of `steps`
/// steps of `batch` chains that took `seconds`.
fn images_per_second_full_schedule(batch: usize, seconds: f64, steps: usize) -> f64 {
    let full = seconds * 1000.0 / steps as f64;
    batch as f64 / full
}

// `cargo test` runs these (`test = true` for this example in Cargo.toml).
#[cfg(test)]
mod tests {
    use super::*;

    /// The summary's mean and best of some step times (exact: small dyadic fractions).
    #[test]
    fn mean_and_best_of_timings() {
        assert_eq!(mean_and_best(&[0.5, 0.25, 1.5, 0.75]), Some((0.75, 0.25)));
        assert_eq!(mean_and_best(&[2.0]), Some((2.0, 2.0)));
        assert_eq!(mean_and_best(&[]), None);
    }

    /// The summary leaves out the first step when there are others, and the Langevin rate is
    /// scaled to 1000 steps: 100 steps of 100 chains in 10 s make 100 s for the full schedule,
    /// one image per second (exact in f64).
    #[test]
    fn the_summary_skips_the_warm_up_and_scales_to_the_full_schedule() {
        assert_eq!(timed_steps(&[5.0, 1.0, 2.0]), [1.0, 2.0]);
        assert_eq!(timed_steps(&[5.0]), [5.0]);
        assert!(timed_steps(&[]).is_empty());
        assert_eq!(images_per_second_full_schedule(100, 10.0, 100), 1.0);
        assert_eq!(images_per_second_full_schedule(128, 2.0, 10), 0.64);
    }

    /// The batch is at least 1 and at most 4× the paper's 128; 0 training steps are allowed (the
    /// forward passes alone).
    #[test]
    fn batch_and_steps_bounds() {
        assert_eq!(MAX_BATCH, 512);
        let parse = |a: &[&str]| {
            Args::try_parse_from(std::iter::once("refinenet_step").chain(a.iter().copied()))
        };
        let args = parse(&["512", "0"]).unwrap();
        assert_eq!((args.batch, args.steps), (512, 0));
        for bad in [["0", "3"], ["513", "3"]] {
            assert!(parse(&bad).is_err(), "batch and steps {bad:?} accepted");
        }
    }
}

//! Times annealed-DSM training steps of the MNIST CondRefineNetDilated (batch 128 by default):
//! `cargo run --release --example refinenet_step -- [batch] [steps]`.
//! The criterion bench `benches/refinenet.rs` is the reference measurement; this prints the split
//! between forward, backward and the Adam update of each step.

use ncsn::Tensor;
use ncsn::nn::{CondRefineNetDilated, RefineNetConfig};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::score::{GeometricSigmas, anneal_dsm_loss_with};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("a number"))
        .collect();
    // Freed activations stay in the process (what the training pipeline does too).
    ncsn::tensor::keep_freed_memory();
    let batch = args.first().copied().unwrap_or(128);
    let steps = args.get(1).copied().unwrap_or(3);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = CondRefineNetDilated::new(RefineNetConfig::mnist(), &mut rng);
    let mut adam = Adam::new(model.store.named_params(), AdamConfig::default());
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let x = Tensor::rand(&[batch, 1, 28, 28], &mut rng);
    for step in 0..steps {
        let labels: Vec<usize> = (0..batch).map(|_| rng.random_range(0..10)).collect();
        let z = Tensor::randn(&[batch, 1, 28, 28], &mut rng);
        let t0 = Instant::now();
        let loss = anneal_dsm_loss_with(|x, y| model.forward(x, y), &x, &labels, &z, &sigmas, 2.0);
        let t1 = Instant::now();
        let grads = loss.backward();
        let t2 = Instant::now();
        adam.step(&grads);
        let t3 = Instant::now();
        let total = (t3 - t0).as_secs_f64();
        println!(
            "step {step}: loss {:.4}  forward {:.3} s  backward {:.3} s  adam {:.3} s  total {total:.3} s  \
             ({:.0} GFLOP/s at 11.36 GFLOP per image)",
            loss.item(),
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            (t3 - t2).as_secs_f64(),
            11.36 * batch as f64 / total
        );
    }
    // Forward passes without a graph (what sampling runs), 3.79 GFLOP per image.
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    for i in 0..2 {
        let t = Instant::now();
        ncsn::no_grad(|| model.forward(&x, &labels));
        let s = t.elapsed().as_secs_f64();
        println!(
            "forward {i}: {s:.3} s ({:.0} GFLOP/s at 3.79 GFLOP per image)",
            3.786 * batch as f64 / s
        );
    }
    // Peak resident memory of the process (Linux).
    if let Ok(status) = std::fs::read_to_string("/proc/self/status")
        && let Some(line) = status.lines().find(|l| l.starts_with("VmHWM"))
    {
        println!("peak RSS: {}", line.trim_start_matches("VmHWM:").trim());
    }
}

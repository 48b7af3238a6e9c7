//! One annealed-DSM training step (forward, backward, Adam) of the MNIST CondRefineNetDilated at
//! batch 128, and one forward pass without a graph (what annealed Langevin sampling runs).
//!
//! `cargo bench --bench refinenet`; the PyTorch counterpart is benches/pytorch_refinenet.py.
//! A step costs 11.36 GFLOP per image (2 × the convolutions' multiply-adds, × 3 for forward and
//! backward), a forward pass 3.79 GFLOP per image; criterion reports images per second, so
//! GFLOP/s = images/s × 11.36 (or × 3.79).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ncsn::Tensor;
use ncsn::nn::{CondRefineNetDilated, RefineNetConfig};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::score::{GeometricSigmas, anneal_dsm_loss_with};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

const BATCH: usize = 128;

fn refinenet(c: &mut Criterion) {
    ncsn::tensor::keep_freed_memory();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = CondRefineNetDilated::new(RefineNetConfig::mnist(), &mut rng);
    let mut adam = Adam::new(model.store.named_params(), AdamConfig::default());
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let x = Tensor::rand(&[BATCH, 1, 28, 28], &mut rng);

    let mut group = c.benchmark_group("refinenet_mnist");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(60))
        .throughput(Throughput::Elements(BATCH as u64));

    // ANCHOR: train_step
    group.bench_function("train_step_b128", |b| {
        b.iter(|| {
            let labels: Vec<usize> = (0..BATCH).map(|_| rng.random_range(0..10)).collect();
            let z = Tensor::randn(&[BATCH, 1, 28, 28], &mut rng);
            let loss =
                anneal_dsm_loss_with(|x, y| model.forward(x, y), &x, &labels, &z, &sigmas, 2.0);
            adam.step(&loss.backward());
            loss.item()
        })
    });
    // ANCHOR_END: train_step

    group.bench_function("forward_b128", |b| {
        let labels: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
        b.iter(|| ncsn::no_grad(|| model.forward(&x, &labels)))
    });
    group.finish();
}

criterion_group!(benches, refinenet);
criterion_main!(benches);

//! The cost of the tensor layer itself: per-op overhead, a small training step, and matrix
//! products through `Tensor::matmul` against `matrixmultiply::sgemm` called directly on the same
//! shapes (the bar: at least 80% of the raw GEMM's throughput).
//!
//! The crate builds matrixmultiply without its `threading` feature (the kernels call a
//! single-threaded sgemm from rayon tasks, which compose without oversubscribing the cores), so the
//! raw sgemm in this file runs on one thread. The two-thread reference is
//! `cargo run --release --manifest-path benches/sgemm-baseline/Cargo.toml`, a separate package
//! with matrixmultiply's own threads.
//!
//! `cargo bench --bench core`; criterion prints the time per iteration and, for the GEMMs, the
//! throughput in elements per second where one element is one floating-point operation
//! (2·m·k·n per product), i.e. GFLOP/s.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ncsn::nn::{Activation, Mlp, Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::{Tensor, grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

fn op_overhead(c: &mut Criterion) {
    let mut g = c.benchmark_group("op_overhead");
    let a = Tensor::scalar(1.0);
    let b = Tensor::scalar(2.0);
    g.bench_function("add_scalar_tensors", |bench| {
        bench.iter(|| black_box(a.add(&b)))
    });
    let ag = a.detach().requires_grad_();
    g.bench_function("add_recorded", |bench| bench.iter(|| black_box(ag.add(&b))));
    g.bench_function("grad_of_tiny_graph", |bench| {
        bench.iter(|| {
            let y = ag.mul(&ag).exp().sum_all();
            black_box(grad(&[&y], &[&ag], false))
        })
    });
    let x = Tensor::ones(&[128, 128]);
    let y = Tensor::ones(&[128]);
    g.bench_function("add_broadcast_128x128", |bench| {
        bench.iter(|| black_box(x.add(&y)))
    });
    g.bench_function("softplus_128x128", |bench| {
        bench.iter(|| black_box(x.softplus()))
    });
    g.finish();

    // One step of the toy score network: forward, backward, Adam.
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let store = ParamStore::new();
    let net = Mlp::new(
        &store.root(),
        &[2, 128, 128, 2],
        Activation::Softplus,
        &mut rng,
    );
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let x = Tensor::randn(&[128, 2], &mut rng);
    c.bench_function("mlp_2_128_128_2_train_step_batch128", |bench| {
        bench.iter(|| {
            let loss = net.forward(&x).square().mean_all();
            opt.step(&loss.backward());
        })
    });
}

fn matmul(c: &mut Criterion) {
    let mut g = c.benchmark_group("matmul");
    g.sample_size(20);
    // (m, k, n): a square product, the toy MLP's hidden layer at batch 128, and a convolution of
    // the MNIST RefineNet as im2col GEMM: 64 output channels × (64·3·3) × 28·28 pixels.
    for (m, k, n) in [(1024, 1024, 1024), (128, 128, 128), (64, 576, 784)] {
        let flops = 2 * m * k * n;
        g.throughput(Throughput::Elements(flops as u64));
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let a = Tensor::randn(&[m, k], &mut rng);
        let b = Tensor::randn(&[k, n], &mut rng);
        let id = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("tensor", &id), |bench| {
            bench.iter(|| black_box(a.matmul(&b)))
        });
        let (av, bv) = (a.to_vec(), b.to_vec());
        let mut cv = vec![0f32; m * n];
        g.bench_function(BenchmarkId::new("matrixmultiply_1_thread", &id), |bench| {
            bench.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    av.as_ptr(),
                    k as isize,
                    1,
                    bv.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cv.as_mut_ptr(),
                    n as isize,
                    1,
                );
                black_box(&cv);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, op_overhead, matmul);
criterion_main!(benches);

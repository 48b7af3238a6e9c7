//! SSM-VR training of the toy score network, as in the reference's `runners/toy_runner.py`:
//! MLP 2-128-128-2 with softplus, Adam (lr 1e-3), batch 128 from the paper's mixture,
//! `sliced_score_estimation_vr` with one particle.
//!
//! `toy_ssm/train_step` times one full step (sample, loss with ∇ₓ through create_graph, backward
//! through the double graph, Adam) on the whole batch in one graph; `toy_ssm/train_step_sharded`
//! the same step on two shards of 64 rows evaluated in parallel (`sharded_backward`), which is
//! what `toy_mixture` runs. Multiply by 10,000 for the target (≤ 3 s).
//! `toy_ssm/train_1000_steps` times a run of 1000 sharded steps directly.

use criterion::{Criterion, criterion_group, criterion_main};
use ncsn::nn::{Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::score::{ScoreMlp, sliced_score_matching, ssm_vr_loss, tensor_from_array2};
use ncsn::toy::{GaussianMixture, ToyDistribution};
use ncsn::{Tensor, sharded_backward};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

struct Trainer {
    net: ScoreMlp,
    opt: Adam,
    p: GaussianMixture,
    rng: ChaCha8Rng,
}

impl Trainer {
    fn new() -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let store = ParamStore::new();
        let net = ScoreMlp::new(&store.root(), 2, 128, &mut rng);
        let opt = Adam::new(store.named_params(), AdamConfig::default());
        Trainer {
            net,
            opt,
            p: GaussianMixture::paper(),
            rng,
        }
    }

    /// One step on the whole batch, in one graph.
    fn step(&mut self) -> f32 {
        let x = tensor_from_array2(self.p.sample(128, &mut self.rng));
        let net = &self.net;
        let loss = ssm_vr_loss(|x| net.forward(x), &x, 1, &mut self.rng).loss;
        self.opt.step(&loss.backward());
        loss.item()
    }

    /// The same step on two shards of 64 rows, one per core (what `toy_mixture` runs).
    fn step_sharded(&mut self) -> f32 {
        let x = tensor_from_array2(self.p.sample(128, &mut self.rng));
        let v = Tensor::randn(x.shape(), &mut self.rng);
        let net = &self.net;
        let (loss, grads) = sharded_backward(128, 2, |r| {
            let rows = |t: &Tensor| t.narrow(0, r.start, r.len());
            sliced_score_matching(|x| net.forward(x), &rows(&x), &rows(&v), true).loss
        });
        self.opt.step(&grads);
        loss
    }
}

fn bench(c: &mut Criterion) {
    // As `toy_mixture` does: the allocator keeps the pages of each step's freed graph for the
    // next step instead of returning them to the kernel (see `keep_freed_memory`).
    ncsn::tensor::keep_freed_memory();
    let mut g = c.benchmark_group("toy_ssm");
    g.measurement_time(Duration::from_secs(10));
    let mut t = Trainer::new();
    g.bench_function("train_step", |b| b.iter(|| t.step()));
    g.bench_function("train_step_sharded", |b| b.iter(|| t.step_sharded()));
    g.sample_size(10);
    g.bench_function("train_1000_steps", |b| {
        b.iter(|| {
            let mut t = Trainer::new();
            for _ in 0..1000 {
                t.step_sharded();
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! A training loop must not leak graph nodes from one step to the next. Alone in its test binary,
//! so that the process-wide count of live tensors is not disturbed by other tests.

use ncsn::nn::{Activation, Mlp, Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::tensor::live_tensors;
use ncsn::{Tensor, grad};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A training loop must not grow the number of live tensors from step to step: each step's
/// graph, including the create_graph graph of a ∇ₓ inside the loss, is freed when the step ends.
#[test]
fn training_loop_does_not_leak() {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let store = ParamStore::new();
    let net = Mlp::new(
        &store.root(),
        &[2, 16, 16, 2],
        Activation::Softplus,
        &mut rng,
    );
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let mut step = |rng: &mut ChaCha8Rng| {
        let x = Tensor::randn(&[8, 2], rng).requires_grad_();
        let s = net.forward(&x);
        // A sliced-score-matching-like loss: it differentiates ∇ₓ(vᵀs) with respect to θ.
        let v = Tensor::randn(&[8, 2], rng);
        let gx = grad(&[&s.mul(&v).sum_all()], &[&x], true).remove(0);
        let loss = gx
            .mul(&v)
            .sum_all()
            .add(&s.square().sum_all().mul_scalar(0.5));
        opt.step(&loss.backward());
    };
    step(&mut rng);
    let baseline = live_tensors();
    // The count sees a step's graph while it is held: it is not a counter that never moves.
    {
        let x = Tensor::randn(&[8, 2], &mut rng).requires_grad_();
        let held = net.forward(&x).square().sum_all();
        assert!(
            live_tensors() > baseline + 3,
            "{} live tensors with a graph held, {baseline} without",
            live_tensors()
        );
        drop(held);
    }
    assert_eq!(live_tensors(), baseline, "the held graph was not freed");
    for _ in 0..50 {
        step(&mut rng);
    }
    // This is the only test in its binary, so no other thread creates tensors meanwhile: after
    // each step exactly the tensors that outlive a step remain (parameters, optimizer-held
    // handles), and the count must return to the same number.
    let after = live_tensors();
    assert_eq!(
        after, baseline,
        "live tensors grew from {baseline} to {after} over 50 steps"
    );
}

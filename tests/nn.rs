//! Parameter names, PyTorch's initialisation bounds, and determinism.

use ncsn::Tensor;
use ncsn::nn::{Activation, Linear, Mlp, Module, ParamStore};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[test]
fn mlp_names_match_nn_sequential() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let net = Mlp::new(
        &store.root().sub("score"),
        &[2, 128, 128, 2],
        Activation::Softplus,
        &mut rng,
    );
    let names: Vec<String> = store.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "score.0.weight",
            "score.0.bias",
            "score.2.weight",
            "score.2.bias",
            "score.4.weight",
            "score.4.bias"
        ]
    );
    // (2·128 + 128) + (128·128 + 128) + (128·2 + 2), as PyTorch counts the same nn.Sequential.
    assert_eq!(store.num_scalars(), 17_154);
    assert_eq!(net.forward(&Tensor::zeros(&[5, 2])).shape(), &[5, 2]);
}

#[test]
fn linear_init_within_pytorch_bounds_and_spread() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let l = Linear::new(&store.root(), 64, 256, &mut rng);
    let bound = 1.0 / 8.0; // 1/√fan_in
    let w = l.weight.to_vec();
    assert!(w.iter().all(|v| v.abs() <= bound));
    // U(−b, b) has variance b²/3; with 16,384 draws the sample variance is within 5% of it
    // (its relative standard error is √(0.8/n) ≈ 0.7%, so 5% is 7 standard errors).
    let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.05,
        "variance {var}"
    );
    // The bias is drawn from the same bound, not left at zero: 256 draws of U(−b, b) all stay
    // within 0.9·b with probability 0.9²⁵⁶ ≈ 2e-12.
    let b = l.bias.as_ref().unwrap().to_vec();
    assert!(b.iter().all(|v| v.abs() <= bound));
    assert!(b.iter().any(|v| v.abs() > 0.9 * bound), "{b:?}");
}

#[test]
fn same_seed_same_bits() {
    let build = |seed| {
        let store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Mlp::new(&store.root(), &[3, 7, 2], Activation::Elu, &mut rng);
        let x = Tensor::randn(&[4, 3], &mut rng);
        let bits: Vec<u32> = store
            .params()
            .iter()
            .flat_map(|p| p.to_vec())
            .chain(x.to_vec())
            .map(f32::to_bits)
            .collect();
        bits
    };
    assert_eq!(build(7), build(7));
    assert_ne!(build(7), build(8));
}

#[test]
#[should_panic(expected = "registered twice")]
fn duplicate_names_are_a_bug() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    Linear::new(&store.root().sub("fc"), 2, 2, &mut rng);
    Linear::new(&store.root().sub("fc"), 2, 2, &mut rng);
}

/// Training is deterministic too: the kernels split work across threads by output blocks (rayon
/// chunks, matrixmultiply's tiles) and never reorder a sum, so two runs from the same seed agree
/// to the bit, even on arrays large enough to go parallel.
#[test]
fn same_seed_same_training_run() {
    use ncsn::optim::{Adam, AdamConfig};
    let run = || {
        let store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let net = Mlp::new(
            &store.root(),
            &[8, 512, 512, 8],
            Activation::Softplus,
            &mut rng,
        );
        let mut opt = Adam::new(store.named_params(), AdamConfig::default());
        for _ in 0..5 {
            let x = Tensor::randn(&[256, 8], &mut rng); // 256·512 = 131,072 > the parallel threshold
            let loss = net.forward(&x).sub(&x).square().mean_all();
            opt.step(&loss.backward());
        }
        store
            .params()
            .iter()
            .flat_map(|p| p.to_vec())
            .map(f32::to_bits)
            .collect::<Vec<u32>>()
    };
    assert_eq!(run(), run());
}

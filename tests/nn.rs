//! Parameter names, PyTorch's initialisation bounds, and determinism.

use ncsn::Tensor;
use ncsn::nn::{Activation, Conv2d, Linear, Mlp, Module, ParamStore};
use ncsn::tensor::Conv2dConfig;
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

/// `nn.Conv2d`'s default initialisation, with fan_in = in·k·k on a layer whose in and out widths
/// differ (so that fan_in and fan_out tell apart: 16·9 = 144 against 64·9 = 576): weights and
/// bias within 1/√144 = 1/12; the 9,216 weights' variance within 5 % of b²/3 (its relative
/// standard error is √(0.8/n) ≈ 0.9 %, so 5 % is 5 standard errors; fan_out would give a quarter
/// of it); and the bias drawn from the same bound, not left at zero: 64 draws of U(−b, b) all
/// within 0.75·b has probability 0.75⁶⁴ ≈ 10⁻⁸ (and the seed is fixed).
#[test]
fn conv2d_init_within_pytorch_bounds_and_spread() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let conv = Conv2d::new(
        &store.root(),
        16,
        64,
        3,
        Conv2dConfig::new(1, 1, 1),
        true,
        &mut rng,
    );
    let bound = 1.0 / 12.0;
    let w = conv.weight.to_vec();
    assert_eq!(w.len(), 64 * 16 * 9);
    assert!(w.iter().all(|v| v.abs() <= bound));
    let var = w.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    assert!(
        (var / (bound * bound / 3.0) - 1.0).abs() < 0.05,
        "variance {var}"
    );
    let b = conv.bias.as_ref().expect("a bias").to_vec();
    assert_eq!(b.len(), 64);
    assert!(b.iter().all(|v| v.abs() <= bound), "{b:?}");
    assert!(b.iter().any(|v| v.abs() > 0.75 * bound), "{b:?}");
}

/// Each activation against its closed form, between the layers and not after the last: an MLP
/// 1 → 1 → 1 with weights set by hand computes 3·act(2x − 1) + 0.5, here on inputs that put
/// 2x − 1 on both sides of 0 (−5 … 5). ELU has α = 1 (`nn.ELU()`'s default): α(eᶻ − 1) below 0.
/// The expected values are worked out in f64; the network's f32 arithmetic errs by a few ulps of
/// values below 16 in size, so 1e-5·(1 + |want|) suffices, while another α, an activation after
/// the last layer too (act(3·act(2x − 1) + 0.5)) or a missing one moves some output by 0.3 or more.
#[test]
fn mlp_activations_match_their_closed_forms_between_layers_only() {
    type ClosedForm = fn(f64) -> f64;
    let forms: [(Activation, ClosedForm); 5] = [
        (Activation::Softplus, |z| z.exp().ln_1p()),
        (Activation::Elu, |z| if z > 0.0 { z } else { z.exp_m1() }),
        (Activation::Relu, |z| z.max(0.0)),
        (Activation::Tanh, f64::tanh),
        (Activation::Sigmoid, |z| 1.0 / (1.0 + (-z).exp())),
    ];
    let xs = [-2.0f32, -0.5, 0.25, 0.7, 3.0];
    for (activation, form) in forms {
        let store = ParamStore::new();
        let net = Mlp::new(
            &store.root(),
            &[1, 1, 1],
            activation,
            &mut ChaCha8Rng::seed_from_u64(5),
        );
        for (layer, (w, b)) in net.layers.iter().zip([(2.0f32, -1.0f32), (3.0, 0.5)]) {
            layer
                .weight
                .set_data(Tensor::from_vec(vec![w], &[1, 1]).storage());
            let bias = layer.bias.as_ref().expect("a bias");
            bias.set_data(Tensor::from_vec(vec![b], &[1]).storage());
        }
        let out = net
            .forward(&Tensor::from_vec(xs.to_vec(), &[5, 1]))
            .to_vec();
        for (&x, &got) in xs.iter().zip(&out) {
            let want = 3.0 * form(2.0 * x as f64 - 1.0) + 0.5;
            assert!(
                (got as f64 - want).abs() <= 1e-5 * (1.0 + want.abs()),
                "{activation:?} at x = {x}: {got} vs {want}"
            );
        }
    }
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

/// PyTorch's default initialisation draws weights and biases from U(−b, b), symmetric about 0.
/// The bound and spread tests above look at |w| and w², which U(0, b) passes as well (its w² has
/// the same mean b²/3); the mean tells them apart. The mean of n draws of U(−b, b) has standard
/// error b/√(3n), and each must lie within 5 of them (a 6·10⁻⁷ chance of failing, and the seed is
/// fixed), where U(0, b) puts it at b/2: 110 standard errors for the 16,384 weights of
/// `Linear(64, 256)`, 14 for its 256 biases, and about as many for the convolution's.
#[test]
fn initial_weights_and_biases_are_centred_on_zero() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let linear = Linear::new(&store.root().sub("fc"), 64, 256, &mut rng);
    let conv = Conv2d::new(
        &store.root().sub("conv"),
        16,
        64,
        3,
        Conv2dConfig::new(1, 1, 1),
        true,
        &mut rng,
    );
    let tensors = [
        ("fc.weight", &linear.weight, 1.0 / 8.0),
        ("fc.bias", linear.bias.as_ref().expect("a bias"), 1.0 / 8.0),
        ("conv.weight", &conv.weight, 1.0 / 12.0),
        ("conv.bias", conv.bias.as_ref().expect("a bias"), 1.0 / 12.0),
    ];
    for (name, t, bound) in tensors {
        let v = t.to_vec();
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let se = bound / (3.0 * n).sqrt();
        assert!(
            mean.abs() <= 5.0 * se,
            "{name}: mean {mean} of {n} draws of U(±{bound}), standard error {se}"
        );
    }
}

/// `Linear::with_bias(…, false)` is `nn.Linear(in, out, bias=False)`: it registers only
/// `weight` and computes x·Wᵀ, with nothing added.
#[test]
fn a_linear_layer_without_bias_has_none() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let l = Linear::with_bias(&store.root().sub("fc"), 2, 3, false, &mut rng);
    assert!(l.bias.is_none(), "a bias was made");
    let names: Vec<String> = store.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["fc.weight"]);
    let w = [1.0f32, -2.0, 0.5, 3.0, 0.25, -1.0];
    l.weight
        .set_data(Tensor::from_vec(w.to_vec(), &[3, 2]).storage());
    let out = l
        .forward(&Tensor::from_vec(vec![2.0, 1.0], &[1, 2]))
        .to_vec();
    // x·Wᵀ with x = (2, 1): exact in f32.
    assert_eq!(out, [0.0, 4.0, -0.5]);
}

/// `ParamStore::get` looks a parameter up by its whole name, as `state_dict()[name]` does: the
/// name of a layer, or the beginning of a parameter's name, finds nothing.
#[test]
fn parameters_are_found_by_their_whole_name_only() {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let l = Linear::new(&store.root().sub("fc"), 2, 3, &mut rng);
    for name in ["fc", "fc.", "fc.w", "weight", "fc.weight.x"] {
        assert!(store.get(name).is_none(), "`{name}` found a parameter");
    }
    let w = store.get("fc.weight").expect("fc.weight");
    let b = store.get("fc.bias").expect("fc.bias");
    assert_eq!(w.to_vec(), l.weight.to_vec());
    assert_eq!(b.to_vec(), l.bias.as_ref().expect("a bias").to_vec());
}

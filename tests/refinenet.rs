//! CondRefineNetDilated against the reference: parameter names, shapes, order and counts (from the
//! reference's `state_dict()`, committed as text fixtures), initialisation, output shapes, outputs
//! and gradients of a small model against PyTorch, CondInstanceNorm++ against a hand-computed case,
//! and one annealed-DSM training step.
//!
//! The fixtures were made with PyTorch from the reference source (see
//! tests/fixtures/make_refinenet_fixtures.py).

mod common;

use ncsn::Tensor;
use ncsn::io::Checkpoint;
use ncsn::nn::{CondInstanceNorm2dPlus, CondRefineNetDilated, ParamStore, RefineNetConfig};
use ncsn::optim::{Adam, AdamConfig};
use ncsn::score::{GeometricSigmas, anneal_dsm_loss_with};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `name shape` lines, shape as `AxBxC`, as dumped from the reference's `state_dict()`.
fn reference_state_dict(file: &str) -> Vec<(String, Vec<usize>)> {
    std::fs::read_to_string(fixture(file))
        .unwrap()
        .lines()
        .map(|l| {
            let (name, shape) = l.split_once(' ').unwrap();
            (
                name.to_string(),
                shape.split('x').map(|d| d.parse().unwrap()).collect(),
            )
        })
        .collect()
}

fn check_against_reference(config: RefineNetConfig, file: &str, count: usize) {
    let model = CondRefineNetDilated::new(config, &mut ChaCha8Rng::seed_from_u64(0));
    let ours = common::names_and_shapes(&model.store);
    let reference = reference_state_dict(file);
    assert_eq!(ours.len(), 173);
    assert_eq!(reference.len(), 173);
    // Same names, same shapes, same order as the reference's state_dict().
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        assert_eq!(a, b, "parameter {i}");
    }
    assert_eq!(model.store.num_scalars(), count);
}

#[test]
fn mnist_parameters_match_reference() {
    check_against_reference(
        RefineNetConfig::mnist(),
        "refinenet_mnist_state_dict.txt",
        7_638_657,
    );
}

#[test]
fn cifar10_parameters_match_reference() {
    check_against_reference(
        RefineNetConfig::cifar10(),
        "refinenet_cifar10_state_dict.txt",
        30_117_635,
    );
}

#[test]
fn initialisation_follows_pytorch_defaults() {
    let model =
        CondRefineNetDilated::new(RefineNetConfig::mnist(), &mut ChaCha8Rng::seed_from_u64(1));
    let mut gammas = Vec::new();
    for (name, t) in model.store.named_params() {
        let v = t.to_vec();
        if name.ends_with("embed.weight") {
            // γ and α ~ N(1, 0.02), β = 0: columns [0, 2C) and [2C, 3C).
            let c3 = t.shape()[1];
            for row in v.chunks(c3) {
                gammas.extend_from_slice(&row[..2 * c3 / 3]);
                assert!(row[2 * c3 / 3..].iter().all(|&b| b == 0.0), "{name}: β ≠ 0");
            }
        } else {
            // Conv weight and bias: U(±1/√fan_in), fan_in = in·k·k.
            let fan_in: usize = if name.ends_with("weight") {
                t.shape()[1..].iter().product()
            } else {
                let w = model.store.get(&name.replace("bias", "weight")).unwrap();
                w.shape()[1..].iter().product()
            };
            let bound = 1.0 / (fan_in as f32).sqrt();
            assert!(
                v.iter().all(|x| x.abs() <= bound),
                "{name}: outside ±{bound}"
            );
            if v.len() >= 10_000 {
                // Variance of U(±b) is b²/3; with ≥ 10⁴ draws the sample variance is within 3 %
                // (its relative standard error is √(0.8/n) ≤ 0.9 %).
                let var = v.iter().map(|x| x * x).sum::<f32>() / v.len() as f32;
                let want = bound * bound / 3.0;
                assert!(
                    (var / want - 1.0).abs() < 0.03,
                    "{name}: variance {var} vs {want}"
                );
            }
        }
    }
    // n draws of N(1, 0.02) (144,640 for the MNIST model): the mean within 7 standard errors,
    // 7·0.02/√n, and the standard deviation within 7 of its relative standard errors, 7/√(2n).
    // Summed in f64, so that round-off is far below either.
    let n = gammas.len() as f64;
    assert_eq!(
        gammas.len(),
        144_640,
        "γ and α of the 71 CondInstanceNorm++ layers"
    );
    let mean = gammas.iter().map(|&g| g as f64).sum::<f64>() / n;
    let std = (gammas
        .iter()
        .map(|&g| (g as f64 - mean).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    let (mean_tol, std_tol) = (7.0 * 0.02 / n.sqrt(), 7.0 / (2.0 * n).sqrt());
    assert!(
        (mean - 1.0).abs() < mean_tol,
        "γ, α mean {mean} (tolerance {mean_tol})"
    );
    assert!(
        (std / 0.02 - 1.0).abs() < std_tol,
        "γ, α std {std} (relative tolerance {std_tol})"
    );
}

#[test]
fn output_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for config in [RefineNetConfig::mnist(), RefineNetConfig::cifar10()] {
        let model = CondRefineNetDilated::new(config, &mut rng);
        let s = config.image_size;
        let x = Tensor::rand(&[2, config.channels, s, s], &mut rng);
        let y = ncsn::no_grad(|| model.forward(&x, &[0, 9]));
        assert_eq!(y.shape(), &[2, config.channels, s, s]);
        assert!(y.to_vec().iter().all(|v| v.is_finite()));
    }
}

/// Loads a PyTorch-made fixture: parameters of an ngf = 4 model, an input, labels, a cotangent r,
/// the reference output and the gradients of Σ out·r with respect to the input and parameters.
fn compare_with_pytorch(config: RefineNetConfig, file: &str) {
    let ckpt = Checkpoint::load(fixture(file)).unwrap();
    let store = ParamStore::new();
    let model = CondRefineNetDilated::with_store(&store, config, &mut ChaCha8Rng::seed_from_u64(3));
    let params: ncsn::io::Tensors = ckpt
        .tensors
        .iter()
        .filter(|(k, _)| {
            !["input.", "output.", "grad."]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    store.load_state_dict(&params).unwrap();
    let get = |k: &str| Tensor::from_array(ckpt.tensors[k].clone());
    let x = get("input.x").requires_grad_();
    let labels: Vec<usize> = get("input.labels")
        .to_vec()
        .iter()
        .map(|&v| v as usize)
        .collect();
    let out = model.forward(&x, &labels);

    // Tolerance. The reference ran in f32 too, but with other summation orders (oneDNN's
    // convolutions, its own reductions). Through ~60 layers of conv + normalisation the rounding
    // difference grows; on these fixtures the worst case is 4e-5 of the tensor's largest entry
    // (a bias gradient: a sum over every pixel of the batch), most entries below 2e-5, and 8e-5 on
    // another random draw. 5e-4 of the largest entry leaves a 6–12× margin and is still 100× below
    // any real mismatch (a wrong tap, a biased instead of unbiased variance, a missing α term all
    // change outputs by O(10 %)).
    let close = |name: &str, got: &Tensor, want: &Tensor| {
        assert_eq!(got.shape(), want.shape(), "{name}: shape");
        let (g, w) = (got.to_vec(), want.to_vec());
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
        let worst = common::worst(g.iter().zip(&w).map(|(a, b)| (a - b).abs()));
        assert!(
            worst <= 5e-4 * scale,
            "{name}: max |Δ| {worst} vs scale {scale}"
        );
    };
    close("score", &out, &get("output.score"));

    let loss = out.mul(&get("input.cotangent")).sum_all();
    let mut inputs = vec![x.clone()];
    let named = store.named_params();
    inputs.extend(named.iter().map(|(_, t)| t.clone()));
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let grads = ncsn::grad(&[&loss], &refs, false);
    assert_eq!(grads.len(), refs.len(), "one gradient per input");
    close("∂/∂x", &grads[0], &get("grad.x"));
    for ((name, _), g) in named.iter().zip(&grads[1..]) {
        close(&format!("∂/∂{name}"), g, &get(&format!("grad.{name}")));
    }
}

#[test]
fn mnist_shaped_model_matches_pytorch() {
    let config = RefineNetConfig {
        ngf: 4,
        ..RefineNetConfig::mnist()
    };
    compare_with_pytorch(config, "refinenet_mnist_ngf4.safetensors");
}

#[test]
fn cifar10_shaped_model_matches_pytorch() {
    let config = RefineNetConfig {
        ngf: 4,
        ..RefineNetConfig::cifar10()
    };
    compare_with_pytorch(config, "refinenet_cifar10_ngf4.safetensors");
}

#[test]
fn cond_instance_norm_plus_hand_computed() {
    // One sample, two channels of four pixels, noise level 1 of 2.
    //   channel 0: 1, 2, 3, 6  → μ = 3, σ² = (4 + 1 + 0 + 9)/4 = 3.5
    //   channel 1: 0, 0, 2, 2  → μ = 1, σ² = 1
    // Channel means 3 and 1: m = 2, unbiased v = ((1)² + (−1)²)/1 = 2, normalised means ±1/√(2 + ε).
    // With γ = (2, 3), α = (0.5, −1), β = (0.1, −0.2) at level 1:
    //   out_0 = 2·((x − 3)/√(3.5 + ε) + 0.5·(1/√(2 + ε))) + 0.1
    //   out_1 = 3·((x − 1)/√(1 + ε)  − 1·(−1/√(2 + ε))) − 0.2
    let store = ParamStore::new();
    let norm = CondInstanceNorm2dPlus::new(&store.root(), 2, 2, &mut ChaCha8Rng::seed_from_u64(0));
    norm.embed.set_data(
        Tensor::from_vec(
            vec![
                9.0, 9.0, 9.0, 9.0, 9.0, 9.0, // level 0: never used
                2.0, 3.0, 0.5, -1.0, 0.1, -0.2, // level 1: γ, α, β
            ],
            &[2, 6],
        )
        .storage(),
    );
    let x = Tensor::from_vec(vec![1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 2.0, 2.0], &[1, 2, 2, 2]);
    let out = norm.forward(&x, &[1]).to_vec();
    let eps = 1e-5f64;
    let m = 1.0 / (2.0 + eps).sqrt();
    let mut want = Vec::new();
    for v in [1.0, 2.0, 3.0, 6.0] {
        want.push(2.0 * ((v - 3.0) / (3.5 + eps).sqrt() + 0.5 * m) + 0.1);
    }
    for v in [0.0, 0.0, 2.0, 2.0] {
        want.push(3.0 * ((v - 1.0) / (1.0 + eps).sqrt() + m) - 0.2);
    }
    assert_eq!(out.len(), want.len(), "{out:?} vs {want:?}");
    for (a, b) in out.iter().zip(&want) {
        // f32 evaluation of O(1) quantities: a few ulps, 1e-5 absolute.
        assert!((*a as f64 - b).abs() < 1e-5, "{out:?} vs {want:?}");
    }
}

/// Where ε sits in CondInstanceNorm++, and its size: the reference's `nn.InstanceNorm2d` adds
/// ε = 1e-5 to each plane's biased variance, `(x − μ)/√(σ² + ε)`, and adds the same ε to the
/// unbiased variance v of the channel means, `(μ_c − m)/√(v + ε)`. With O(1) statistics, as in
/// the hand-computed case above, ε moves outputs by about 1e-6; here both variances are below ε,
/// so ε decides the result.
///
/// One sample, two channels of four pixels, a = f32(1e-3), d = f32(2e-3):
///   channel 0: a, −a, a, −a        → μ₀ = 0, σ₀² = a²  (1e-6)
///   channel 1: d + a, d − a, …     → μ₁ = d, σ₁² = a²
/// m = d/2, v = 2·(d/2)² = d²/2 (2e-6), with γ = (1.5, 2), α = (0.5, −1), β = (0.1, 0.2):
///   out_c = γ_c·((x − μ_c)/√(σ_c² + ε) + α_c·(μ_c − m)/√(v + ε)) + β_c.
/// The expected values are worked out in f64 from the f32 inputs. The largest change to them
/// from ε = 1e-6 is 1.39; from ε added to the standard deviations instead, (x − μ)/(σ + ε) or
/// (μ_c − m)/(√v + ε), 1.38 and 0.83. The f32 evaluation errs by a few ulps of the O(1) results,
/// and the statistics by about 1e-7 of themselves (the inputs are near 1e-3): 1e-4 leaves more
/// than two orders of magnitude to either side.
#[test]
fn cond_instance_norm_plus_eps_is_added_to_the_variances() {
    let store = ParamStore::new();
    let norm = CondInstanceNorm2dPlus::new(&store.root(), 2, 1, &mut ChaCha8Rng::seed_from_u64(0));
    let (gamma, alpha, beta) = ([1.5f64, 2.0], [0.5f64, -1.0], [0.1f64, 0.2]);
    let e: Vec<f32> = [gamma, alpha, beta]
        .concat()
        .iter()
        .map(|&v| v as f32)
        .collect();
    norm.embed.set_data(Tensor::from_vec(e, &[1, 6]).storage());
    let (a, d) = (1e-3f32, 2e-3f32);
    let x = vec![a, -a, a, -a, d + a, d - a, d + a, d - a];
    let out = norm
        .forward(&Tensor::from_vec(x.clone(), &[1, 2, 2, 2]), &[0])
        .to_vec();

    let eps = 1e-5f64;
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut want = Vec::new();
    let stats: Vec<(f64, f64)> = xs
        .chunks(4)
        .map(|p| {
            let mu = p.iter().sum::<f64>() / 4.0;
            (mu, p.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / 4.0)
        })
        .collect();
    let m = (stats[0].0 + stats[1].0) / 2.0;
    let v = (stats[0].0 - m).powi(2) + (stats[1].0 - m).powi(2); // unbiased: divided by C − 1 = 1
    for (c, p) in xs.chunks(4).enumerate() {
        let (mu, var) = stats[c];
        for &xv in p {
            let h = (xv - mu) / (var + eps).sqrt() + alpha[c] * (mu - m) / (v + eps).sqrt();
            want.push(gamma[c] * h + beta[c]);
        }
    }
    assert_eq!(out.len(), want.len());
    for (g, w) in out.iter().zip(&want) {
        assert!((*g as f64 - w).abs() < 1e-4, "{out:?} vs {want:?}");
    }
}

/// The fused op that `CondInstanceNorm2dPlus::forward` runs against the layer's definition in
/// tensor ops (`forward_unfused`): output, first-order gradients (the fused backward) and
/// second-order gradients (the tensor-op VJP under create_graph) with respect to x and the
/// embedding, on 5 channels of 4 × 3, 260 channels of 2 × 2 (more than one pass of a 256-thread
/// workgroup on a device) and 3 channels of 23 × 19.
///
/// Tolerance |Δ| ≤ 1e-5·(1 + |want|) for the output and 1e-4·(1 + |want|) for the gradients. Both
/// sides are f32 with other association orders: the plane sums over L ≤ 437 pixels carry up to
/// 2·L·u ≈ 5e-5 of relative error in the worst case, where every rounding goes the same way; the
/// roundings fall either way at random, and their sum grows like √L·u ≈ 1.3e-6 (measured: under
/// 2e-6), which the output's 1e-5 exceeds eightfold. Leaving out any one term — the α·z shift, ∂μ through z, the x̂·S₂ part of the instance norm — moves values by
/// O(0.1) on these inputs (plane means spread over −2..2).
#[test]
fn fused_cond_instance_norm_plus_matches_its_definition() {
    common::assert_fused_cin_plus_matches_definition(&ncsn::Device::Cpu);
}

#[test]
fn one_annealed_dsm_step_reduces_the_loss() {
    // A narrow model (ngf = 8) keeps the test fast; the step is the full one the bench times.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let config = RefineNetConfig {
        ngf: 8,
        ..RefineNetConfig::mnist()
    };
    let model = CondRefineNetDilated::new(config, &mut rng);
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let x = Tensor::rand(&[8, 1, 28, 28], &mut rng);
    let z = Tensor::randn(&[8, 1, 28, 28], &mut rng);
    let labels = [0, 1, 2, 3, 4, 5, 6, 9];
    let mut adam = Adam::new(model.store.named_params(), AdamConfig::default());
    // The reference's anneal_dsm_score_estimation with anneal_power = 2 (λ(σ) = σ²).
    let loss = || anneal_dsm_loss_with(|x, y| model.forward(x, y), &x, &labels, &z, &sigmas, 2.0);
    let before = loss();
    adam.step(&before.backward());
    let after = ncsn::no_grad(loss);
    assert!(
        after.item() < before.item(),
        "loss {} → {}",
        before.item(),
        after.item()
    );
}

/// The two configurations are the paper's, as documented: MNIST 1 × 28 × 28 with ngf = 64,
/// CIFAR-10 3 × 32 × 32 with ngf = 128, both with 10 noise levels and inputs in [0, 1] (no logit
/// transform). The image side enters no parameter shape, so the state-dict comparisons above
/// cannot see it.
#[test]
fn configurations_are_the_papers() {
    let config = |channels, image_size, ngf| RefineNetConfig {
        channels,
        image_size,
        ngf,
        num_classes: 10,
        logit_transform: false,
    };
    assert_eq!(RefineNetConfig::mnist(), config(1, 28, 64));
    assert_eq!(RefineNetConfig::cifar10(), config(3, 32, 128));
}

/// With `logit_transform` the network takes its input as it is; without, it first maps x ∈ [0, 1]
/// to 2x − 1. So a logit-transform model given 2x − 1 (computed with the same two tensor ops)
/// runs the very same arithmetic as the plain model given x, on the same weights (the same
/// seed): the outputs agree to the bit. The PyTorch fixtures only cover the plain model.
#[test]
fn logit_transformed_inputs_are_taken_as_they_are() {
    let build = |logit_transform| {
        let config = RefineNetConfig {
            ngf: 4,
            logit_transform,
            ..RefineNetConfig::mnist()
        };
        CondRefineNetDilated::new(config, &mut ChaCha8Rng::seed_from_u64(5))
    };
    let (plain, logit) = (build(false), build(true));
    let x = Tensor::rand(&[2, 1, 28, 28], &mut ChaCha8Rng::seed_from_u64(6));
    let want = ncsn::no_grad(|| plain.forward(&x, &[1, 8])).to_vec();
    let scaled = x.mul_scalar(2.0).add_scalar(-1.0);
    let got = ncsn::no_grad(|| logit.forward(&scaled, &[1, 8])).to_vec();
    assert!(
        got == want,
        "outputs differ: {:?} vs {:?}",
        &got[..4],
        &want[..4]
    );
}

/// The MNIST model at ngf 4, its weights drawn from `seed`: enough to see what `forward` refuses.
fn narrow_mnist_model(seed: u64) -> CondRefineNetDilated {
    let config = RefineNetConfig {
        ngf: 4,
        ..RefineNetConfig::mnist()
    };
    CondRefineNetDilated::new(config, &mut ChaCha8Rng::seed_from_u64(seed))
}

/// A label is an index below `num_classes`: the first one past the end is refused by name.
#[test]
#[should_panic(expected = "label 10 out of range for 10 noise levels")]
fn a_label_past_the_last_noise_level_is_refused() {
    let model = narrow_mnist_model(7);
    model.forward(&Tensor::zeros(&[2, 1, 28, 28]), &[3, 10]);
}

/// A dilated block that changes width does it in its second convolution, as the reference's
/// `ConditionalResidualBlock(resample='down', dilation=d)`: conv1 keeps the input width (and
/// normalize2 normalises it), conv2 and the shortcut widen it, all dilated 3 × 3, and the size is
/// kept. The network itself only uses such blocks at equal widths, where conv1's width cannot
/// tell. Without resampling or dilation the reference cannot change width at all (its shortcut
/// would be an `nn.Conv2d` without a kernel size): refused.
#[test]
fn a_dilated_block_widens_in_its_second_convolution() {
    use ncsn::nn::refinenet::{CondResBlock, Resample};
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let block = CondResBlock::new(&store.root(), 4, 8, 3, Resample::Down, Some(2), &mut rng);
    let want = common::owned_shapes(&[
        ("conv1.weight", &[4, 4, 3, 3]),
        ("conv1.bias", &[4]),
        ("normalize2.embed.weight", &[3, 12]),
        ("conv2.weight", &[8, 4, 3, 3]),
        ("conv2.bias", &[8]),
        ("shortcut.weight", &[8, 4, 3, 3]),
        ("shortcut.bias", &[8]),
        ("normalize1.embed.weight", &[3, 12]),
    ]);
    assert_eq!(common::names_and_shapes(&store), want);
    let x = Tensor::randn(&[2, 4, 6, 6], &mut rng);
    assert_eq!(block.forward(&x, &[0, 2]).shape(), &[2, 8, 6, 6]);

    let refused = std::panic::catch_unwind(|| {
        let store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        CondResBlock::new(&store.root(), 4, 8, 3, Resample::None, None, &mut rng);
    });
    assert!(refused.is_err(), "a plain block changed width");
}

/// A refine block fuses its inputs (`msf`) only when it has more than one, as the reference's
/// `if self.n_blocks > 1`: a block built with a fusion stage but given one input computes what
/// the same block without one computes (here with the other block's weights copied in), to the
/// bit. In the network only `refine1` has one input, and it is built without the stage.
#[test]
fn a_refine_block_with_one_input_fuses_nothing() {
    use ncsn::nn::refinenet::CondRefineBlock;
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (with, without) = (ParamStore::new(), ParamStore::new());
    let fusing = CondRefineBlock::new(&with.root(), &[4], 4, 3, false, false, &mut rng);
    let plain = CondRefineBlock::new(&without.root(), &[4], 4, 3, true, false, &mut rng);
    assert!(
        with.named_params()
            .iter()
            .any(|(n, _)| n.starts_with("msf."))
    );
    for (name, t) in without.named_params() {
        with.get(&name).unwrap().set_data(t.storage());
    }
    let x = Tensor::randn(&[2, 4, 5, 5], &mut rng);
    let a = ncsn::no_grad(|| fusing.forward(std::slice::from_ref(&x), &[0, 2], (5, 5))).to_vec();
    let b = ncsn::no_grad(|| plain.forward(&[x], &[0, 2], (5, 5))).to_vec();
    assert!(a == b, "{:?} vs {:?}", &a[..4], &b[..4]);
}

/// One label per image: a batch of two with one label is refused, naming both counts.
#[test]
#[should_panic(expected = "1 labels for a batch of 2")]
fn one_label_per_image() {
    let model = narrow_mnist_model(11);
    model.forward(&Tensor::zeros(&[2, 1, 28, 28]), &[3]);
}

//! Deterministic checks of the noise-conditional objective and model: exact identities up to f32
//! round-off, within 1e-5·(1 + |value|). The two sides of each identity compute one quantity by
//! two orders of a few hundred f32 operations, each rounding by at most 6e-8 relative; the
//! worst case adds those up (a few 1e-5), but they fall on either side at random and cancel, so
//! the tolerance is the typical error's scale, not that worst case. A broken identity (a wrong
//! weight, a level mixed up, a σ not divided by) is off by order one.

mod common;

use ncsn::Tensor;
use ncsn::nn::{Module, ParamStore};
use ncsn::score::{
    ContinuousNoiseMlp, GeometricSigmas, NoiseConditionalMlp, NoiseRange, ScoreMlp,
    anneal_dsm_loss_with, continuous_dsm_loss, continuous_dsm_loss_with, dsm_loss_with,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * (1.0 + b.abs())
}

/// The DSM loss of the elementwise score s(x̃) = tanh(−0.7 x̃) in f64, for a batch of `n` samples
/// (`xs` and `zs` flattened, sample after sample), with σ of sample n from `sigma`:
/// (1/N) Σₙ σₙᵖ · ½ Σⱼ (s(xₙⱼ + σₙ zₙⱼ) + zₙⱼ/σₙ)².
fn tanh_score_loss(
    xs: &[f32],
    zs: &[f32],
    n: usize,
    sigma: impl Fn(usize) -> f32,
    power: f32,
) -> f64 {
    let per_sample = xs.len() / n;
    (0..n)
        .map(|i| {
            let s = sigma(i) as f64;
            let sq: f64 = (i * per_sample..(i + 1) * per_sample)
                .map(|j| {
                    let (xj, zj) = (xs[j] as f64, zs[j] as f64);
                    let r = (-0.7 * (xj + s * zj)).tanh() + zj / s;
                    r * r
                })
                .sum();
            s.powf(power as f64) * 0.5 * sq
        })
        .sum::<f64>()
        / n as f64
}

/// A noise-conditional MLP drawn from `rng` and its store, the gains then drawn from U(0.5, 1.5)
/// so that they differ from 1 and between levels, and a wrong level's row would show.
fn net_with_varied_gains(
    dim: usize,
    hidden: usize,
    sigmas: &GeometricSigmas,
    rng: &mut ChaCha8Rng,
) -> (ParamStore, NoiseConditionalMlp) {
    let store = ParamStore::new();
    let net = NoiseConditionalMlp::new(&store.root(), dim, hidden, sigmas.clone(), rng);
    for g in &net.gammas {
        g.set_data(Tensor::uniform(g.shape(), 0.5, 1.5, rng).storage());
    }
    (store, net)
}

/// `anneal_dsm_loss` draws one level per sample, uniformly over the L levels (as the reference's
/// `torch.randint(0, L, (N,))`), and then the noise, in that order: the loss equals
/// `anneal_dsm_loss_with` on labels and noise drawn in that order from a copy of the generator,
/// and the score sees exactly those labels. (A resumed run replays the generator's words, so the
/// order is part of reproducing a run.) Uniformity: 20,000 labels over 10 levels give counts of
/// 2,000 with a standard error of √(20,000·0.1·0.9) ≈ 42; each must be within 5 of them (212),
/// which a draw over 0..L − 1 misses (the last level gets none, the others 2,222).
#[test]
fn annealed_dsm_draws_uniform_labels_then_the_noise() {
    use rand::Rng;
    let sigmas = GeometricSigmas::new(1.0, 0.01, 10);
    let mut counts = [0usize; 10];
    for l in sigmas.sample_labels(20_000, &mut ChaCha8Rng::seed_from_u64(3)) {
        counts[l] += 1;
    }
    for (level, &c) in counts.iter().enumerate() {
        assert!(
            c.abs_diff(2_000) <= 212,
            "level {level}: {c} of 20,000 ({counts:?})"
        );
    }

    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 2, 16, &mut rng);
    let x = Tensor::randn(&[32, 2], &mut rng);
    let mut copy = rng.clone();
    let labels = sigmas.sample_labels(32, &mut copy);
    let z = Tensor::randn(&[32, 2], &mut copy);
    let want = anneal_dsm_loss_with(|x, _| net.forward(x), &x, &labels, &z, &sigmas, 2.0).item();
    let seen = std::cell::RefCell::new(Vec::new());
    let got = ncsn::score::anneal_dsm_loss(
        |x, l| {
            seen.borrow_mut().extend_from_slice(l);
            net.forward(x)
        },
        &x,
        &sigmas,
        2.0,
        &mut rng,
    )
    .item();
    assert_eq!(got.to_bits(), want.to_bits(), "{got} vs {want}");
    assert_eq!(*seen.borrow(), labels);
    assert_eq!(rng.random::<u64>(), copy.random::<u64>(), "the words drawn");
}

/// With every label at level i, Eq. 6's per-batch estimate is λ(σᵢ)·ℓ(θ; σᵢ): σᵢ^power times the
/// single-level DSM loss with the same noise.
#[test]
fn annealed_dsm_at_one_level_is_weighted_dsm() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 2, 16, &mut rng);
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    let x = Tensor::randn(&[64, 2], &mut rng);
    let z = Tensor::randn(&[64, 2], &mut rng);
    for level in 0..sigmas.len() {
        let s = sigmas.get(level);
        let labels = vec![level; 64];
        for power in [0.0f32, 1.0, 2.0] {
            let annealed =
                anneal_dsm_loss_with(|x, _| net.forward(x), &x, &labels, &z, &sigmas, power);
            let single = dsm_loss_with(|x| net.forward(x), &x, &z, s).mul_scalar(s.powf(power));
            assert!(
                close(annealed.item(), single.item()),
                "level {level}, power {power}: {} vs {}",
                annealed.item(),
                single.item()
            );
        }
    }
}

/// With labels mixed across the batch, Eq. 6's estimate is the batch mean of each sample's own
/// weighted loss, (1/N) Σₙ σ_{lₙ}^power · ½‖s(x̃ₙ, lₙ) + zₙ/σ_{lₙ}‖², checked row by row against
/// the single-level loss of that row alone. The labels are in no order and the network's gains
/// differ by level, so a loss that weighted every sample by the mean weight, by the first label's
/// or by another row's, or scored a row at another level, would differ by far more than round-off.
#[test]
fn annealed_dsm_with_mixed_labels_weights_each_sample_by_its_level() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    let (_store, net) = net_with_varied_gains(2, 16, &sigmas, &mut rng);
    let n = 12;
    let x = Tensor::randn(&[n, 2], &mut rng);
    let z = Tensor::randn(&[n, 2], &mut rng);
    let labels: Vec<usize> = (0..n).map(|i| (5 * i + 2) % 4).collect(); // 2, 3, 0, 1, 2, …
    for power in [1.0f32, 2.0] {
        let annealed =
            anneal_dsm_loss_with(|x, l| net.forward(x, l), &x, &labels, &z, &sigmas, power);
        let by_row = (0..n)
            .map(|i| {
                let (xi, zi, l) = (x.narrow(0, i, 1), z.narrow(0, i, 1), labels[i]);
                let s = sigmas.get(l);
                let row = dsm_loss_with(|x| net.forward(x, &[l]), &xi, &zi, s);
                row.item() * s.powf(power)
            })
            .sum::<f32>()
            / n as f32;
        assert!(
            close(annealed.item(), by_row),
            "power {power}: {} vs {by_row}",
            annealed.item()
        );
    }
}

/// For samples that are arrays (an image batch (N, C, H, W)) each sample's σ scales that sample's
/// every entry, and the loss sums over the C·H·W entries before it averages over the batch (the
/// reference's `.sum(dim=-1)` on the flattened batch, then `.mean(dim=0)`): checked against the
/// formula in f64, (1/N) Σₙ σₙᵖ · ½ Σⱼ (s(xₙⱼ + σₙ zₙⱼ) + zₙⱼ/σₙ)², for an elementwise score. The
/// batch has H = N, so that a σ laid along H instead of N would broadcast without a word. The
/// loss is a sum of 96 positive terms, each from a few f32 roundings of 6e-8 relative, so the
/// f32 loss is within about 1e-6 relative of the f64 one, inside the module's 1e-5; a σ on the
/// wrong axis (measured: twice the formula's value at power 1), a mean over the entries or a
/// weight from another sample's σ moves it by far more.
#[test]
fn annealed_dsm_on_image_batches_weights_each_image_by_its_level() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    let shape = [4, 2, 4, 3];
    let x = Tensor::randn(&shape, &mut rng);
    let z = Tensor::randn(&shape, &mut rng);
    let labels = [2, 0, 3, 1];
    let score = |x: &Tensor, _: &[usize]| x.mul_scalar(-0.7).tanh();
    let (xs, zs) = (x.to_vec(), z.to_vec());
    for power in [1.0f32, 2.0] {
        let got = anneal_dsm_loss_with(score, &x, &labels, &z, &sigmas, power).item();
        let want = tanh_score_loss(&xs, &zs, shape[0], |n| sigmas.get(labels[n]), power);
        assert!(
            close(got, want as f32),
            "power {power}: {got} vs the formula's {want}"
        );
    }
}

/// `forward_level` (the level's gains broadcast) and `forward` with equal labels (gathered row by
/// row) compute the same function; gradients reach only the gain rows of the levels used.
#[test]
fn noise_conditional_mlp_levels() {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let sigmas = GeometricSigmas::new(20.0, 1.0, 10);
    let (store, net) = net_with_varied_gains(2, 32, &sigmas, &mut rng);
    let x = Tensor::randn(&[40, 2], &mut rng);
    for level in [0, 4, 9] {
        let a = net.forward(&x, &vec![level; 40]).to_vec();
        let b = net.forward_level(&x, level).to_vec();
        assert!(
            a.iter().zip(&b).all(|(p, q)| close(*p, *q)),
            "level {level}"
        );
    }
    let labels: Vec<usize> = (0..40).map(|i| if i % 2 == 0 { 3 } else { 7 }).collect();
    let z = Tensor::randn(&[40, 2], &mut rng);
    let loss = anneal_dsm_loss_with(|x, l| net.forward(x, l), &x, &labels, &z, &sigmas, 2.0);
    let grads = loss.backward();
    for gamma in &net.gammas {
        let g = grads.get(gamma).expect("gain gradient").to_array();
        for level in 0..sigmas.len() {
            let norm: f32 = g
                .index_axis(ndarray::Axis(0), level)
                .iter()
                .map(|v| v * v)
                .sum();
            if level == 3 || level == 7 {
                assert!(
                    norm > 0.0,
                    "level {level} is used: its gains must get a gradient"
                );
            } else {
                assert_eq!(norm, 0.0, "level {level} is unused: no gradient");
            }
        }
    }
    assert_eq!(
        store.len(),
        8,
        "3 linear layers (weight, bias) and 2 gain tables"
    );
}

/// The model is s(x, σᵢ) = f_θ(x, i)/σᵢ (the division by σᵢ is the paper's hint that
/// ‖s(·, σ)‖ ∝ 1/σ, built in). At initialisation every gain is 1, so f_θ does not depend on i and
/// σᵢ·s(x, σᵢ) is the same at every level, to f32 rounding of one multiply and one divide (10⁻⁵
/// relative). Without the division it would grow with σᵢ, by a factor of 20 from σ_L to σ₁ here.
#[test]
fn noise_conditional_mlp_divides_by_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let store = ParamStore::new();
    let sigmas = GeometricSigmas::new(20.0, 1.0, 5);
    let net = NoiseConditionalMlp::new(&store.root(), 2, 16, sigmas.clone(), &mut rng);
    let x = Tensor::randn(&[10, 2], &mut rng);
    let f0 = net.forward_level(&x, 0).mul_scalar(sigmas.get(0)).to_vec();
    assert!(f0.iter().any(|v| v.abs() > 1e-3), "a non-trivial output");
    for level in 1..sigmas.len() {
        let f = net
            .forward_level(&x, level)
            .mul_scalar(sigmas.get(level))
            .to_vec();
        assert!(
            f0.iter().zip(&f).all(|(p, q)| close(*q, *p)),
            "level {level}: σᵢ·s(x, σᵢ) differs from level 0's"
        );
    }
}

/// `sharded_backward` returns the whole batch's SSM-VR loss and parameter gradients: shards of
/// 128 rows into 1, 2, 3 and 5 ranges (unequal ones included) agree with one backward pass over
/// the batch up to f32 summation order (relative 1e-5 of each gradient's largest entry), and one
/// shard is bit-identical to it. Every parameter receives a gradient.
#[test]
fn sharded_backward_equals_whole_batch_backward() {
    use ncsn::score::sliced_score_matching;
    use ncsn::sharded_backward;
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 2, 32, &mut rng);
    let x = Tensor::randn(&[128, 2], &mut rng).mul_scalar(3.0);
    let v = Tensor::randn(&[128, 2], &mut rng);
    let whole = sliced_score_matching(|x| net.forward(x), &x, &v, true).loss;
    let want = whole.backward();
    let params = store.named_params();
    for shards in [1usize, 2, 3, 5] {
        let (loss, grads) = sharded_backward(128, shards, |r| {
            let rows = |t: &Tensor| t.narrow(0, r.start, r.len());
            sliced_score_matching(|x| net.forward(x), &rows(&x), &rows(&v), true).loss
        });
        assert!(
            close(loss, whole.item()),
            "{shards} shards: loss {loss} vs {}",
            whole.item()
        );
        for (name, p) in &params {
            let g = grads
                .get(p)
                .unwrap_or_else(|| panic!("{shards} shards: no gradient for {name}"));
            let (g, w) = (g.to_array(), want.get(p).unwrap().to_array());
            let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            for (a, b) in g.iter().zip(w.iter()) {
                if shards == 1 {
                    assert_eq!(a.to_bits(), b.to_bits(), "{name}: one shard differs");
                }
                assert!(
                    (a - b).abs() <= 1e-5 * scale,
                    "{shards} shards, {name}: {a} vs {b} (scale {scale})"
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "0 shards for a batch of 4 rows")]
fn sharded_backward_rejects_zero_shards() {
    ncsn::sharded_backward(4, 0, |_| Tensor::scalar(0.0));
}

/// `ScoreMlp::new(path, 2, 128, …)` is the reference toy runner's
/// `nn.Sequential(Linear(2, 128), Softplus(), Linear(128, 128), Softplus(), Linear(128, 2))`: the
/// same names in the same order, the same 17,154 scalars, and the same function as an [`Mlp`] of
/// widths (2, 128, 128, 2) with softplus drawn from the same seed, to the bit (the same layers
/// computed by the same ops). A hidden layer missing, or another activation, fails one of these.
#[test]
fn score_mlp_is_the_reference_toy_model() {
    use ncsn::nn::{Activation, Mlp};
    let store = ParamStore::new();
    let net = ScoreMlp::new(&store.root(), 2, 128, &mut ChaCha8Rng::seed_from_u64(9));
    let want = common::owned_shapes(&[
        ("0.weight", &[128, 2]),
        ("0.bias", &[128]),
        ("2.weight", &[128, 128]),
        ("2.bias", &[128]),
        ("4.weight", &[2, 128]),
        ("4.bias", &[2]),
    ]);
    assert_eq!(common::names_and_shapes(&store), want);
    assert_eq!(store.num_scalars(), 17_154);

    let mlp_store = ParamStore::new();
    let mlp = Mlp::new(
        &mlp_store.root(),
        &[2, 128, 128, 2],
        Activation::Softplus,
        &mut ChaCha8Rng::seed_from_u64(9),
    );
    let x = Tensor::randn(&[16, 2], &mut ChaCha8Rng::seed_from_u64(10)).mul_scalar(2.0);
    let bits = |t: Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(
        bits(net.forward(&x)),
        bits(mlp.forward(&x)),
        "ScoreMlp against Mlp(2, 128, 128, 2) with softplus, as f32 bits"
    );
}

/// The noise-conditional MLP's parameters are the three linear layers' `0.*`, `2.*`, `4.*` and
/// the gain tables `gamma.0` and `gamma.1`, each (L, hidden) and all ones at initialisation, so
/// that a new network is the same function at every level up to its division by σᵢ.
#[test]
fn noise_conditional_mlp_gains_are_named_and_start_at_one() {
    let store = ParamStore::new();
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    NoiseConditionalMlp::new(
        &store.root(),
        2,
        8,
        sigmas,
        &mut ChaCha8Rng::seed_from_u64(11),
    );
    let names: Vec<String> = store.named_params().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias", "gamma.0", "gamma.1"
        ]
    );
    for name in ["gamma.0", "gamma.1"] {
        let g = store.get(name).expect("a gain table");
        assert_eq!(g.shape(), &[4, 8], "{name}");
        assert!(
            g.to_vec().iter().all(|&v| v == 1.0),
            "{name} does not start at 1"
        );
    }
}

/// The noise-conditional MLP against its formula written out in f64 from its weights:
/// s(x, i) = (W₃ h₂ + b₃)/σᵢ with h_ℓ = softplus(γ_ℓ[i] ⊙ (W_ℓ h_{ℓ−1} + b_ℓ)), the gain inside
/// the softplus. The gains are drawn from U(0.5, 1.5) so that they differ from 1 and between
/// levels, and the rows carry mixed labels. Values are of order one, and the f32 network errs by
/// a few ulps of them: 1e-5·(1 + |value|) (see the module docs). A gain applied after the
/// softplus, γ ⊙ softplus(W h + b), moves outputs by 0.01 or more here.
#[test]
fn noise_conditional_mlp_follows_its_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    let (dim, hidden) = (2, 5);
    let (_store, net) = net_with_varied_gains(dim, hidden, &sigmas, &mut rng);
    let n = 6;
    let x = Tensor::randn(&[n, dim], &mut rng).mul_scalar(2.0);
    let labels = [3, 0, 2, 1, 0, 3];
    let got = net.forward(&x, &labels).to_vec();

    let f64s = |t: &Tensor| t.to_vec().iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let affine = |layer: &ncsn::nn::Linear, h: &[f64]| -> Vec<f64> {
        let (w, b) = (
            f64s(&layer.weight),
            f64s(layer.bias.as_ref().expect("a bias")),
        );
        let cols = h.len();
        b.iter()
            .enumerate()
            .map(|(j, bj)| bj + (0..cols).map(|k| w[j * cols + k] * h[k]).sum::<f64>())
            .collect()
    };
    let gains = net.gammas.clone().map(|g| f64s(&g));
    let xs = f64s(&x);
    for (row, &level) in labels.iter().enumerate() {
        let mut h = xs[row * dim..(row + 1) * dim].to_vec();
        for (layer, g) in net.layers[..2].iter().zip(&gains) {
            h = affine(layer, &h)
                .iter()
                .enumerate()
                .map(|(j, z)| (g[level * hidden + j] * z).exp().ln_1p())
                .collect();
        }
        let sigma = sigmas.get(level) as f64;
        for (j, out) in affine(&net.layers[2], &h).iter().enumerate() {
            let (got, want) = (got[row * dim + j], (out / sigma) as f32);
            assert!(
                close(got, want),
                "row {row} (level {level}), output {j}: {got} vs {want}"
            );
        }
    }
}

/// One label per row: a single label for a batch of four would broadcast its gains and σ over
/// every row without a word, scoring the other three at the wrong level.
#[test]
#[should_panic(expected = "NoiseConditionalMlp: 1 labels for a batch of shape [4, 2]")]
fn noise_conditional_mlp_wants_one_label_per_row() {
    let store = ParamStore::new();
    let sigmas = GeometricSigmas::new(5.0, 0.5, 4);
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let net = NoiseConditionalMlp::new(&store.root(), 2, 8, sigmas, &mut rng);
    net.forward(&Tensor::zeros(&[4, 2]), &[1]);
}

/// σ drawn from a `NoiseRange` is log-uniform: its position u = ln(σ/σ_min)/ln(σ_max/σ_min) is
/// uniform on [0, 1). 20,000 draws in ten bins of u give counts of 2,000, each within 5 standard
/// errors (212, as for the labels above); σ drawn uniformly on [0.01, 100] would put 99.99 % of
/// them in the top bin, and a uniform u over the wrong interval leaves bins empty. Every σ lies in
/// the range, the position is 0 and 1 at its ends, and `levels` runs from σ_max to σ_min.
#[test]
fn a_noise_range_draws_log_uniform_levels() {
    let range = NoiseRange::new(0.01, 100.0);
    let sigmas = range.sample(20_000, &mut ChaCha8Rng::seed_from_u64(21));
    let mut counts = [0usize; 10];
    for &sigma in &sigmas {
        assert!(
            (0.01..=100.0).contains(&sigma),
            "σ = {sigma} outside the range"
        );
        counts[((range.position(sigma) * 10.0) as usize).min(9)] += 1;
    }
    for (bin, &c) in counts.iter().enumerate() {
        assert!(
            c.abs_diff(2_000) <= 212,
            "bin {bin}: {c} of 20,000 ({counts:?})"
        );
    }
    assert!(range.position(0.01).abs() < 1e-6 && (range.position(100.0) - 1.0).abs() < 1e-6);
    assert!(
        (range.position(1.0) - 0.5).abs() < 1e-6,
        "1 is halfway on the log scale"
    );
    let levels = range.levels(5);
    assert_eq!(
        (levels.first(), levels.last(), levels.len()),
        (100.0, 0.01, 5)
    );
}

/// A range needs 0 < σ_min < σ_max < ∞.
#[test]
fn a_noise_range_refuses_bad_ends() {
    for (min, max) in [
        (0.0, 1.0),
        (1.0, 1.0),
        (2.0, 1.0),
        (0.1, f64::INFINITY),
        (f64::NAN, 1.0),
    ] {
        let caught = std::panic::catch_unwind(|| NoiseRange::new(min, max));
        assert!(
            caught.is_err(),
            "NoiseRange::new({min}, {max}) was accepted"
        );
    }
}

/// The continuous objective is DSM with each sample weighted by its own σ: the loss equals the
/// mean, row by row, of each row's single-σ loss times σₙ^power (within f32 round-off, as for
/// the annealed loss above). With σ's that are levels of a schedule it is the annealed loss, bit
/// for bit: the two share their arithmetic.
#[test]
fn continuous_dsm_weights_each_sample_by_its_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let range = NoiseRange::new(0.05, 20.0);
    let store = ParamStore::new();
    let net = ContinuousNoiseMlp::new(&store.root(), 2, 16, range, 1.5, &mut rng);
    let n = 12;
    let x = Tensor::randn(&[n, 2], &mut rng);
    let z = Tensor::randn(&[n, 2], &mut rng);
    let sigmas = range.sample(n, &mut rng);
    for power in [1.0f32, 2.0] {
        let loss = continuous_dsm_loss_with(|x, s| net.forward(x, s), &x, &sigmas, &z, power);
        let by_row = (0..n)
            .map(|i| {
                let (xi, zi, s) = (x.narrow(0, i, 1), z.narrow(0, i, 1), sigmas[i]);
                dsm_loss_with(|x| net.forward(x, &[s]), &xi, &zi, s).item() * s.powf(power)
            })
            .sum::<f32>()
            / n as f32;
        assert!(
            close(loss.item(), by_row),
            "power {power}: {} vs {by_row}",
            loss.item()
        );
    }
    let levels = GeometricSigmas::new(5.0, 0.5, 4);
    let labels: Vec<usize> = (0..n).map(|i| (5 * i + 2) % 4).collect();
    let at_levels: Vec<f32> = labels.iter().map(|&l| levels.get(l)).collect();
    let score = |x: &Tensor, s: &[f32]| net.forward(x, s);
    let continuous = continuous_dsm_loss_with(score, &x, &at_levels, &z, 2.0).item();
    let by_label = |x: &Tensor, l: &[usize]| {
        net.forward(x, &l.iter().map(|&l| levels.get(l)).collect::<Vec<_>>())
    };
    let annealed = anneal_dsm_loss_with(by_label, &x, &labels, &z, &levels, 2.0).item();
    assert_eq!(
        continuous.to_bits(),
        annealed.to_bits(),
        "{continuous} vs {annealed}"
    );
}

/// `continuous_dsm_loss` draws the σ's first, then the noise, from the generator it is given.
#[test]
fn continuous_dsm_draws_sigmas_then_the_noise() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let range = NoiseRange::new(0.05, 20.0);
    let store = ParamStore::new();
    let net = ContinuousNoiseMlp::new(&store.root(), 2, 8, range, 1.0, &mut rng);
    let x = Tensor::randn(&[6, 2], &mut rng);
    let mut replay = rng.clone();
    let seen = std::cell::RefCell::new(Vec::new());
    let score = |x: &Tensor, s: &[f32]| {
        seen.borrow_mut().extend_from_slice(s);
        net.forward(x, s)
    };
    let got = continuous_dsm_loss(score, &x, &range, 2.0, &mut rng).item();
    let sigmas = range.sample(6, &mut replay);
    let z = Tensor::randn(&[6, 2], &mut replay);
    let want = continuous_dsm_loss_with(|x, s| net.forward(x, s), &x, &sigmas, &z, 2.0).item();
    assert_eq!(got.to_bits(), want.to_bits(), "{got} vs {want}");
    assert_eq!(*seen.borrow(), sigmas);
}

/// The continuous-σ MLP against its formula in f64 from its weights:
/// s(x, σ) = (W₃ h₂ + b₃)/σ, h_ℓ = softplus(W_ℓ h_{ℓ−1} + b_ℓ + E_ℓ e(σ)), h₀ = x/√(σ² + σ_d²),
/// e(σ) = (u, sin πku, cos πku for k = 1..8) with u σ's position on the range's log scale. The
/// rows carry σ's inside the range, at its ends and beyond them. Values are of order one, so
/// 1e-5·(1 + |value|) as in the module docs; features at 2πku, the input not scaled, or the
/// embedding in one layer only move outputs by 0.01 or more. `forward_sigma` must give each row
/// of a batch what `forward` gives it with that σ in every row.
#[test]
fn continuous_mlp_follows_its_formula() {
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let range = NoiseRange::new(0.05, 20.0);
    let (dim, hidden, data_std) = (2, 6, 1.7f32);
    let store = ParamStore::new();
    let net = ContinuousNoiseMlp::new(&store.root(), dim, hidden, range, data_std, &mut rng);
    let sigmas = [0.05f32, 20.0, 0.3, 1.0, 7.5, 60.0, 0.02];
    let n = sigmas.len();
    let x = Tensor::randn(&[n, dim], &mut rng).mul_scalar(3.0);
    let got = net.forward(&x, &sigmas).to_vec();

    let f64s = |t: &Tensor| t.to_vec().iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let affine = |w: &Tensor, b: Option<&Tensor>, h: &[f64]| -> Vec<f64> {
        let w = f64s(w);
        let b = b.map(f64s).unwrap_or_else(|| vec![0.0; w.len() / h.len()]);
        let cols = h.len();
        b.iter()
            .enumerate()
            .map(|(j, bj)| bj + (0..cols).map(|k| w[j * cols + k] * h[k]).sum::<f64>())
            .collect()
    };
    let xs = f64s(&x);
    for (row, &sigma) in sigmas.iter().enumerate() {
        let s = sigma as f64;
        let u = (s / 0.05).ln() / (20.0f64 / 0.05).ln();
        let mut e = vec![u];
        for k in 1..=8 {
            let a = std::f64::consts::PI * k as f64 * u;
            e.extend([a.sin(), a.cos()]);
        }
        let scale = 1.0 / (s * s + (data_std as f64).powi(2)).sqrt();
        let mut h: Vec<f64> = xs[row * dim..(row + 1) * dim]
            .iter()
            .map(|v| v * scale)
            .collect();
        for (layer, embed) in net.layers[..2].iter().zip(&net.embeddings) {
            let pre = affine(&layer.weight, layer.bias.as_ref(), &h);
            let add = affine(&embed.weight, None, &e);
            h = pre
                .iter()
                .zip(&add)
                .map(|(p, a)| (p + a).exp().ln_1p())
                .collect();
        }
        let last = &net.layers[2];
        for (j, out) in affine(&last.weight, last.bias.as_ref(), &h)
            .iter()
            .enumerate()
        {
            let (got, want) = (got[row * dim + j], (out / s) as f32);
            assert!(
                close(got, want),
                "row {row} (σ = {sigma}), output {j}: {got} vs {want}"
            );
        }
        let alone = net.forward_sigma(&x, sigma).narrow(0, row, 1).to_vec();
        for j in 0..dim {
            assert!(
                close(alone[j], got[row * dim + j]),
                "row {row}: forward_sigma {} vs forward {}",
                alone[j],
                got[row * dim + j]
            );
        }
    }
}

/// The parameters are the three layers, named like `ScoreMlp`'s, and two bias-free embeddings
/// from the 17 features of σ to each hidden layer.
#[test]
fn continuous_mlp_parameters_are_named() {
    let store = ParamStore::new();
    let range = NoiseRange::new(0.01, 10.0);
    ContinuousNoiseMlp::new(
        &store.root(),
        3,
        8,
        range,
        1.0,
        &mut ChaCha8Rng::seed_from_u64(25),
    );
    let shapes: Vec<(String, Vec<usize>)> = store
        .named_params()
        .into_iter()
        .map(|(name, t)| (name, t.shape().to_vec()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = [
        ("0.weight", vec![8, 3]),
        ("0.bias", vec![8]),
        ("2.weight", vec![8, 8]),
        ("2.bias", vec![8]),
        ("4.weight", vec![3, 8]),
        ("4.bias", vec![3]),
        ("embed.0.weight", vec![8, 17]),
        ("embed.1.weight", vec![8, 17]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), s))
    .collect();
    assert_eq!(shapes, want);
    assert_eq!(ContinuousNoiseMlp::FEATURES, 17);
}

/// One σ per row, as with the labels of the level-conditional network.
#[test]
#[should_panic(expected = "ContinuousNoiseMlp: 1 levels for a batch of shape [4, 2]")]
fn continuous_mlp_wants_one_sigma_per_row() {
    let store = ParamStore::new();
    let range = NoiseRange::new(0.01, 10.0);
    let net = ContinuousNoiseMlp::new(
        &store.root(),
        2,
        8,
        range,
        1.0,
        &mut ChaCha8Rng::seed_from_u64(26),
    );
    net.forward(&Tensor::zeros(&[4, 2]), &[1.0]);
}

/// The continuous objective on an image batch (N, C, H, W): each image's σ scales that image's
/// every entry, as for the annealed loss above (same formula in f64, same tolerance, same batch
/// with H = N, so that σ laid along H instead of N would broadcast without a word; measured with
/// σ of shape (N, 1): 1.9 times the formula's value at power 1).
#[test]
fn continuous_dsm_on_image_batches_weights_each_image_by_its_sigma() {
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let shape = [4, 2, 4, 3];
    let x = Tensor::randn(&shape, &mut rng);
    let z = Tensor::randn(&shape, &mut rng);
    let sigmas = [2.5f32, 0.4, 7.0, 1.1];
    let score = |x: &Tensor, _: &[f32]| x.mul_scalar(-0.7).tanh();
    let (xs, zs) = (x.to_vec(), z.to_vec());
    for power in [1.0f32, 2.0] {
        let got = continuous_dsm_loss_with(score, &x, &sigmas, &z, power).item();
        let want = tanh_score_loss(&xs, &zs, shape[0], |n| sigmas[n], power);
        assert!(
            close(got, want as f32),
            "power {power}: {got} vs the formula's {want}"
        );
    }
}

/// The input scale 1/√(σ² + σ_d²) needs σ_d > 0 and finite: at σ_d = 0 it is 1/σ, which the
/// network was not built to expect, and infinite as σ → 0.
#[test]
fn continuous_mlp_refuses_a_bad_data_std() {
    let range = NoiseRange::new(0.01, 10.0);
    for data_std in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        let made = std::panic::catch_unwind(|| {
            let store = ParamStore::new();
            let mut rng = ChaCha8Rng::seed_from_u64(28);
            ContinuousNoiseMlp::new(&store.root(), 2, 4, range, data_std, &mut rng);
        });
        assert!(made.is_err(), "data_std {data_std} was accepted");
    }
}

//! Optimizer steps against values computed by hand from PyTorch's update formulas.

use ncsn::Tensor;
use ncsn::autograd::Gradients;
use ncsn::nn::ParamStore;
use ncsn::optim::{Adam, AdamConfig, Ema, Sgd, SgdConfig};

fn setup(p: &[f32]) -> (ParamStore, Tensor) {
    let store = ParamStore::new();
    let t = store
        .root()
        .param("p", Tensor::from_vec(p.to_vec(), &[p.len()]));
    (store, t)
}

fn grads(p: &Tensor, g: &[f32]) -> Gradients {
    let mut gs = Gradients::default();
    gs.insert(p, Tensor::from_vec(g.to_vec(), &[g.len()]));
    gs
}

fn assert_close(a: &[f32], b: &[f64]) {
    // The hand computations are in f64; the optimizer works in f32, so a few ulps of the values
    // (|v| ≤ 2) separate them: 1e-6 is about 8 ulps at 1.0.
    for (x, y) in a.iter().zip(b) {
        assert!((*x as f64 - y).abs() < 1e-6, "{a:?} vs {b:?}");
    }
}

#[test]
fn adam_two_steps_by_hand() {
    let (store, p) = setup(&[1.0, -2.0]);
    let cfg = AdamConfig {
        lr: 0.1,
        weight_decay: 0.5,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(store.named_params(), cfg);
    let (b1, b2, eps, lr, wd) = (0.9f64, 0.999f64, 1e-8f64, 0.1f64, 0.5f64);
    let (mut x, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
    for (t, g) in [(1, [0.5f64, 0.25]), (2, [-1.0, 2.0])] {
        opt.step(&grads(&p, &[g[0] as f32, g[1] as f32]));
        for i in 0..2 {
            let gi = g[i] + wd * x[i];
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let mhat = m[i] / (1.0 - b1.powi(t));
            let denom = (v[i] / (1.0 - b2.powi(t))).sqrt() + eps;
            x[i] -= lr * mhat / denom;
        }
        assert_close(&p.to_vec(), &x);
    }
}

/// Adam adds ε to √v̂, outside the square root: for a gradient g of the order of ε the first step
/// is lr·g/(|g| + ε) (here 0.909 and 0.5 of lr), where ε under the root, lr·g/√(g² + ε), would step
/// 1e-3 of lr and no ε would step all of it. Larger gradients cannot tell these apart.
#[test]
fn adam_adds_eps_after_the_square_root() {
    let (store, p) = setup(&[0.0, 0.0]);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let g = [1e-7f32, -1e-8];
    opt.step(&grads(&p, &g));
    let (lr, eps) = (1e-3f64, 1e-8f64);
    let want: Vec<f64> = g
        .iter()
        .map(|&g| -lr * g as f64 / ((g as f64).abs() + eps))
        .collect();
    // Relative 1e-5: a handful of f32 roundings of numbers near 1e-7, with margin.
    for (x, w) in p.to_vec().iter().zip(&want) {
        assert!((*x as f64 - w).abs() <= 1e-5 * w.abs(), "{x} vs {w}");
    }
}

/// Two default Adam steps from zero against the bits `torch.optim.Adam` (PyTorch 2.15, CPU)
/// produced for the same gradients:
///
/// ```python
/// p = torch.zeros(4, requires_grad=True); opt = torch.optim.Adam([p])
/// for _ in range(2):
///     p.grad = torch.tensor([1.0, -2.0, 0.5, 3.0]); opt.step()
///     s = opt.state[p]; print(s['exp_avg'], s['exp_avg_sq'], p)  # as float.hex()
/// ```
///
/// After the first step the moments are exactly `f32(1 − β₁)·g` and `f32(1 − β₂)·g·g`, with
/// 1 − β worked out in double precision (0.1 and 0.001) as PyTorch does; working it out in `f32`
/// (0.100000024 and 0.00099998713) misses every one of these bits. PyTorch's vectorised `lerp`
/// fuses its multiply-add where ours rounds twice (no FMA, so that the bits do not depend on the
/// processor), so from the second step on a moment may differ by an ulp: 1 ulp is the bound there.
#[test]
fn adam_matches_pytorch_bits() {
    let (store, p) = setup(&[0.0; 4]);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    let g = [1.0, -2.0, 0.5, 3.0];
    let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let ulps = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x.to_bits() as i64 - y.to_bits() as i64).unsigned_abs())
            .max()
            .unwrap()
    };
    #[rustfmt::skip]
    let torch: [[[u32; 4]; 3]; 2] = [
        [
            [0x3dcccccd, 0xbe4ccccd, 0x3d4ccccd, 0x3e99999a], // exp_avg
            [0x3a83126f, 0x3b83126f, 0x3983126f, 0x3c1374bc], // exp_avg_sq
            [0xba83126e, 0x3a83126e, 0xba83126e, 0xba83126f], // the parameter
        ],
        [
            [0x3e428f5c, 0xbec28f5c, 0x3dc28f5c, 0x3f11eb85],
            [0x3b0301a8, 0x3c0301a8, 0x3a0301a8, 0x3c9361dc],
            [0xbb03126e, 0x3b03126e, 0xbb03126e, 0xbb03126f],
        ],
    ];
    for (step, [m, v, x]) in torch.into_iter().enumerate() {
        opt.step(&grads(&p, &g));
        let (tensors, _) = opt.state_dict();
        let moment = |name: &str| {
            let t = &tensors.iter().find(|(k, _)| k == name).unwrap().1;
            t.iter().copied().collect::<Vec<f32>>()
        };
        let (ours_m, ours_v) = (moment("p.exp_avg"), moment("p.exp_avg_sq"));
        let [m, v, x] = [m, v, x].map(|t| t.map(f32::from_bits));
        if step == 0 {
            assert_eq!(bits(&ours_m), bits(&m), "exp_avg after step 1");
            assert_eq!(bits(&ours_v), bits(&v), "exp_avg_sq after step 1");
            assert_eq!(bits(&p.to_vec()), bits(&x), "parameter after step 1");
        } else {
            assert!(ulps(&ours_m, &m) <= 1, "exp_avg {ours_m:?} vs {m:?}");
            assert!(ulps(&ours_v, &v) <= 1, "exp_avg_sq {ours_v:?} vs {v:?}");
            assert!(
                ulps(&p.to_vec(), &x) <= 1,
                "parameter {:?} vs {x:?}",
                p.to_vec()
            );
        }
    }
}

#[test]
fn adam_amsgrad_uses_running_max() {
    let (store, p) = setup(&[0.0]);
    let cfg = AdamConfig {
        lr: 1.0,
        amsgrad: true,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(store.named_params(), cfg);
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
    let (mut x, mut m, mut v, mut vmax) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    // A large gradient then a small one: AMSGrad keeps the large second moment.
    for (t, g) in [(1, 10.0f64), (2, 0.1)] {
        opt.step(&grads(&p, &[g as f32]));
        m = b1 * m + (1.0 - b1) * g;
        v = b2 * v + (1.0 - b2) * g * g;
        vmax = vmax.max(v);
        x -= m / (1.0 - b1.powi(t)) / ((vmax / (1.0 - b2.powi(t))).sqrt() + eps);
        assert_close(&p.to_vec(), &[x]);
    }
}

/// AMSGrad with weight decay, three steps by hand: PyTorch's `_single_tensor_adam` adds λ·p to
/// the gradient before either branch, so AMSGrad's update sees the decayed gradient in both
/// moments, and its denominator uses the running maximum of v. The gradients shrink after the
/// first step (with β₂ = 0.9, v falls from step 2 on) so that the maximum is step 1's v: the plain
/// v would end 0.009 away. Weight decay 0.5 on parameters of size 1–2 adds 0.5–1 to gradients of
/// 0.4–0.9: leaving it out ends 0.15 away, both far beyond the 1e-6 of f32 rounding (see
/// `assert_close`).
#[test]
fn amsgrad_with_weight_decay_by_hand() {
    let (store, p) = setup(&[1.0, -2.0]);
    let cfg = AdamConfig {
        lr: 0.1,
        beta2: 0.9,
        weight_decay: 0.5,
        amsgrad: true,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(store.named_params(), cfg);
    let (b1, b2, eps, lr, wd) = (0.9f64, 0.9f64, 1e-8f64, 0.1f64, 0.5f64);
    let (mut x, mut m, mut v, mut vmax) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
    for (t, g) in [(1, [0.5f64, -0.4]), (2, [-0.4, 0.9]), (3, [-0.4, 0.9])] {
        opt.step(&grads(&p, &[g[0] as f32, g[1] as f32]));
        for i in 0..2 {
            let gi = g[i] + wd * x[i];
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            vmax[i] = vmax[i].max(v[i]);
            let mhat = m[i] / (1.0 - b1.powi(t));
            let denom = (vmax[i] / (1.0 - b2.powi(t))).sqrt() + eps;
            x[i] -= lr * mhat / denom;
        }
        assert_close(&p.to_vec(), &x);
    }
}

/// PyTorch's SGD: d = g + λx; buf = d on the first step, then buf = μ·buf + (1 − dampening)·d;
/// the step is buf (or d + μ·buf with Nesterov). Dampening 0.5 halves every new term after the
/// first, which moves x by about 0.05 by the third step, far beyond f32 rounding.
#[test]
fn sgd_momentum_nesterov_by_hand() {
    for (nesterov, dampening) in [(false, 0.0), (true, 0.0), (false, 0.5)] {
        let (store, p) = setup(&[1.0]);
        let cfg = SgdConfig {
            lr: 0.1,
            momentum: 0.9,
            dampening,
            weight_decay: 0.1,
            nesterov,
        };
        let mut opt = Sgd::new(store.named_params(), cfg);
        let (mut x, mut buf): (f64, Option<f64>) = (1.0, None);
        for g in [1.0f64, -0.5, 2.0] {
            opt.step(&grads(&p, &[g as f32]));
            let d = g + 0.1 * x;
            let b = match buf {
                None => d,
                Some(b) => 0.9 * b + (1.0 - dampening) * d,
            };
            buf = Some(b);
            let d = if nesterov { d + 0.9 * b } else { b };
            x -= 0.1 * d;
            assert_close(&p.to_vec(), &[x]);
        }
    }
}

#[test]
fn parameters_without_gradients_are_untouched() {
    let (store, p) = setup(&[1.0, 2.0]);
    let mut opt = Adam::new(store.named_params(), AdamConfig::default());
    opt.step(&Gradients::default());
    assert_eq!(p.to_vec(), vec![1.0, 2.0]);
}

#[test]
fn adam_state_round_trips() {
    let (store, p) = setup(&[1.0, 2.0]);
    let mut a = Adam::new(store.named_params(), AdamConfig::default());
    a.step(&grads(&p, &[0.3, -0.7]));
    let (tensors, meta) = a.state_dict();
    let (store2, p2) = setup(&p.to_vec());
    let mut b = Adam::new(store2.named_params(), AdamConfig::default());
    b.load_state_dict(&tensors.into_iter().collect(), &meta)
        .unwrap();
    a.step(&grads(&p, &[0.1, 0.2]));
    b.step(&grads(&p2, &[0.1, 0.2]));
    assert_eq!(
        p.to_vec(),
        p2.to_vec(),
        "restored optimizer continues bit-identically"
    );
}

/// AMSGrad's state round-trips too, running maxima included (with β₂ = 0.9 and a gradient that
/// shrinks, the maximum is an earlier step's v, so dropping it would change the next step); and
/// it cannot be loaded into plain Adam, which would drop the maxima, nor plain Adam's into
/// AMSGrad, which would have none.
#[test]
fn amsgrad_state_round_trips_and_is_not_mistaken_for_adams() {
    let ams = AdamConfig {
        amsgrad: true,
        beta2: 0.9,
        ..AdamConfig::default()
    };
    let (store, p) = setup(&[1.0, 2.0]);
    let mut a = Adam::new(store.named_params(), ams);
    a.step(&grads(&p, &[0.9, -0.7]));
    a.step(&grads(&p, &[0.1, -0.1]));
    let (tensors, meta) = a.state_dict();
    let tensors: std::collections::BTreeMap<_, _> = tensors.into_iter().collect();
    assert!(tensors.keys().any(|k| k.ends_with(".max_exp_avg_sq")));
    let (store2, p2) = setup(&p.to_vec());
    let mut b = Adam::new(store2.named_params(), ams);
    b.load_state_dict(&tensors, &meta).unwrap();
    a.step(&grads(&p, &[0.05, 0.2]));
    b.step(&grads(&p2, &[0.05, 0.2]));
    assert_eq!(
        p.to_vec(),
        p2.to_vec(),
        "restored AMSGrad continues bit-identically"
    );

    let (store3, _) = setup(&[1.0, 2.0]);
    let mut plain = Adam::new(store3.named_params(), AdamConfig::default());
    let err = plain
        .load_state_dict(&tensors, &meta)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_exp_avg_sq") && err.contains("AMSGrad"),
        "{err}"
    );

    let (store4, p4) = setup(&[1.0, 2.0]);
    let mut adam = Adam::new(store4.named_params(), AdamConfig::default());
    adam.step(&grads(&p4, &[0.3, -0.7]));
    let (t, m) = adam.state_dict();
    let (store5, _) = setup(&[1.0, 2.0]);
    let mut ams2 = Adam::new(store5.named_params(), ams);
    let err = ams2
        .load_state_dict(&t.into_iter().collect(), &m)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_exp_avg_sq"), "{err}");
}

/// A NaN gradient reaches AMSGrad's running maximum, as `torch.maximum` passes it on (f32::max
/// would keep the old maximum and hide it in the optimizer's state); the other elements' maxima
/// stay finite. The device kernel is held to the same in tests/vulkan.rs.
#[test]
fn amsgrad_keeps_a_nan_in_its_running_maximum() {
    let (store, p) = setup(&[0.5, -0.5, 1.0]);
    let config = AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    };
    let mut a = Adam::new(store.named_params(), config);
    a.step(&grads(&p, &[0.1, f32::NAN, 0.2]));
    let (tensors, _) = a.state_dict();
    let (_, vmax) = tensors
        .iter()
        .find(|(k, _)| k.ends_with(".max_exp_avg_sq"))
        .expect("AMSGrad's maxima");
    let vmax: Vec<f32> = vmax.iter().copied().collect();
    assert!(
        vmax[1].is_nan() && vmax[0] > 0.0 && vmax[2] > 0.0,
        "{vmax:?}"
    );
}

/// Two updates with the reference's μ = 0.999 against the bits PyTorch gives for the reference's
/// `(1. - mu) * param + mu * shadow` on `f32` tensors (1 − μ is a Python float, rounded to 0.001
/// in `f32`; from an `f32` μ it would be 0.00099998713, and no bit below would match).
#[test]
fn ema_matches_the_reference_bits() {
    let (store, p) = setup(&[0.0; 3]);
    let mut ema = Ema::new(store.named_params(), 0.999);
    let steps: [([f32; 3], [u32; 3]); 2] = [
        ([1.0, -3.0, 0.1], [0x3a83126f, 0xbb449ba6, 0x38d1b718]),
        ([2.0, 5.0, -0.7], [0x3b448ae0, 0x3b0344c5, 0xba1d5008]),
    ];
    for (param, want) in steps {
        p.set_data(Tensor::from_vec(param.to_vec(), &[3]).storage());
        ema.update();
        let got: Vec<u32> = ema.shadow()[0].1.iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "shadow after the update towards {param:?}");
    }
}

#[test]
fn ema_follows_the_reference_formula() {
    let (store, p) = setup(&[0.0]);
    let mut ema = Ema::new(store.named_params(), 0.9);
    p.set_data(Tensor::from_vec(vec![1.0], &[1]).storage());
    ema.update(); // 0.1·1 + 0.9·0 = 0.1
    p.set_data(Tensor::from_vec(vec![2.0], &[1]).storage());
    ema.update(); // 0.1·2 + 0.9·0.1 = 0.29
    assert!((ema.shadow()[0].1[[0]] - 0.29).abs() < 1e-7);
    ema.copy_to_params();
    assert!((p.to_vec()[0] - 0.29).abs() < 1e-7);
}

/// A parameter whose data lies in memory column-major (made from a transposed array) takes the
/// same Adam steps, to the bit, as the same values laid out row-major: the update pairs each
/// weight with its own gradient and moments by index, whatever the layout. Each element goes
/// through the same f32 operations either way, so the two must agree exactly; a loop over memory
/// order that met a row-major gradient would pair a weight with another weight's gradient.
#[test]
fn adam_steps_a_column_major_parameter_like_a_row_major_one() {
    let values: Vec<f32> = (0..6).map(|i| 0.5 * i as f32 - 1.25).collect();
    let row_major = Tensor::from_vec(values.clone(), &[2, 3]);
    // The same logical (2, 3) values, stored as the transpose of a row-major (3, 2) array.
    let transposed: Vec<f32> = (0..6).map(|k| values[(k % 2) * 3 + k / 2]).collect();
    let column_major = Tensor::from_array(
        ndarray::Array2::from_shape_vec((3, 2), transposed)
            .unwrap()
            .reversed_axes()
            .into_dyn(),
    );
    assert_eq!(column_major.to_vec(), values, "the same logical values");
    let store = ParamStore::new();
    let a = store.root().param("a", row_major);
    let b = store.root().param("b", column_major);
    let cfg = AdamConfig {
        lr: 0.1,
        weight_decay: 0.1,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(store.named_params(), cfg);
    for step in 0..3 {
        let g: Vec<f32> = (0..6).map(|i| ((i * 5 + step) % 7) as f32 - 3.0).collect();
        let mut gs = Gradients::default();
        gs.insert(&a, Tensor::from_vec(g.clone(), &[2, 3]));
        gs.insert(&b, Tensor::from_vec(g, &[2, 3]));
        opt.step(&gs);
        assert_eq!(b.to_vec(), a.to_vec(), "step {step}");
        assert_ne!(a.to_vec(), values, "the step moved the weights");
    }
}

/// Each parameter counts its own steps: `torch.optim.Adam` keeps `state[p]['step']` for each
/// parameter and passes over one whose `.grad` is None, so a parameter left out of a step is not
/// counted in it. Here `b` sits out the second of three steps: its count ends at 2, `a`'s at 3,
/// and `b` ends where a fresh optimizer given only `b`'s two gradients puts it, to the bit (the
/// same f32 operations in the same order). The gradients change between the steps, so the bias
/// corrections matter: a count advanced for the step `b` sat out would correct its second update
/// by 1 − β₁³ and 1 − β₂³ instead of 1 − β₁² and 1 − β₂², another number entirely.
#[test]
fn a_parameter_left_out_of_a_step_does_not_count_it() {
    let store = ParamStore::new();
    let a = store
        .root()
        .param("a", Tensor::from_vec(vec![1.0, -2.0], &[2]));
    let b = store
        .root()
        .param("b", Tensor::from_vec(vec![0.5, 0.25], &[2]));
    let cfg = AdamConfig {
        lr: 0.1,
        ..AdamConfig::default()
    };
    let mut opt = Adam::new(store.named_params(), cfg);
    let b_grads = [[0.5f32, -1.0], [-2.0, 3.0]];
    let both = |ga: &[f32], gb: &[f32]| {
        let mut gs = grads(&a, ga);
        gs.insert(&b, Tensor::from_vec(gb.to_vec(), &[2]));
        gs
    };
    opt.step(&both(&[0.3, 0.1], &b_grads[0]));
    opt.step(&grads(&a, &[-0.2, 0.4])); // b has no gradient in this step
    opt.step(&both(&[0.7, -0.6], &b_grads[1]));
    let (_, meta) = opt.state_dict();
    assert_eq!(meta["a.step"], "3", "a took every step");
    assert_eq!(meta["b.step"], "2", "b sat out one of the three steps");

    let (lone_store, lone) = setup(&[0.5, 0.25]);
    let mut lone_opt = Adam::new(lone_store.named_params(), cfg);
    for g in &b_grads {
        lone_opt.step(&grads(&lone, g));
    }
    assert_eq!(
        b.to_vec(),
        lone.to_vec(),
        "b after two updates vs a lone Adam's two"
    );
}

/// SGD keeps one momentum buffer for each parameter, as `torch.optim.SGD` keeps
/// `state[p]['momentum_buffer']`: two parameters of the same shape stepped together each end
/// where an optimizer over that parameter alone puts it, to the bit. A buffer shared between them
/// would carry one parameter's gradients into the other's steps.
#[test]
fn sgd_keeps_a_momentum_buffer_for_each_parameter() {
    let cfg = SgdConfig {
        lr: 0.1,
        momentum: 0.9,
        dampening: 0.0,
        weight_decay: 0.0,
        nesterov: false,
    };
    let (init, g) = ([[1.0f32, -1.0], [0.5, 2.0]], [[0.5f32, 1.0], [-3.0, 2.0]]);
    let store = ParamStore::new();
    let ps: Vec<Tensor> = ["a", "b"]
        .iter()
        .zip(&init)
        .map(|(n, v)| store.root().param(n, Tensor::from_vec(v.to_vec(), &[2])))
        .collect();
    let mut opt = Sgd::new(store.named_params(), cfg);
    for step in 0..3 {
        let mut gs = Gradients::default();
        for (p, g) in ps.iter().zip(&g) {
            let scaled: Vec<f32> = g.iter().map(|v| v * (step + 1) as f32).collect();
            gs.insert(p, Tensor::from_vec(scaled, &[2]));
        }
        opt.step(&gs);
    }
    for ((p, init), g) in ps.iter().zip(&init).zip(&g) {
        let (lone_store, lone) = setup(init);
        let mut lone_opt = Sgd::new(lone_store.named_params(), cfg);
        for step in 0..3 {
            let scaled: Vec<f32> = g.iter().map(|v| v * (step + 1) as f32).collect();
            lone_opt.step(&grads(&lone, &scaled));
        }
        assert_eq!(p.to_vec(), lone.to_vec(), "started at {init:?}");
    }
}

/// `Ema::load_shadow` (a resumed run's average, from its checkpoint) checks every name and shape
/// before it changes anything: a tensor missing, or one whose shape is not its parameter's, is
/// refused with the tensor's name, and the average stays as it was. Filling a missing average
/// from the current weights instead would restart that parameter's average without a word; a
/// (1, 2) array taken for a (2) parameter would give the average a shape the weights do not have.
#[test]
fn ema_load_shadow_refuses_a_missing_or_misshaped_tensor() {
    use ndarray::{ArrayD, IxDyn};
    let store = ParamStore::new();
    store
        .root()
        .param("a", Tensor::from_vec(vec![1.0, 2.0], &[2]));
    store.root().param("b", Tensor::from_vec(vec![3.0], &[1]));
    let mut ema = Ema::new(store.named_params(), 0.9);
    let before = ema.shadow();
    let array = |shape: &[usize], v: &[f32]| ArrayD::from_shape_vec(IxDyn(shape), v.to_vec());
    let good: std::collections::BTreeMap<String, ArrayD<f32>> = [
        ("a".to_string(), array(&[2], &[5.0, 6.0]).unwrap()),
        ("b".to_string(), array(&[1], &[7.0]).unwrap()),
    ]
    .into();

    let mut missing = good.clone();
    missing.remove("b");
    let err = ema.load_shadow(&missing).unwrap_err().to_string();
    assert!(err.contains("missing tensor `b`"), "{err}");
    assert_eq!(ema.shadow(), before, "a refused load changed the average");

    let mut misshaped = good.clone();
    misshaped.insert("a".to_string(), array(&[1, 2], &[5.0, 6.0]).unwrap());
    let err = ema.load_shadow(&misshaped).unwrap_err().to_string();
    assert!(err.contains("`a` has shape [1, 2]"), "{err}");
    assert_eq!(ema.shadow(), before, "a refused load changed the average");

    ema.load_shadow(&good).unwrap();
    let loaded: Vec<(String, ArrayD<f32>)> = good.into_iter().collect();
    assert_eq!(ema.shadow(), loaded);
}

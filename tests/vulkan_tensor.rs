//! The Tensor API on a Vulkan device against the same API on the CPU: every op, first- and
//! second-order gradients, a training step with Adam, Langevin loops, and the host↔device copies
//! they make; then the CIFAR-10 pipeline end to end on the device.
//!
//! Run with `cargo test --release --features vulkan --test vulkan_tensor`; lavapipe (Mesa's CPU
//! Vulkan driver) is enough.
//!
//! Tolerances (`u = 2⁻²⁴`, the unit roundoff of f32):
//! - Ops that select or move elements (neg, abs, relu, max/min, comparisons, where, sign, the
//!   movement ops, index_select, max reductions) and correctly rounded arithmetic (add, sub, mul,
//!   x², x + c, c·x: the Vulkan spec requires correct rounding of `+`, `−`, `×`) must agree
//!   exactly.
//! - Division is 2.5 ulp in the Vulkan spec, and the CPU's correctly rounded quotient is within
//!   0.5 ulp of the exact one: |Δ| ≤ 3 ulp ≤ 6u·|want| (an ulp of w is at most 2u·|w|).
//! - Sums of `n` terms in a different order than the CPU's: |Δ| ≤ 2·n·u·Σ|terms| (the a-priori
//!   bound of recursive summation, see tests/vulkan.rs); matmul likewise with `n = k` and the
//!   terms |a_ik·b_kj|.
//! - Transcendental functions (exp, log, sqrt, tanh, sigmoid, softplus, elu, powf): the spec's
//!   bounds are a few ulp (exp: 3 + 2|x| ulp; log: 3 ulp or 2⁻²¹ absolute near 1), and the CPU's
//!   vectorised `fastmath` kernels are within 2 ulp; on inputs with |x| ≤ 4 both stay below
//!   |Δ| ≤ 1e-5·(1 + |want|), the bound used.
//! - Gradients, the training step and Langevin runs chain many such ops: they are compared with
//!   |Δ| ≤ 1e-4·(1 + |want|) (first order), 2e-4·(1 + |want|) (second order); a wrong kernel is
//!   off by O(1).

#![cfg(feature = "vulkan")]

mod common;

use std::sync::Arc;

use ncsn::backend::vulkan::VulkanContext;
use ncsn::nn::{Activation, Mlp, Module, ParamStore};
use ncsn::optim::{Adam, AdamConfig, Ema};
use ncsn::{Device, Tensor, grad, no_grad};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn dev() -> Device {
    Device::vulkan().expect("a Vulkan device (lavapipe will do)")
}

fn random(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product();
    Tensor::from_vec((0..n).map(|_| rng.random_range(lo..hi)).collect(), shape)
}

/// Asserts that `got` (from the device) and `want` (from the CPU) have the same shape and agree
/// elementwise within `tol(i, want_i)`.
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: impl Fn(usize, f32) -> f32) {
    assert_eq!(got.shape(), want.shape(), "{what}: shapes");
    assert!(!got.device().is_cpu(), "{what}: the result left the device");
    let (g, w) = (got.to_vec(), want.to_vec());
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        // An infinite or NaN expectation is met only exactly: a tolerance relative to ∞ is ∞,
        // and would pass any finite number.
        let ok =
            a == b || (a.is_nan() && b.is_nan()) || (b.is_finite() && (a - b).abs() <= tol(i, b));
        assert!(
            ok,
            "{what}: element {i}: device {a} vs cpu {b} (tolerance {})",
            tol(i, b)
        );
    }
}

fn exact(_: usize, _: f32) -> f32 {
    0.0
}

fn transcendental(_: usize, want: f32) -> f32 {
    1e-5 * (1.0 + want.abs())
}

/// Runs `f` on CPU inputs and on the same inputs moved to the device.
fn both(xs: &[Tensor], f: &dyn Fn(&[Tensor]) -> Tensor) -> (Tensor, Tensor) {
    let d = dev();
    let on_dev: Vec<Tensor> = xs.iter().map(|x| x.to(&d)).collect();
    (f(&on_dev), f(xs))
}

/// The names of an optimizer's state tensors, in order.
fn state_names(state: &[(String, ndarray::ArrayD<f32>)]) -> Vec<&str> {
    state.iter().map(|(n, _)| n.as_str()).collect()
}

/// A one-input op, named.
type UnaryCase = (&'static str, fn(&Tensor) -> Tensor);

/// Each op of `ops` on `x`, on the device against the CPU, within `tol`.
fn unary_ops_agree(x: &Tensor, ops: &[UnaryCase], tol: fn(usize, f32) -> f32) {
    for (name, f) in ops {
        let (g, w) = both(std::slice::from_ref(x), &|v| f(&v[0]));
        assert_close(name, &g, &w, tol);
    }
}

#[test]
fn device_round_trip_and_parse() {
    let d = dev();
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert_eq!(Device::parse("vulkan").unwrap(), d, "one shared context");
    let err = Device::parse("tpu").unwrap_err().to_string();
    assert!(err.contains("`cpu` or `vulkan`"), "{err}");
    let args = ["prog", "--steps", "3", "--device", "vulkan"].map(String::from);
    assert_eq!(Device::from_args(args).unwrap(), d);
    assert_eq!(
        Device::from_args(["--device=cpu".to_string()]).unwrap(),
        Device::Cpu
    );
    assert_eq!(
        Device::from_args(Vec::<String>::new()).unwrap(),
        Device::Cpu
    );
    let x = random(&[3, 5, 7], -2.0, 2.0, 1);
    let y = x.to(&d);
    assert_eq!(y.device(), d);
    assert_eq!(y.shape(), x.shape());
    assert_eq!(y.to_vec(), x.to_vec());
    assert_eq!(y.to(&Device::Cpu).to_vec(), x.to_vec());
    assert!(format!("{y:?}").contains("device=vulkan"));
}

/// What `to` promises (see its docs), on the device: a leaf that requires a gradient moves as a
/// new leaf that requires one too, so a tensor moved by hand can still be differentiated in; a
/// move to the device a tensor is on already is the tensor itself, graph and all, so a gradient
/// flows back through it (d/dw Σw² = 2w, exact in f32); a CPU view whose memory is not
/// row-major (a transpose) arrives in its logical order; and a second context is another
/// device, which a tensor moved there lives on.
#[test]
fn to_keeps_requires_grad_the_graph_the_order_and_the_device() {
    let d = dev();
    let w = random(&[2, 3], -2.0, 2.0, 40).requires_grad_();
    let wd = w.to(&d);
    assert!(wd.requires_grad(), "the moved leaf lost requires_grad");
    let y = wd.square().to(&d);
    let g = grad(&[&y.sum_all()], &[&wd], false);
    assert_close(
        "d/dw Σw² through a same-device move",
        &g[0],
        &wd.mul_scalar(2.0),
        exact,
    );

    let t = random(&[3, 4], -2.0, 2.0, 41).permute(&[1, 0]);
    assert_eq!(t.to(&d).to_vec(), t.to_vec(), "a transposed view, uploaded");

    let other = Device::Vulkan(Arc::new(VulkanContext::new().expect("a second context")));
    assert_ne!(other, d, "two contexts are two devices");
    let moved = wd.to(&other);
    match (moved.device(), &other) {
        (Device::Vulkan(a), Device::Vulkan(b)) => assert!(Arc::ptr_eq(&a, b), "moved elsewhere"),
        (on, _) => panic!("moved to {on:?}"),
    }
    assert_eq!(moved.to_vec(), w.to_vec());
}

#[test]
#[should_panic(expected = "where: shapes [3] and [4] do not broadcast")]
fn where_names_its_shapes_as_on_the_cpu() {
    let d = dev();
    let (mask, a) = (Tensor::ones(&[3]).to(&d), Tensor::ones(&[4]).to(&d));
    let _ = Tensor::where_(&mask, &a, &a);
}

#[test]
#[should_panic(expected = "add: inputs on different devices")]
fn mixing_devices_panics_with_the_op() {
    let a = Tensor::ones(&[4]).to(&dev());
    let _ = a.add(&Tensor::ones(&[4]));
}

#[test]
fn cpu_scalars_join_device_ops_as_constants() {
    let x = random(&[9, 31], -3.0, 3.0, 2);
    let (g, w) = both(&[x], &|x| x[0].mul(&Tensor::scalar(2.5)).gt_scalar(1.0));
    assert_close("scalar constants", &g, &w, exact);
    // Also into the ops that read whole buffers: a matmul factor, a 1×1 kernel, a bias.
    let one = Tensor::from_vec(vec![-1.5], &[1, 1]);
    let m = random(&[1, 3], -2.0, 2.0, 5);
    let (g, w) = both(std::slice::from_ref(&m), &|v| one.matmul(&v[0]));
    assert_close("one-element CPU factor in matmul", &g, &w, exact);
    let pic = random(&[2, 1, 5, 5], -2.0, 2.0, 6);
    let (kernel, bias) = (
        one.reshape(&[1, 1, 1, 1]),
        Tensor::from_vec(vec![0.25], &[1]),
    );
    let cfg = ncsn::tensor::Conv2dConfig::default();
    let (g, w) = both(std::slice::from_ref(&pic), &|v| {
        v[0].conv2d(&kernel, Some(&bias), cfg)
    });
    assert_close("one-element CPU kernel and bias in conv2d", &g, &w, exact);
    // A one-element constant keeps its own shape in the broadcast, as on the CPU: [1, 1, 1]
    // against [9, 31] gives [1, 9, 31].
    let c = Tensor::from_vec(vec![0.5], &[1, 1, 1]);
    let x = random(&[9, 31], -3.0, 3.0, 3);
    let (g, w) = both(&[x], &|x| x[0].add(&c));
    assert_eq!(w.shape(), &[1, 9, 31]);
    assert_close("a [1, 1, 1] constant", &g, &w, exact);
}

/// A convolution with more output pixels than 65535 tiles of 128 cover is refused before the
/// dispatch, naming the op and the remedy (the dispatch would fail validation).
#[test]
#[should_panic(expected = "conv2d: 8392609 output pixels (N·H·W) by 1 channels need [65568, 1]")]
fn conv2d_past_the_dispatch_limit_is_named() {
    let x = Tensor::zeros(&[1, 1, 2897, 2897]).to(&dev());
    let w = Tensor::ones(&[1, 1, 1, 1]).to(&dev());
    let _ = x.conv2d(&w, None, ncsn::tensor::Conv2dConfig::default());
}

#[test]
fn unary_ops_match_cpu() {
    let x = random(&[7, 37], -4.0, 4.0, 3); // 259 elements: not a multiple of 256
    let pos = random(&[7, 37], 0.05, 4.0, 4);
    let exact_ops: [UnaryCase; 7] = [
        ("neg", |x| x.neg()),
        ("abs", |x| x.abs()),
        ("relu", |x| x.relu()),
        ("square", |x| x.square()),
        ("add_scalar", |x| x.add_scalar(0.75)),
        ("mul_scalar", |x| x.mul_scalar(-1.5)),
        ("sign", |x| x.sign()),
    ];
    unary_ops_agree(&x, &exact_ops, exact);
    let approx_ops: [UnaryCase; 8] = [
        ("exp", |x| x.exp()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("softplus", |x| x.softplus()),
        ("elu", |x| x.elu(1.0)),
        ("elu 2.5", |x| x.elu(2.5)), // α travels as a push constant
        ("powf 3 (negative bases)", |x| x.powf(3.0)),
        ("powf 2 (negative bases)", |x| x.powf(2.0)),
    ];
    unary_ops_agree(&x, &approx_ops, transcendental);
    let positive_ops: [UnaryCase; 3] = [
        ("log", |x| x.log()),
        ("sqrt", |x| x.sqrt()),
        ("powf 0.5", |x| x.powf(0.5)),
    ];
    unary_ops_agree(&pos, &positive_ops, transcendental);
    // Division: 2.5 ulp in the Vulkan spec against the CPU's correctly rounded quotient.
    let (g, w) = both(std::slice::from_ref(&x), &|v| v[0].div_scalar(3.0));
    assert_close("div_scalar", &g, &w, |_, w| 3.0 * f32::EPSILON * w.abs());
}

/// ELU just below 0, and softplus and sigmoid far below 0, are small numbers, which an absolute
/// tolerance cannot judge: `exp(v) − 1` there loses 1.4e-3 of elu(−1e-5) to cancellation,
/// `log(1 + y)` rounds 1 + y (5e-4 of softplus(−9.02), 8,000 ulps), and a kernel that returned 0
/// for softplus(−80) ≈ 1.8e-35 would pass any absolute tolerance. (Softplus far below 0 is e^x,
/// not the 0 that log(1 + e^x) rounds to in f32.) So each value is held to the CPU relative to its
/// size, within (16 + 2|x|) ulps: Vulkan lets `exp(x)` be off by 3 + 2|x| ulps, which the result
/// inherits (times e^x/(1 − e^x) ≤ 2.4 for elu at x ≤ −0.35), and the polynomials that both
/// devices share add a few roundings, in whatever order each compiler chooses.
#[test]
fn activations_are_accurate_relative_to_their_size() {
    type Activation = fn(&Tensor) -> Tensor;
    let small_negative: Vec<f32> = (0..8).map(|k| -(10f32).powi(-k)).collect(); // −1 … −1e-7
    let elu_x: Vec<f32> = [-0.34, -0.36, -5.0, -17.0, -30.0]
        .into_iter()
        .chain(small_negative.iter().copied())
        .collect();
    let softplus_x: Vec<f32> = [
        -80.0, -30.0, -17.0, -9.5, -9.1, -9.03, -9.02, -9.0, -8.5, -5.0, -1.0, -0.1, 0.0, 0.1, 1.0,
        9.02, 19.9,
    ]
    .into_iter()
    .chain(small_negative.iter().copied())
    .collect();
    let cases: [(&str, &[f32], Activation); 4] = [
        ("elu", &elu_x, |x| x.elu(1.0)),
        ("elu 2.5", &elu_x, |x| x.elu(2.5)),
        ("softplus", &softplus_x, |x| x.softplus()),
        ("sigmoid", &softplus_x, |x| x.sigmoid()),
    ];
    for (name, xs, f) in cases {
        let x = Tensor::from_vec(xs.to_vec(), &[xs.len()]);
        let (g, w) = both(std::slice::from_ref(&x), &|v| f(&v[0]));
        assert_close(name, &g, &w, |i, want| {
            (16.0 + 2.0 * xs[i].abs()) * f32::EPSILON * want.abs()
        });
    }
}

#[test]
fn binary_ops_broadcast_like_cpu() {
    let cases: [(&[usize], &[usize]); 4] = [
        (&[5, 67], &[5, 67]),
        (&[3, 1, 67], &[5, 1]),
        (&[67], &[2, 3, 67]),
        (&[1], &[4, 65]),
    ];
    let (mut ties, mut pairs) = (0, 0);
    for (i, (sa, sb)) in cases.iter().enumerate() {
        // Ties, so that comparisons and max/min meet equal values (where `ge` and `gt`, `le`
        // and `lt`, differ): about a third of `a` is ±0 (|a| < 1 times 0 keeps its sign, and −0
        // equals 0) and half of `b` is +0, so about one pair in six ties.
        let a = random(sa, -3.0, 3.0, 10 + i as u64);
        let a = Tensor::where_(&a.abs().lt_scalar(1.0), &a.mul_scalar(0.0), &a);
        let b = random(sb, -3.0, 3.0, 20 + i as u64)
            .mul_scalar(4.0)
            .relu()
            .mul_scalar(0.25);
        let tied = a.eq(&b).to_vec();
        ties += tied.iter().filter(|&&t| t == 1.0).count();
        pairs += tied.len();
        let xs = [a, b];
        type F = fn(&Tensor, &Tensor) -> Tensor;
        let ops: [(&str, F); 11] = [
            ("add", |a, b| a.add(b)),
            ("sub", |a, b| a.sub(b)),
            ("mul", |a, b| a.mul(b)),
            ("maximum", |a, b| a.maximum(b)),
            ("minimum", |a, b| a.minimum(b)),
            ("gt", |a, b| a.gt(b)),
            ("ge", |a, b| a.ge(b)),
            ("lt", |a, b| a.lt(b)),
            ("le", |a, b| a.le(b)),
            ("eq", |a, b| a.eq(b)),
            ("where", |a, b| Tensor::where_(&a.gt_scalar(0.0), a, b)),
        ];
        for (name, f) in ops {
            let (g, w) = both(&xs, &|v| f(&v[0], &v[1]));
            assert_close(&format!("{name} {sa:?} {sb:?}"), &g, &w, exact);
        }
        let (g, w) = both(&xs, &|v| v[0].div(&v[1].add_scalar(3.5)));
        assert_close(&format!("div {sa:?} {sb:?}"), &g, &w, |_, w| {
            3.0 * f32::EPSILON * w.abs()
        });
    }
    assert!(ties * 12 >= pairs, "{ties} ties in {pairs} pairs");
}

#[test]
fn reductions_match_cpu() {
    let x = random(&[5, 3, 67], -2.0, 2.0, 30);
    let xs = std::slice::from_ref(&x);
    for axes in [&[0isize][..], &[1], &[2], &[0, 2], &[-1, -2], &[0, 1, 2]] {
        for keepdim in [false, true] {
            let n: usize = axes
                .iter()
                .map(|&a| x.shape()[a.rem_euclid(3) as usize])
                .product();
            // Every term is at most 2 in magnitude: Σ|terms| ≤ 2n.
            let tol = 2.0 * n as f32 * (f32::EPSILON / 2.0) * 2.0 * n as f32;
            let (g, w) = both(xs, &|v| v[0].sum(axes, keepdim));
            assert_close(&format!("sum {axes:?} {keepdim}"), &g, &w, |_, _| tol);
            let (g, w) = both(xs, &|v| v[0].max(axes, keepdim));
            assert_close(&format!("max {axes:?} {keepdim}"), &g, &w, exact);
        }
    }
    let (g, w) = both(xs, &|v| v[0].sum(&[], false));
    assert_close("sum over no axes", &g, &w, exact);
    let (g, w) = both(xs, &|v| v[0].logsumexp(&[-1], false));
    assert_close("logsumexp", &g, &w, transcendental);
    let (g, w) = both(xs, &|v| v[0].var(&[0, 2], true, true));
    assert_close("var", &g, &w, |_, w| 1e-5 * (1.0 + w.abs()));
}

/// NaN and the infinities take the CPU's (and so PyTorch's) path on the device. GLSL leaves
/// `max`, `min` and `clamp` of a NaN undefined, so relu, maximum, minimum, tanh and the max
/// reduction test for NaN themselves; logsumexp must give −∞ for a row of −∞ and +∞ for a row
/// holding +∞. Transcendental ops are compared within `transcendental`, the rest exactly.
///
/// Only the NaN-preserving kernels promise any of this: without the SignedZeroInfNanPreserve
/// execution mode the Vulkan spec lets a driver compile as if no value were NaN or infinite, and
/// fold the shaders' own `isnan` tests away. With the plain kernels (`NCSN_VULKAN_KERNELS=plain`,
/// or a device without the property) the test says so and checks nothing.
#[test]
fn nan_and_infinities_match_cpu() {
    let Device::Vulkan(ctx) = dev() else {
        unreachable!("Device::vulkan gives a Vulkan device")
    };
    if !ctx.preserves_nan() {
        eprintln!(
            "nan_and_infinities_match_cpu: plain kernels, which promise nothing of NaN; skipped"
        );
        return;
    }
    const N: f32 = f32::NAN;
    const I: f32 = f32::INFINITY;
    let x = Tensor::from_vec(vec![1.0, N, -2.0, I, -I, 0.0, 100.0, -100.0, -0.5], &[9]);
    let exact_ops: [UnaryCase; 5] = [
        ("neg", |x| x.neg()),
        ("abs", |x| x.abs()),
        ("relu", |x| x.relu()),
        ("add_scalar", |x| x.add_scalar(0.75)),
        ("mul_scalar", |x| x.mul_scalar(-1.5)),
    ];
    unary_ops_agree(&x, &exact_ops, exact);
    // x against itself reversed: NaN meets a number from either side, and ∞ meets −∞.
    let pair = [
        x.clone(),
        Tensor::from_vec(x.to_vec().into_iter().rev().collect(), &[9]),
    ];
    let (g, w) = both(&pair, &|v| v[0].maximum(&v[1]));
    assert_close("maximum", &g, &w, exact);
    let (g, w) = both(&pair, &|v| v[0].minimum(&v[1]));
    assert_close("minimum", &g, &w, exact);
    // log and sqrt where GLSL leaves them undefined: ln 0 = −∞, and NaN for negative x.
    let approx_ops: [UnaryCase; 7] = [
        ("log", |x| x.log()),
        ("sqrt", |x| x.sqrt()),
        ("exp", |x| x.exp()),
        ("tanh", |x| x.tanh()),
        ("sigmoid", |x| x.sigmoid()),
        ("softplus", |x| x.softplus()),
        ("elu", |x| x.elu(1.0)),
    ];
    unary_ops_agree(&x, &approx_ops, transcendental);
    // powf, where GLSL's pow is undefined (negative, zero, infinite and NaN bases or powers) and
    // the shader follows C's powf as the CPU does: NaN stays NaN, 0^-1 = inf, (-inf)^3 = -inf,
    // (-2)^0.5 = NaN, and 1^NaN = 1, (-1)^±inf = 1.
    let more = Tensor::from_vec(vec![-0.0, 0.0, -1.0], &[3]);
    let bases = Tensor::concat(&[x.clone(), more], 0);
    for p in [2.0, 3.0, -1.0, -2.0, 0.5, -0.5, 1.5, 0.0, N, I, -I] {
        let (g, w) = both(std::slice::from_ref(&bases), &|v| v[0].powf(p));
        assert_close(&format!("powf {p}"), &g, &w, transcendental);
    }
    // A max over 1000 elements, so that the NaN (or the infinity) meets the shared-memory tree
    // and not only one thread's running maximum.
    let mut long = random(&[3, 1000], -2.0, 2.0, 35).to_vec();
    long[700] = N;
    long[1000 + 999] = I;
    long[2000 + 3] = -I;
    let long = Tensor::from_vec(long, &[3, 1000]);
    let (g, w) = both(std::slice::from_ref(&long), &|v| v[0].max(&[1], false));
    assert_close("max with NaN and ±∞", &g, &w, exact);
    let rows = Tensor::from_vec(vec![-I, -I, I, 1.0, I, -I, N, 1.0, 1.0, 2.0], &[5, 2]);
    let (g, w) = both(std::slice::from_ref(&rows), &|v| {
        v[0].logsumexp(&[1], false)
    });
    assert_close("logsumexp with NaN and ±∞", &g, &w, transcendental);
    assert_eq!(w.to_vec()[..2], [-I, I], "the CPU's rows themselves");
}

#[test]
fn movement_ops_match_cpu() {
    let x = random(&[3, 5, 7, 2], -2.0, 2.0, 40);
    let ops: [UnaryCase; 12] = [
        ("reshape", |x| x.reshape(&[15, 14])),
        ("permute", |x| x.permute(&[2, 0, 3, 1])),
        ("t", |x| x.t()),
        ("broadcast_to", |x| {
            x.narrow(1, 2, 1).broadcast_to(&[2, 3, 4, 7, 2])
        }),
        ("narrow", |x| x.narrow(2, 1, 5)),
        ("narrow of permute", |x| {
            x.permute(&[1, 0, 3, 2]).narrow(0, 3, 2)
        }),
        ("pad", |x| x.pad_axis(1, 2, 3)),
        ("pad last", |x| x.pad_axis(3, 0, 1)),
        ("concat", |x| {
            Tensor::concat(&[x.narrow(1, 0, 2), x.clone(), x.narrow(1, 4, 1)], 1)
        }),
        ("stack", |x| Tensor::stack(&[x.clone(), x.neg()], 2)),
        ("index_select", |x| x.index_select(1, &[4, 0, 0, 2, 3, 1])),
        ("index_add", |x| {
            x.index_add_into(4, 2, Arc::new(vec![3, 0, 3, 1, 1, 1, 2]))
        }),
    ];
    unary_ops_agree(&x, &ops, exact);
}

#[test]
fn matmul_matches_cpu() {
    let cases: [(&[usize], &[usize]); 5] = [
        (&[65, 33], &[33, 70]),
        (&[3, 17, 9], &[3, 9, 5]),
        (&[3, 17, 9], &[9, 5]),
        (&[2, 1, 5, 7], &[3, 7, 9]),
        (&[1, 4, 6], &[2, 6, 3]),
    ];
    for (i, (sa, sb)) in cases.iter().enumerate() {
        let a = random(sa, -1.0, 1.0, 50 + i as u64);
        let b = random(sb, -1.0, 1.0, 60 + i as u64);
        let k = sa[sa.len() - 1];
        // Each product is at most 1 in magnitude: Σ|terms| ≤ k.
        let tol = 2.0 * k as f32 * (f32::EPSILON / 2.0) * k as f32;
        let (g, w) = both(&[a, b], &|v| v[0].matmul(&v[1]));
        assert_close(&format!("matmul {sa:?} {sb:?}"), &g, &w, |_, _| tol);
    }
    // A transposed operand (a permute on the device).
    let a = random(&[33, 65], -1.0, 1.0, 70);
    let b = random(&[70, 33], -1.0, 1.0, 71);
    let tol = 2.0 * 33.0 * (f32::EPSILON / 2.0) * 33.0;
    let (g, w) = both(&[a, b], &|v| v[0].t().matmul(&v[1].t()));
    assert_close("matmul of transposes", &g, &w, |_, _| tol);
}

/// Functions of several inputs whose gradients are compared across devices: together they pass
/// through every VJP (and, differentiated twice, through the VJPs of the VJPs).
type GradCase = (&'static str, Vec<Tensor>, fn(&[Tensor]) -> Tensor);

fn grad_cases() -> Vec<GradCase> {
    vec![
        (
            "mlp layer",
            vec![
                random(&[6, 5], -1.0, 1.0, 80),
                random(&[7, 5], -1.0, 1.0, 81),
                random(&[7], -1.0, 1.0, 82),
            ],
            |v| v[0].matmul(&v[1].t()).add(&v[2]).softplus().tanh(),
        ),
        (
            // One op on the CPU, the matmul-and-add composite on the device.
            "linear",
            vec![
                random(&[6, 5], -1.0, 1.0, 91),
                random(&[7, 5], -1.0, 1.0, 92),
                random(&[7], -1.0, 1.0, 93),
            ],
            |v| v[0].linear(&v[1], Some(&v[2])).softplus(),
        ),
        (
            "elementwise",
            vec![random(&[3, 5], 0.2, 2.0, 83), random(&[5], 0.5, 2.0, 84)],
            |v| {
                v[0].log()
                    .mul(&v[1])
                    .div(&v[1].add_scalar(1.0))
                    .sub(&v[0].sqrt())
                    .add(&v[0].sigmoid().mul(&v[0].exp()))
                    .add(&v[0].powf(3.0).elu(1.0))
                    .add(&v[0].neg().elu(2.5)) // elu′ = f + α for x ≤ 0, with α ≠ 1
            },
        ),
        (
            "max, where, abs",
            vec![
                random(&[4, 6], -2.0, 2.0, 85),
                random(&[4, 1], -2.0, 2.0, 86),
            ],
            |v| {
                let m = v[0].maximum(&v[1]).minimum(&v[1].add_scalar(1.0));
                Tensor::where_(&v[0].gt_scalar(0.0), &m, &v[0].abs().mul(&v[1]))
                    .add(&v[0].max(&[1], true))
            },
        ),
        ("reductions", vec![random(&[3, 4, 5], -2.0, 2.0, 87)], |v| {
            v[0].logsumexp(&[1], true)
                .add(&v[0].var(&[0, 2], true, true))
                .mul(&v[0].mean(&[2], true))
        }),
        ("movement", vec![random(&[3, 4, 5], -2.0, 2.0, 88)], |v| {
            let x = &v[0];
            let y = Tensor::concat(&[x.narrow(1, 1, 2), x.pad_axis(1, 1, 0)], 1);
            let z = y
                .permute(&[2, 0, 1])
                .reshape(&[5, 3, 7])
                .index_select(0, &[4, 1, 1, 0]);
            z.mul(&z).sum_to(&[1, 3, 7]).broadcast_to(&[2, 3, 7])
        }),
        (
            "batched matmul",
            vec![
                random(&[2, 1, 3, 4], -1.0, 1.0, 89),
                random(&[3, 4, 2], -1.0, 1.0, 90),
            ],
            |v| v[0].matmul(&v[1]).square(),
        ),
    ]
}

/// L = Σ (w ⊙ f + ½ f²), as in tests/common: a non-zero second derivative even for linear f.
fn loss(f: fn(&[Tensor]) -> Tensor, xs: &[Tensor]) -> Tensor {
    let y = f(xs);
    let w = random(y.shape(), -1.0, 1.0, 99).to(&y.device());
    y.mul(&w).add(&y.square().mul_scalar(0.5)).sum_all()
}

fn leaves(xs: &[Tensor], d: &Device) -> Vec<Tensor> {
    xs.iter()
        .map(|x| x.to(d).detach().requires_grad_())
        .collect()
}

#[test]
fn first_order_gradients_match_cpu() {
    for (name, xs, f) in grad_cases() {
        let grads = |d: &Device| {
            let xs = leaves(&xs, d);
            let refs: Vec<&Tensor> = xs.iter().collect();
            grad(&[&loss(f, &xs)], &refs, false)
        };
        let (g, w) = (grads(&dev()), grads(&Device::Cpu));
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            assert_close(&format!("{name}: ∂L/∂x{i}"), g, w, |_, w| {
                1e-4 * (1.0 + w.abs())
            });
        }
    }
}

#[test]
fn second_order_gradients_match_cpu() {
    for (name, xs, f) in grad_cases() {
        // The Hessian-vector product ∇⟨∇L, u⟩ by double backward (create_graph on the device).
        let hvp = |d: &Device| {
            let xs = leaves(&xs, d);
            let refs: Vec<&Tensor> = xs.iter().collect();
            let gs = grad(&[&loss(f, &xs)], &refs, true);
            let dot = gs
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let u = random(g.shape(), -1.0, 1.0, 200 + i as u64).to(d);
                    g.mul(&u).sum_all()
                })
                .reduce(|a, b| a.add(&b))
                .unwrap();
            grad(&[&dot], &refs, false)
        };
        let (g, w) = (hvp(&dev()), hvp(&Device::Cpu));
        for (i, (g, w)) in g.iter().zip(&w).enumerate() {
            assert_close(&format!("{name}: (Hu)[x{i}]"), g, w, |_, w| {
                2e-4 * (1.0 + w.abs())
            });
        }
    }
}

/// A small MLP, its optimizer, and a regression batch, on `device`.
fn mlp_setup(device: &Device) -> (ParamStore, Mlp, Adam, Tensor, Tensor) {
    mlp_setup_with(device, AdamConfig::default())
}

/// [`mlp_setup`] with an optimizer of other settings.
fn mlp_setup_with(device: &Device, config: AdamConfig) -> (ParamStore, Mlp, Adam, Tensor, Tensor) {
    let store = ParamStore::new();
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mlp = Mlp::new(
        &store.root(),
        &[3, 17, 9, 2],
        Activation::Softplus,
        &mut rng,
    );
    store.to_device(device);
    let adam = Adam::new(store.named_params(), config);
    let x = random(&[33, 3], -2.0, 2.0, 300);
    let y = random(&[33, 2], -1.0, 1.0, 301);
    (store, mlp, adam, x, y)
}

// ANCHOR: train_step
/// One training step: upload the batch, forward, backward, Adam, and read the loss.
fn train_step(mlp: &Mlp, adam: &mut Adam, x: &Tensor, y: &Tensor, device: &Device) -> f32 {
    let (x, y) = (x.to(device), y.to(device));
    let loss = mlp.forward(&x).sub(&y).square().mean_all();
    let grads = loss.backward();
    adam.step(&grads);
    loss.item()
}
// ANCHOR_END: train_step

#[test]
fn mlp_training_steps_match_cpu() {
    let d = dev();
    let (dstore, dmlp, mut dadam, x, y) = mlp_setup(&d);
    let (cstore, cmlp, mut cadam, _, _) = mlp_setup(&Device::Cpu);
    for step in 0..4 {
        let ld = train_step(&dmlp, &mut dadam, &x, &y, &d);
        let lc = train_step(&cmlp, &mut cadam, &x, &y, &Device::Cpu);
        assert!(
            (ld - lc).abs() <= 1e-5 * (1.0 + lc.abs()),
            "step {step}: loss on device {ld} vs cpu {lc}"
        );
    }
    for ((name, p), (_, q)) in dstore.named_params().iter().zip(cstore.named_params()) {
        assert!(!p.device().is_cpu(), "{name} left the device");
        // Adam moves each parameter by about lr per step: compare to a fraction of that.
        assert_close(name, p, &q, |_, w| 1e-5 * (1.0 + w.abs()));
    }
    // The optimizer state comes back from the device for a checkpoint.
    let (dt, dm) = dadam.state_dict();
    let (ct, cm) = cadam.state_dict();
    assert_eq!(dm, cm);
    // The same tensors by name, so that the comparison below cannot run over fewer of them.
    assert_eq!(state_names(&dt), state_names(&ct));
    for ((n, a), (_, b)) in dt.iter().zip(&ct) {
        let diff = common::worst((a - b).iter().map(|v| v.abs()));
        assert!(diff <= 1e-5, "{n}: moments differ by {diff}");
    }
}

/// Parameters that move back to the CPU after training on the device bring Adam's moments with
/// them: two steps on the device, the model moved home, two steps on the CPU, against four steps
/// on the CPU alone, to the same 1e-5 as the device steps themselves. Moments left behind on the
/// device (the CPU restarting from zero, or from the state before the device steps) would make
/// step 3 a fresh first step of Adam, lr·sign(g), and move every weight by ~1e-3 from the
/// reference.
#[test]
fn adam_moments_come_home_with_the_parameters() {
    let d = dev();
    let (dstore, dmlp, mut dadam, x, y) = mlp_setup(&d);
    let (cstore, cmlp, mut cadam, _, _) = mlp_setup(&Device::Cpu);
    for step in 0..4 {
        if step == 2 {
            dstore.to_device(&Device::Cpu);
        }
        let device = if step < 2 { &d } else { &Device::Cpu };
        let ld = train_step(&dmlp, &mut dadam, &x, &y, device);
        let lc = train_step(&cmlp, &mut cadam, &x, &y, &Device::Cpu);
        assert!(
            (ld - lc).abs() <= 1e-5 * (1.0 + lc.abs()),
            "step {step}: loss {ld} vs cpu {lc}"
        );
    }
    for ((name, p), (_, q)) in dstore.named_params().iter().zip(cstore.named_params()) {
        assert!(p.device().is_cpu(), "{name} is home");
        let (p, q) = (p.to_vec(), q.to_vec());
        for (i, (a, b)) in p.iter().zip(&q).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{name}[{i}]: {a} vs cpu {b}"
            );
        }
    }
}

/// AMSGrad on the device (`shaders/adam_amsgrad.comp`): the same parameters and optimizer state
/// as on the CPU — the running maxima included — and a step still copies only the batch and the
/// loss.
#[test]
fn amsgrad_on_the_device_matches_cpu_and_copies_only_the_batch() {
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let config = AdamConfig {
        amsgrad: true,
        ..AdamConfig::default()
    };
    let (dstore, dmlp, mut dadam, x, y) = mlp_setup_with(&d, config);
    let (cstore, cmlp, mut cadam, _, _) = mlp_setup_with(&Device::Cpu, config);
    for step in 0..4 {
        let before = ctx.transfers();
        let ld = train_step(&dmlp, &mut dadam, &x, &y, &d);
        let t = ctx.transfers() - before;
        let lc = train_step(&cmlp, &mut cadam, &x, &y, &Device::Cpu);
        assert!(
            (ld - lc).abs() <= 1e-5 * (1.0 + lc.abs()),
            "step {step}: loss on device {ld} vs cpu {lc}"
        );
        if step > 0 {
            assert_eq!((t.uploads, t.downloads), (2, 1), "step {step}: {t:?}");
        }
    }
    for ((name, p), (_, q)) in dstore.named_params().iter().zip(cstore.named_params()) {
        assert!(!p.device().is_cpu(), "{name} left the device");
        assert_close(name, p, &q, |_, w| 1e-5 * (1.0 + w.abs()));
    }
    let ((dt, dm), (ct, cm)) = (dadam.state_dict(), cadam.state_dict());
    assert_eq!(dm, cm);
    assert_eq!(state_names(&dt), state_names(&ct));
    assert!(
        state_names(&dt)
            .iter()
            .any(|n| n.ends_with(".max_exp_avg_sq"))
    );
    for ((n, a), (_, b)) in dt.iter().zip(&ct) {
        let diff = common::worst((a - b).iter().map(|v| v.abs()));
        assert!(diff <= 1e-5, "{n}: optimizer state differs by {diff}");
    }
}

// ANCHOR: copy_count
#[test]
fn a_training_step_copies_only_the_batch_and_the_loss() {
    // A private context, so that no other test's copies are counted.
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let (_store, mlp, mut adam, x, y) = mlp_setup(&d);
    train_step(&mlp, &mut adam, &x, &y, &d); // warm-up: Adam's moments are made on the device
    let before = ctx.transfers();
    train_step(&mlp, &mut adam, &x, &y, &d);
    let t = ctx.transfers() - before;
    eprintln!("one training step: {t:?}");
    assert_eq!(t.uploads, 2, "the batch: x and y");
    assert_eq!(t.upload_bytes, 4 * (33 * 3 + 33 * 2));
    assert_eq!(t.downloads, 1, "the loss");
    assert_eq!(t.download_bytes, 4);
}
// ANCHOR_END: copy_count

/// Three training steps on the device and on the CPU, each followed by an update of a weight
/// average of either's parameters, the device's average made while its parameters were still on
/// the CPU when `made_on_cpu`; checks that the two averages agree to 1e-5 and that the device's
/// updates copy nothing (after the first, when its average has yet to follow its parameters), and
/// returns the device's parameters and average.
fn device_and_cpu_averages(ctx: &Arc<VulkanContext>, made_on_cpu: bool) -> (ParamStore, Ema) {
    let d = Device::Vulkan(ctx.clone());
    let (dstore, dmlp, mut dadam, x, y) = mlp_setup(if made_on_cpu { &Device::Cpu } else { &d });
    let (cstore, cmlp, mut cadam, _, _) = mlp_setup(&Device::Cpu);
    let (mut dema, mut cema) = (
        Ema::new(dstore.named_params(), 0.9),
        Ema::new(cstore.named_params(), 0.9),
    );
    if made_on_cpu {
        dstore.to_device(&d);
    }
    for step in 0..3 {
        train_step(&dmlp, &mut dadam, &x, &y, &d);
        train_step(&cmlp, &mut cadam, &x, &y, &Device::Cpu);
        let before = ctx.transfers();
        dema.update();
        let t = ctx.transfers() - before;
        if step > 0 || !made_on_cpu {
            assert_eq!((t.uploads, t.downloads), (0, 0), "EMA update {step}: {t:?}");
        }
        cema.update();
    }
    for ((name, a), (_, b)) in dema.shadow().iter().zip(cema.shadow()) {
        let diff = common::worst((a - &b).iter().map(|v| v.abs()));
        assert!(diff <= 1e-5, "{name}: averages differ by {diff}");
    }
    (dstore, dema)
}

/// The weight average on the device: the same values as on the CPU (its update is a scaling, a
/// scaling and a sum, each correctly rounded on both devices, so the averages differ only as
/// much as the parameters Adam produced do), and neither the update nor `copy_to_params`
/// copies anything between host and device.
#[test]
fn ema_on_the_device_matches_cpu_and_copies_nothing() {
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let (dstore, dema) = device_and_cpu_averages(&ctx, false);
    let before = ctx.transfers();
    dema.copy_to_params();
    let t = ctx.transfers() - before;
    assert_eq!((t.uploads, t.downloads), (0, 0), "copy_to_params: {t:?}");
    for ((name, p), (_, s)) in dstore.named_params().iter().zip(dema.shadow()) {
        assert!(!p.device().is_cpu(), "{name} left the device");
        assert_eq!(p.to_array(), s, "{name}: the parameter is its average");
    }
}

/// An average made while its parameters were on the CPU follows them to the device at its next
/// update, once: from there on it is updated on the device, with the CPU's values (to the same
/// 1e-5 as above), and copies nothing.
#[test]
fn an_average_follows_its_parameters_to_the_device() {
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    device_and_cpu_averages(&ctx, true);
}

/// Adam with weight decay on the device: the same steps as on the CPU, to the 1e-5 of the
/// other device comparisons (see `mlp_training_steps_match_cpu`). The decay enters as λ·p added
/// to each gradient; with λ = 0.5 and weights of order 0.3 it changes the gradients by about
/// 0.15, and the direction of the weights whose own gradient is small, so an update on the device
/// that dropped it would move them by up to lr = 1e-3 a step away from the CPU's.
#[test]
fn adam_with_weight_decay_on_the_device_matches_cpu() {
    let d = dev();
    let config = AdamConfig {
        weight_decay: 0.5,
        ..AdamConfig::default()
    };
    let (dstore, dmlp, mut dadam, x, y) = mlp_setup_with(&d, config);
    let (cstore, cmlp, mut cadam, _, _) = mlp_setup_with(&Device::Cpu, config);
    for _ in 0..3 {
        train_step(&dmlp, &mut dadam, &x, &y, &d);
        train_step(&cmlp, &mut cadam, &x, &y, &Device::Cpu);
    }
    for ((name, p), (_, q)) in dstore.named_params().iter().zip(cstore.named_params()) {
        assert_close(name, p, &q, |_, w| 1e-5 * (1.0 + w.abs()));
    }
}

/// The score of N(μ, s²·I): −(x − μ)/s².
fn gaussian_score(x: &Tensor, mu: f32, s2: f32) -> Tensor {
    x.sub_scalar(mu).mul_scalar(-1.0 / s2)
}

// ANCHOR: annealed_langevin
/// Annealed Langevin dynamics (Song & Ermon, Algorithm 1) for data N(μ, 1) perturbed at noise
/// levels σᵢ, whose perturbed score is known in closed form. Everything runs where `x0` lives.
fn annealed_langevin(x0: &Tensor, sigmas: &[f32], steps: usize, eps: f32, seed: u64) -> Tensor {
    let (mu, mut x, mut t) = (2.0, x0.clone(), 0u64);
    no_grad(|| {
        for &sigma in sigmas {
            let alpha = eps * sigma * sigma / (sigmas[sigmas.len() - 1].powi(2));
            for _ in 0..steps {
                let score = gaussian_score(&x, mu, 1.0 + sigma * sigma);
                x = x.langevin_step(&score, alpha, seed, t);
                t += 1;
            }
        }
    });
    x
}
// ANCHOR_END: annealed_langevin

#[test]
fn annealed_langevin_on_device_matches_cpu_and_copies_nothing() {
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let sigmas = [1.0, 0.5, 0.25, 0.1];
    let (steps, eps) = (25, 2e-2);
    let before = ctx.transfers();
    let x0 = Tensor::randn_philox(&[64, 129], 11, u64::MAX, &d); // drawn on the device
    let xd = annealed_langevin(&x0, &sigmas, steps, eps, 5);
    assert_eq!(
        ctx.transfers() - before,
        Default::default(),
        "the loop copied data"
    );
    let x0c = Tensor::randn_philox(&[64, 129], 11, u64::MAX, &Device::Cpu);
    let xc = annealed_langevin(&x0c, &sigmas, steps, eps, 5);
    // The same noise on both devices: the trajectories agree up to rounding.
    assert_close("langevin samples", &xd, &xc, |_, w| 1e-4 * (1.0 + w.abs()));
    // And the samples have the chain's law (near the target N(2, 1 + σ_L²)), 8256 draws.
    assert_langevin_law(&xd.to_vec(), &sigmas, steps, eps);
}

/// The law of [`annealed_langevin`]'s chain for the Gaussian target, from N(0, 1): the chain is
/// linear and Gaussian, so after each step x' = μ + a·(x − μ) + √α·z with a = 1 − α/(2s²) it is
/// exactly N(m', v') with m' = μ + a·(m − μ) and v' = a²·v + α. The samples (independent chains)
/// must agree with it within 5 standard errors: √(v/n) for the mean, v·√(2/(n − 1)) for the
/// variance. A step that followed σ instead of σ² would move the library sampler's mean by about
/// 0.1, 8 standard errors.
fn assert_langevin_law(samples: &[f32], sigmas: &[f32], steps: usize, eps: f32) {
    let (mu, mut m, mut v) = (2.0f64, 0.0f64, 1.0f64);
    let last = sigmas[sigmas.len() - 1];
    for &sigma in sigmas {
        let alpha = (eps * sigma * sigma / (last * last)) as f64;
        let a = 1.0 - alpha / (2.0 * (1.0 + (sigma as f64).powi(2)));
        for _ in 0..steps {
            m = mu + a * (m - mu);
            v = a * a * v + alpha;
        }
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&z| z as f64).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&z| (z as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    assert!(
        (mean - m).abs() < 5.0 * (v / n).sqrt(),
        "mean {mean}, the chain's {m}"
    );
    assert!(
        (var - v).abs() < 5.0 * v * (2.0 / (n - 1.0)).sqrt(),
        "variance {var}, the chain's {v}"
    );
}

/// The same normals on both devices, within what the Vulkan specification lets a driver's `sin`,
/// `cos` and `log` be off by (the bound of `randn_is_reproducible_box_muller` in
/// tests/vulkan.rs): 2⁻¹¹ absolute for sin and cos, times r ≤ 5.8, plus r's own error. Lavapipe
/// is far closer (about 1e-6); an NVIDIA driver's hardware `log`, 2⁻²¹ absolute near 1, moves a
/// normal with small r by ~2⁻²¹/r. Same bits would be wrong to ask; other counters or keys would
/// be off by O(1).
#[test]
fn philox_normals_agree_across_devices() {
    let d = Tensor::randn_philox(&[3, 343], 42, 7, &dev());
    let c = Tensor::randn_philox(&[3, 343], 42, 7, &Device::Cpu);
    assert_close("randn_philox", &d, &c, |_, _| 6.0 * 2f32.powi(-11) + 1e-5);
}

/// `randn_on` a device draws there (its docs): Philox keyed by one word taken from the
/// generator, so nothing is uploaded, and that word gives the numbers `randn_philox(seed, 0)`
/// gives on the CPU, within the bound of `philox_normals_agree_across_devices`. Drawn on the
/// host and uploaded, the noise of every `dsm_loss` and inpainting level would cost a copy.
#[test]
fn randn_on_the_device_draws_there() {
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let seed: u64 = rng.clone().random();
    let before = ctx.transfers();
    let z = Tensor::randn_on(&[3, 343], &d, &mut rng);
    assert_eq!(
        ctx.transfers() - before,
        Default::default(),
        "the noise was uploaded"
    );
    let want = Tensor::randn_philox(&[3, 343], seed, 0, &Device::Cpu);
    assert_close("randn_on", &z, &want, |_, _| 6.0 * 2f32.powi(-11) + 1e-5);
}

#[test]
fn adam_step_is_copy_on_write() {
    // A detached view shares the parameter's buffer; Adam's in-place update must not show
    // through it, as on the CPU.
    let d = dev();
    let store = ParamStore::new();
    let p = store.root().param("w", Tensor::ones(&[5]));
    store.to_device(&d);
    let view = p.detach();
    let mut adam = Adam::new(store.named_params(), AdamConfig::default());
    let g = p.mul_scalar(3.0).sum_all().backward();
    adam.step(&g);
    assert_eq!(view.to_vec(), vec![1.0; 5]);
    let moved = p.to_vec();
    assert!(moved.iter().all(|&v| (v - 0.999).abs() < 1e-6), "{moved:?}");
}

#[test]
fn empty_tensors_on_the_device() {
    let x = Tensor::zeros(&[0, 5]);
    let y = random(&[3, 5], -1.0, 1.0, 400);
    type F = fn(&[Tensor]) -> Tensor;
    let ops: [(&str, F); 8] = [
        ("unary", |v| v[0].exp()),
        ("binary", |v| v[0].add(&v[0])),
        ("sum over the empty axis", |v| v[0].sum(&[0], false)),
        ("sum over the other axis", |v| v[0].sum(&[1], true)),
        ("permute", |v| v[0].t()),
        ("concat", |v| {
            Tensor::concat(&[v[0].clone(), v[1].clone()], 0)
        }),
        ("matmul", |v| v[0].matmul(&v[1].t())),
        ("index_select", |v| v[1].index_select(0, &[])),
    ];
    for (name, f) in ops {
        let (g, w) = both(&[x.clone(), y.clone()], &f);
        assert_close(name, &g, &w, exact);
    }
}

// ---------------------------------------------------------------- convolutions and the RefineNet

#[test]
fn conv_pool_and_norm_ops_match_cpu() {
    use ncsn::tensor::{Conv2dConfig, Pool2dConfig};
    let x = random(&[2, 3, 11, 9], -1.0, 1.0, 500);
    let w = random(&[5, 3, 3, 3], -1.0, 1.0, 501);
    let b = random(&[5], -1.0, 1.0, 502);
    // K = 27 products of magnitude ≤ 1 per output: the summation bound 2·K·u·K.
    let k = 27.0;
    let conv_tol = 2.0 * k * (f32::EPSILON / 2.0) * k;
    for cfg in [
        Conv2dConfig::new(1, 1, 1),
        Conv2dConfig::new(2, 1, 1),
        Conv2dConfig::new(1, 2, 2),
    ] {
        let (g, want) = both(&[x.clone(), w.clone(), b.clone()], &|v| {
            v[0].conv2d(&v[1], Some(&v[2]), cfg)
        });
        assert_close(&format!("conv2d {cfg:?}"), &g, &want, |_, _| {
            conv_tol + 1e-6
        });
        let gy = random(want.shape(), -1.0, 1.0, 503);
        let (g, want) = both(&[gy.clone(), w.clone()], &|v| {
            v[0].conv2d_input_grad(&v[1], cfg, (11, 9))
        });
        let k_in = 5.0 * 9.0;
        let tol = 2.0 * k_in * (f32::EPSILON / 2.0) * k_in;
        assert_close(&format!("conv2d_input_grad {cfg:?}"), &g, &want, |_, _| tol);
        let (g, want) = both(&[x.clone(), gy], &|v| {
            v[0].conv2d_weight_grad(&v[1], cfg, (3, 3))
        });
        let k_w = 2.0 * 11.0 * 9.0;
        let tol = 2.0 * k_w * (f32::EPSILON / 2.0) * k_w;
        assert_close(&format!("conv2d_weight_grad {cfg:?}"), &g, &want, |_, _| {
            tol
        });
    }
    let pool_tol = |_: usize, w: f32| 1e-6 * (1.0 + w.abs());
    for cfg in [Pool2dConfig::new(5, 1, 2), Pool2dConfig::new(3, 2, 1)] {
        let (g, want) = both(std::slice::from_ref(&x), &|v| v[0].avg_pool2d(cfg));
        assert_close(&format!("avg_pool2d {cfg:?}"), &g, &want, pool_tol);
        let gy = random(want.shape(), -1.0, 1.0, 504);
        let (g, want) = both(&[gy], &|v| v[0].avg_pool2d_adjoint(cfg, (11, 9)));
        assert_close(&format!("avg_pool2d_adjoint {cfg:?}"), &g, &want, pool_tol);
    }
    for size in [(17, 13), (5, 4)] {
        let (g, want) = both(std::slice::from_ref(&x), &|v| v[0].resize_bilinear(size));
        assert_close(&format!("resize_bilinear {size:?}"), &g, &want, pool_tol);
        let gy = random(want.shape(), -1.0, 1.0, 505);
        let (g, want) = both(&[gy], &|v| v[0].resize_bilinear_adjoint((11, 9)));
        assert_close(
            &format!("resize_bilinear_adjoint {size:?}"),
            &g,
            &want,
            |_, w| 1e-5 * (1.0 + w.abs()),
        );
    }
    let a = random(&[2, 3], -1.0, 1.0, 506);
    let (g, want) = both(std::slice::from_ref(&x), &|v| v[0].instance_norm(1e-5));
    assert_close("instance_norm", &g, &want, |_, w| 1e-5 * (1.0 + w.abs()));
    let (g, want) = both(
        &[
            x.clone(),
            a.clone(),
            b.narrow(0, 0, 3).reshape(&[1, 3]).broadcast_to(&[2, 3]),
        ],
        &|v| v[0].channel_affine(&v[1], Some(&v[2])),
    );
    assert_close("channel_affine", &g, &want, exact);
    let (g, want) = both(&[x.clone(), x.neg().exp()], &|v| v[0].channel_dot(&v[1]));
    assert_close("channel_dot", &g, &want, |_, w| 1e-5 * (1.0 + w.abs()));
}

/// The first-order gradient of an instance norm on the device is one kernel (instance_norm.comp,
/// mode 2) and agrees with the CPU's fused two-pass formula. Planes of 42 and 437 pixels (one
/// partial pass and two of the 256-thread workgroup). Tolerance: each of the two plane means
/// carries up to 2·L·u·mean|·| ≈ 5e-5 of absolute error at L = 437 with |g|, |y| ≲ 2, scaled by
/// r ≈ 1.7; 1e-4·(1 + |dx|) covers it with margin, while a dropped term (mean(g), or y·mean(g·y))
/// moves dx by O(0.1). A context of its own, so that its profile is this test's alone.
#[test]
fn instance_norm_gradient_is_one_kernel_and_matches_cpu() {
    let ctx = Arc::new(VulkanContext::new().unwrap());
    let d = Device::Vulkan(ctx.clone());
    for (shape, seed) in [([2, 3, 7, 6], 640), ([1, 2, 23, 19], 641)] {
        let x = random(&shape, -1.0, 1.0, seed);
        let w = random(&shape, -1.0, 1.0, seed + 10);
        let dx = |dev: &Device| {
            let x = x.to(dev).detach().requires_grad_();
            let y = x.instance_norm(1e-5);
            dev.synchronize().unwrap();
            ctx.set_profiling(true).unwrap();
            let g = grad(&[&y.mul(&w.to(dev)).sum_all()], &[&x], false);
            dev.synchronize().unwrap();
            ctx.set_profiling(false).unwrap();
            g.into_iter().next().unwrap()
        };
        let got = dx(&d);
        let kernels = ctx.take_profile();
        let count = |k: &str| {
            kernels
                .iter()
                .find(|e| e.kernel == k)
                .map_or(0, |e| e.count)
        };
        // The norm's gradient is the one instance_norm kernel; the rest are the VJPs of the sum
        // and the product, six commands in all, where the formula in tensor ops alone is 17.
        assert_eq!(count("instance_norm"), 1, "{kernels:?}");
        let commands: u64 = kernels.iter().map(|e| e.count).sum();
        assert!(commands <= 6, "{commands} commands: {kernels:?}");
        let want = dx(&Device::Cpu);
        assert_close(
            &format!("instance_norm dx {shape:?}"),
            &got,
            &want,
            |_, w| 1e-4 * (1.0 + w.abs()),
        );
    }
}

/// CondInstanceNorm++ on the device — the fused op (`shaders/cin_plus.comp`), the device's
/// tensor-op VJP under create_graph — against the layer's definition in tensor ops on the CPU:
/// output, first- and second-order gradients with respect to x and the embedding (tolerances and
/// their reasons in tests/refinenet.rs, which runs the same comparison on the CPU; on lavapipe
/// the worst case measured is 3e-6). 260
/// channels take two passes of the per-sample workgroup, 23 × 19 planes two of the per-plane
/// one. The forward is four kernels (the lookup, the plane statistics, the numbers per plane,
/// the pass over x) and the first-order backward three of `cin_plus` plus the lookup's scatter,
/// where the definition takes 24 and about 45.
#[test]
fn cond_instance_norm_plus_matches_its_definition_in_few_kernels() {
    let ctx = Arc::new(VulkanContext::new().unwrap());
    let d = Device::Vulkan(ctx.clone());
    common::assert_fused_cin_plus_matches_definition(&d);

    let (norm, x) = common::cin_plus_case(2, 4, (3, 3), 4);
    norm.embed.move_to(&d);
    let x = x.to(&d).requires_grad_();
    d.synchronize().unwrap();
    ctx.set_profiling(true).unwrap();
    let y = norm.forward(&x, &[0, 2]);
    d.synchronize().unwrap();
    let forward = ctx.take_profile();
    let g = grad(&[&y], &[&x, &norm.embed], false);
    d.synchronize().unwrap();
    let backward = ctx.take_profile();
    ctx.set_profiling(false).unwrap();
    drop(g);
    let count = |p: &[ncsn::backend::vulkan::KernelTime], k: &str| {
        p.iter().find(|e| e.kernel == k).map_or(0, |e| e.count)
    };
    let total = |p: &[ncsn::backend::vulkan::KernelTime]| p.iter().map(|e| e.count).sum::<u64>();
    assert_eq!(count(&forward, "cin_plus"), 2, "{forward:?}");
    assert_eq!(total(&forward), 4, "{forward:?}");
    assert_eq!(count(&backward, "cin_plus"), 3, "{backward:?}");
    // Besides: the seed of ∂y (a fill), and the lookup's VJP (a zeroed table, the index_add).
    assert!(total(&backward) <= 6, "{backward:?}");

    // The bytes each mode touches, in floats: x, g, y and ∂x are N·C·H·W = 72, the statistics
    // and the sums 2·N·C = 16, e and ∂e 3·N·C = 24, the four numbers per plane 4·N·C = 32.
    let bytes = |p: &[ncsn::backend::vulkan::KernelTime], k: &str| {
        p.iter().find(|e| e.kernel == k).map_or(0, |e| e.bytes)
    };
    let (x, stats, e, coef) = (72, 16, 24, 32);
    let modes_0_1 = (stats + e + coef) + (x + coef + x);
    assert_eq!(bytes(&forward, "cin_plus"), 4 * modes_0_1, "{forward:?}");
    let modes_2_3_4 = (x + x + stats + stats) + (stats + e + stats + coef + e) + (x + x + coef + x);
    assert_eq!(
        bytes(&backward, "cin_plus"),
        4 * modes_2_3_4,
        "{backward:?}"
    );
}

/// A small convolutional function through every conv-family op, for gradient checks.
fn conv_net(v: &[Tensor]) -> Tensor {
    use ncsn::tensor::{Conv2dConfig, Pool2dConfig};
    let h = v[0].conv2d(&v[1], Some(&v[2]), Conv2dConfig::new(1, 2, 2));
    let h = h.instance_norm(1e-5).channel_affine(&v[3], None).elu(1.0);
    let p = h.avg_pool2d(Pool2dConfig::new(3, 1, 1)).add(&h);
    let d = p.conv2d(
        &v[1].permute(&[1, 0, 2, 3]),
        None,
        Conv2dConfig::new(2, 1, 1),
    );
    d.resize_bilinear((7, 6)).tanh()
}

#[test]
fn conv_gradients_match_cpu_to_second_order() {
    let xs = vec![
        random(&[2, 2, 7, 6], -1.0, 1.0, 600),
        random(&[3, 2, 3, 3], -0.5, 0.5, 601),
        random(&[3], -0.5, 0.5, 602),
        random(&[2, 3], 0.5, 1.5, 603),
    ];
    let first = |d: &Device| {
        let xs = leaves(&xs, d);
        let refs: Vec<&Tensor> = xs.iter().collect();
        grad(&[&loss(conv_net, &xs)], &refs, false)
    };
    for (i, (g, w)) in first(&dev()).iter().zip(first(&Device::Cpu)).enumerate() {
        assert_close(&format!("conv net: ∂L/∂x{i}"), g, &w, |_, w| {
            1e-4 * (1.0 + w.abs())
        });
    }
    let hvp = |d: &Device| {
        let xs = leaves(&xs, d);
        let refs: Vec<&Tensor> = xs.iter().collect();
        let gs = grad(&[&loss(conv_net, &xs)], &refs, true);
        let dot = gs
            .iter()
            .enumerate()
            .map(|(i, g)| {
                g.mul(&random(g.shape(), -1.0, 1.0, 610 + i as u64).to(d))
                    .sum_all()
            })
            .reduce(|a, b| a.add(&b))
            .unwrap();
        grad(&[&dot], &refs, false)
    };
    for (i, (g, w)) in hvp(&dev()).iter().zip(hvp(&Device::Cpu)).enumerate() {
        assert_close(&format!("conv net: (Hu)[x{i}]"), g, &w, |_, w| {
            5e-4 * (1.0 + w.abs())
        });
    }
}

/// The annealed DSM loss of the reference (anneal_power 2), with the noise `z` given; the
/// per-sample σ and weights are uploaded with the batch.
fn anneal_dsm(
    model: &ncsn::nn::CondRefineNetDilated,
    x: &Tensor,
    z: &Tensor,
    labels: &[usize],
    sigmas: &[f32],
) -> Tensor {
    let (n, d) = (x.shape()[0], x.device());
    let used: Vec<f32> = labels.iter().map(|&y| sigmas[y]).collect();
    let sigma = Tensor::from_vec(used.clone(), &[n, 1, 1, 1]).to(&d);
    let weights = Tensor::from_vec(used.iter().map(|s| 0.5 * s * s).collect(), &[n]).to(&d);
    let scores = model.forward(&x.add(&z.mul(&sigma)), labels);
    let target = z.div(&sigma).neg();
    let per_sample = scores.sub(&target).square().sum(&[1, 2, 3], false);
    per_sample.mul(&weights).mean_all()
}

#[test]
fn refinenet_training_steps_match_cpu_and_copy_only_the_batch() {
    use ncsn::nn::{CondRefineNetDilated, RefineNetConfig};
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let config = RefineNetConfig {
        ngf: 4,
        image_size: 8,
        ..RefineNetConfig::cifar10()
    };
    let sigmas: Vec<f32> = (0..10).map(|i| 0.6f32.powi(i)).collect();
    let make = |device: &Device| {
        let model = CondRefineNetDilated::new(config, &mut ChaCha8Rng::seed_from_u64(9));
        model.store.to_device(device);
        let adam = Adam::new(model.store.named_params(), AdamConfig::default());
        (model, adam)
    };
    let (dm, mut da) = make(&d);
    let (cm, mut ca) = make(&Device::Cpu);
    let x = random(&[3, 3, 8, 8], 0.0, 1.0, 700);
    let z = random(&[3, 3, 8, 8], -2.0, 2.0, 701);
    let step = |model: &CondRefineNetDilated, adam: &mut Adam, device: &Device, s: usize| {
        let labels = [s % 10, (s + 4) % 10, (s + 9) % 10];
        let loss = anneal_dsm(model, &x.to(device), &z.to(device), &labels, &sigmas);
        adam.step(&loss.backward());
        loss.item()
    };
    for s in 0..3 {
        let before = ctx.transfers();
        let ld = step(&dm, &mut da, &d, s);
        let t = ctx.transfers() - before;
        let lc = step(&cm, &mut ca, &Device::Cpu, s);
        assert!(
            (ld - lc).abs() <= 1e-4 * (1.0 + lc.abs()),
            "step {s}: loss on device {ld} vs cpu {lc}"
        );
        if s > 0 {
            eprintln!("one RefineNet training step: {t:?}");
            // x, z, σ, the weights, and the labels (as indices for the embeddings).
            assert_eq!(t.uploads, 5, "{t:?}");
            assert_eq!(t.downloads, 1, "{t:?}");
        }
    }
    for ((name, p), (_, q)) in dm.store.named_params().iter().zip(cm.store.named_params()) {
        assert_close(name, p, &q, |_, w| 1e-4 * (1.0 + w.abs()));
    }
}

// ANCHOR: library_sampler
#[test]
fn the_library_sampler_runs_on_the_device_without_copies() {
    use ncsn::sample::{AnnealedConfig, annealed_langevin};
    use ncsn::score::GeometricSigmas;
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let sigmas = GeometricSigmas::new(1.0, 0.1, 4);
    let config = AnnealedConfig {
        step_size: 2e-2,
        n_steps_each: 25,
        record_every: 0,
    };
    let x0 = Tensor::randn_philox(&[64, 129], 3, 0, &d);
    let before = ctx.transfers();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let out = annealed_langevin(
        |x, i| gaussian_score(x, 2.0, 1.0 + sigmas.get(i).powi(2)),
        &x0,
        &sigmas,
        &config,
        &mut rng,
    );
    assert_eq!(
        ctx.transfers() - before,
        Default::default(),
        "the sampler copied data"
    );
    assert!(!out.x.device().is_cpu());
    // The samples have the chain's law (see above).
    let levels: Vec<f32> = (0..sigmas.len()).map(|i| sigmas.get(i)).collect();
    assert_langevin_law(&out.x.to_vec(), &levels, 25, 2e-2);
}
// ANCHOR_END: library_sampler

/// The samplers that reverse a diffusion (`ncsn::sample::sde`) run where their start lives: on
/// the device they copy nothing (predictor–corrector sampling, its Langevin steps included), the probability-flow ODE (no noise) ends where the CPU's does up
/// to rounding, and the two stochastic samplers end with the law that their linear recursion
/// gives on Gaussian data N(2, 1) (as in `tests/sde.rs`: within 5 standard errors, 8256 draws).
#[test]
fn the_sde_samplers_run_on_the_device_without_copies() {
    use ncsn::sample::{
        AnnealedConfig, VpSchedule, ddpm_ancestral, predictor_corrector, probability_flow,
        reverse_diffusion,
    };
    use ncsn::score::GeometricSigmas;
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let levels = GeometricSigmas::new(10.0, 0.01, 300);
    let ve = |x: &Tensor, i: usize| gaussian_score(x, 2.0, 1.0 + levels.get(i).powi(2));
    let start = |device: &Device| {
        Tensor::randn_philox(&[64, 129], 21, 0, device)
            .mul_scalar(101f32.sqrt())
            .add_scalar(2.0)
    };
    let schedule = VpSchedule::linear(1e-4, 0.02, 1000);
    let vp = |x: &Tensor, t: usize| {
        let ab = schedule.alpha_bar(t) as f32;
        gaussian_score(x, 2.0 * ab.sqrt(), 1.0)
    };
    let (x0, z0) = (start(&d), Tensor::randn_philox(&[64, 129], 22, 0, &d));
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let before = ctx.transfers();
    let flow = probability_flow(ve, &x0, &levels, 0).x;
    let reverse = reverse_diffusion(ve, &x0, &levels, 0, &mut rng).x;
    let ddpm = ddpm_ancestral(vp, &z0, &schedule, 0, &mut rng).x;
    let corrector = AnnealedConfig {
        step_size: 1e-4,
        n_steps_each: 2,
        record_every: 0,
    };
    let coarse = GeometricSigmas::new(10.0, 0.01, 10);
    let pc_score = |x: &Tensor, i: usize| gaussian_score(x, 2.0, 1.0 + coarse.get(i).powi(2));
    let pc = predictor_corrector(pc_score, &x0, &coarse, &corrector, &mut rng).x;
    assert_eq!(
        ctx.transfers() - before,
        Default::default(),
        "the samplers copied data"
    );
    assert!(
        [&flow, &reverse, &ddpm, &pc]
            .iter()
            .all(|x| !x.device().is_cpu())
    );
    let cpu_flow = probability_flow(ve, &start(&Device::Cpu), &levels, 0).x;
    assert_close("probability flow", &flow, &cpu_flow, |_, w| {
        1e-4 * (1.0 + w.abs())
    });
    // Reverse diffusion: v ← v(1 − d/b)² + d per level (d = σᵢ² − σᵢ₊₁², b = 1 + σᵢ²), the last
    // step without noise; the mean stays 2. DDPM: the score of x_t is −(x − 2√ᾱ)/1 (the data's
    // variance 1 is preserved), so x ← (x(1 − β) + 2β√ᾱ)/√(1 − β) + √β z.
    let mut v = 101.0f64;
    for i in 0..levels.len() {
        let next = levels.sigmas().get(i + 1).copied().unwrap_or(0.0);
        let dv = f64::from(levels.get(i).powi(2) - next * next);
        let b = 1.0 + f64::from(levels.get(i)).powi(2);
        v = v * (1.0 - dv / b).powi(2) + if i + 1 < levels.len() { dv } else { 0.0 };
    }
    let (mut m, mut w) = (0.0f64, 1.0f64);
    for t in (0..schedule.len()).rev() {
        let (beta, ab) = (schedule.beta(t), schedule.alpha_bar(t));
        m = (m * (1.0 - beta) + 2.0 * beta * ab.sqrt()) / (1.0 - beta).sqrt();
        w = w * (1.0 - beta) + if t > 0 { beta } else { 0.0 };
    }
    for (what, x, mean, var) in [
        ("reverse diffusion", &reverse, 2.0, v),
        ("DDPM", &ddpm, m, w),
    ] {
        let xs: Vec<f64> = x.to_vec().iter().map(|&e| f64::from(e)).collect();
        let n = xs.len() as f64;
        let got = xs.iter().sum::<f64>() / n;
        let got_var = xs.iter().map(|e| (e - got).powi(2)).sum::<f64>() / (n - 1.0);
        assert!(
            (got - mean).abs() < 5.0 * (var / n).sqrt(),
            "{what}: mean {got}, want {mean}"
        );
        assert!(
            (got_var - var).abs() < 5.0 * var * (2.0 / (n - 1.0)).sqrt(),
            "{what}: variance {got_var}, want {var}"
        );
    }
}

/// The network for every σ (`ContinuousNoiseMlp`) trains and samples on the device: three steps
/// of DSM at given σ's and noise with Adam end with the CPU's losses and parameters (to the 1e-5
/// of `mlp_training_steps_match_cpu`), the probability flow on its levels ends where the CPU's
/// does, and DDPM's sampler through `vp_from_ve` runs there too. The only copies a sampler makes
/// are σ's 17 features, uploaded once per score (68 bytes each); nothing comes back.
#[test]
fn the_continuous_sigma_network_trains_and_samples_on_the_device() {
    use ncsn::sample::{VpSchedule, ddpm_ancestral, probability_flow, vp_from_ve};
    use ncsn::score::{ContinuousNoiseMlp, NoiseRange, continuous_dsm_loss_with};
    let ctx = Arc::new(VulkanContext::new().expect("a Vulkan device"));
    let d = Device::Vulkan(ctx.clone());
    let range = NoiseRange::new(0.01, 50.0);
    let setup = |device: &Device| {
        let store = ParamStore::new();
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let net = ContinuousNoiseMlp::new(&store.root(), 2, 24, range, 2.0, &mut rng);
        store.to_device(device);
        let adam = Adam::new(store.named_params(), AdamConfig::default());
        (store, net, adam)
    };
    let (dstore, dnet, mut dadam) = setup(&d);
    let (cstore, cnet, mut cadam) = setup(&Device::Cpu);
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    for step in 0..3 {
        let x = Tensor::randn(&[37, 2], &mut rng).mul_scalar(2.0);
        let z = Tensor::randn(&[37, 2], &mut rng);
        let sigmas = range.sample(37, &mut rng);
        let mut losses = Vec::new();
        for (net, adam, device) in [(&dnet, &mut dadam, &d), (&cnet, &mut cadam, &Device::Cpu)] {
            let (x, z) = (x.to(device), z.to(device));
            let l = continuous_dsm_loss_with(|x, s| net.forward(x, s), &x, &sigmas, &z, 2.0);
            adam.step(&l.backward());
            losses.push(l.item());
        }
        assert!(
            (losses[0] - losses[1]).abs() <= 1e-5 * (1.0 + losses[1].abs()),
            "step {step}: loss on device {} vs cpu {}",
            losses[0],
            losses[1]
        );
    }
    for ((name, p), (_, q)) in dstore.named_params().iter().zip(cstore.named_params()) {
        assert!(!p.device().is_cpu(), "{name} left the device");
        assert_close(name, p, &q, |_, w| 1e-5 * (1.0 + w.abs()));
    }

    let levels = range.levels(40);
    let start = Tensor::randn(&[64, 2], &mut rng).mul_scalar(50.0);
    let x0 = start.to(&d);
    let before = ctx.transfers();
    let flow = probability_flow(|x, i| dnet.forward_sigma(x, levels.get(i)), &x0, &levels, 0).x;
    let schedule = VpSchedule::linear(1e-4, 0.02, 30);
    let noise = x0.mul_scalar(1.0 / 50.0);
    let score = |x: &Tensor, sigma: f32| dnet.forward_sigma(x, sigma);
    let ddpm = ddpm_ancestral(vp_from_ve(score, &schedule), &noise, &schedule, 0, &mut rng).x;
    let moved = ctx.transfers() - before;
    // Heun evaluates the score twice per step between levels; DDPM once per step.
    let scores = 2 * (levels.len() as u64 - 1) + schedule.len() as u64;
    assert_eq!(
        (moved.uploads, moved.upload_bytes, moved.downloads),
        (scores, scores * 17 * 4, 0),
        "the samplers' copies"
    );
    assert!(!flow.device().is_cpu() && !ddpm.device().is_cpu());
    let cpu_flow = probability_flow(
        |x, i| cnet.forward_sigma(x, levels.get(i)),
        &start,
        &levels,
        0,
    )
    .x;
    assert_close("probability flow", &flow, &cpu_flow, |_, w| {
        1e-4 * (1.0 + w.abs())
    });
    assert!(
        ddpm.to_vec().iter().all(|v| v.is_finite()),
        "DDPM's samples"
    );
}

/// Writes a CIFAR-10 `data_batch_1.bin` of `n` random pictures (label byte, then 3,072 pixels).
fn write_cifar(dir: &std::path::Path, n: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut bytes = Vec::with_capacity(n * 3073);
    for i in 0..n {
        bytes.push((i % 10) as u8);
        bytes.extend((0..3072).map(|_| rng.random::<u8>()));
    }
    std::fs::write(dir.join("data_batch_1.bin"), bytes).unwrap();
}

/// What `cargo run --example cifar10 --features vulkan -- --device vulkan` does, at a tiny size:
/// the whole pipeline (training with checkpoints, the test loss, sampling, inpainting, the
/// nearest-neighbour search) with the real CondRefineNetDilated on the device. The parts are
/// compared with the CPU elsewhere (the training step, the sampler, every kernel); the run as a
/// whole draws its noise on the device (Philox, see `Tensor::randn_on`), so its numbers are not
/// the CPU run's. What it must keep is the repository's rule, same seed, same bits, across an
/// interruption too: a run stopped after its first step and started again (a new network from
/// another seed, everything else from the checkpoint) ends with the same checkpoint, tensor for
/// tensor (parameters, Adam's moments, the EMA), the same loss log, the same test loss and
/// samples at the same distances from their nearest training pictures as a run that went
/// straight through. The device kernels use no float atomics and sum in a fixed order, so this
/// holds exactly.
#[test]
fn the_cifar10_pipeline_runs_on_the_device_and_resumes_to_the_same_bits() {
    use ncsn::io::Checkpoint;
    use ncsn::run::{self, Args, DatasetKind, RunDir};
    /// Removes the test's directory however the test ends.
    struct Scratch(std::path::PathBuf);
    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let scratch =
        Scratch(std::env::temp_dir().join(format!("ncsn-vulkan-pipeline-{}", std::process::id())));
    let root = &scratch.0;
    let _ = std::fs::remove_dir_all(root);
    let data = root.join("data");
    std::fs::create_dir_all(&data).unwrap();
    write_cifar(&data, 20);
    let kind = DatasetKind::Cifar10;
    let run_in = |out: &str, steps: &str, init_seed: u64, extra: &[&str]| {
        let out = root.join(out);
        let mut argv = vec![
            "cifar10",
            "--device",
            "vulkan",
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--ngf",
            "4",
            "--steps",
            steps,
            "--checkpoint-every",
            "1",
            "--batch-size",
            "4",
            "--n-samples",
            "4",
            "--n-steps-each",
            "1",
            "--ema",
            "0.9",
            "--quiet",
        ];
        argv.extend(extra);
        let args = <Args as clap::Parser>::try_parse_from(argv).unwrap();
        let results = run::run(kind, &args, |c, _| {
            run::refinenet(kind, c, &mut ChaCha8Rng::seed_from_u64(init_seed))
        })
        .unwrap();
        let checkpoint = Checkpoint::load(RunDir::checkpoint_in(&out)).unwrap();
        let log = std::fs::read_to_string(out.join("loss.csv")).unwrap();
        (results, checkpoint, log)
    };
    let (whole, whole_ckpt, whole_log) = run_in("whole", "2", 5, &[]);
    run_in("split", "1", 5, &["--train"]);
    // Inpainting (most of a run's time on lavapipe) has been exercised by the whole run.
    let (split, split_ckpt, split_log) =
        run_in("split", "2", 77, &["--train", "--sample", "--nearest"]);

    assert_eq!(
        (whole.iterations, split.iterations, split.resumed_from),
        (Some(2), Some(2), Some(1))
    );
    let p = &whole.paths;
    for (what, f) in [
        ("config", &p.config),
        ("loss plot", &p.loss_plot),
        ("samples", &p.samples),
        ("annealing strip", &p.annealing),
        ("inpainting", &p.inpainting),
        ("nearest neighbours", &p.nearest),
    ] {
        assert!(f.is_some(), "{what}: no path recorded");
    }
    assert!(whole.final_train_loss.unwrap().is_finite());
    assert!(
        whole_ckpt
            .tensors
            .keys()
            .any(|k| k.starts_with("optimizer."))
    );
    assert!(whole_ckpt.tensors.keys().any(|k| k.starts_with("ema.")));
    assert!(
        whole_ckpt.tensors == split_ckpt.tensors,
        "the checkpoints differ"
    );
    assert_eq!(whole_log, split_log);
    assert_eq!(
        whole.test_dsm_loss.map(f32::to_bits),
        split.test_dsm_loss.map(f32::to_bits)
    );
    let distances = |r: &run::Results| -> Vec<Vec<u32>> {
        let lists = r.nearest.as_ref().expect("nearest neighbours");
        lists
            .iter()
            .map(|l| l.iter().map(|n| n.distance.to_bits()).collect())
            .collect()
    };
    assert_eq!(distances(&whole), distances(&split));
}

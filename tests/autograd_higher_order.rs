//! Third derivatives of composite functions, and the properties of the graph itself: gradients of
//! unused inputs, no_grad, cotangents, which leaves get gradients, deep graphs.

mod common;

use ncsn::{Tensor, grad, no_grad};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// d³/dx³ along fixed directions u, v, w: ∇ₓ⟨∇ₓ⟨∇ₓ f, u⟩, v⟩ · w from triple backward, against a
/// central difference (step h) of the second-order quantity ⟨∇ₓ⟨∇ₓ f, u⟩, v⟩ along w, which
/// itself is checked against finite differences in autograd_ops.rs. Tolerance: as in
/// common/mod.rs, the error of a central difference of an O(1) smooth quantity with h = 1e-2 in
/// f32 is ≲ 1e-3; we allow 4e-3 + 2e-2·|fd|.
fn third_order(f: &dyn Fn(&Tensor) -> Tensor, x0: &Tensor, seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u = common::tensor(&mut rng, x0.shape(), -1.0, 1.0, false);
    let v = common::tensor(&mut rng, x0.shape(), -1.0, 1.0, false);
    let w = common::tensor(&mut rng, x0.shape(), -1.0, 1.0, false);
    let second = |x: &Tensor, create: bool| -> Tensor {
        let g1 = grad(&[&f(x)], &[x], true).remove(0);
        let g2 = grad(&[&g1.mul(&u).sum_all()], &[x], create).remove(0);
        g2.mul(&v).sum_all()
    };
    let x = x0.detach().requires_grad_();
    let g3 = grad(&[&second(&x, true)], &[&x], false).remove(0);
    let auto = g3.mul(&w).sum_all().item();
    let h = common::H;
    let xp = x0.add(&w.mul_scalar(h)).requires_grad_();
    let xm = x0.sub(&w.mul_scalar(h)).requires_grad_();
    let fd = (second(&xp, false).item() - second(&xm, false).item()) / (2.0 * h);
    if common::close(auto, fd) {
        Ok(())
    } else {
        Err(format!(
            "third derivative: triple backward {auto} vs finite difference {fd}"
        ))
    }
}

proptest! {
    #![proptest_config(common::proptest_config(16))]

    #[test]
    fn third_derivatives_of_composites(n in 1usize..=4, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = common::tensor(&mut rng, &[2, n], 0.1, 1.5, true);
        let wm = common::tensor(&mut rng, &[n, 3], 0.1, 1.0, true);
        // A softplus MLP layer: the building block of the toy score networks.
        let f1 = |x: &Tensor| x.matmul(&wm).softplus().square().sum_all();
        third_order(&f1, &x, seed).map_err(TestCaseError::fail)?;
        // A log-density-like function: logsumexp of a quadratic form.
        let f2 = |x: &Tensor| x.square().mul_scalar(-0.5).logsumexp(&[1], false).sum_all();
        third_order(&f2, &x, seed).map_err(TestCaseError::fail)?;
        // Products, quotients and broadcasting together.
        let f3 = |x: &Tensor| x.tanh().mul(&x.sigmoid()).div(&x.square().add_scalar(1.0)).mean(&[0], false).sum_all();
        third_order(&f3, &x, seed).map_err(TestCaseError::fail)?;
    }
}

#[test]
fn unused_input_gets_zeros_and_shapes_match() {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).requires_grad_();
    let y = Tensor::from_vec(vec![3.0, 4.0, 5.0], &[3]).requires_grad_();
    let g = grad(&[&x.square().sum_all()], &[&x, &y], false);
    assert_eq!(g[0].to_vec(), vec![2.0, 4.0]);
    assert_eq!(g[1].to_vec(), vec![0.0; 3]);
}

#[test]
fn no_grad_records_nothing_and_create_graph_false_returns_leaves() {
    let x = Tensor::from_vec(vec![1.0, 2.0], &[2]).requires_grad_();
    let y = no_grad(|| x.exp().sum_all());
    assert!(y.is_leaf() && !y.requires_grad());
    let g = grad(&[&x.exp().sum_all()], &[&x], false).remove(0);
    assert!(g.is_leaf() && !g.requires_grad());
    let g = grad(&[&x.exp().sum_all()], &[&x], true).remove(0);
    assert!(!g.is_leaf() && g.requires_grad());
}

/// `grad_with` weights each output by its own cotangent: for y₁ = x², y₂ = 3x (elementwise) and
/// cotangents v₁, v₂ it returns ∂/∂x (⟨v₁, y₁⟩ + ⟨v₂, y₂⟩) = 2x ⊙ v₁ + 3v₂ — not the gradient of
/// Σ y₁ + Σ y₂, which `grad` returns — and with `create_graph` that gradient differentiates
/// again, to 2v₁. The inputs are small dyadic rationals, so every product and sum here is exact
/// in f32 and the comparisons are exact.
#[test]
fn grad_with_weights_each_output_by_its_cotangent() {
    let x = Tensor::from_vec(vec![0.5, -1.5, 2.0], &[3]).requires_grad_();
    let (y1, y2) = (x.square(), x.mul_scalar(3.0));
    let v1 = Tensor::from_vec(vec![1.0, -2.0, 0.25], &[3]);
    let v2 = Tensor::from_vec(vec![-1.0, 0.5, 4.0], &[3]);
    let want: Vec<f32> = [(0.5, 1.0, -1.0), (-1.5, -2.0, 0.5), (2.0, 0.25, 4.0)]
        .iter()
        .map(|&(x, v1, v2): &(f32, f32, f32)| 2.0 * x * v1 + 3.0 * v2)
        .collect();
    let cotangents = [v1.clone(), v2.clone()];
    for create_graph in [false, true] {
        let g = ncsn::grad_with(&[&y1, &y2], &cotangents, &[&x], create_graph).remove(0);
        assert_eq!(g.to_vec(), want, "create_graph = {create_graph}");
        if create_graph {
            let h = grad(&[&g.sum_all()], &[&x], false).remove(0);
            assert_eq!(h.to_vec(), v1.mul_scalar(2.0).to_vec(), "second order");
        }
    }
}

/// `backward` returns gradients for exactly the leaves that require one, as PyTorch fills
/// `.grad` only for those: the data a loss reads (and a constant computed from it) gets no
/// entry, and the walk spends no vector-Jacobian product on it.
#[test]
fn backward_gives_gradients_only_to_leaves_that_require_them() {
    let w = Tensor::from_vec(vec![1.0, 2.0], &[2]).requires_grad_();
    let data = Tensor::from_vec(vec![3.0, -1.0], &[2]);
    let squares = data.square(); // a constant: records nothing
    let loss = w.mul(&data).add(&squares).sum_all();
    let grads = loss.backward();
    assert!(grads.get(&data).is_none() && grads.get(&squares).is_none());
    assert_eq!(grads.len(), 1, "only w requires a gradient");
    assert_eq!(grads.get(&w).expect("w's gradient").to_vec(), [3.0, -1.0]);
}

#[test]
fn deep_graphs_differentiate_and_drop_without_overflow() {
    // 100,000 chained ops: both the topological walk and the drop must be iterative.
    let x = Tensor::scalar(0.5).requires_grad_();
    let mut y = x.clone();
    for _ in 0..100_000 {
        y = y.mul_scalar(1.0).add_scalar(0.0);
    }
    let g = grad(&[&y], &[&x], false).remove(0);
    assert_eq!(g.item(), 1.0);
    drop(y);
}

/// The first and second derivatives of each activation in f64, the references below.
fn exact_derivatives(name: &str, x: f64) -> (f64, f64) {
    let s = 1.0 / (1.0 + (-x).exp());
    match name {
        "sigmoid" => (s * (1.0 - s), s * (1.0 - s) * (1.0 - 2.0 * s)),
        "tanh" => {
            let t = x.tanh();
            (1.0 - t * t, -2.0 * t * (1.0 - t * t))
        }
        "softplus" => (s, s * (1.0 - s)),
        "elu" | "elu(0.5)" | "elu(2.5)" if x > 0.0 => (1.0, 0.0),
        "elu" | "elu(0.5)" | "elu(2.5)" => {
            let alpha = match name {
                "elu(0.5)" => 0.5,
                "elu(2.5)" => 2.5,
                _ => 1.0,
            };
            (alpha * x.exp(), alpha * x.exp()) // f = α(eˣ − 1)
        }
        "relu" => (if x > 0.0 { 1.0 } else { 0.0 }, 0.0),
        _ => unreachable!(),
    }
}

/// The activations' first derivatives (a one-pass kernel, reading σ(x) that a recorded softplus
/// saved) and their second derivatives (the VJP of that kernel's node: one pass when both of its
/// inputs want a gradient, tensor ops when one does) against the f64 formulas, on both signs of
/// x. 70,000 elements take the parallel path; the transposed input, the copy to row-major order.
/// ELU runs with α = 0.5 and 2.5 as well as the network's 1: an α left out of a derivative would
/// pass at α = 1 (it is off by |α − 1|·eˣ·g·u ≥ 0.5·e⁻⁴·0.01 ≈ 9e-5 on these inputs otherwise).
///
/// Tolerance: the kernels evaluate f32 formulas in f(x) (σ(1 − σ), 1 − tanh², f + α, …) whose
/// rounding is an absolute error of a few ulps of max(1, α), ≲ 5e-7 for α ≤ 2.5, in the
/// derivative, times the factors g and u in [0.1, 1]; so |error| ≤ 1e-6·(1 + |exact|) per
/// element, with room for the products.
#[test]
fn activation_derivatives_of_first_and_second_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let row_major = common::tensor(&mut rng, &[200, 350], 0.05, 4.0, true);
    let transposed = common::tensor(&mut rng, &[350, 200], 0.05, 4.0, true).t();
    let g = common::tensor(&mut rng, &[200, 350], 0.1, 1.0, false);
    let u = common::tensor(&mut rng, &[200, 350], 0.1, 1.0, false);
    type Activation = fn(&Tensor) -> Tensor;
    let activations: [(&str, Activation); 7] = [
        ("sigmoid", |x| x.sigmoid()),
        ("tanh", |x| x.tanh()),
        ("softplus", |x| x.softplus()),
        ("elu", |x| x.elu(1.0)),
        ("elu(0.5)", |x| x.elu(0.5)),
        ("elu(2.5)", |x| x.elu(2.5)),
        ("relu", |x| x.relu()),
    ];
    let check = |what: &str, got: Vec<f32>, exact: &dyn Fn(usize) -> f64| {
        for (i, &a) in got.iter().enumerate() {
            let e = exact(i);
            assert!(
                (a as f64 - e).abs() <= 1e-6 * (1.0 + e.abs()),
                "{what}: element {i}: {a} vs exact {e}"
            );
        }
    };
    let (gs, us) = (g.to_vec(), u.to_vec());
    for (name, f) in activations {
        for input in [&row_major, &transposed] {
            let xs = input.to_vec();
            let d = |i: usize| exact_derivatives(name, xs[i] as f64);
            // First order, without and with a graph: ∇ₓ Σ g ⊙ f(x) = g ⊙ f′(x).
            for create in [false, true] {
                let x = input.detach().requires_grad_();
                let gx = grad(&[&f(&x).mul(&g).sum_all()], &[&x], create).remove(0);
                let what = format!("{name} f′ (create_graph {create})");
                check(&what, gx.to_vec(), &|i| gs[i] as f64 * d(i).0);
            }
            // Second order through ⟨g ⊙ f′(x), u⟩: ∇ₓ = u ⊙ g ⊙ f″(x) and ∇_g = u ⊙ f′(x), with
            // g wanting a gradient (the fused pass) and without (the tensor-op form).
            for g_wants in [true, false] {
                let x = input.detach().requires_grad_();
                let gv = if g_wants {
                    g.detach().requires_grad_()
                } else {
                    g.detach()
                };
                let gx = grad(&[&f(&x).mul(&gv).sum_all()], &[&x], true).remove(0);
                let inner = gx.mul(&u).sum_all();
                let what = format!("{name} f″ (g wants a gradient: {g_wants})");
                let second = |i: usize| us[i] as f64 * gs[i] as f64 * d(i).1;
                if g_wants {
                    let both = grad(&[&inner], &[&x, &gv], false);
                    check(&what, both[0].to_vec(), &second);
                    check(&what, both[1].to_vec(), &|i| us[i] as f64 * d(i).0);
                } else {
                    check(&what, grad(&[&inner], &[&x], false)[0].to_vec(), &second);
                }
            }
        }
    }
}

/// `linear` is one op where `x.matmul(&w.t()).add(b)` records three, and it promises the same
/// numbers: the same product kernel on the same strided view of w, the bias added once, and
/// VJPs that run the same products. Checked bit for bit — values, first derivatives in x, w, b,
/// and the second derivatives that sliced score matching takes (∇_θ of a quantity built from
/// ∇ₓ with create_graph) — on shapes that reach each product path: the thin dot products (2
/// inputs or outputs), the small AVX-512 kernel (64 × 128 × 128) and multi-threaded sgemm
/// (256 × 256 × 256), with and without a bias. A 3-D input takes the composite itself.
#[test]
fn linear_gives_the_bits_of_matmul_plus_bias_to_second_order() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    for &(n, d_in, d_out) in &[(64, 2, 128), (64, 128, 2), (64, 128, 128), (256, 256, 256)] {
        for with_bias in [true, false] {
            let x = common::tensor(&mut rng, &[n, d_in], -1.0, 1.0, false).requires_grad_();
            let w = common::tensor(&mut rng, &[d_out, d_in], -0.5, 0.5, false).requires_grad_();
            let b = common::tensor(&mut rng, &[d_out], -0.5, 0.5, false).requires_grad_();
            let b = with_bias.then_some(&b);
            let r = common::tensor(&mut rng, &[n, d_out], -1.0, 1.0, false);
            let q = common::tensor(&mut rng, &[n, d_in], -1.0, 1.0, false);
            let fused = |x: &Tensor| x.linear(&w, b).softplus();
            let composite = |x: &Tensor| {
                let y = x.matmul(&w.t());
                b.map_or(y.clone(), |b| y.add(b)).softplus()
            };
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            let case = format!("({n}, {d_in}) → {d_out}, bias {with_bias}");
            let mut params = vec![&x, &w];
            params.extend(b);
            let run = |f: &dyn Fn(&Tensor) -> Tensor| {
                let y = f(&x);
                let first = grad(&[&y.mul(&r).sum_all()], &params, false);
                let gx = grad(&[&y.mul(&r).sum_all()], &[&x], true).remove(0);
                let second = grad(&[&gx.mul(&q).sum_all()], &params[1..], false);
                (y, first, second)
            };
            let (y1, g1, h1) = run(&fused);
            let (y2, g2, h2) = run(&composite);
            assert_eq!(bits(&y1), bits(&y2), "values, {case}");
            for (i, (a, c)) in g1.iter().zip(&g2).enumerate() {
                assert_eq!(bits(a), bits(c), "first derivative {i}, {case}");
            }
            for (i, (a, c)) in h1.iter().zip(&h2).enumerate() {
                assert_eq!(bits(a), bits(c), "second derivative {i}, {case}");
            }
            let x3 = x.detach().reshape(&[1, n, d_in]);
            assert_eq!(
                bits(&x3.linear(&w, b)),
                bits(&b.map_or(x3.matmul(&w.t()), |b| x3.matmul(&w.t()).add(b))),
                "3-D input through the composite, {case}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "linear: input [4, 3], weight [5, 2] and bias None do not fit")]
fn linear_names_the_shapes_that_do_not_fit() {
    Tensor::zeros(&[4, 3]).linear(&Tensor::zeros(&[5, 2]), None);
}

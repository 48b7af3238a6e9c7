//! First and second derivatives of every op against central finite differences, on random inputs
//! and shapes (including broadcast shapes). The harness and its tolerances are in common/mod.rs.

mod common;

use common::{check, tensor};
use ncsn::Tensor;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn config() -> ProptestConfig {
    // Each case runs dozens of finite-difference checks; 24 cases per family keep the suite fast
    // while covering many shapes. Failures are persisted and replayed by proptest.
    common::proptest_config(24)
}

/// A shape of 1 to 3 axes of size 1 to 3.
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..=3, 1..=3)
}

/// A shape that broadcasts against `s`: some leading axes dropped, some axes set to 1.
fn broadcast_partner(s: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
    let drop = rng.random_range(0..s.len());
    s[drop..]
        .iter()
        .map(|&d| if rng.random_bool(0.4) { 1 } else { d })
        .collect()
}

/// Values on a lattice: odd multiples of 0.1 when `odd`, even ones otherwise, so that an odd and an
/// even tensor differ by at least 0.1 everywhere (kinks of maximum/minimum stay away from ±h).
fn lattice(rng: &mut ChaCha8Rng, shape: &[usize], odd: bool) -> Tensor {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| (2 * rng.random_range(-10i32..10) + odd as i32) as f32 * 0.1)
        .collect();
    Tensor::from_vec(v, shape)
}

/// Distinct values at least 0.1 apart, so that a maximum is unique and stays so within ±h.
fn distinct(rng: &mut ChaCha8Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (-15..15).map(|i| i as f32 * 0.1).collect();
    v.shuffle(rng);
    v.truncate(n);
    Tensor::from_vec(v, shape)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn unary_ops(s in shape(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // Smooth everywhere: any sign, magnitudes in [0.1, 2].
        let x = tensor(&mut rng, &s, 0.1, 2.0, true);
        let smooth: [(&str, common::Op); 10] = [
            ("neg", &|x| x[0].neg()),
            ("exp", &|x| x[0].exp()),
            ("square", &|x| x[0].square()),
            ("sigmoid", &|x| x[0].sigmoid()),
            ("tanh", &|x| x[0].tanh()),
            ("softplus", &|x| x[0].softplus()),
            ("add_scalar", &|x| x[0].add_scalar(0.7)),
            ("mul_scalar", &|x| x[0].mul_scalar(-1.3)),
            ("div_scalar", &|x| x[0].div_scalar(-2.9)),
            ("powf_int", &|x| x[0].powf(3.0)),
        ];
        for (name, f) in smooth {
            check(name, f, std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        }
        // Kinks at 0 (abs, relu; elu's second derivative): inputs are at least 0.1 > h from it.
        let kinked: [(&str, common::Op); 3] =
            [("abs", &|x| x[0].abs()), ("relu", &|x| x[0].relu()), ("elu", &|x| x[0].elu(1.0))];
        for (name, f) in kinked {
            check(name, f, std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        }
        // Defined for positive inputs only.
        let p = tensor(&mut rng, &s, 0.5, 2.0, false);
        let positive: [(&str, common::Op); 3] =
            [("log", &|x| x[0].log()), ("sqrt", &|x| x[0].sqrt()), ("powf", &|x| x[0].powf(1.7))];
        for (name, f) in positive {
            check(name, f, std::slice::from_ref(&p), seed).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn binary_ops_broadcast(s in shape(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let t = broadcast_partner(&s, &mut rng);
        // Either operand may be the broadcast one.
        let (sa, sb) = if rng.random_bool(0.5) { (s.clone(), t) } else { (t, s.clone()) };
        let a = tensor(&mut rng, &sa, 0.1, 2.0, true);
        let b = tensor(&mut rng, &sb, 0.5, 2.0, true); // |b| ≥ 0.5 for div
        let ops: [(&str, common::Op); 4] = [
            ("add", &|x| x[0].add(&x[1])),
            ("sub", &|x| x[0].sub(&x[1])),
            ("mul", &|x| x[0].mul(&x[1])),
            ("div", &|x| x[0].div(&x[1])),
        ];
        for (name, f) in ops {
            check(name, f, &[a.clone(), b.clone()], seed).map_err(TestCaseError::fail)?;
        }
        let (la, lb) = (lattice(&mut rng, &sa, true), lattice(&mut rng, &sb, false));
        let ext: [(&str, common::Op); 2] =
            [("maximum", &|x| x[0].maximum(&x[1])), ("minimum", &|x| x[0].minimum(&x[1]))];
        for (name, f) in ext {
            check(name, f, &[la.clone(), lb.clone()], seed).map_err(TestCaseError::fail)?;
        }
        // where_: a random constant mask broadcast against both branches.
        let sm = broadcast_partner(&s, &mut rng);
        let mask = Tensor::from_vec((0..sm.iter().product()).map(|_| rng.random_range(0..2) as f32).collect(), &sm);
        let f = move |x: &[Tensor]| Tensor::where_(&mask, &x[0], &x[1]);
        check("where", &f, &[a.clone(), b.clone()], seed).map_err(TestCaseError::fail)?;
        // sum_to, the adjoint of broadcasting.
        let big = tensor(&mut rng, &s, 0.1, 2.0, true);
        let target = broadcast_partner(&s, &mut rng);
        let f = move |x: &[Tensor]| x[0].sum_to(&target);
        check("sum_to", &f, &[big], seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn reductions(s in shape(), seed in any::<u64>(), keepdim in any::<bool>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        // A random non-empty subset of the axes, sometimes given as negative indices.
        let nd = s.len();
        let mut axes: Vec<isize> = (0..nd as isize).filter(|_| rng.random_bool(0.5)).collect();
        if axes.is_empty() { axes.push(rng.random_range(0..nd) as isize - nd as isize); }
        let x = tensor(&mut rng, &s, 0.1, 2.0, true);
        let a1 = axes.clone(); let a2 = axes.clone(); let a3 = axes.clone(); let a4 = axes.clone();
        check("sum", &move |x: &[Tensor]| x[0].sum(&a1, keepdim), std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        check("mean", &move |x: &[Tensor]| x[0].mean(&a2, keepdim), std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        check("logsumexp", &move |x: &[Tensor]| x[0].logsumexp(&a3, keepdim), std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        check("sum_all", &|x: &[Tensor]| x[0].sum_all(), std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
        let n: usize = axes.iter().map(|&a| s[a.rem_euclid(nd as isize) as usize]).product();
        if n > 1 {
            for unbiased in [true, false] {
                let a = axes.clone();
                check("var", &move |x: &[Tensor]| x[0].var(&a, unbiased, keepdim), std::slice::from_ref(&x), seed).map_err(TestCaseError::fail)?;
            }
        }
        let d = distinct(&mut rng, &s);
        check("max", &move |x: &[Tensor]| x[0].max(&a4, keepdim), &[d], seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn movement(s in shape(), seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = tensor(&mut rng, &s, 0.1, 2.0, true);
        let one = std::slice::from_ref(&x);
        let n: usize = s.iter().product();
        check("reshape", &move |x: &[Tensor]| x[0].reshape(&[n]), one, seed).map_err(TestCaseError::fail)?;
        check("unsqueeze_squeeze", &|x: &[Tensor]| x[0].unsqueeze(1).tanh().squeeze(1), one, seed).map_err(TestCaseError::fail)?;
        let mut perm: Vec<usize> = (0..s.len()).collect();
        perm.shuffle(&mut rng);
        let p = perm.clone();
        // A permuted (strided) tensor followed by an elementwise op and a reshape exercises
        // non-contiguous inputs in both directions.
        check("permute", &move |x: &[Tensor]| x[0].permute(&p).exp().reshape(&[n]), one, seed).map_err(TestCaseError::fail)?;
        let mut big = vec![2usize];
        big.extend(s.iter().map(|&d| if d == 1 { 3 } else { d }));
        check("broadcast_to", &move |x: &[Tensor]| x[0].broadcast_to(&big), one, seed).map_err(TestCaseError::fail)?;
        let axis = rng.random_range(0..s.len());
        let start = rng.random_range(0..s[axis]);
        let len = rng.random_range(1..=s[axis] - start);
        check("narrow", &move |x: &[Tensor]| x[0].narrow(axis as isize, start, len), one, seed).map_err(TestCaseError::fail)?;
        let (before, after) = (rng.random_range(0..3), rng.random_range(0..3));
        check("pad_axis", &move |x: &[Tensor]| x[0].pad_axis(axis, before, after), one, seed).map_err(TestCaseError::fail)?;
        let mut s2 = s.clone();
        s2[axis] = rng.random_range(1..=3);
        let y = tensor(&mut rng, &s2, 0.1, 2.0, true);
        check("concat", &move |x: &[Tensor]| Tensor::concat(&[x[0].clone(), x[1].clone(), x[0].clone()], axis as isize), &[x.clone(), y], seed).map_err(TestCaseError::fail)?;
        let z = tensor(&mut rng, &s, 0.1, 2.0, true);
        let at = rng.random_range(0..=s.len());
        check("stack", &move |x: &[Tensor]| Tensor::stack(&[x[0].clone(), x[1].clone()], at), &[x.clone(), z], seed).map_err(TestCaseError::fail)?;
        let idx: Vec<usize> = (0..4).map(|_| rng.random_range(0..s[axis])).collect(); // repeats allowed
        let i1 = idx.clone();
        check("index_select", &move |x: &[Tensor]| x[0].index_select(axis as isize, &i1), one, seed).map_err(TestCaseError::fail)?;
        let size = s[axis] + 1;
        let i2 = std::sync::Arc::new((0..s[axis]).map(|_| rng.random_range(0..size)).collect::<Vec<_>>());
        check("index_add", &move |x: &[Tensor]| x[0].index_add_into(size, axis, i2.clone()), one, seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn matmul(m in 1usize..=3, k in 1usize..=3, n in 1usize..=3, b in 1usize..=3, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let f = |x: &[Tensor]| x[0].matmul(&x[1]);
        let a2 = tensor(&mut rng, &[m, k], 0.1, 1.0, true);
        let b2 = tensor(&mut rng, &[k, n], 0.1, 1.0, true);
        check("matmul_2d", &f, &[a2.clone(), b2.clone()], seed).map_err(TestCaseError::fail)?;
        // Transposed (strided) operands.
        let ft = |x: &[Tensor]| x[0].t().matmul(&x[1].t());
        check("matmul_transposed", &ft, &[a2.t().detach(), b2.t().detach()], seed).map_err(TestCaseError::fail)?;
        // Batched with a broadcast batch axis on either side.
        let a3 = tensor(&mut rng, &[b, m, k], 0.1, 1.0, true);
        check("matmul_batched_bcast_b", &f, &[a3.clone(), b2.clone()], seed).map_err(TestCaseError::fail)?;
        let a1 = tensor(&mut rng, &[1, m, k], 0.1, 1.0, true);
        let b3 = tensor(&mut rng, &[b, k, n], 0.1, 1.0, true);
        check("matmul_batched_bcast_a", &f, &[a1, b3], seed).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn linear(n in 1usize..=3, d_in in 1usize..=3, d_out in 1usize..=3, seed in any::<u64>()) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x = tensor(&mut rng, &[n, d_in], 0.1, 1.0, true);
        let w = tensor(&mut rng, &[d_out, d_in], 0.1, 1.0, true);
        let b = tensor(&mut rng, &[d_out], 0.1, 1.0, true);
        let f = |t: &[Tensor]| t[0].linear(&t[1], Some(&t[2]));
        check("linear", &f, &[x.clone(), w.clone(), b], seed).map_err(TestCaseError::fail)?;
        let f = |t: &[Tensor]| t[0].linear(&t[1], None);
        check("linear_no_bias", &f, &[x, w], seed).map_err(TestCaseError::fail)?;
    }
}

/// Where several elements share a maximum (or minimum), the gradient is split among them equally,
/// as PyTorch's `amax` and `maximum` do: no element is picked arbitrarily, and the shares add up
/// to the upstream gradient.
#[test]
fn ties_share_the_gradient_equally() {
    let x =
        Tensor::from_vec(vec![1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 0.0], &[2, 4]).requires_grad_();
    let g = ncsn::grad(&[&x.max(&[1], false).sum_all()], &[&x], false).remove(0);
    let third = 1.0 / 3.0;
    assert_eq!(g.to_vec(), [0.0, 0.5, 0.5, 0.0, third, third, third, 0.0]);
    for min in [false, true] {
        let a = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).requires_grad_();
        let b = Tensor::from_vec(vec![1.0, 0.0, 4.0], &[3]).requires_grad_();
        let y = if min { a.minimum(&b) } else { a.maximum(&b) };
        let gs = ncsn::grad(&[&y.sum_all()], &[&a, &b], false);
        let (ga, gb) = (gs[0].to_vec(), gs[1].to_vec());
        // Element 0 is a tie; elements 1 and 2 go to the larger (smaller) one.
        let (wa, wb) = if min {
            ([0.5, 0.0, 1.0], [0.5, 1.0, 0.0])
        } else {
            ([0.5, 1.0, 0.0], [0.5, 0.0, 1.0])
        };
        assert_eq!(
            (ga.as_slice(), gb.as_slice()),
            (&wa[..], &wb[..]),
            "min: {min}"
        );
    }
    // With itself: each side gets half, and x's gradient is the whole.
    let a = Tensor::from_vec(vec![-1.0, 2.0], &[2]).requires_grad_();
    let g = ncsn::grad(&[&a.maximum(&a).sum_all()], &[&a], false).remove(0);
    assert_eq!(g.to_vec(), [1.0, 1.0]);
}

//! Finite-difference checks shared by the gradient tests.
//!
//! For an op f and inputs x₁…xₙ the checks use the scalar L(x) = Σ (w ⊙ f(x) + ½ f(x)²) with a
//! fixed random w. The quadratic term gives linear ops (reshape, narrow, matmul, …) a non-zero
//! second derivative, so that the second-order check really differentiates their VJPs.
//!
//! Tolerances. Everything is f32. A central difference with step h has truncation error
//! h²/6·|L'''| and rounding error about ε·|L|/h with ε ≈ 6e-8 (f32 round-off, a few ulps after
//! summation). The inputs are O(1) and the tensors have at most 27 elements, so |L| ≲ 50 and
//! |L'''| ≲ 50 on the domains used; with h = 1e-2 that is ≲ 1e-3 + 3e-4. The checks allow
//! |autograd − fd| ≤ 4e-3 + 2e-2·|fd|, a few times that bound; a wrong derivative (a missing
//! factor, a sign, a transposed index) is off by O(1).
#![allow(dead_code)]

pub mod dsm;

use ncsn::{Tensor, grad};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Finite-difference step.
pub const H: f32 = 1e-2;
/// Absolute and relative tolerance (see the module docs).
pub const ATOL: f32 = 4e-3;
/// Relative tolerance.
pub const RTOL: f32 = 2e-2;

pub type Op<'a> = &'a dyn Fn(&[Tensor]) -> Tensor;

/// The scalar L(x) = Σ (w ⊙ f(x) + ½ f(x)²).
pub fn loss(f: Op, xs: &[Tensor], w: &Tensor) -> Tensor {
    let y = f(xs);
    y.mul(w).add(&y.square().mul_scalar(0.5)).sum_all()
}

/// Values from `rng`, uniform on ±[lo, hi] (so at least `lo` away from 0) or on [lo, hi].
pub fn values(rng: &mut ChaCha8Rng, n: usize, lo: f32, hi: f32, signed: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = rng.random_range(lo..hi);
            if signed && rng.random_bool(0.5) {
                -v
            } else {
                v
            }
        })
        .collect()
}

pub fn tensor(rng: &mut ChaCha8Rng, shape: &[usize], lo: f32, hi: f32, signed: bool) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(rng, n, lo, hi, signed), shape)
}

pub fn close(auto: f32, fd: f32) -> bool {
    (auto - fd).abs() <= ATOL + RTOL * fd.abs()
}

fn perturbed(xs: &[Tensor], i: usize, e: usize, delta: f32) -> Vec<Tensor> {
    xs.iter()
        .enumerate()
        .map(|(j, x)| {
            let mut v = x.to_vec();
            if j == i {
                v[e] += delta;
            }
            Tensor::from_vec(v, x.shape()).requires_grad_()
        })
        .collect()
}

fn leaves(xs: &[Tensor]) -> Vec<Tensor> {
    xs.iter().map(|x| x.detach().requires_grad_()).collect()
}

/// First derivatives of L with respect to every input element against central differences.
pub fn check_first(name: &str, f: Op, xs: &[Tensor], seed: u64) -> Result<(), String> {
    let xs = leaves(xs);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let out_shape = f(&xs).shape().to_vec();
    let w = tensor(&mut rng, &out_shape, -1.0, 1.0, false);
    let refs: Vec<&Tensor> = xs.iter().collect();
    let auto = grad(&[&loss(f, &xs, &w)], &refs, false);
    for (i, x) in xs.iter().enumerate() {
        let a = auto[i].to_vec();
        assert_eq!(auto[i].shape(), x.shape(), "{name}: gradient shape");
        for (e, &ae) in a.iter().enumerate() {
            let lp = loss(f, &perturbed(&xs, i, e, H), &w).item();
            let lm = loss(f, &perturbed(&xs, i, e, -H), &w).item();
            let fd = (lp - lm) / (2.0 * H);
            if !close(ae, fd) {
                return Err(format!(
                    "{name}: ∂L/∂x{i}[{e}] autograd {ae} vs finite difference {fd}"
                ));
            }
        }
    }
    Ok(())
}

/// ⟨∇L, u⟩ for fixed directions u, as a function of the inputs; with `create_graph` its graph is
/// kept so that it can be differentiated once more.
fn directional(f: Op, xs: &[Tensor], w: &Tensor, us: &[Tensor], create_graph: bool) -> Tensor {
    let refs: Vec<&Tensor> = xs.iter().collect();
    let gs = grad(&[&loss(f, xs, w)], &refs, create_graph);
    gs.iter()
        .zip(us)
        .map(|(g, u)| g.mul(u).sum_all())
        .reduce(|a, b| a.add(&b))
        .expect("inputs")
}

// ANCHOR: check_second
/// Second derivatives: the Hessian-vector product ∇(⟨∇L, u⟩) from double backward against central
/// differences of the (separately checked) first-order gradient. Mixed partials between inputs are
/// covered because u spans all inputs.
pub fn check_second(name: &str, f: Op, xs: &[Tensor], seed: u64) -> Result<(), String> {
    let xs = leaves(xs);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let out_shape = f(&xs).shape().to_vec();
    let w = tensor(&mut rng, &out_shape, -1.0, 1.0, false);
    let us: Vec<Tensor> = xs
        .iter()
        .map(|x| tensor(&mut rng, x.shape(), -1.0, 1.0, false))
        .collect();
    let refs: Vec<&Tensor> = xs.iter().collect();
    let hv = grad(&[&directional(f, &xs, &w, &us, true)], &refs, false);
    for (i, x) in xs.iter().enumerate() {
        for (e, &ae) in hv[i].to_vec().iter().enumerate().take(x.numel()) {
            let dp = directional(f, &perturbed(&xs, i, e, H), &w, &us, false).item();
            let dm = directional(f, &perturbed(&xs, i, e, -H), &w, &us, false).item();
            let fd = (dp - dm) / (2.0 * H);
            if !close(ae, fd) {
                return Err(format!(
                    "{name}: (H·u)[x{i}][{e}] double backward {ae} vs finite difference {fd}"
                ));
            }
        }
    }
    Ok(())
}

/// Both checks.
pub fn check(name: &str, f: Op, xs: &[Tensor], seed: u64) -> Result<(), String> {
    check_first(name, f, xs, seed)?;
    check_second(name, f, xs, seed)
}

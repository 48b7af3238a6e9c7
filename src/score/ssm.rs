//! Sliced score matching (Song, Garg, Shi & Ermon, 2019). The NCSN paper writes its
//! variance-reduced form, SSM-VR below, as Eq. 3 and trains its toy models with it (§3.1–3.2,
//! Figs. 1–2).
//!
//! Projecting the Fisher divergence on random directions v with E[v vᵀ] = I turns the trace of
//! Eq. 1 into a quantity one backward pass computes:
//!
//! $$ \mathbb E_{p_v} \mathbb E_{p}\Big[ v^\top \nabla_x s_\theta(x)\, v + \tfrac12 \big(v^\top s_\theta(x)\big)^2 \Big], $$
//!
//! since E_v[vᵀ A v] = tr(A E[v vᵀ]) = tr(A). The Jacobian-vector product vᵀ∇ₓ s_θ is the gradient
//! in x of the scalar vᵀ s_θ(x): one backward pass whatever D is.
//!
//! For Gaussian or Rademacher v the second term's expectation is known, E_v[(vᵀs)²] = ‖s‖², and
//! replacing it by ‖s‖² removes its variance: that is **SSM-VR**, the reference toy runner's
//! `sliced_score_estimation_vr`:
//!
//! $$ \mathbb E_{p_v} \mathbb E_{p}\Big[ v^\top \nabla_x s_\theta(x)\, v + \tfrac12 \|s_\theta(x)\|^2 \Big]. $$
//!
//! Both equal exact score matching ([`super::esm`]) in expectation over v.

use super::flat;
use crate::{Tensor, grad};
use rand::Rng;

/// The distribution of the projection directions v. Each has E[v vᵀ] = I, so that the sliced
/// objective equals exact score matching in expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Projection {
    /// v ~ N(0, I) (the reference's `sliced_score_estimation_vr`).
    Gaussian,
    /// Each entry ±1 with probability ½ (the sign of a Gaussian, as the reference draws it).
    Rademacher,
    /// Uniform on the sphere of radius √D (a normalised Gaussian times √D, as the reference's
    /// `single_sliced_score_matching(noise_type='sphere')`). The reference's
    /// `sliced_score_estimation` normalises to radius 1 instead, which scales the objective by
    /// 1/D without moving its minimiser.
    Sphere,
}

impl Projection {
    /// Draws a batch of directions of the given shape: `(N, D)`, or `(N, …)` for samples that
    /// are themselves arrays (an image batch `(N, C, H, W)` has D = C·H·W). Sample n's direction
    /// is row n, whatever its shape; for [`Projection::Sphere`] its whole length is √D.
    pub fn sample(self, shape: &[usize], rng: &mut impl Rng) -> Tensor {
        let z = Tensor::randn(shape, rng);
        match self {
            Projection::Gaussian => z,
            Projection::Rademacher => z.sign(),
            Projection::Sphere => {
                let n = shape.first().copied().unwrap_or(1);
                let d = shape.iter().skip(1).product::<usize>();
                let rows = z.reshape(&[n, d]);
                let norm = rows.square().sum(&[1], true).sqrt();
                rows.div(&norm).mul_scalar((d as f32).sqrt()).reshape(shape)
            }
        }
    }
}

/// The two terms of a sliced score-matching loss and their sum (the reference returns the same
/// triple), each averaged over the batch.
#[derive(Clone, Debug)]
pub struct SsmLoss {
    /// loss1 + loss2: what to minimise.
    pub loss: Tensor,
    /// ½(vᵀs)², or ½‖s‖² for the variance-reduced form.
    pub loss1: Tensor,
    /// vᵀ ∇ₓ s v, the sliced trace.
    pub loss2: Tensor,
}

// ANCHOR: ssm
/// The sliced score-matching loss for given directions `v` (one per row of `x`, same shape).
/// With `variance_reduced` the first term is ½‖s‖² (SSM-VR), otherwise ½(vᵀs)².
pub fn sliced_score_matching(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    v: &Tensor,
    variance_reduced: bool,
) -> SsmLoss {
    let shape = x.shape().to_vec();
    let xf = flat(&x.detach()).requires_grad_(); //         (N, D)
    let v = flat(v);
    let s = flat(&score(&xf.reshape(&shape))); //            s(x), (N, D)
    let sv = s.mul(&v); //                                   v ⊙ s
    let jvp = &grad(&[&sv.sum_all()], &[&xf], true)[0]; //   ∇ₓ(vᵀs) = vᵀ∇ₓs, (N, D)
    let loss2 = jvp.mul(&v).sum(&[1], false).mean_all(); //  vᵀ∇ₓs v
    let loss1 = if variance_reduced {
        s.square().sum(&[1], false).mul_scalar(0.5).mean_all() //      ½‖s‖²
    } else {
        sv.sum(&[1], false).square().mul_scalar(0.5).mean_all() //     ½(vᵀs)²
    };
    SsmLoss {
        loss: loss1.add(&loss2),
        loss1,
        loss2,
    }
}
// ANCHOR_END: ssm

/// `x` repeated `n` times along the batch axis: rows 0..N, then 0..N again, … (the reference's
/// `samples.unsqueeze(0).expand(n_particles, ...)`).
fn repeat_rows(x: &Tensor, n: usize) -> Tensor {
    if n == 1 {
        return x.clone();
    }
    let mut big = vec![n];
    big.extend_from_slice(x.shape());
    let mut out = x.shape().to_vec();
    out[0] *= n;
    x.unsqueeze(0).broadcast_to(&big).reshape(&out)
}

/// Sliced score matching with `n_particles` directions per sample drawn from `projection`
/// (the reference's `sliced_score_estimation`, up to the sphere's radius; see [`Projection`]).
pub fn ssm_loss(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    projection: Projection,
    n_particles: usize,
    rng: &mut impl Rng,
) -> SsmLoss {
    let x = repeat_rows(x, n_particles);
    let v = projection.sample(x.shape(), rng).to(&x.device());
    sliced_score_matching(score, &x, &v, false)
}

// ANCHOR: ssm_vr
/// SSM-VR with `n_particles` Gaussian directions per sample: the reference's
/// `sliced_score_estimation_vr`, used to train the toy score network of Fig. 2.
pub fn ssm_vr_loss(
    score: impl Fn(&Tensor) -> Tensor,
    x: &Tensor,
    n_particles: usize,
    rng: &mut impl Rng,
) -> SsmLoss {
    let x = repeat_rows(x, n_particles);
    let v = Tensor::randn_on(x.shape(), &x.device(), rng);
    sliced_score_matching(score, &x, &v, true)
}
// ANCHOR_END: ssm_vr

//! Exact score matching (Hyvärinen, 2005).
//!
//! For a score model s_θ: ℝᴰ → ℝᴰ, the Fisher divergence to the data score,
//! ½ E_p‖s_θ(x) − ∇ₓ log p(x)‖², cannot be computed without ∇ₓ log p. Integrating the cross term by
//! parts (assuming p s_θ → 0 at infinity) removes it:
//!
//! $$ \tfrac12 \mathbb E_p \|s_\theta(x) - \nabla_x \log p(x)\|^2
//!    = \mathbb E_p\Big[\operatorname{tr}(\nabla_x s_\theta(x)) + \tfrac12 \|s_\theta(x)\|^2\Big]
//!    + \underbrace{\tfrac12 \mathbb E_p \|\nabla_x \log p(x)\|^2}_{\text{independent of }\theta}. $$
//!
//! The right-hand expectation is the paper's Eq. 1. Its trace needs the diagonal of the Jacobian
//! ∇ₓ s_θ, which reverse mode gives one row at a time: D backward passes, which is why exact score
//! matching does not scale to images and sliced score matching ([`super::ssm`]) exists.

use super::flat;
use crate::{Tensor, grad};

// ANCHOR: esm
/// The exact score-matching loss E[tr(∇ₓ s(x)) + ½‖s(x)‖²] over the batch `x` (rows are samples;
/// any trailing shape is flattened into D).
///
/// The trace is accumulated with one backward pass per dimension d: the gradient of Σₙ s_d(xₙ)
/// with respect to x has, in row n, ∇ₓ s_d(xₙ), whose d-th entry is ∂s_d/∂x_d at xₙ (rows do not
/// interact in a network applied row by row). Each pass keeps its graph (`create_graph`) so that
/// the loss can be differentiated in θ.
pub fn esm_loss(score: impl Fn(&Tensor) -> Tensor, x: &Tensor) -> Tensor {
    let shape = x.shape().to_vec();
    let xf = flat(&x.detach()).requires_grad_(); //           (N, D), a leaf we differentiate in
    let s = flat(&score(&xf.reshape(&shape))); //              s(x), (N, D)
    let (n, d) = (s.shape()[0], s.shape()[1]);
    let mut trace = Tensor::full_on(&[n, 1], 0.0, &x.device());
    for i in 0..d {
        let s_i = s.narrow(1, i, 1).sum_all(); //               Σₙ s_i(xₙ)
        let row = &grad(&[&s_i], &[&xf], true)[0]; //          ∇ₓ s_i, (N, D)
        trace = trace.add(&row.narrow(1, i, 1)); //             + ∂s_i/∂x_i
    }
    let half_sq = s.square().sum(&[1], true).mul_scalar(0.5); // ½‖s‖²
    trace.add(&half_sq).mean_all()
}
// ANCHOR_END: esm

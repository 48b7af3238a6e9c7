//! Score matching: objectives whose minimiser is the score ∇ₓ log p(x) of the data, and the
//! score models they train.
//!
//! A *score function* here is anything that maps a batch `x` of shape `(N, …)` to a tensor of the
//! same shape: a closure `Fn(&Tensor) -> Tensor` for an unconditional model, or
//! `Fn(&Tensor, &[usize]) -> Tensor` for a noise-conditional one, where the slice holds one noise
//! level index per row (the reference's `scorenet(x, labels)`). Every objective below is generic
//! over that closure, so the same code trains the toy MLPs of this module and the image networks.
//!
//! | file | objective | paper |
//! |---|---|---|
//! | [`esm`] | exact (Hyvärinen) score matching, E[tr ∇ₓs + ½‖s‖²] | Eq. 1 |
//! | [`ssm`] | sliced score matching and its variance-reduced form (SSM-VR) | Eq. 3 |
//! | [`dsm`] | denoising score matching at one σ | Eq. 2 |
//! | [`anneal`] | the geometric noise schedule and the annealed DSM objective; a continuum of levels | Eq. 5–6 |
//! | [`model`] | the toy MLP score network and noise-conditional MLPs (L levels, or any σ) | §3.2, §4.1 |
//!
//! Each objective returns a 0-dimensional loss tensor that depends on the parameters through the
//! graph, ready for [`Tensor::backward`](crate::Tensor::backward). Those that contain ∇ₓ s_θ (ESM,
//! SSM) differentiate the network once with `create_graph = true`, and the optimizer's backward pass
//! differentiates that gradient again.
//!
//! [`closed_form_score`] turns a [toy distribution](crate::toy) with a closed-form score into a
//! score function, for samplers and tests; [`closed_form_score_and_divergence`] adds the score's
//! divergence, for likelihoods from the probability-flow ODE.

pub mod anneal;
pub mod dsm;
pub mod esm;
pub mod model;
pub mod ssm;

pub use anneal::{
    GeometricSigmas, NoiseRange, anneal_dsm_loss, anneal_dsm_loss_with, continuous_dsm_loss,
    continuous_dsm_loss_with, weighted_dsm_loss_with,
};
pub use dsm::{dsm_loss, dsm_loss_with};
pub use esm::esm_loss;
pub use model::{ContinuousNoiseMlp, NoiseConditionalMlp, ScoreMlp};
pub use ssm::{Projection, SsmLoss, sliced_score_matching, ssm_loss, ssm_vr_loss};

use crate::Tensor;
use crate::toy::{ClosedFormLaplacian, ClosedFormScore};
use ndarray::{Array2, Ix2};

/// A tensor of shape `(N, D)` from an `(N, D)` array (the bridge from [`crate::toy`], which works on
/// plain ndarray batches).
pub fn tensor_from_array2(a: Array2<f32>) -> Tensor {
    Tensor::from_array(a.into_dyn())
}

/// The data of a 2-D tensor as an `(N, D)` array. Panics if the tensor is not 2-D.
pub fn tensor_to_array2(t: &Tensor) -> Array2<f32> {
    t.to_array()
        .into_dimensionality::<Ix2>()
        .unwrap_or_else(|_| panic!("tensor_to_array2: shape {:?} is not 2-D", t.shape()))
}

/// The closed-form score of `dist` as a score function on `(N, D)` tensors (a constant: it records
/// no graph).
pub fn closed_form_score<P: ClosedFormScore>(dist: &P) -> impl Fn(&Tensor) -> Tensor + '_ {
    move |x: &Tensor| tensor_from_array2(dist.score(tensor_to_array2(x).view()))
}

/// The closed-form score of `dist` and its divergence Δ log p, shape `(N,)`, on `(N, D)` tensors:
/// what [`flow_log_likelihood`](crate::sample::flow_log_likelihood) needs, exactly (a constant,
/// like [`closed_form_score`]).
pub fn closed_form_score_and_divergence<P: ClosedFormLaplacian>(
    dist: &P,
) -> impl Fn(&Tensor) -> (Tensor, Tensor) + '_ {
    move |x: &Tensor| {
        let (s, div) = dist.score_and_laplacian(tensor_to_array2(x).view());
        (tensor_from_array2(s), Tensor::from_array(div.into_dyn()))
    }
}

/// Rows of `x` as a matrix `(N, D)` with D the product of the other axes (a reshape, no copy for
/// contiguous data): the objectives sum over D and average over N whatever the data's shape.
pub(crate) fn flat(x: &Tensor) -> Tensor {
    if x.ndim() == 2 {
        x.clone()
    } else {
        x.flatten_from(1)
    }
}

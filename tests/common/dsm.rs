//! The annealed denoising score matching loss of the reference (`anneal_dsm_score_estimation` in
//! ermongroup/ncsn `losses/dsm.py`, anneal_power = 2), for the tests and the bench. The score
//! engineer's `src/score/` is the library's home for it; this copy keeps the conv tests and the
//! bench self-contained.
#![allow(dead_code)]

use ncsn::Tensor;
use ncsn::nn::CondRefineNetDilated;

/// ℓ = mean over the batch of ½·σ_y²·‖s_θ(x + σ_y z, y) + z/σ_y‖², with z ~ N(0, I) given.
///
/// The target −(x̃ − x)/σ² equals −z/σ, and the weight λ(σ) = σ² makes every noise level
/// contribute O(1).
pub fn anneal_dsm_loss(
    model: &CondRefineNetDilated,
    x: &Tensor,
    labels: &[usize],
    sigmas: &[f32],
    z: &Tensor,
) -> Tensor {
    let n = x.shape()[0];
    let used: Vec<f32> = labels.iter().map(|&y| sigmas[y]).collect();
    let sigma = Tensor::from_vec(used.clone(), &[n, 1, 1, 1]);
    let perturbed = x.add(&z.mul(&sigma));
    let target = z.div(&sigma).neg();
    let scores = model.forward(&perturbed, labels);
    let per_sample = scores.sub(&target).square().sum(&[1, 2, 3], false); // (N)
    let weights = Tensor::from_vec(used.iter().map(|s| 0.5 * s * s).collect(), &[n]);
    per_sample.mul(&weights).mean_all()
}

/// The paper's noise levels: L values in geometric progression from σ₁ to σ_L.
pub fn geometric_sigmas(first: f32, last: f32, l: usize) -> Vec<f32> {
    (0..l)
        .map(|i| {
            let t = i as f32 / (l - 1).max(1) as f32;
            (first.ln() + t * (last.ln() - first.ln())).exp()
        })
        .collect()
}

//! Score models for the toy experiments.
//!
//! * [`ScoreMlp`]: s_θ(x), the reference toy runner's
//!   `nn.Sequential(Linear(2, 128), Softplus(), Linear(128, 128), Softplus(), Linear(128, 2))`,
//!   trained with SSM-VR for the paper's Fig. 2.
//! * [`NoiseConditionalMlp`]: s_θ(x, σ) for one of the levels of a [`GeometricSigmas`] schedule,
//!   trained with the annealed DSM objective and sampled with annealed Langevin dynamics.

use super::GeometricSigmas;
use crate::Tensor;
use crate::nn::{Activation, Linear, Mlp, Module, Path};
use rand::Rng;

/// A score network for unconditional score matching: an MLP `dim → hidden → hidden → dim` with
/// softplus activations (the reference's toy model for `dim = 2`, `hidden = 128`). Its parameters
/// are named like the reference's `nn.Sequential`: `0.weight`, `0.bias`, `2.…`, `4.…`.
#[derive(Clone)]
pub struct ScoreMlp {
    /// The underlying MLP.
    pub mlp: Mlp,
}

impl ScoreMlp {
    /// A freshly initialised network (PyTorch's default `Linear` init, drawn from `rng`).
    pub fn new(path: &Path, dim: usize, hidden: usize, rng: &mut impl Rng) -> Self {
        ScoreMlp {
            mlp: Mlp::new(path, &[dim, hidden, hidden, dim], Activation::Softplus, rng),
        }
    }
}

impl Module for ScoreMlp {
    /// s_θ(x) for a batch `(N, dim)`.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.mlp.forward(x)
    }
}

// ANCHOR: ncmlp
/// A noise-conditional score network s_θ(x, σᵢ) for the levels of a [`GeometricSigmas`] schedule:
/// an MLP `dim → hidden → hidden → dim` with softplus activations in which the level enters in two
/// ways:
///
/// 1. **per-level gains.** Each hidden layer's pre-activation is multiplied, unit by unit, by a
///    learned gain γ_ℓ\[i\] ∈ ℝ^hidden for level i: h_ℓ = softplus(γ_ℓ\[i\] ⊙ (W_ℓ h_{ℓ−1} + b_ℓ)).
///    This is the fully connected analogue of the conditional instance normalisation of the paper's
///    RefineNet (§4.1), where each level has its own scale per channel. The gains start at 1.
/// 2. **output scaling.** The last layer's output is divided by σᵢ:
///    s_θ(x, σᵢ) = f_θ(x, i)/σᵢ. The true score of q_σ has magnitude ∝ 1/σ (for x̃ = x + σz the
///    target is −z/σ), so f_θ only has to produce unit-scale outputs at every level. This is the
///    parameterisation the authors recommend in their follow-up (Song & Ermon 2020, "Improved
///    techniques", technique 3); NCSN's RefineNet has no such division and learns the scale itself.
///
/// Parameters: `0.*`, `2.*`, `4.*` for the linear layers as in [`ScoreMlp`], and `gamma.0`,
/// `gamma.1` (each `(L, hidden)`) for the gains.
#[derive(Clone)]
pub struct NoiseConditionalMlp {
    /// The three linear layers.
    pub layers: [Linear; 3],
    /// The per-level gains of the two hidden layers, each of shape `(L, hidden)`.
    pub gammas: [Tensor; 2],
    /// The noise levels the labels index.
    pub sigmas: GeometricSigmas,
}

impl NoiseConditionalMlp {
    /// A freshly initialised network for the levels `sigmas`.
    pub fn new(
        path: &Path,
        dim: usize,
        hidden: usize,
        sigmas: GeometricSigmas,
        rng: &mut impl Rng,
    ) -> Self {
        let layers = [
            Linear::new(&path.sub(0), dim, hidden, rng),
            Linear::new(&path.sub(2), hidden, hidden, rng),
            Linear::new(&path.sub(4), hidden, dim, rng),
        ];
        let g = path.sub("gamma");
        let gammas = [0, 1].map(|i| g.param(&i.to_string(), Tensor::ones(&[sigmas.len(), hidden])));
        NoiseConditionalMlp {
            layers,
            gammas,
            sigmas,
        }
    }

    /// s_θ(x, σ_{labels\[n\]}) for each row n of `x` (shape `(N, dim)`); `labels` holds 0-based level
    /// indices into [`Self::sigmas`].
    pub fn forward(&self, x: &Tensor, labels: &[usize]) -> Tensor {
        assert_eq!(
            labels.len(),
            x.shape()[0],
            "NoiseConditionalMlp: {} labels for a batch of shape {:?}",
            labels.len(),
            x.shape()
        );
        let gains = self.gammas.clone().map(|g| g.index_select(0, labels)); // γ[i] per row, (N, hidden)
        let sigma = self.sigmas.gather(labels, 2).to(&x.device()); //        (N, 1)
        self.forward_with(x, &gains, &sigma)
    }

    /// The score at one level for the whole batch (what annealed Langevin dynamics calls). Same
    /// result as [`Self::forward`] with every label equal to `level`, with the level's gains and σ
    /// broadcast instead of gathered row by row.
    pub fn forward_level(&self, x: &Tensor, level: usize) -> Tensor {
        let gains = self.gammas.clone().map(|g| g.narrow(0, level, 1)); //   (1, hidden)
        let sigma = Tensor::scalar(self.sigmas.get(level));
        self.forward_with(x, &gains, &sigma)
    }

    fn forward_with(&self, x: &Tensor, gains: &[Tensor; 2], sigma: &Tensor) -> Tensor {
        let mut h = x.clone();
        for (layer, g) in self.layers[..2].iter().zip(gains) {
            h = layer.forward(&h).mul(g).softplus(); //    softplus(γ[i] ⊙ (W h + b))
        }
        self.layers[2].forward(&h).div(sigma) //           f_θ(x, i) / σᵢ
    }
}
// ANCHOR_END: ncmlp

//! Score models for the toy experiments.
//!
//! * [`ScoreMlp`]: s_θ(x), the reference toy runner's
//!   `nn.Sequential(Linear(2, 128), Softplus(), Linear(128, 128), Softplus(), Linear(128, 2))`,
//!   trained with SSM-VR for the paper's Fig. 2.
//! * [`NoiseConditionalMlp`]: s_θ(x, σ) for one of the levels of a [`GeometricSigmas`] schedule,
//!   trained with the annealed DSM objective and sampled with annealed Langevin dynamics.
//! * [`ContinuousNoiseMlp`]: s_θ(x, σ) for any σ of a [`NoiseRange`], trained with DSM at
//!   log-uniform σ, for the samplers of [`crate::sample::sde`] that want hundreds of levels.

use super::{GeometricSigmas, NoiseRange};
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

// ANCHOR: continuous_mlp
/// A score network s_θ(x, σ) for every σ of a [`NoiseRange`], not only L fixed levels: what the
/// samplers of [`crate::sample::sde`] need, which step through hundreds of levels. An MLP
/// `dim → hidden → hidden → dim` with softplus activations, in which σ enters three ways:
///
/// 1. **an embedding added to each hidden layer.** σ's position u on the range's log scale (0 at
///    σ_min, 1 at σ_max) becomes the features e(σ) = (u, sin πku, cos πku for k = 1, …, 8),
///    and each hidden layer adds a learned linear map of them:
///    h_ℓ = softplus(W_ℓ h_{ℓ−1} + b_ℓ + E_ℓ e(σ)). Smooth in σ, and able to change quickly
///    where the score does. (Song et al. (2021) embed log σ with random Fourier features; these
///    are fixed, so the network draws nothing at construction that a reader must track.)
/// 2. **the input scaled to unit size**, x ↦ x/√(σ² + σ_d²) with σ_d the data's standard
///    deviation: x̃ = x + σz has about that size, so the first layer sees inputs of order one at
///    σ = 0.01 and at σ = 200 alike (the c_in of Karras et al., 2022).
/// 3. **the output divided by σ**, as in [`NoiseConditionalMlp`]: s_θ(x, σ) = f_θ(x, σ)/σ.
///
/// Parameters: `0.*`, `2.*`, `4.*` for the linear layers as in [`ScoreMlp`], and
/// `embed.0.weight`, `embed.1.weight` (each `(hidden, 17)`, no bias) for the embeddings.
#[derive(Clone)]
pub struct ContinuousNoiseMlp {
    /// The three linear layers.
    pub layers: [Linear; 3],
    /// The maps from σ's features to each hidden layer.
    pub embeddings: [Linear; 2],
    /// The range σ's position is measured on.
    pub range: NoiseRange,
    /// σ_d, the data's standard deviation, in the input scale 1/√(σ² + σ_d²).
    pub data_std: f32,
}

/// The frequencies k = 1, …, K of σ's features.
const FREQUENCIES: usize = 8;

impl ContinuousNoiseMlp {
    /// The number of features e(σ) has: u, and a sine and a cosine per frequency.
    pub const FEATURES: usize = 1 + 2 * FREQUENCIES;

    /// A freshly initialised network (PyTorch's default `Linear` init, drawn from `rng`).
    /// Panics unless `data_std` is positive and finite.
    pub fn new(
        path: &Path,
        dim: usize,
        hidden: usize,
        range: NoiseRange,
        data_std: f32,
        rng: &mut impl Rng,
    ) -> Self {
        assert!(
            data_std > 0.0 && data_std.is_finite(),
            "ContinuousNoiseMlp: data_std must be positive and finite, got {data_std}"
        );
        let layers = [
            Linear::new(&path.sub(0), dim, hidden, rng),
            Linear::new(&path.sub(2), hidden, hidden, rng),
            Linear::new(&path.sub(4), hidden, dim, rng),
        ];
        let e = path.sub("embed");
        let embeddings =
            [0, 1].map(|i| Linear::with_bias(&e.sub(i), Self::FEATURES, hidden, false, rng));
        ContinuousNoiseMlp {
            layers,
            embeddings,
            range,
            data_std,
        }
    }

    /// The features e(σ) of each σ, as a tensor `(N, FEATURES)` on the host.
    pub fn features(&self, sigmas: &[f32]) -> Tensor {
        let mut values = Vec::with_capacity(sigmas.len() * Self::FEATURES);
        for &sigma in sigmas {
            let u = self.range.position(sigma);
            values.push(u);
            for k in 1..=FREQUENCIES {
                let angle = std::f32::consts::PI * k as f32 * u; //   πku
                values.extend([angle.sin(), angle.cos()]);
            }
        }
        Tensor::from_vec(values, &[sigmas.len(), Self::FEATURES])
    }

    /// s_θ(x, σₙ) for each row n of `x` (shape `(N, dim)`), one σ per row.
    pub fn forward(&self, x: &Tensor, sigmas: &[f32]) -> Tensor {
        assert_eq!(
            sigmas.len(),
            x.shape()[0],
            "ContinuousNoiseMlp: {} levels for a batch of shape {:?}",
            sigmas.len(),
            x.shape()
        );
        let device = x.device();
        let column = |f: &dyn Fn(f32) -> f32| {
            Tensor::from_vec(sigmas.iter().map(|&s| f(s)).collect(), &[sigmas.len(), 1]).to(&device)
        };
        let features = self.features(sigmas).to(&device);
        self.forward_with(
            x,
            &features,
            &column(&|s| self.input_scale(s)),
            &column(&|s| s),
        )
    }

    /// The score at one σ for the whole batch (what the samplers call): the same as
    /// [`Self::forward`] with every σₙ equal to `sigma`, with one row of features broadcast.
    pub fn forward_sigma(&self, x: &Tensor, sigma: f32) -> Tensor {
        let features = self.features(&[sigma]).to(&x.device());
        let scale = Tensor::scalar(self.input_scale(sigma));
        self.forward_with(x, &features, &scale, &Tensor::scalar(sigma))
    }

    /// 1/√(σ² + σ_d²), computed in f64.
    fn input_scale(&self, sigma: f32) -> f32 {
        let (s, d) = (f64::from(sigma), f64::from(self.data_std));
        (1.0 / (s * s + d * d).sqrt()) as f32
    }

    fn forward_with(
        &self,
        x: &Tensor,
        features: &Tensor,
        scale: &Tensor,
        sigma: &Tensor,
    ) -> Tensor {
        let mut h = x.mul(scale); //                                  x/√(σ² + σ_d²)
        for (layer, embed) in self.layers[..2].iter().zip(&self.embeddings) {
            h = layer.forward(&h).add(&embed.forward(features)).softplus(); // softplus(W h + b + E e(σ))
        }
        self.layers[2].forward(&h).div(sigma) //                      f_θ(x, σ)/σ
    }
}
// ANCHOR_END: continuous_mlp

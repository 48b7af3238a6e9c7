//! The affine layer y = x·Wᵀ + b.

use super::{Module, Path, init};
use crate::tensor::Tensor;
use rand::Rng;

/// `nn.Linear`: weight of shape (out, in), bias of shape (out), PyTorch's default initialisation.
#[derive(Clone)]
pub struct Linear {
    /// (out_features, in_features)
    pub weight: Tensor,
    /// (out_features), if the layer has a bias.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// A layer with a bias, registered as `path.weight` and `path.bias`.
    pub fn new(path: &Path, in_features: usize, out_features: usize, rng: &mut impl Rng) -> Linear {
        Self::with_bias(path, in_features, out_features, true, rng)
    }

    /// A layer with or without a bias.
    pub fn with_bias(
        path: &Path,
        in_features: usize,
        out_features: usize,
        bias: bool,
        rng: &mut impl Rng,
    ) -> Linear {
        let w = init::kaiming_uniform(&[out_features, in_features], in_features, 5f32.sqrt(), rng);
        let weight = path.param("weight", w);
        let bias = bias.then(|| {
            path.param(
                "bias",
                init::default_bias(&[out_features], in_features, rng),
            )
        });
        Linear { weight, bias }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.weight, self.bias.as_ref())
    }
}

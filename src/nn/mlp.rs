//! A multilayer perceptron, named like the `nn.Sequential` it mirrors.

use super::{Linear, Module, Path};
use crate::tensor::Tensor;
use rand::Rng;

/// The nonlinearity between the layers of an [`Mlp`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Activation {
    /// ln(1 + eˣ): smooth, so ∇ₓ s_θ is smooth too (the reference toy models use it).
    Softplus,
    /// ELU with α = 1.
    Elu,
    /// max(x, 0). Its second derivative is zero almost everywhere, a poor choice for exact or
    /// sliced score matching, which differentiate ∇ₓ s_θ.
    Relu,
    /// tanh x.
    Tanh,
    /// The logistic sigmoid.
    Sigmoid,
}

impl Activation {
    /// Applies the nonlinearity.
    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Softplus => x.softplus(),
            Activation::Elu => x.elu(1.0),
            Activation::Relu => x.relu(),
            Activation::Tanh => x.tanh(),
            Activation::Sigmoid => x.sigmoid(),
        }
    }
}

/// Linear layers with an activation between consecutive ones (none after the last).
///
/// The layers are registered as `path.0`, `path.2`, `path.4`, …: the indices PyTorch gives the
/// linear layers of `nn.Sequential(Linear, Act, Linear, Act, Linear)`, so the reference toy
/// model's `state_dict()` names carry over.
#[derive(Clone)]
pub struct Mlp {
    /// The linear layers, in order.
    pub layers: Vec<Linear>,
    /// The activation between layers.
    pub activation: Activation,
}

impl Mlp {
    /// An MLP with the given layer widths, e.g. `&[2, 128, 128, 2]`.
    pub fn new(path: &Path, widths: &[usize], activation: Activation, rng: &mut impl Rng) -> Mlp {
        assert!(
            widths.len() >= 2,
            "Mlp: need at least input and output widths, got {widths:?}"
        );
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| Linear::new(&path.sub(2 * i), w[0], w[1], rng))
            .collect();
        Mlp { layers, activation }
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i + 1 < self.layers.len() {
                h = self.activation.apply(&h);
            }
        }
        h
    }
}

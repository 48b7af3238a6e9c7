//! Initialisations matching PyTorch's defaults, drawn from an explicit RNG.

use crate::tensor::Tensor;
use rand::Rng;

/// PyTorch's `kaiming_uniform_(w, a)`: U(−b, b) with b = gain·√(3 / fan_in) and
/// gain = √(2 / (1 + a²)). `nn.Linear` and `nn.Conv2d` use a = √5, which gives b = 1/√fan_in.
pub fn kaiming_uniform(shape: &[usize], fan_in: usize, a: f32, rng: &mut impl Rng) -> Tensor {
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let bound = gain * (3.0 / fan_in as f32).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

/// The default bias of `nn.Linear` and `nn.Conv2d`: U(−1/√fan_in, 1/√fan_in).
pub fn default_bias(shape: &[usize], fan_in: usize, rng: &mut impl Rng) -> Tensor {
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::uniform(shape, -bound, bound, rng)
}

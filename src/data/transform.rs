//! The transforms that turn 8-bit pictures into training inputs, as in the reference
//! implementation (ermongroup/ncsn, `runners/anneal_runner.py`).
//!
//! * **Random horizontal flip** (CIFAR-10, `config.data.random_flip`): each picture is mirrored
//!   left–right with probability ½, doubling the data cheaply. The reference does it with
//!   torchvision's `RandomHorizontalFlip(p=0.5)` when loading.
//! * **Uniform dequantisation**: `x · 255/256 + U(0, 1/256)`. The pixels are multiples of 1/255; a
//!   density model fitted to such data can put all its mass on the 256 levels and its score is
//!   meaningless between them. Spreading each level `k` uniformly over `[k/256, (k+1)/256)` makes
//!   the data a continuous density on `[0, 1)` whose discretisation is the original picture.
//! * **Logit** (optional, `config.data.logit_transform`): `logit(λ + (1 − 2λ)x)` with `λ = 10⁻⁶`
//!   maps `[0, 1]` onto the whole real line, so a model whose samples leave the box is not
//!   penalised by a hard boundary; samples are mapped back with the sigmoid ([`inverse_logit`]).
//!   The squeeze by `λ` keeps `x = 0` and `x = 1` finite (about ±13.8).
//!
//! All randomness comes from the generator passed in; with a seeded `ChaCha8Rng` the same seed gives
//! the same bits. The functions visit elements in logical (row-major) order, whatever the memory
//! layout.

use ndarray::{ArrayRef, ArrayRef4, Axis, Dimension};
use rand::Rng;

/// Which transforms [`Batches`](super::Batches) applies to each mini-batch, in this order: flip
/// (on the 8-bit pixels), scale to `[0, 1]` (always), dequantise, logit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Transform {
    /// Mirror each picture left–right with probability ½ ([`random_hflip`]).
    pub random_flip: bool,
    /// Uniform dequantisation ([`dequantize`]).
    pub dequantize: bool,
    /// The logit transform ([`logit`]), applied last.
    pub logit: bool,
}

impl Transform {
    /// No transform: the pixels scaled to `[0, 1]` (`intensity / 255`), nothing else.
    pub const NONE: Transform = Transform {
        random_flip: false,
        dequantize: false,
        logit: false,
    };

    /// The reference's MNIST training setting: dequantisation only.
    pub fn mnist() -> Self {
        Transform {
            random_flip: false,
            dequantize: true,
            logit: false,
        }
    }

    /// The reference's CIFAR-10 training setting: random flips and dequantisation.
    pub fn cifar10() -> Self {
        Transform {
            random_flip: true,
            dequantize: true,
            logit: false,
        }
    }
}

impl Default for Transform {
    /// Dequantisation only, as the reference applies to every training batch.
    fn default() -> Self {
        Transform::mnist()
    }
}

/// Mirrors each picture of a `(N, C, H, W)` batch left–right, independently with probability ½
/// (one draw `u ~ U[0, 1)` per picture, flipped when `u < 0.5`, as torchvision).
pub fn random_hflip<T, R: Rng + ?Sized>(x: &mut ArrayRef4<T>, rng: &mut R) {
    for mut picture in x.outer_iter_mut() {
        if rng.random::<f32>() < 0.5 {
            for mut row in picture.lanes_mut(Axis(2)) {
                let w = row.len();
                for j in 0..w / 2 {
                    row.swap(j, w - 1 - j);
                }
            }
        }
    }
}

// ANCHOR: dequantize
/// Uniform dequantisation, in place: `x ← x/256·255 + u/256` with `u ~ U[0, 1)` drawn afresh for
/// every element. For `x = k/255` this spreads level `k` over `[k/256, (k+1)/256)`.
///
/// The arithmetic is in the reference's order (`X / 256. * 255. + torch.rand_like(X) / 256.`).
pub fn dequantize<D: Dimension, R: Rng + ?Sized>(x: &mut ArrayRef<f32, D>, rng: &mut R) {
    for v in x.iter_mut() {
        let u: f32 = rng.random();
        *v = *v / 256.0 * 255.0 + u / 256.0;
    }
}
// ANCHOR_END: dequantize

/// The squeeze of the logit transform, `λ`, as the reference's default `lam=1e-6`.
pub const LOGIT_LAMBDA: f32 = 1e-6;

/// The logit transform, in place: `y = λ + (1 − 2λ)x`, then `x ← ln(y) − ln(1 − y)` (with
/// `ln_1p(−y)` for the second term, as the reference's `torch.log1p(-image)`).
pub fn logit<D: Dimension>(x: &mut ArrayRef<f32, D>) {
    let lam = LOGIT_LAMBDA;
    x.map_inplace(|v| {
        let y = lam + (1.0 - 2.0 * lam) * *v;
        *v = y.ln() - (-y).ln_1p();
    });
}

/// The inverse of the logit's squashing, the sigmoid `1 / (1 + e^(−x))`, in place; the reference
/// applies it to samples of a model trained with the logit transform. (It does not undo the `λ`
/// squeeze, which changes values by at most 2·10⁻⁶.)
pub fn inverse_logit<D: Dimension>(x: &mut ArrayRef<f32, D>) {
    x.map_inplace(|v| *v = 1.0 / (1.0 + (-*v).exp()));
}

//! `ncsn`: score-based generative modelling from scratch.
#![warn(missing_docs)]

pub mod autograd;
pub mod error;
pub mod nn;
pub mod optim;
pub mod plot;
pub mod sample;
pub mod score;
pub mod tensor;
pub mod toy;

pub use autograd::{Gradients, backward, grad, grad_with};
pub use error::{Error, Result};
pub use tensor::{Tensor, no_grad};

//! `ncsn`: score-based generative modelling from scratch.
#![warn(missing_docs)]

pub mod error;
pub use error::{Error, Result};
pub mod plot;
pub mod toy;

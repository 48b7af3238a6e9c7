//! `ncsn`: score-based generative modelling from scratch.
#![warn(missing_docs)]

pub mod backend;
pub mod error;
pub use error::{Error, Result};

//! `ncsn`: score-based generative modelling from scratch.
#![warn(missing_docs)]

pub mod data;
pub mod error;
pub mod io;
pub use error::{Error, Result};

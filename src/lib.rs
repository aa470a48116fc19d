//! semu: SVD-based machine unlearning for deployed ONNX models.
//!
//! Pipeline: [`onnx`] (import) → [`engine`] (libtorch forward/backward) → semu → fold →
//! export → verify.
pub mod engine;
pub mod error;
pub mod onnx;

pub use error::{Error, Result};
pub mod cli;

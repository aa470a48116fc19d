//! semu: SVD-based machine unlearning for deployed ONNX models.
//!
//! Pipeline: [`onnx`] (import) → [`engine`] (libtorch forward/backward) → [`task`] (what the
//! model is for) → semu → fold → export → verify.
pub mod audit;
pub mod baselines;
pub mod data;
pub mod diffusion;
pub mod engine;
pub mod error;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod limits;
pub mod onnx;
pub mod patch;
pub mod paths;
pub mod report;
pub mod semu;
pub mod task;
pub mod weights;

pub use error::{Error, Result};
pub mod conformance;
pub mod verify;

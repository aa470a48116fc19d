//! SEMU (SEMU.md): forget-set gradient → SVD → rank by γ → train R in `W + U R Vᵀ` → fold.
pub mod layers;

pub use layers::{find_layers, Layer, LayerKind};

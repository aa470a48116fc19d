//! SEMU (SEMU.md): forget-set gradient → SVD → rank by γ → train R in `W + U R Vᵀ` → fold.
pub mod adapter;
pub mod auto;
pub mod fast_svd;
pub mod gradient;
pub mod gradient_file;
pub mod layers;
pub mod optim;
pub mod quantized;
pub mod svd;
pub mod train;
pub mod unlearn;

pub use adapter::Adapter;
pub use auto::Lr;
pub use layers::{find_layers, Layer, LayerKind, WeightLayout};
pub use svd::Parity;
pub use unlearn::{unlearn, Observer, SemuConfig, Unlearned};

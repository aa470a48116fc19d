//! ONNX model I/O: protobuf types, tensors (inline and external), attributes, load and save.
//! Knows nothing of libtorch.
pub mod attr;
pub mod build;
pub mod check;
pub mod dtype;
pub mod model;
pub mod proto;
pub mod staging;
pub mod summary;
pub mod tensor;

pub use attr::NodeExt;
pub use dtype::DType;
pub use model::{OnnxModel, SavedModel, Staged};
pub use tensor::TensorData;

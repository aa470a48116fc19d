//! The differentiable engine: runs an ONNX graph on libtorch tensors (CPU or CUDA), forward and
//! backward. `plan` orders and folds the graph; `ops` holds one small builder per ONNX op.
pub mod convert;
pub mod device;
pub mod inputs;
pub mod low_rank;
pub mod memory;
pub mod ops;
pub mod plan;
pub mod precision;
pub mod registry;
pub mod value;

pub use device::{device_name, parse_device};
pub use inputs::{to_ints, Inputs, ValueInputs};
pub use low_rank::{LowRank, Overrides, Weights};
pub use plan::{inside_op, unsupported_ops, InputSpec, Plan, PlanOptions};
pub use registry::{op, vop, BoxOp, Op, OpCtx, Registry, Scope};
pub use value::{Strings, Value};

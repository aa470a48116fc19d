//! Reductions (ReduceSum, ReduceMean, …, axes as attribute or input) and CumSum.
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}

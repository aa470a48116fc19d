//! Pooling: MaxPool, AveragePool, global pools, LpPool.
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}

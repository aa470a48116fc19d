//! Comparisons, boolean and bitwise logic, Where, IsNaN/IsInf.
use crate::engine::Registry;

pub fn register(_r: &mut Registry) {}

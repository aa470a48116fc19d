//! Small helpers shared by op families.
use crate::engine::Inputs;
use crate::error::Result;

/// [`norm_axis`] for an op that indexes its input's shape with the axis: a scalar has none.
pub fn norm_axis_of_shape(x: &Inputs, axis: i64, rank: usize) -> Result<i64> {
    if rank == 0 {
        return Err(x.err(format!("axis {axis}: the input is a scalar, which has no axis")));
    }
    norm_axis(x, axis, rank)
}

/// Normalises a possibly negative axis against `rank` (axis 0 of a scalar is accepted, as the
/// element-wise ops over an axis take it); errors name the node.
pub fn norm_axis(x: &Inputs, axis: i64, rank: usize) -> Result<i64> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(x.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a)
}

//! Small helpers shared by op families.
use crate::engine::Inputs;
use crate::error::Result;

/// Normalises a possibly negative axis against `rank`; errors name the node.
pub fn norm_axis(x: &Inputs, axis: i64, rank: usize) -> Result<i64> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(x.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a)
}

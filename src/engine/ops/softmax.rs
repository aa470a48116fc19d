//! Softmax, LogSoftmax and Hardmax. Before opset 13 the input is coerced to 2-D at `axis`
//! (default 1) and the op works on the flattened rows; from 13 on it works along `axis`
//! (default -1).
use super::util::norm_axis;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

type AlongAxis = fn(&Tensor, i64) -> Result<Tensor>;

fn along(ctx: &OpCtx, f: AlongAxis) -> Result<BoxOp> {
    let legacy = ctx.opset < 13;
    let axis = ctx.node.get_i("axis")?.unwrap_or(if legacy { 1 } else { -1 });
    op(move |x| {
        let t = x.req(0)?;
        let shape = t.size();
        // Coercion to 2-D may split at axis == rank (all dims in the rows).
        let a = if legacy && axis == shape.len() as i64 { axis } else { norm_axis(x, axis, shape.len())? };
        if !legacy {
            return Ok(vec![f(t, a)?]);
        }
        let rows: i64 = shape[..a as usize].iter().product();
        let cols: i64 = shape[a as usize..].iter().product();
        Ok(vec![f(&t.f_reshape([rows, cols])?, 1)?.f_reshape(shape)?])
    })
}

fn softmax(t: &Tensor, a: i64) -> Result<Tensor> {
    Ok(t.f_softmax(a, None::<Kind>)?)
}

fn log_softmax(t: &Tensor, a: i64) -> Result<Tensor> {
    Ok(t.f_log_softmax(a, None::<Kind>)?)
}

/// 1 at the first maximum along the axis, 0 elsewhere.
fn hardmax(t: &Tensor, a: i64) -> Result<Tensor> {
    let idx = t.f_argmax(a, true)?;
    Ok(t.f_zeros_like()?.f_scatter_value(a, &idx, 1.0)?)
}

pub fn register(r: &mut Registry) {
    r.add("Softmax", 1, |c| along(c, softmax));
    r.add("LogSoftmax", 1, |c| along(c, log_softmax));
    r.add("Hardmax", 1, |c| along(c, hardmax));
}

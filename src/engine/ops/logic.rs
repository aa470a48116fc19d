//! Comparisons, boolean and bitwise logic, Where, IsNaN/IsInf.
use super::elementwise::{binary, unary};
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// Where(condition, X, Y), all three broadcast together.
fn where_op(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let cond = x.req(0)?;
        let cond = if cond.kind() == Kind::Bool { cond.shallow_clone() } else { cond.f_to_kind(Kind::Bool)? };
        Ok(vec![x.req(1)?.f_where_self(&cond, x.req(2)?)?])
    })
}

fn is_inf(ctx: &OpCtx) -> Result<BoxOp> {
    let neg = ctx.node.get_i("detect_negative")?.unwrap_or(1) != 0;
    let pos = ctx.node.get_i("detect_positive")?.unwrap_or(1) != 0;
    op(move |x| {
        let x = x.req(0)?;
        Ok(vec![match (neg, pos) {
            (true, true) => x.f_isinf()?,
            (true, false) => x.f_isneginf()?,
            (false, true) => x.f_isposinf()?,
            (false, false) => x.f_zeros_like()?.f_to_kind(Kind::Bool)?,
        }])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Equal", 1, super::strings::equal);
    r.add("Less", 1, |c| binary(c, Tensor::f_lt_tensor));
    r.add("Greater", 1, |c| binary(c, Tensor::f_gt_tensor));
    r.add("LessOrEqual", 12, |c| binary(c, Tensor::f_le_tensor));
    r.add("GreaterOrEqual", 12, |c| binary(c, Tensor::f_ge_tensor));

    r.add("And", 1, |c| binary(c, Tensor::f_logical_and));
    r.add("Or", 1, |c| binary(c, Tensor::f_logical_or));
    r.add("Xor", 1, |c| binary(c, Tensor::f_logical_xor));
    r.add("Not", 1, |_| unary(Tensor::f_logical_not));

    r.add("BitwiseAnd", 18, |c| binary(c, Tensor::f_bitwise_and_tensor));
    r.add("BitwiseOr", 18, |c| binary(c, Tensor::f_bitwise_or_tensor));
    r.add("BitwiseXor", 18, |c| binary(c, Tensor::f_bitwise_xor_tensor));
    r.add("BitwiseNot", 18, |_| unary(Tensor::f_bitwise_not));

    r.add("Where", 9, where_op);
    r.add("IsNaN", 9, |_| unary(Tensor::f_isnan));
    r.add("IsInf", 10, is_inf);
}

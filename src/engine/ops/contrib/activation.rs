//! Contrib activations: Gelu (exact), BiasGelu, FastGelu (tanh approximation, optional bias),
//! QuickGelu (x·σ(αx)), BiasAdd (x + bias + skip) and BiasSplitGelu (diffusion models).
use super::{add, attr_f};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use tch::Tensor;

/// `x + bias` where the 1-D bias runs along x's last axis.
fn with_bias(x: &Inputs, t: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let Some(b) = bias else { return Ok(t.shallow_clone()) };
    let last = t.size().last().copied().unwrap_or(1);
    if b.dim() != 1 || b.size()[0] != last {
        return Err(x.err(format!("bias {:?} must be 1-D with the input's last dimension {last}", b.size())));
    }
    Ok(t.f_add(b)?)
}

fn gelu(_: &OpCtx) -> Result<BoxOp> {
    op(|x| Ok(vec![x.req(0)?.f_gelu("none")?]))
}

fn bias_gelu(_: &OpCtx) -> Result<BoxOp> {
    op(|x| Ok(vec![with_bias(x, x.req(0)?, Some(x.req(1)?))?.f_gelu("none")?]))
}

/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): torch's tanh GELU.
fn fast_gelu(_: &OpCtx) -> Result<BoxOp> {
    op(|x| Ok(vec![with_bias(x, x.req(0)?, x.get(1))?.f_gelu("tanh")?]))
}

fn quick_gelu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 1.702)?;
    op(move |x| {
        let t = x.req(0)?;
        Ok(vec![t.f_mul(&t.f_mul_scalar(alpha)?.f_sigmoid()?)?])
    })
}

fn bias_add(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let (t, skip) = (x.req(0)?, x.req(2)?);
        if t.dim() != 3 || skip.size() != t.size() {
            return Err(x.err(format!("X {:?} must be 3-D and skip {:?} the same shape", t.size(), skip.size())));
        }
        Ok(vec![with_bias(x, t, Some(x.req(1)?))?.f_add(skip)?])
    })
}

/// (x + bias) split in halves along the last axis: left · gelu(right).
fn bias_split_gelu(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = with_bias(x, x.req(0)?, Some(x.req(1)?))?;
        let d = t.size().last().copied().unwrap_or(0);
        if t.dim() != 3 || d % 2 != 0 {
            return Err(x.err(format!("X {:?} must be 3-D with an even last dimension", t.size())));
        }
        let (left, right) = (t.f_narrow(-1, 0, d / 2)?, t.f_narrow(-1, d / 2, d / 2)?);
        Ok(vec![left.f_mul(&right.f_gelu("none")?)?])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "Gelu", gelu);
    add(r, "BiasGelu", bias_gelu);
    add(r, "FastGelu", fast_gelu);
    add(r, "QuickGelu", quick_gelu);
    add(r, "BiasAdd", bias_add);
    add(r, "BiasSplitGelu", bias_split_gelu);
}

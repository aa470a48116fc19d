//! RotaryEmbedding of the contrib domain: position ids come second (a start offset [1] or
//! per-token [B, S]), the input is [B, S, N·H] or [B, N, S, H], and the first
//! `rotary_embedding_dim` features of each head (all by default) are rotated, halves paired
//! (i, i + R/2) or, interleaved, (2i, 2i + 1).
use super::{add, flag};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// A non-negative int attribute, 0 when absent.
fn count(ctx: &OpCtx, name: &str) -> Result<i64> {
    match ctx.node.get_i(name)?.unwrap_or(0) {
        v if v >= 0 => Ok(v),
        v => Err(ctx.node.attr_err(name, format!("must not be negative, got {v}"))),
    }
}

/// Positions [B, S]: per token as given, or a start offset counted up.
fn positions(x: &Inputs, ids: &Tensor, b: i64, s: i64) -> Result<Tensor> {
    let ids = ids.f_to_kind(Kind::Int64)?;
    if ids.numel() == 1 {
        let start = Tensor::f_arange(s, (Kind::Int64, ids.device()))?.f_add(&ids.f_reshape([] as [i64; 0])?)?;
        return Ok(start.f_expand([b, s], false)?);
    }
    if ids.size() != [b, s] {
        return Err(x.err(format!("position_ids {:?} must be [1] or [{b}, {s}]", ids.size())));
    }
    Ok(ids)
}

/// Rows of a [max, R/2] cache for positions [B, S] → [B, S, 1, R/2].
fn rows(x: &Inputs, cache: &Tensor, pos: &Tensor, half: i64) -> Result<Tensor> {
    if cache.dim() != 2 || cache.size()[1] != half {
        return Err(x.err(format!("cos/sin cache {:?} must be [max_positions, {half}]", cache.size())));
    }
    let max = pos.f_max()?.f_int64_value(&[])?;
    if pos.f_min()?.f_int64_value(&[])? < 0 || max >= cache.size()[0] {
        return Err(x.err(format!("position {max} is outside the {} cached positions", cache.size()[0])));
    }
    let s = pos.size();
    Ok(cache.f_index_select(0, &pos.f_reshape([-1])?)?.f_reshape([s[0], s[1], 1, half])?)
}

fn rotary(ctx: &OpCtx) -> Result<BoxOp> {
    let interleaved = flag(ctx, "interleaved", false)?;
    let (heads, rot_dim) = (count(ctx, "num_heads")?, count(ctx, "rotary_embedding_dim")?);
    if flag(ctx, "is_packed_batching", false)? {
        return Err(ctx.node.attr_err("is_packed_batching", "packed (ragged) batches are not supported"));
    }
    if rot_dim > 0 && heads == 0 {
        return Err(ctx.node.attr_err("rotary_embedding_dim", "needs num_heads as well"));
    }
    op(move |x| {
        let (t, cos) = (x.req(0)?, x.req(2)?);
        let shape = t.size();
        // Work on [B, S, N, H].
        let t4 = match shape.len() {
            4 => t.f_transpose(1, 2)?,
            3 => {
                let hsz = if heads > 0 { shape[2] / heads } else { 2 * cos.size().get(1).copied().unwrap_or(0) };
                if hsz == 0 || shape[2] % hsz != 0 {
                    return Err(x.err(format!("hidden size {} does not split into heads of {hsz}", shape[2])));
                }
                t.f_reshape([shape[0], shape[1], shape[2] / hsz, hsz])?
            }
            r => return Err(x.err(format!("input must be 3-D or 4-D, got rank {r}"))),
        };
        let (b, s, d) = (t4.size()[0], t4.size()[1], t4.size()[3]);
        let r = if rot_dim == 0 { d } else { rot_dim };
        if r > d || r % 2 != 0 {
            return Err(x.err(format!("rotary dimension {r} must be even and at most the head size {d}")));
        }
        let half = r / 2;
        let pos = positions(x, x.req(1)?, b, s)?;
        let (cos, sin) = (rows(x, cos, &pos, half)?, rows(x, x.req(3)?, &pos, half)?);
        Ok(vec![crate::engine::ops::attention::rotate(&t4, &cos, &sin, r, interleaved, &shape)?])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "RotaryEmbedding", rotary);
}

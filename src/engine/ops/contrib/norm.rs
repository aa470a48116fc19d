//! Contrib normalizations: EmbedLayerNormalization (BERT's fused embeddings), SkipLayerNormalization
//! and SkipSimplifiedLayerNormalization (residual add + LayerNorm / RMSNorm),
//! SimplifiedLayerNormalization (RMSNorm; default domain, as onnxruntime registers it) and
//! GroupNorm (NHWC by default, optional SiLU).
use super::{add, attr_f, flag, positive, to_kind};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// LayerNorm over the last axis: (y, mean, 1/σ), statistics keepdim.
fn layer_norm(t: &Tensor, gamma: &Tensor, beta: Option<&Tensor>, eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = t.f_mean_dim(-1, true, None::<Kind>)?;
    let d = t.f_sub(&mean)?;
    let inv = d.f_square()?.f_mean_dim(-1, true, None::<Kind>)?.f_add_scalar(eps)?.f_rsqrt()?;
    let mut y = d.f_mul(&inv)?.f_mul(gamma)?;
    if let Some(b) = beta {
        y = y.f_add(b)?;
    }
    Ok((y, mean, inv))
}

/// RMSNorm over the axes from `axis` on: (y, 1/rms), statistics keepdim.
fn rms_norm(t: &Tensor, gamma: &Tensor, axis: i64, eps: f64) -> Result<(Tensor, Tensor)> {
    let dims: Vec<i64> = (axis..t.dim() as i64).collect();
    let inv = t.f_square()?.f_mean_dim(dims.as_slice(), true, None::<Kind>)?.f_add_scalar(eps)?.f_rsqrt()?;
    Ok((t.f_mul(&inv)?.f_mul(gamma)?, inv))
}

/// Checks that a per-feature parameter is 1-D of the hidden size.
fn hidden_param<'a>(x: &Inputs<'a>, i: usize, hidden: i64, what: &str) -> Result<Option<&'a Tensor>> {
    match x.get(i) {
        Some(p) if p.size() != [hidden] => {
            Err(x.err(format!("{what} {:?} must be 1-D of the hidden size {hidden}", p.size())))
        }
        p => Ok(p),
    }
}

/// Rows of `table` picked by integer `ids` (any shape), with a range check naming the input.
fn lookup(x: &Inputs, table: &Tensor, ids: &Tensor, what: &str) -> Result<Tensor> {
    let rows = table.size()[0];
    let ids = ids.f_to_kind(Kind::Int64)?;
    if ids.numel() > 0 {
        let (lo, hi) = (ids.f_min()?.f_int64_value(&[])?, ids.f_max()?.f_int64_value(&[])?);
        if lo < 0 || hi >= rows {
            return Err(x.err(format!("{what} must lie in [0, {rows}), found values in [{lo}, {hi}]")));
        }
    }
    let mut shape = ids.size();
    shape.push(table.size()[1]);
    Ok(table.f_index_select(0, &ids.f_reshape([-1])?)?.f_reshape(&shape)?)
}

/// word[ids] + position[pos] (+ segment[seg]), LayerNorm; mask_index = the mask's count of
/// ones per row (int32); the third output is the sum before the norm.
fn embed_layer_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let eps = attr_f(ctx, "epsilon", 1e-12)?;
    op(move |x| {
        let ids = x.req(0)?;
        let (word, pos) = (x.req(2)?, x.req(3)?);
        if ids.dim() != 2 || word.dim() != 2 || pos.dim() != 2 {
            return Err(x.err("input_ids must be 2-D and the embedding tables 2-D"));
        }
        let (b, s, hidden) = (ids.size()[0], ids.size()[1], word.size()[1]);
        if pos.size()[1] != hidden {
            return Err(x.err(format!("position_embedding {:?} must have hidden size {hidden}", pos.size())));
        }
        let mut sum = lookup(x, word, ids, "input_ids")?;
        let pos_ids = match x.get(8) {
            Some(p) => p.f_expand([b, s], false)?,
            None => Tensor::f_arange(s, (Kind::Int64, ids.device()))?.f_expand([b, s], false)?,
        };
        sum = sum.f_add(&lookup(x, pos, &pos_ids, "position ids")?)?;
        match (x.get(1), x.get(4)) {
            (Some(seg), Some(table)) => {
                if table.dim() != 2 || table.size()[1] != hidden {
                    return Err(x.err(format!("segment_embedding {:?} must be [_, {hidden}]", table.size())));
                }
                sum = sum.f_add(&lookup(x, table, seg, "segment_ids")?)?
            }
            (None, None) => {}
            _ => return Err(x.err("segment_ids and segment_embedding go together")),
        }
        let gamma = hidden_param(x, 5, hidden, "gamma")?.ok_or_else(|| x.err("input 5 (gamma) is required"))?;
        let (y, _, _) = layer_norm(&sum, gamma, hidden_param(x, 6, hidden, "beta")?, eps)?;
        let mask_index = match x.get(7) {
            Some(m) => m.f_ne(0)?.f_sum_dim_intlist(&[1i64][..], false, Kind::Int)?,
            None => Tensor::f_zeros([b], (Kind::Int, ids.device()))?,
        };
        Ok(vec![y, mask_index, sum])
    })
}

/// input + skip (+ bias): the residual sum the skip norms start from.
fn skip_sum(x: &Inputs, bias_at: usize) -> Result<Tensor> {
    let (t, skip) = (x.req(0)?, x.req(1)?);
    let hidden = t.size().last().copied().unwrap_or(0);
    if !(2..=3).contains(&t.dim()) || skip.size().last() != Some(&hidden) {
        return Err(x.err(format!("input {:?} must be 2-D or 3-D and skip {:?} end in it", t.size(), skip.size())));
    }
    let mut sum = t.f_add(skip)?;
    if let Some(b) = hidden_param(x, bias_at, hidden, "bias")? {
        sum = sum.f_add(b)?;
    }
    Ok(sum)
}

fn skip_layer_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let eps = attr_f(ctx, "epsilon", 1e-12)?;
    op(move |x| {
        let sum = skip_sum(x, 4)?;
        let hidden = sum.size().last().copied().unwrap_or(0);
        let gamma = hidden_param(x, 2, hidden, "gamma")?.ok_or_else(|| x.err("input 2 (gamma) is required"))?;
        let (y, mean, inv) = layer_norm(&sum, gamma, hidden_param(x, 3, hidden, "beta")?, eps)?;
        Ok(vec![y, mean, inv, sum])
    })
}

fn skip_simplified_layer_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let eps = attr_f(ctx, "epsilon", 1e-12)?;
    op(move |x| {
        let sum = skip_sum(x, 3)?;
        let hidden = sum.size().last().copied().unwrap_or(0);
        let gamma = hidden_param(x, 2, hidden, "gamma")?.ok_or_else(|| x.err("input 2 (gamma) is required"))?;
        let (y, inv) = rms_norm(&sum, gamma, sum.dim() as i64 - 1, eps)?;
        let mean = inv.f_zeros_like()?;
        Ok(vec![y, mean, inv, sum])
    })
}

/// RMSNorm from `axis` on, computed in float32 at least (stash_type 1).
fn simplified_layer_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(-1);
    let eps = attr_f(ctx, "epsilon", 1e-5)?;
    if let Some(s) = ctx.node.get_i("stash_type")?.filter(|&s| s != 1) {
        return Err(ctx.node.attr_err("stash_type", format!("only 1 (float) is supported, got {s}")));
    }
    op(move |x| {
        let t = x.req(0)?;
        let a = super::super::util::norm_axis_of_shape(x, axis, t.dim())?;
        let kind = if t.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let (y, inv) = rms_norm(&to_kind(t, kind)?, &to_kind(x.req(1)?, kind)?, a, eps)?;
        Ok(vec![to_kind(&y, x.req(1)?.kind())?, inv])
    })
}

/// GroupNorm over NHWC (channels_last=1, the default) or NCHW input, then SiLU if asked.
fn group_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let groups = positive(ctx, "groups")?;
    let eps = attr_f(ctx, "epsilon", 1e-5)?;
    let last = flag(ctx, "channels_last", true)?;
    let silu = match ctx.node.req_i("activation")? {
        0 => false,
        1 => true,
        v => return Err(ctx.node.attr_err("activation", format!("must be 0 (none) or 1 (SiLU), got {v}"))),
    };
    op(move |x| {
        let t = x.req(0)?;
        if t.dim() < 3 {
            return Err(x.err(format!("X {:?} must have a batch, channel and spatial dims", t.size())));
        }
        Ok(vec![group_norm_of(x, t, groups, eps, silu, last)?])
    })
}

/// GroupNorm of `t` (channels last, or at axis 1) with gamma (input 1) and beta (input 2), SiLU
/// after if asked; also SkipGroupNorm's, on its sum.
pub(super) fn group_norm_of(x: &Inputs, t: &Tensor, groups: i64, eps: f64, silu: bool, last: bool) -> Result<Tensor> {
    let nchw = if last { t.f_movedim(-1, 1)? } else { t.shallow_clone() };
    let c = nchw.size()[1];
    if c % groups != 0 {
        return Err(x.err(format!("{groups} groups do not divide {c} channels")));
    }
    let (gamma, beta) = (x.req(1)?, x.req(2)?);
    if gamma.size() != [c] || beta.size() != [c] {
        return Err(x.err(format!("gamma and beta must be [{c}], got {:?} and {:?}", gamma.size(), beta.size())));
    }
    let kind = t.kind();
    let mut y = nchw.f_group_norm(groups, Some(&to_kind(gamma, kind)?), Some(&to_kind(beta, kind)?), eps, false)?;
    if silu {
        y = y.f_silu()?;
    }
    Ok(if last { y.f_movedim(1, -1)? } else { y })
}

pub fn register(r: &mut Registry) {
    add(r, "EmbedLayerNormalization", embed_layer_norm);
    add(r, "SkipLayerNormalization", skip_layer_norm);
    add(r, "SkipSimplifiedLayerNormalization", skip_simplified_layer_norm);
    add(r, "GroupNorm", group_norm);
    r.add_range("", "SimplifiedLayerNormalization", 1, i64::MAX, simplified_layer_norm);
}

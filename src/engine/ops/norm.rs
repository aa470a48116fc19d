//! Normalizations: BatchNormalization (inference; training_mode too), InstanceNormalization,
//! LayerNormalization, GroupNormalization, RMSNormalization, LpNormalization, LRN and
//! MeanVarianceNormalization. All composed of differentiable torch ops, so gradients reach the
//! input and every parameter (running mean/var included).
use super::conv::channel_view;
use super::util::norm_axis;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

fn epsilon(node: &NodeProto, default: f64) -> Result<f64> {
    Ok(node.get_f("epsilon")?.map_or(default, f64::from))
}

/// `(x - mean) / sqrt(var + eps)` over `dims` (biased variance), with the (keepdim) mean and
/// variance.
fn standardize(x: &Tensor, dims: &[i64], eps: f64) -> Result<(Tensor, Tensor, Tensor)> {
    let mean = x.f_mean_dim(dims, true, None::<Kind>)?;
    let d = x.f_sub(&mean)?;
    let var = d.f_square()?.f_mean_dim(dims, true, None::<Kind>)?;
    Ok((d.f_mul(&var.f_add_scalar(eps)?.f_rsqrt()?)?, mean, var))
}

/// The stash_type attribute as a kind (the precision statistics are computed in).
fn stash_kind(node: &NodeProto) -> Result<Kind> {
    Ok(match node.get_i("stash_type")?.unwrap_or(1) {
        1 => Kind::Float,
        10 => Kind::Half,
        11 => Kind::Double,
        16 => Kind::BFloat16,
        t => return Err(node.attr_err("stash_type", format!("unsupported element type {t}"))),
    })
}

/// The wider of the input's kind and the stash kind (never narrows double input).
fn compute_kind(x: Kind, stash: Kind) -> Kind {
    let width = |k| match k {
        Kind::Double => 3,
        Kind::Float => 2,
        _ => 1,
    };
    if width(x) >= width(stash) {
        x
    } else {
        stash
    }
}

fn to_kind(t: &Tensor, k: Kind) -> Result<Tensor> {
    Ok(if t.kind() == k { t.shallow_clone() } else { t.f_to_kind(k)? })
}

/// A per-channel parameter shaped to broadcast against X: (C) → (C, 1, …); before opset 9 a
/// `spatial=0` parameter already has X's trailing shape and only gains the batch dim.
fn param(t: &Tensor, rank: usize) -> Result<Tensor> {
    if t.dim() <= 1 {
        channel_view(t, rank)
    } else {
        Ok(t.f_unsqueeze(0)?)
    }
}

fn batch_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let eps = epsilon(n, 1e-5)?;
    let momentum = n.get_f("momentum")?.map_or(0.9, f64::from);
    // Before opset 7 `is_test` defaults to 0, yet deployed models mean inference (as ONNX Runtime
    // reads them); `spatial=0` (opsets 7–8) shows in the parameters' shapes, which `param` handles.
    let training = ctx.opset >= 14 && n.get_i("training_mode")?.unwrap_or(0) != 0;
    let extra_outputs = n.output.iter().skip(1).any(|o| !o.is_empty());
    if ctx.opset < 14 && extra_outputs {
        return Err(n.node_err("the training outputs (mean, var, saved_mean, saved_var) of BatchNormalization before opset 14 are not supported; only inference"));
    }
    op(move |x| {
        let t = x.req(0)?;
        let rank = t.dim();
        let (scale, bias) = (param(x.req(1)?, rank)?, param(x.req(2)?, rank)?);
        let (mean, var) = (x.req(3)?, x.req(4)?);
        if !training {
            let inv = param(&var.f_add_scalar(eps)?.f_rsqrt()?, rank)?;
            let y = t.f_sub(&param(mean, rank)?)?.f_mul(&inv.f_mul(&scale)?)?.f_add(&bias)?;
            return Ok(vec![y]);
        }
        // training_mode: normalise with the batch statistics, update the running ones.
        let dims: Vec<i64> = (0..rank as i64).filter(|&d| d != 1).collect();
        let (normed, bmean, bvar) = standardize(t, &dims, eps)?;
        let y = normed.f_mul(&scale)?.f_add(&bias)?;
        let run = |old: &Tensor, cur: &Tensor| -> Result<Tensor> {
            Ok(old.f_mul_scalar(momentum)?.f_add(&cur.f_mul_scalar(1.0 - momentum)?)?)
        };
        Ok(vec![y, run(mean, &bmean.f_reshape([-1])?)?, run(var, &bvar.f_reshape([-1])?)?])
    })
}

fn instance_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let eps = epsilon(ctx.node, 1e-5)?;
    op(move |x| {
        let t = x.req(0)?;
        let rank = t.dim();
        if rank < 3 {
            return Err(x.err(format!("expected an (N, C, D…) input, got shape {:?}", t.size())));
        }
        let dims: Vec<i64> = (2..rank as i64).collect();
        let (normed, _, _) = standardize(t, &dims, eps)?;
        Ok(vec![normed.f_mul(&channel_view(x.req(1)?, rank)?)?.f_add(&channel_view(x.req(2)?, rank)?)?])
    })
}

fn layer_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(-1);
    let eps = epsilon(ctx.node, 1e-5)?;
    let stash = stash_kind(ctx.node)?;
    op(move |x| {
        let (t, scale, bias) = (x.req(0)?, x.req(1)?, x.get(2));
        let a = norm_axis(x, axis, t.dim())? as usize;
        let size = t.size();
        let shape = &size[a..];
        let kind = compute_kind(t.kind(), stash);
        let exact = |p: &Tensor| p.size() == shape && p.kind() == kind;
        if t.kind() == kind && exact(scale) && bias.is_none_or(exact) {
            // The common case: libtorch's fused kernel (its mean/rstd have ONNX's shapes).
            let (y, mean, inv) = t.f_native_layer_norm(shape, Some(scale), bias, eps)?;
            return Ok(vec![y, mean, inv]);
        }
        // Broadcast parameters or a wider stash type: the same maths, step by step.
        let dims: Vec<i64> = (a as i64..t.dim() as i64).collect();
        let (normed, mean, var) = standardize(&to_kind(t, kind)?, &dims, eps)?;
        let mut y = normed.f_mul(&to_kind(scale, kind)?)?;
        if let Some(b) = bias {
            y = y.f_add(&to_kind(b, kind)?)?;
        }
        Ok(vec![to_kind(&y, t.kind())?, mean, var.f_add_scalar(eps)?.f_rsqrt()?])
    })
}

fn group_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let groups = ctx.node.req_i("num_groups")?;
    if groups < 1 {
        return Err(ctx.node.attr_err("num_groups", format!("must be >= 1, got {groups}")));
    }
    let eps = epsilon(ctx.node, 1e-5)?;
    let stash = if ctx.opset >= 21 { stash_kind(ctx.node)? } else { Kind::Float };
    // Opset 18 gives scale and bias per group, opset 21 per channel.
    let per_group = ctx.opset < 21;
    op(move |x| {
        let t = x.req(0)?;
        let size = t.size();
        if size.len() < 2 || size[1] % groups != 0 {
            return Err(x.err(format!("{groups} groups do not divide the channels of shape {size:?}")));
        }
        let kind = compute_kind(t.kind(), stash);
        let per_channel = |p: &Tensor| -> Result<Tensor> {
            let p = to_kind(p, kind)?;
            Ok(if per_group { p.f_repeat_interleave_self_int(size[1] / groups, 0, None)? } else { p })
        };
        let (scale, bias) = (per_channel(x.req(1)?)?, per_channel(x.req(2)?)?);
        let y = to_kind(t, kind)?.f_group_norm(groups, Some(&scale), Some(&bias), eps, false)?;
        Ok(vec![to_kind(&y, t.kind())?])
    })
}

fn rms_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(-1);
    let eps = epsilon(ctx.node, 1e-5)?;
    let stash = stash_kind(ctx.node)?;
    op(move |x| {
        let (t, scale) = (x.req(0)?, x.req(1)?);
        let a = norm_axis(x, axis, t.dim())?;
        let kind = compute_kind(t.kind(), stash);
        let xt = to_kind(t, kind)?;
        let dims: Vec<i64> = (a..t.dim() as i64).collect();
        let inv = xt.f_square()?.f_mean_dim(dims, true, None::<Kind>)?.f_add_scalar(eps)?.f_rsqrt()?;
        let y = xt.f_mul(&inv)?.f_mul(&to_kind(scale, kind)?)?;
        Ok(vec![to_kind(&y, t.kind())?])
    })
}

fn lp_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(-1);
    let p = ctx.node.get_i("p")?.unwrap_or(2);
    if p != 1 && p != 2 {
        return Err(ctx.node.attr_err("p", format!("must be 1 or 2, got {p}")));
    }
    op(move |x| {
        let t = x.req(0)?;
        let a = norm_axis(x, axis, t.dim())?;
        let norm = if p == 1 {
            t.f_abs()?.f_sum_dim_intlist(&[a][..], true, None::<Kind>)?
        } else {
            t.f_square()?.f_sum_dim_intlist(&[a][..], true, None::<Kind>)?.f_sqrt()?
        };
        // A zero norm gives 0, not NaN.
        let safe = norm.f_where_scalarother(&norm.f_ne(0)?, 1.0)?;
        Ok(vec![t.f_div(&safe)?])
    })
}

/// Across-channel LRN: x / (bias + alpha/size · Σ x²)^beta over a window of `size` channels.
fn lrn(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let size = n.req_i("size")?;
    if size < 1 {
        return Err(n.attr_err("size", format!("must be >= 1, got {size}")));
    }
    let alpha = n.get_f("alpha")?.map_or(1e-4, f64::from);
    let beta = n.get_f("beta")?.map_or(0.75, f64::from);
    let bias = n.get_f("bias")?.map_or(1.0, f64::from);
    op(move |x| {
        let t = x.req(0)?;
        if t.dim() < 2 {
            return Err(x.err(format!("expected an (N, C, …) input, got shape {:?}", t.size())));
        }
        // Pad the channel dim (moved last) by floor/ceil((size-1)/2) and sum sliding windows.
        let sq = t.f_square()?.f_movedim(1, -1)?;
        let padded = sq.f_constant_pad_nd([(size - 1) / 2, size / 2])?;
        let sums =
            padded.f_unfold(-1, size, 1)?.f_sum_dim_intlist(&[-1i64][..], false, None::<Kind>)?.f_movedim(-1, 1)?;
        let denom = sums.f_mul_scalar(alpha / size as f64)?.f_add_scalar(bias)?.f_pow_tensor_scalar(beta)?;
        Ok(vec![t.f_div(&denom)?])
    })
}

/// (x - E[x]) / (sqrt(Var[x]) + 1e-9) over `axes` (ONNX's function body).
fn mvn(ctx: &OpCtx) -> Result<BoxOp> {
    let axes = ctx.node.get_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    op(move |x| {
        let t = x.req(0)?;
        let dims = axes.iter().map(|&a| norm_axis(x, a, t.dim())).collect::<Result<Vec<_>>>()?;
        let mean = t.f_mean_dim(dims.as_slice(), true, None::<Kind>)?;
        let d = t.f_sub(&mean)?;
        let std = d.f_square()?.f_mean_dim(dims.as_slice(), true, None::<Kind>)?.f_sqrt()?;
        Ok(vec![d.f_div(&std.f_add_scalar(1e-9)?)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("BatchNormalization", 1, batch_norm);
    r.add("InstanceNormalization", 1, instance_norm);
    r.add("LayerNormalization", 17, layer_norm);
    r.add("GroupNormalization", 18, group_norm);
    r.add("RMSNormalization", 23, rms_norm);
    r.add("LpNormalization", 1, lp_norm);
    r.add("LRN", 1, lrn);
    r.add("MeanVarianceNormalization", 9, mvn);
}

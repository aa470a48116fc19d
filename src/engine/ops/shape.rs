//! Shape arithmetic: Shape, Size, Reshape, Flatten, Squeeze, Unsqueeze, Expand, Transpose, Concat,
//! Split, Constant, ConstantOfShape, Range, EyeLike. Layout ops (Slice, Pad, Tile…) are in `layout`.
use super::util::norm_axis;
use crate::engine::convert::{kind_of, to_tensor};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::{DType, NodeExt, TensorData};
use std::path::Path;
use tch::{Device, Kind, Tensor};

pub fn register(r: &mut Registry) {
    r.add("Shape", 1, shape);
    r.add("Size", 1, |_| op(|x| Ok(vec![int_scalar(x.req(0)?.numel() as i64, x.req(0)?)?])));
    r.add("Reshape", 1, reshape);
    r.add("Flatten", 1, flatten);
    r.add("Squeeze", 1, squeeze);
    r.add("Unsqueeze", 1, unsqueeze);
    r.add("Expand", 8, expand);
    r.add("Transpose", 1, transpose);
    r.add("Concat", 1, concat);
    r.add("Split", 1, split);
    r.add("Constant", 1, super::strings::constant);
    r.add("ConstantOfShape", 9, constant_of_shape);
    r.add("Range", 11, range);
    r.add("EyeLike", 9, eye_like);
}

/// A 1-D int64 tensor on `like`'s device (results of shape arithmetic).
pub fn int_tensor(v: &[i64], like: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(v)?.f_to_device(like.device())?)
}

fn int_scalar(v: i64, like: &Tensor) -> Result<Tensor> {
    Ok(int_tensor(&[v], like)?.f_reshape([0i64; 0])?)
}

/// `norm_axis` that also rejects every axis of a rank-0 tensor (callers index dims with it).
pub fn dim_axis(x: &Inputs, axis: i64, rank: usize) -> Result<i64> {
    let a = norm_axis(x, axis, rank)?;
    if a as usize >= rank {
        return Err(x.err(format!("axis {axis} is out of range for rank {rank}")));
    }
    Ok(a)
}

/// Normalises a list of (possibly negative) axes against `rank`, rejecting repeats.
pub fn norm_axes(x: &Inputs, axes: &[i64], rank: usize) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = dim_axis(x, a, rank)?;
        if out.contains(&a) {
            return Err(x.err(format!("axis {a} is repeated in {axes:?}")));
        }
        out.push(a);
    }
    Ok(out)
}

/// A required int-list input.
pub fn req_ints(x: &Inputs, i: usize, what: &str) -> Result<Vec<i64>> {
    x.ints(i)?.ok_or_else(|| x.err(format!("input {i} ({what}) is required")))
}

fn shape(ctx: &OpCtx) -> Result<BoxOp> {
    // start/end exist from opset 15; they select dims[start..end], clamped like Python slices.
    let start = ctx.node.get_i("start")?.unwrap_or(0);
    let end = ctx.node.get_i("end")?;
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        let r = dims.len() as i64;
        let clamp = |v: i64| if v < 0 { (v + r).max(0) } else { v.min(r) };
        let (s, e) = (clamp(start), clamp(end.unwrap_or(r)));
        let sel = if s < e { &dims[s as usize..e as usize] } else { &[] };
        Ok(vec![int_tensor(sel, t)?])
    })
}

fn reshape(ctx: &OpCtx) -> Result<BoxOp> {
    // Before opset 5 the target shape is an attribute; allowzero arrives at opset 14.
    let attr_shape = if ctx.opset < 5 { Some(ctx.node.req_ints("shape")?) } else { None };
    let allowzero = ctx.node.get_i("allowzero")?.unwrap_or(0) != 0;
    op(move |x| {
        let t = x.req(0)?;
        let want = match &attr_shape {
            Some(s) => s.clone(),
            None => req_ints(x, 1, "shape")?,
        };
        Ok(vec![t.f_reshape(reshape_dims(x, &t.size(), &want, allowzero)?)?])
    })
}

/// Resolves ONNX's 0 (copy the input dim, unless allowzero) and -1 (infer) in a target shape.
fn reshape_dims(x: &Inputs, input: &[i64], want: &[i64], allowzero: bool) -> Result<Vec<i64>> {
    let bad = |why: &str| x.err(format!("cannot reshape {input:?} to {want:?}: {why}"));
    let mut out = Vec::with_capacity(want.len());
    let mut infer = None;
    for (i, &d) in want.iter().enumerate() {
        match d {
            0 if !allowzero => out.push(*input.get(i).ok_or_else(|| bad("0 copies a dim the input lacks"))?),
            -1 if infer.is_none() => {
                infer = Some(i);
                out.push(1);
            }
            d if d >= 0 => out.push(d),
            _ => return Err(bad("only one -1 and no other negative dim is allowed")),
        }
    }
    let total: i64 = input.iter().product();
    if let Some(i) = infer {
        let known: i64 = out.iter().product();
        if known == 0 || total % known != 0 {
            return Err(bad("the -1 dim cannot be inferred"));
        }
        out[i] = total / known;
    }
    if out.iter().product::<i64>() != total {
        return Err(bad("element counts differ"));
    }
    Ok(out)
}

fn flatten(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(1);
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        let r = dims.len() as i64;
        let a = if axis < 0 { axis + r } else { axis };
        if !(0..=r).contains(&a) {
            return Err(x.err(format!("axis {axis} is out of range for rank {r}")));
        }
        let outer: i64 = dims[..a as usize].iter().product();
        let inner: i64 = dims[a as usize..].iter().product();
        Ok(vec![t.f_reshape([outer, inner])?])
    })
}

fn squeeze(ctx: &OpCtx) -> Result<BoxOp> {
    // axes: attribute before opset 13, optional input from 13; absent = every size-1 dim.
    let from_input = ctx.opset >= 13;
    let attr = if from_input { None } else { ctx.node.get_ints("axes")? };
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        let axes = if from_input { x.ints(1)? } else { attr.clone() };
        let axes = match axes {
            Some(a) => norm_axes(x, &a, dims.len())?,
            None => (0..dims.len() as i64).filter(|&i| dims[i as usize] == 1).collect(),
        };
        if let Some(a) = axes.iter().find(|&&a| dims[a as usize] != 1) {
            return Err(x.err(format!("cannot squeeze axis {a} of size {} (shape {dims:?})", dims[*a as usize])));
        }
        let out: Vec<i64> =
            dims.iter().enumerate().filter(|(i, _)| !axes.contains(&(*i as i64))).map(|(_, &d)| d).collect();
        Ok(vec![t.f_reshape(out)?])
    })
}

fn unsqueeze(ctx: &OpCtx) -> Result<BoxOp> {
    // axes: required attribute before opset 13, input from 13; they index the output's dims.
    let attr = if ctx.opset < 13 { Some(ctx.node.req_ints("axes")?) } else { None };
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        let axes = match &attr {
            Some(a) => a.clone(),
            None => req_ints(x, 1, "axes")?,
        };
        let rank = dims.len() + axes.len();
        let axes = norm_axes(x, &axes, rank)?;
        let mut src = dims.iter().copied();
        let out: Vec<i64> =
            (0..rank as i64).map(|i| if axes.contains(&i) { 1 } else { src.next().unwrap_or(1) }).collect();
        Ok(vec![t.f_reshape(out)?])
    })
}

/// Numpy broadcast of two shapes (right-aligned; 1 stretches); None when they do not broadcast.
pub fn broadcast_shapes(a: &[i64], b: &[i64]) -> Option<Vec<i64>> {
    let n = a.len().max(b.len());
    let at = |v: &[i64], i: usize| if i + v.len() >= n { v[i + v.len() - n] } else { 1 };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (p, q) if p == q || q == 1 => Some(p),
            (1, q) => Some(q),
            _ => None,
        })
        .collect()
}

/// [`broadcast_shapes`], failing with the node's name.
pub fn broadcast(x: &Inputs, a: &[i64], b: &[i64]) -> Result<Vec<i64>> {
    broadcast_shapes(a, b).ok_or_else(|| x.err(format!("shapes {a:?} and {b:?} do not broadcast")))
}

fn expand(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = x.req(0)?;
        let out = broadcast(x, &t.size(), &req_ints(x, 1, "shape")?)?;
        x.bounded(&out)?;
        Ok(vec![t.f_expand(out, false)?])
    })
}

fn transpose(ctx: &OpCtx) -> Result<BoxOp> {
    let perm = ctx.node.get_ints("perm")?;
    op(move |x| {
        let t = x.req(0)?;
        let r = t.dim() as i64;
        let p: Vec<i64> = perm.clone().unwrap_or_else(|| (0..r).rev().collect());
        let mut sorted = p.clone();
        sorted.sort_unstable();
        if sorted != (0..r).collect::<Vec<_>>() {
            return Err(x.err(format!("perm {p:?} is not a permutation of the {r} axes")));
        }
        Ok(vec![t.f_permute(p)?])
    })
}

fn concat(ctx: &OpCtx) -> Result<BoxOp> {
    // Opset 1 defaults axis to 1; from opset 4 it is required.
    let axis = match ctx.node.get_i("axis")? {
        Some(a) => a,
        None if ctx.opset < 4 => 1,
        None => return Err(ctx.node.attr_err("axis", "required attribute is missing")),
    };
    op(move |x| {
        let ts = x.all();
        let first = ts.first().ok_or_else(|| x.err("needs at least one input"))?;
        let a = norm_axis(x, axis, first.dim())?;
        Ok(vec![Tensor::f_cat(&ts, a)?])
    })
}

fn split(ctx: &OpCtx) -> Result<BoxOp> {
    // `split` sizes: attribute (opsets 1–12) or input (opset 1, and 13 on); num_outputs from 18.
    let axis = ctx.node.get_i("axis")?.unwrap_or(0);
    let attr_split = if ctx.opset < 13 { ctx.node.get_ints("split")? } else { None };
    let split_input = ctx.opset < 2 || ctx.opset >= 13;
    let num_outputs = if ctx.opset >= 18 { ctx.node.get_i("num_outputs")? } else { None };
    let n_out = ctx.node.output.len();
    if let Some(k) = num_outputs {
        if k < 1 || k as usize != n_out {
            return Err(ctx.node.attr_err("num_outputs", format!("is {k} but the node has {n_out} outputs")));
        }
    }
    let uneven_ok = ctx.opset >= 18;
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        let a = dim_axis(x, axis, dims.len())?;
        let d = dims[a as usize];
        let given = if split_input { x.ints(1)?.filter(|s| !s.is_empty()) } else { None };
        let sizes = match given.or_else(|| attr_split.clone()) {
            Some(_) if num_outputs.is_some() => return Err(x.err("both a split input and num_outputs are given")),
            Some(s) => s,
            None => {
                let k = n_out.max(1) as i64;
                let c = (d + k - 1) / k;
                if d % k != 0 && !uneven_ok {
                    return Err(x.err(format!("dim {d} does not split evenly into {k} outputs")));
                }
                let mut s = vec![c; k as usize];
                s[k as usize - 1] = d - c * (k - 1);
                s
            }
        };
        if sizes.len() != n_out || sizes.iter().any(|&s| s < 0) || sizes.iter().sum::<i64>() != d {
            return Err(x.err(format!("split {sizes:?} does not cut dim {d} into {n_out} outputs")));
        }
        Ok(t.f_split_with_sizes(sizes, a)?)
    })
}

pub(crate) fn constant(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let t = if let Some(tp) = n.get_t("value")? {
        let data = TensorData::from_proto(tp, Path::new(".")).map_err(|e| n.attr_err("value", e.to_string()))?;
        to_tensor(&data).map_err(|e| n.attr_err("value", e.to_string()))?
    } else if let Some(v) = n.get_f("value_float")? {
        Tensor::f_from_slice(&[v])?.f_reshape([0i64; 0])?
    } else if let Some(v) = n.get_floats("value_floats")? {
        Tensor::f_from_slice(&v)?
    } else if let Some(v) = n.get_i("value_int")? {
        Tensor::f_from_slice(&[v])?.f_reshape([0i64; 0])?
    } else if let Some(v) = n.get_ints("value_ints")? {
        Tensor::f_from_slice(&v)?
    } else if let Some(a) = ["value_string", "value_strings", "sparse_value"].into_iter().find(|a| n.attr(a).is_some())
    {
        return Err(n.attr_err(a, "string and sparse constants are not supported"));
    } else {
        return Err(n.node_err("has no value attribute"));
    };
    op(move |_| Ok(vec![t.shallow_clone()]))
}

fn constant_of_shape(ctx: &OpCtx) -> Result<BoxOp> {
    // value: a one-element tensor giving dtype and fill; default float32 0.
    let v = match ctx.node.get_t("value")? {
        Some(tp) => {
            let err = |e: crate::error::Error| ctx.node.attr_err("value", e.to_string());
            to_tensor(&TensorData::from_proto(tp, Path::new(".")).map_err(err)?).map_err(err)?
        }
        None => Tensor::f_zeros([1], (Kind::Float, Device::Cpu))?,
    };
    if v.numel() != 1 {
        return Err(ctx.node.attr_err("value", format!("must hold one element, holds {}", v.numel())));
    }
    let v = v.f_reshape([0i64; 0])?;
    op(move |x| {
        let s = x.req(0)?;
        let dims = req_ints(x, 0, "shape")?;
        if dims.iter().any(|&d| d < 0) {
            return Err(x.err(format!("negative dim in shape {dims:?}")));
        }
        x.bounded(&dims)?;
        // repeat (not expand) so every output owns its storage.
        Ok(vec![v.f_to_device(s.device())?.f_repeat(dims)?])
    })
}

fn range(ctx: &OpCtx) -> Result<BoxOp> {
    // Half-precision ranges are computed wider: in stash_type (opset 27: FLOAT or DOUBLE), else in f64.
    let stash = match ctx.node.get_i("stash_type")? {
        Some(1) | None if ctx.opset >= 27 => Kind::Float,
        Some(11) if ctx.opset >= 27 => Kind::Double,
        Some(s) if ctx.opset >= 27 => {
            return Err(ctx.node.attr_err("stash_type", format!("{s} is not FLOAT or DOUBLE")))
        }
        _ => Kind::Double,
    };
    op(move |x| {
        let s = x.req(0)?;
        let (kind, dev) = (s.kind(), s.device());
        let out = if matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) {
            let sc = |i: usize| x.scalar(i)?.ok_or_else(|| x.err(format!("input {i} is required")));
            let (start, limit, delta) = (sc(0)?, sc(1)?, sc(2)?);
            if delta == 0.0 {
                return Err(x.err("delta is 0"));
            }
            let n = ((limit - start) / delta).ceil().max(0.0) as i64;
            x.bounded(&[n])?;
            let ck = if matches!(kind, Kind::Half | Kind::BFloat16) { stash } else { Kind::Double };
            Tensor::f_arange(n, (ck, dev))?.f_mul_scalar(delta)?.f_add_scalar(start)?
        } else {
            let sc = |i: usize| -> Result<i64> {
                req_ints(x, i, "scalar")?.first().copied().ok_or_else(|| x.err(format!("input {i} is empty")))
            };
            let (start, limit, delta) = (sc(0)?, sc(1)?, sc(2)?);
            if delta == 0 {
                return Err(x.err("delta is 0"));
            }
            let span = limit.saturating_sub(start);
            let (q, r) =
                span.checked_div(delta).zip(span.checked_rem(delta)).ok_or_else(|| x.err("range overflows"))?;
            let n = (q + i64::from(r != 0)).max(0);
            x.bounded(&[n])?;
            Tensor::f_arange(n, (Kind::Int64, dev))?.f_mul_scalar(delta)?.f_add_scalar(start)?
        };
        Ok(vec![out.f_to_kind(kind)?])
    })
}

fn eye_like(ctx: &OpCtx) -> Result<BoxOp> {
    let k = ctx.node.get_i("k")?.unwrap_or(0);
    let dtype = match ctx.node.get_i("dtype")? {
        Some(c) => {
            Some(DType::from_onnx(c as i32).and_then(kind_of).map_err(|e| ctx.node.attr_err("dtype", e.to_string()))?)
        }
        None => None,
    };
    op(move |x| {
        let t = x.req(0)?;
        let &[r, c] = t.size().as_slice() else {
            return Err(x.err(format!("input must be 2-D, got shape {:?}", t.size())));
        };
        // Ones where column == row + k.
        let rows = Tensor::f_arange(r, (Kind::Int64, t.device()))?.f_unsqueeze(1)?.f_add_scalar(k)?;
        let cols = Tensor::f_arange(c, (Kind::Int64, t.device()))?.f_unsqueeze(0)?;
        Ok(vec![rows.f_eq_tensor(&cols)?.f_to_kind(dtype.unwrap_or(t.kind()))?])
    })
}

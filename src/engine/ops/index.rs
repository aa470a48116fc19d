//! Indexing: Gather, GatherElements, GatherND, Scatter*, OneHot, NonZero, TopK, ArgMax, ArgMin,
//! Unique.
use super::util::{norm_axis, norm_axis_of_shape};
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// ONNX indices may be negative (counting from the end of a dimension of size `dim`).
fn wrap(idx: &Tensor, dim: i64) -> Result<Tensor> {
    let idx = idx.f_to_kind(Kind::Int64)?;
    let neg = idx.f_lt(0)?;
    Ok(idx.f_add_scalar(dim)?.f_where_self(&neg, &idx)?)
}

/// Same, with a per-position dimension size (a tensor broadcasting against `idx`).
fn wrap_t(idx: &Tensor, dims: &Tensor) -> Result<Tensor> {
    let idx = idx.f_to_kind(Kind::Int64)?;
    let neg = idx.f_lt(0)?;
    Ok(idx.f_add(dims)?.f_where_self(&neg, &idx)?)
}

fn gather(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(0);
    op(move |x| {
        let (data, idx) = (x.req(0)?, x.req(1)?);
        let a = norm_axis_of_shape(x, axis, data.dim())?;
        let shape = data.size();
        let idx_n = wrap(idx, shape[a as usize])?;
        let picked = data.f_index_select(a, &idx_n.f_reshape([-1])?)?;
        // data.shape[:axis] + indices.shape + data.shape[axis+1:]
        let mut out = shape[..a as usize].to_vec();
        out.extend(idx.size());
        out.extend(&shape[a as usize + 1..]);
        Ok(vec![picked.f_reshape(out.as_slice())?])
    })
}

fn gather_elements(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(0);
    op(move |x| {
        let (data, idx) = (x.req(0)?, x.req(1)?);
        let a = norm_axis_of_shape(x, axis, data.dim())?;
        let idx = wrap(idx, data.size()[a as usize])?;
        Ok(vec![data.f_gather(a, &idx, false)?])
    })
}

/// Per-row advanced indexing: the last dim of `indices` addresses the leading dims of `data`
/// after `batch_dims` shared batch dims.
fn gather_nd(ctx: &OpCtx) -> Result<BoxOp> {
    let b = ctx.node.get_i("batch_dims")?.unwrap_or(0);
    if b < 0 {
        return Err(ctx.node.attr_err("batch_dims", "must be non-negative"));
    }
    op(move |x| {
        let (data, idx) = (x.req(0)?, x.req(1)?.f_to_kind(Kind::Int64)?);
        let (ds, is) = (data.size(), idx.size());
        let b = b as usize;
        let k = *is.last().ok_or_else(|| x.err("indices must have rank >= 1"))? as usize;
        if is.len() <= b || ds.len() < b + k || ds[..b] != is[..b] {
            return Err(x.err(format!("indices shape {is:?} does not fit data shape {ds:?} with batch_dims {b}")));
        }
        let nb: i64 = ds[..b].iter().product();
        let mid = &is[b..is.len() - 1];
        // Fold the batch dims into one, indexed by an arange broadcast against the rows.
        let mut dshape = vec![nb];
        dshape.extend(&ds[b..]);
        let data_f = data.f_reshape(dshape.as_slice())?;
        let mut ishape = vec![nb];
        ishape.extend(mid);
        ishape.push(k as i64);
        let idx_f = idx.f_reshape(ishape.as_slice())?;
        let mut bshape = vec![nb];
        bshape.extend(mid.iter().map(|_| 1));
        let mut ind = vec![Some(Tensor::f_arange(nb, (Kind::Int64, data.device()))?.f_reshape(bshape.as_slice())?)];
        for j in 0..k {
            ind.push(Some(wrap(&idx_f.f_select(-1, j as i64)?, ds[b + j])?));
        }
        let picked = data_f.f_index(&ind)?;
        let mut out = ds[..b].to_vec();
        out.extend(mid);
        out.extend(&ds[b + k..]);
        Ok(vec![picked.f_reshape(out.as_slice())?])
    })
}

/// The reduction attribute as torch's scatter_reduce name; None = plain overwrite.
fn reduction(ctx: &OpCtx) -> Result<Option<&'static str>> {
    Ok(match ctx.node.get_s("reduction")?.as_deref().unwrap_or("none") {
        "none" => None,
        "add" => Some("sum"),
        "mul" => Some("prod"),
        "max" => Some("amax"),
        "min" => Some("amin"),
        r => return Err(ctx.node.attr_err("reduction", format!("unsupported value '{r}'"))),
    })
}

fn scatter_into(data: &Tensor, dim: i64, idx: &Tensor, upd: &Tensor, red: Option<&str>) -> Result<Tensor> {
    let upd = upd.f_to_kind(data.kind())?;
    Ok(match red {
        None => data.f_scatter(dim, idx, &upd)?,
        Some(r) => data.f_internal_scatter_reduce(dim, idx, &upd, r, true)?,
    })
}

fn scatter_elements(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(0);
    let red = reduction(ctx)?;
    op(move |x| {
        let (data, idx, upd) = (x.req(0)?, x.req(1)?, x.req(2)?);
        let a = norm_axis_of_shape(x, axis, data.dim())?;
        let idx = wrap(idx, data.size()[a as usize])?;
        Ok(vec![scatter_into(data, a, &idx, upd, red)?])
    })
}

/// Linearises the first k dims of data and of each index row, then scatters along dim 0.
fn scatter_nd(ctx: &OpCtx) -> Result<BoxOp> {
    let red = reduction(ctx)?;
    op(move |x| {
        let (data, idx, upd) = (x.req(0)?, x.req(1)?.f_to_kind(Kind::Int64)?, x.req(2)?);
        let (ds, is) = (data.size(), idx.size());
        let k = *is.last().ok_or_else(|| x.err("indices must have rank >= 1"))? as usize;
        if k > ds.len() {
            return Err(x.err(format!("index rows of length {k} exceed data rank {}", ds.len())));
        }
        let dev = data.device();
        let lead = &ds[..k];
        let mut strides = vec![1i64; k];
        for j in (0..k.saturating_sub(1)).rev() {
            strides[j] = strides[j + 1] * lead[j + 1];
        }
        let dims = Tensor::f_from_slice(lead)?.f_to_device(dev)?;
        let rows = idx.f_reshape([-1, k as i64])?;
        let lin = wrap_t(&rows, &dims)?.f_mul(&Tensor::f_from_slice(&strides)?.f_to_device(dev)?)?.f_sum_dim_intlist(
            [1i64].as_slice(),
            false,
            Kind::Int64,
        )?;
        let mut flat = vec![lead.iter().product::<i64>()];
        flat.extend(&ds[k..]);
        let n = lin.size()[0];
        let mut ushape = vec![n];
        ushape.extend(&ds[k..]);
        let upd = upd.f_reshape(ushape.as_slice())?;
        let mut lshape = vec![n];
        lshape.extend(ds[k..].iter().map(|_| 1));
        let lin = lin.f_reshape(lshape.as_slice())?.f_expand(ushape.as_slice(), false)?;
        let out = scatter_into(&data.f_reshape(flat.as_slice())?, 0, &lin, &upd, red)?;
        Ok(vec![out.f_reshape(ds.as_slice())?])
    })
}

/// OneHot: `values` = [off, on]; indices in [-depth, depth) select, others give all-off rows.
fn one_hot(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(-1);
    op(move |x| {
        let (idx, vals) = (x.req(0)?, x.req(2)?);
        let depth = x.scalar(1)?.ok_or_else(|| x.err("input 1 (depth) is required"))?;
        if !(depth >= 1.0 && depth.is_finite()) {
            return Err(x.err(format!("depth must be a number >= 1, got {depth}")));
        }
        if vals.numel() != 2 {
            return Err(x.err(format!("values must hold [off, on], got {} values", vals.numel())));
        }
        let depth = depth as i64;
        let a = norm_axis(x, axis, idx.dim() + 1)?;
        let mut out = idx.size();
        out.insert(a as usize, depth);
        x.bounded(&out)?;
        let idx = wrap(idx, depth)?.f_unsqueeze(a)?;
        let mut rshape = vec![1i64; idx.dim()];
        rshape[a as usize] = depth;
        let range = Tensor::f_arange(depth, (Kind::Int64, idx.device()))?.f_reshape(rshape.as_slice())?;
        let mask = idx.f_eq_tensor(&range)?;
        let vals = vals.f_reshape([-1])?;
        let (off, on) = (vals.f_get(0)?, vals.f_get(1)?);
        Ok(vec![on.f_where_self(&mask, &off)?])
    })
}

fn non_zero(_: &OpCtx) -> Result<BoxOp> {
    op(|x| Ok(vec![x.req(0)?.f_nonzero()?.f_transpose(0, 1)?.f_contiguous()?]))
}

/// TopK via a stable sort, so equal values keep the lower index first.
fn top_k(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let axis = n.get_i("axis")?.unwrap_or(-1);
    let largest = n.get_i("largest")?.unwrap_or(1) != 0;
    let k_attr = if ctx.opset < 10 { Some(n.req_i("k")?) } else { None };
    op(move |x| {
        let t = x.req(0)?;
        let k = match k_attr {
            Some(k) => k,
            None => x.ints(1)?.and_then(|v| v.first().copied()).ok_or_else(|| x.err("input 1 (k) is required"))?,
        };
        let a = norm_axis_of_shape(x, axis, t.dim())?;
        let len = t.size()[a as usize];
        if k < 0 || k > len {
            return Err(x.err(format!("k = {k} is out of range for an axis of size {len}")));
        }
        let (v, i) = t.f_sort_stable(true, a, largest)?;
        Ok(vec![v.f_narrow(a, 0, k)?, i.f_narrow(a, 0, k)?])
    })
}

fn arg_extreme(ctx: &OpCtx, max: bool) -> Result<BoxOp> {
    let n = ctx.node;
    let axis = n.get_i("axis")?.unwrap_or(0);
    let keep = n.get_i("keepdims")?.unwrap_or(1) != 0;
    let last = n.get_i("select_last_index")?.unwrap_or(0) != 0;
    op(move |x| {
        let t = x.req(0)?;
        let a = norm_axis(x, axis, t.dim())?;
        let f = |t: &Tensor| if max { t.f_argmax(a, keep) } else { t.f_argmin(a, keep) };
        // torch returns the first extreme; the last one is the first of the flipped tensor.
        let r = if last {
            let len = t.size()[a as usize];
            f(&t.f_flip([a])?)?.f_neg()?.f_add_scalar(len - 1)?
        } else {
            f(t)?
        };
        Ok(vec![r])
    })
}

/// Unique: values (sorted, or in order of first occurrence), first indices, inverse, counts.
fn unique(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?;
    let sorted = ctx.node.get_i("sorted")?.unwrap_or(1) != 0;
    op(move |x| {
        let t = x.req(0)?;
        let (a, (u, inv, counts)) = match axis {
            Some(ax) => {
                let a = norm_axis(x, ax, t.dim())?;
                (a, t.f_unique_dim(a, true, true, true)?)
            }
            None => (0, t.f_reshape([-1])?.f_internal_unique2(true, true, true)?),
        };
        let inv = inv.f_reshape([-1])?;
        let nu = counts.size()[0];
        let dev = t.device();
        let pos = Tensor::f_arange(inv.size()[0], (Kind::Int64, dev))?;
        // First occurrence of each unique value: the smallest position mapping to it.
        let first = Tensor::f_full([nu], inv.size()[0], (Kind::Int64, dev))?
            .f_internal_scatter_reduce(0, &inv, &pos, "amin", true)?;
        if sorted {
            return Ok(vec![u, first, inv, counts]);
        }
        let order = first.f_argsort_stable(true, 0, false)?;
        let rank = order.f_argsort_stable(true, 0, false)?;
        Ok(vec![
            u.f_index_select(a, &order)?,
            first.f_index_select(0, &order)?,
            rank.f_index_select(0, &inv)?,
            counts.f_index_select(0, &order)?,
        ])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Gather", 1, gather);
    r.add("GatherElements", 11, gather_elements);
    r.add("GatherND", 11, gather_nd);
    r.add_range("", "Scatter", 9, 10, scatter_elements);
    r.add("ScatterElements", 11, scatter_elements);
    r.add("ScatterND", 11, scatter_nd);
    r.add("OneHot", 9, one_hot);
    r.add("NonZero", 9, non_zero);
    r.add("TopK", 1, top_k);
    r.add("ArgMax", 1, |c| arg_extreme(c, true));
    r.add("ArgMin", 1, |c| arg_extreme(c, false));
    r.add("Unique", 11, unique);
}

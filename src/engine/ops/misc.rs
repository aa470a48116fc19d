//! Assorted ops: CumProd, Det, Swish, BitCast, TensorScatter, CenterCropPad, Col2Im, and the
//! ai.onnx.ml Binarizer and ArrayFeatureExtractor. All but BitCast and Binarizer stay
//! differentiable in their float inputs.
use super::util::{norm_axis, norm_axis_of_shape};
use crate::engine::convert::kind_of;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::{DType, NodeExt};
use tch::{Kind, Tensor};

fn flag(ctx: &OpCtx, name: &str) -> Result<bool> {
    match ctx.node.get_i(name)?.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.node.attr_err(name, format!("must be 0 or 1, got {v}"))),
    }
}

/// Cumulative product along the `axis` input; `exclusive` shifts in a 1, `reverse` runs from the
/// end. The element type is kept (libtorch would widen integers to int64).
fn cumprod(ctx: &OpCtx) -> Result<BoxOp> {
    let (exclusive, reverse) = (flag(ctx, "exclusive")?, flag(ctx, "reverse")?);
    op(move |x| {
        let t = x.req(0)?;
        let axis = match x.ints(1)?.as_deref() {
            Some([a]) => norm_axis(x, *a, t.dim())?,
            _ => return Err(x.err("axis must be a scalar")),
        };
        let n = t.size().get(axis as usize).copied().unwrap_or(1);
        let t = if reverse { t.f_flip([axis])? } else { t.shallow_clone() };
        let mut y = t.f_cumprod(axis, t.kind())?;
        if exclusive && n > 0 {
            let one = t.f_narrow(axis, 0, 1)?.f_ones_like()?;
            y = Tensor::f_cat(&[one, y.f_narrow(axis, 0, n - 1)?], axis)?;
        }
        Ok(vec![if reverse { y.f_flip([axis])? } else { y }])
    })
}

/// Determinants of the trailing M×M matrices; f16/bf16 go through f32 (libtorch's LU needs it).
fn det(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = x.req(0)?;
        let s = t.size();
        if s.len() < 2 || s[s.len() - 1] != s[s.len() - 2] {
            return Err(x.err(format!("expected square matrices [*, M, M], got {s:?}")));
        }
        let wide = matches!(t.kind(), Kind::Half | Kind::BFloat16);
        let d = Tensor::f_linalg_det(&if wide { t.f_to_kind(Kind::Float)? } else { t.shallow_clone() })?;
        Ok(vec![if wide { d.f_to_kind(t.kind())? } else { d }])
    })
}

/// x · sigmoid(alpha · x).
fn swish(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = ctx.node.get_f("alpha")?.map_or(1.0, f64::from);
    op(move |x| {
        let t = x.req(0)?;
        Ok(vec![t.f_mul(&t.f_mul_scalar(alpha)?.f_sigmoid()?)?])
    })
}

/// The bits of each element reinterpreted as `to` (same width). uint16/uint32 live widened in
/// int32/int64, so an int32 input cast to a 16-bit type is a uint16, an int64 one cast to a 32-bit
/// type a uint32; they are narrowed to their own bits first, and widened again on output.
fn bitcast(ctx: &OpCtx) -> Result<BoxOp> {
    let code = ctx.node.req_i("to")?;
    let to = i32::try_from(code)
        .ok()
        .and_then(|c| DType::from_onnx(c).ok())
        .ok_or_else(|| ctx.node.attr_err("to", format!("unknown ONNX data type {code}")))?;
    let width = match to.size() {
        // e8m0 is stored widened (as Float), so its bits cannot be viewed in place.
        Some(w) if !matches!(to, DType::String | DType::Other(_) | DType::F8E8M0) => w,
        _ => return Err(ctx.node.attr_err("to", format!("bit-casting to {to} is not supported"))),
    };
    // The same-width libtorch kind to view the bits as.
    let bits = match to {
        DType::U16 => Kind::Int16,
        DType::U32 => Kind::Int,
        DType::Bool => Kind::Uint8,
        d => kind_of(d).map_err(|e| ctx.node.attr_err("to", e.to_string()))?,
    };
    op(move |x| {
        let t = x.req(0)?;
        let t = match (t.kind(), width) {
            (Kind::Int, 2) => t.f_to_kind(Kind::Int16)?,
            (Kind::Int64, 4) => t.f_to_kind(Kind::Int)?,
            (Kind::Bool, _) => t.f_to_kind(Kind::Uint8)?,
            _ => t.shallow_clone(),
        };
        if t.kind().elt_size_in_bytes() != width {
            return Err(x.err(format!("cannot bit-cast {:?} to {to}: the widths differ", t.kind())));
        }
        let y = t.f_view_dtype(bits)?;
        Ok(vec![match to {
            DType::U16 => y.f_to_kind(Kind::Int)?.f_bitwise_and(0xFFFF_i64)?,
            DType::U32 => y.f_to_kind(Kind::Int64)?.f_bitwise_and(0xFFFF_FFFF_i64)?,
            DType::Bool => y.f_ne(0)?,
            _ => y,
        }])
    })
}

/// Writes `update` into a copy of `past_cache` along the sequence `axis`, at each batch row's
/// write index (0 when absent); "circular" wraps around the cache length.
fn tensor_scatter(ctx: &OpCtx) -> Result<BoxOp> {
    let circular = match ctx.node.get_s("mode")?.as_deref().unwrap_or("linear") {
        "linear" => false,
        "circular" => true,
        m => return Err(ctx.node.attr_err("mode", format!("must be linear or circular, got '{m}'"))),
    };
    let axis = ctx.node.get_i("axis")?.unwrap_or(-2);
    op(move |x| {
        let (past, update) = (x.req(0)?, x.req(1)?);
        let (ps, us) = (past.size(), update.size());
        let a = norm_axis(x, axis, ps.len())? as usize;
        let fits = a > 0
            && ps.len() == us.len()
            && (0..ps.len()).all(|i| if i == a { us[i] <= ps[i] } else { us[i] == ps[i] });
        if !fits {
            return Err(x.err(format!("update {us:?} does not fit cache {ps:?} along axis {a} (not the batch axis)")));
        }
        let (batch, len, max) = (ps[0], us[a], ps[a]);
        let starts = x.ints(2)?.unwrap_or_else(|| vec![0; batch as usize]);
        if starts.len() != batch as usize {
            return Err(x.err(format!("write_indices has {} values for batch {batch}", starts.len())));
        }
        if let Some(s) = starts.iter().find(|&&s| s < 0 || (!circular && s + len > max)) {
            return Err(x.err(format!("write index {s} + {len} updates do not fit {max} cache positions")));
        }
        // Destination of update[b, …, s, …] along the axis: starts[b] + s (mod max if circular).
        let dev = past.device();
        let mut col = vec![1; ps.len()];
        col[0] = batch;
        let mut row = vec![1; ps.len()];
        row[a] = len;
        let pos = Tensor::f_from_slice(&starts)?.f_to_device(dev)?.f_reshape(&col)?;
        let mut idx = pos.f_add(&Tensor::f_arange(len, (Kind::Int64, dev))?.f_reshape(&row)?)?;
        if circular {
            idx = idx.f_remainder(max)?;
        }
        Ok(vec![past.f_scatter(a as i64, &idx.f_expand(&us, false)?, update)?])
    })
}

/// Crops (window start rounded down) or zero-pads (the odd pixel at the end) each listed axis to
/// the `shape` input, keeping the data centred.
fn center_crop_pad(ctx: &OpCtx) -> Result<BoxOp> {
    let axes = ctx.node.get_ints("axes")?;
    op(move |x| {
        let t = x.req(0)?;
        let shape = x.ints(1)?.ok_or_else(|| x.err("shape is required"))?;
        let r = t.dim();
        let axes: Vec<i64> = match &axes {
            Some(a) => a.iter().map(|&a| norm_axis_of_shape(x, a, r)).collect::<Result<_>>()?,
            None => (0..r as i64).collect(),
        };
        if axes.len() != shape.len() {
            return Err(x.err(format!("shape has {} values for {} axes", shape.len(), axes.len())));
        }
        let mut out = t.size();
        for (&a, &want) in axes.iter().zip(&shape) {
            out[a as usize] = want;
        }
        x.bounded(&out)?;
        let mut y = t.shallow_clone();
        let mut pads = vec![0; 2 * r];
        for (&a, &want) in axes.iter().zip(&shape) {
            let have = y.size()[a as usize];
            if want < 0 {
                return Err(x.err(format!("target size {want} must be >= 0")));
            }
            if want < have {
                y = y.f_narrow(a, (have - want) / 2, want)?;
            } else {
                // constant_pad_nd lists the last dim first.
                let k = 2 * (r - 1 - a as usize);
                pads[k] = (want - have) / 2;
                pads[k + 1] = want - have - pads[k];
            }
        }
        Ok(vec![if pads.iter().any(|&p| p != 0) { y.f_constant_pad_nd(pads)? } else { y }])
    })
}

/// Row-major multi-index of `flat` within `dims`.
fn unravel(mut flat: i64, dims: &[i64]) -> Vec<i64> {
    let mut v = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        v[i] = flat % dims[i];
        flat /= dims[i];
    }
    v
}

/// Col2Im for any number of spatial dims: every (block element, block position) column entry is
/// added into its place in the padded image (index_add), which is then cropped.
fn col2im(ctx: &OpCtx) -> Result<BoxOp> {
    let (strides, dilations, pads) =
        (ctx.node.get_ints("strides")?, ctx.node.get_ints("dilations")?, ctx.node.get_ints("pads")?);
    op(move |x| {
        let input = x.req(0)?;
        let image = x.ints(1)?.ok_or_else(|| x.err("image_shape is required"))?;
        let block = x.ints(2)?.ok_or_else(|| x.err("block_shape is required"))?;
        let n = image.len();
        let per = |v: &Option<Vec<i64>>, len: usize, name: &str, d: i64| match v {
            None => Ok(vec![d; len]),
            Some(v) if v.len() == len => Ok(v.clone()),
            Some(v) => Err(x.err(format!("{name} has {} values, expected {len}", v.len()))),
        };
        let (s, d, p) =
            (per(&strides, n, "strides", 1)?, per(&dilations, n, "dilations", 1)?, per(&pads, 2 * n, "pads", 0)?);
        let is = input.size();
        let k: i64 = block.iter().product();
        if block.len() != n || is.len() != 3 || k < 1 || is[1] % k != 0 {
            return Err(x.err(format!("input {is:?} does not fit blocks {block:?} over image {image:?}")));
        }
        let padded: Vec<i64> = (0..n).map(|i| image[i] + p[i] + p[i + n]).collect();
        let cols: Vec<i64> = (0..n).map(|i| (padded[i] - d[i] * (block[i] - 1) - 1).div_euclid(s[i]) + 1).collect();
        let l: i64 = cols.iter().product();
        if cols.iter().any(|&c| c < 1) || is[2] != l {
            return Err(x.err(format!("input has {} blocks, the geometry gives {cols:?}", is[2])));
        }
        // Flat padded-image index of each (block element, block position), in the input's order.
        let mut idx = Vec::with_capacity((k * l) as usize);
        for e in 0..k {
            let off = unravel(e, &block);
            for b in 0..l {
                let pos = unravel(b, &cols);
                idx.push((0..n).fold(0, |f, i| f * padded[i] + pos[i] * s[i] + off[i] * d[i]));
            }
        }
        let (batch, ch) = (is[0], is[1] / k);
        let idx = Tensor::f_from_slice(&idx)?.f_to_device(input.device())?;
        let area: i64 = padded.iter().product();
        let src = input.f_reshape([batch, ch, k * l])?;
        let mut y = src.f_new_zeros([batch, ch, area], (input.kind(), input.device()))?.f_index_add(2, &idx, &src)?;
        y = y.f_reshape([&[batch, ch][..], &padded].concat())?;
        for i in 0..n {
            y = y.f_narrow(2 + i as i64, p[i], image[i])?;
        }
        Ok(vec![y])
    })
}

/// 1 where x > threshold, else 0, in x's type.
fn binarizer(ctx: &OpCtx) -> Result<BoxOp> {
    let threshold = ctx.node.get_f("threshold")?.map_or(0.0, f64::from);
    op(move |x| {
        let t = x.req(0)?;
        Ok(vec![t.f_gt(threshold)?.f_to_kind(t.kind())?])
    })
}

/// X[..., indices] with the indices flattened; a 1-D X gives one row (as onnxruntime does).
fn array_feature_extractor(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = x.req(0)?;
        let n = t.size().last().copied().unwrap_or(1);
        let idx = x.ints(1)?.ok_or_else(|| x.err("indices are required"))?;
        // Negative indices count from the end, as numpy's do.
        let idx: Vec<i64> = idx
            .iter()
            .map(|&i| match i {
                i if (0..n).contains(&i) => Ok(i),
                i if (-n..0).contains(&i) => Ok(i + n),
                i => Err(x.err(format!("index {i} is out of range for {n} features"))),
            })
            .collect::<Result<_>>()?;
        let y = t.f_index_select(-1, &Tensor::f_from_slice(&idx)?.f_to_device(t.device())?)?;
        let mut shape = if t.dim() <= 1 { vec![1] } else { t.size()[..t.dim() - 1].to_vec() };
        shape.push(idx.len() as i64);
        Ok(vec![y.f_reshape(shape)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("CumProd", 26, cumprod);
    r.add("Det", 11, det);
    r.add("Swish", 24, swish);
    r.add("BitCast", 26, bitcast);
    r.add("TensorScatter", 24, tensor_scatter);
    r.add("CenterCropPad", 18, center_crop_pad);
    r.add("Col2Im", 18, col2im);
    r.add_range("ai.onnx.ml", "Binarizer", 1, i64::MAX, binarizer);
    r.add_range("ai.onnx.ml", "ArrayFeatureExtractor", 1, i64::MAX, array_feature_extractor);
}

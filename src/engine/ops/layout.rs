//! Layout ops that move or select elements: Slice, Tile, Pad, Trilu, DepthToSpace, SpaceToDepth,
//! Compress, ReverseSequence. All stay differentiable (slicing, index_select, gather).
use super::shape::{dim_axis, int_tensor, norm_axes, req_ints};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

pub fn register(r: &mut Registry) {
    r.add("Slice", 1, slice);
    r.add("Tile", 1, tile);
    r.add("Pad", 1, pad);
    r.add("Trilu", 14, trilu);
    r.add("DepthToSpace", 1, depth_to_space);
    r.add("SpaceToDepth", 1, space_to_depth);
    r.add("Compress", 9, compress);
    r.add("ReverseSequence", 10, reverse_sequence);
}

fn slice(ctx: &OpCtx) -> Result<BoxOp> {
    // Opset 1: starts/ends/axes attributes. From 10: inputs starts, ends, axes?, steps?.
    let attrs = if ctx.opset < 10 {
        Some((ctx.node.req_ints("starts")?, ctx.node.req_ints("ends")?, ctx.node.get_ints("axes")?))
    } else {
        None
    };
    op(move |x| {
        let t = x.req(0)?;
        let (starts, ends, axes, steps) = match &attrs {
            Some((s, e, a)) => (s.clone(), e.clone(), a.clone().filter(|a| !a.is_empty()), None),
            None => (req_ints(x, 1, "starts")?, req_ints(x, 2, "ends")?, x.ints(3)?, x.ints(4)?),
        };
        let n = starts.len();
        let axes = match axes {
            Some(a) => norm_axes(x, &a, t.dim())?,
            None => (0..n as i64).collect(),
        };
        let steps = steps.unwrap_or_else(|| vec![1; n]);
        if ends.len() != n || axes.len() != n || steps.len() != n {
            return Err(x.err(format!(
                "starts, ends, axes and steps differ in length ({n}, {}, {}, {})",
                ends.len(),
                axes.len(),
                steps.len()
            )));
        }
        let dims = t.size();
        let mut out = t.shallow_clone();
        for i in 0..n {
            let a = axes[i];
            let d = *dims.get(a as usize).ok_or_else(|| x.err(format!("axis {a} is out of range")))?;
            out = slice_axis(x, &out, a, d, starts[i], ends[i], steps[i])?;
        }
        Ok(vec![out])
    })
}

/// One axis of Slice, with ONNX's clamping of out-of-range starts/ends (e.g. ±INT64_MAX).
fn slice_axis(x: &Inputs, t: &Tensor, a: i64, d: i64, start: i64, end: i64, step: i64) -> Result<Tensor> {
    let fix = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (fix(start), fix(end));
    if step > 0 {
        let s = s.clamp(0, d);
        return Ok(t.f_slice(a, s, e.clamp(s, d), step)?);
    }
    if step == 0 {
        return Err(x.err("slice step is 0"));
    }
    // Negative step: take s, s-|step|, … while > e; i.e. the range (e, s] reversed, strided.
    if d == 0 {
        return Ok(t.f_narrow(a, 0, 0)?);
    }
    let (s, e) = (s.clamp(0, d - 1), e.clamp(-1, d - 1));
    if s <= e {
        return Ok(t.f_narrow(a, 0, 0)?);
    }
    Ok(t.f_narrow(a, e + 1, s - e)?.f_flip([a])?.f_slice(a, 0, s - e, step.saturating_neg())?)
}

fn tile(ctx: &OpCtx) -> Result<BoxOp> {
    // Opset 1: scalar inputs `tiles` and `axis`; from 6: `repeats`, one per input dim.
    let per_axis = ctx.opset < 6;
    op(move |x| {
        let t = x.req(0)?;
        let r = t.dim();
        let reps = if per_axis {
            let one = |i: usize, what: &str| -> Result<i64> {
                req_ints(x, i, what)?.first().copied().ok_or_else(|| x.err(format!("input {i} ({what}) is empty")))
            };
            let (tiles, axis) = (one(1, "tiles")?, one(2, "axis")?);
            let mut reps = vec![1; r];
            reps[dim_axis(x, axis, r)? as usize] = tiles;
            reps
        } else {
            req_ints(x, 1, "repeats")?
        };
        if reps.len() != r || reps.iter().any(|&v| v < 0) {
            return Err(x.err(format!("repeats {reps:?} do not fit rank {r}")));
        }
        let out: Vec<i64> = t.size().iter().zip(&reps).map(|(&d, &k)| d.saturating_mul(k)).collect();
        x.bounded(&out)?;
        Ok(vec![t.f_repeat(reps)?])
    })
}

#[derive(Clone, Copy, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

fn pad(ctx: &OpCtx) -> Result<BoxOp> {
    let mode = match ctx.node.get_s("mode")?.as_deref().unwrap_or("constant") {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" if ctx.opset >= 19 => PadMode::Wrap,
        m => return Err(ctx.node.attr_err("mode", format!("'{m}' is not supported at opset {}", ctx.opset))),
    };
    // pads: attribute `paddings` (opset 1) / `pads` (2–10), then inputs pads, constant_value?, axes? (18).
    let attr_pads = match ctx.opset {
        ..=1 => Some(ctx.node.req_ints("paddings")?),
        2..=10 => Some(ctx.node.req_ints("pads")?),
        _ => None,
    };
    let attr_value = ctx.node.get_f("value")?.unwrap_or(0.0) as f64;
    let axes_input = ctx.opset >= 18;
    op(move |x| {
        let t = x.req(0)?;
        let r = t.dim();
        let (pads, value, axes) = match &attr_pads {
            Some(p) => (p.clone(), attr_value, None),
            None => (
                req_ints(x, 1, "pads")?,
                // An absent or empty constant_value means 0.
                if x.get(2).is_some_and(|v| v.numel() > 0) { x.scalar(2)?.unwrap_or(0.0) } else { 0.0 },
                if axes_input { x.ints(3)? } else { None },
            ),
        };
        let axes = match axes {
            Some(a) => norm_axes(x, &a, r)?,
            None => (0..r as i64).collect(),
        };
        let k = axes.len();
        if pads.len() != 2 * k {
            return Err(x.err(format!("{} pads for {k} axes", pads.len())));
        }
        let mut per_dim = vec![(0, 0); r];
        for (i, &a) in axes.iter().enumerate() {
            per_dim[a as usize] = (pads[i], pads[i + k]);
        }
        Ok(vec![pad_tensor(x, t, &per_dim, mode, value)?])
    })
}

/// Pads (begin, end) per dim: negative amounts crop first, then positive ones pad.
fn pad_tensor(x: &Inputs, t: &Tensor, per_dim: &[(i64, i64)], mode: PadMode, value: f64) -> Result<Tensor> {
    let out: Vec<i64> =
        t.size().iter().zip(per_dim).map(|(&d, &(b, e))| d.saturating_add(b).saturating_add(e).max(0)).collect();
    x.bounded(&out)?;
    let mut out = t.shallow_clone();
    for (a, &(b, e)) in per_dim.iter().enumerate() {
        if b < 0 || e < 0 {
            let (cb, ce) = (b.saturating_neg().max(0), e.saturating_neg().max(0));
            let len = out.size()[a].saturating_sub(cb).saturating_sub(ce);
            if len < 0 {
                return Err(x.err(format!("pads crop more than dim {a} holds")));
            }
            out = out.f_narrow(a as i64, cb, len)?;
        }
    }
    if mode == PadMode::Constant {
        if per_dim.iter().all(|&(b, e)| b <= 0 && e <= 0) {
            return Ok(out);
        }
        // torch lists (begin, end) pairs from the last dim backwards.
        let flat: Vec<i64> = per_dim.iter().rev().flat_map(|&(b, e)| [b.max(0), e.max(0)]).collect();
        return Ok(out.f_pad(flat, "constant", Some(value))?);
    }
    for (a, &(b, e)) in per_dim.iter().enumerate() {
        let (b, e) = (b.max(0), e.max(0));
        if b == 0 && e == 0 {
            continue;
        }
        let n = out.size()[a];
        if n == 0 {
            return Err(x.err(format!("cannot pad empty dim {a} in this mode")));
        }
        // Output position i (relative to the data start) reads source index f(i).
        let i = Tensor::f_arange_start_step(b.saturating_neg(), n.saturating_add(e), 1, (Kind::Int64, t.device()))?;
        let idx = match mode {
            PadMode::Edge => i.f_clamp(0, n - 1)?,
            PadMode::Wrap => i.f_remainder(n)?,
            PadMode::Reflect if n == 1 => i.f_zeros_like()?,
            // Mirror without repeating the edge: period 2(n-1), fold the second half back.
            _ => {
                let m = i.f_remainder(2 * (n - 1))?;
                m.f_minimum(&m.f_neg()?.f_add_scalar(2 * (n - 1))?)?
            }
        };
        out = out.f_index_select(a as i64, &idx)?;
    }
    Ok(out)
}

fn trilu(ctx: &OpCtx) -> Result<BoxOp> {
    let upper = ctx.node.get_i("upper")?.unwrap_or(1) != 0;
    op(move |x| {
        let t = x.req(0)?;
        if t.dim() < 2 {
            return Err(x.err(format!("input must have rank >= 2, got shape {:?}", t.size())));
        }
        let k = x.ints(1)?.and_then(|v| v.first().copied()).unwrap_or(0);
        Ok(vec![if upper { t.f_triu(k)? } else { t.f_tril(k)? }])
    })
}

/// The (N, C, H, W) of a 4-D input.
fn nchw(x: &Inputs, t: &Tensor) -> Result<[i64; 4]> {
    t.size().try_into().map_err(|_| x.err(format!("input must be 4-D, got shape {:?}", t.size())))
}

fn blocksize(ctx: &OpCtx) -> Result<i64> {
    let b = ctx.node.req_i("blocksize")?;
    if !(1..=i32::MAX as i64).contains(&b) {
        return Err(ctx.node.attr_err("blocksize", format!("must be a positive int32, is {b}")));
    }
    Ok(b)
}

fn depth_to_space(ctx: &OpCtx) -> Result<BoxOp> {
    let b = blocksize(ctx)?;
    // DCR (default): depth splits as (b, b, C'); CRD: as (C', b, b).
    let crd = match ctx.node.get_s("mode")?.as_deref().unwrap_or("DCR") {
        "DCR" => false,
        "CRD" => true,
        m => return Err(ctx.node.attr_err("mode", format!("'{m}' is not DCR or CRD"))),
    };
    op(move |x| {
        let t = x.req(0)?;
        let [n, c, h, w] = nchw(x, t)?;
        if c % (b * b) != 0 {
            return Err(x.err(format!("channels {c} are not a multiple of blocksize² = {}", b * b)));
        }
        let c2 = c / (b * b);
        let y = if crd {
            t.f_reshape([n, c2, b, b, h, w])?.f_permute([0, 1, 4, 2, 5, 3])?
        } else {
            t.f_reshape([n, b, b, c2, h, w])?.f_permute([0, 3, 4, 1, 5, 2])?
        };
        Ok(vec![y.f_reshape([n, c2, h * b, w * b])?])
    })
}

fn space_to_depth(ctx: &OpCtx) -> Result<BoxOp> {
    let b = blocksize(ctx)?;
    op(move |x| {
        let t = x.req(0)?;
        let [n, c, h, w] = nchw(x, t)?;
        if h % b != 0 || w % b != 0 {
            return Err(x.err(format!("spatial dims {h}x{w} are not multiples of blocksize {b}")));
        }
        let y = t.f_reshape([n, c, h / b, b, w / b, b])?.f_permute([0, 3, 5, 1, 2, 4])?;
        Ok(vec![y.f_reshape([n, c * b * b, h / b, w / b])?])
    })
}

fn compress(ctx: &OpCtx) -> Result<BoxOp> {
    // No axis: select from the flattened input. A short condition drops the trailing slices.
    let axis = ctx.node.get_i("axis")?;
    op(move |x| {
        let t = x.req(0)?;
        let (src, a) = match axis {
            Some(a) => (t.shallow_clone(), dim_axis(x, a, t.dim())?),
            None => (t.f_reshape([-1])?, 0),
        };
        let cond = x.req(1)?.f_to_kind(Kind::Bool)?.f_reshape([-1])?;
        let idx = cond.f_nonzero()?.f_reshape([-1])?.f_to_device(src.device())?;
        let d = src.size()[a as usize];
        if idx.numel() > 0 && idx.f_max()?.f_int64_value(&[])? >= d {
            return Err(x.err(format!("condition selects past the {d} slices along axis {a}")));
        }
        Ok(vec![src.f_index_select(a, &idx)?])
    })
}

fn reverse_sequence(ctx: &OpCtx) -> Result<BoxOp> {
    let batch_axis = ctx.node.get_i("batch_axis")?.unwrap_or(1);
    let time_axis = ctx.node.get_i("time_axis")?.unwrap_or(0);
    if !matches!((batch_axis, time_axis), (0, 1) | (1, 0)) {
        return Err(ctx.node.attr_err("batch_axis", "batch_axis and time_axis must be 0 and 1, in either order"));
    }
    op(move |x| {
        let t = x.req(0)?;
        let dims = t.size();
        if dims.len() < 2 {
            return Err(x.err(format!("input must have rank >= 2, got shape {dims:?}")));
        }
        let lens = req_ints(x, 1, "sequence_lens")?;
        let (nb, nt) = (dims[batch_axis as usize], dims[time_axis as usize]);
        if lens.len() as i64 != nb {
            return Err(x.err(format!("{} sequence_lens for batch size {nb}", lens.len())));
        }
        // For each (dim0, dim1) position: the time step it reads (reversed within the length).
        let mut idx = Vec::with_capacity((dims[0] * dims[1]) as usize);
        for i0 in 0..dims[0] {
            for i1 in 0..dims[1] {
                let (b, s) = if batch_axis == 0 { (i0, i1) } else { (i1, i0) };
                let l = lens[b as usize].clamp(0, nt);
                idx.push(if s < l { l - 1 - s } else { s });
            }
        }
        let mut shape = vec![1; dims.len()];
        shape[..2].copy_from_slice(&dims[..2]);
        let index = int_tensor(&idx, t)?.f_reshape(shape)?.f_expand(&dims, false)?.f_contiguous()?;
        Ok(vec![t.f_gather(time_axis, &index, false)?])
    })
}

/// Gradients flow through the index-based layout ops (negative-step Slice, Pad modes, gathers).
#[cfg(test)]
mod grad_tests {
    use crate::engine::{Inputs, OpCtx, Registry};
    use crate::onnx::proto::{AttributeProto, NodeProto};
    use tch::{Device, Kind, Tensor};

    use crate::onnx::build::{attr_int as int, attr_ints as ints, attr_string as string};

    /// Runs `op` on a float input of `shape` plus int64 inputs. The gradient of sum(y) counts how
    /// often y reads each element, so its total must equal sum(op(ones)).
    fn check(op: &str, opset: i64, attribute: Vec<AttributeProto>, shape: &[i64], rest: &[&[i64]]) {
        let node = NodeProto {
            op_type: Some(op.into()),
            input: (0..=rest.len()).map(|i| format!("x{i}")).collect(),
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        };
        let built = Registry::standard().find("", op, opset).expect(op)(&OpCtx::new(&node, opset)).expect("build");
        let ints: Vec<Tensor> = rest.iter().map(|v| Tensor::from_slice(v)).collect();
        let run = |x: &Tensor| {
            let vals = std::iter::once(Some(x)).chain(ints.iter().map(Some)).collect();
            built.run(&Inputs { node: &node, vals }).expect("run").remove(0).sum(Kind::Double)
        };
        let x = Tensor::rand(shape, (Kind::Double, Device::Cpu)).set_requires_grad(true);
        run(&x).backward();
        let want = run(&Tensor::ones(shape, (Kind::Double, Device::Cpu))).double_value(&[]);
        assert!(want > 0.0, "{op}: empty output");
        assert_eq!(x.grad().sum(Kind::Double).double_value(&[]), want, "{op}");
    }

    #[test]
    fn gradients_flow() {
        check("Slice", 13, vec![], &[4, 7], &[&[6, -1], &[1, -100], &[1, 0], &[-2, -1]]);
        check("Slice", 1, vec![ints("starts", &[1]), ints("ends", &[i64::MAX])], &[4, 3], &[]);
        for mode in ["reflect", "edge", "constant"] {
            check("Pad", 2, vec![string("mode", mode), ints("pads", &[2, -1, 3, 1])], &[3, 4], &[]);
        }
        check("Pad", 19, vec![string("mode", "wrap")], &[3, 4], &[&[4, 0, 0, 5]]);
        check("Tile", 13, vec![], &[2, 3], &[&[2, 2]]);
        check("ReverseSequence", 10, vec![], &[4, 3, 2], &[&[2, 4, 1]]);
        check("Compress", 11, vec![], &[3, 4], &[&[1, 0, 1]]);
        check("DepthToSpace", 13, vec![int("blocksize", 2), string("mode", "CRD")], &[1, 8, 2, 2], &[]);
        check("Trilu", 14, vec![int("upper", 0)], &[2, 3, 3], &[&[1]]);
    }
}

//! Reductions (ReduceSum, ReduceMean, …, axes as attribute or input) and CumSum.
use super::util::norm_axis;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, PartialEq)]
enum Red {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// `axes_input_since`: the opset from which axes come as input 1 (and `noop_with_empty_axes`
/// exists); before it they are the `axes` attribute.
fn reduce_op(ctx: &OpCtx, red: Red, axes_input_since: i64) -> Result<BoxOp> {
    let n = ctx.node;
    let keep = n.get_i("keepdims")?.unwrap_or(1) != 0;
    let from_input = ctx.opset >= axes_input_since;
    let noop = from_input && n.get_i("noop_with_empty_axes")?.unwrap_or(0) != 0;
    let attr_axes = if from_input { None } else { n.get_ints("axes")? };
    op(move |x| {
        let data = x.req(0)?;
        let axes = if from_input { x.ints(1)? } else { attr_axes.clone() };
        let rank = data.dim();
        let axes = match axes {
            Some(a) if !a.is_empty() => {
                let mut v = a.iter().map(|&a| norm_axis(x, a, rank)).collect::<Result<Vec<_>>>()?;
                v.sort_unstable();
                v.dedup();
                v
            }
            // Reducing over no axis still applies the op's element-wise part (e.g. square).
            _ if noop => return Ok(vec![elementwise(red, data)?]),
            _ => (0..rank as i64).collect(),
        };
        Ok(vec![reduce(red, data, &axes, keep)?])
    })
}

/// The reduction over an empty set of axes.
fn elementwise(red: Red, t: &Tensor) -> Result<Tensor> {
    Ok(match red {
        Red::L1 | Red::L2 => t.f_abs()?,
        Red::LogSum => t.f_log()?,
        Red::SumSquare => t.f_square()?,
        _ => t.shallow_clone(),
    })
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// The value a reduction over zero elements gives (numpy's identities; Mean is 0/0).
fn empty_value(red: Red, k: Kind) -> f64 {
    let float = is_float(k);
    let (lo, hi) = match k {
        Kind::Bool => (0.0, 1.0),
        Kind::Uint8 => (0.0, u8::MAX as f64),
        Kind::Int8 => (i8::MIN as f64, i8::MAX as f64),
        Kind::Int16 => (i16::MIN as f64, i16::MAX as f64),
        Kind::Int => (i32::MIN as f64, i32::MAX as f64),
        Kind::Int64 => (i64::MIN as f64, i64::MAX as f64),
        _ => (f64::NEG_INFINITY, f64::INFINITY),
    };
    match red {
        Red::Sum | Red::L1 | Red::L2 | Red::SumSquare => 0.0,
        Red::Prod => 1.0,
        Red::Mean if float => f64::NAN,
        Red::Mean => 0.0, // NaN has no integer value
        Red::Max => lo,
        Red::Min => hi,
        Red::LogSum | Red::LogSumExp if float => f64::NEG_INFINITY,
        Red::LogSum | Red::LogSumExp => lo,
    }
}

/// Reduces `t` over the sorted, distinct `axes`; the result keeps the input's element type.
fn reduce(red: Red, t: &Tensor, axes: &[i64], keep: bool) -> Result<Tensor> {
    let kind = t.kind();
    let shape = t.size();
    let reduced = |i: usize| axes.contains(&(i as i64));
    let out: Vec<i64> = if keep {
        (0..shape.len()).map(|i| if reduced(i) { 1 } else { shape[i] }).collect()
    } else {
        (0..shape.len()).filter(|&i| !reduced(i)).map(|i| shape[i]).collect()
    };
    if t.numel() == 0 {
        if kind == Kind::Int64 && matches!(red, Red::Max | Red::Min) {
            // i64 bounds do not survive the trip through f64.
            let v = if red == Red::Max { i64::MIN } else { i64::MAX };
            return Ok(Tensor::f_full(out.as_slice(), v, (kind, t.device()))?);
        }
        return Ok(Tensor::f_full(out.as_slice(), empty_value(red, kind), (kind, t.device()))?);
    }
    let sum = |v: &Tensor| v.f_sum_dim_intlist(axes, true, kind);
    let r = match red {
        Red::Sum => sum(t)?,
        Red::Mean if is_float(kind) => t.f_mean_dim(axes, true, None::<Kind>)?,
        // Integer mean: numpy divides, then truncates back to the integer type.
        Red::Mean => {
            // A scalar's axis 0 (accepted by norm_axis) counts one element.
            let count: i64 = axes.iter().map(|&a| shape.get(a as usize).copied().unwrap_or(1)).product();
            t.f_sum_dim_intlist(axes, true, Kind::Double)?.f_div_scalar(count as f64)?
        }
        Red::Max => t.f_amax(axes, true)?,
        Red::Min => t.f_amin(axes, true)?,
        Red::Prod => {
            let mut r = t.shallow_clone();
            for &a in axes {
                r = r.f_prod_dim_int(a, true, kind)?;
            }
            r
        }
        Red::L1 => sum(&t.f_abs()?)?,
        Red::L2 => as_float(t)?.f_square()?.f_sum_dim_intlist(axes, true, None::<Kind>)?.f_sqrt()?,
        Red::LogSum => as_float(t)?.f_sum_dim_intlist(axes, true, None::<Kind>)?.f_log()?,
        Red::LogSumExp => as_float(t)?.f_logsumexp(axes, true)?,
        Red::SumSquare => sum(&t.f_square()?)?,
    };
    let r = if r.kind() != kind { r.f_to_kind(kind)? } else { r };
    Ok(if keep { r } else { r.f_reshape(out.as_slice())? })
}

/// Float data as is; integers as f64 for the ops that leave the integers.
fn as_float(t: &Tensor) -> Result<Tensor> {
    Ok(if is_float(t.kind()) { t.shallow_clone() } else { t.f_to_kind(Kind::Double)? })
}

/// CumSum: `exclusive` shifts the running sum by one, `reverse` runs it from the end.
fn cumsum(ctx: &OpCtx) -> Result<BoxOp> {
    let exclusive = ctx.node.get_i("exclusive")?.unwrap_or(0) != 0;
    let reverse = ctx.node.get_i("reverse")?.unwrap_or(0) != 0;
    op(move |x| {
        let t = x.req(0)?;
        let axis = x.ints(1)?.and_then(|v| v.first().copied()).ok_or_else(|| x.err("input 1 (axis) is required"))?;
        let axis = norm_axis(x, axis, t.dim())?;
        let src = if reverse { t.f_flip([axis])? } else { t.shallow_clone() };
        let mut y = src.f_cumsum(axis, t.kind())?;
        let n = src.size().get(axis as usize).copied().unwrap_or(1);
        if exclusive && n > 0 {
            // Shift right by one along the axis, a zero first: exact, unlike `y - x`.
            let zero = y.f_narrow(axis, 0, 1)?.f_zeros_like()?;
            y = Tensor::f_cat(&[zero, y.f_narrow(axis, 0, n - 1)?], axis)?;
        }
        Ok(vec![if reverse { y.f_flip([axis])? } else { y }])
    })
}

pub fn register(r: &mut Registry) {
    r.add("ReduceSum", 1, |c| reduce_op(c, Red::Sum, 13));
    r.add("ReduceMean", 1, |c| reduce_op(c, Red::Mean, 18));
    r.add("ReduceMax", 1, |c| reduce_op(c, Red::Max, 18));
    r.add("ReduceMin", 1, |c| reduce_op(c, Red::Min, 18));
    r.add("ReduceProd", 1, |c| reduce_op(c, Red::Prod, 18));
    r.add("ReduceL1", 1, |c| reduce_op(c, Red::L1, 18));
    r.add("ReduceL2", 1, |c| reduce_op(c, Red::L2, 18));
    r.add("ReduceLogSum", 1, |c| reduce_op(c, Red::LogSum, 18));
    r.add("ReduceLogSumExp", 1, |c| reduce_op(c, Red::LogSumExp, 18));
    r.add("ReduceSumSquare", 1, |c| reduce_op(c, Red::SumSquare, 18));
    r.add("CumSum", 11, cumsum);
}

/// Finite-difference gradient checks for the differentiable ops of this file, index.rs and
/// resize.rs (f64, through the registry as plans build them).
#[cfg(test)]
mod grad_tests {
    use crate::engine::{Inputs, OpCtx, Registry};
    use crate::onnx::proto::{AttributeProto, NodeProto};
    use tch::{Kind, Tensor};

    enum A {
        I(i64),
        Is(Vec<i64>),
        S(&'static str),
    }

    fn node(op: &str, n_in: usize, attrs: Vec<(&str, A)>) -> NodeProto {
        let attribute = attrs
            .into_iter()
            .map(|(name, a)| {
                let mut p = AttributeProto { name: Some(name.into()), ..Default::default() };
                match a {
                    A::I(i) => p.i = Some(i),
                    A::Is(v) => p.ints = v,
                    A::S(s) => p.s = Some(s.as_bytes().to_vec()),
                }
                p
            })
            .collect();
        NodeProto {
            op_type: Some(op.into()),
            input: (0..n_in).map(|i| format!("i{i}")).collect(),
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        }
    }

    /// Loss = sum(y0 * w); compares d loss / d x0 with central differences at every element.
    fn check(op: &str, opset: i64, attrs: Vec<(&str, A)>, x: Tensor, rest: Vec<Tensor>) {
        let n = node(op, rest.len() + 1, attrs);
        let reg = Registry::standard();
        let build = reg.find("", op, opset).expect("registered");
        let op_ = build(&OpCtx::new(&n, opset)).expect("builds");
        let x = x.to_kind(Kind::Double).set_requires_grad(true);
        let loss = |x: &Tensor| {
            let mut vals = vec![Some(x)];
            vals.extend(rest.iter().map(Some));
            let y = op_.run(&Inputs { node: &n, vals }).expect("runs").remove(0);
            let w = Tensor::arange(y.numel() as i64, (Kind::Double, y.device())).reshape(y.size()).sin();
            (y * w).sum(Kind::Double)
        };
        let g = Tensor::run_backward(&[loss(&x)], &[&x], false, false).remove(0);
        let (xv, gv) =
            (Vec::<f64>::try_from(&x.detach().reshape([-1])).unwrap(), Vec::<f64>::try_from(&g.reshape([-1])).unwrap());
        let _ng = tch::no_grad_guard();
        for i in 0..xv.len() {
            let f = |d: f64| {
                let mut v = xv.clone();
                v[i] += d;
                loss(&Tensor::from_slice(&v).reshape(x.size())).double_value(&[])
            };
            let fd = (f(1e-6) - f(-1e-6)) / 2e-6;
            assert!(
                (fd - gv[i]).abs() <= 1e-5 + 1e-5 * fd.abs(),
                "{op}: element {i}: autograd {}, numeric {fd}",
                gv[i]
            );
        }
    }

    fn x(shape: &[i64]) -> Tensor {
        // Distinct values (no ties, so max/min/sort are differentiable at the point).
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Double, tch::Device::Cpu)) * 0.37 + 0.5).sin().reshape(shape) + 1.5
    }

    fn i64s(v: &[i64], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).reshape(shape)
    }

    #[test]
    fn reductions() {
        for op in ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2"] {
            check(op, 18, vec![("keepdims", A::I(0))], x(&[2, 3, 4]), vec![i64s(&[0, -1], &[2])]);
        }
        for op in ["ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"] {
            check(op, 13, vec![("axes", A::Is(vec![1]))], x(&[2, 3, 4]), vec![]);
        }
        check("CumSum", 14, vec![("exclusive", A::I(1)), ("reverse", A::I(1))], x(&[3, 4]), vec![i64s(&[1], &[])]);
    }

    #[test]
    fn indexing() {
        check("Gather", 13, vec![("axis", A::I(1))], x(&[2, 3, 4]), vec![i64s(&[2, -1, 0, 2], &[2, 2])]);
        check("GatherElements", 13, vec![("axis", A::I(0))], x(&[3, 2]), vec![i64s(&[2, 0, -1, 1], &[2, 2])]);
        check("GatherND", 13, vec![("batch_dims", A::I(1))], x(&[2, 3, 4]), vec![i64s(&[1, 2, 0, -1], &[2, 2, 1])]);
        let upd = x(&[1, 2]) * 3.0;
        for red in ["none", "add", "mul", "max", "min"] {
            check(
                "ScatterElements",
                18,
                vec![("axis", A::I(1)), ("reduction", A::S(red))],
                x(&[2, 4]),
                vec![i64s(&[1, -1], &[1, 2]), upd.shallow_clone()],
            );
        }
        for red in ["none", "add", "mul"] {
            check(
                "ScatterND",
                18,
                vec![("reduction", A::S(red))],
                x(&[3, 2]),
                vec![i64s(&[2, 0], &[2, 1]), x(&[2, 2])],
            );
        }
        check("TopK", 11, vec![("axis", A::I(-1)), ("largest", A::I(0))], x(&[3, 5]), vec![i64s(&[2], &[1])]);
    }

    #[test]
    fn resize() {
        let f32s = |v: &[f32]| Tensor::from_slice(v);
        let roi = f32s(&[0.0, 0.0, 0.1, 0.2, 1.0, 1.0, 0.9, 1.1]);
        // Tap kernel (fractional scales, exclude_outside, crop box) and torch's kernels (whole
        // factors, half-pixel linear and cubic).
        for (mode, coord, excl, scales) in [
            ("nearest", "half_pixel", 0, [1.0, 1.0, 1.7, 0.6]),
            ("linear", "align_corners", 0, [1.0, 1.0, 1.7, 0.6]),
            ("cubic", "half_pixel", 1, [1.0, 1.0, 1.7, 0.6]),
            ("linear", "tf_crop_and_resize", 0, [1.0, 1.0, 1.7, 0.6]),
            ("nearest", "asymmetric", 0, [1.0, 1.0, 2.0, 3.0]),
            ("linear", "half_pixel", 0, [1.0, 1.0, 1.7, 0.6]),
            ("cubic", "pytorch_half_pixel", 0, [1.0, 1.0, 2.0, 0.6]),
        ] {
            let attrs = vec![
                ("mode", A::S(mode)),
                ("coordinate_transformation_mode", A::S(coord)),
                ("exclude_outside", A::I(excl)),
            ];
            check("Resize", 19, attrs, x(&[1, 2, 3, 5]), vec![roi.shallow_clone(), f32s(&scales)]);
        }
        let empty = || Tensor::zeros([0], (Kind::Float, tch::Device::Cpu));
        let attrs = vec![("mode", A::S("linear")), ("antialias", A::I(1)), ("axes", A::Is(vec![2, 3]))];
        check("Resize", 19, attrs, x(&[1, 1, 5, 7]), vec![empty(), empty(), i64s(&[2, 3], &[2])]);
    }
}

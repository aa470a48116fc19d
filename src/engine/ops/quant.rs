//! Linear quantization: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked
//! scales), DynamicQuantizeLinear, QLinearMatMul and QLinearConv. Integer arithmetic runs exactly
//! in f64. 4-/2-bit integers live widened in Int8/Uint8, so the zero point's declared type (or
//! `output_dtype`) says which range to saturate to; float8/float4 targets round as Cast does.
//! DequantizeLinear stays differentiable in its scale.
use super::cast::cast_tensor;
use super::conv::{channel_view, torch_pads, Window};
use super::util::norm_axis;
use crate::engine::convert::{computable, dtype_of, kind_of};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::dtype::E8m0Round;
use crate::onnx::proto::NodeProto;
use crate::onnx::{DType, NodeExt};
use tch::{Kind, Tensor};

/// An integer quantized type: the libtorch kind holding it and its saturation range (int4/int2
/// are stored widened in Int8/Uint8, uint16 in Int).
#[derive(Clone, Copy, PartialEq, Debug)]
struct QType {
    kind: Kind,
    lo: f64,
    hi: f64,
}

/// What QuantizeLinear produces: an integer type saturated to its range, or a float8/float4 type
/// reached through Cast's rounding (and `saturate` for float8).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Target {
    Int(QType),
    Float(DType),
}

const U8: Target = Target::Int(QType { kind: Kind::Uint8, lo: 0.0, hi: 255.0 });

fn target_of(d: DType) -> Option<Target> {
    let int = |kind, lo, hi| Target::Int(QType { kind, lo, hi });
    Some(match d {
        DType::U8 => U8,
        DType::I8 => int(Kind::Int8, -128.0, 127.0),
        DType::U16 => int(Kind::Int, 0.0, 65535.0),
        DType::I16 => int(Kind::Int16, -32768.0, 32767.0),
        DType::U4 => int(Kind::Uint8, 0.0, 15.0),
        DType::I4 => int(Kind::Int8, -8.0, 7.0),
        DType::U2 => int(Kind::Uint8, 0.0, 3.0),
        DType::I2 => int(Kind::Int8, -2.0, 1.0),
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ | DType::F4E2M1 => Target::Float(d),
        _ => return None,
    })
}

/// The type of an engine tensor when the graph does not declare it (int32 is the engine's uint16).
fn target_of_kind(x: &Inputs, k: Kind) -> Result<Target> {
    let d = match k {
        Kind::Int => DType::U16,
        k => dtype_of(k)?,
    };
    target_of(d).ok_or_else(|| x.err(format!("zero point of kind {k:?} is not a supported quantized type")))
}

/// `output_dtype` (opset 21+): absent or 0 means "from the zero point".
fn output_target(node: &NodeProto) -> Result<Option<Target>> {
    match node.get_i("output_dtype")?.unwrap_or(0) {
        0 => Ok(None),
        c => i32::try_from(c)
            .ok()
            .and_then(|c| DType::from_onnx(c).ok())
            .and_then(target_of)
            .map(Some)
            .ok_or_else(|| node.attr_err("output_dtype", format!("type {c} is not a quantized type"))),
    }
}

/// Scale and zero-point layout: per tensor (one value), per axis (1-D along `axis`) or blocked
/// (`block` > 0: the input's shape with `axis` divided by the block size, rounded up).
#[derive(Clone, Copy)]
struct Layout {
    axis: i64,
    block: i64,
}

impl Layout {
    fn parse(node: &NodeProto) -> Result<Self> {
        let block = node.get_i("block_size")?.unwrap_or(0);
        if block < 0 {
            return Err(node.attr_err("block_size", format!("must be >= 0, got {block}")));
        }
        Ok(Layout { axis: node.get_i("axis")?.unwrap_or(1), block })
    }

    /// `v` (a scale or zero point) reshaped or repeated to broadcast against `shape`.
    fn spread(&self, x: &Inputs, v: &Tensor, shape: &[i64]) -> Result<Tensor> {
        if v.numel() > 1 {
            norm_axis(x, self.axis, shape.len())?;
        }
        spread_param(v, self.axis, self.block, shape).map_err(|e| x.err(e))
    }
}

/// A scale or zero point `v` of DequantizeLinear's layout (one value, per `axis`, or blocks of
/// `block` along `axis`) reshaped or repeated to broadcast against `shape`.
pub fn spread_param(v: &Tensor, axis: i64, block: i64, shape: &[i64]) -> std::result::Result<Tensor, String> {
    let torch = |e: tch::TchError| e.to_string();
    if v.numel() == 1 {
        return v.f_reshape([] as [i64; 0]).map_err(torch);
    }
    let r = shape.len() as i64;
    if !(-r..r).contains(&axis) {
        return Err(format!("axis {axis} is out of range for rank {r}"));
    }
    let a = axis.rem_euclid(r) as usize;
    let vs = v.size();
    if block == 0 {
        if vs != [shape[a]] {
            return Err(format!("per-axis scale {vs:?} must have {} values (axis {a})", shape[a]));
        }
        let mut dims = vec![1; shape.len()];
        dims[a] = -1;
        return v.f_reshape(dims).map_err(torch);
    }
    let fits = vs.len() == shape.len()
        && (0..vs.len()).all(|i| if i == a { vs[i] == (shape[i] + block - 1) / block } else { vs[i] == shape[i] });
    if !fits {
        return Err(format!("blocked scale {vs:?} does not fit input {shape:?} (axis {a}, block {block})"));
    }
    v.f_repeat_interleave_self_int(block, a as i64, None).and_then(|t| t.f_narrow(a as i64, 0, shape[a])).map_err(torch)
}

/// The saturation range of an integer quantized type.
pub fn int_range(d: DType) -> Option<(f64, f64)> {
    match target_of(d)? {
        Target::Int(q) => Some((q.lo, q.hi)),
        Target::Float(_) => None,
    }
}

/// QuantizeLinear's integers for `v` (in the scale's computing type) before and after saturation
/// to `[lo, hi]`, as f64: `round(v / s) + zp`. `s` and `zp` already broadcast against `v`.
pub fn quantized_values(v: &Tensor, s: &Tensor, zp: Option<&Tensor>, lo: f64, hi: f64) -> Result<(Tensor, Tensor)> {
    let q = v.f_div(s)?.f_round()?.f_to_kind(Kind::Double)?;
    let q = match zp {
        Some(z) => q.f_add(&z.f_to_kind(Kind::Double)?)?,
        None => q,
    };
    let clamped = q.f_clamp(lo, hi)?;
    Ok((q, clamped))
}

/// DequantizeLinear of integers `q` (f64) in computing type `calc`: `(q − zp) · s`.
pub fn dequantized_values(q: &Tensor, s: &Tensor, zp: Option<&Tensor>, calc: Kind) -> Result<Tensor> {
    let mut y = q.f_to_kind(calc)?;
    if let Some(z) = zp {
        y = y.f_sub(&z.f_to_kind(calc)?)?;
    }
    Ok(y.f_mul(s)?)
}

/// Rounds half to even, adds the zero point, saturates and converts to `q`'s kind.
fn saturate(v: &Tensor, zp: Option<&Tensor>, q: QType) -> Result<Tensor> {
    let mut y = v.f_round()?.f_to_kind(Kind::Double)?;
    if let Some(z) = zp {
        y = y.f_add(&z.f_to_kind(Kind::Double)?)?;
    }
    Ok(y.f_clamp(q.lo, q.hi)?.f_to_kind(q.kind)?)
}

/// `v` (already divided by the scale) into `t`: integers round half to even, add the zero
/// point and saturate; float8/float4 add the zero point and round as Cast does.
fn quantize_to(v: &Tensor, zp: Option<&Tensor>, t: Target, sat: bool) -> Result<Tensor> {
    match t {
        Target::Int(q) => saturate(v, zp, q),
        Target::Float(d) => {
            let v = match zp {
                Some(z) => v.f_add(&computable(z)?.f_to_kind(v.kind())?)?,
                None => v.shallow_clone(),
            };
            cast_tensor(&v, d, sat, E8m0Round::Up)
        }
    }
}

fn float_kind(code: i64) -> Option<Kind> {
    match code {
        1 => Some(Kind::Float),
        10 => Some(Kind::Half),
        11 => Some(Kind::Double),
        16 => Some(Kind::BFloat16),
        _ => None,
    }
}

/// y = saturate(round(x / y_scale) + y_zero_point), the type from the zero point, else
/// `output_dtype`, else uint8. The division runs in `precision` when given, else in the scale's
/// type.
fn quantize(ctx: &OpCtx) -> Result<BoxOp> {
    let layout = Layout::parse(ctx.node)?;
    let out = output_target(ctx.node)?;
    // The zero point's declared type wins: int4 and int8 share a storage kind.
    let zp_declared = ctx.input_type(2).and_then(target_of);
    let sat = ctx.node.get_i("saturate")?.unwrap_or(1) != 0;
    let precision = match ctx.node.get_i("precision")?.unwrap_or(0) {
        0 => None,
        c => {
            Some(float_kind(c).ok_or_else(|| ctx.node.attr_err("precision", format!("type {c} is not a float type")))?)
        }
    };
    op(move |x| {
        let (input, scale) = (x.req(0)?, x.req(1)?);
        let shape = input.size();
        let zp = x.get(2).map(|z| layout.spread(x, z, &shape)).transpose()?;
        let t = match (&zp, out) {
            (Some(z), o) => {
                let t = match zp_declared {
                    Some(t) => t,
                    None => o.filter(|o| same_storage(*o, z.kind())).map_or_else(|| target_of_kind(x, z.kind()), Ok)?,
                };
                if o.is_some_and(|o| o != t) {
                    return Err(x.err("output_dtype differs from the zero point's type"));
                }
                t
            }
            (None, o) => o.unwrap_or(U8),
        };
        let kind =
            precision.unwrap_or(if super::elementwise::is_float(scale.kind()) { scale.kind() } else { Kind::Float });
        let scale = layout.spread(x, &scale.f_to_kind(kind)?, &shape)?;
        Ok(vec![quantize_to(&input.f_to_kind(kind)?.f_div(&scale)?, zp.as_ref(), t, sat)?])
    })
}

/// Whether tensors of kind `k` can hold target `t` (an undeclared zero point then takes
/// `output_dtype`'s narrower meaning, e.g. Int8 storage for int4).
fn same_storage(t: Target, k: Kind) -> bool {
    match t {
        Target::Int(q) => q.kind == k,
        Target::Float(d) => kind_of(d).is_ok_and(|s| s == k),
    }
}

/// y = (x - x_zero_point) · x_scale, in f32 (f64 for f64 scales), output in `output_dtype` or
/// the scale's type.
fn dequantize(ctx: &OpCtx) -> Result<BoxOp> {
    let layout = Layout::parse(ctx.node)?;
    let out = match ctx.node.get_i("output_dtype")?.unwrap_or(0) {
        0 => None,
        c => Some(
            float_kind(c).ok_or_else(|| ctx.node.attr_err("output_dtype", format!("type {c} is not a float type")))?,
        ),
    };
    op(move |x| {
        // float8 data computes in float; float4 and int4/int2 arrive already widened.
        let (input, scale) = (computable(x.req(0)?)?, x.req(1)?);
        let shape = input.size();
        let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let mut y = input.f_to_kind(calc)?;
        if let Some(z) = x.get(2) {
            y = y.f_sub(&layout.spread(x, &computable(z)?.f_to_kind(calc)?, &shape)?)?;
        }
        let y = y.f_mul(&layout.spread(x, &scale.f_to_kind(calc)?, &shape)?)?;
        Ok(vec![y.f_to_kind(out.unwrap_or(scale.kind()))?])
    })
}

/// uint8 quantization with the range [min(0, min x), max(0, max x)] mapped onto [0, 255].
fn dynamic_quantize(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let input = x.req(0)?;
        let (lo, hi) = (input.f_min()?.f_clamp_max(0.0)?, input.f_max()?.f_clamp_min(0.0)?);
        let range = hi.f_sub(&lo)?;
        // An all-zero input would give a zero scale: use 1/255 as the reference does.
        let range = range.f_where_scalarother(&range.f_ne(0.0)?, 1.0)?;
        let scale = range.f_div_scalar(255.0)?;
        let zp = lo.f_neg()?.f_div(&scale)?.f_clamp(0.0, 255.0)?.f_round()?;
        let y = quantize_to(&input.f_div(&scale)?, Some(&zp), U8, true)?;
        Ok(vec![y, scale, zp.f_to_kind(Kind::Uint8)?])
    })
}

/// `v - zero_point`, exactly, in f64 (the zero point already shaped to broadcast).
fn centered(v: &Tensor, zp: Option<Tensor>) -> Result<Tensor> {
    let v = v.f_to_kind(Kind::Double)?;
    Ok(match zp {
        Some(z) => v.f_sub(&z.f_to_kind(Kind::Double)?)?,
        None => v,
    })
}

/// A 1-D parameter with one value per row of A becomes a column, to broadcast over A's rows.
fn per_row(t: &Tensor) -> Result<Tensor> {
    Ok(if t.dim() == 1 && t.numel() > 1 { t.f_unsqueeze(-1)? } else { t.shallow_clone() })
}

/// A per-output-channel parameter of W viewed along W's first dim.
fn per_out_channel(t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![-1];
    shape.resize(rank.max(1), 1);
    Ok(if t.numel() > 1 { t.f_reshape(shape)? } else { t.shallow_clone() })
}

/// The requantization: `acc · (a_scale · b_scale / y_scale) + y_zero_point`, saturated to the
/// output zero point's type. The multiplier is formed in the scales' own type, as ONNX does.
fn requantize(x: &Inputs, acc: &Tensor, mult: &Tensor, y_zp: &Tensor) -> Result<Tensor> {
    match target_of_kind(x, y_zp.kind())? {
        Target::Int(q) => saturate(&acc.f_mul(&mult.f_to_kind(Kind::Double)?)?, Some(y_zp), q),
        Target::Float(_) => Err(x.err("float8 outputs are not supported by QLinear ops")),
    }
}

fn qlinear_matmul(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let a = centered(x.req(0)?, x.get(2).map(per_row).transpose()?)?;
        // Per-column parameters of B broadcast along its last dim as they are.
        let b = centered(x.req(3)?, x.get(5).map(Tensor::shallow_clone))?;
        let mult = per_row(x.req(1)?)?.f_mul(x.req(4)?)?.f_div(x.req(6)?)?;
        Ok(vec![requantize(x, &a.f_matmul(&b)?, &mult, x.req(7)?)?])
    })
}

/// Integer convolution (after the zero points) in f64 through the float conv's geometry, plus the
/// int32 bias, then requantized; per-output-channel weight scales and zero points are allowed.
fn qlinear_conv(ctx: &OpCtx) -> Result<BoxOp> {
    let win = Window::parse(ctx.node)?;
    let group = ctx.node.get_i("group")?.unwrap_or(1);
    if group < 1 {
        return Err(ctx.node.attr_err("group", format!("must be >= 1, got {group}")));
    }
    let kshape = ctx.node.get_ints("kernel_shape")?;
    op(move |x| {
        let input = centered(x.req(0)?, x.get(2).map(Tensor::shallow_clone))?;
        let rank = x.req(3)?.dim();
        let w = centered(x.req(3)?, x.get(5).map(|z| per_out_channel(z, rank)).transpose()?)?;
        let (xs, ws) = (input.size(), w.size());
        if xs.len() < 3 || ws.len() != xs.len() {
            return Err(x.err(format!("expected x (N, C, D…) and w of the same rank, got {xs:?} and {ws:?}")));
        }
        let kernel = &ws[2..];
        if kshape.as_ref().is_some_and(|k| k != kernel) {
            return Err(x.err(format!("kernel_shape {kshape:?} does not match w's shape {ws:?}")));
        }
        let g = win.geom(x, &xs[2..], kernel)?;
        let padded = input.f_constant_pad_nd(torch_pads(&g.begin, &g.end))?;
        let zeros = vec![0; kernel.len()];
        let mut acc =
            padded.f_convolution(&w, None::<&Tensor>, &g.strides, &zeros, &g.dilations, false, &zeros, group)?;
        if let Some(b) = x.get(8) {
            acc = acc.f_add(&channel_view(&b.f_to_kind(Kind::Double)?, rank)?)?;
        }
        // A per-output-channel weight scale runs along the output's channel dim.
        let w_scale = x.req(4)?;
        let w_scale = if w_scale.numel() > 1 { channel_view(w_scale, rank)? } else { w_scale.shallow_clone() };
        let mult = x.req(1)?.f_mul(&w_scale)?.f_div(x.req(6)?)?;
        Ok(vec![requantize(x, &acc, &mult, x.req(7)?)?])
    })
}

/// The domain of semu's own ops: they exist only in the working copy of a quantized model that
/// SEMU trains (`semu::quantized`), never in a file semu writes.
pub const SEMU_DOMAIN: &str = "ai.semu";

/// `DequantizeLinear(QuantizeLinear(x))` with the scale and zero point of both, in one op whose
/// gradient passes straight through where x is inside the quantized range (the straight-through
/// estimator), so training can see through rounding. The value is bit-identical to the pair's:
/// the same division, rounding, saturation and multiplication in the same types. Attributes
/// `lo`/`hi`: the quantized type's range; `axis`/`block_size` as in DequantizeLinear; `integer`
/// = 1 gives `q − zp` (f64) instead of the dequantized value.
fn fake_quantize(ctx: &OpCtx) -> Result<BoxOp> {
    let layout = Layout::parse(ctx.node)?;
    let (lo, hi) = (ctx.node.get_i("lo")?.unwrap_or(0) as f64, ctx.node.get_i("hi")?.unwrap_or(255) as f64);
    let integer = ctx.node.get_i("integer")?.unwrap_or(0) != 0;
    op(move |x| {
        let (input, scale) = (x.req(0)?, x.req(1)?);
        let shape = input.size();
        let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let s = layout.spread(x, &scale.f_to_kind(calc)?, &shape)?;
        let zp = x.get(2).map(|z| layout.spread(x, &computable(z)?.f_to_kind(Kind::Double)?, &shape)).transpose()?;
        let v = input.f_to_kind(calc)?;
        let (q, clamped) = quantized_values(&v.f_detach()?, &s, zp.as_ref(), lo, hi)?;
        let inside = q.f_ge(lo)?.f_logical_and(&q.f_le(hi)?)?;
        // + (v − v.detach())·inside: exactly zero in value, the identity's gradient inside the range.
        let ste = v.f_sub(&v.f_detach()?)?.f_mul(&inside.f_to_kind(calc)?)?;
        if integer {
            // q − zp exactly (f64), for an integer op's float twin; the gradient scaled by 1/s.
            let q = match &zp {
                Some(z) => clamped.f_sub(z)?,
                None => clamped,
            };
            return Ok(vec![q.f_add(&ste.f_to_kind(Kind::Double)?.f_div(&s.f_to_kind(Kind::Double)?)?)?]);
        }
        let y = dequantized_values(&clamped, &s, zp.as_ref(), calc)?;
        Ok(vec![y.f_add(&ste)?.f_to_kind(scale.kind())?])
    })
}

pub fn register(r: &mut Registry) {
    r.add_range(SEMU_DOMAIN, "FakeQuantize", 1, i64::MAX, fake_quantize);
    r.add("QuantizeLinear", 10, quantize);
    r.add("DequantizeLinear", 10, dequantize);
    r.add("DynamicQuantizeLinear", 11, dynamic_quantize);
    r.add("QLinearMatMul", 10, qlinear_matmul);
    r.add("QLinearConv", 10, qlinear_conv);
}

#[cfg(test)]
mod tests {
    use crate::engine::{OpCtx, Registry};
    use crate::onnx::build::{attr_int, node};

    /// Types that are not quantized types are refused when the plan is built, naming the code.
    #[test]
    fn non_quantized_output_types_are_refused() {
        let reg = Registry::standard();
        let build = reg.find("", "QuantizeLinear", 21).expect("registered");
        for code in [1, 7, 24, 99] {
            let mut n = node("QuantizeLinear", &["x", "s"], &["y"]);
            n.attribute.push(attr_int("output_dtype", code));
            let err = build(&OpCtx::new(&n, 21)).err().expect("refused").to_string();
            assert!(err.contains(&format!("type {code}")), "{err}");
        }
    }
}

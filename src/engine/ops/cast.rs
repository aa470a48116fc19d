//! Type conversion and pass-through ops: Cast, CastLike, Identity, Dropout (inference).
//!
//! Casts into the narrow types follow ONNX, not libtorch: float8 saturates by default (opset 19
//! `saturate`), float4 rounds to nearest even and saturates, e8m0 rounds as `round_mode` says
//! (opset 24), int4/int2 truncate and wrap. Where those types live is in `engine::convert`.
use super::elementwise::is_float;
use crate::engine::convert::{computable, dtype_of, kind_of};
use crate::engine::{op, vop, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::dtype::E8m0Round;
use crate::onnx::{DType, NodeExt};
use tch::{Kind, Tensor};

/// The attributes that shape casts into float8 and e8m0.
#[derive(Clone, Copy)]
struct Mode {
    saturate: bool,
    round: E8m0Round,
}

fn mode(ctx: &OpCtx) -> Result<Mode> {
    let saturate = ctx.opset < 19 || ctx.node.get_i("saturate")?.unwrap_or(1) != 0;
    let round = match ctx.node.get_s("round_mode")? {
        Some(s) if ctx.opset >= 24 => E8m0Round::parse(&s)
            .ok_or_else(|| ctx.node.attr_err("round_mode", format!("'{s}' is not one of up, down, nearest")))?,
        _ => E8m0Round::Up,
    };
    Ok(Mode { saturate, round })
}

/// Converts to the libtorch kind holding `to`. Unsigned types libtorch lacks live widened
/// (u16 in i32, u32 in i64), so casts into them wrap to the narrow range like a real cast would.
fn cast_to(x: &Tensor, to: DType, m: Mode) -> Result<Tensor> {
    let x = computable(x)?;
    match to {
        DType::F8E4M3FN | DType::F8E4M3FNUZ | DType::F8E5M2 | DType::F8E5M2FNUZ => to_float8(&x, to, m.saturate),
        DType::I4 | DType::U4 => wrap_int(&x, 4, to == DType::I4),
        DType::I2 | DType::U2 => wrap_int(&x, 2, to == DType::I2),
        DType::F4E2M1 => to_float4(&x),
        DType::F8E8M0 => to_e8m0(&x, m),
        _ => {
            let kind = kind_of(to)?;
            let y = if x.kind() == kind { x } else { x.f_to_kind(kind)? };
            Ok(match to {
                DType::U16 => y.f_bitwise_and(0xFFFF_i64)?,
                DType::U32 => y.f_bitwise_and(0xFFFF_FFFF_i64)?,
                _ => y,
            })
        }
    }
}

/// Cast's conversion for other ops (e.g. QuantizeLinear into float8/float4/int4): `x` into the
/// libtorch storage of `to`, with float8 `saturate` and e8m0 `round` as Cast's attributes say.
pub fn cast_tensor(x: &Tensor, to: DType, saturate: bool, round: E8m0Round) -> Result<Tensor> {
    cast_to(x, to, Mode { saturate, round })
}

/// The largest finite value of a float8 type.
fn float8_max(d: DType) -> f64 {
    match d {
        DType::F8E4M3FN => 448.0,
        DType::F8E4M3FNUZ => 240.0,
        _ => 57344.0, // both e5m2 types
    }
}

/// libtorch rounds to nearest even and maps overflow and ±Inf to NaN (Inf for e5m2), which is
/// the spec's `saturate=0` table; saturating clamps first, so Inf and overflow give ±max.
fn to_float8(x: &Tensor, to: DType, saturate: bool) -> Result<Tensor> {
    let x = if is_float(x.kind()) { x.shallow_clone() } else { x.f_to_kind(Kind::Float)? };
    let x = if saturate { x.f_clamp(-float8_max(to), float8_max(to))? } else { x };
    Ok(x.f_to_kind(kind_of(to)?)?)
}

/// Half, bfloat16 and integers compute in float32; double stays double.
fn float_of(x: &Tensor) -> Result<Tensor> {
    Ok(if x.kind() == Kind::Double { x.shallow_clone() } else { x.f_to_kind(Kind::Float)? })
}

/// Into a `bits`-wide integer (stored in Int8/Uint8): floats truncate toward zero, then every
/// value keeps its low bits (two's complement), as ONNX's reference does. NaN and ±Inf give 0.
fn wrap_int(x: &Tensor, bits: u32, signed: bool) -> Result<Tensor> {
    let modulus = 1i64 << bits;
    let v = if is_float(x.kind()) {
        // fmod is exact, so huge floats wrap like their integer value would.
        let r = float_of(x)?.f_trunc()?.f_fmod(modulus)?;
        r.f_nan_to_num(0.0, None, None)?.f_to_kind(Kind::Int64)?
    } else {
        x.f_to_kind(Kind::Int64)?
    };
    let low = v.f_bitwise_and(modulus - 1)?;
    Ok(if signed {
        let half = modulus / 2;
        low.f_bitwise_xor(half)?.f_sub_scalar(half)?.f_to_kind(Kind::Int8)?
    } else {
        low.f_to_kind(Kind::Uint8)?
    })
}

/// Into FLOAT4E2M1 values (stored as float32): |x| saturates at 6, then rounds to nearest even
/// on the type's grid, which is spaced 0.5 below 2, 1 below 4 and 2 up to 6. NaN becomes 0.
/// The gradient passes straight through inside ±6 (zero outside), as libtorch gives float8 casts
/// after the saturating clamp, so training through a float4 cast is not cut off.
fn to_float4(x: &Tensor) -> Result<Tensor> {
    let f = float_of(x)?;
    let d = f.f_detach()?;
    let a = d.f_abs()?.f_clamp(0.0, 6.0)?;
    let step = |t: f64| a.f_ge(t).and_then(|b| b.f_to_kind(a.kind()));
    let spacing = step(2.0)?.f_mul_scalar(0.5)?.f_add(&step(4.0)?)?.f_add_scalar(0.5)?;
    let q = a.f_div(&spacing)?.f_round()?.f_mul(&spacing)?.f_nan_to_num(0.0, None, None)?.f_copysign(&d)?;
    let q = if f.requires_grad() {
        // Adds exactly zero in value (the clamp is finite), so only the gradient changes.
        let c = f.f_nan_to_num(0.0, None, None)?.f_clamp(-6.0, 6.0)?;
        q.f_add(&c.f_sub(&c.f_detach()?)?)?
    } else {
        q
    };
    Ok(q.f_to_kind(Kind::Float)?)
}

/// Into FLOAT8E8M0 values (stored as float32), bit for bit like `onnx.numpy_helper.to_float8e8m0`
/// on finite values: the float32 exponent, bumped by one when `round_mode` says so (never past
/// the largest code when saturating). NaN → NaN; Inf → the largest value, or NaN without
/// saturation (the spec's table). The sign is ignored (negative inputs are unspecified). Works on
/// the float32 bits, so no gradient flows (a scale's exponent has no useful one).
fn to_e8m0(x: &Tensor, m: Mode) -> Result<Tensor> {
    let f = x.f_detach()?.f_to_kind(Kind::Float)?;
    let bits = f.f_view_dtype(Kind::Int)?.f_to_kind(Kind::Int64)?.f_bitwise_and(0xFFFF_FFFF_i64)?;
    let e = bits.f_bitwise_right_shift_tensor_scalar(23)?.f_bitwise_and(0xFF)?;
    let has = |mask: i64| bits.f_bitwise_and(mask).and_then(|b| b.f_ne(0));
    let up = match m.round {
        E8m0Round::Up => has(0x7F_FFFF)?,
        E8m0Round::Down => e.f_zeros_like()?.f_to_kind(Kind::Bool)?,
        E8m0Round::Nearest => has(0x40_0000)?.f_logical_and(&has(0x3F_FFFF)?.f_logical_or(&e.f_gt(0)?)?)?,
    };
    let special = e.f_eq(0xFF)?;
    let mut up = up.f_logical_and(&special.f_logical_not()?)?;
    if m.saturate {
        up = up.f_logical_and(&e.f_ne(0xFE)?)?;
    }
    let code = e.f_add(&up.f_to_kind(Kind::Int64)?)?;
    // NaN keeps code 255; Inf takes 254 when saturating.
    let inf = f.f_isinf()?.f_to_kind(Kind::Int64)?.f_mul_scalar(i64::from(m.saturate))?;
    let code = inf.f_neg()?.f_add_scalar(0xFF)?.f_where_self(&special, &code)?;
    // Value bits: code << 23, plus bit 22 for code 0 (2^-127, subnormal) and 255 (a quiet NaN).
    let edge = code.f_eq(0)?.f_logical_or(&code.f_eq(0xFF)?)?.f_to_kind(Kind::Int64)?;
    let vbits = code.f_mul_scalar(1i64 << 23)?.f_add(&edge.f_mul_scalar(1i64 << 22)?)?;
    Ok(vbits.f_to_kind(Kind::Int)?.f_view_dtype(Kind::Float)?)
}

/// The `to` attribute: a `DataType` code, or (opsets < 6) the type's name.
fn target(ctx: &OpCtx) -> Result<DType> {
    let code = if ctx.opset < 6 {
        let name = ctx.node.get_s("to")?.ok_or_else(|| ctx.node.attr_err("to", "required attribute is missing"))?;
        let names = ["FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL", "FLOAT16"];
        let more = ["DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"];
        let pos = names.iter().chain(&more).position(|n| n.eq_ignore_ascii_case(&name));
        pos.map(|p| p as i64 + 1).ok_or_else(|| ctx.node.attr_err("to", format!("unknown type name '{name}'")))?
    } else {
        ctx.node.req_i("to")?
    };
    i32::try_from(code)
        .ok()
        .and_then(|c| DType::from_onnx(c).ok())
        .ok_or_else(|| ctx.node.attr_err("to", format!("unknown ONNX data type {code}")))
}

fn cast(ctx: &OpCtx) -> Result<BoxOp> {
    let to = target(ctx)?;
    if kind_of(to).is_err() || matches!(to, DType::C64 | DType::C128) {
        return Err(ctx.node.attr_err("to", format!("casting to {to} is not supported")));
    }
    let m = mode(ctx)?;
    op(move |x| Ok(vec![cast_to(x.req(0)?, to, m)?]))
}

/// CastLike(input, target_type): the target's element type, its values unused. Only the
/// target's libtorch kind is known here, so a target stored widened (int4 in Int8, float4 in
/// Float…) casts to the wider type; float8 targets get the full float8 rules.
fn cast_like(ctx: &OpCtx) -> Result<BoxOp> {
    let m = mode(ctx)?;
    // The declared type tells an int4 `like` from an int8 one (both are stored as Int8).
    let declared = ctx.input_type(1).filter(|d| d.is_narrow());
    op(move |x| {
        let (t, like) = (x.req(0)?, x.req(1)?);
        let to = match declared {
            Some(d) => d,
            None => dtype_of(like.kind())?,
        };
        Ok(vec![cast_to(t, to, m)?])
    })
}

/// Identity passes any value through: tensors, sequences, optionals, strings.
fn identity(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| Ok(vec![x.req(0)?.shallow_clone()]))
}

/// Inference-mode Dropout: the output is the input, the optional mask all true (bool from
/// opset 10, the input's type before). Training mode (with a non-zero ratio) would need randomness
/// the engine does not model, so it is refused: `is_test=0` (opsets < 7) or a true `training_mode`.
fn dropout(ctx: &OpCtx) -> Result<BoxOp> {
    if ctx.opset < 7 && ctx.node.get_i("is_test")?.unwrap_or(0) == 0 {
        return Err(ctx.node.attr_err("is_test", "training-mode Dropout (is_test=0) is unsupported"));
    }
    let bool_mask = ctx.opset >= 10;
    op(move |x| {
        let data = x.req(0)?;
        // Training with ratio 0 drops nothing, so it is the identity too.
        let training = x.scalar(2)?.is_some_and(|t| t != 0.0);
        if training && x.scalar(1)?.unwrap_or(0.5) != 0.0 {
            return Err(x.err("training-mode Dropout (training_mode=true) is unsupported"));
        }
        let mut outs = vec![data.shallow_clone()];
        if x.node.output.len() > 1 {
            let kind = if bool_mask { Kind::Bool } else { data.kind() };
            outs.push(data.f_ones_like()?.f_to_kind(kind)?);
        }
        Ok(outs)
    })
}

pub fn register(r: &mut Registry) {
    r.add("Cast", 1, cast);
    r.add("CastLike", 15, cast_like);
    r.add("Identity", 1, identity);
    r.add("Dropout", 1, dropout);
}

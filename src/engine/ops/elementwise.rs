//! Element-wise unary and binary math (numpy broadcasting, as libtorch does it), and the variadic
//! Sum/Mean/Max/Min.
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, TchError, Tensor};

pub type Unary = fn(&Tensor) -> Result<Tensor, TchError>;
pub type Binary = fn(&Tensor, &Tensor) -> Result<Tensor, TchError>;

pub fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

pub fn unary(f: Unary) -> Result<BoxOp> {
    op(move |x| Ok(vec![f(x.req(0)?)?]))
}

/// Opsets before 7 broadcast B onto A only with `broadcast=1`, aligning B's dims at `axis` (or at
/// the end without it). Returns that axis when B must be realigned.
fn legacy_axis(ctx: &OpCtx) -> Result<Option<i64>> {
    if ctx.opset >= 7 || ctx.node.get_i("broadcast")?.unwrap_or(0) == 0 {
        return Ok(None);
    }
    ctx.node.get_i("axis")
}

/// Reshapes B so that numpy broadcasting aligns its first dim with A's `axis`.
fn align_at(x: &Inputs, a: &Tensor, b: &Tensor, axis: i64) -> Result<Tensor> {
    let (ra, rb) = (a.dim() as i64, b.dim() as i64);
    let axis = if axis < 0 { axis + ra } else { axis };
    let trail = ra - axis - rb;
    if axis < 0 || trail < 0 {
        return Err(x.err(format!("legacy broadcast axis {axis} does not fit ranks {ra} and {rb}")));
    }
    let mut shape = b.size();
    shape.extend(std::iter::repeat_n(1, trail as usize));
    Ok(b.f_reshape(&shape)?)
}

/// A binary op with numpy broadcasting, also honouring the pre-opset-7 `broadcast`/`axis` form.
pub fn binary(ctx: &OpCtx, f: Binary) -> Result<BoxOp> {
    let axis = legacy_axis(ctx)?;
    op(move |x| {
        let (a, b) = (x.req(0)?, x.req(1)?);
        Ok(vec![match axis {
            Some(ax) => f(a, &align_at(x, a, b, ax)?)?,
            None => f(a, b)?,
        }])
    })
}

/// ONNX integer Div truncates toward zero; torch's plain div would return floats.
fn div(a: &Tensor, b: &Tensor) -> Result<Tensor, TchError> {
    if is_float(a.kind()) {
        a.f_div(b)
    } else {
        a.f_div_tensor_mode(b, "trunc")
    }
}

/// Pow keeps the base's type whatever the exponent's type is.
fn pow(a: &Tensor, b: &Tensor) -> Result<Tensor, TchError> {
    let y = a.f_pow(b)?;
    if y.kind() == a.kind() {
        Ok(y)
    } else {
        y.f_to_kind(a.kind())
    }
}

/// fmod=1: sign of the dividend (C fmod); fmod=0: sign of the divisor (Python %).
fn modulo(ctx: &OpCtx) -> Result<BoxOp> {
    match ctx.node.get_i("fmod")?.unwrap_or(0) {
        0 => binary(ctx, Tensor::f_remainder_tensor),
        1 => binary(ctx, Tensor::f_fmod_tensor),
        v => Err(ctx.node.attr_err("fmod", format!("must be 0 or 1, got {v}"))),
    }
}

fn bitshift(ctx: &OpCtx) -> Result<BoxOp> {
    match ctx.node.get_s("direction")?.as_deref() {
        Some("LEFT") => binary(ctx, Tensor::f_bitwise_left_shift),
        Some("RIGHT") => binary(ctx, Tensor::f_bitwise_right_shift),
        Some(d) => Err(ctx.node.attr_err("direction", format!("must be LEFT or RIGHT, got '{d}'"))),
        None => Err(ctx.node.attr_err("direction", "required attribute is missing")),
    }
}

/// Folds 1..n inputs pairwise with broadcasting.
fn fold(x: &Inputs, f: Binary) -> Result<Tensor> {
    let all = x.all();
    let (first, rest) = all.split_first().ok_or_else(|| x.err("needs at least one input"))?;
    let mut acc = first.shallow_clone();
    for t in rest {
        acc = f(&acc, t)?;
    }
    Ok(acc)
}

fn variadic(f: Binary) -> Result<BoxOp> {
    op(move |x| Ok(vec![fold(x, f)?]))
}

fn mean(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let n = x.all().len() as f64;
        Ok(vec![fold(x, Tensor::f_add)?.f_div_scalar(n)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Abs", 1, |_| unary(Tensor::f_abs));
    r.add("Neg", 1, |_| unary(Tensor::f_neg));
    r.add("Exp", 1, |_| unary(Tensor::f_exp));
    r.add("Log", 1, |_| unary(Tensor::f_log));
    r.add("Sqrt", 1, |_| unary(Tensor::f_sqrt));
    r.add("Reciprocal", 1, |_| unary(Tensor::f_reciprocal));
    r.add("Floor", 1, |_| unary(Tensor::f_floor));
    r.add("Ceil", 1, |_| unary(Tensor::f_ceil));
    // torch.round rounds halves to even, as ONNX asks.
    r.add("Round", 11, |_| unary(Tensor::f_round));
    r.add("Sign", 9, |_| unary(Tensor::f_sign));
    r.add("Sin", 7, |_| unary(Tensor::f_sin));
    r.add("Cos", 7, |_| unary(Tensor::f_cos));
    r.add("Tan", 7, |_| unary(Tensor::f_tan));
    r.add("Asin", 7, |_| unary(Tensor::f_asin));
    r.add("Acos", 7, |_| unary(Tensor::f_acos));
    r.add("Atan", 7, |_| unary(Tensor::f_atan));
    r.add("Sinh", 9, |_| unary(Tensor::f_sinh));
    r.add("Cosh", 9, |_| unary(Tensor::f_cosh));
    r.add("Tanh", 1, |_| unary(Tensor::f_tanh));
    r.add("Asinh", 9, |_| unary(Tensor::f_asinh));
    r.add("Acosh", 9, |_| unary(Tensor::f_acosh));
    r.add("Atanh", 9, |_| unary(Tensor::f_atanh));
    r.add("Erf", 9, |_| unary(Tensor::f_erf));

    r.add("Add", 1, |c| binary(c, Tensor::f_add));
    r.add("Sub", 1, |c| binary(c, Tensor::f_sub));
    r.add("Mul", 1, |c| binary(c, Tensor::f_mul));
    r.add("Div", 1, |c| binary(c, div));
    r.add("Pow", 1, |c| binary(c, pow));
    r.add("Mod", 10, modulo);
    r.add("BitShift", 11, bitshift);

    r.add("Sum", 1, |_| variadic(Tensor::f_add));
    r.add("Max", 1, |_| variadic(Tensor::f_maximum));
    r.add("Min", 1, |_| variadic(Tensor::f_minimum));
    r.add("Mean", 1, mean);
}

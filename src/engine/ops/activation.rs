//! Activation functions (Relu, Sigmoid, Gelu, LeakyRelu, Elu, Selu, HardSwish, PRelu, Clip…).
//! Parametrised ones are composed from torch primitives so they stay differentiable; branches
//! that exponentiate only see clamped inputs, so the unused side of a `where` never yields
//! inf (whose zero gradient would turn into NaN).
use super::elementwise::unary;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::Tensor;

/// A float attribute with its spec default.
fn attr_f(ctx: &OpCtx, name: &str, default: f32) -> Result<f64> {
    Ok(ctx.node.get_f(name)?.unwrap_or(default) as f64)
}

/// `expm1(min(x, 0) / scale)`: the negative branch of Elu/Selu/Celu.
fn neg_expm1(x: &Tensor, scale: f64) -> Result<Tensor> {
    Ok(x.f_clamp_max(0.0)?.f_div_scalar(scale)?.f_expm1()?)
}

fn leaky_relu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 0.01)?;
    op(move |x| {
        let x = x.req(0)?;
        Ok(vec![x.f_where_self(&x.f_ge(0.0)?, &x.f_mul_scalar(alpha)?)?])
    })
}

fn elu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 1.0)?;
    op(move |x| {
        let x = x.req(0)?;
        Ok(vec![x.f_where_self(&x.f_gt(0.0)?, &neg_expm1(x, 1.0)?.f_mul_scalar(alpha)?)?])
    })
}

fn selu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 1.673_263_2)?;
    let gamma = attr_f(ctx, "gamma", 1.050_701)?;
    op(move |x| {
        let x = x.req(0)?;
        let y = x.f_where_self(&x.f_gt(0.0)?, &neg_expm1(x, 1.0)?.f_mul_scalar(alpha)?)?;
        Ok(vec![y.f_mul_scalar(gamma)?])
    })
}

/// max(0, x) + min(0, alpha * (exp(x / alpha) - 1)).
fn celu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 1.0)?;
    op(move |x| {
        let x = x.req(0)?;
        Ok(vec![x.f_relu()?.f_add(&neg_expm1(x, alpha)?.f_mul_scalar(alpha)?)?])
    })
}

fn thresholded_relu(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 1.0)?;
    op(move |x| {
        let x = x.req(0)?;
        Ok(vec![x.f_where_self(&x.f_gt(alpha)?, &x.f_zeros_like()?)?])
    })
}

/// max(0, min(1, alpha * x + beta)).
fn hard_sigmoid(ctx: &OpCtx) -> Result<BoxOp> {
    let alpha = attr_f(ctx, "alpha", 0.2)?;
    let beta = attr_f(ctx, "beta", 0.5)?;
    op(move |x| Ok(vec![x.req(0)?.f_mul_scalar(alpha)?.f_add_scalar(beta)?.f_clamp(0.0, 1.0)?]))
}

/// Slope broadcasts onto X (numpy style); opsets before 7 also allowed a per-channel [C] slope.
fn prelu(ctx: &OpCtx) -> Result<BoxOp> {
    let legacy = ctx.opset < 7;
    op(move |i| {
        let (x, mut slope) = (i.req(0)?, i.req(1)?.shallow_clone());
        if legacy && slope.dim() == 1 && x.dim() > 2 && slope.size()[0] == x.size()[1] && slope.size()[0] > 1 {
            let mut shape = vec![-1];
            shape.extend(std::iter::repeat_n(1, x.dim() - 2));
            slope = slope.f_reshape(&shape)?;
        }
        Ok(vec![x.f_where_self(&x.f_ge(0.0)?, &x.f_mul(&slope)?)?])
    })
}

fn softsign(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let x = x.req(0)?;
        Ok(vec![x.f_div(&x.f_abs()?.f_add_scalar(1.0)?)?])
    })
}

fn gelu(ctx: &OpCtx) -> Result<BoxOp> {
    let approx = ctx.node.get_s("approximate")?.unwrap_or_else(|| "none".into());
    if approx != "none" && approx != "tanh" {
        return Err(ctx.node.attr_err("approximate", format!("must be 'none' or 'tanh', got '{approx}'")));
    }
    op(move |x| Ok(vec![x.req(0)?.f_gelu(&approx)?]))
}

/// x + bias below -lambd, x - bias above lambd, 0 between; keeps X's type.
fn shrink(ctx: &OpCtx) -> Result<BoxOp> {
    let bias = attr_f(ctx, "bias", 0.0)?;
    let lambd = attr_f(ctx, "lambd", 0.5)?;
    op(move |x| {
        let t = x.req(0)?;
        if t.kind() == tch::Kind::Bool {
            return Err(x.err("Shrink takes numbers, not bool"));
        }
        let x = t;
        let zero = x.f_zeros_like()?;
        let hi = x.f_sub_scalar(bias)?.f_where_self(&x.f_gt(lambd)?, &zero)?;
        let y = x.f_add_scalar(bias)?.f_where_self(&x.f_lt(-lambd)?, &hi)?;
        Ok(vec![if y.kind() == x.kind() { y } else { y.f_to_kind(x.kind())? }])
    })
}

/// Opsets before 11: float attributes `min`/`max`.
fn clip_attrs(ctx: &OpCtx) -> Result<BoxOp> {
    let lo = ctx.node.get_f("min")?.map(f64::from);
    let hi = ctx.node.get_f("max")?.map(f64::from);
    op(move |x| {
        let mut y = x.req(0)?.shallow_clone();
        if let Some(lo) = lo {
            y = y.f_clamp_min(lo)?;
        }
        if let Some(hi) = hi {
            y = y.f_clamp_max(hi)?;
        }
        Ok(vec![y])
    })
}

/// Opset 11 on: optional scalar inputs `min`/`max` of X's type. Clamping min first, then max,
/// gives `max` everywhere when min > max, as the spec asks.
fn clip_inputs(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let mut y = x.req(0)?.shallow_clone();
        if let Some(lo) = x.get(1) {
            y = y.f_clamp_min_tensor(&lo.f_reshape([] as [i64; 0])?)?;
        }
        if let Some(hi) = x.get(2) {
            y = y.f_clamp_max_tensor(&hi.f_reshape([] as [i64; 0])?)?;
        }
        Ok(vec![y])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Relu", 1, |_| unary(Tensor::f_relu));
    r.add("Sigmoid", 1, |_| unary(Tensor::f_sigmoid));
    r.add("HardSigmoid", 1, hard_sigmoid);
    // torch's hardswish is x * relu6(x + 3) / 6, ONNX's alpha = 1/6, beta = 0.5.
    r.add("HardSwish", 14, |_| unary(Tensor::f_hardswish));
    r.add("LeakyRelu", 1, leaky_relu);
    r.add("Elu", 1, elu);
    r.add("Selu", 1, selu);
    r.add("Celu", 12, celu);
    r.add("ThresholdedRelu", 10, thresholded_relu);
    r.add("PRelu", 1, prelu);
    r.add("Softplus", 1, |_| unary(Tensor::f_softplus));
    r.add("Softsign", 1, softsign);
    r.add("Gelu", 20, gelu);
    r.add("Mish", 18, |_| unary(Tensor::f_mish));
    r.add("Shrink", 9, shrink);
    r.add_range("", "Clip", 1, 10, clip_attrs);
    r.add("Clip", 11, clip_inputs);
}

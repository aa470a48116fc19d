//! Optimizer steps of the `ai.onnx.preview.training` domain: Adagrad, Momentum, Adam. Inputs are
//! `R` (learning rate), `T` (step count), then n tensors of each group (X, G, and the states).
use crate::engine::registry::{op, BoxOp, OpCtx, Registry};
use crate::engine::Inputs;
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::Tensor;

const DOMAIN: &str = "ai.onnx.preview.training";

pub fn register(r: &mut Registry) {
    r.add_range(DOMAIN, "Adagrad", 1, i64::MAX, adagrad);
    r.add_range(DOMAIN, "Momentum", 1, i64::MAX, momentum);
    r.add_range(DOMAIN, "Adam", 1, i64::MAX, adam);
}

fn attr(ctx: &OpCtx, name: &str, default: f32) -> Result<f64> {
    Ok(ctx.node.get_f(name)?.unwrap_or(default) as f64)
}

/// R, T and the number of parameters n, given `groups` tensors per parameter.
fn header(x: &Inputs, groups: usize) -> Result<(f64, f64, usize)> {
    let r = x.scalar(0)?.ok_or_else(|| x.err("input R is required"))?;
    let t = x.scalar(1)?.ok_or_else(|| x.err("input T is required"))?;
    let rest = x.len().saturating_sub(2);
    if rest == 0 || !rest.is_multiple_of(groups) {
        return Err(x.err(format!("expects R, T and {groups} groups of n tensors; found {} inputs", x.len())));
    }
    Ok((r, t, rest / groups))
}

/// g + c·x: the gradient with the L2 regularisation term.
fn regularised(x: &Tensor, g: &Tensor, c: f64) -> Result<Tensor> {
    Ok(g.f_add(&x.f_mul_scalar(c)?)?)
}

fn adagrad(ctx: &OpCtx) -> Result<BoxOp> {
    let (decay, eps, norm) =
        (attr(ctx, "decay_factor", 0.0)?, attr(ctx, "epsilon", 1e-6)?, attr(ctx, "norm_coefficient", 0.0)?);
    op(move |x| {
        let (r, t, n) = header(x, 3)?;
        let rate = r / (1.0 + t * decay);
        let (mut xs, mut hs) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (w, g, h) = (x.req(2 + i)?, x.req(2 + n + i)?, x.req(2 + 2 * n + i)?);
            let g = regularised(w, g, norm)?;
            let h_new = h.f_add(&g.f_square()?)?;
            let step = g.f_div(&h_new.f_sqrt()?.f_add_scalar(eps)?)?.f_mul_scalar(rate)?;
            xs.push(w.f_sub(&step)?);
            hs.push(h_new);
        }
        xs.extend(hs);
        Ok(xs)
    })
}

fn momentum(ctx: &OpCtx) -> Result<BoxOp> {
    let (alpha, beta, norm) = (attr(ctx, "alpha", 0.0)?, attr(ctx, "beta", 0.0)?, attr(ctx, "norm_coefficient", 0.0)?);
    let nesterov = match ctx.node.get_s("mode")?.as_deref() {
        Some("standard") | None => false,
        Some("nesterov") => true,
        Some(m) => return Err(ctx.node.attr_err("mode", format!("'{m}' is neither 'standard' nor 'nesterov'"))),
    };
    op(move |x| {
        let (r, t, n) = header(x, 3)?;
        // The gradient's coefficient is 1 on the first step.
        let b = if t > 0.0 { beta } else { 1.0 };
        let (mut xs, mut vs) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (w, g, v) = (x.req(2 + i)?, x.req(2 + n + i)?, x.req(2 + 2 * n + i)?);
            let g = regularised(w, g, norm)?;
            let v_new = v.f_mul_scalar(alpha)?.f_add(&g.f_mul_scalar(b)?)?;
            let dir = if nesterov { g.f_add(&v_new.f_mul_scalar(alpha)?)? } else { v_new.shallow_clone() };
            xs.push(w.f_sub(&dir.f_mul_scalar(r)?)?);
            vs.push(v_new);
        }
        xs.extend(vs);
        Ok(xs)
    })
}

fn adam(ctx: &OpCtx) -> Result<BoxOp> {
    let (alpha, beta, eps) = (attr(ctx, "alpha", 0.9)?, attr(ctx, "beta", 0.999)?, attr(ctx, "epsilon", 1e-6)?);
    let (norm, post) = (attr(ctx, "norm_coefficient", 0.0)?, attr(ctx, "norm_coefficient_post", 0.0)?);
    op(move |x| {
        let (r, t, n) = header(x, 4)?;
        // Bias correction of both moments from the second step count on.
        let rate = if t > 0.0 { r * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t)) } else { r };
        let (mut xs, mut vs, mut hs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let (w, g) = (x.req(2 + i)?, x.req(2 + n + i)?);
            let (v, h) = (x.req(2 + 2 * n + i)?, x.req(2 + 3 * n + i)?);
            let g = regularised(w, g, norm)?;
            let v_new = v.f_mul_scalar(alpha)?.f_add(&g.f_mul_scalar(1.0 - alpha)?)?;
            let h_new = h.f_mul_scalar(beta)?.f_add(&g.f_square()?.f_mul_scalar(1.0 - beta)?)?;
            let step = v_new.f_div(&h_new.f_sqrt()?.f_add_scalar(eps)?)?.f_mul_scalar(rate)?;
            xs.push(w.f_sub(&step)?.f_mul_scalar(1.0 - post)?);
            vs.push(v_new);
            hs.push(h_new);
        }
        xs.extend(vs);
        xs.extend(hs);
        Ok(xs)
    })
}

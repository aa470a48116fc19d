//! onnxruntime's `com.microsoft` contrib ops: what its transformer optimizer emits for BERT,
//! GPT-2, ViT and diffusion graphs (fused embeddings, layer norms, attention, GELUs) and its
//! weight-quantized MatMul/Gemm. onnxruntime is the reference for their semantics. Every op is
//! composed from differentiable torch ops, so training flows through them like through the
//! standard ones. `SimplifiedLayerNormalization` lives in the default domain, as onnxruntime
//! registers it there.
use crate::engine::{OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

mod activation;
mod attention;
mod diffusion;
mod gqa;
mod linalg;
mod norm;
pub mod quant;
mod rotary;

/// The contrib domain.
pub const MS: &str = "com.microsoft";

pub fn register(r: &mut Registry) {
    activation::register(r);
    attention::register(r);
    diffusion::register(r);
    gqa::register(r);
    linalg::register(r);
    norm::register(r);
    quant::register(r);
    rotary::register(r);
}

/// Registers `op` of the contrib domain for every opset (all are at version 1).
fn add(r: &mut Registry, op: &str, build: crate::engine::registry::Build) {
    r.add_range(MS, op, 1, i64::MAX, build);
}

/// A 0/1 attribute read as a bool (`default` when absent).
fn flag(ctx: &OpCtx, name: &str, default: bool) -> Result<bool> {
    match ctx.node.get_i(name)? {
        None => Ok(default),
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        Some(v) => Err(ctx.node.attr_err(name, format!("must be 0 or 1, got {v}"))),
    }
}

/// A float attribute with its default.
fn attr_f(ctx: &OpCtx, name: &str, default: f64) -> Result<f64> {
    Ok(ctx.node.get_f(name)?.map_or(default, f64::from))
}

/// A positive int attribute the op requires.
fn positive(ctx: &OpCtx, name: &str) -> Result<i64> {
    match ctx.node.req_i(name)? {
        v if v > 0 => Ok(v),
        v => Err(ctx.node.attr_err(name, format!("must be positive, got {v}"))),
    }
}

fn to_kind(t: &Tensor, k: Kind) -> Result<Tensor> {
    Ok(if t.kind() == k { t.shallow_clone() } else { t.f_to_kind(k)? })
}

//! Matrix products: Gemm, MatMul (numpy semantics, batched, 1-D operands), MatMulInteger and
//! Einsum.
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// Y = alpha · op(A) · op(B) + beta · C, with C broadcast to (M, N).
fn gemm(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let alpha = n.get_f("alpha")?.map_or(1.0, f64::from);
    let beta = n.get_f("beta")?.map_or(1.0, f64::from);
    let (ta, tb) = (n.get_i("transA")?.unwrap_or(0) != 0, n.get_i("transB")?.unwrap_or(0) != 0);
    op(move |x| {
        let (a, b) = (x.req(0)?, x.req(1)?);
        if a.dim() != 2 || b.dim() != 2 {
            return Err(x.err(format!("A and B must be matrices, got shapes {:?} and {:?}", a.size(), b.size())));
        }
        let a = if ta { a.f_transpose(0, 1)? } else { a.shallow_clone() };
        let b = if tb { b.f_transpose(0, 1)? } else { b.shallow_clone() };
        let mut y = a.f_matmul(&b)?;
        if alpha != 1.0 {
            y = y.f_mul_scalar(alpha)?;
        }
        if let Some(c) = x.get(2) {
            y = if beta == 1.0 { y.f_add(c)? } else { y.f_add(&c.f_mul_scalar(beta)?)? };
        }
        Ok(vec![y])
    })
}

fn matmul(_: &OpCtx) -> Result<BoxOp> {
    op(|x| Ok(vec![x.req(0)?.f_matmul(x.req(1)?)?]))
}

/// (A - a_zero_point) · (B - b_zero_point) exactly (f64), as int32. A per-row a_zero_point has
/// one value per row of A; a per-column b_zero_point one per column of B.
fn matmul_integer(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let mut a = x.req(0)?.f_to_kind(Kind::Double)?;
        let mut b = x.req(1)?.f_to_kind(Kind::Double)?;
        if let Some(z) = x.get(2) {
            let z = z.f_to_kind(Kind::Double)?;
            a = a.f_sub(&if z.dim() == 1 && z.numel() > 1 { z.f_unsqueeze(-1)? } else { z })?;
        }
        if let Some(z) = x.get(3) {
            b = b.f_sub(&z.f_to_kind(Kind::Double)?)?;
        }
        Ok(vec![a.f_matmul(&b)?.f_round()?.f_to_kind(Kind::Int)?])
    })
}

fn einsum(ctx: &OpCtx) -> Result<BoxOp> {
    let eq = ctx.node.get_s("equation")?.ok_or_else(|| ctx.node.attr_err("equation", "required attribute is missing"))?;
    // libtorch's parser rejects the spaces ONNX allows.
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    op(move |x| Ok(vec![Tensor::f_einsum(&eq, &x.all(), None::<&[i64]>)?]))
}

pub fn register(r: &mut Registry) {
    r.add("Gemm", 1, gemm);
    r.add("MatMul", 1, matmul);
    r.add("MatMulInteger", 10, matmul_integer);
    r.add("Einsum", 12, einsum);
}

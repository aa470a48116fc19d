//! FusedMatMul: MatMul with transposes of the operands (the last two dims, and/or the first dim
//! moved behind the batch dims) and a scale, as onnxruntime fuses Transpose/Mul into MatMul.
use super::{add, attr_f, flag};
use crate::engine::{op, precision, BoxOp, OpCtx, Registry};
use crate::error::Result;
use tch::Tensor;

/// transBatch moves dim 0 to just before the last dim ([d0, d1…dn-2, dn-1] → [d1…dn-2, d0, dn-1]);
/// trans then swaps the last two.
fn arrange(t: &Tensor, batch: bool, trans: bool) -> Result<Tensor> {
    let r = t.dim() as i64;
    let mut t = t.shallow_clone();
    if batch && r >= 3 {
        t = t.f_movedim(0, r - 2)?;
    }
    if trans && r >= 2 {
        t = t.f_transpose(-1, -2)?;
    }
    Ok(t)
}

fn fused_matmul(ctx: &OpCtx) -> Result<BoxOp> {
    let (ta, tb) = (flag(ctx, "transA", false)?, flag(ctx, "transB", false)?);
    let (ba, bb) = (flag(ctx, "transBatchA", false)?, flag(ctx, "transBatchB", false)?);
    let alpha = attr_f(ctx, "alpha", 1.0)?;
    op(move |x| {
        let (a, b) = (arrange(x.req(0)?, ba, ta)?, arrange(x.req(1)?, bb, tb)?);
        let y = precision::product(&[&a, &b], |t| Ok(t[0].f_matmul(&t[1])?)).map_err(|e| {
            let why = crate::error::torch_summary(&e.to_string());
            x.err(format!("A {:?} · B {:?}: {why}", a.size(), b.size()))
        })?;
        Ok(vec![if alpha == 1.0 { y } else { y.f_mul_scalar(alpha)? }])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "FusedMatMul", fused_matmul);
}

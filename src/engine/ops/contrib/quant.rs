//! Weight-quantized contrib ops: MatMulNBits (2/4/8-bit weights in blocks along K, dequantized
//! to A's float type before the product, so gradients reach A, the scales and the bias) and
//! QGemm (uint8/int8 Gemm, exact in f64; float or requantized output).
use super::{add, attr_f, flag, positive};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// Unpacks `bits`-wide unsigned values from bytes along the last axis, lowest bits first:
/// [..., n] → [..., n · 8/bits] (int64).
pub fn unpack(t: &Tensor, bits: i64) -> Result<Tensor> {
    let t = t.f_to_kind(Kind::Int64)?;
    let per = 8 / bits;
    let parts = (0..per)
        .map(|i| Ok(t.f_floor_divide_scalar(1i64 << (i * bits))?.f_remainder(1i64 << bits)?))
        .collect::<Result<Vec<_>>>()?;
    let mut shape = t.size();
    let last = shape.pop().unwrap_or(1);
    shape.push(last * per);
    Ok(Tensor::f_stack(&parts, -1)?.f_reshape(&shape)?)
}

struct NBits {
    k: i64,
    n: i64,
    bits: i64,
    block: i64,
}

impl NBits {
    /// The [N, K] float weight from packed B, scales and optional zero points, in `kind`.
    fn weight(&self, x: &Inputs, kind: Kind) -> Result<Tensor> {
        let (b, scales) = (x.req(1)?, x.req(2)?);
        let blocks = (self.k + self.block - 1) / self.block;
        let blob = self.block * self.bits / 8;
        if b.kind() != Kind::Uint8 || b.numel() as i64 != self.n * blocks * blob {
            return Err(x.err(format!("B {:?} must be uint8 [{}, {blocks}, {blob}]", b.size(), self.n)));
        }
        if scales.numel() as i64 != self.n * blocks {
            return Err(x.err(format!("scales {:?} must hold [{}, {blocks}]", scales.size(), self.n)));
        }
        let q = unpack(&b.f_reshape([self.n, blocks, blob])?, self.bits)?;
        let zp = match x.get(3) {
            None => Tensor::f_full([1, 1, 1], 1i64 << (self.bits - 1), (Kind::Int64, q.device()))?,
            Some(z) if z.kind() == Kind::Uint8 => {
                let packed = z.f_reshape([self.n, -1])?;
                unpack(&packed, self.bits)?.f_narrow(1, 0, blocks)?.f_unsqueeze(-1)?
            }
            Some(z) if z.numel() as i64 == self.n * blocks => z.f_reshape([self.n, blocks, 1])?,
            Some(z) => return Err(x.err(format!("zero_points {:?} do not fit [{}, {blocks}]", z.size(), self.n))),
        };
        let scales = scales.f_reshape([self.n, blocks, 1])?.f_to_kind(kind)?;
        let w = q.f_to_kind(kind)?.f_sub(&zp.f_to_kind(kind)?)?.f_mul(&scales)?;
        Ok(w.f_reshape([self.n, blocks * self.block])?.f_narrow(1, 0, self.k)?)
    }
}

fn matmul_nbits(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let (k, nn, block) = (positive(ctx, "K")?, positive(ctx, "N")?, positive(ctx, "block_size")?);
    let bits = n.get_i("bits")?.unwrap_or(4);
    if ![2, 4, 8].contains(&bits) {
        return Err(n.attr_err("bits", format!("must be 2, 4 or 8, got {bits}")));
    }
    if block < 16 || block & (block - 1) != 0 {
        return Err(n.attr_err("block_size", format!("must be a power of 2, >= 16, got {block}")));
    }
    if n.get_i("weight_prepacked")?.unwrap_or(0) != 0 {
        return Err(n.attr_err("weight_prepacked", "prepacked weights are not supported"));
    }
    let nb = NBits { k, n: nn, bits, block };
    op(move |x| {
        if x.get(4).is_some() {
            return Err(x.err("input 4 (g_idx) is deprecated and not supported"));
        }
        let a = x.req(0)?;
        if a.size().last() != Some(&nb.k) {
            return Err(x.err(format!("A {:?} must end in K = {}", a.size(), nb.k)));
        }
        let mut y = a.f_matmul(&nb.weight(x, a.kind())?.f_transpose(0, 1)?)?;
        if let Some(b) = x.get(5) {
            if b.size() != [nb.n] {
                return Err(x.err(format!("bias {:?} must be [{}]", b.size(), nb.n)));
            }
            y = y.f_add(b)?;
        }
        Ok(vec![y])
    })
}

/// A per-tensor (scalar) or per-column ([N]) quantization parameter as a [1, N]-broadcastable f64.
fn per_column(x: &Inputs, t: &Tensor, n: i64, what: &str) -> Result<Tensor> {
    let t = t.f_to_kind(Kind::Double)?;
    match t.numel() as i64 {
        1 => Ok(t.f_reshape([1, 1])?),
        c if c == n => Ok(t.f_reshape([1, n])?),
        _ => Err(x.err(format!("{what} {:?} must be a scalar or hold {n} values", t.size()))),
    }
}

/// The saturation range of a quantized integer kind.
fn range_of(x: &Inputs, k: Kind) -> Result<(f64, f64)> {
    match k {
        Kind::Uint8 => Ok((0.0, 255.0)),
        Kind::Int8 => Ok((-128.0, 127.0)),
        k => Err(x.err(format!("y_zero_point must be uint8 or int8, got {k:?}"))),
    }
}

fn qgemm(ctx: &OpCtx) -> Result<BoxOp> {
    let (ta, tb) = (flag(ctx, "transA", false)?, flag(ctx, "transB", false)?);
    let alpha = attr_f(ctx, "alpha", 1.0)?;
    op(move |x| {
        let d = |i: usize| -> Result<Tensor> { Ok(x.req(i)?.f_to_kind(Kind::Double)?) };
        let (mut a, mut b) = (d(0)?, d(3)?);
        if a.dim() != 2 || b.dim() != 2 {
            return Err(x.err("A and B must be 2-D"));
        }
        if ta {
            a = a.f_transpose(0, 1)?;
        }
        if tb {
            b = b.f_transpose(0, 1)?;
        }
        let n = b.size()[1];
        a = a.f_sub(&d(2)?.f_reshape([] as [i64; 0])?)?;
        if let Some(z) = x.get(5) {
            b = b.f_sub(&per_column(x, z, n, "b_zero_point")?)?;
        }
        let mut acc =
            a.f_matmul(&b).map_err(|_| x.err(format!("A {:?} and B {:?} do not multiply", a.size(), b.size())))?;
        if let Some(c) = x.get(6) {
            acc = acc.f_add(&c.f_to_kind(Kind::Double)?)?;
        }
        let scale = d(1)?.f_reshape([1, 1])?.f_mul(&per_column(x, x.req(4)?, n, "b_scale")?)?.f_mul_scalar(alpha)?;
        let y = acc.f_mul(&scale)?;
        let Some(ys) = x.get(7) else { return Ok(vec![y.f_to_kind(Kind::Float)?]) };
        let zp = x.get(8).ok_or_else(|| x.err("y_scale needs y_zero_point, which names the output type"))?;
        let (lo, hi) = range_of(x, zp.kind())?;
        let q = y.f_div(&ys.f_to_kind(Kind::Double)?.f_reshape([] as [i64; 0])?)?.f_round()?;
        let q = q.f_add(&zp.f_to_kind(Kind::Double)?.f_reshape([] as [i64; 0])?)?.f_clamp(lo, hi)?;
        Ok(vec![q.f_to_kind(zp.kind())?])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "MatMulNBits", matmul_nbits);
    add(r, "QGemm", qgemm);
}

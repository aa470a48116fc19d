//! Contrib attention: Attention (packed QKV projection, BERT/GPT-2; 1-D/2-D/3-D masks, past
//! and present) and MultiHeadAttention (separate or pre-split K/V, key padding mask, attention
//! bias, past key/value). As onnxruntime does, masked scores get `mask_filter_value`
//! (default −10000) added rather than −∞, and the causal mask applies only to more than one query.
use super::{add, attr_f, flag, positive};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// The attributes both ops share.
struct Heads {
    n: i64,
    scale: Option<f64>,
    filter: f64,
    causal: bool,
}

impl Heads {
    fn new(ctx: &OpCtx) -> Result<Self> {
        let scale = ctx.node.get_f("scale")?.filter(|&s| s != 0.0).map(f64::from);
        let filter = attr_f(ctx, "mask_filter_value", -10000.0)?;
        Ok(Heads { n: positive(ctx, "num_heads")?, scale, filter, causal: flag(ctx, "unidirectional", false)? })
    }

    /// [B, S, N·H] → [B, N, S, H].
    fn split(&self, x: &Inputs, t: &Tensor, what: &str) -> Result<Tensor> {
        let s = t.size();
        if s.len() != 3 || s[2] % self.n != 0 {
            return Err(x.err(format!("{what} {s:?} must be 3-D with a hidden size that {} heads divide", self.n)));
        }
        Ok(t.f_reshape([s[0], s[1], self.n, s[2] / self.n])?.f_transpose(1, 2)?)
    }

    /// Softmax(Q·Kᵀ·scale + bias + mask)·V for q [B,N,S,H], k [B,N,T,H], v [B,N,T,Hv]; `keep`
    /// (bool, broadcast to [B,N,S,T]) marks the visible keys. Returns ([B,S,N·Hv], the scores).
    fn attend(
        &self,
        x: &Inputs,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        keep: Option<Tensor>,
        bias: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor)> {
        let (s, t) = (q.size()[2], k.size()[2]);
        if k.size()[..2] != q.size()[..2] || v.size()[..3] != k.size()[..3] || k.size()[3] != q.size()[3] {
            return Err(x.err(format!("Q {:?}, K {:?}, V {:?} do not fit together", q.size(), k.size(), v.size())));
        }
        let scale = self.scale.unwrap_or(1.0 / (q.size()[3] as f64).sqrt());
        let mut scores = q.f_matmul(&k.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?;
        if let Some(b) = bias {
            scores = scores.f_add(b)?;
        }
        let mut keep = keep;
        if self.causal && s > 1 {
            let opts = (Kind::Int64, q.device());
            let i = Tensor::f_arange(s, opts)?.f_add_scalar(t - s)?.f_unsqueeze(1)?;
            let causal = Tensor::f_arange(t, opts)?.f_unsqueeze(0)?.f_le_tensor(&i)?;
            keep = Some(match keep {
                Some(k) => k.f_logical_and(&causal)?,
                None => causal,
            });
        }
        if let Some(k) = keep {
            scores = scores.f_add(&k.f_logical_not()?.f_to_kind(scores.kind())?.f_mul_scalar(self.filter)?)?;
        }
        let y = scores.f_softmax(-1, None::<Kind>)?.f_matmul(v)?;
        let sz = y.size();
        Ok((y.f_transpose(1, 2)?.f_reshape([sz[0], sz[2], -1])?, scores))
    }
}

/// Visible keys [B, 1, S|1, T] from a mask: 1-D key lengths (B) or end/start positions (2B),
/// 2-D [B, T] or 3-D [B, S, T] of 1 (keep) / 0 (mask).
fn keep_from(x: &Inputs, m: &Tensor, b: i64, s: i64, t: i64) -> Result<Tensor> {
    let m = m.f_to_kind(Kind::Int64)?;
    let size = m.size();
    let j = Tensor::f_arange(t, (Kind::Int64, m.device()))?.f_reshape([1, 1, 1, t])?;
    Ok(match size.as_slice() {
        [n] if *n == b => j.f_lt_tensor(&m.f_reshape([b, 1, 1, 1])?)?,
        [n] if *n == 2 * b => {
            let end = m.f_narrow(0, 0, b)?.f_reshape([b, 1, 1, 1])?;
            let start = m.f_narrow(0, b, b)?.f_reshape([b, 1, 1, 1])?;
            j.f_lt_tensor(&end)?.f_logical_and(&j.f_ge_tensor(&start)?)?
        }
        [bb, tt] if *bb == b && *tt == t => m.f_ne(0)?.f_reshape([b, 1, 1, t])?,
        [bb, ss, tt] if *bb == b && *ss == s && *tt == t => m.f_ne(0)?.f_unsqueeze(1)?,
        _ => {
            return Err(
                x.err(format!("mask {size:?} is not one of (B), (2B), (B, T), (B, S, T) for B={b}, S={s}, T={t}"))
            )
        }
    })
}

/// Refuses an input this implementation does not handle, naming it.
fn refuse(x: &Inputs, i: usize, what: &str) -> Result<()> {
    match x.get(i) {
        Some(_) => Err(x.err(format!("input {i} ({what}) is not supported"))),
        None => Ok(()),
    }
}

fn attention(ctx: &OpCtx) -> Result<BoxOp> {
    let h = Heads::new(ctx)?;
    let sizes = ctx.node.get_ints("qkv_hidden_sizes")?;
    if let Some(s) = &sizes {
        if s.len() != 3 || s.iter().any(|&d| d <= 0 || d % h.n != 0) || s[0] != s[1] {
            return Err(ctx
                .node
                .attr_err("qkv_hidden_sizes", format!("must be 3 sizes (Q = K) that the heads divide, got {s:?}")));
        }
    }
    for a in ["do_rotary", "past_present_share_buffer"] {
        if flag(ctx, a, false)? {
            return Err(ctx.node.attr_err(a, "is not supported (only 0)"));
        }
    }
    op(move |x| {
        refuse(x, 6, "past_sequence_length")?;
        let (input, w) = (x.req(0)?, x.req(1)?);
        if input.dim() != 3 || w.dim() != 2 || w.size()[0] != input.size()[2] {
            return Err(x.err(format!("input {:?} must be [B, S, D] and weights {:?} [D, _]", input.size(), w.size())));
        }
        let total = w.size()[1];
        let [dq, dk, dv] = match &sizes {
            Some(s) => [s[0], s[1], s[2]],
            None => [total / 3; 3],
        };
        if dq + dk + dv != total {
            return Err(x.err(format!("weights {:?} do not hold Q, K, V of sizes {dq}, {dk}, {dv}", w.size())));
        }
        let mut qkv = input.f_matmul(w)?;
        if let Some(b) = x.get(2) {
            if b.size() != [total] {
                return Err(x.err(format!("bias {:?} must be [{total}]", b.size())));
            }
            qkv = qkv.f_add(b)?;
        }
        let q = h.split(x, &qkv.f_narrow(-1, 0, dq)?, "Q")?;
        let mut k = h.split(x, &qkv.f_narrow(-1, dq, dk)?, "K")?;
        let mut v = h.split(x, &qkv.f_narrow(-1, dq + dk, dv)?, "V")?;
        if let Some(p) = x.get(4) {
            if p.dim() != 5 || p.size()[0] != 2 {
                return Err(x.err(format!("past {:?} must be [2, B, N, P, H]", p.size())));
            }
            k = Tensor::f_cat(&[p.f_select(0, 0)?, k], 2)?;
            v = Tensor::f_cat(&[p.f_select(0, 1)?, v], 2)?;
        }
        let (b, s, t) = (q.size()[0], q.size()[2], k.size()[2]);
        let keep = x.get(3).map(|m| keep_from(x, m, b, s, t)).transpose()?;
        let (y, _) = h.attend(x, &q, &k, &v, keep, x.get(5))?;
        let present = if x.node.output.get(1).is_some_and(|o| !o.is_empty()) {
            Tensor::f_stack(&[&k, &v], 0)?
        } else {
            Tensor::f_empty([0], (q.kind(), q.device()))?
        };
        Ok(vec![y, present])
    })
}

/// MultiHeadAttention's Q, K, V as [B, N, S|L, H]: separate 3-D inputs (the bias adds to each),
/// K and V already [B, N, L, H], or the packed layouts onnxruntime's unet fusion writes (its CUDA
/// kernel runs them, the CPU one refuses them): QKV [B, S, N, 3, H] for self-attention, or a 3-D
/// query with KV [B, L, N, 2, H] for cross-attention.
fn mha_qkv(h: &Heads, x: &Inputs) -> Result<(Tensor, Tensor, Tensor)> {
    let (query, bias) = (x.req(0)?, x.get(3));
    let unpack = |t: &Tensor, parts: i64, what: &str| -> Result<Vec<Tensor>> {
        let s = t.size();
        if bias.is_some() || s[2] != h.n || s[3] != parts {
            return Err(x.err(format!("packed {what} {s:?} must be [B, _, {}, {parts}, H] without a bias input", h.n)));
        }
        (0..parts).map(|i| Ok(t.f_select(3, i)?.f_transpose(1, 2)?)).collect()
    };
    let (key, value) = match (query.dim(), x.get(1), x.get(2)) {
        (5, None, None) => {
            let [q, k, v]: [Tensor; 3] = unpack(query, 3, "QKV")?.try_into().expect("three parts");
            return Ok((q, k, v));
        }
        (3, Some(kv), None) if kv.dim() == 5 => {
            let [k, v]: [Tensor; 2] = unpack(kv, 2, "KV")?.try_into().expect("two parts");
            return Ok((h.split(x, query, "query")?, k, v));
        }
        (3, Some(k), Some(v)) => (k, v),
        _ => {
            return Err(x.err(
                "needs a 3-D query with key and value, packed QKV [B, S, N, 3, H] alone, or a 3-D query with \
                 packed KV [B, L, N, 2, H]",
            ))
        }
    };
    let with_bias = |t: &Tensor, at: i64| -> Result<Tensor> {
        let Some(b) = bias else { return Ok(t.shallow_clone()) };
        let d = t.size()[2];
        if b.dim() != 1 || b.size()[0] < at + d {
            return Err(x.err(format!("bias {:?} is too short for Q, K and V", b.size())));
        }
        Ok(t.f_add(&b.f_narrow(0, at, d)?)?)
    };
    let d = query.size()[2];
    let q = h.split(x, &with_bias(query, 0)?, "query")?;
    match (key.dim(), value.dim()) {
        (4, 4) if bias.is_none() => Ok((q, key.shallow_clone(), value.shallow_clone())),
        (4, 4) => Err(x.err("a bias with key and value already split into heads is not supported")),
        (3, 3) => Ok((q, h.split(x, &with_bias(key, d)?, "key")?, h.split(x, &with_bias(value, 2 * d)?, "value")?)),
        (k, v) => Err(x.err(format!("key (rank {k}) and value (rank {v}) must both be 3-D or both 4-D"))),
    }
}

fn multi_head_attention(ctx: &OpCtx) -> Result<BoxOp> {
    let h = Heads::new(ctx)?;
    op(move |x| {
        refuse(x, 8, "past_sequence_length")?;
        refuse(x, 9, "cache_indirection")?;
        let (q, mut k, mut v) = mha_qkv(&h, x)?;
        match (x.get(6), x.get(7)) {
            (Some(pk), Some(pv)) => {
                k = Tensor::f_cat(&[pk, &k], 2)?;
                v = Tensor::f_cat(&[pv, &v], 2)?;
            }
            (None, None) => {}
            _ => return Err(x.err("past_key and past_value go together")),
        }
        let (b, s, t) = (q.size()[0], q.size()[2], k.size()[2]);
        let keep = x.get(4).map(|m| keep_from(x, m, b, s, t)).transpose()?;
        let (y, scores) = h.attend(x, &q, &k, &v, keep, x.get(5))?;
        Ok(vec![y, k, v, scores])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "Attention", attention);
    add(r, "MultiHeadAttention", multi_head_attention);
}

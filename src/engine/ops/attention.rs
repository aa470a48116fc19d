//! Transformer blocks as single nodes: Attention (opset 23, `nonpad_kv_seqlen` from 24),
//! RotaryEmbedding (23) and FlexAttention (ai.onnx.preview 1, with its modifier subgraphs), all
//! composed from differentiable torch ops, so training flows through Q/K/V, the KV cache, float
//! masks and the sin/cos caches.
use super::control::Body;
use crate::engine::convert::kind_of;
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry, Value};
use crate::error::Result;
use crate::onnx::{DType, NodeExt};
use tch::{Kind, Tensor};

/// A 0/1 attribute read as a bool.
fn flag(ctx: &OpCtx, name: &str) -> Result<bool> {
    match ctx.node.get_i(name)?.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.node.attr_err(name, format!("must be 0 or 1, got {v}"))),
    }
}

/// A non-negative int attribute, 0 when absent.
fn count(ctx: &OpCtx, name: &str) -> Result<i64> {
    match ctx.node.get_i(name)?.unwrap_or(0) {
        v if v >= 0 => Ok(v),
        v => Err(ctx.node.attr_err(name, format!("must not be negative, got {v}"))),
    }
}

/// Attributes of one Attention node, parsed at plan time.
struct Attn {
    scale: Option<f64>,
    causal: bool,
    q_heads: i64,
    kv_heads: i64,
    softcap: f64,
    mode: i64,
    softmax_kind: Option<Kind>,
}

/// [B, S, H·D] → [B, H, S, D].
fn split_heads(x: &Inputs, t: &Tensor, heads: i64, what: &str) -> Result<Tensor> {
    let s = t.size();
    if heads <= 0 || s[2] % heads != 0 {
        return Err(x.err(format!("{what} hidden size {} is not a multiple of its {heads} heads", s[2])));
    }
    Ok(t.f_reshape([s[0], s[1], heads, s[2] / heads])?.f_transpose(1, 2)?)
}

/// Grouped-query attention: each KV head serves qh/kvh consecutive query heads.
fn group_kv(x: &Inputs, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (qh, kvh) = (q.size()[1], k.size()[1]);
    if kvh == 0 || qh % kvh != 0 || v.size()[1] != kvh {
        return Err(x.err(format!("{qh} query heads cannot be grouped over {kvh} key/value heads")));
    }
    if qh == kvh {
        return Ok((k.shallow_clone(), v.shallow_clone()));
    }
    Ok((k.f_repeat_interleave_self_int(qh / kvh, 1, None)?, v.f_repeat_interleave_self_int(qh / kvh, 1, None)?))
}

/// Q·Kᵀ·scale (default 1/√head_size). Q and K are each scaled by √scale before the product, as
/// the spec does against overflow.
fn scores(q: &Tensor, k: &Tensor, scale: Option<f64>) -> Result<Tensor> {
    let s = scale.unwrap_or(1.0 / (q.size()[3] as f64).sqrt()).sqrt();
    Ok(q.f_mul_scalar(s)?.f_matmul(&k.f_mul_scalar(s)?.f_transpose(-1, -2)?)?)
}

/// A `softmax_precision` attribute as a float kind.
fn precision(ctx: &OpCtx) -> Result<Option<Kind>> {
    let n = ctx.node;
    let Some(code) = n.get_i("softmax_precision")? else { return Ok(None) };
    let d = DType::from_onnx(code as i32).map_err(|e| n.attr_err("softmax_precision", e.to_string()))?;
    if !d.is_float() {
        return Err(n.attr_err("softmax_precision", format!("must name a float type, got {d}")));
    }
    Ok(Some(kind_of(d)?))
}

/// The KV cache update: past and new entries joined along the sequence axis.
fn with_past(past: Option<&Tensor>, t: Tensor) -> Result<Tensor> {
    Ok(match past {
        Some(p) => Tensor::f_cat(&[p, &t], 2)?,
        None => t,
    })
}

impl Attn {
    fn new(ctx: &OpCtx) -> Result<Self> {
        let n = ctx.node;
        let mode = n.get_i("qk_matmul_output_mode")?.unwrap_or(0);
        if !(0..=3).contains(&mode) {
            return Err(n.attr_err("qk_matmul_output_mode", format!("must be 0, 1, 2 or 3, got {mode}")));
        }
        let softcap = n.get_f("softcap")?.unwrap_or(0.0) as f64;
        if softcap < 0.0 {
            return Err(n.attr_err("softcap", format!("must not be negative, got {softcap}")));
        }
        Ok(Attn {
            scale: n.get_f("scale")?.map(f64::from),
            causal: flag(ctx, "is_causal")?,
            q_heads: count(ctx, "q_num_heads")?,
            kv_heads: count(ctx, "kv_num_heads")?,
            softcap,
            mode,
            softmax_kind: precision(ctx)?,
        })
    }

    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let (q, k, v) = (x.req(0)?, x.req(1)?, x.req(2)?);
        let rank = q.dim();
        if !(rank == 3 || rank == 4) || k.dim() != rank || v.dim() != rank {
            return Err(x.err(format!(
                "Q, K, V must all be 3-D or all 4-D, got ranks {rank}, {}, {}",
                k.dim(),
                v.dim()
            )));
        }
        let (q, k, v) = if rank == 3 {
            if self.q_heads == 0 || self.kv_heads == 0 {
                return Err(x.err("3-D Q, K, V need the q_num_heads and kv_num_heads attributes"));
            }
            (
                split_heads(x, q, self.q_heads, "Q")?,
                split_heads(x, k, self.kv_heads, "K")?,
                split_heads(x, v, self.kv_heads, "V")?,
            )
        } else {
            (q.shallow_clone(), k.shallow_clone(), v.shallow_clone())
        };
        let past = x.get(4).map_or(0, |p| p.size().get(2).copied().unwrap_or(0));
        let (k, v) = (with_past(x.get(4), k)?, with_past(x.get(5), v)?);
        let (kg, vg) = group_kv(x, &q, &k, &v)?;
        let raw = scores(&q, &kg, self.scale)?;
        // Softcap precedes the mask so masked scores stay -inf.
        let capped = if self.softcap > 0.0 {
            raw.f_div_scalar(self.softcap)?.f_tanh()?.f_mul_scalar(self.softcap)?
        } else {
            raw.shallow_clone()
        };
        let biased = self.mask(x, &capped, past)?;
        let logits = match self.softmax_kind {
            Some(kd) => biased.f_to_kind(kd)?,
            None => biased.shallow_clone(),
        };
        let probs = logits.f_softmax(-1, None::<Kind>)?;
        let y = probs.f_matmul(&vg.f_to_kind(probs.kind())?)?.f_to_kind(q.kind())?;
        let y = if rank == 3 {
            let sz = y.size();
            y.f_transpose(1, 2)?.f_reshape([sz[0], sz[2], -1])?
        } else {
            y
        };
        let qk = match self.mode {
            0 => raw,
            1 => capped,
            2 => biased,
            _ => probs.f_to_kind(q.kind())?,
        };
        Ok(vec![y, k, v, qk])
    }

    /// Applies attn_mask (bool: keep where true; float: added), the causal mask and the
    /// per-batch key padding of `nonpad_kv_seqlen` to scores [B, H, Lq, Lk].
    fn mask(&self, x: &Inputs, scores: &Tensor, past: i64) -> Result<Tensor> {
        let sz = scores.size();
        let (lq, lk) = (sz[2], sz[3]);
        let opts = (Kind::Int64, scores.device());
        let mut s = scores.shallow_clone();
        if let Some(m) = x.get(3) {
            let short = lk - m.size().last().copied().unwrap_or(lk);
            if short < 0 {
                return Err(x.err(format!("attn_mask covers {} keys, more than the {lk} there are", lk - short)));
            }
            // A mask shorter than the keys hides the keys it does not cover.
            s = if m.kind() == Kind::Bool {
                let m = if short > 0 { m.f_pad([0, short], "constant", 0.0)? } else { m.shallow_clone() };
                s.f_masked_fill(&m.f_logical_not()?, f64::NEG_INFINITY)?
            } else {
                let m = if short > 0 { m.f_pad([0, short], "constant", f64::NEG_INFINITY)? } else { m.shallow_clone() };
                s.f_add(&m.f_to_kind(s.kind())?)?
            };
        }
        if self.causal {
            // Upper-left alignment after the cache: query i sees keys j ≤ i + past.
            let i = Tensor::f_arange(lq, opts)?.f_add_scalar(past)?.f_unsqueeze(1)?;
            let j = Tensor::f_arange(lk, opts)?.f_unsqueeze(0)?;
            s = s.f_masked_fill(&j.f_gt_tensor(&i)?, f64::NEG_INFINITY)?;
        }
        if let Some(n) = x.get(6) {
            let j = Tensor::f_arange(lk, opts)?.f_reshape([1, 1, 1, lk])?;
            let len = n.f_to_kind(Kind::Int64)?.f_reshape([-1, 1, 1, 1])?;
            s = s.f_masked_fill(&j.f_ge_tensor(&len)?, f64::NEG_INFINITY)?;
        }
        Ok(s)
    }
}

fn attention(ctx: &OpCtx) -> Result<BoxOp> {
    let a = Attn::new(ctx)?;
    op(move |x| a.run(x))
}

/// A FlexAttention modifier subgraph (one rank-4 tensor in, one out), run like a Loop body.
struct Modifier(Body);

impl Modifier {
    fn new(ctx: &OpCtx, attr: &str) -> Result<Option<Modifier>> {
        let Some(body) = Body::optional(ctx, attr)? else { return Ok(None) };
        if body.inputs != 1 || body.outputs != 1 {
            return Err(ctx.node.attr_err(attr, "must take exactly one input and give one output"));
        }
        Ok(Some(Modifier(body)))
    }

    fn apply(&self, x: &Inputs, t: Tensor) -> Result<Tensor> {
        let out = self.0.run_tensors(x, vec![Value::Tensor(t)])?;
        out.into_iter().next().ok_or_else(|| x.err("a modifier gave no output"))?.into_tensor()
    }
}

/// FlexAttention (ai.onnx.preview 1): 4-D scaled dot-product attention with GQA and optional
/// score_mod (before the softmax) and prob_mod (after it) subgraphs. The softmax and both
/// modifiers run in float32 for narrower inputs (double stays double) unless softmax_precision
/// says otherwise.
fn flex_attention(ctx: &OpCtx) -> Result<BoxOp> {
    let score_mod = Modifier::new(ctx, "score_mod")?;
    let prob_mod = Modifier::new(ctx, "prob_mod")?;
    let scale = ctx.node.get_f("scale")?.map(f64::from);
    let prec = precision(ctx)?;
    op(move |x| {
        let (q, k, v) = (x.req(0)?, x.req(1)?, x.req(2)?);
        if q.dim() != 4 || k.dim() != 4 || v.dim() != 4 {
            return Err(x.err("Q, K and V must be 4-D"));
        }
        let (kg, vg) = group_kv(x, q, k, v)?;
        let kind = prec.unwrap_or(if q.kind() == Kind::Double { Kind::Double } else { Kind::Float });
        let mut s = scores(q, &kg, scale)?.f_to_kind(kind)?;
        if let Some(m) = &score_mod {
            s = m.apply(x, s)?.f_to_kind(kind)?;
        }
        let mut probs = s.f_softmax(-1, None::<Kind>)?;
        if let Some(m) = &prob_mod {
            probs = m.apply(x, probs)?.f_to_kind(kind)?;
        }
        Ok(vec![probs.f_matmul(&vg.f_to_kind(kind)?)?.f_to_kind(v.kind())?])
    })
}

/// Looks up per-token caches [B, S, R/2] from a [positions, R/2] table, or takes them as given.
fn cache_rows(cache: &Tensor, ids: Option<&Tensor>) -> Result<Tensor> {
    Ok(match ids {
        Some(ids) => {
            let s = ids.size();
            if s.len() != 2 {
                return Err(crate::error::Error::msg(format!("position_ids must be [batch, seq], got {s:?}")));
            }
            let flat = ids.f_to_kind(Kind::Int64)?.f_reshape([-1])?;
            cache.f_index_select(0, &flat)?.f_reshape([s[0], s[1], -1])?
        }
        None => cache.shallow_clone(),
    })
}

/// Rotates the first `rotary_embedding_dim` features of each head by position-dependent angles;
/// pairs are (i, i + R/2) by default, (2i, 2i + 1) when interleaved.
fn rotary(ctx: &OpCtx) -> Result<BoxOp> {
    let interleaved = flag(ctx, "interleaved")?;
    let rot_dim = count(ctx, "rotary_embedding_dim")?;
    let heads = count(ctx, "num_heads")?;
    op(move |x| {
        let t = x.req(0)?;
        let shape = t.size();
        // Work on [B, S, H, D].
        let t4 = match shape.len() {
            4 => t.f_transpose(1, 2)?,
            3 if heads > 0 && shape[2] % heads == 0 => t.f_reshape([shape[0], shape[1], heads, shape[2] / heads])?,
            3 => return Err(x.err(format!("3-D input needs num_heads dividing its hidden size {}", shape[2]))),
            r => return Err(x.err(format!("input must be 3-D or 4-D, got rank {r}"))),
        };
        let d = t4.size()[3];
        let r = if rot_dim == 0 { d } else { rot_dim };
        if r > d || r % 2 != 0 {
            return Err(x.err(format!("rotary dimension {r} must be even and at most the head size {d}")));
        }
        let half = r / 2;
        let cos = cache_rows(x.req(1)?, x.get(3))?;
        let sin = cache_rows(x.req(2)?, x.get(3))?;
        if cos.dim() != 3 || sin.dim() != 3 || cos.size()[2] != half || sin.size()[2] != half {
            return Err(x.err(format!("cos/sin caches must give [batch, seq, {half}] per token")));
        }
        let (cos, sin) = (cos.f_unsqueeze(2)?, sin.f_unsqueeze(2)?);
        Ok(vec![rotate(&t4, &cos, &sin, r, interleaved, &shape)?])
    })
}

/// The rotation of both RotaryEmbedding ops (this one and com.microsoft's): the first `r`
/// features of `t4` ([batch, seq, heads, head size]) turned by `cos`/`sin` (broadcasting against
/// `r / 2` of them; interleaved pairs or halves), the rest passed through; back in the layout of
/// the op's input `shape` (4-D: heads before sequence; 3-D: heads folded into features).
pub fn rotate(t4: &Tensor, cos: &Tensor, sin: &Tensor, r: i64, interleaved: bool, shape: &[i64]) -> Result<Tensor> {
    let (half, d) = (r / 2, t4.size().last().copied().unwrap_or(0));
    let rot = t4.f_narrow(-1, 0, r)?;
    let (x1, x2) = if interleaved {
        let mut s = rot.size();
        s.pop();
        s.extend([half, 2]);
        let pairs = rot.f_reshape(&s)?;
        (pairs.f_select(-1, 0)?, pairs.f_select(-1, 1)?)
    } else {
        (rot.f_narrow(-1, 0, half)?, rot.f_narrow(-1, half, half)?)
    };
    let re = cos.f_mul(&x1)?.f_sub(&sin.f_mul(&x2)?)?;
    let im = sin.f_mul(&x1)?.f_add(&cos.f_mul(&x2)?)?;
    let rotated =
        if interleaved { Tensor::f_stack(&[re, im], -1)?.f_flatten(-2, -1)? } else { Tensor::f_cat(&[re, im], -1)? };
    let y = Tensor::f_cat(&[rotated, t4.f_narrow(-1, r, d - r)?], -1)?;
    Ok(if shape.len() == 4 { y.f_transpose(1, 2)? } else { y.f_reshape(shape)? })
}

pub fn register(r: &mut Registry) {
    r.add("Attention", 23, attention);
    r.add("RotaryEmbedding", 23, rotary);
    r.add_range("ai.onnx.preview", "FlexAttention", 1, i64::MAX, flex_attention);
}

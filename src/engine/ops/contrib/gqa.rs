//! GroupQueryAttention of the contrib domain (Llama/Mistral/Phi exports of onnxruntime's model
//! builder): causal attention where `kv_num_heads` key/value heads serve `num_heads` query heads
//! in contiguous groups, with a BNSH KV cache. `seqlens_k[b] + 1` is row b's total length, so
//! right padding hides the keys past it; a prompt (S = total_sequence_length) starts at position
//! 0, later steps at `total − S`. Q/K/V come separate or packed in the query; `do_rotary` rotates
//! Q and K by the cos/sin caches at those positions. Position ids, attention bias, head sinks and
//! the QK output are refused by name.
use super::{add, attr_f, flag, positive};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

struct Gqa {
    n: i64,
    kv: i64,
    scale: Option<f64>,
    softcap: f64,
    /// Keys each query sees, itself included (none = unbounded).
    window: Option<i64>,
    rotary: Option<bool>,
    smooth: bool,
}

/// Optional inputs of newer onnxruntime releases that this implementation does not handle.
const REFUSED: [(usize, &str); 3] = [(9, "position_ids"), (10, "attention_bias"), (11, "head_sink")];

fn gqa(ctx: &OpCtx) -> Result<BoxOp> {
    let (n, kv) = (positive(ctx, "num_heads")?, positive(ctx, "kv_num_heads")?);
    if n % kv != 0 {
        return Err(ctx.node.attr_err("kv_num_heads", format!("{kv} must divide num_heads {n}")));
    }
    let softcap = attr_f(ctx, "softcap", 0.0)?;
    if softcap < 0.0 {
        return Err(ctx.node.attr_err("softcap", format!("must not be negative, got {softcap}")));
    }
    let window = match ctx.node.get_i("local_window_size")?.unwrap_or(-1) {
        -1 => None,
        w if w > 0 => Some(w),
        w => return Err(ctx.node.attr_err("local_window_size", format!("must be -1 or positive, got {w}"))),
    };
    if ctx.node.get_i("qk_output")?.unwrap_or(0) != 0 {
        return Err(ctx.node.attr_err("qk_output", "is not supported (only 0: no QK output)"));
    }
    if ctx.node.output.get(3).is_some_and(|o| !o.is_empty()) {
        return Err(ctx.node.node_err("output 3 (output_qk) is not supported"));
    }
    let rotary = flag(ctx, "do_rotary", false)?;
    let interleaved = flag(ctx, "rotary_interleaved", false)?;
    let g = Gqa {
        n,
        kv,
        scale: ctx.node.get_f("scale")?.filter(|&s| s != 0.0).map(f64::from),
        softcap,
        window,
        rotary: rotary.then_some(interleaved),
        smooth: flag(ctx, "smooth_softmax", false)?,
    };
    op(move |x| g.run(x))
}

impl Gqa {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        for (i, what) in REFUSED {
            if x.get(i).is_some() {
                return Err(x.err(format!("input {i} ({what}) is not supported")));
            }
        }
        let (q, k, v, h) = self.qkv(x)?;
        let (b, s) = (q.size()[0], q.size()[1]);
        let lens = x.ints(5)?.ok_or_else(|| x.err("input 5 (seqlens_k) is required"))?;
        let total = match x.ints(6)?.as_deref() {
            Some([t]) => *t,
            _ => return Err(x.err("input 6 (total_sequence_length) must be one integer")),
        };
        if total < s {
            return Err(x.err(format!("total_sequence_length {total} is less than the {s} new tokens")));
        }
        if lens.len() as i64 != b {
            return Err(x.err(format!("seqlens_k has {} entries for a batch of {b}", lens.len())));
        }
        let (pk, pv) = match (x.get(3), x.get(4)) {
            (Some(k), Some(v)) if k.dim() == 4 && k.size() == v.size() => (Some(k), Some(v)),
            (None, None) => (None, None),
            _ => return Err(x.err("past_key and past_value go together, both [B, kv_num_heads, P, head_size]")),
        };
        let p = pk.map_or(0, |t| t.size()[2]);
        if let Some(t) = pk {
            if t.size() != [b, self.kv, p, h] {
                return Err(x.err(format!("past_key {:?} must be [{b}, {}, P, {h}]", t.size(), self.kv)));
            }
        }
        let prompt = s == total;
        // Per row: the cached length before this call and the total length after it.
        let mut past = Vec::with_capacity(lens.len());
        for &l in &lens {
            let start = if prompt { 0 } else { l + 1 - s };
            if l + 1 > total.max(s) || start < 0 || start > p {
                return Err(x.err(format!(
                    "seqlens_k {lens:?} does not fit {s} new tokens, {p} past ones and total_sequence_length {total}"
                )));
            }
            past.push(start);
        }
        let (q, k) = match self.rotary {
            Some(interleaved) => (
                self.rotate(x, &q, &past, h, interleaved, self.n)?,
                self.rotate(x, &k, &past, h, interleaved, self.kv)?,
            ),
            None => (q, k),
        };
        let t = total.max(p);
        let present_k = present(x, pk, &k, &past, t, self.kv, h)?;
        let present_v = present(x, pv, &v, &past, t, self.kv, h)?;
        let y = self.attend(&q, &present_k, &present_v, &past, &lens, h)?;
        Ok(vec![y, present_k, present_v])
    }

    /// Q [B, S, N·H], K and V [B, S, KV·H] (split from a packed query when key/value are
    /// absent), and the head size.
    fn qkv(&self, x: &Inputs) -> Result<(Tensor, Tensor, Tensor, i64)> {
        let query = x.req(0)?;
        let sq = query.size();
        if sq.len() != 3 {
            return Err(x.err(format!("query {sq:?} must be [B, S, hidden]")));
        }
        match (x.get(1), x.get(2)) {
            (None, None) => {
                let heads = self.n + 2 * self.kv;
                if sq[2] % heads != 0 {
                    return Err(x.err(format!("packed QKV {sq:?}: hidden size is not a multiple of {heads} heads")));
                }
                let h = sq[2] / heads;
                let (dq, dk) = (self.n * h, self.kv * h);
                let q = query.f_narrow(2, 0, dq)?;
                Ok((q, query.f_narrow(2, dq, dk)?, query.f_narrow(2, dq + dk, dk)?, h))
            }
            (Some(k), Some(v)) => {
                let h = sq[2] / self.n;
                let want = [sq[0], sq[1], self.kv * h];
                if sq[2] % self.n != 0 || k.size() != want || v.size() != want {
                    return Err(x.err(format!(
                        "query {sq:?}, key {:?}, value {:?} must be [B, S, {} heads·H] and [B, S, {} heads·H]",
                        k.size(),
                        v.size(),
                        self.n,
                        self.kv
                    )));
                }
                Ok((query.shallow_clone(), k.shallow_clone(), v.shallow_clone(), h))
            }
            _ => Err(x.err("key and value go together (both absent means packed QKV in the query)")),
        }
    }

    /// Rotates [B, S, heads·H] at positions past_b + s by the rows of the cos/sin caches.
    fn rotate(&self, x: &Inputs, t: &Tensor, past: &[i64], h: i64, interleaved: bool, heads: i64) -> Result<Tensor> {
        let (cos, sin) = match (x.get(7), x.get(8)) {
            (Some(c), Some(s)) if c.dim() == 2 && c.size() == s.size() => (c, s),
            _ => return Err(x.err("do_rotary needs cos_cache and sin_cache, both [max_positions, rotary_dim/2]")),
        };
        let (rows, half) = (cos.size()[0], cos.size()[1]);
        let (b, s) = (t.size()[0], t.size()[1]);
        if 2 * half > h || half == 0 {
            return Err(x.err(format!("cos_cache {:?}: rotary dimension {} must be in 1..={h}", cos.size(), 2 * half)));
        }
        let last = past.iter().max().copied().unwrap_or(0) + s;
        if last > rows {
            return Err(x.err(format!("position {} is outside the {rows} cached positions", last - 1)));
        }
        let dev = t.device();
        let start = Tensor::from_slice(past).f_to_device(dev)?.f_unsqueeze(1)?;
        let pos = Tensor::f_arange(s, (Kind::Int64, dev))?.f_unsqueeze(0)?.f_add(&start)?.f_reshape([-1])?;
        let pick = |c: &Tensor| -> Result<Tensor> {
            Ok(c.f_index_select(0, &pos)?.f_reshape([b, s, 1, half])?.f_to_kind(t.kind())?)
        };
        let t4 = t.f_reshape([b, s, heads, h])?;
        crate::engine::ops::attention::rotate(&t4, &pick(cos)?, &pick(sin)?, 2 * half, interleaved, &t.size())
    }

    /// Softmax(Q·Kᵀ·scale, softcapped, masked)·V with the KV heads repeated to the query heads.
    /// Row b, query i (at position past_b + i) sees keys j ≤ past_b + i, j ≤ seqlens_k[b], and
    /// with a window j > past_b + i − window.
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, past: &[i64], lens: &[i64], h: i64) -> Result<Tensor> {
        let (b, s, t) = (q.size()[0], q.size()[1], k.size()[2]);
        let q = q.f_reshape([b, s, self.n, h])?.f_transpose(1, 2)?;
        let group = self.n / self.kv;
        let repeat = |m: &Tensor| -> Result<Tensor> {
            Ok(m.f_unsqueeze(2)?.f_expand([b, self.kv, group, t, h], false)?.f_reshape([b, self.n, t, h])?)
        };
        let scale = self.scale.unwrap_or(1.0 / (h as f64).sqrt());
        let mut scores = q.f_matmul(&repeat(k)?.f_transpose(-1, -2)?)?.f_mul_scalar(scale)?;
        if self.softcap > 0.0 {
            scores = scores.f_div_scalar(self.softcap)?.f_tanh()?.f_mul_scalar(self.softcap)?;
        }
        let dev = q.device();
        let ints =
            |v: &[i64]| -> Result<Tensor> { Ok(Tensor::from_slice(v).f_to_device(dev)?.f_reshape([b, 1, 1, 1])?) };
        let opts = (Kind::Int64, dev);
        let i = Tensor::f_arange(s, opts)?.f_reshape([1, 1, s, 1])?.f_add(&ints(past)?)?;
        let j = Tensor::f_arange(t, opts)?.f_reshape([1, 1, 1, t])?;
        let mut keep = j.f_le_tensor(&i)?.f_logical_and(&j.f_le_tensor(&ints(lens)?)?)?;
        if let Some(w) = self.window {
            keep = keep.f_logical_and(&j.f_gt_tensor(&i.f_sub_scalar(w)?)?)?;
        }
        // A finite floor rather than −∞: a row with no visible key stays finite.
        let floor = if scores.kind() == Kind::Half { -65504.0 } else { f64::from(f32::MIN) };
        scores = scores.f_masked_fill(&keep.f_logical_not()?, floor)?;
        let probs = if self.smooth {
            // One extra zero logit in the denominator.
            let zero = Tensor::f_zeros([b, self.n, s, 1], (scores.kind(), dev))?;
            Tensor::f_cat(&[scores, zero], -1)?.f_softmax(-1, None::<Kind>)?.f_narrow(-1, 0, t)?
        } else {
            scores.f_softmax(-1, None::<Kind>)?
        };
        let y = probs.f_matmul(&repeat(v)?)?;
        Ok(y.f_transpose(1, 2)?.f_reshape([b, s, self.n * h])?)
    }
}

/// The present cache [B, KV, T, H]: row b keeps its first past_b cached positions, then the S
/// new ones; positions after those are zero (onnxruntime leaves them unwritten).
fn present(x: &Inputs, cache: Option<&Tensor>, new: &Tensor, past: &[i64], t: i64, kv: i64, h: i64) -> Result<Tensor> {
    let (b, s) = (new.size()[0], new.size()[1]);
    x.bounded(&[b, kv, t, h])?;
    let new = new.f_reshape([b, s, kv, h])?.f_transpose(1, 2)?;
    let opts = (new.kind(), new.device());
    let p = cache.map_or(0, |c| c.size()[2]);
    let mut parts = vec![];
    if let Some(c) = cache {
        parts.push(c.f_to_kind(new.kind())?);
    }
    parts.extend([new, Tensor::f_zeros([b, kv, 1, h], opts)?]);
    let all = Tensor::f_cat(&parts, 2)?;
    // Where present position j of a row with past pb comes from in `all`.
    let slot = |pb: i64, j: i64| match j - pb {
        _ if j < pb => j,
        d if d < s => p + d,
        _ => p + s,
    };
    let idx: Vec<i64> = past.iter().flat_map(|&pb| (0..t).map(move |j| slot(pb, j))).collect();
    let idx = Tensor::from_slice(&idx).f_to_device(all.device())?.f_reshape([b, 1, t, 1])?;
    Ok(all.f_gather(2, &idx.f_expand([b, kv, t, h], false)?, false)?)
}

pub fn register(r: &mut Registry) {
    add(r, "GroupQueryAttention", gqa);
}

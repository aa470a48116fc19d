//! Linear-recurrent sequence blocks of opset 27 (Gated DeltaNet, Mamba): LinearAttention and
//! CausalConvWithState. The recurrence is unrolled over time with differentiable torch ops;
//! half-precision inputs compute in float32, as the spec's reference does.
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// The kind to compute in: float32 for 16-bit floats, the input's own kind otherwise.
fn wide(k: Kind) -> Kind {
    if matches!(k, Kind::Half | Kind::BFloat16) {
        Kind::Float
    } else {
        k
    }
}

/// [B, T, H·D] → [B, H, T, D] in the compute kind.
fn heads(x: &Inputs, t: &Tensor, h: i64, what: &str) -> Result<Tensor> {
    let s = t.size();
    if s.len() != 3 || s[2] % h != 0 {
        return Err(x.err(format!("{what} {s:?} must be [batch, time, {h} heads × size]")));
    }
    Ok(t.f_to_kind(wide(t.kind()))?.f_reshape([s[0], s[1], h, s[2] / h])?.f_transpose(1, 2)?)
}

#[derive(Clone, Copy)]
struct LinearAttn {
    q_heads: i64,
    kv_heads: i64,
    scale: Option<f64>,
    /// State decays by exp(decay) each step ("gated", "gated_delta").
    gated: bool,
    /// Writes only the prediction error, scaled by beta ("delta", "gated_delta").
    delta: bool,
}

impl LinearAttn {
    fn new(ctx: &OpCtx) -> Result<Self> {
        let n = ctx.node;
        let (gated, delta) = match n.get_s("update_rule")?.as_deref().unwrap_or("gated_delta") {
            "linear" => (false, false),
            "gated" => (true, false),
            "delta" => (false, true),
            "gated_delta" => (true, true),
            u => {
                return Err(n.attr_err("update_rule", format!("must be linear, gated, delta or gated_delta, got '{u}'")))
            }
        };
        let q_heads = n.req_i("q_num_heads")?;
        let kv_heads = n.req_i("kv_num_heads")?;
        if q_heads <= 0 || kv_heads <= 0 || q_heads % kv_heads != 0 {
            return Err(n.attr_err("q_num_heads", format!("{q_heads} must be a positive multiple of {kv_heads}")));
        }
        // 0 (the default) means 1/√d_k.
        let scale = n.get_f("scale")?.filter(|&s| s != 0.0).map(f64::from);
        Ok(LinearAttn { q_heads, kv_heads, scale, gated, delta })
    }

    /// A per-step gate input (decay, beta) as [B, H, T, D]: its last axis holds one value per
    /// KV head (D = 1), per head and key feature (D = d_k), or one shared by all heads (H = 1).
    fn gate(&self, x: &Inputs, i: usize, what: &str, allowed: &[i64]) -> Result<Option<Tensor>> {
        let Some(t) = x.get(i) else { return Ok(None) };
        let last = t.size().last().copied().unwrap_or(0);
        if t.dim() != 3 || !allowed.contains(&last) {
            return Err(x.err(format!("{what} {:?} must end in one of {allowed:?}", t.size())));
        }
        Ok(Some(heads(x, t, if last == 1 { 1 } else { self.kv_heads }, what)?))
    }

    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let (q, k, v) = (x.req(0)?, x.req(1)?, x.req(2)?);
        let out_kind = q.kind();
        let (q, k, v) = (
            heads(x, q, self.q_heads, "query")?,
            heads(x, k, self.kv_heads, "key")?,
            heads(x, v, self.kv_heads, "value")?,
        );
        let (b, t_len, dk, dv) = (q.size()[0], q.size()[2], q.size()[3], v.size()[3]);
        let decay = self.gate(x, 4, "decay", &[self.kv_heads, self.kv_heads * dk])?;
        let beta = self.gate(x, 5, "beta", &[self.kv_heads, 1])?;
        if decay.is_some() != self.gated || beta.is_some() != self.delta {
            return Err(x.err("decay must be given exactly for gated rules and beta exactly for delta rules"));
        }
        let mut state = match x.get(3) {
            Some(p) if p.size() == [b, self.kv_heads, dk, dv] => p.f_to_kind(q.kind())?,
            Some(p) => {
                return Err(x.err(format!("past_state {:?} must be {:?}", p.size(), [b, self.kv_heads, dk, dv])))
            }
            None => Tensor::f_zeros([b, self.kv_heads, dk, dv], (q.kind(), q.device()))?,
        };
        let state_kind = x.get(3).map_or(out_kind, |p| p.kind());
        let scale = self.scale.unwrap_or(1.0 / (dk as f64).sqrt());
        let group = self.q_heads / self.kv_heads;
        let mut outs = Vec::with_capacity(t_len as usize);
        for t in 0..t_len {
            let (kt, mut vt) = (k.f_select(2, t)?, v.f_select(2, t)?);
            if let Some(g) = &decay {
                // exp(g) scales the key axis of the state: [B, H, 1 or dk] → [B, H, ·, 1].
                state = state.f_mul(&g.f_select(2, t)?.f_exp()?.f_unsqueeze(-1)?)?;
            }
            if let Some(bt) = &beta {
                let recalled = kt.f_unsqueeze(-2)?.f_matmul(&state)?.f_squeeze_dim(-2)?;
                vt = vt.f_sub(&recalled)?.f_mul(&bt.f_select(2, t)?)?;
            }
            state = state.f_add(&kt.f_unsqueeze(-1)?.f_mul(&vt.f_unsqueeze(-2)?)?)?;
            let read =
                if group == 1 { state.shallow_clone() } else { state.f_repeat_interleave_self_int(group, 1, None)? };
            outs.push(q.f_select(2, t)?.f_unsqueeze(-2)?.f_matmul(&read)?.f_squeeze_dim(-2)?.f_mul_scalar(scale)?);
        }
        let y = Tensor::f_stack(&outs, 1)?.f_reshape([b, t_len, self.q_heads * dv])?;
        Ok(vec![y.f_to_kind(out_kind)?, state.f_to_kind(state_kind)?])
    }
}

fn linear_attention(ctx: &OpCtx) -> Result<BoxOp> {
    let a = LinearAttn::new(ctx)?;
    op(move |x| a.run(x))
}

/// Depthwise causal 1-D convolution over [past_state, input]; the last k−1 positions of that
/// concatenation carry over as present_state. Optional fused SiLU.
fn causal_conv(ctx: &OpCtx) -> Result<BoxOp> {
    let silu = match ctx.node.get_s("activation")?.as_deref().unwrap_or("none") {
        "none" => false,
        "silu" | "swish" => true,
        a => return Err(ctx.node.attr_err("activation", format!("must be none, silu or swish, got '{a}'"))),
    };
    op(move |x| {
        let (inp, w) = (x.req(0)?, x.req(1)?);
        let (s, ws) = (inp.size(), w.size());
        if s.len() != 3 || ws.len() != 3 || ws[0] != s[1] || ws[1] != 1 || ws[2] < 1 {
            return Err(x.err(format!("want input [B, C, L] and weight [C, 1, k]; got {s:?} and {ws:?}")));
        }
        let (c, k) = (s[1], ws[2]);
        let past = match x.get(3) {
            Some(p) if p.size() == [s[0], c, k - 1] => p.shallow_clone(),
            Some(p) => return Err(x.err(format!("past_state {:?} must be {:?}", p.size(), [s[0], c, k - 1]))),
            None => Tensor::f_zeros([s[0], c, k - 1], (inp.kind(), inp.device()))?,
        };
        let padded = Tensor::f_cat(&[&past, inp], 2)?;
        let kind = wide(inp.kind());
        let bias = x.get(2).map(|b| b.f_to_kind(kind)).transpose()?;
        let y = padded.f_to_kind(kind)?.f_conv1d(&w.f_to_kind(kind)?, bias.as_ref(), [1], [0], [1], c)?;
        let y = if silu { y.f_silu()? } else { y };
        let len = padded.size()[2];
        Ok(vec![y.f_to_kind(inp.kind())?, padded.f_narrow(2, len - (k - 1), k - 1)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("LinearAttention", 27, linear_attention);
    r.add("CausalConvWithState", 27, causal_conv);
}

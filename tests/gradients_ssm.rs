//! Finite-difference gradient checks for LinearAttention and CausalConvWithState (see
//! gradients/harness.rs): the unrolled state recurrence passes exact gradients to queries, keys,
//! values, decays, update rates, the carried state, the kernel and the bias.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case};
use proptest::prelude::*;
use proptest::sample::select;

proptest! {
    #![proptest_config(cfg(24))]

    #[test]
    fn linear_attention(rule in select(vec!["linear", "gated", "delta", "gated_delta"]), groups in 1..=2i64,
                        kv_heads in 1..=2i64, t in 1..=3i64, past: bool, per_feature: bool, shared_beta: bool,
                        scaled: bool, seed: u64) {
        let (b, dk, dv) = (2i64, 2i64, 3i64);
        let qh = kv_heads * groups;
        let mut c = Case::new("LinearAttention", 27, seed);
        c.i("q_num_heads", qh).i("kv_num_heads", kv_heads).s("update_rule", rule);
        if scaled {
            c.f("scale", 0.8);
        }
        let (q, k, v) = (c.g.val(&[b, t, qh * dk]), c.g.val(&[b, t, kv_heads * dk]), c.g.val(&[b, t, kv_heads * dv]));
        c.input(q).input(k).param(v);
        let (gated, delta) = (rule.starts_with("gated"), rule.ends_with("delta"));
        if past {
            let s = c.g.val(&[b, kv_heads, dk, dv]);
            c.param(s);
        } else if gated || delta {
            c.absent();
        }
        if gated {
            let d = c.g.uniform(&[b, t, if per_feature { kv_heads * dk } else { kv_heads }], -1.0, 0.0);
            c.input(d);
        } else if delta {
            c.absent();
        }
        if delta {
            let beta = c.g.uniform(&[b, t, if shared_beta { 1 } else { kv_heads }], 0.1, 0.9);
            c.input(beta);
        }
        c.outputs(2);
        c.check()?;
    }

    #[test]
    fn causal_conv(k in 1..=4i64, len in 1..=5i64, bias: bool, past: bool,
                   act in select(vec!["none", "silu", "swish"]), seed: u64) {
        let (b, ch) = (2i64, 3i64);
        let mut c = Case::new("CausalConvWithState", 27, seed);
        c.s("activation", act);
        let (x, w) = (c.g.val(&[b, ch, len]), c.g.val(&[ch, 1, k]));
        c.input(x).param(w);
        if bias {
            let bv = c.g.val(&[ch]);
            c.param(bv);
        } else if past {
            c.absent();
        }
        if past {
            let p = c.g.val(&[b, ch, k - 1]);
            c.input(p);
        }
        c.outputs(2);
        c.check()?;
    }
}

//! Finite-difference gradient checks for Attention and RotaryEmbedding (see gradients/harness.rs):
//! Q/K/V, the KV cache, float masks and the sin/cos caches must all receive exact gradients.
//! FlexAttention shares Attention's score and grouping code; the harness builds default-domain
//! nodes only, so it is not checked here.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case};
use proptest::prelude::*;
use proptest::sample::select;

proptest! {
    #![proptest_config(cfg(16))]

    /// 4-D (or 3-D with head attributes) attention with GQA, masks, causality, softcap, scale
    /// and a KV cache; every output (Y, present K/V, the chosen qk_matmul_output) is checked.
    #[test]
    fn attention(three_d: bool, groups in 1..=2i64, kv_heads in 1..=2i64, lq in 1..=3i64, lk in 1..=3i64,
                 past in 0..=2i64, mask in 0..3u8, causal: bool, softcap: bool, scaled: bool,
                 mode in select(vec![0i64, 1, 3]), seed: u64) {
        let (qh, d, dv, b) = (kv_heads * groups, 2i64, 3i64, 2i64);
        let mut c = Case::new("Attention", 23, seed);
        c.i("is_causal", causal as i64).i("qk_matmul_output_mode", mode);
        if softcap {
            c.f("softcap", 1.5);
        }
        if scaled {
            c.f("scale", 0.7);
        }
        let (qd, kd, vd) = if three_d {
            c.i("q_num_heads", qh).i("kv_num_heads", kv_heads);
            (vec![b, lq, qh * d], vec![b, lk, kv_heads * d], vec![b, lk, kv_heads * dv])
        } else {
            (vec![b, qh, lq, d], vec![b, kv_heads, lk, d], vec![b, kv_heads, lk, dv])
        };
        let (q, k, v) = (c.g.val(&qd), c.g.val(&kd), c.g.val(&vd));
        c.input(q).input(k).param(v);
        let total = past + lk;
        match mask {
            0 => { c.absent(); }
            1 => { let m = c.g.val(&[lq, total]); c.param(m); }
            _ => {
                // Key 0 stays visible so no row is fully masked (that row would be NaN).
                let mut keep = c.g.bools((lq * total) as usize);
                (0..lq as usize).for_each(|i| keep[i * total as usize] = true);
                c.bools(&[lq, total], &keep);
            }
        }
        if past > 0 {
            let (pk, pv) = (c.g.val(&[b, kv_heads, past, d]), c.g.val(&[b, kv_heads, past, dv]));
            c.param(pk).param(pv);
        }
        c.outputs(if past > 0 { 4 } else { 1 });
        c.check()?;
    }

    #[test]
    fn rotary(three_d: bool, interleaved: bool, partial: bool, with_ids: bool, seed: u64) {
        let (b, heads, s, d) = (2i64, 2i64, 3i64, 4i64);
        let r = if partial { 2 } else { d };
        let mut c = Case::new("RotaryEmbedding", 23, seed);
        c.i("interleaved", interleaved as i64);
        if partial {
            c.i("rotary_embedding_dim", r);
        }
        let xd = if three_d {
            c.i("num_heads", heads);
            vec![b, s, heads * d]
        } else {
            vec![b, heads, s, d]
        };
        let x = c.g.val(&xd);
        c.input(x);
        let cache = if with_ids { vec![5, r / 2] } else { vec![b, s, r / 2] };
        let (cos, sin) = (c.g.val(&cache), c.g.val(&cache));
        c.param(cos).param(sin);
        if with_ids {
            let ids = c.g.ints((b * s) as usize, 0, 5);
            c.ints_shaped(&[b, s], &ids);
        }
        c.check()?;
    }
}

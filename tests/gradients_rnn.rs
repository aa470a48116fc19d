//! Finite-difference gradient checks for RNN, GRU and LSTM (see gradients/harness.rs): the
//! unrolled recurrence must pass exact gradients to X, W, R, B, the initial states and the
//! peepholes, in every direction and layout, with and without sequence_lens.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case};
use proptest::prelude::*;
use proptest::sample::select;

proptest! {
    #![proptest_config(cfg(24))]

    #[test]
    fn recurrent(op in select(vec!["RNN", "GRU", "LSTM"]), dir in select(vec!["forward", "reverse", "bidirectional"]),
                 batch_first: bool, lens: bool, init: bool, bias: bool, peep: bool, lbr: bool, clip: bool,
                 seed: u64) {
        let gates = match op { "RNN" => 1, "GRU" => 3, _ => 4 };
        let (t, b, i, h) = (3i64, 2i64, 2i64, 2i64);
        let d = if dir == "bidirectional" { 2 } else { 1 };
        let mut c = Case::new(op, 14, seed);
        c.i("hidden_size", h).s("direction", dir).i("layout", batch_first as i64);
        if op == "GRU" {
            c.i("linear_before_reset", lbr as i64);
        }
        if clip {
            // Far above the pre-activations drawn here, so no clamp kink is near.
            c.f("clip", 50.0);
        }
        let x = c.g.val(&if batch_first { [b, t, i] } else { [t, b, i] });
        let (w, r) = (c.g.val(&[d, gates * h, i]), c.g.val(&[d, gates * h, h]));
        c.input(x).param(w).param(r);
        let lstm = op == "LSTM";
        let want = if lstm && peep { 8 } else if init { if lstm { 7 } else { 6 } } else if lens { 5 } else if bias { 4 } else { 3 };
        if want > 3 {
            if bias { let bv = c.g.val(&[d, 2 * gates * h]); c.param(bv); } else { c.absent(); }
        }
        if want > 4 {
            if lens { c.ints(&[3, 1]); } else { c.absent(); }
        }
        let state = if batch_first { [b, d, h] } else { [d, b, h] };
        for _ in 5..want.min(if lstm { 7 } else { 6 }) {
            if init { let s = c.g.val(&state); c.param(s); } else { c.absent(); }
        }
        if want == 8 {
            let p = c.g.val(&[d, 3 * h]);
            c.param(p);
        }
        c.outputs(if lstm { 3 } else { 2 });
        c.check()?;
    }
}

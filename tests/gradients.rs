//! Property test: the engine's gradients are right for every differentiable op that ResNet, VGG,
//! MobileNet-V2/V3, EfficientNet, ViT and BERT-style exports use.
//!
//! Each case is one ONNX node built in memory with f64 (DOUBLE) graph inputs and dynamic
//! initializers, both made requires-grad leaves; the loss `Σ sum(y · w)` (fixed random `w`) is
//! back-propagated and every leaf's gradient is compared with a central finite difference
//! (eps 1e-6, tolerance 1e-5 relative + 1e-7 absolute; see gradients/harness.rs). Inputs are drawn
//! away from kinks (Relu/Clip/Abs at their corners, HardSigmoid's saturation points) and ties
//! (Max/MaxPool/ReduceMax use pairwise distinct values), where a derivative does not exist.
//! Shapes and attributes come from proptest (so failures shrink); values from a seed it draws.
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case, Role};
use proptest::collection::vec as vec_of;
use proptest::prelude::*;
use proptest::sample::{select, Index};

fn role(param: bool) -> Role {
    if param {
        Role::Param
    } else {
        Role::Input
    }
}

/// Output size of a window op along one axis (floor or ceil mode), ONNX's explicit-pad rule.
fn out_len(len: i64, k: i64, s: i64, d: i64, pads: i64, ceil: bool) -> i64 {
    let span = len + pads - ((k - 1) * d + 1);
    if ceil {
        (span + s - 1).div_euclid(s) + 1
    } else {
        span.div_euclid(s) + 1
    }
}

/// Window geometry for `d` spatial axes: kernel, strides, dilations, pads (begin…, end…), sizes.
#[derive(Debug, Clone)]
struct Geom {
    k: Vec<i64>,
    s: Vec<i64>,
    dil: Vec<i64>,
    pads: Vec<i64>,
    size: Vec<i64>,
}

prop_compose! {
    fn geom(max_rank: usize, max_k: i64, max_pad: i64)(d in 1..=max_rank)(
        k in vec_of(1..=max_k, d),
        s in vec_of(1..=2i64, d),
        dil in vec_of(1..=2i64, d),
        pads in vec_of(0..=max_pad, 2 * d),
        extra in vec_of(0..=3i64, d),
    ) -> Geom {
        // Big enough that a window fits without padding.
        let size = k.iter().zip(&dil).zip(&extra).map(|((k, d), e)| (k - 1) * d + 1 + e).collect();
        Geom { k, s, dil, pads, size }
    }
}

proptest! {
    #![proptest_config(cfg(32))]

    #[test]
    fn conv(g in geom(3, 3, 2), groups in 1..=3i64, cin in 1..=2i64, cout in 1..=2i64, n in 1..=2i64,
            bias: bool, auto in select(vec!["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]),
            seed: u64) {
        let mut c = Case::new("Conv", 11, seed);
        let d = g.k.len();
        c.ints_attr("kernel_shape", &g.k).ints_attr("strides", &g.s).ints_attr("dilations", &g.dil).i("group", groups);
        if auto == "NOTSET" {
            c.ints_attr("pads", &g.pads);
        } else {
            c.s("auto_pad", auto);
        }
        // 3-D convolutions stay small: the finite differences run one forward per element.
        let size: Vec<i64> =
            if d == 3 { g.k.iter().zip(&g.dil).map(|(k, dl)| (k - 1) * dl + 1).collect() } else { g.size };
        let x = c.g.val(&[&[n, groups * cin][..], &size].concat());
        let w = c.g.val(&[&[groups * cout, cin][..], &g.k].concat());
        c.input(x).param(w);
        if bias {
            let b = c.g.val(&[groups * cout]);
            c.param(b);
        }
        c.check()?;
    }

    #[test]
    fn conv_transpose(g in geom(2, 3, 1), groups in 1..=2i64, cin in 1..=2i64, cout in 1..=2i64, bias: bool,
                      opad in vec_of(0..=1i64, 2), seed: u64) {
        let d = g.k.len();
        // output_padding must be below the stride or the dilation; the output must not be empty.
        let opad: Vec<i64> = (0..d).map(|i| opad[i].min(g.s[i].max(g.dil[i]) - 1)).collect();
        let size: Vec<i64> = g.size.iter().map(|&s| s.min(4)).collect();
        for i in 0..d {
            let full = g.s[i] * (size[i] - 1) + opad[i] + (g.k[i] - 1) * g.dil[i] + 1;
            prop_assume!(full - g.pads[i] - g.pads[i + d] >= 1);
        }
        let mut c = Case::new("ConvTranspose", 11, seed);
        c.ints_attr("kernel_shape", &g.k).ints_attr("strides", &g.s).ints_attr("dilations", &g.dil)
            .ints_attr("pads", &g.pads).ints_attr("output_padding", &opad).i("group", groups);
        let x = c.g.val(&[&[1, groups * cin][..], &size].concat());
        let w = c.g.val(&[&[groups * cin, cout][..], &g.k].concat());
        c.input(x).param(w);
        if bias {
            let b = c.g.val(&[groups * cout]);
            c.param(b);
        }
        c.check()?;
    }

    #[test]
    fn gemm(m in 1..=4i64, k in 1..=4i64, n in 1..=4i64, ta: bool, tb: bool,
            alpha in select(vec![1.0, 0.5, -1.25]), beta in select(vec![1.0, 0.75, -2.0]),
            cshape in 0..6usize, b_param: bool, seed: u64) {
        let mut c = Case::new("Gemm", 13, seed);
        c.i("transA", ta as i64).i("transB", tb as i64).f("alpha", alpha).f("beta", beta);
        let a = c.g.val(&if ta { [k, m] } else { [m, k] });
        let b = c.g.val(&if tb { [n, k] } else { [k, n] });
        c.input(a).arg(role(b_param), b);
        // C broadcasts to [M, N] in every shape ONNX allows (or is absent).
        let cdims = [None, Some(vec![n]), Some(vec![m, n]), Some(vec![1, n]), Some(vec![m, 1]), Some(vec![])];
        if let Some(d) = &cdims[cshape] {
            let cv = c.g.val(d);
            c.param(cv);
        }
        c.check()?;
    }

    #[test]
    fn matmul(ra in 1..=4usize, rb in 1..=4usize, m in 1..=3i64, k in 1..=3i64, n in 1..=3i64,
              batch in vec_of((1..=3i64, 0..3u8), 2), b_param: bool, seed: u64) {
        // Batch dims of each side, right-aligned; either side may be 1 (broadcast) or missing.
        let bd = |r: usize, side: u8| -> Vec<i64> {
            let nb = r.saturating_sub(2);
            batch[2 - nb..].iter().map(|&(d, w)| if w == side { 1 } else { d }).collect()
        };
        let adims = if ra == 1 { vec![k] } else { [bd(ra, 1), vec![m, k]].concat() };
        let bdims = if rb == 1 { vec![k] } else { [bd(rb, 2), vec![k, n]].concat() };
        let mut c = Case::new("MatMul", 13, seed);
        let a = c.g.val(&adims);
        let b = c.g.val(&bdims);
        c.input(a).arg(role(b_param), b);
        c.check()?;
    }

    #[test]
    fn batch_norm(opset in select(vec![9i64, 14, 15]), n in 1..=3i64, ch in 1..=4i64,
                  spatial in vec_of(1..=3i64, 0..=2), eps in select(vec![1e-5, 1e-3, 0.1]), seed: u64) {
        let mut c = Case::new("BatchNormalization", opset, seed);
        c.f("epsilon", eps);
        let x = c.g.val(&[&[n, ch][..], &spatial].concat());
        let (scale, b, mean) = (c.g.val(&[ch]), c.g.val(&[ch]), c.g.val(&[ch]));
        let var = c.g.uniform(&[ch], 0.5, 1.5);
        c.input(x).param(scale).param(b).param(mean).param(var);
        c.check()?;
    }

    #[test]
    fn layer_norm(dims in vec_of(1..=4i64, 1..=4), axis in any::<Index>(),
                  eps in select(vec![1e-5, 1e-2]), bias: bool, seed: u64) {
        let r = dims.len();
        let axis = axis.index(2 * r) as i64 - r as i64;
        let a = axis.rem_euclid(r as i64) as usize;
        let mut c = Case::new("LayerNormalization", 17, seed);
        c.i("axis", axis).f("epsilon", eps);
        let x = c.g.val(&dims);
        let scale = c.g.val(&dims[a..]);
        c.input(x).param(scale);
        if bias {
            let b = c.g.val(&dims[a..]);
            c.param(b);
        }
        c.check()?;
    }

    #[test]
    fn softmax(op in select(vec!["Softmax", "LogSoftmax"]), opset in select(vec![11i64, 13]),
               dims in vec_of(1..=4i64, 1..=4), axis in any::<Index>(), seed: u64) {
        let r = dims.len();
        let mut c = Case::new(op, opset, seed);
        c.i("axis", axis.index(2 * r) as i64 - r as i64);
        let x = c.g.uniform(&dims, -3.0, 3.0);
        c.input(x);
        c.check()?;
    }
}

/// A unary op: name, opset, attributes, and how to draw its input.
struct Unary {
    op: &'static str,
    opset: i64,
    attrs: fn(&mut Case),
    draw: fn(&mut Case, &[i64]) -> harness::Val,
}

fn none(_: &mut Case) {}
fn plain(c: &mut Case, d: &[i64]) -> harness::Val {
    c.g.uniform(d, -3.0, 3.0)
}
fn off_zero(c: &mut Case, d: &[i64]) -> harness::Val {
    c.g.away(d, -2.0, 2.0, &[0.0], 0.05)
}
fn positive(c: &mut Case, d: &[i64]) -> harness::Val {
    c.g.uniform(d, 0.3, 3.0)
}

const UNARY: &[Unary] = &[
    Unary { op: "Relu", opset: 14, attrs: none, draw: off_zero },
    Unary {
        op: "LeakyRelu",
        opset: 16,
        attrs: |c| {
            c.f("alpha", 0.1);
        },
        draw: off_zero,
    },
    Unary { op: "Sigmoid", opset: 13, attrs: none, draw: plain },
    Unary { op: "Tanh", opset: 13, attrs: none, draw: plain },
    // Kinks at (0 − beta)/alpha and (1 − beta)/alpha.
    Unary {
        op: "HardSigmoid",
        opset: 6,
        attrs: |c| {
            c.f("alpha", 0.25).f("beta", 0.375);
        },
        draw: |c, d| c.g.away(d, -5.0, 5.0, &[-1.5, 2.5], 0.05),
    },
    Unary { op: "HardSigmoid", opset: 6, attrs: none, draw: |c, d| c.g.away(d, -4.0, 4.0, &[-2.5, 2.5], 0.05) },
    Unary { op: "HardSwish", opset: 14, attrs: none, draw: |c, d| c.g.away(d, -4.5, 4.5, &[-3.0, 3.0], 0.05) },
    Unary { op: "Gelu", opset: 20, attrs: none, draw: plain },
    Unary {
        op: "Gelu",
        opset: 20,
        attrs: |c| {
            c.s("approximate", "tanh");
        },
        draw: plain,
    },
    Unary { op: "Erf", opset: 13, attrs: none, draw: plain },
    Unary { op: "Sqrt", opset: 13, attrs: none, draw: positive },
    Unary { op: "Exp", opset: 13, attrs: none, draw: plain },
    Unary { op: "Log", opset: 13, attrs: none, draw: positive },
    Unary { op: "Neg", opset: 13, attrs: none, draw: plain },
    Unary { op: "Abs", opset: 13, attrs: none, draw: off_zero },
    Unary { op: "Reciprocal", opset: 13, attrs: none, draw: |c, d| c.g.away(d, -2.0, 2.0, &[0.0], 0.3) },
    Unary { op: "Softplus", opset: 1, attrs: none, draw: plain },
    Unary {
        op: "Elu",
        opset: 6,
        attrs: |c| {
            c.f("alpha", 0.7);
        },
        draw: off_zero,
    },
    Unary { op: "Selu", opset: 6, attrs: none, draw: off_zero },
    Unary { op: "Mish", opset: 18, attrs: none, draw: plain },
    Unary { op: "Identity", opset: 16, attrs: none, draw: plain },
    Unary { op: "Dropout", opset: 13, attrs: none, draw: plain },
    // Clip before opset 11 takes attributes; ReLU6 is Clip(0, 6).
    Unary {
        op: "Clip",
        opset: 6,
        attrs: |c| {
            c.f("min", -0.5).f("max", 0.75);
        },
        draw: |c, d| c.g.away(d, -2.0, 2.0, &[-0.5, 0.75], 0.05),
    },
    Unary { op: "Clip", opset: 13, attrs: none, draw: |c, d| c.g.away(d, -1.0, 7.0, &[0.0, 6.0], 0.05) },
    Unary { op: "Clip", opset: 11, attrs: none, draw: |c, d| c.g.away(d, -1.0, 7.0, &[6.0], 0.05) },
    Unary {
        op: "Flatten",
        opset: 13,
        attrs: |c| {
            c.i("axis", -1);
        },
        draw: plain,
    },
    Unary { op: "GlobalAveragePool", opset: 1, attrs: none, draw: plain },
    Unary { op: "GlobalMaxPool", opset: 1, attrs: none, draw: |c, d| c.g.distinct(d) },
];

proptest! {
    #![proptest_config(cfg(24))]

    /// Every op of the table on the same shape.
    #[test]
    fn unary(dims in vec_of(1..=4i64, 0..=4), seed: u64) {
        for (i, u) in UNARY.iter().enumerate() {
            let mut dims = dims.clone();
            if u.op.starts_with("Global") {
                dims.splice(0..0, [2, 2, 3]); // N, C, and at least one spatial axis
                dims.truncate(5);
            }
            if u.op == "Flatten" && dims.is_empty() {
                dims.push(3);
            }
            let mut c = Case::new(u.op, u.opset, seed ^ i as u64);
            (u.attrs)(&mut c);
            let x = (u.draw)(&mut c, &dims);
            c.input(x);
            let six = harness::Val { dims: vec![], v: vec![6.0] };
            match (u.op, u.opset) {
                ("Clip", 13) => c.constant(harness::Val { dims: vec![], v: vec![0.0] }).constant(six),
                ("Clip", 11) => c.absent().constant(six), // no lower bound
                _ => &mut c,
            };
            c.check()?;
        }
    }
}

/// Two shapes that broadcast together (numpy rules): a shared shape with some axes set to 1
/// on either side, and leading axes dropped from one of them.
fn broadcast_pair(dims: &[(i64, u8)], drop: usize, drop_a: bool) -> (Vec<i64>, Vec<i64>) {
    let a: Vec<i64> = dims.iter().map(|&(d, w)| if w == 1 { 1 } else { d }).collect();
    let b: Vec<i64> = dims.iter().map(|&(d, w)| if w == 2 { 1 } else { d }).collect();
    let drop = drop.min(dims.len());
    if drop_a {
        (a[drop..].to_vec(), b)
    } else {
        (a, b[drop..].to_vec())
    }
}

proptest! {
    #![proptest_config(cfg(32))]

    /// Add, Sub, Mul, Div and Pow on the same broadcast shapes.
    #[test]
    fn binary(opset in select(vec![7i64, 13, 14]), dims in vec_of((1..=3i64, 0..4u8), 0..=4),
              drop in 0..3usize, drop_a: bool, b_param: bool, same: bool, seed: u64) {
        for op in ["Add", "Sub", "Mul", "Div", "Pow"] {
            let opset = if op == "Pow" { opset.min(13) } else { opset };
            let mut c = Case::new(op, opset, seed);
            if same {
                // One value on both sides (one name read twice): the two paths must add up.
                let (a, _) = broadcast_pair(&dims, 0, true);
                let x = if op == "Pow" { c.g.uniform(&a, 0.5, 2.0) } else { c.g.away(&a, -2.0, 2.0, &[0.0], 0.5) };
                c.arg(role(b_param), x).same_as(0);
            } else {
                let (a, b) = broadcast_pair(&dims, drop, drop_a);
                let x = if op == "Pow" { c.g.uniform(&a, 0.5, 2.0) } else { c.g.val(&a) };
                let y = match op {
                    "Div" => c.g.away(&b, -2.0, 2.0, &[0.0], 0.5),
                    "Pow" => c.g.uniform(&b, -2.0, 2.0),
                    _ => c.g.val(&b),
                };
                c.input(x).arg(role(b_param), y);
            }
            c.check()?;
        }
    }

    #[test]
    fn variadic(op in select(vec!["Sum", "Mean", "Max", "Min"]), n in 1..=3usize,
                dims in vec_of((1..=3i64, 0..4u8), 0..=3), seed: u64) {
        let mut c = Case::new(op, 13, seed);
        // Distinct values across all operands, so Max/Min have no ties.
        let total: i64 = 3 * dims.iter().map(|d| d.0).product::<i64>();
        let pool = c.g.distinct(&[total]).v;
        let mut at = 0;
        for i in 0..n {
            let (a, b) = broadcast_pair(&dims, i, i % 2 == 0);
            let d = if i == 1 { b } else { a };
            let len = d.iter().product::<i64>() as usize;
            c.arg(role(i == 2), harness::Val { dims: d, v: pool[at..at + len].to_vec() });
            at += len;
        }
        c.check()?;
    }

    #[test]
    fn where_op(dims in vec_of((1..=3i64, 0..4u8), 0..=3), drop in 0..2usize, seed: u64) {
        let mut c = Case::new("Where", 16, seed);
        let (a, b) = broadcast_pair(&dims, drop, true);
        let cond = c.g.bools(a.iter().product::<i64>() as usize);
        c.bools(&a, &cond);
        let (x, y) = (c.g.val(&b), c.g.val(&a));
        c.input(x).param(y);
        c.check()?;
    }
}

proptest! {
    #![proptest_config(cfg(32))]

    #[test]
    fn max_pool(g in geom(2, 3, 1), ceil: bool, opset in select(vec![10i64, 12]), seed: u64) {
        // torch (like most runtimes) wants pads ≤ kernel/2; ONNX models respect it.
        let d = g.k.len();
        let pads: Vec<i64> = (0..2 * d).map(|i| g.pads[i].min(g.k[i % d] / 2)).collect();
        let mut c = Case::new("MaxPool", opset, seed);
        c.ints_attr("kernel_shape", &g.k).ints_attr("strides", &g.s).ints_attr("pads", &pads)
            .ints_attr("dilations", &g.dil).i("ceil_mode", ceil as i64);
        // In ceil mode a last window may start past the input; skip shapes whose spec is murky.
        for i in 0..d {
            let o = out_len(g.size[i], g.k[i], g.s[i], g.dil[i], pads[i] + pads[i + d], ceil);
            prop_assume!((o - 1) * g.s[i] < g.size[i] + pads[i]);
        }
        let x = c.g.distinct(&[&[1, 2][..], &g.size].concat());
        c.input(x);
        c.check()?;
    }

    #[test]
    fn average_pool(g in geom(2, 3, 1), ceil: bool, include_pad: bool, opset in select(vec![11i64, 19]), seed: u64) {
        let d = g.k.len();
        let pads: Vec<i64> = (0..2 * d).map(|i| g.pads[i].min(g.k[i % d] / 2)).collect();
        let mut c = Case::new("AveragePool", opset, seed);
        c.ints_attr("kernel_shape", &g.k).ints_attr("strides", &g.s).ints_attr("pads", &pads)
            .i("ceil_mode", ceil as i64).i("count_include_pad", include_pad as i64);
        if opset >= 19 {
            c.ints_attr("dilations", &g.dil);
        }
        // In ceil mode a last window may start past the input; skip shapes whose spec is murky.
        for i in 0..d {
            let dl = if opset >= 19 { g.dil[i] } else { 1 };
            let o = out_len(g.size[i], g.k[i], g.s[i], dl, pads[i] + pads[i + d], ceil);
            prop_assume!((o - 1) * g.s[i] < g.size[i] + pads[i]);
        }
        let x = c.g.val(&[&[2, 1][..], &g.size].concat());
        c.input(x);
        c.check()?;
    }

    #[test]
    fn reduce(op in select(vec!["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare", "ReduceL2",
                                "ReduceLogSumExp", "ReduceProd"]),
              new_axes: bool, dims in vec_of(1..=3i64, 1..=4), pick in vec_of(any::<bool>(), 4),
              neg: bool, keep: bool, seed: u64) {
        let r = dims.len() as i64;
        let axes: Vec<i64> = (0..r).filter(|&i| pick[i as usize]).map(|i| if neg { i - r } else { i }).collect();
        // Axes moved from attribute to input at opset 13 (ReduceSum) or 18 (the others).
        let since = if op == "ReduceSum" { 13 } else { 18 };
        let opset = if new_axes { since } else { since - 2 };
        let mut c = Case::new(op, opset, seed);
        c.i("keepdims", keep as i64);
        let x = match op {
            "ReduceMax" | "ReduceMin" => c.g.distinct(&dims),
            "ReduceL2" => c.g.away(&dims, -2.0, 2.0, &[0.0], 0.3),
            _ => c.g.val(&dims),
        };
        c.input(x);
        if !axes.is_empty() {
            if new_axes {
                c.ints(&axes);
            } else {
                c.ints_attr("axes", &axes);
            }
        }
        c.check()?;
    }
}

proptest! {
    #![proptest_config(cfg(32))]

    #[test]
    fn reshape(dims in vec_of(1..=3i64, 1..=4), perm: u64,
               minus: bool, zero: bool, seed: u64) {
        let mut c = Case::new("Reshape", 14, seed);
        // A shuffled copy of the shape; one dim may become -1 (inferred), a kept first dim 0 (copied).
        let mut target = dims.clone();
        let k = target.len();
        target.rotate_left((perm % k as u64) as usize);
        if minus {
            target[(perm as usize / 7) % k] = -1;
        }
        if zero && target[0] == dims[0] {
            target[0] = 0;
        }
        let x = c.g.val(&dims);
        c.input(x).ints(&target);
        c.check()?;
    }

    #[test]
    fn transpose(dims in vec_of(1..=3i64, 1..=5), seed: u64, with_perm: bool) {
        let mut c = Case::new("Transpose", 13, seed);
        if with_perm {
            let mut p: Vec<i64> = (0..dims.len() as i64).collect();
            rand::seq::SliceRandom::shuffle(&mut p[..], c.g.rng());
            c.ints_attr("perm", &p);
        }
        let x = c.g.val(&dims);
        c.input(x);
        c.check()?;
    }

    #[test]
    fn concat(dims in vec_of(1..=3i64, 1..=4), sizes in vec_of((1..=3i64, any::<bool>()), 1..=3),
              axis in any::<Index>(), seed: u64) {
        let r = dims.len();
        let axis = axis.index(2 * r) as i64 - r as i64;
        let mut c = Case::new("Concat", 13, seed);
        c.i("axis", axis);
        for (n, param) in sizes {
            let mut d = dims.clone();
            d[axis.rem_euclid(r as i64) as usize] = n;
            let v = c.g.val(&d);
            c.arg(role(param), v);
        }
        c.check()?;
    }

    #[test]
    fn slice(dims in vec_of(1..=5i64, 1..=3), spec in vec_of((-7..=7i64, -7..=7i64, select(vec![1i64, 2, -1, -2])), 3),
             with_axes: bool, neg_axes: bool, big: bool, seed: u64) {
        let r = dims.len();
        let mut c = Case::new("Slice", 13, seed);
        let spec = &spec[..r];
        // Out-of-range bounds clamp; INT_MAX/INT_MIN stand for "to the end".
        let end = |e: i64| if !big { e } else if e > 0 { i64::MAX } else { i64::MIN };
        let ends: Vec<i64> = spec.iter().map(|s| end(s.1)).collect();
        let x = c.g.val(&dims);
        c.input(x).ints(&spec.iter().map(|s| s.0).collect::<Vec<_>>()).ints(&ends);
        if with_axes {
            let axes: Vec<i64> = (0..r as i64).rev().map(|a| if neg_axes { a - r as i64 } else { a }).collect();
            c.ints(&axes).ints(&spec.iter().rev().map(|s| s.2).collect::<Vec<_>>());
        }
        c.check()?;
    }

    #[test]
    fn gather(dims in vec_of(1..=4i64, 1..=3), idims in vec_of(1..=3i64, 0..=2),
              axis in any::<Index>(), seed: u64) {
        let r = dims.len();
        let axis = axis.index(2 * r) as i64 - r as i64;
        let len = dims[axis.rem_euclid(r as i64) as usize];
        let mut c = Case::new("Gather", 13, seed);
        c.i("axis", axis);
        // Negative and repeated indices: repeated ones must accumulate their gradients.
        let idx = c.g.ints(idims.iter().product::<i64>() as usize, -len, len);
        let x = c.g.val(&dims);
        c.input(x).ints_shaped(&idims, &idx);
        c.check()?;
    }

    #[test]
    fn flatten(dims in vec_of(1..=3i64, 1..=4), axis in any::<Index>(), opset in select(vec![11i64, 13]), seed: u64) {
        let r = dims.len();
        let mut c = Case::new("Flatten", opset, seed);
        c.i("axis", axis.index(2 * r + 1) as i64 - r as i64);
        let x = c.g.val(&dims);
        c.input(x);
        c.check()?;
    }

    #[test]
    fn squeeze(dims in vec_of((1..=3i64, any::<bool>()), 1..=4), opset in select(vec![11i64, 13]), all: bool,
               seed: u64) {
        let dims: Vec<i64> = dims.iter().map(|&(d, one)| if one { 1 } else { d }).collect();
        let r = dims.len() as i64;
        let ones = (0..r).filter(|&i| dims[i as usize] == 1);
        let axes: Vec<i64> = ones.map(|i| if i % 2 == 1 { i - r } else { i }).collect();
        let mut c = Case::new("Squeeze", opset, seed);
        let x = c.g.val(&dims);
        c.input(x);
        if !all && !axes.is_empty() {
            if opset >= 13 { c.ints(&axes); } else { c.ints_attr("axes", &axes); }
        }
        c.check()?;
    }

    #[test]
    fn unsqueeze(dims in vec_of(1..=3i64, 0..=3), at in vec_of(any::<Index>(), 1..=2),
                 opset in select(vec![11i64, 13]), seed: u64) {
        // Distinct output positions, every other one written negative.
        let out_r = dims.len() + at.len();
        let mut free: Vec<i64> = (0..out_r as i64).collect();
        let axes: Vec<i64> = at
            .iter()
            .map(|i| free.remove(i.index(free.len())))
            .map(|a| if a % 2 == 1 { a - out_r as i64 } else { a })
            .collect();
        let mut c = Case::new("Unsqueeze", opset, seed);
        let x = c.g.val(&dims);
        c.input(x);
        if opset >= 13 { c.ints(&axes); } else { c.ints_attr("axes", &axes); }
        c.check()?;
    }

    #[test]
    fn expand(dims in vec_of((1..=3i64, 0..3u8), 0..=4), drop in 0..3usize, seed: u64) {
        // The shape argument may have 1 where the input is bigger, and more leading axes.
        let x: Vec<i64> = dims.iter().skip(drop.min(dims.len())).map(|&(d, w)| if w == 0 { 1 } else { d }).collect();
        let shape: Vec<i64> = dims.iter().map(|&(d, w)| if w == 2 { 1 } else { d }).collect();
        let mut c = Case::new("Expand", 13, seed);
        let v = c.g.val(&x);
        c.input(v).ints(&shape);
        c.check()?;
    }

    #[test]
    fn split(dims in vec_of(1..=4i64, 1..=3), axis in any::<Index>(), parts in 1..=3usize,
             opset in select(vec![13i64, 18]), explicit: bool, seed: u64) {
        let r = dims.len();
        let axis = axis.index(2 * r) as i64 - r as i64;
        let mut dims = dims;
        let a = axis.rem_euclid(r as i64) as usize;
        dims[a] = dims[a].max(parts as i64);
        let mut c = Case::new("Split", opset, seed);
        c.i("axis", axis);
        let x = c.g.val(&dims);
        c.input(x).outputs(parts);
        if explicit || opset < 18 {
            // Uneven parts summing to the axis length.
            let mut sizes = vec![1i64; parts];
            sizes[0] += dims[a] - parts as i64;
            c.ints(&sizes);
        } else {
            c.i("num_outputs", parts as i64);
            let step = (dims[a] + parts as i64 - 1) / parts as i64;
            prop_assume!(step * (parts as i64 - 1) < dims[a]); // every output non-empty
        }
        c.check()?;
    }

    #[test]
    fn pad(dims in vec_of(2..=4i64, 1..=3), pads in vec_of(0..=2i64, 6),
           mode in select(vec!["constant", "reflect", "edge"]), value: bool, seed: u64) {
        let r = dims.len();
        // reflect needs pads < dim.
        let pads: Vec<i64> = (0..2 * r).map(|i| pads[i].min(dims[i % r] - 1)).collect();
        let mut c = Case::new("Pad", 13, seed);
        c.s("mode", mode);
        let x = c.g.val(&dims);
        c.input(x).ints(&pads);
        if value && mode == "constant" {
            let v = c.g.val(&[]);
            c.constant(v);
        }
        c.check()?;
    }
}

proptest! {
    #![proptest_config(cfg(24))]

    #[test]
    fn prelu(dims in vec_of(1..=3i64, 2..=4), per_channel: bool, seed: u64) {
        let mut c = Case::new("PRelu", 16, seed);
        let x = c.g.away(&dims, -2.0, 2.0, &[0.0], 0.05);
        // Slope per channel ([C, 1, …], unidirectional broadcast) or one shared slope.
        let sd: Vec<i64> = if per_channel { [vec![dims[1]], vec![1; dims.len() - 2]].concat() } else { vec![1] };
        let slope = c.g.val(&sd);
        c.input(x).param(slope);
        c.check()?;
    }

    #[test]
    fn instance_group_norm(n in 1..=2i64, groups in 1..=3i64, per in 1..=2i64, spatial in vec_of(2..=3i64, 1..=2),
                           group_norm: bool, seed: u64) {
        let ch = groups * per;
        let dims = [&[n, ch][..], &spatial].concat();
        let (op, opset) = if group_norm { ("GroupNormalization", 21) } else { ("InstanceNormalization", 6) };
        let mut c = Case::new(op, opset, seed);
        if group_norm {
            c.i("num_groups", groups);
        }
        let x = c.g.val(&dims);
        let (scale, b) = (c.g.val(&[ch]), c.g.val(&[ch]));
        c.input(x).param(scale).param(b);
        c.check()?;
    }

    #[test]
    fn einsum(eq in select(vec!["ij,jk->ik", "bij,bjk->bik", "bhqd,bhkd->bhqk", "ij->ji", "i,i->", "bi,i->b",
                                "bij->bj", "ij,kj->ikj"]),
              sizes in vec_of(1..=3i64, 6), seed: u64) {
        let (lhs, _) = eq.split_once("->").unwrap();
        let size = |ch: char| sizes["ijkbhqd".find(ch).unwrap() % 6];
        let mut c = Case::new("Einsum", 12, seed);
        c.s("equation", eq);
        for (i, term) in lhs.split(',').enumerate() {
            let v = c.g.val(&term.chars().map(size).collect::<Vec<_>>());
            c.arg(role(i == 1), v);
        }
        c.check()?;
    }

    #[test]
    fn tile(dims in vec_of(1..=3i64, 1..=3), reps in vec_of(1..=3i64, 3), seed: u64) {
        let mut c = Case::new("Tile", 13, seed);
        let x = c.g.val(&dims);
        c.input(x).ints(&reps[..dims.len()]);
        c.check()?;
    }

    #[test]
    fn resize(mode in select(vec!["nearest", "linear", "cubic"]),
              coord in select(vec!["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]),
              scales in vec_of(select(vec![0.5, 1.0, 1.5, 2.0, 3.0]), 2), hw in vec_of(2..=4i64, 2), seed: u64) {
        let mut c = Case::new("Resize", 13, seed);
        c.s("mode", mode).s("coordinate_transformation_mode", coord);
        let x = c.g.val(&[1, 2, hw[0], hw[1]]);
        let sc = harness::Val { dims: vec![4], v: vec![1.0, 1.0, scales[0], scales[1]] };
        c.input(x).absent().constant(sc);
        c.check()?;
    }
}

/// The check itself must fail for a wrong gradient: a Sigmoid whose forward is right but whose
/// backward is scaled, perturbed by 1e-4, or cut off (detached) must each be rejected, while the
/// true one passes under the same harness.
#[test]
fn harness_catches_wrong_gradients() {
    use semu::engine::{op, OpCtx, Registry};
    use tch::Tensor;

    /// `sigmoid(x)` in value, `sigmoid'(x) + k` in gradient: `(x − x.detach())` is 0 forward.
    fn skewed(x: &Tensor, k: f64) -> semu::Result<Tensor> {
        let zero = x.f_sub(&x.f_detach()?)?;
        Ok(x.f_detach()?
            .f_sigmoid()?
            .f_add(&x.f_sigmoid()?.f_sub(&x.f_detach()?.f_sigmoid()?)?)?
            .f_add(&zero.f_mul_scalar(k)?)?)
    }
    type Variant = fn(&OpCtx) -> semu::Result<semu::engine::BoxOp>;
    let variants: [(&str, Variant, bool); 4] = [
        ("true sigmoid", |_| op(|x| Ok(vec![x.req(0)?.f_sigmoid()?])), true),
        ("gradient + 0.3", |_| op(|x| Ok(vec![skewed(x.req(0)?, 0.3)?])), false),
        ("gradient + 1e-4", |_| op(|x| Ok(vec![skewed(x.req(0)?, 1e-4)?])), false),
        ("detached", |_| op(|x| Ok(vec![x.req(0)?.f_detach()?.f_sigmoid()?])), false),
    ];
    for (what, build, ok) in variants {
        let mut reg = Registry::default();
        reg.add("Sigmoid", 1, build);
        for role in [Role::Input, Role::Param] {
            let mut c = Case::new("Sigmoid", 13, 7);
            let x = c.g.val(&[3, 4]);
            c.arg(role, x);
            let r = c.check_in(&reg);
            assert_eq!(r.is_ok(), ok, "{what} as {role:?}: {r:?}");
        }
    }
}

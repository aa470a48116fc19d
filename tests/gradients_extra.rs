//! Finite-difference gradient checks (see gradients/harness.rs) for the loss, quantization,
//! signal and misc families: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss (weights,
//! ignore_index, every reduction), DequantizeLinear (in its scale), DFT and STFT, CumProd, Det,
//! Swish, TensorScatter, CenterCropPad and Col2Im.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case, Role};
use proptest::prelude::*;
use proptest::sample::select;

proptest! {
    #![proptest_config(cfg(12))]

    /// Labels include the ignored class (when set), so masked samples are exercised too.
    #[test]
    fn losses(sce: bool, reduction in select(vec!["none", "sum", "mean"]), spatial in 0..=2usize,
              weight: bool, ignore: bool, log_prob: bool, seed: u64) {
        let (op, opset) = if sce { ("SoftmaxCrossEntropyLoss", 13) } else { ("NegativeLogLikelihoodLoss", 22) };
        let mut c = Case::new(op, opset, seed);
        c.s("reduction", reduction);
        if ignore {
            c.i("ignore_index", 1);
        }
        let (n, classes) = (2i64, 3i64);
        let rest = &[3i64, 2][..spatial];
        let x = c.g.uniform(&[&[n, classes][..], rest].concat(), -2.0, 2.0);
        let tdims = [&[n][..], rest].concat();
        let count = tdims.iter().product::<i64>() as usize;
        // At least one kept label so a weighted mean is defined.
        let mut labels = c.g.ints(count, 0, classes);
        labels[0] = 0;
        c.input(x).ints_shaped(&tdims, &labels);
        if weight {
            let w = c.g.uniform(&[classes], 0.5, 1.5);
            c.param(w);
        }
        if sce && log_prob {
            c.outputs(2);
        }
        c.check()?;
    }

    #[test]
    fn dequantize(per_axis: bool, zero_point: bool, seed: u64) {
        let mut c = Case::new("DequantizeLinear", 21, seed);
        c.i("axis", 1);
        let q = c.g.ints(12, -8, 8);
        c.ints_shaped(&[2, 3, 2], &q);
        let sdims: &[i64] = if per_axis { &[3] } else { &[] };
        let s = c.g.uniform(sdims, 0.1, 1.0);
        c.param(s);
        if zero_point {
            let z = c.g.ints(sdims.iter().product::<i64>() as usize, -2, 3);
            c.ints_shaped(sdims, &z);
        }
        c.check()?;
    }

    #[test]
    fn dft(opset in select(vec![17i64, 20]), complex: bool, inverse: bool, onesided: bool, axis in 0..=1i64,
           len in select(vec![None, Some(3i64), Some(6)]), seed: u64) {
        // The one-sided forward transform takes real input, the one-sided inverse complex input.
        let complex = if onesided { inverse } else { complex };
        let mut c = Case::new("DFT", opset, seed);
        c.i("inverse", inverse as i64).i("onesided", onesided as i64);
        if opset < 20 {
            c.i("axis", axis + 1);
        }
        let x = c.g.val(&[2, 4, 3, if complex { 2 } else { 1 }]);
        c.input(x);
        match len {
            Some(l) => c.ints_shaped(&[], &[l]),
            None => c.absent(),
        };
        if opset >= 20 {
            c.ints_shaped(&[], &[axis + 1]);
        }
        c.check()?;
    }

    #[test]
    fn stft(onesided: bool, window: bool, complex: bool, seed: u64) {
        let complex = complex && !onesided;
        let mut c = Case::new("STFT", 17, seed);
        c.i("onesided", onesided as i64);
        let x = c.g.val(&[2, 11, if complex { 2 } else { 1 }]);
        c.input(x).ints_shaped(&[], &[3]);
        if window {
            let w = c.g.val(&[4]);
            c.param(w);
        } else {
            c.absent().ints_shaped(&[], &[4]);
        }
        c.check()?;
    }

    #[test]
    fn cumprod(axis in -2..=1i64, exclusive: bool, reverse: bool, seed: u64) {
        let mut c = Case::new("CumProd", 26, seed);
        c.i("exclusive", exclusive as i64).i("reverse", reverse as i64);
        let x = c.g.val(&[3, 4]);
        c.input(x).ints_shaped(&[], &[axis]);
        c.check()?;
    }

    #[test]
    fn det_and_swish(batch in 0..=2usize, m in 1..=3i64, alpha in select(vec![1.0, 0.6, -1.5]), seed: u64) {
        let mut c = Case::new("Det", 22, seed);
        let x = c.g.val(&[&[2i64, 3][..batch], &[m, m]].concat());
        c.input(x);
        c.check()?;
        let mut c = Case::new("Swish", 24, seed);
        c.f("alpha", alpha);
        let x = c.g.uniform(&[2, 3], -3.0, 3.0);
        c.input(x);
        c.check()?;
    }

    #[test]
    fn tensor_scatter(circular: bool, indices: bool, seed: u64) {
        let mut c = Case::new("TensorScatter", 24, seed);
        c.s("mode", if circular { "circular" } else { "linear" });
        let (past, update) = (c.g.val(&[2, 2, 5, 3]), c.g.val(&[2, 2, 2, 3]));
        c.param(past).input(update);
        if indices {
            c.ints(if circular { &[4, 1] } else { &[3, 0] });
        }
        c.check()?;
    }

    #[test]
    fn center_crop_pad(h in 1..=6i64, w in 1..=6i64, axes: bool, seed: u64) {
        let mut c = Case::new("CenterCropPad", 18, seed);
        let x = c.g.val(&[2, 4, 3]);
        c.input(x);
        if axes {
            c.ints_attr("axes", &[-2, -1]).ints(&[h, w]);
        } else {
            c.ints(&[2, h, w]);
        }
        c.check()?;
    }

    #[test]
    fn col2im(strides: bool, pads: bool, dilations: bool, three_d: bool, seed: u64) {
        let n = if three_d { 3 } else { 2 };
        let image = &[4i64, 5, 3][..n];
        let block = &[2i64, 2, 2][..n];
        let (s, d, p) = (if strides { 2 } else { 1 }, if dilations { 2 } else { 1 }, if pads { 1 } else { 0 });
        let mut c = Case::new("Col2Im", 18, seed);
        c.ints_attr("strides", &vec![s; n]).ints_attr("dilations", &vec![d; n]).ints_attr("pads", &vec![p; 2 * n]);
        let blocks: i64 = (0..n).map(|i| (image[i] + 2 * p - d * (block[i] - 1) - 1) / s + 1).product();
        let x = c.g.val(&[1, 2 * block.iter().product::<i64>(), blocks]);
        c.arg(Role::Input, x).ints(image).ints(block);
        c.check()?;
    }
}

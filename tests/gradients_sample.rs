//! Finite-difference gradient checks for GridSample, AffineGrid, RoiAlign and DeformConv (see
//! gradients/harness.rs). Sample positions are random, so they almost never sit on the pixel
//! boundaries where bilinear weights have kinks.
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::{cfg, Case, Role};
use proptest::prelude::*;
use proptest::sample::select;

proptest! {
    #![proptest_config(cfg(16))]

    /// Linear and cubic sampling differentiate in X and the grid; nearest only in X.
    #[test]
    fn grid_sample(spatial in 1..=3usize, mode in select(vec!["linear", "nearest", "cubic"]),
                   pad in select(vec!["zeros", "border", "reflection"]), align: bool, seed: u64) {
        prop_assume!(!(mode == "cubic" && spatial == 3));
        let mut c = Case::new("GridSample", 20, seed);
        c.s("mode", mode).s("padding_mode", pad).i("align_corners", align as i64);
        let sizes = [3i64, 4, 2];
        let xd = [&[1, 2][..], &sizes[..spatial]].concat();
        let gd = [&[1, 2][..], &vec![2; spatial - 1], &[spatial as i64]].concat();
        let (x, grid) = (c.g.val(&xd), c.g.uniform(&gd, -1.3, 1.3));
        c.input(x).arg(if mode == "nearest" { Role::Const } else { Role::Input }, grid);
        c.check()?;
    }

    #[test]
    fn affine_grid(three_d: bool, align: bool, seed: u64) {
        let mut c = Case::new("AffineGrid", 20, seed);
        c.i("align_corners", align as i64);
        let theta = c.g.val(&if three_d { [2, 3, 4] } else { [2, 2, 3] });
        c.param(theta);
        c.ints(if three_d { &[2, 1, 2, 3, 2][..] } else { &[2, 1, 3, 2][..] });
        c.check()?;
    }

    /// Gradients reach X; the boxes are geometry (read on the host), not differentiated.
    #[test]
    fn roi_align(max: bool, half_pixel: bool, ratio in 0..=2i64, seed: u64) {
        let mut c = Case::new("RoiAlign", 16, seed);
        c.s("mode", if max { "max" } else { "avg" }).i("output_height", 2).i("output_width", 3)
            .i("sampling_ratio", ratio)
            .s("coordinate_transformation_mode", if half_pixel { "half_pixel" } else { "output_half_pixel" });
        let x = if max { c.g.distinct(&[2, 2, 5, 6]) } else { c.g.val(&[2, 2, 5, 6]) };
        let lo = c.g.uniform(&[3, 2], 0.0, 2.5);
        let size = c.g.uniform(&[3, 2], 0.5, 3.0);
        let mut rois = vec![];
        for i in 0..3 {
            rois.extend([lo.v[2 * i], lo.v[2 * i + 1], lo.v[2 * i] + size.v[2 * i], lo.v[2 * i + 1] + size.v[2 * i + 1]]);
        }
        c.input(x).constant(harness::Val { dims: vec![3, 4], v: rois }).ints(&[0, 1, 1]);
        c.check()?;
    }

    /// Everything but the output shape is differentiable: X, W, offsets, bias and mask.
    #[test]
    fn deform_conv(group in 1..=2i64, og in 1..=2i64, stride in 1..=2i64, pad in 0..=1i64, bias: bool,
                   mask: bool, seed: u64) {
        let (cin, cout, k, hw) = (2i64, 2 * group, 2i64, 4i64);
        let cin = cin * group.max(og);
        let o = (hw + 2 * pad - k) / stride + 1;
        let mut c = Case::new("DeformConv", 19, seed);
        c.ints_attr("kernel_shape", &[k, k]).ints_attr("strides", &[stride, stride])
            .ints_attr("pads", &[pad; 4]).i("group", group).i("offset_group", og);
        let x = c.g.val(&[1, cin, hw, hw]);
        let w = c.g.val(&[cout, cin / group, k, k]);
        let off = c.g.uniform(&[1, og * 2 * k * k, o, o], -1.5, 1.5);
        c.input(x).param(w).input(off);
        if bias || mask {
            if bias {
                let b = c.g.val(&[cout]);
                c.param(b);
            } else {
                c.absent();
            }
        }
        if mask {
            let m = c.g.val(&[1, og * k * k, o, o]);
            c.input(m);
        }
        c.check()?;
    }
}

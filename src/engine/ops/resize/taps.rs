//! The separable kernel of Resize: per resized axis, a few input taps per output position (from
//! ONNX's coordinate formulas, computed on the host in f64), applied with index_select and a
//! weighted sum, so any mode is exact and stays differentiable.
use super::{Axis, Cfg, Coord, Mode, Round};
use crate::error::Result;
use tch::Tensor;

/// ONNX's coordinate_transformation_mode: output index → input coordinate.
fn source_coord(c: &Cfg, a: &Axis, y: i64) -> f64 {
    let (y, l, s, w) = (y as f64, a.len as f64, a.scale, a.width);
    match c.coord {
        Coord::HalfPixel => (y + 0.5) / s - 0.5,
        Coord::HalfPixelSymmetric => {
            let offset = l / 2.0 * (1.0 - a.out as f64 / w);
            offset + (y + 0.5) / s - 0.5
        }
        Coord::PytorchHalfPixel if a.out > 1 => (y + 0.5) / s - 0.5,
        Coord::PytorchHalfPixel => 0.0,
        Coord::AlignCorners if w == 1.0 => 0.0,
        Coord::AlignCorners => y * (l - 1.0) / (w - 1.0),
        Coord::Asymmetric => y / s,
        Coord::TfHalfPixelForNn => (y + 0.5) / s,
        Coord::TfCropAndResize => {
            let (start, end) = a.roi;
            let x = if w == 1.0 { (end - start) * (l - 1.0) / 2.0 } else { y * (end - start) * (l - 1.0) / (w - 1.0) };
            x + start * (l - 1.0)
        }
    }
}

/// The cubic convolution kernel with coefficient `a` (Keys).
fn cubic(a: f64, d: f64) -> f64 {
    let d = d.abs();
    if d <= 1.0 {
        ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    } else if d < 2.0 {
        ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    } else {
        0.0
    }
}

/// Taps per output position: (indices clamped into the input, weights, taps per position,
/// positions that fall outside the crop box).
fn taps(c: &Cfg, a: &Axis) -> (Vec<i64>, Vec<f64>, usize, Vec<bool>) {
    let last = a.len - 1;
    let (support, s_eff) = match c.mode {
        Mode::Nearest => (0.0, 1.0),
        Mode::Linear => (1.0, 1.0),
        Mode::Cubic => (2.0, 1.0),
    };
    // Antialiasing stretches the kernel by 1/scale when downsampling.
    let s_eff = if c.antialias && c.mode != Mode::Nearest { a.scale.min(1.0) } else { s_eff };
    let n = if c.mode == Mode::Nearest { 1 } else { 2 * (support / s_eff).ceil() as usize };
    let (mut idx, mut wts, mut outside) = (Vec::new(), Vec::new(), Vec::new());
    for y in 0..a.out {
        let x = source_coord(c, a, y);
        outside.push(c.coord == Coord::TfCropAndResize && (x < 0.0 || x > last as f64));
        if c.mode == Mode::Nearest {
            let i = match c.round {
                Round::PreferFloor => (x - 0.5).ceil(),
                Round::PreferCeil => (x + 0.5).floor(),
                Round::Floor => x.floor(),
                Round::Ceil => x.ceil(),
            };
            idx.push((i as i64).clamp(0, last.max(0)));
            wts.push(1.0);
            continue;
        }
        // The n input positions nearest to x: floor(x) - n/2 + 1 ..= floor(x) + n/2.
        let start = x.floor() as i64 - n as i64 / 2 + 1;
        let row: Vec<(i64, f64)> = (0..n as i64)
            .map(|j| {
                let i = start + j;
                let d = (i as f64 - x) * s_eff;
                let w = if c.mode == Mode::Linear { (1.0 - d.abs()).max(0.0) } else { cubic(c.cubic_a, d) };
                let w = if c.exclude_outside && (i < 0 || i > last) { 0.0 } else { w };
                (i, w)
            })
            .collect();
        let sum: f64 = row.iter().map(|r| r.1).sum();
        let norm = (c.antialias || c.exclude_outside) && sum != 0.0;
        for (i, w) in row {
            idx.push(i.clamp(0, last.max(0)));
            wts.push(if norm { w / sum } else { w });
        }
    }
    (idx, wts, n, outside)
}

/// Resizes one axis of `t` (already in the compute kind).
pub(super) fn resize_axis(c: &Cfg, t: &Tensor, a: &Axis) -> Result<Tensor> {
    let dev = t.device();
    let ax = a.axis;
    let mut shape = t.size();
    if a.out == 0 || a.len == 0 {
        shape[ax as usize] = a.out;
        return Ok(Tensor::f_zeros(shape.as_slice(), (t.kind(), dev))?);
    }
    let (idx, wts, n, outside) = taps(c, a);
    // Nearest by a whole factor k that repeats each input k times: a broadcast, much cheaper
    // than a gather (above all its backward, a scatter-add).
    let k = a.out / a.len;
    let no_crop = !outside.iter().any(|&o| o);
    if n == 1 && a.out == k * a.len && no_crop && idx.iter().enumerate().all(|(y, &i)| i == y as i64 / k) {
        let mut wide = shape.clone();
        wide.insert(ax as usize + 1, k);
        shape[ax as usize] = a.out;
        return Ok(t.f_unsqueeze(ax + 1)?.f_expand(wide.as_slice(), false)?.f_reshape(shape.as_slice())?);
    }
    let picked = t.f_index_select(ax, &Tensor::f_from_slice(&idx)?.f_to_device(dev)?)?;
    let r = if n == 1 {
        picked
    } else {
        let mut split = shape.clone();
        split.splice(ax as usize..ax as usize + 1, [a.out, n as i64]);
        let mut wshape = vec![a.out, n as i64];
        wshape.extend(std::iter::repeat_n(1, shape.len() - ax as usize - 1));
        let w = Tensor::f_from_slice(&wts)?.f_reshape(wshape.as_slice())?.f_to_kind(t.kind())?.f_to_device(dev)?;
        picked.f_reshape(split.as_slice())?.f_mul(&w)?.f_sum_dim_intlist([ax + 1].as_slice(), false, t.kind())?
    };
    if no_crop {
        return Ok(r);
    }
    let mut mshape = vec![a.out];
    mshape.extend(std::iter::repeat_n(1, shape.len() - ax as usize - 1));
    let mask = Tensor::f_from_slice(&outside)?.f_reshape(mshape.as_slice())?.f_to_device(dev)?;
    Ok(r.f_masked_fill(&mask, c.extrapolation)?)
}

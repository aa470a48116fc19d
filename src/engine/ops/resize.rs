//! Resize and Upsample. Resizing is separable: each resized axis becomes a gather of a few taps
//! per output position (index_select) and a weighted sum, with the tap indices and weights
//! computed once per axis on the host from ONNX's coordinate formulas. That reproduces every
//! ONNX mode exactly (torch's interpolate covers only some of them) and stays differentiable.
use super::util::norm_axis;
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfHalfPixelForNn,
    TfCropAndResize,
}

#[derive(Clone, Copy)]
enum Round {
    PreferFloor,
    PreferCeil,
    Floor,
    Ceil,
}

#[derive(Clone, Copy, PartialEq)]
enum Policy {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Clone)]
struct Cfg {
    mode: Mode,
    coord: Coord,
    round: Round,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    axes: Option<Vec<i64>>,
    policy: Policy,
    /// Input positions of roi, scales and sizes (None where the opset lacks them).
    roi_in: Option<usize>,
    scales_in: Option<usize>,
    sizes_in: Option<usize>,
    /// Upsample-7's `scales` attribute.
    attr_scales: Option<Vec<f64>>,
}

fn parse_mode(ctx: &OpCtx) -> Result<Mode> {
    Ok(match ctx.node.get_s("mode")?.as_deref().unwrap_or("nearest") {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" => Mode::Linear,
        "cubic" => Mode::Cubic,
        m => return Err(ctx.node.attr_err("mode", format!("unsupported value '{m}'"))),
    })
}

/// Resize-10 and Upsample: `asymmetric` coordinates, nearest rounds down, every axis resized.
fn legacy(ctx: &OpCtx, scales_in: Option<usize>, attr_scales: Option<Vec<f64>>) -> Result<Cfg> {
    Ok(Cfg {
        mode: parse_mode(ctx)?,
        coord: Coord::Asymmetric,
        round: Round::Floor,
        cubic_a: -0.75,
        exclude_outside: false,
        extrapolation: 0.0,
        antialias: false,
        axes: None,
        policy: Policy::Stretch,
        roi_in: None,
        scales_in,
        sizes_in: None,
        attr_scales,
    })
}

fn resize(ctx: &OpCtx) -> Result<BoxOp> {
    if ctx.opset < 11 {
        return build(legacy(ctx, Some(1), None)?);
    }
    let n = ctx.node;
    let coord = match n.get_s("coordinate_transformation_mode")?.as_deref().unwrap_or("half_pixel") {
        "half_pixel" => Coord::HalfPixel,
        "half_pixel_symmetric" => Coord::HalfPixelSymmetric,
        "pytorch_half_pixel" => Coord::PytorchHalfPixel,
        "align_corners" => Coord::AlignCorners,
        "asymmetric" => Coord::Asymmetric,
        "tf_half_pixel_for_nn" => Coord::TfHalfPixelForNn,
        "tf_crop_and_resize" => Coord::TfCropAndResize,
        m => return Err(n.attr_err("coordinate_transformation_mode", format!("unsupported value '{m}'"))),
    };
    let round = match n.get_s("nearest_mode")?.as_deref().unwrap_or("round_prefer_floor") {
        "round_prefer_floor" => Round::PreferFloor,
        "round_prefer_ceil" => Round::PreferCeil,
        "floor" => Round::Floor,
        "ceil" => Round::Ceil,
        m => return Err(n.attr_err("nearest_mode", format!("unsupported value '{m}'"))),
    };
    let policy = match n.get_s("keep_aspect_ratio_policy")?.as_deref().unwrap_or("stretch") {
        "stretch" => Policy::Stretch,
        "not_larger" => Policy::NotLarger,
        "not_smaller" => Policy::NotSmaller,
        m => return Err(n.attr_err("keep_aspect_ratio_policy", format!("unsupported value '{m}'"))),
    };
    build(Cfg {
        mode: parse_mode(ctx)?,
        coord,
        round,
        cubic_a: n.get_f("cubic_coeff_a")?.unwrap_or(-0.75) as f64,
        exclude_outside: n.get_i("exclude_outside")?.unwrap_or(0) != 0,
        extrapolation: n.get_f("extrapolation_value")?.unwrap_or(0.0) as f64,
        antialias: n.get_i("antialias")?.unwrap_or(0) != 0,
        axes: n.get_ints("axes")?,
        policy,
        roi_in: Some(1),
        scales_in: Some(2),
        sizes_in: Some(3),
        attr_scales: None,
    })
}

fn upsample(ctx: &OpCtx) -> Result<BoxOp> {
    if ctx.opset >= 9 {
        return build(legacy(ctx, Some(1), None)?);
    }
    let scales =
        ctx.node.get_floats("scales")?.ok_or_else(|| ctx.node.attr_err("scales", "required attribute is missing"))?;
    build(legacy(ctx, None, Some(scales.iter().map(|&s| s as f64).collect()))?)
}

/// A float tensor input as f64 values; None when absent or empty.
fn floats(x: &Inputs, i: Option<usize>) -> Result<Option<Vec<f64>>> {
    let Some(t) = i.and_then(|i| x.get(i)) else { return Ok(None) };
    if t.numel() == 0 {
        return Ok(None);
    }
    let flat = t.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_to_device(Device::Cpu)?;
    Ok(Some(Vec::<f64>::try_from(&flat)?))
}

/// One resized axis: input length, output length, scale, and the fractional output width
/// (`scale * length` when the size came from a scale; the coordinate formulas use it).
struct Axis {
    axis: i64,
    len: i64,
    out: i64,
    scale: f64,
    width: f64,
    roi: (f64, f64),
}

fn plan_axes(c: &Cfg, x: &Inputs, shape: &[i64]) -> Result<Vec<Axis>> {
    let rank = shape.len();
    let axes: Vec<i64> = match &c.axes {
        Some(a) => a.iter().map(|&a| norm_axis(x, a, rank)).collect::<Result<_>>()?,
        None => (0..rank as i64).collect(),
    };
    let roi = if c.coord == Coord::TfCropAndResize { floats(x, c.roi_in)? } else { None };
    let scales = match &c.attr_scales {
        Some(s) => Some(s.clone()),
        None => floats(x, c.scales_in)?,
    };
    let sizes = match c.sizes_in.and_then(|i| x.get(i)) {
        Some(t) if t.numel() > 0 => x.ints(c.sizes_in.unwrap_or(0))?,
        _ => None,
    };
    let n = axes.len();
    let check = |what: &str, len: usize, want: usize| {
        if len == want {
            Ok(())
        } else {
            Err(x.err(format!("{what} has {len} values, expected {want}")))
        }
    };
    let len = |a: i64| shape[a as usize];
    // (out, scale, width) per listed axis.
    let dims: Vec<(i64, f64, f64)> = match (scales, sizes) {
        (Some(s), _) => {
            check("scales", s.len(), n)?;
            // The size is floor(scale * len) in f32 arithmetic, as ONNX Runtime computes it (f64
            // would give 10 for 9 * 1.2222222f32, which exporters mean as 11).
            let size = |s: f64, l: i64| (s as f32 * l as f32).floor() as i64;
            axes.iter().zip(&s).map(|(&a, &s)| (size(s, len(a)), s, s * len(a) as f64)).collect()
        }
        (None, Some(sz)) => {
            check("sizes", sz.len(), n)?;
            let ratios: Vec<f64> = axes.iter().zip(&sz).map(|(&a, &o)| o as f64 / len(a) as f64).collect();
            let pick = match c.policy {
                Policy::Stretch => None,
                Policy::NotLarger => Some(ratios.iter().copied().fold(f64::INFINITY, f64::min)),
                Policy::NotSmaller => Some(ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
            };
            match pick {
                None => sz.iter().zip(&ratios).map(|(&o, &r)| (o, r, o as f64)).collect(),
                // One scale for all axes; sizes rounded half up.
                Some(s) => {
                    axes.iter().map(|&a| ((s * len(a) as f64 + 0.5).floor() as i64, s, s * len(a) as f64)).collect()
                }
            }
        }
        (None, None) => return Err(x.err("one of 'scales' and 'sizes' must be given")),
    };
    if let Some(r) = &roi {
        check("roi", r.len(), 2 * n)?;
    }
    let mut out = Vec::with_capacity(n);
    for (i, (&axis, &(o, scale, width))) in axes.iter().zip(&dims).enumerate() {
        if o < 0 || scale <= 0.0 {
            return Err(x.err(format!("invalid output size {o} (scale {scale}) for axis {axis}")));
        }
        let roi = roi.as_ref().map_or((0.0, 1.0), |r| (r[i], r[n + i]));
        out.push(Axis { axis, len: len(axis), out: o, scale, width, roi });
    }
    Ok(out)
}

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
fn resize_axis(c: &Cfg, t: &Tensor, a: &Axis) -> Result<Tensor> {
    let dev = t.device();
    let ax = a.axis;
    let mut shape = t.size();
    if a.out == 0 || a.len == 0 {
        shape[ax as usize] = a.out;
        return Ok(Tensor::f_zeros(shape.as_slice(), (t.kind(), dev))?);
    }
    let (idx, wts, n, outside) = taps(c, a);
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
    if !outside.iter().any(|&o| o) {
        return Ok(r);
    }
    let mut mshape = vec![a.out];
    mshape.extend(std::iter::repeat_n(1, shape.len() - ax as usize - 1));
    let mask = Tensor::f_from_slice(&outside)?.f_reshape(mshape.as_slice())?.f_to_device(dev)?;
    Ok(r.f_masked_fill(&mask, c.extrapolation)?)
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

/// Integer results are rounded and saturated to the input type, as ONNX's reference does
/// (ONNX Runtime's integer kernels round differently; the spec leaves it open).
fn back_to(t: Tensor, kind: Kind) -> Result<Tensor> {
    if t.kind() == kind {
        return Ok(t);
    }
    if is_float(kind) {
        return Ok(t.f_to_kind(kind)?);
    }
    let (lo, hi) = match kind {
        Kind::Uint8 => (0.0, u8::MAX as f64),
        Kind::Int8 => (i8::MIN as f64, i8::MAX as f64),
        Kind::Int16 => (i16::MIN as f64, i16::MAX as f64),
        Kind::Int => (i32::MIN as f64, i32::MAX as f64),
        Kind::Bool => (0.0, 1.0),
        _ => (i64::MIN as f64, i64::MAX as f64),
    };
    Ok(t.f_round()?.f_clamp(lo, hi)?.f_to_kind(kind)?)
}

fn build(c: Cfg) -> Result<BoxOp> {
    op(move |x| {
        let t = x.req(0)?;
        let kind = t.kind();
        let axes = plan_axes(&c, x, &t.size())?;
        // Nearest only gathers, so any type stays as is; weighted sums need floats.
        let work = match kind {
            _ if c.mode == Mode::Nearest || matches!(kind, Kind::Float | Kind::Double) => kind,
            Kind::Half | Kind::BFloat16 => Kind::Float,
            _ => Kind::Double,
        };
        let mut r = if work == kind { t.shallow_clone() } else { t.f_to_kind(work)? };
        for a in &axes {
            let identity = a.out == a.len && a.scale == 1.0 && a.roi == (0.0, 1.0);
            if !identity {
                r = resize_axis(&c, &r, a)?;
            }
        }
        Ok(vec![back_to(r, kind)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Resize", 10, resize);
    r.add_range("", "Upsample", 7, 9, upsample);
}

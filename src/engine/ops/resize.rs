//! Resize and Upsample. torch's own upsample kernels run where they compute exactly ONNX's
//! formula (linear and cubic on trailing spatial axes with half-pixel or corner-aligned
//! coordinates); every other case goes through the separable tap kernel in `taps`.
use super::util::norm_axis;
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Device, Kind, Tensor};

mod taps;

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
    let mut out_shape = shape.to_vec();
    for (&a, &(o, _, _)) in axes.iter().zip(&dims) {
        out_shape[a as usize] = o.max(0);
    }
    x.bounded(&out_shape)?;
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

/// torch's upsample kernels where they agree with ONNX: linear on 1-3 trailing spatial axes,
/// cubic on 2 (A = -0.75, no exclude_outside), no antialiasing, f32/f64 data, N and C not
/// resized, and half-pixel coordinates (align_corners only when the output width is whole:
/// ONNX then divides by the fractional width, torch by the integer one).
fn torch_kernel(c: &Cfg, t: &Tensor, axes: &[Axis]) -> Result<Option<Tensor>> {
    let rank = t.dim();
    let shape = t.size();
    let cubic = c.mode == Mode::Cubic && rank == 4 && c.cubic_a == -0.75 && !c.exclude_outside;
    let linear = c.mode == Mode::Linear && (3..=5).contains(&rank);
    let float = matches!(t.kind(), Kind::Float | Kind::Double);
    if !(cubic || linear) || c.antialias || !float || shape.contains(&0) {
        return Ok(None);
    }
    // Per spatial axis: output size and scale; axes not listed keep their size at scale 1.
    let mut out: Vec<i64> = shape[2..].to_vec();
    let mut scales = vec![1.0f64; rank - 2];
    for a in axes {
        if a.out == a.len && a.scale == 1.0 {
            continue;
        }
        let ok = match c.coord {
            Coord::HalfPixel => true,
            Coord::PytorchHalfPixel => a.out > 1,
            Coord::HalfPixelSymmetric | Coord::AlignCorners => a.out as f64 == a.width,
            _ => false,
        };
        if a.axis < 2 || a.out == 0 || !ok {
            return Ok(None);
        }
        out[a.axis as usize - 2] = a.out;
        scales[a.axis as usize - 2] = a.scale;
    }
    let ac = c.coord == Coord::AlignCorners;
    Ok(Some(match (c.mode, rank) {
        (Mode::Cubic, _) => t.f_upsample_bicubic2d(out.as_slice(), ac, scales[0], scales[1])?,
        (_, 3) => t.f_upsample_linear1d(out.as_slice(), ac, scales[0])?,
        (_, 4) => t.f_upsample_bilinear2d(out.as_slice(), ac, scales[0], scales[1])?,
        _ => t.f_upsample_trilinear3d(out.as_slice(), ac, scales[0], scales[1], scales[2])?,
    }))
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
        if let Some(r) = torch_kernel(&c, t, &axes)? {
            return Ok(vec![r]);
        }
        let mut r = if work == kind { t.shallow_clone() } else { t.f_to_kind(work)? };
        for a in &axes {
            let identity = a.out == a.len && a.scale == 1.0 && a.roi == (0.0, 1.0);
            if !identity {
                r = taps::resize_axis(&c, &r, a)?;
            }
        }
        Ok(vec![back_to(r, kind)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Resize", 10, resize);
    r.add_range("", "Upsample", 7, 9, upsample);
}

//! Sampling at computed positions: GridSample (16, N-D from 20), AffineGrid (20), RoiAlign
//! (10/16) and DeformConv (19). Interpolation runs through torch's grid sampler or index_select
//! with weights, so gradients reach the sampled data (and the grid, offsets, masks, weights).
use super::elementwise::is_float;
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Device, Kind, Tensor};

// torch's grid_sampler codes.
const LINEAR: i64 = 0;
const NEAREST: i64 = 1;
const CUBIC: i64 = 2;
const ZEROS: i64 = 0;
const BORDER: i64 = 1;
const REFLECTION: i64 = 2;

fn align_corners(ctx: &OpCtx) -> Result<bool> {
    match ctx.node.get_i("align_corners")?.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.node.attr_err("align_corners", format!("must be 0 or 1, got {v}"))),
    }
}

/// Folds out-of-range pixel coordinates back into [lo, hi] as a mirror would (a triangle wave
/// of period 2·(hi − lo)), the way ONNX's reflection padding does.
fn reflect(p: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let span = hi - lo;
    let t = p.f_sub_scalar(lo)?.f_remainder(2.0 * span)?;
    Ok(t.f_sub_scalar(span)?.f_abs()?.f_neg()?.f_add_scalar(lo + span)?)
}

/// ONNX pads the continuous cubic sample position before taking taps (border: positions outside
/// the borders clamp to the edge pixels; reflection: they mirror in); torch only pads the taps.
/// Rewrites the normalised grid so torch sees the padded positions. `dims` are spatial sizes.
fn pad_cubic_grid(grid: &Tensor, dims: &[i64], pad: i64, align: bool) -> Result<Tensor> {
    let r = dims.len();
    let mut cols = Vec::with_capacity(r);
    for i in 0..r {
        // Grid components run x, y, z: the last spatial axis first.
        let d = dims[r - 1 - i] as f64;
        let g = grid.f_select(-1, i as i64)?;
        if align && d <= 1.0 {
            cols.push(g);
            continue;
        }
        let (lo, hi) = if align { (0.0, d - 1.0) } else { (-0.5, d - 0.5) };
        let p = if align {
            g.f_add_scalar(1.0)?.f_mul_scalar((d - 1.0) / 2.0)?
        } else {
            g.f_add_scalar(1.0)?.f_mul_scalar(d)?.f_sub_scalar(1.0)?.f_div_scalar(2.0)?
        };
        let p = if pad == BORDER {
            let out = p.f_lt(lo)?.f_logical_or(&p.f_gt(hi)?)?;
            p.f_clamp(0.0, d - 1.0)?.f_where_self(&out, &p)?
        } else {
            reflect(&p, lo, hi)?
        };
        cols.push(if align {
            p.f_mul_scalar(2.0 / (d - 1.0))?.f_sub_scalar(1.0)?
        } else {
            p.f_mul_scalar(2.0)?.f_add_scalar(1.0)?.f_div_scalar(d)?.f_sub_scalar(1.0)?
        });
    }
    Ok(Tensor::f_stack(&cols, -1)?)
}

fn grid_sample(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    // Opset 16 names the modes bilinear/bicubic and allows 4-D input only; 20 generalises both.
    let legacy = ctx.opset < 20;
    let mode = n.get_s("mode")?.unwrap_or_else(|| if legacy { "bilinear" } else { "linear" }.into());
    let mode = match (mode.as_str(), legacy) {
        ("bilinear", true) | ("linear", false) => LINEAR,
        ("nearest", _) => NEAREST,
        ("bicubic", true) | ("cubic", false) => CUBIC,
        (m, _) => return Err(n.attr_err("mode", format!("'{m}' is not a mode at opset {}", ctx.opset))),
    };
    let pad = match n.get_s("padding_mode")?.as_deref().unwrap_or("zeros") {
        "zeros" => ZEROS,
        "border" => BORDER,
        "reflection" => REFLECTION,
        p => return Err(n.attr_err("padding_mode", format!("must be zeros, border or reflection, got '{p}'"))),
    };
    let align = align_corners(ctx)?;
    op(move |x| {
        let (img, grid) = (x.req(0)?, x.req(1)?);
        let r = img.dim();
        if legacy && r != 4 {
            return Err(x.err(format!("GridSample before opset 20 takes 4-D input, got rank {r}")));
        }
        // torch samples 1-D (as 2-D with a unit axis), 2-D and 3-D; cubic only up to 2-D.
        if !(3..=5).contains(&r) || (mode == CUBIC && r == 5) {
            return Err(x.err(format!("{} spatial axes are not supported in this mode", r.saturating_sub(2))));
        }
        if grid.dim() != r || grid.size()[r - 1] != r as i64 - 2 || grid.size()[0] != img.size()[0] {
            return Err(x.err(format!("grid {:?} does not match input {:?}", grid.size(), img.size())));
        }
        let kind = if is_float(img.kind()) { img.kind() } else { grid.kind() };
        let src = img.f_to_kind(kind)?;
        let mut g = grid.f_to_kind(kind)?;
        if mode == CUBIC && pad != ZEROS {
            g = pad_cubic_grid(&g, &img.size()[2..], pad, align)?;
        }
        let y = if r == 3 {
            // A unit height axis sampled at its only row, whatever align_corners is.
            let g2 = Tensor::f_stack(&[g.f_select(-1, 0)?, g.f_select(-1, 0)?.f_zeros_like()?], -1)?;
            src.f_unsqueeze(2)?.f_grid_sampler(&g2.f_unsqueeze(1)?, mode, pad, align)?.f_squeeze_dim(2)?
        } else {
            src.f_grid_sampler(&g, mode, pad, align)?
        };
        Ok(vec![y.f_to_kind(img.kind())?])
    })
}

fn affine_grid(ctx: &OpCtx) -> Result<BoxOp> {
    let align = align_corners(ctx)?;
    op(move |x| {
        let theta = x.req(0)?;
        let size = x.ints(1)?.ok_or_else(|| x.err("input 1 (size) is required"))?;
        let t = theta.size();
        let ok = match size.len() {
            4 => t.len() == 3 && t[1..] == [2, 3],
            5 => t.len() == 3 && t[1..] == [3, 4],
            _ => false,
        };
        if !ok || t[0] != size[0] {
            return Err(x.err(format!("theta {t:?} does not fit size {size:?} (want [N, 2, 3] or [N, 3, 4])")));
        }
        Ok(vec![Tensor::f_affine_grid_generator(theta, &size, align)?])
    })
}

/// Reads a float tensor's values for host-side geometry (box corners), off the autograd graph.
pub fn host_f64(t: &Tensor) -> Result<Vec<f64>> {
    let flat = t.f_detach()?.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_to_device(Device::Cpu)?;
    Ok(Vec::<f64>::try_from(&flat)?)
}

struct RoiAlign {
    max: bool,
    out: (i64, i64),
    ratio: i64,
    scale: f64,
    half_pixel: bool,
}

impl RoiAlign {
    fn new(ctx: &OpCtx) -> Result<Self> {
        let n = ctx.node;
        let max = match n.get_s("mode")?.as_deref().unwrap_or("avg") {
            "avg" => false,
            "max" => true,
            m => return Err(n.attr_err("mode", format!("must be avg or max, got '{m}'"))),
        };
        // Before opset 16 the op behaved as output_half_pixel (no input shift).
        let default = if ctx.opset < 16 { "output_half_pixel" } else { "half_pixel" };
        let half_pixel = match n.get_s("coordinate_transformation_mode")?.as_deref().unwrap_or(default) {
            "half_pixel" => true,
            "output_half_pixel" => false,
            m => {
                return Err(n.attr_err("coordinate_transformation_mode", format!("unsupported '{m}'")));
            }
        };
        let oh = n.get_i("output_height")?.unwrap_or(1);
        let ow = n.get_i("output_width")?.unwrap_or(1);
        if oh < 1 || ow < 1 {
            return Err(n.attr_err("output_height", format!("output size must be positive, got {oh}x{ow}")));
        }
        let ratio = n.get_i("sampling_ratio")?.unwrap_or(0);
        if ratio < 0 {
            return Err(n.attr_err("sampling_ratio", format!("must not be negative, got {ratio}")));
        }
        Ok(RoiAlign { max, out: (oh, ow), ratio, scale: n.get_f("spatial_scale")?.unwrap_or(1.0) as f64, half_pixel })
    }

    /// Bilinear taps of every sample point of one box: flat pixel indices and weights, each
    /// [oh, ow, samples, 4], and the sample count per bin. Points far outside get zero weight.
    fn taps(&self, b: &[f64], h: i64, w: i64) -> (Vec<i64>, Vec<f64>, i64) {
        let off = if self.half_pixel { 0.5 } else { 0.0 };
        let (x0, y0) = (b[0] * self.scale - off, b[1] * self.scale - off);
        let (mut rw, mut rh) = (b[2] * self.scale - off - x0, b[3] * self.scale - off - y0);
        if !self.half_pixel {
            // Legacy mode forces malformed boxes to 1x1.
            rw = rw.max(1.0);
            rh = rh.max(1.0);
        }
        let (oh, ow) = self.out;
        let (bh, bw) = (rh / oh as f64, rw / ow as f64);
        let grid = |len: f64| if self.ratio > 0 { self.ratio } else { len.ceil().max(0.0) as i64 };
        let (gh, gw) = (grid(bh), grid(bw));
        let (mut idx, mut wt) = (Vec::new(), Vec::new());
        for ph in 0..oh {
            for pw in 0..ow {
                for iy in 0..gh {
                    let y = y0 + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                    for ix in 0..gw {
                        let x = x0 + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                        let (i, wv) = bilinear(y, x, h, w);
                        idx.extend(i);
                        wt.extend(wv);
                    }
                }
            }
        }
        (idx, wt, gh * gw)
    }

    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let (img, rois) = (x.req(0)?, x.req(1)?);
        let batch = x.ints(2)?.ok_or_else(|| x.err("input 2 (batch_indices) is required"))?;
        let s = img.size();
        if s.len() != 4 || rois.dim() != 2 || rois.size()[1] != 4 || rois.size()[0] != batch.len() as i64 {
            return Err(x.err(format!("want X [N,C,H,W], rois [R,4], batch_indices [R]; got {s:?}, {:?}", rois.size())));
        }
        let (c, h, w) = (s[1], s[2], s[3]);
        let (oh, ow) = self.out;
        let flat = img.f_reshape([s[0], c, h * w])?;
        let boxes = host_f64(rois)?;
        let mut outs = Vec::with_capacity(batch.len());
        for (r, &b) in batch.iter().enumerate() {
            if b < 0 || b >= s[0] {
                return Err(x.err(format!("batch index {b} is out of range for {} images", s[0])));
            }
            let (idx, wt, count) = self.taps(&boxes[4 * r..4 * r + 4], h, w);
            if count == 0 {
                outs.push(Tensor::f_zeros([c, oh, ow], (img.kind(), img.device()))?);
                continue;
            }
            let i = Tensor::f_from_slice(&idx)?.f_to_device(img.device())?;
            let wts = Tensor::f_from_slice(&wt)?.f_to_kind(img.kind())?.f_to_device(img.device())?;
            let v = flat.f_select(0, b)?.f_index_select(1, &i)?.f_mul(&wts)?.f_reshape([c, oh, ow, count, 4])?;
            // ONNX's max mode takes the largest weighted corner, not the interpolated value.
            outs.push(if self.max {
                v.f_amax([4, 3], false)?
            } else {
                v.f_sum_dim_intlist(&[3i64, 4][..], false, None::<Kind>)?.f_div_scalar(count as f64)?
            });
        }
        if outs.is_empty() {
            return Ok(vec![Tensor::f_zeros([0, c, oh, ow], (img.kind(), img.device()))?]);
        }
        Ok(vec![Tensor::f_stack(&outs, 0)?])
    }
}

/// Corner indices (row-major in an h×w map) and weights of a bilinear sample at (y, x), with
/// RoiAlign's edge rules: beyond one pixel outside → nothing; past the last pixel → the edge.
fn bilinear(y: f64, x: f64, h: i64, w: i64) -> ([i64; 4], [f64; 4]) {
    if y < -1.0 || y > h as f64 || x < -1.0 || x > w as f64 {
        return ([0; 4], [0.0; 4]);
    }
    let edge = |v: f64, n: i64| {
        let v = v.max(0.0);
        let lo = v as i64;
        if lo >= n - 1 {
            (n - 1, n - 1, (n - 1) as f64)
        } else {
            (lo, lo + 1, v)
        }
    };
    let (yl, yh, y) = edge(y, h);
    let (xl, xh, x) = edge(x, w);
    let (ly, lx) = (y - yl as f64, x - xl as f64);
    let (hy, hx) = (1.0 - ly, 1.0 - lx);
    ([yl * w + xl, yl * w + xh, yh * w + xl, yh * w + xh], [hy * hx, hy * lx, ly * hx, ly * lx])
}

fn roi_align(ctx: &OpCtx) -> Result<BoxOp> {
    let r = RoiAlign::new(ctx)?;
    op(move |x| r.run(x))
}

/// Two spatial ints per attribute (`[begin.., end..]` for pads), or the default.
fn pair(ctx: &OpCtx, name: &str, len: usize, default: i64) -> Result<Vec<i64>> {
    let v = ctx.node.get_ints(name)?.unwrap_or_else(|| vec![default; len]);
    if v.len() != len {
        return Err(ctx.node.attr_err(name, format!("need {len} values for 2-D DeformConv, got {v:?}")));
    }
    Ok(v)
}

/// DeformConv: every kernel tap samples X bilinearly (zeros outside) at its regular position
/// plus a learned offset, optionally scaled by a mask, then the taps are contracted with W as a
/// grouped convolution would.
fn deform_conv(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let kernel = n.get_ints("kernel_shape")?;
    let strides = pair(ctx, "strides", 2, 1)?;
    let dil = pair(ctx, "dilations", 2, 1)?;
    let pads = pair(ctx, "pads", 4, 0)?;
    let group = n.get_i("group")?.unwrap_or(1);
    let og = n.get_i("offset_group")?.unwrap_or(1);
    if group < 1 || og < 1 {
        return Err(n.attr_err("group", format!("group {group} and offset_group {og} must be positive")));
    }
    op(move |x| {
        let (img, wt, offset) = (x.req(0)?, x.req(1)?, x.req(2)?);
        let (s, ws, os) = (img.size(), wt.size(), offset.size());
        if s.len() != 4 || ws.len() != 4 || os.len() != 4 {
            return Err(x.err("only 2-D DeformConv is supported (X, W and offset must be 4-D)"));
        }
        let (nb, c, h, w) = (s[0], s[1], s[2], s[3]);
        let (kh, kw) = match &kernel {
            Some(k) if k.len() == 2 => (k[0], k[1]),
            Some(k) => return Err(x.err(format!("kernel_shape {k:?} is not 2-D"))),
            None => (ws[2], ws[3]),
        };
        let (taps, oc, (oh, ow)) = (kh * kw, ws[0], (os[2], os[3]));
        if c != ws[1] * group || oc % group != 0 || c % og != 0 || os[1] != og * 2 * taps || os[0] != nb {
            return Err(
                x.err(format!("shapes X {s:?}, W {ws:?}, offset {os:?} do not fit group {group}, offset_group {og}"))
            );
        }
        let opts = (img.kind(), img.device());
        // Regular tap positions [kh·kw, oh, ow] before the offsets.
        let along = |k: i64, d: i64, o: i64, st: i64, p: i64| -> Result<(Tensor, Tensor)> {
            let kpos = Tensor::f_arange(k, opts)?.f_mul_scalar(d)?;
            let opos = Tensor::f_arange(o, opts)?.f_mul_scalar(st)?.f_sub_scalar(p)?;
            Ok((kpos, opos))
        };
        let (ky, oy) = along(kh, dil[0], oh, strides[0], pads[0])?;
        let (kx, ox) = along(kw, dil[1], ow, strides[1], pads[1])?;
        let base_y =
            ky.f_reshape([kh, 1, 1, 1])?.f_add(&oy.f_reshape([1, 1, oh, 1])?)?.f_expand([kh, kw, oh, ow], false)?;
        let base_x =
            kx.f_reshape([1, kw, 1, 1])?.f_add(&ox.f_reshape([1, 1, 1, ow])?)?.f_expand([kh, kw, oh, ow], false)?;
        let off = offset.f_reshape([nb, og, taps, 2, oh, ow])?;
        let py = off.f_select(3, 0)?.f_add(&base_y.f_reshape([taps, oh, ow])?)?;
        let px = off.f_select(3, 1)?.f_add(&base_x.f_reshape([taps, oh, ow])?)?;
        // Pixel p ↦ normalised (2p + 1)/size − 1 (align_corners = 0 keeps size 1 well defined).
        let norm = |p: &Tensor, size: i64| -> Result<Tensor> {
            Ok(p.f_mul_scalar(2.0)?.f_add_scalar(1.0)?.f_div_scalar(size as f64)?.f_sub_scalar(1.0)?)
        };
        let grid = Tensor::f_stack(&[norm(&px, w)?, norm(&py, h)?], -1)?.f_reshape([nb * og, taps * oh, ow, 2])?;
        let cols = img.f_reshape([nb * og, c / og, h, w])?.f_grid_sampler(&grid, LINEAR, ZEROS, false)?;
        let mut cols = cols.f_reshape([nb, og, c / og, taps, oh, ow])?;
        if let Some(m) = x.get(4) {
            cols = cols.f_mul(&m.f_reshape([nb, og, 1, taps, oh, ow])?)?;
        }
        let cols = cols.f_reshape([nb, group, c / group * taps, oh * ow])?;
        let y = wt.f_reshape([group, oc / group, c / group * taps])?.f_matmul(&cols)?.f_reshape([nb, oc, oh, ow])?;
        Ok(vec![match x.get(3) {
            Some(b) => y.f_add(&b.f_reshape([1, oc, 1, 1])?)?,
            None => y,
        }])
    })
}

pub fn register(r: &mut Registry) {
    r.add("GridSample", 16, grid_sample);
    r.add("AffineGrid", 20, affine_grid);
    r.add("RoiAlign", 10, roi_align);
    r.add("DeformConv", 19, deform_conv);
}

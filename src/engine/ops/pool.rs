//! Pooling: MaxPool (with ONNX's Indices), MaxUnpool, AveragePool, LpPool and their Global forms.
//! Pads, ceil_mode and dilations follow ONNX: the input is padded explicitly (asymmetric pads and
//! the ceil-mode overhang included) and libtorch then pools without padding.
use super::conv::{torch_pads, Geom, Window};
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

struct Pool {
    kernel: Vec<i64>,
    win: Window,
    ceil: bool,
}

/// The geometry of one call: `g.end` holds the declared pads, `extra` the ceil-mode overhang
/// (or, negative, the floor-mode leftover) to add after them.
struct Plan {
    g: Geom,
    extra: Vec<i64>,
}

impl Plan {
    fn ends(&self) -> Vec<i64> {
        self.g.end.iter().zip(&self.extra).map(|(e, x)| e + x).collect()
    }
}

impl Pool {
    fn parse(ctx: &OpCtx) -> Result<Self> {
        let kernel = ctx.node.req_ints("kernel_shape")?;
        if kernel.is_empty() || kernel.iter().any(|&k| k < 1) {
            return Err(ctx.node.attr_err("kernel_shape", format!("{kernel:?} must list sizes >= 1")));
        }
        let ceil = ctx.node.get_i("ceil_mode")?.unwrap_or(0) != 0;
        Ok(Pool { kernel, win: Window::parse(ctx.node)?, ceil })
    }

    /// Checks the rank, resolves the pads and the output size (ONNX: with ceil_mode, a window
    /// that would start in the end padding is dropped).
    fn plan(&self, x: &Inputs, t: &Tensor) -> Result<Plan> {
        let size = t.size();
        let n = self.kernel.len();
        if size.len() != n + 2 {
            return Err(x.err(format!("input of shape {size:?} does not match kernel_shape {:?}", self.kernel)));
        }
        let spatial = &size[2..];
        let g = self.win.geom(x, spatial, &self.kernel)?;
        let extra = (0..n)
            .map(|i| {
                let (s, dk) = (g.strides[i], (self.kernel[i] - 1) * g.dilations[i] + 1);
                let span = spatial[i] + g.begin[i] + g.end[i] - dk;
                if span < 0 {
                    return Err(x.err(format!("the window ({dk}) is larger than the padded input ({})", span + dk)));
                }
                let mut out = if self.ceil { (span + s - 1) / s } else { span / s } + 1;
                if self.ceil && (out - 1) * s >= spatial[i] + g.begin[i] {
                    out -= 1;
                }
                Ok((out - 1) * s + dk - (spatial[i] + g.begin[i] + g.end[i]))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan { g, extra })
    }
}

/// Pads (or crops, where negative) the spatial dims with `value`.
fn pad(t: &Tensor, begin: &[i64], end: &[i64], value: f64) -> Result<Tensor> {
    if begin.iter().chain(end).all(|&p| p == 0) {
        return Ok(t.shallow_clone());
    }
    Ok(t.f_pad(torch_pads(begin, end), "constant", value)?)
}

/// Sum over every window of an unpadded (N, C, D…) tensor, floor mode.
fn window_sum(t: &Tensor, k: &[i64], g: &Geom) -> Result<Tensor> {
    let zeros = vec![0; k.len()];
    if g.dilations.iter().all(|&d| d == 1) {
        match k.len() {
            1 => return Ok(t.f_avg_pool1d(k, &g.strides, &zeros, false, true)?.f_mul_scalar(k[0])?),
            2 => return Ok(t.f_avg_pool2d(k, &g.strides, &zeros, false, true, 1)?),
            3 => return Ok(t.f_avg_pool3d(k, &g.strides, &zeros, false, true, 1)?),
            _ => {}
        }
    }
    // Dilated (or >3-D) windows: a ones kernel convolved over every channel on its own.
    let size = t.size();
    let mut flat = vec![-1, 1];
    flat.extend_from_slice(&size[2..]);
    let mut kshape = vec![1, 1];
    kshape.extend_from_slice(k);
    let ones = Tensor::f_ones(kshape, (t.kind(), t.device()))?;
    let y =
        t.f_reshape(flat)?.f_convolution(&ones, None::<&Tensor>, &g.strides, &zeros, &g.dilations, false, &zeros, 1)?;
    let mut out = size[..2].to_vec();
    out.extend_from_slice(&y.size()[2..]);
    Ok(y.f_reshape(out)?)
}

fn max_pool(ctx: &OpCtx) -> Result<BoxOp> {
    let p = Pool::parse(ctx)?;
    let col_major = match ctx.node.get_i("storage_order")?.unwrap_or(0) {
        0 => false,
        1 => true,
        v => return Err(ctx.node.attr_err("storage_order", format!("must be 0 or 1, got {v}"))),
    };
    let want_indices = ctx.node.output.get(1).is_some_and(|o| !o.is_empty());
    op(move |x| {
        let t = x.req(0)?;
        let pl = p.plan(x, t)?;
        // Integer inputs (int8/uint8) pool exactly as f32, padded with -inf.
        let float = t.is_floating_point();
        let src = if float { t.shallow_clone() } else { t.f_to_kind(Kind::Float)? };
        let padded = pad(&src, &pl.g.begin, &pl.ends(), f64::NEG_INFINITY)?;
        let (k, s, d, z) = (&p.kernel, &pl.g.strides, &pl.g.dilations, vec![0; p.kernel.len()]);
        let (y, idx) = match k.len() {
            1 => padded.f_max_pool1d_with_indices(k, s, &z, d, false)?,
            2 => padded.f_max_pool2d_with_indices(k, s, &z, d, false)?,
            3 => padded.f_max_pool3d_with_indices(k, s, &z, d, false)?,
            n => return Err(x.err(format!("{n}-D max pooling is not supported (1-D to 3-D are)"))),
        };
        let y = if float { y } else { y.f_to_kind(t.kind())? };
        if !want_indices {
            return Ok(vec![y]);
        }
        Ok(vec![y, onnx_indices(&idx, &padded.size(), &t.size(), &pl.g.begin, col_major)?])
    })
}

/// libtorch's indices count within one padded plane; ONNX's count over the whole unpadded
/// input (N, C and the spatial dims), row-major or, for storage_order 1, column-major inside a plane.
fn onnx_indices(idx: &Tensor, padded: &[i64], orig: &[i64], begin: &[i64], col_major: bool) -> Result<Tensor> {
    let n = begin.len();
    let mut rem = idx.shallow_clone();
    let mut coords = Vec::with_capacity(n);
    for i in (0..n).rev() {
        coords.push(rem.f_remainder(padded[2 + i])?.f_sub_scalar(begin[i])?);
        rem = rem.f_div_scalar_mode(padded[2 + i], "floor")?;
    }
    coords.reverse();
    let order: Vec<usize> = if col_major { (0..n).rev().collect() } else { (0..n).collect() };
    let mut flat = idx.f_zeros_like()?;
    for i in order {
        flat = flat.f_mul_scalar(orig[2 + i])?.f_add(&coords[i])?;
    }
    let plane: i64 = orig[2..].iter().product();
    let mut shape = orig[..2].to_vec();
    shape.resize(orig.len(), 1);
    let base =
        Tensor::f_arange(orig[0] * orig[1], (Kind::Int64, idx.device()))?.f_mul_scalar(plane)?.f_reshape(shape)?;
    Ok(flat.f_add(&base)?)
}

fn avg_pool(ctx: &OpCtx) -> Result<BoxOp> {
    let p = Pool::parse(ctx)?;
    let include_pad = ctx.node.get_i("count_include_pad")?.unwrap_or(0) != 0;
    op(move |x| {
        let t = x.req(0)?;
        let pl = p.plan(x, t)?;
        let (b, e) = (&pl.g.begin, &pl.ends());
        let sums = window_sum(&pad(t, b, e, 0.0)?, &p.kernel, &pl.g)?;
        // Divisor: the counted cells of each window (input only, or input and declared pads;
        // never the ceil-mode overhang).
        let size = t.size();
        let n = p.kernel.len();
        let mut shape = vec![1, 1];
        let counted = if include_pad {
            shape.extend((0..n).map(|i| size[2 + i] + pl.g.begin[i] + pl.g.end[i]));
            pad(&Tensor::f_ones(shape, (t.kind(), t.device()))?, &vec![0; n], &pl.extra, 0.0)?
        } else {
            shape.extend_from_slice(&size[2..]);
            pad(&Tensor::f_ones(shape, (t.kind(), t.device()))?, b, e, 0.0)?
        };
        Ok(vec![sums.f_div(&window_sum(&counted, &p.kernel, &pl.g)?)?])
    })
}

/// LpPool's `p`: a float before opset 2, an int after.
fn p_attr(ctx: &OpCtx) -> Result<f64> {
    let p = if ctx.opset < 2 { ctx.node.get_f("p")?.map(f64::from) } else { ctx.node.get_i("p")?.map(|p| p as f64) };
    let p = p.unwrap_or(2.0);
    if p <= 0.0 {
        return Err(ctx.node.attr_err("p", format!("must be positive, got {p}")));
    }
    Ok(p)
}

fn lp_pool(ctx: &OpCtx) -> Result<BoxOp> {
    let pool = Pool::parse(ctx)?;
    let p = p_attr(ctx)?;
    op(move |x| {
        let t = x.req(0)?;
        let pl = pool.plan(x, t)?;
        let powed = pad(&t.f_abs()?.f_pow_tensor_scalar(p)?, &pl.g.begin, &pl.ends(), 0.0)?;
        Ok(vec![window_sum(&powed, &pool.kernel, &pl.g)?.f_pow_tensor_scalar(1.0 / p)?])
    })
}

/// The spatial dims of an (N, C, D…) tensor.
fn spatial_dims(x: &Inputs, t: &Tensor) -> Result<Vec<i64>> {
    if t.dim() < 2 {
        return Err(x.err(format!("expected an (N, C, …) input, got shape {:?}", t.size())));
    }
    Ok((2..t.dim() as i64).collect())
}

fn global_avg(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = x.req(0)?;
        let dims = spatial_dims(x, t)?;
        Ok(vec![if dims.is_empty() { t.shallow_clone() } else { t.f_mean_dim(dims, true, None::<Kind>)? }])
    })
}

fn global_max(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let t = x.req(0)?;
        let dims = spatial_dims(x, t)?;
        Ok(vec![if dims.is_empty() { t.shallow_clone() } else { t.f_amax(dims, true)? }])
    })
}

fn global_lp(ctx: &OpCtx) -> Result<BoxOp> {
    let p = p_attr(ctx)?;
    op(move |x| {
        let t = x.req(0)?;
        let dims = spatial_dims(x, t)?;
        let powed = t.f_abs()?.f_pow_tensor_scalar(p)?;
        let sum = if dims.is_empty() { powed } else { powed.f_sum_dim_intlist(dims, true, None::<Kind>)? };
        Ok(vec![sum.f_pow_tensor_scalar(1.0 / p)?])
    })
}

/// Scatters X into zeros at MaxPool's flat indices; the output size is the third input or
/// (in - 1) · stride + kernel - pads.
fn max_unpool(ctx: &OpCtx) -> Result<BoxOp> {
    let kernel = ctx.node.req_ints("kernel_shape")?;
    let win = Window::parse(ctx.node)?;
    op(move |x| {
        let (t, idx) = (x.req(0)?, x.req(1)?);
        let size = t.size();
        if size.len() != kernel.len() + 2 || idx.size() != size {
            return Err(x.err(format!("X {size:?} and I {:?} must match kernel_shape {kernel:?}", idx.size())));
        }
        let shape = match x.ints(2)? {
            Some(s) => s,
            None => {
                let g = win.geom(x, &size[2..], &kernel)?;
                let spatial =
                    (0..kernel.len()).map(|i| (size[2 + i] - 1) * g.strides[i] + kernel[i] - g.begin[i] - g.end[i]);
                size[..2].iter().copied().chain(spatial).collect()
            }
        };
        let zeros = Tensor::f_zeros([shape.iter().product::<i64>()], (t.kind(), t.device()))?;
        let y = zeros.f_scatter(0, &idx.f_reshape([-1])?, &t.f_reshape([-1])?)?;
        Ok(vec![y.f_reshape(shape)?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("MaxPool", 1, max_pool);
    r.add("AveragePool", 1, avg_pool);
    r.add("LpPool", 1, lp_pool);
    r.add("MaxUnpool", 9, max_unpool);
    r.add("GlobalAveragePool", 1, global_avg);
    r.add("GlobalMaxPool", 1, global_max);
    r.add("GlobalLpPool", 1, global_lp);
}

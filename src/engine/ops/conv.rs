//! Convolutions: Conv, ConvTranspose and ConvInteger with auto_pad, dilations, groups and
//! output_padding; also the window geometry (auto_pad, pads, strides, dilations) the pools share.
use crate::engine::{op, precision, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AutoPad {
    NotSet,
    SameUpper,
    SameLower,
    Valid,
}

/// Window attributes as written; their lengths are checked against the input's rank at run time.
#[derive(Clone, Debug)]
pub struct Window {
    pub auto_pad: AutoPad,
    strides: Option<Vec<i64>>,
    dilations: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
}

/// Per spatial dimension: strides, dilations and the explicit pads before and after.
#[derive(Clone, Debug)]
pub struct Geom {
    pub strides: Vec<i64>,
    pub dilations: Vec<i64>,
    pub begin: Vec<i64>,
    pub end: Vec<i64>,
}

fn positive(node: &NodeProto, name: &str, min: i64) -> Result<Option<Vec<i64>>> {
    let v = node.get_ints(name)?;
    if let Some(bad) = v.iter().flatten().find(|&&x| x < min) {
        return Err(node.attr_err(name, format!("value {bad} must be >= {min}")));
    }
    Ok(v)
}

impl Window {
    pub fn parse(node: &NodeProto) -> Result<Self> {
        let auto_pad = match node.get_s("auto_pad")?.as_deref().unwrap_or("NOTSET") {
            "NOTSET" | "" => AutoPad::NotSet,
            "SAME_UPPER" => AutoPad::SameUpper,
            "SAME_LOWER" => AutoPad::SameLower,
            "VALID" => AutoPad::Valid,
            other => return Err(node.attr_err("auto_pad", format!("unknown value '{other}'"))),
        };
        let strides = positive(node, "strides", 1)?;
        let dilations = positive(node, "dilations", 1)?;
        Ok(Window { auto_pad, strides, dilations, pads: positive(node, "pads", 0)? })
    }

    /// Strides and dilations for `n` spatial dims (default 1).
    pub fn steps(&self, x: &Inputs, n: usize) -> Result<(Vec<i64>, Vec<i64>)> {
        Ok((per_dim(x, &self.strides, "strides", n, 1)?, per_dim(x, &self.dilations, "dilations", n, 1)?))
    }

    /// Resolves the pads for `spatial` input sizes and `kernel` (SAME_*: output = ceil(in / stride)).
    pub fn geom(&self, x: &Inputs, spatial: &[i64], kernel: &[i64]) -> Result<Geom> {
        let n = spatial.len();
        let (strides, dilations) = self.steps(x, n)?;
        let (mut begin, mut end) = (vec![0; n], vec![0; n]);
        match self.auto_pad {
            AutoPad::Valid => {}
            AutoPad::NotSet => {
                if let Some(p) = &self.pads {
                    if p.len() != 2 * n {
                        return Err(x.err(format!(
                            "pads has {} values, expected {} for {n} spatial dims",
                            p.len(),
                            2 * n
                        )));
                    }
                    begin.copy_from_slice(&p[..n]);
                    end.copy_from_slice(&p[n..]);
                }
            }
            same => {
                for i in 0..n {
                    let out = (spatial[i] + strides[i] - 1) / strides[i];
                    let total = ((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i]).max(0);
                    let small = total / 2;
                    (begin[i], end[i]) =
                        if same == AutoPad::SameUpper { (small, total - small) } else { (total - small, small) };
                }
            }
        }
        // The padded input is allocated first: pads from the model must not ask for more than the bound.
        if begin.iter().chain(&end).any(|&p| p != 0) {
            let size = x.req(0)?.size();
            let lead = &size[..size.len().saturating_sub(n)];
            let padded = (0..n).map(|i| spatial[i].saturating_add(begin[i]).saturating_add(end[i]));
            x.bounded(&lead.iter().copied().chain(padded).collect::<Vec<_>>())?;
        }
        Ok(Geom { strides, dilations, begin, end })
    }
}

/// An attribute list with one value per spatial dim, or `default` everywhere when absent.
pub fn per_dim(x: &Inputs, v: &Option<Vec<i64>>, name: &str, n: usize, default: i64) -> Result<Vec<i64>> {
    match v {
        None => Ok(vec![default; n]),
        Some(v) if v.len() == n => Ok(v.clone()),
        Some(v) => Err(x.err(format!("{name} has {} values, the input has {n} spatial dims", v.len()))),
    }
}

/// ONNX begin/end pads as libtorch's pad list (last dim first, begin then end).
pub fn torch_pads(begin: &[i64], end: &[i64]) -> Vec<i64> {
    begin.iter().zip(end).rev().flat_map(|(b, e)| [*b, *e]).collect()
}

/// `[1, -1, 1, …]`: a per-channel vector viewed to broadcast against an (N, C, …) tensor.
pub fn channel_view(t: &Tensor, rank: usize) -> Result<Tensor> {
    let mut shape = vec![1, -1];
    shape.resize(rank.max(2), 1);
    Ok(t.f_reshape(shape)?)
}

fn group_attr(node: &NodeProto) -> Result<i64> {
    let g = node.get_i("group")?.unwrap_or(1);
    if g < 1 {
        return Err(node.attr_err("group", format!("must be >= 1, got {g}")));
    }
    Ok(g)
}

/// X (N, C, D…) and W (M, C/group, k…), checked against `kernel_shape` when given.
fn kernel_of(x: &Inputs, input: &Tensor, w: &Tensor, kshape: Option<&[i64]>) -> Result<Vec<i64>> {
    let (xs, ws) = (input.size(), w.size());
    if xs.len() < 3 || ws.len() != xs.len() {
        return Err(x.err(format!("expected X (N, C, D…) and W of the same rank, got {xs:?} and {ws:?}")));
    }
    if let Some(k) = kshape {
        if k != &ws[2..] {
            return Err(x.err(format!("kernel_shape {k:?} does not match the weight's shape {ws:?}")));
        }
    }
    Ok(ws[2..].to_vec())
}

struct ConvAttrs {
    win: Window,
    group: i64,
    kshape: Option<Vec<i64>>,
}

impl ConvAttrs {
    fn parse(node: &NodeProto) -> Result<Self> {
        Ok(ConvAttrs { win: Window::parse(node)?, group: group_attr(node)?, kshape: node.get_ints("kernel_shape")? })
    }

    /// The convolution; asymmetric pads become an explicit zero pad first (libtorch pads evenly).
    fn run(&self, x: &Inputs, input: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
        let kernel = kernel_of(x, input, w, self.kshape.as_deref())?;
        let g = self.win.geom(x, &input.size()[2..], &kernel)?;
        let zeros = vec![0; kernel.len()];
        let (input, pad) = if g.begin == g.end {
            (input.shallow_clone(), g.begin.clone())
        } else {
            (input.f_constant_pad_nd(torch_pads(&g.begin, &g.end))?, zeros.clone())
        };
        Ok(input.f_convolution(w, bias, &g.strides, &pad, &g.dilations, false, &zeros, self.group)?)
    }
}

fn conv(ctx: &OpCtx) -> Result<BoxOp> {
    let a = ConvAttrs::parse(ctx.node)?;
    op(move |x| {
        let operands: Vec<&Tensor> = [Some(x.req(0)?), Some(x.req(1)?), x.get(2)].into_iter().flatten().collect();
        Ok(vec![precision::product(&operands, |t| a.run(x, &t[0], &t[1], t.get(2)))?])
    })
}

/// Integer conv: subtract the zero points, convolve exactly in f64, return int32.
fn conv_integer(ctx: &OpCtx) -> Result<BoxOp> {
    let a = ConvAttrs::parse(ctx.node)?;
    op(move |x| {
        let input = x.req(0)?.f_to_kind(Kind::Double)?;
        let mut w = x.req(1)?.f_to_kind(Kind::Double)?;
        let input = match x.get(2) {
            Some(z) => input.f_sub(&z.f_to_kind(Kind::Double)?)?,
            None => input,
        };
        if let Some(z) = x.get(3) {
            // A per-output-channel zero point has one value per row of W.
            let z = z.f_to_kind(Kind::Double)?;
            let mut rows = vec![-1];
            rows.resize(w.dim(), 1);
            w = w.f_sub(&if z.numel() > 1 { z.f_reshape(rows)? } else { z })?;
        }
        Ok(vec![a.run(x, &input, &w, None)?.f_round()?.f_to_kind(Kind::Int)?])
    })
}

fn conv_transpose(ctx: &OpCtx) -> Result<BoxOp> {
    let a = ConvAttrs::parse(ctx.node)?;
    let out_pad = positive(ctx.node, "output_padding", 0)?;
    let out_shape = ctx.node.get_ints("output_shape")?;
    op(move |x| {
        let (input, w, bias) = (x.req(0)?, x.req(1)?, x.get(2));
        let kernel = kernel_of(x, input, w, a.kshape.as_deref())?;
        let size = input.size();
        let (n, spatial) = (kernel.len(), &size[2..]);
        let (s, d) = a.win.steps(x, n)?;
        let op_ = per_dim(x, &out_pad, "output_padding", n, 0)?;
        // Size of the full (unpadded) transposed convolution.
        let full: Vec<i64> = (0..n)
            .map(|i| s[i].saturating_mul(spatial[i] - 1).saturating_add((kernel[i] - 1).saturating_mul(d[i])) + 1)
            .collect();
        let cout = w.size().get(1).copied().unwrap_or(1).saturating_mul(a.group);
        x.bounded(&[&size[..1], &[cout], &full[..]].concat())?;
        let same = matches!(a.win.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
        let target = match &out_shape {
            // output_shape may also carry N and C (older exporters): keep its spatial tail.
            Some(o) if o.len() >= n => Some(o[o.len() - n..].to_vec()),
            Some(o) => return Err(x.err(format!("output_shape {o:?} has fewer than {n} spatial dims"))),
            None if same => Some((0..n).map(|i| spatial[i] * s[i]).collect()),
            None => None,
        };
        let (begin, end) = match target {
            // The pads that yield the requested shape; SAME_UPPER puts the odd one at the end.
            Some(t) => (0..n)
                .map(|i| {
                    let total = full[i] + op_[i] - t[i];
                    let small = total.div_euclid(2);
                    if a.win.auto_pad == AutoPad::SameUpper {
                        (small, total - small)
                    } else {
                        (total - small, small)
                    }
                })
                .unzip(),
            None => {
                let g = a.win.geom(x, spatial, &kernel)?;
                (g.begin, g.end)
            }
        };
        let zeros = vec![0; n];
        let native = begin == end && begin.iter().all(|&p| p >= 0) && (0..n).all(|i| op_[i] < s[i].max(d[i]));
        if native {
            let operands: Vec<&Tensor> = [Some(input), Some(w), bias].into_iter().flatten().collect();
            let y = precision::product(&operands, |t| {
                Ok(t[0].f_convolution(&t[1], t.get(2), &s, &begin, &d, true, &op_, a.group)?)
            })?;
            return Ok(vec![y]);
        }
        // General case: full output, then crop (negative pad) or extend each side, then the bias.
        let y = precision::product(&[input, w], |t| {
            Ok(t[0].f_convolution(&t[1], None::<&Tensor>, &s, &zeros, &d, true, &zeros, a.group)?)
        })?;
        let ends: Vec<i64> = (0..n).map(|i| op_[i] - end[i]).collect();
        let starts: Vec<i64> = begin.iter().map(|b| -b).collect();
        let y = y.f_constant_pad_nd(torch_pads(&starts, &ends))?;
        Ok(vec![match bias {
            Some(b) => y.f_add(&channel_view(b, n + 2)?)?,
            None => y,
        }])
    })
}

pub fn register(r: &mut Registry) {
    r.add("Conv", 1, conv);
    r.add("ConvTranspose", 1, conv_transpose);
    r.add("ConvInteger", 10, conv_integer);
}

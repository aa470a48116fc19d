//! Signal processing: the Hann, Hamming and Blackman windows, MelWeightMatrix, DFT (opset 17: axis
//! attribute; opset 20: axis input) and STFT. Complex values are a trailing dim of size 2 (real,
//! imaginary), real ones a trailing dim of size 1. The transforms run on libtorch's FFT, so they
//! stay differentiable.
use super::util::norm_axis;
use crate::engine::convert::kind_of;
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::{DType, NodeExt};
use std::f64::consts::PI;
use tch::{Kind, Tensor};

/// The `output_datatype` attribute (default float) as a libtorch kind.
fn output_kind(ctx: &OpCtx) -> Result<Kind> {
    let code = ctx.node.get_i("output_datatype")?.unwrap_or(1);
    let bad = |why: String| ctx.node.attr_err("output_datatype", why);
    let d = i32::try_from(code)
        .ok()
        .and_then(|c| DType::from_onnx(c).ok())
        .ok_or_else(|| bad(format!("unknown type {code}")))?;
    match d {
        DType::String | DType::Bool | DType::C64 | DType::C128 | DType::Other(_) => {
            Err(bad(format!("{d} is not allowed")))
        }
        // Narrow types are stored widened and would need the Cast op's rounding rules.
        d if d.is_narrow() => Err(bad(format!("{d} is not supported for windows"))),
        d => kind_of(d).map_err(|e| bad(e.to_string())),
    }
}

/// A generalised cosine window `a0 - a1·cos(2πn/N) + a2·cos(4πn/N)`, with N = size when periodic
/// and size - 1 when symmetric; computed in f64, then converted.
fn cosine_window(ctx: &OpCtx, a: [f64; 3]) -> Result<BoxOp> {
    let periodic = flag(ctx, "periodic", 1)?;
    let kind = output_kind(ctx)?;
    op(move |x| {
        let size = x.ints(0)?.and_then(|v| v.first().copied()).ok_or_else(|| x.err("size is required"))?;
        if size < 0 {
            return Err(x.err(format!("size must be >= 0, got {size}")));
        }
        x.bounded(&[size])?;
        let n = if periodic { size } else { size - 1 } as f64;
        let phase = Tensor::f_arange(size, (Kind::Double, x.req(0)?.device()))?.f_mul_scalar(2.0 * PI / n)?;
        let w = phase.f_cos()?.f_mul_scalar(-a[1])?.f_add_scalar(a[0])?;
        let w = w.f_add(&phase.f_mul_scalar(2.0)?.f_cos()?.f_mul_scalar(a[2])?)?;
        Ok(vec![w.f_to_kind(kind)?])
    })
}

/// Triangular mel filters, one column per mel bin, over the dft_length/2 + 1 spectrogram bins:
/// num_mel_bins + 2 edges spaced evenly on the mel scale (the reference's step is the range over
/// num_mel_bins + 2), each snapped down to a spectrogram bin.
fn mel_weight_matrix(ctx: &OpCtx) -> Result<BoxOp> {
    let kind = output_kind(ctx)?;
    op(move |x| {
        let int = |i: usize| -> Result<i64> {
            x.ints(i)?.and_then(|v| v.first().copied()).ok_or_else(|| x.err(format!("input {i} is required")))
        };
        let (bins, dft_len, rate) = (int(0)?, int(1)?, int(2)?);
        let hz = |i: usize| x.scalar(i)?.ok_or_else(|| x.err(format!("input {i} is required")));
        let (lo, hi) = (hz(3)? as f32, hz(4)? as f32);
        if bins < 1 || dft_len < 1 || rate < 1 {
            return Err(x.err(format!("num_mel_bins {bins}, dft_length {dft_len} and sample_rate {rate} must be >= 1")));
        }
        x.bounded(&[dft_len / 2 + 1, bins.saturating_add(2)])?;
        // The mel edges in f32 like the reference, the rest in f64.
        let mel = |f: f32| 2595.0 * (1.0 + f / 700.0).log10();
        let step = f64::from((mel(hi) - mel(lo)) / (bins + 2) as f32);
        let edge: Vec<i64> = (0..bins + 2)
            .map(|i| {
                let hz = 700.0 * (10f64.powf((i as f64 * step + f64::from(mel(lo))) / 2595.0) - 1.0);
                ((dft_len + 1) as f64 * hz / rate as f64).floor() as i64
            })
            .collect();
        let spec = dft_len / 2 + 1;
        let mut w = vec![0.0f64; (spec * bins) as usize];
        let mut set = |j: i64, i: i64, v: f64| -> Result<()> {
            let slot = (0..spec).contains(&j).then(|| (j * bins + i) as usize);
            *slot.and_then(|s| w.get_mut(s)).ok_or_else(|| x.err(format!("mel edge {j} is outside {spec} bins")))? = v;
            Ok(())
        };
        for i in 0..bins {
            let (l, c, r) = (edge[i as usize], edge[i as usize + 1], edge[i as usize + 2]);
            if c == l {
                set(c, i, 1.0)?;
            } else {
                for j in l..=c {
                    set(j, i, (j - l) as f64 / (c - l) as f64)?;
                }
            }
            for j in c..r {
                set(j, i, (r - j) as f64 / (r - c) as f64)?;
            }
        }
        let dev = x.req(0)?.device();
        Ok(vec![Tensor::f_from_slice(&w)?.f_reshape([spec, bins])?.f_to_kind(kind)?.f_to_device(dev)?])
    })
}

/// The options of one transform.
#[derive(Clone, Copy)]
struct Dft {
    inverse: bool,
    onesided: bool,
}

impl Dft {
    /// Transforms `t` (…, 1 | 2) along `axis` with `n` points (None: the axis length, or
    /// 2·(len - 1) for the one-sided inverse); returns (…, 2), or (…, 1) for the one-sided inverse.
    fn run(&self, x: &Inputs, t: &Tensor, axis: i64, n: Option<i64>) -> Result<Tensor> {
        let shape = t.size();
        let r = shape.len();
        let last = shape.last().copied().unwrap_or(0);
        if r < 2 || !(last == 1 || last == 2) {
            return Err(x.err(format!("input {shape:?} must end in a dim of 1 (real) or 2 (complex)")));
        }
        let a = norm_axis(x, axis, r)?;
        if a == r as i64 - 1 {
            return Err(x.err(format!("axis {axis} is the real/imaginary dim")));
        }
        // libtorch's FFT wants f32/f64: compute f16/bf16 in f32 and convert back.
        let kind = t.kind();
        let calc = if kind == Kind::Double { Kind::Double } else { Kind::Float };
        let t = t.f_to_kind(calc)?;
        let sig = if last == 2 { t.f_contiguous()?.f_view_as_complex()? } else { t.f_squeeze_dim(-1)? };
        let len = shape[a as usize];
        let n = n.unwrap_or(if self.inverse && self.onesided { 2 * (len - 1) } else { len });
        if n < 1 {
            return Err(x.err(format!("dft_length {n} must be >= 1")));
        }
        let y = match (self.inverse, self.onesided) {
            (true, true) => return Ok(sig.f_fft_irfft(n, a, "backward")?.f_unsqueeze(-1)?.f_to_kind(kind)?),
            (true, false) => sig.f_fft_ifft(n, a, "backward")?,
            (false, false) => sig.f_fft_fft(n, a, "backward")?,
            // Real or complex input: the first n/2 + 1 bins of the full transform.
            (false, true) => sig.f_fft_fft(n, a, "backward")?.f_narrow(a, 0, n / 2 + 1)?,
        };
        // An inverse transform of real input comes back as a lazy conjugate view.
        Ok(y.f_resolve_conj()?.f_view_as_real()?.f_to_kind(kind)?)
    }
}

fn flag(ctx: &OpCtx, name: &str, default: i64) -> Result<bool> {
    match ctx.node.get_i(name)?.unwrap_or(default) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.node.attr_err(name, format!("must be 0 or 1, got {v}"))),
    }
}

/// A scalar integer input, None when absent.
fn int_input(x: &Inputs, i: usize) -> Result<Option<i64>> {
    match x.ints(i)? {
        None => Ok(None),
        Some(v) if v.len() == 1 => Ok(Some(v[0])),
        Some(v) => Err(x.err(format!("input {i} must be a scalar, got {} values", v.len()))),
    }
}

fn dft(ctx: &OpCtx) -> Result<BoxOp> {
    let d = Dft { inverse: flag(ctx, "inverse", 0)?, onesided: flag(ctx, "onesided", 0)? };
    // Opset 17 names the axis in an attribute (default 1), opset 20 in input 2 (default -2).
    let attr_axis = if ctx.opset < 20 { Some(ctx.node.get_i("axis")?.unwrap_or(1)) } else { None };
    op(move |x| {
        let axis = match attr_axis {
            Some(a) => a,
            None => int_input(x, 2)?.unwrap_or(-2),
        };
        Ok(vec![d.run(x, x.req(0)?, axis, int_input(x, 1)?)?])
    })
}

/// Frames of `frame_length` samples every `frame_step`, each multiplied by the window and
/// transformed: (batch, frames, bins, 2).
fn stft(ctx: &OpCtx) -> Result<BoxOp> {
    let d = Dft { inverse: false, onesided: flag(ctx, "onesided", 1)? };
    op(move |x| {
        let signal = x.req(0)?;
        let shape = signal.size();
        if shape.len() != 3 || !(shape[2] == 1 || shape[2] == 2) {
            return Err(x.err(format!("signal must be (batch, length, 1 | 2), got {shape:?}")));
        }
        let step = int_input(x, 1)?.ok_or_else(|| x.err("frame_step is required"))?;
        let window = x.get(2);
        let len = match (int_input(x, 3)?, window) {
            (Some(l), Some(w)) if w.size() != [l] => {
                return Err(x.err(format!("window {:?} does not have frame_length {l} values", w.size())))
            }
            (Some(l), _) => l,
            (None, Some(w)) if w.dim() == 1 => w.size()[0],
            (None, Some(w)) => return Err(x.err(format!("window must be 1-D, got {:?}", w.size()))),
            (None, None) => shape[1],
        };
        if step < 1 || len < 1 || len > shape[1] {
            return Err(x.err(format!("frame_step {step} and frame_length {len} do not fit a signal of {}", shape[1])));
        }
        // (batch, frames, 1|2, len) → (batch, frames, len, 1|2)
        let mut frames = signal.f_unfold(1, len, step)?.f_transpose(2, 3)?;
        if let Some(w) = window {
            frames = frames.f_mul(&w.f_reshape([-1, 1])?)?;
        }
        Ok(vec![d.run(x, &frames, 2, Some(len))?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("HannWindow", 17, |c| cosine_window(c, [0.5, 0.5, 0.0]));
    r.add("HammingWindow", 17, |c| cosine_window(c, [25.0 / 46.0, 21.0 / 46.0, 0.0]));
    r.add("BlackmanWindow", 17, |c| cosine_window(c, [0.42, 0.5, 0.08]));
    r.add("MelWeightMatrix", 17, mel_weight_matrix);
    r.add("DFT", 17, dft);
    r.add("STFT", 17, stft);
}

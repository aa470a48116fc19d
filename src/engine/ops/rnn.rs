//! RNN, GRU and LSTM (opset 7 on; `layout` from 14): one layer, forward, reverse or
//! bidirectional, unrolled over time with differentiable torch ops. Padded steps past a
//! sequence's `sequence_lens` emit zeros and leave the state unchanged; the reverse direction
//! runs each sequence backwards from its own last step.
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

#[derive(Clone, Copy)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    /// Gate blocks stacked in W and R.
    fn gates(self) -> i64 {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }
    /// Activation functions per direction, and their defaults.
    fn default_acts(self) -> &'static [&'static str] {
        match self {
            Cell::Rnn => &["Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
        }
    }
}

#[derive(Clone, Copy)]
enum ActFn {
    Relu,
    Tanh,
    Sigmoid,
    Affine,
    LeakyRelu,
    ThresholdedRelu,
    ScaledTanh,
    HardSigmoid,
    Elu,
    Softsign,
    Softplus,
}

/// An activation with its alpha and beta (spec defaults where the lists run out).
#[derive(Clone, Copy)]
struct Act(ActFn, f64, f64);

impl Act {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        let Act(f, a, b) = self;
        Ok(match f {
            ActFn::Relu => x.f_relu()?,
            ActFn::Tanh => x.f_tanh()?,
            ActFn::Sigmoid => x.f_sigmoid()?,
            ActFn::Affine => x.f_mul_scalar(a)?.f_add_scalar(b)?,
            ActFn::LeakyRelu => x.f_where_self(&x.f_ge(0.0)?, &x.f_mul_scalar(a)?)?,
            ActFn::ThresholdedRelu => x.f_where_self(&x.f_gt(a)?, &x.f_zeros_like()?)?,
            ActFn::ScaledTanh => x.f_mul_scalar(b)?.f_tanh()?.f_mul_scalar(a)?,
            ActFn::HardSigmoid => x.f_mul_scalar(a)?.f_add_scalar(b)?.f_clamp(0.0, 1.0)?,
            // The exponent only sees the negative side, so the unused branch never overflows.
            ActFn::Elu => x.f_where_self(&x.f_ge(0.0)?, &x.f_clamp_max(0.0)?.f_expm1()?.f_mul_scalar(a)?)?,
            ActFn::Softsign => x.f_div(&x.f_abs()?.f_add_scalar(1.0)?)?,
            ActFn::Softplus => x.f_softplus()?,
        })
    }
}

/// Parses `activations` with `activation_alpha`/`activation_beta`, which are consumed in order
/// by the functions that take them. Returns the functions per direction.
fn activations(ctx: &OpCtx, cell: Cell, dirs: usize) -> Result<Vec<Vec<Act>>> {
    let n = ctx.node;
    let per = cell.default_acts().len();
    let names = n.get_strings("activations")?.unwrap_or_else(|| {
        std::iter::repeat_n(cell.default_acts().iter().map(|s| s.to_string()), dirs).flatten().collect()
    });
    // A bidirectional node may list one direction's functions for both.
    let names = if names.len() == per && dirs == 2 { [names.clone(), names].concat() } else { names };
    if names.len() != per * dirs {
        return Err(n.attr_err("activations", format!("need {} functions, got {}", per * dirs, names.len())));
    }
    let mut alphas = n.get_floats("activation_alpha")?.unwrap_or_default().into_iter();
    let mut betas = n.get_floats("activation_beta")?.unwrap_or_default().into_iter();
    let next = |it: &mut std::vec::IntoIter<f32>, d: f64| it.next().map_or(d, f64::from);
    let mut acts = Vec::with_capacity(names.len());
    for name in &names {
        let act = match name.to_ascii_lowercase().as_str() {
            "relu" => Act(ActFn::Relu, 0.0, 0.0),
            "tanh" => Act(ActFn::Tanh, 0.0, 0.0),
            "sigmoid" => Act(ActFn::Sigmoid, 0.0, 0.0),
            "affine" => Act(ActFn::Affine, next(&mut alphas, 1.0), next(&mut betas, 0.0)),
            "leakyrelu" => Act(ActFn::LeakyRelu, next(&mut alphas, 0.01), 0.0),
            "thresholdedrelu" => Act(ActFn::ThresholdedRelu, next(&mut alphas, 1.0), 0.0),
            "scaledtanh" => Act(ActFn::ScaledTanh, next(&mut alphas, 1.0), next(&mut betas, 1.0)),
            "hardsigmoid" => Act(ActFn::HardSigmoid, next(&mut alphas, 0.2), next(&mut betas, 0.5)),
            "elu" => Act(ActFn::Elu, next(&mut alphas, 1.0), 0.0),
            "softsign" => Act(ActFn::Softsign, 0.0, 0.0),
            "softplus" => Act(ActFn::Softplus, 0.0, 0.0),
            _ => return Err(n.attr_err("activations", format!("unknown activation '{name}'"))),
        };
        acts.push(act);
    }
    Ok(acts.chunks(per).map(<[Act]>::to_vec).collect())
}

struct Recurrent {
    cell: Cell,
    /// One entry per direction: true when it runs backwards in time.
    reverse: Vec<bool>,
    acts: Vec<Vec<Act>>,
    clip: Option<f64>,
    hidden: Option<i64>,
    batch_first: bool,
}

/// One direction's weights and starting state, sliced out of the stacked inputs.
struct Dir {
    w: Tensor,
    r: Tensor,
    wb: Option<Tensor>,
    rb: Option<Tensor>,
    p: Option<Tensor>,
    h: Tensor,
    c: Tensor,
}

impl Recurrent {
    fn new(ctx: &OpCtx, cell: Cell) -> Result<Self> {
        let n = ctx.node;
        let reverse = match n.get_s("direction")?.as_deref().unwrap_or("forward") {
            "forward" => vec![false],
            "reverse" => vec![true],
            "bidirectional" => vec![false, true],
            d => return Err(n.attr_err("direction", format!("must be forward, reverse or bidirectional, got '{d}'"))),
        };
        let batch_first = match n.get_i("layout")?.unwrap_or(0) {
            0 => false,
            1 => true,
            v => return Err(n.attr_err("layout", format!("must be 0 or 1, got {v}"))),
        };
        let clip = n.get_f("clip")?.map(f64::from);
        if clip.is_some_and(|c| c <= 0.0) {
            return Err(n.attr_err("clip", "must be positive"));
        }
        let acts = activations(ctx, cell, reverse.len())?;
        Ok(Recurrent { cell, reverse, acts, clip, hidden: n.get_i("hidden_size")?, batch_first })
    }

    fn clip(&self, x: Tensor) -> Result<Tensor> {
        Ok(match self.clip {
            Some(c) => x.f_clamp(-c, c)?,
            None => x,
        })
    }

    /// Initial state input `i` as [directions, batch, hidden] (it is batch-first with layout 1).
    fn state(&self, x: &Inputs, i: usize) -> Result<Option<Tensor>> {
        x.get(i).map(|t| Ok(if self.batch_first { t.f_transpose(0, 1)? } else { t.shallow_clone() })).transpose()
    }

    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let (xs, w, r) = (x.req(0)?, x.req(1)?, x.req(2)?);
        let xs = if self.batch_first { xs.f_transpose(0, 1)? } else { xs.shallow_clone() };
        let (dirs, g) = (self.reverse.len() as i64, self.cell.gates());
        if xs.dim() != 3 || w.dim() != 3 || r.dim() != 3 {
            return Err(x.err("X, W and R must be 3-D"));
        }
        let hs = r.size()[2];
        let (t_len, batch) = (xs.size()[0], xs.size()[1]);
        if w.size()[..2] != [dirs, g * hs] || r.size() != [dirs, g * hs, hs] {
            return Err(x.err(format!(
                "shapes X {:?}, W {:?}, R {:?} do not fit {dirs} direction(s)",
                xs.size(),
                w.size(),
                r.size()
            )));
        }
        if self.hidden.is_some_and(|h| h != hs) {
            return Err(x.err(format!("hidden_size {:?} disagrees with R's {hs}", self.hidden)));
        }
        // All-full lengths need no masking.
        let lens = x.ints(4)?.filter(|l| l.iter().any(|&n| n != t_len));
        if lens.as_ref().is_some_and(|l| l.len() as i64 != batch || l.iter().any(|&n| n < 0 || n > t_len)) {
            return Err(x.err(format!("sequence_lens {lens:?} must give one length ≤ {t_len} per batch entry")));
        }
        let zeros = Tensor::f_zeros([dirs, batch, hs], (xs.kind(), xs.device()))?;
        let h0 = self.state(x, 5)?.unwrap_or_else(|| zeros.shallow_clone());
        let c0 = self.state(x, 6)?.unwrap_or_else(|| zeros.shallow_clone());
        let (mut ys, mut hn, mut cn) = (Vec::new(), Vec::new(), Vec::new());
        for (d, &rev) in self.reverse.iter().enumerate() {
            let di = d as i64;
            let b = x.get(3).map(|b| b.f_select(0, di)).transpose()?;
            let dir = Dir {
                w: w.f_select(0, di)?,
                r: r.f_select(0, di)?,
                wb: b.as_ref().map(|b| b.f_narrow(0, 0, g * hs)).transpose()?,
                rb: b.as_ref().map(|b| b.f_narrow(0, g * hs, g * hs)).transpose()?,
                p: x.get(7).map(|p| p.f_select(0, di)).transpose()?,
                h: h0.f_select(0, di)?,
                c: c0.f_select(0, di)?,
            };
            let (y, h, c) = self.direction(&xs, dir, &self.acts[d], rev, lens.as_deref())?;
            ys.push(y);
            hn.push(h);
            cn.push(c);
        }
        // Y [T, D, B, H]; Y_h, Y_c [D, B, H] (batch-first: [B, T, D, H] and [B, D, H]).
        let (y, yh, yc) = (Tensor::f_stack(&ys, 1)?, Tensor::f_stack(&hn, 0)?, Tensor::f_stack(&cn, 0)?);
        Ok(if self.batch_first {
            vec![y.f_permute([2, 0, 1, 3])?, yh.f_transpose(0, 1)?, yc.f_transpose(0, 1)?]
        } else {
            vec![y, yh, yc]
        })
    }

    /// Runs one direction; returns Y [T, B, H] and the final hidden and cell states.
    fn direction(
        &self,
        xs: &Tensor,
        d: Dir,
        acts: &[Act],
        rev: bool,
        lens: Option<&[i64]>,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let (t_len, batch, feat) = (xs.size()[0], xs.size()[1], xs.size()[2]);
        let dev = xs.device();
        // Step order: reversing each sequence within its own length is an involution, so the same
        // index map reorders the inputs and restores the outputs.
        let order = match (rev, lens) {
            (false, _) => None,
            (true, None) => Some(Tensor::f_arange(t_len, (Kind::Int64, dev))?.f_flip([0])?.f_reshape([t_len, 1])?),
            (true, Some(l)) => {
                let idx: Vec<i64> =
                    (0..t_len).flat_map(|t| l.iter().map(move |&n| if t < n { n - 1 - t } else { t })).collect();
                Some(Tensor::f_from_slice(&idx)?.f_reshape([t_len, batch])?.f_to_device(dev)?)
            }
        };
        let reorder = |t: &Tensor, o: &Tensor| -> Result<Tensor> {
            let k = t.size()[2];
            Ok(t.f_gather(
                0,
                &o.f_expand([t_len, batch], false)?.f_unsqueeze(-1)?.f_expand([t_len, batch, k], false)?,
                false,
            )?)
        };
        let xs = match &order {
            Some(o) => reorder(xs, o)?,
            None => xs.shallow_clone(),
        };
        // The input projections of every step at once: [T, B, G·H].
        let mut xw = xs.f_reshape([t_len * batch, feat])?.f_matmul(&d.w.f_transpose(0, 1)?)?;
        if let Some(wb) = &d.wb {
            xw = xw.f_add(wb)?;
        }
        let xw = xw.f_reshape([t_len, batch, -1])?;
        let live = lens
            .map(|l| -> Result<Tensor> {
                let l = Tensor::f_from_slice(l)?.f_to_device(dev)?.f_reshape([1, batch, 1])?;
                Ok(Tensor::f_arange(t_len, (Kind::Int64, dev))?.f_reshape([t_len, 1, 1])?.f_lt_tensor(&l)?)
            })
            .transpose()?;
        let (mut h, mut c) = (d.h.shallow_clone(), d.c.shallow_clone());
        let mut ys = Vec::with_capacity(t_len as usize);
        for t in 0..t_len {
            let (hc, cc) = self.step(&d, acts, &xw.f_select(0, t)?, &h, &c)?;
            match &live {
                Some(m) => {
                    let m = m.f_select(0, t)?;
                    ys.push(hc.f_where_self(&m, &hc.f_zeros_like()?)?);
                    h = hc.f_where_self(&m, &h)?;
                    c = cc.f_where_self(&m, &c)?;
                }
                None => {
                    ys.push(hc.shallow_clone());
                    (h, c) = (hc, cc);
                }
            }
        }
        let y = Tensor::f_stack(&ys, 0)?;
        let y = match &order {
            Some(o) => reorder(&y, o)?,
            None => y,
        };
        Ok((y, h, c))
    }

    /// One time step from the precomputed input projection `xw` [B, G·H]: the new (h, c).
    fn step(&self, d: &Dir, acts: &[Act], xw: &Tensor, h: &Tensor, c: &Tensor) -> Result<(Tensor, Tensor)> {
        let hs = h.size()[1];
        // h·Rᵀ + Rb for a range of gate blocks.
        let rec = |h: &Tensor, from: i64, n: i64| -> Result<Tensor> {
            let mut y = h.f_matmul(&d.r.f_narrow(0, from * hs, n * hs)?.f_transpose(0, 1)?)?;
            if let Some(rb) = &d.rb {
                y = y.f_add(&rb.f_narrow(0, from * hs, n * hs)?)?;
            }
            Ok(y)
        };
        let gate = |i: i64| xw.f_narrow(1, i * hs, hs);
        match self.cell {
            Cell::Rnn => Ok((acts[0].apply(&self.clip(xw.f_add(&rec(h, 0, 1)?)?)?)?, c.shallow_clone())),
            Cell::Gru { linear_before_reset } => {
                let zr = xw.f_narrow(1, 0, 2 * hs)?.f_add(&rec(h, 0, 2)?)?;
                let zr = acts[0].apply(&self.clip(zr)?)?;
                let (z, r) = (zr.f_narrow(1, 0, hs)?, zr.f_narrow(1, hs, hs)?);
                let hh = if linear_before_reset { r.f_mul(&rec(h, 2, 1)?)? } else { rec(&r.f_mul(h)?, 2, 1)? };
                let hh = acts[1].apply(&self.clip(gate(2)?.f_add(&hh)?)?)?;
                // (1 − z)·ĥ + z·h = ĥ + z·(h − ĥ)
                Ok((hh.f_add(&z.f_mul(&h.f_sub(&hh)?)?)?, c.shallow_clone()))
            }
            Cell::Lstm { input_forget } => {
                let pre = xw.f_add(&rec(h, 0, 4)?)?;
                let blk = |i: i64| pre.f_narrow(1, i * hs, hs);
                let with_peep = |g: Tensor, k: i64, s: &Tensor| -> Result<Tensor> {
                    Ok(match &d.p {
                        Some(p) => g.f_add(&p.f_narrow(0, k * hs, hs)?.f_mul(s)?)?,
                        None => g,
                    })
                };
                // W/R blocks run i, o, f, c; peepholes run i, o, f.
                let i = acts[0].apply(&self.clip(with_peep(blk(0)?, 0, c)?)?)?;
                let f = if input_forget {
                    i.f_neg()?.f_add_scalar(1.0)?
                } else {
                    acts[0].apply(&self.clip(with_peep(blk(2)?, 2, c)?)?)?
                };
                let cand = acts[1].apply(&self.clip(blk(3)?)?)?;
                let c_new = f.f_mul(c)?.f_add(&i.f_mul(&cand)?)?;
                let o = acts[0].apply(&self.clip(with_peep(blk(1)?, 1, &c_new)?)?)?;
                Ok((o.f_mul(&acts[2].apply(&c_new)?)?, c_new))
            }
        }
    }
}

fn recurrent(ctx: &OpCtx, cell: Cell) -> Result<BoxOp> {
    let rec = Recurrent::new(ctx, cell)?;
    op(move |x| {
        let mut outs = rec.run(x)?;
        if !matches!(rec.cell, Cell::Lstm { .. }) {
            outs.pop();
        }
        Ok(outs)
    })
}

fn flag(ctx: &OpCtx, name: &str) -> Result<bool> {
    match ctx.node.get_i(name)?.unwrap_or(0) {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(ctx.node.attr_err(name, format!("must be 0 or 1, got {v}"))),
    }
}

pub fn register(r: &mut Registry) {
    r.add("RNN", 7, |c| recurrent(c, Cell::Rnn));
    r.add("GRU", 7, |c| {
        let linear_before_reset = flag(c, "linear_before_reset")?;
        recurrent(c, Cell::Gru { linear_before_reset })
    });
    r.add("LSTM", 7, |c| recurrent(c, Cell::Lstm { input_forget: flag(c, "input_forget")? }));
}

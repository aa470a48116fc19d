//! DDIM sampling of an ε-network graph run on the engine, with classifier-free guidance.
//! η = 0 is deterministic DDIM; η = 1 adds DDPM's posterior variance at every step.
use super::schedule::{Prediction, Settings};
use crate::engine::{Plan, Value};
use crate::error::{Error, Result};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Requested steps S; the steps taken are `range(0, T, T / S)` (as the reference sampler).
    pub steps: usize,
    pub eta: f64,
    /// w in ε̂ = ε_c + w·(ε_c − ε_∅) = (1+w)·ε_c − w·ε_∅ (the authors' convention; the usual
    /// guidance scale is 1 + w). 0 runs the conditional pass alone.
    pub guidance: f64,
    /// Rows per forward pass (before guidance doubles them).
    pub batch: usize,
}

/// The ε-network: its planned graph and how its inputs are fed.
pub struct Network<'a> {
    pub plan: &'a Plan,
    pub settings: &'a Settings,
    /// The dtypes the graph declares for t and y.
    pub t_kind: Kind,
    pub y_kind: Kind,
    pub device: Device,
    /// A prompt-conditioned network: the prompts' text states (P×L×D, the null prompt last);
    /// the `y` given to [`sample`] then index them.
    pub context: Option<&'a Tensor>,
}

/// The timesteps visited, ascending: `0, T/S, 2·T/S, …` below T.
pub fn step_sequence(timesteps: usize, steps: usize) -> Result<Vec<i64>> {
    if steps == 0 || steps > timesteps {
        return Err(Error::msg(format!("--steps {steps}: must be between 1 and the model's {timesteps} timesteps")));
    }
    Ok((0..timesteps).step_by(timesteps / steps).map(|t| t as i64).collect())
}

impl Network<'_> {
    fn forward(&self, x: &Tensor, t: i64, y: &Tensor) -> Result<Tensor> {
        let s = self.settings;
        let n = x.size()[0];
        let t = Tensor::full([n], t, (self.t_kind, self.device));
        let y = match self.context {
            Some(states) => {
                states.index_select(0, &y.to_kind(Kind::Int64).to_device(states.device())).to_device(self.device)
            }
            None => y.shallow_clone(),
        };
        let feeds: HashMap<String, Value> = [
            (s.input_x.clone(), Value::Tensor(x.shallow_clone())),
            (s.input_t.clone(), Value::Tensor(t)),
            (s.input_y.clone(), Value::Tensor(y)),
        ]
        .into();
        let out =
            self.plan.run_values(&feeds)?.into_iter().next().and_then(|v| v.as_tensor().map(|t| t.shallow_clone()));
        match out {
            Some(o) if o.size() == x.size() => Ok(o.to_kind(Kind::Float)),
            Some(o) => Err(Error::msg(format!(
                "the network's first output has shape {:?}, not the shape of {} {:?}",
                o.size(),
                s.input_x,
                x.size()
            ))),
            None => Err(Error::msg("the network's first output is not a tensor")),
        }
    }
}

/// Samples from the starting noise `x_t` (f32 N×C×H×W, on the CPU) for the classes `y`, and
/// returns the final images clamped to the data range, on the CPU. With η > 0 the step noise is
/// drawn on the CPU from libtorch's global generator (seed it first), so a seed gives the same
/// samples on every device. `progress(done, total)` counts network evaluations.
pub fn sample(
    net: &Network,
    y: &[i64],
    x_t: &Tensor,
    o: &SampleOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Tensor> {
    let s = net.settings;
    let abar = s.alphas_cumprod();
    let seq = step_sequence(s.timesteps, o.steps)?;
    let guided = o.guidance != 0.0;
    let batch = o.batch.max(1);
    let chunks = y.len().div_ceil(batch);
    let (total, mut done) = (chunks * seq.len(), 0);
    let mut outs = Vec::with_capacity(chunks);
    let _g = tch::no_grad_guard();
    for (c, ys) in y.chunks(batch).enumerate() {
        let n = ys.len() as i64;
        let mut x = x_t.narrow(0, (c * batch) as i64, n).to_kind(Kind::Float).to_device(net.device);
        let mut labels = ys.to_vec();
        let null = net.context.map_or(s.null_label, |c| c.size()[0] - 1);
        if guided {
            labels.extend(std::iter::repeat_n(null, ys.len()));
        }
        let kind = if net.context.is_some() { Kind::Int64 } else { net.y_kind };
        let labels = Tensor::from_slice(&labels).to_kind(kind).to_device(net.device);
        for (i, &tc) in seq.iter().rev().enumerate() {
            let a = abar[tc as usize];
            let ap = if i + 1 < seq.len() { abar[seq[seq.len() - 2 - i] as usize] } else { 1.0 };
            let out = if guided {
                let both = net.forward(&Tensor::cat(&[&x, &x], 0), tc, &labels)?;
                both.narrow(0, 0, n) * (1.0 + o.guidance) - both.narrow(0, n, n) * o.guidance
            } else {
                net.forward(&x, tc, &labels)?
            };
            let (x0, eps) = match s.prediction {
                Prediction::Eps => ((&x - &out * (1.0 - a).sqrt()) / a.sqrt(), out),
                Prediction::Sample => {
                    let eps = (&x - &out * a.sqrt()) / (1.0 - a).sqrt();
                    (out, eps)
                }
                Prediction::V => (&x * a.sqrt() - &out * (1.0 - a).sqrt(), &out * a.sqrt() + &x * (1.0 - a).sqrt()),
            };
            let sigma = o.eta * ((1.0 - ap) / (1.0 - a)).sqrt() * (1.0 - a / ap).sqrt();
            let c2 = (1.0 - ap - sigma * sigma).max(0.0).sqrt();
            x = x0 * ap.sqrt() + eps * c2;
            if sigma > 0.0 {
                x += Tensor::randn(x.size(), (Kind::Float, Device::Cpu)).to_device(net.device) * sigma;
            }
            done += 1;
            progress(done, total);
        }
        outs.push(x.clamp(s.data_range.0, s.data_range.1).to_device(Device::Cpu));
    }
    Ok(Tensor::cat(&outs, 0))
}

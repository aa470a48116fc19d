//! The diffusion task (SEMU-diffusion.md §4.3): the graph holds only the noise network
//! ε_θ(x_t, t, y); the task supplies the rest. Records are clean images in [0, 1] with their
//! classes; a batch is noised here (x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·e, x₀ mapped to the model's data
//! range) and carries its noise and unlearning target beside the graph inputs.
//!
//! - Gradient loss (§1.3): the guided prediction ε̂ = (1+w)·ε(c) − w·ε(∅), Σ over pixels of
//!   (e − ε̂)², mean over the batch.
//! - Unlearning term (§1.7): mean squared error between ε(x_t, t, ỹ_f) and the teacher's
//!   ε(x_t, t, ỹ′) (stop-gradient), ỹ the labels with classifier-free null dropping; the teacher
//!   is the frozen input model (ours, §6.1) or the model being trained (the authors').
//! - Remaining-data loss (§1.9): the training loss, Σ pixels (e − ε)², mean over the batch.
//! - Metric without a sampler ("own-class noise share"): the share of records whose prediction
//!   under their own class lies nearer the input model's ε(own class) than its ε(target class),
//!   at fixed per-record draws. 1 for the input model; it falls as a class is redirected.
use super::Model;
use crate::data::Batch;
use crate::diffusion::{Overrides, Prediction, Settings};
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The arrays a noised batch carries beside the graph inputs (no graph input has these names).
pub const NOISE: &str = "semu:noise";
pub const TARGET: &str = "semu:target";
const ABAR: &str = "semu:abar";

/// Salts of the keyed draws: evaluation (metric, gate probes) and the gradient pass.
pub const EVAL: u64 = 0x6576_616c;
pub const GRADIENT: u64 = 0x6772_6164;

/// The class c′ the forgotten class's noise prediction is pointed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TargetClass {
    /// (c + 1) mod K: the authors' `rl`.
    #[default]
    Next,
    /// One class drawn per batch, ≠ c (the authors' `rl++`).
    Random,
    /// The null class (the unconditional prediction).
    Null,
}

/// Who gives the unlearning target ε(x_t, t, c′).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Teacher {
    /// The frozen input model: the target does not move while R trains.
    #[default]
    Original,
    /// The model being trained, detached (the authors' code; collapses small models, §4.5).
    Current,
}

/// How a batch's timesteps and noise are drawn.
#[derive(Debug, Clone, Copy)]
pub enum Draw {
    /// From each record's index and a salt: a record gets the same t and e every time (metric,
    /// gate probes, and a gradient that shards add up exactly).
    Keyed(u64),
    /// Fresh from libtorch's generator, antithetic t and classifier-free null dropping (training).
    Fresh,
    /// Batch `.1` of a phase's draws read from files ([`Replay`]).
    Replay(Phase, usize),
}

/// The two passes whose draws a [`Replay`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Gradient,
    Train,
}

/// Draws read from `.npy` files (`semu unlearn --replay-draws DIR`): a reference implementation
/// that drew them itself writes them, and semu takes the same batches, t, e and null masks (no
/// random stream can be shared between PyTorch and Rust). Files, B the batch size:
/// `gradient_idx` i64\[G, B\] (forget-record indices), `gradient_t` i64\[G, B\], `gradient_e`
/// f32\[G, B, …image\], and `train_idx`, `train_t`, `train_e` likewise for S training steps plus
/// `train_null_forget` and `train_null_target` (u8 or bool \[S, B\], 1 = the class replaced by
/// ∅ in that branch).
pub struct Replay {
    pub dir: std::path::PathBuf,
    pub gradient: Vec<Vec<usize>>,
    pub train: Vec<Vec<usize>>,
    grad_t: Tensor,
    grad_e: Tensor,
    train_t: Tensor,
    train_e: Tensor,
    null_forget: Tensor,
    null_target: Tensor,
}

impl Replay {
    /// The draws in `dir` for a forget set of `records` images in batches of `batch`; an error
    /// names the file and the shape it must have.
    pub fn load(dir: &std::path::Path, records: usize, batch: usize) -> Result<Self> {
        let read = |name: &str, kinds: &[Kind], what: &str, steps: Option<i64>| -> Result<Tensor> {
            let path = dir.join(format!("{name}.npy"));
            let mut want = vec![steps.map_or("N".to_string(), |s| s.to_string()), batch.to_string()];
            if name.ends_with("_e") {
                want.push("…image".into());
            }
            let bad = |got: String| {
                Error::msg(format!(
                    "{}: --replay-draws needs {what}, {:?} [{}]; got {got}",
                    path.display(),
                    kinds[0],
                    want.join(", ")
                ))
            };
            if !path.is_file() {
                return Err(bad("no such file".into()));
            }
            let t = crate::data::npy::read_npy(&path)?;
            let size = t.size();
            let fits = kinds.contains(&t.kind())
                && size.len() >= 2
                && (size.len() > 2) == name.ends_with("_e")
                && size[1] == batch as i64
                && steps.is_none_or(|s| size[0] == s);
            if !fits {
                return Err(bad(format!("{:?} {size:?}", t.kind())));
            }
            Ok(t)
        };
        let indices = |name: &str| -> Result<(Vec<Vec<usize>>, Tensor)> {
            let t = read(name, &[Kind::Int64], "the forget-record index of each batch entry", None)?;
            let rows = Vec::<Vec<i64>>::try_from(&t)?;
            let mut out = Vec::with_capacity(rows.len());
            for row in rows {
                if let Some(i) = row.iter().find(|&&i| i < 0 || i as usize >= records) {
                    return Err(Error::msg(format!(
                        "{}: index {i} is outside the forget set's {records} records",
                        dir.join(format!("{name}.npy")).display()
                    )));
                }
                out.push(row.into_iter().map(|i| i as usize).collect());
            }
            Ok((out, t))
        };
        let (gradient, g) = indices("gradient_idx")?;
        let (train, s) = indices("train_idx")?;
        let (g, s) = (Some(g.size()[0]), Some(s.size()[0]));
        let mask = [Kind::Uint8, Kind::Bool];
        Ok(Replay {
            dir: dir.to_path_buf(),
            gradient,
            train,
            grad_t: read("gradient_t", &[Kind::Int64], "the timestep of each batch entry", g)?,
            grad_e: read("gradient_e", &[Kind::Float], "the noise of each batch entry", g)?,
            train_t: read("train_t", &[Kind::Int64], "the timestep of each batch entry", s)?,
            train_e: read("train_e", &[Kind::Float], "the noise of each batch entry", s)?,
            null_forget: read("train_null_forget", &mask, "the forget branch's null mask", s)?.f_to_kind(Kind::Bool)?,
            null_target: read("train_null_target", &mask, "the target branch's null mask", s)?.f_to_kind(Kind::Bool)?,
        })
    }

    /// t and e of `phase`'s batch `step`, which must be the batch `idx` of the files, for images
    /// of shape `x` (N×…).
    fn draws(&self, phase: Phase, step: usize, idx: &[usize], x: &[i64]) -> Result<(Tensor, Tensor)> {
        let (batches, t, e, file) = match phase {
            Phase::Gradient => (&self.gradient, &self.grad_t, &self.grad_e, "gradient_idx"),
            Phase::Train => (&self.train, &self.train_t, &self.train_e, "train_idx"),
        };
        if batches.get(step).map(Vec::as_slice) != Some(idx) {
            return Err(Error::msg(format!(
                "internal: batch {step} is not row {step} of {}",
                self.dir.join(format!("{file}.npy")).display()
            )));
        }
        let e = e.f_get(step as i64)?;
        if e.size() != x {
            return Err(Error::msg(format!(
                "{}: --replay-draws noise of shape {:?} per batch, the forget images are {x:?}",
                self.dir.join(format!("{}_e.npy", &file[..file.len() - 4])).display(),
                e.size()
            )));
        }
        Ok((t.f_get(step as i64)?, e))
    }
}

pub struct Diffusion {
    pub settings: Settings,
    abar: Vec<f64>,
    /// w of the guided gradient loss (authors' convention; the usual scale is 1 + w).
    pub guidance: f64,
    /// Probability of the null class in each branch of the training losses.
    pub p_uncond: f64,
    /// Batches, t, e and null masks from files instead of drawn (parity checks).
    pub replay: Option<Replay>,
    pub target: TargetClass,
    pub teacher: Teacher,
    /// Clip each batch's whole gradient to norm 1 before summing (the authors' code).
    pub clip_batch: bool,
    pub seed: u64,
    /// A prompt-conditioned model: the text states of the forget, target and null prompts
    /// (3×L×D); conditions are then indices into it (0, 1, 2) instead of classes.
    prompts: Option<Tensor>,
}

/// The forget and target prompts of a prompt-conditioned model (the target None: the null prompt).
#[derive(Debug, Clone, Default)]
pub struct Prompts {
    pub forget: String,
    pub target: Option<String>,
    /// Prompts to keep: each step also holds the model's prediction under one of them (drawn
    /// per image, on the same noised forget images) to the input model's.
    pub keep: Vec<String>,
}

impl Diffusion {
    /// The task for `model` (named in errors), from its metadata and `o`; `inputs` are the
    /// graph's input names, which must hold x, t and y.
    pub fn new(
        model: &crate::onnx::OnnxModel,
        o: &Overrides,
        inputs: &[&str],
        prompts: Option<&Prompts>,
        device: Device,
    ) -> Result<Self> {
        let path = model.path.display().to_string();
        let props = model.proto.metadata_props.iter().map(|p| (p.key(), p.value()));
        let settings = Settings::resolve(&path, props, o)?;
        for (key, name) in [("x", &settings.input_x), ("t", &settings.input_t), ("y", &settings.input_y)] {
            if !inputs.contains(&name.as_str()) {
                return Err(Error::msg(format!(
                    "{path} has no input '{name}' (semu.diffusion.input.{key}; its inputs: {}); pass --inputs X,T,Y",
                    inputs.join(", ")
                )));
            }
        }
        let abar = settings.alphas_cumprod();
        let prompts = match (&settings.text, prompts) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(Error::msg(format!(
                    "{path} is conditioned on text (semu.diffusion.input.context): give the concept to forget \
                     with --forget-prompt \"…\" and where to send it with --target-prompt \"…\""
                )))
            }
            (Some(text), Some(p)) => {
                let null = text.null_prompt.as_str();
                let target = p.target.as_deref().unwrap_or(null);
                let mut rows = vec![p.forget.as_str(), target, null];
                rows.extend(p.keep.iter().map(String::as_str));
                Some(crate::diffusion::prompts::encode(text, &rows, device)?)
            }
        };
        Ok(Diffusion {
            settings,
            abar,
            guidance: 2.0,
            p_uncond: 0.1,
            replay: None,
            target: TargetClass::Next,
            teacher: Teacher::Original,
            clip_batch: false,
            seed: 0,
            prompts,
        })
    }

    /// The condition that means "none": the null class, or the null prompt's index.
    pub fn null_index(&self) -> i64 {
        if self.prompts.is_some() {
            2
        } else {
            self.settings.null_label
        }
    }

    /// What the graph's condition input is fed for conditions `idx`: the classes themselves, or
    /// the prompts' text states.
    fn cond(&self, idx: &Tensor) -> Result<Tensor> {
        match &self.prompts {
            None => Ok(idx.shallow_clone()),
            Some(states) => Ok(states.f_index_select(0, &idx.f_to_device(states.device())?)?),
        }
    }

    /// Records (x₀ in [0, 1], y) noised into the graph's x_t, t, y, with the noise, ᾱ_t and the
    /// target classes beside them. `idx` are the records' indices (keyed draws).
    pub fn noised(&self, b: Batch, idx: &[usize], draw: Draw) -> Result<Batch> {
        let s = &self.settings;
        let x0 = b.input(&s.input_x).or_else(|| b.input("")).ok_or_else(|| {
            Error::msg(format!("the records hold no images ('x' or '{}') for the diffusion task", s.input_x))
        })?;
        let x0 = x0.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?;
        let n = x0.size()[0];
        let (lo, hi) = s.data_range;
        let x0 = x0.f_mul_scalar(hi - lo)?.f_add_scalar(lo)?;
        let big_t = s.timesteps as i64;
        let (t, e) = match draw {
            Draw::Keyed(salt) => {
                let per = x0.numel() / n.max(1) as usize;
                let (mut ts, mut es) = (Vec::with_capacity(n as usize), Vec::with_capacity(per * n as usize));
                for &i in idx {
                    let mut rng = keyed_rng(self.seed, salt, i as u64);
                    ts.push(rng.random_range(0..big_t));
                    es.extend((0..per).map(|_| normal(&mut rng)));
                }
                (Tensor::f_from_slice(&ts)?, Tensor::f_from_slice(&es)?.f_reshape(x0.size())?)
            }
            Draw::Fresh => {
                // Antithetic pairs t, T−1−t (as the authors' loops), cut to n.
                let half = Tensor::f_randint(big_t, [n / 2 + 1], (Kind::Int64, Device::Cpu))?;
                let t = Tensor::f_cat(&[&half, &half.f_neg()?.f_add_scalar(big_t - 1)?], 0)?.f_narrow(0, 0, n)?;
                (t, Tensor::f_randn(x0.size(), (Kind::Float, Device::Cpu))?)
            }
            Draw::Replay(phase, step) => self.replayed()?.draws(phase, step, idx, &x0.size())?,
        };
        let y = b.y.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?;
        // A prompt model: every image is the forget prompt's (condition 0).
        let y = if self.prompts.is_some() { y.f_zeros_like()? } else { y };
        let target = self.targets(&y, idx, draw)?;
        let (y_in, target_in) = match draw {
            Draw::Fresh if self.p_uncond > 0.0 => (self.dropped(&y)?, self.dropped(&target)?),
            Draw::Replay(Phase::Train, step) => {
                let r = self.replayed()?;
                let null = self.null_index();
                let s = step as i64;
                (
                    y.f_masked_fill(&r.null_forget.f_get(s)?, null)?,
                    target.f_masked_fill(&r.null_target.f_get(s)?, null)?,
                )
            }
            _ => (y.shallow_clone(), target),
        };
        self.batch(&x0, &t, &e, y, &y_in, target_in)
    }

    fn replayed(&self) -> Result<&Replay> {
        self.replay.as_ref().ok_or_else(|| Error::msg("internal: replayed draws without --replay-draws"))
    }

    /// ᾱ_t of each row, shaped to broadcast over x (N×1×…).
    fn abar_of(&self, t: &Tensor, rank: usize) -> Result<Tensor> {
        let ts = Vec::<i64>::try_from(t.f_to_kind(Kind::Int64)?.f_to_device(Device::Cpu)?)?;
        let mut ab = Vec::with_capacity(ts.len());
        for t in ts {
            let a = usize::try_from(t).ok().and_then(|t| self.abar.get(t)).ok_or_else(|| {
                Error::msg(format!("timestep {t} is outside the schedule's 0..{}", self.abar.len() - 1))
            })?;
            ab.push(*a as f32);
        }
        let mut view = vec![ab.len() as i64];
        view.extend(std::iter::repeat_n(1, rank.saturating_sub(1)));
        Ok(Tensor::f_from_slice(&ab)?.f_reshape(&view)?)
    }

    /// q_sample: x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·e, for x₀ in the model's data range.
    pub fn q_sample(&self, x0: &Tensor, t: &Tensor, e: &Tensor) -> Result<Tensor> {
        let ab = self.abar_of(t, x0.dim())?.f_to_device(x0.device())?;
        Ok(x0.f_mul(&ab.f_sqrt()?)?.f_add(&e.f_mul(&ab.f_neg()?.f_add_scalar(1.0)?.f_sqrt()?)?)?)
    }

    /// A noised batch from its parts: x₀ (data range), t, e, the true classes `y`, the classes
    /// fed (`y_in`) and the unlearning targets fed.
    pub fn batch(
        &self,
        x0: &Tensor,
        t: &Tensor,
        e: &Tensor,
        y: Tensor,
        y_in: &Tensor,
        target: Tensor,
    ) -> Result<Batch> {
        let s = &self.settings;
        let x_t = self.q_sample(x0, t, e)?;
        let ab = self.abar_of(t, x0.dim())?;
        Ok(Batch {
            inputs: vec![
                (s.input_x.clone(), x_t),
                (s.input_t.clone(), t.shallow_clone()),
                (s.input_y.clone(), self.cond(y_in)?),
                (NOISE.into(), e.shallow_clone()),
                (TARGET.into(), target),
                (ABAR.into(), ab),
            ],
            y,
        })
    }

    /// c′ for each record of class `y`.
    fn targets(&self, y: &Tensor, idx: &[usize], draw: Draw) -> Result<Tensor> {
        let k = self.settings.num_classes;
        if self.prompts.is_some() {
            // The target prompt (1), or the null prompt (2).
            return Ok(y.f_full_like(if self.target == TargetClass::Null { 2 } else { 1 })?);
        }
        match self.target {
            TargetClass::Next => Ok(y.f_add_scalar(1)?.f_remainder(k)?),
            TargetClass::Null => Ok(y.f_full_like(self.null_index())?),
            TargetClass::Random => {
                let ys = Vec::<i64>::try_from(y)?;
                let drawn: Vec<i64> = match draw {
                    // One class for the whole batch, bumped where it is the record's own.
                    Draw::Fresh | Draw::Replay(..) => {
                        let c = Tensor::f_randint(k, [1], (Kind::Int64, Device::Cpu))?.f_int64_value(&[0])?;
                        ys.iter().map(|&y| if c == y { (c + 1) % k } else { c }).collect()
                    }
                    Draw::Keyed(salt) => idx
                        .iter()
                        .zip(&ys)
                        .map(|(&i, &y)| {
                            (y + keyed_rng(self.seed, salt ^ 0x7467, i as u64).random_range(1..k.max(2))) % k
                        })
                        .collect(),
                };
                Ok(Tensor::f_from_slice(&drawn)?)
            }
        }
    }

    /// `y` with each entry replaced by the null class with probability p_uncond.
    fn dropped(&self, y: &Tensor) -> Result<Tensor> {
        let mask = Tensor::f_rand([y.size()[0]], (Kind::Float, Device::Cpu))?.f_lt(self.p_uncond)?;
        Ok(y.f_masked_fill(&mask, self.null_index())?)
    }

    /// `b` conditioned on `y` instead (classes, or prompt indices).
    fn with_y(&self, b: &Batch, y: &Tensor) -> Result<Batch> {
        let fed = self.cond(y)?;
        let inputs = b
            .inputs
            .iter()
            .map(|(n, t)| {
                (n.clone(), if *n == self.settings.input_y { fed.shallow_clone() } else { t.shallow_clone() })
            })
            .collect();
        Ok(Batch { inputs, y: b.y.shallow_clone() })
    }

    fn part<'a>(b: &'a Batch, name: &str) -> Result<&'a Tensor> {
        b.input(name).ok_or_else(|| Error::msg(format!("internal: a diffusion batch without '{name}'")))
    }

    /// The noise an output stands for: the output of an ε-network; converted from x̂₀ or v.
    fn eps_of(&self, out: &Tensor, b: &Batch) -> Result<Tensor> {
        let out = out.f_to_kind(Kind::Float)?;
        let dev = out.device();
        let ab = Self::part(b, ABAR)?.f_to_device(dev)?;
        let x_t = || -> Result<Tensor> {
            Ok(Self::part(b, &self.settings.input_x)?.f_to_kind(Kind::Float)?.f_to_device(dev)?)
        };
        let one_minus = ab.f_neg()?.f_add_scalar(1.0)?;
        Ok(match self.settings.prediction {
            Prediction::Eps => out,
            Prediction::Sample => x_t()?.f_sub(&out.f_mul(&ab.f_sqrt()?)?)?.f_div(&one_minus.f_sqrt()?)?,
            Prediction::V => out.f_mul(&ab.f_sqrt()?)?.f_add(&x_t()?.f_mul(&one_minus.f_sqrt()?)?)?,
        })
    }

    /// Σ over pixels of (e − ε̂)², mean over the batch, for the predicted noise `eps`.
    fn noise_mse(eps: &Tensor, b: &Batch) -> Result<Tensor> {
        let e = Self::part(b, NOISE)?.f_to_device(eps.device())?;
        let d = eps.f_sub(&e)?.f_square()?.f_reshape([eps.size()[0], -1])?;
        Ok(d.f_sum_dim_intlist(1, false, Kind::Float)?.f_mean(Kind::Float)?)
    }

    /// The training loss of output `out` on its batch (the remaining-data term).
    pub fn noise_loss(&self, out: &Tensor, b: &Batch) -> Result<Tensor> {
        Self::noise_mse(&self.eps_of(out, b)?, b)
    }

    /// The gradient pass's loss: the guided prediction's noise error (plain ε at w = 0).
    pub fn guided_loss(&self, model: &Model, b: &Batch, weights: &HashMap<String, Tensor>) -> Result<Tensor> {
        if self.guidance == 0.0 {
            return self.noise_loss(&model.forward(b, weights)?, b);
        }
        let n = b.len() as i64;
        let null = b.y.f_full_like(self.null_index())?;
        let both = model.forward(&cat(&[b, &self.with_y(b, &null)?])?, weights)?;
        let (c, u) = (both.f_narrow(0, 0, n)?, both.f_narrow(0, n, n)?);
        let (c, u) = (self.eps_of(&c, b)?, self.eps_of(&u, b)?);
        let guided = c.f_mul_scalar(1.0 + self.guidance)?.f_sub(&u.f_mul_scalar(self.guidance)?)?;
        Self::noise_mse(&guided, b)
    }

    /// The unlearning term for `out` = ε(x_t, t, ỹ_f) under the weights being trained: its mean
    /// squared error to the teacher's ε(x_t, t, ỹ′) (`teacher`: the input model's weights, or
    /// the current ones).
    /// With prompts to keep, plus the same error between the current and the input model's
    /// predictions under a kept prompt drawn per image (`current`: the weights being trained).
    pub fn forget_term(
        &self,
        model: &Model,
        out: &Tensor,
        b: &Batch,
        teacher: &dyn crate::engine::Overrides,
        current: &dyn crate::engine::Overrides,
    ) -> Result<Tensor> {
        let pseudo = {
            let _g = tch::no_grad_guard();
            let target = Self::part(b, TARGET)?.shallow_clone();
            model.forward(&self.with_y(b, &target)?, teacher)?.f_detach()?
        };
        let (o, p) = (self.eps_of(out, b)?, self.eps_of(&pseudo, b)?);
        let forget = o.f_sub(&p)?.f_square()?.f_mean(Kind::Float)?;
        let kept = self.prompts.as_ref().map_or(0, |t| t.size()[0] - 3);
        if kept <= 0 {
            return Ok(forget);
        }
        let keep = Tensor::f_randint(kept, [b.len() as i64], (Kind::Int64, Device::Cpu))?.f_add_scalar(3)?;
        let kb = self.with_y(b, &keep)?;
        let frozen = {
            let _g = tch::no_grad_guard();
            model.forward(&kb, &HashMap::new())?.f_detach()?
        };
        let held = model.forward(&kb, current)?.f_sub(&frozen)?.f_square()?.f_mean(Kind::Float)?;
        Ok(forget.f_add(&held)?)
    }

    /// Records whose prediction under their own class lies nearer the input model's ε(own class)
    /// than its ε(target class), and how many were scored.
    pub fn own_class(&self, model: &Model, out: &Tensor, b: &Batch) -> Result<(i64, i64)> {
        let _g = tch::no_grad_guard();
        let n = b.len() as i64;
        let target = Self::part(b, TARGET)?.shallow_clone();
        let both = model.forward(&cat(&[b, &self.with_y(b, &target)?])?, &HashMap::new())?;
        let dist = |r: &Tensor| -> Result<Tensor> {
            Ok(out
                .f_to_kind(Kind::Float)?
                .f_sub(&r.f_to_kind(Kind::Float)?)?
                .f_square()?
                .f_reshape([n, -1])?
                .f_sum_dim_intlist(1, false, Kind::Float)?)
        };
        let (own, other) = (dist(&both.f_narrow(0, 0, n)?)?, dist(&both.f_narrow(0, n, n)?)?);
        Ok((own.f_lt_tensor(&other)?.f_sum(Kind::Int64)?.f_int64_value(&[])?, n))
    }
}

/// Batches stacked row-wise (every input, and y).
fn cat(parts: &[&Batch]) -> Result<Batch> {
    let first = parts[0];
    let mut inputs = Vec::with_capacity(first.inputs.len());
    for (name, _) in &first.inputs {
        let ts: Vec<&Tensor> = parts.iter().map(|p| p.input(name).expect("same inputs")).collect();
        inputs.push((name.clone(), Tensor::f_cat(&ts, 0)?));
    }
    let ys: Vec<&Tensor> = parts.iter().map(|p| &p.y).collect();
    Ok(Batch { inputs, y: Tensor::f_cat(&ys, 0)? })
}

/// The generator of record `i`'s draws under `salt`.
fn keyed_rng(seed: u64, salt: u64, i: u64) -> StdRng {
    StdRng::seed_from_u64(
        seed.rotate_left(32) ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ i.wrapping_mul(0xD1B5_4A32_D192_ED03),
    )
}

/// A standard normal draw (Box–Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

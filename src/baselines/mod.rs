//! The standard unlearning baselines on SEMU's engine, and the sweep that compares them.
//!
//! `ft` fine-tunes every trainable weight on D_r; `l1` does the same with a decaying l1 penalty;
//! `ga` ascends the loss on D_f; `rl` trains on D_f with random labels (+ α × D_r when given);
//! `salun` is `rl` restricted to the weights whose forget-gradient magnitude is in the top
//! `mask_ratio`; `graddiff` ascends on D_f and descends on D_r; `npo` is Negative Preference
//! Optimization against the frozen input model (+ α × D_r when given); `retrain`
//! re-initialises every trainable weight (PyTorch defaults) and trains on D_r from scratch.
//! The forget-set objectives are those SEMU trains in its subspace (`crate::task::objective`). [`run`] runs any of them, SEMU included, into one [`Outcome`]. All of them
//! train in inference semantics, like SEMU: BatchNorm normalises with its stored statistics.
use crate::data::Dataset;
use crate::engine::convert::kind_of;
use crate::engine::{Overrides, Weights};
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel};
use crate::semu::gradient::forget_gradient;
use crate::semu::train::{adapted, EpochStats};
use crate::semu::unlearn::{LayerReport, Timings};
use crate::semu::{unlearn, Adapter, Observer, SemuConfig};
use crate::task::{Model, Objective, Spec};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

pub mod params;
pub mod plot;
pub mod spec;
pub mod sweep;
pub mod table;
pub mod train;

pub use params::{find_params, Param, Role};

/// An unlearning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Semu,
    Rl,
    Salun,
    Ft,
    Ga,
    L1,
    Retrain,
    #[value(name = "graddiff")]
    #[serde(rename = "graddiff")]
    GradDiff,
    Npo,
}

impl Method {
    pub const ALL: [Method; 9] = [
        Method::Semu,
        Method::Rl,
        Method::Salun,
        Method::Ft,
        Method::Ga,
        Method::L1,
        Method::Retrain,
        Method::GradDiff,
        Method::Npo,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Method::Semu => "semu",
            Method::Rl => "rl",
            Method::Salun => "salun",
            Method::Ft => "ft",
            Method::Ga => "ga",
            Method::L1 => "l1",
            Method::Retrain => "retrain",
            Method::GradDiff => "graddiff",
            Method::Npo => "npo",
        }
    }

    /// Whether the method can run without remaining data / with it.
    pub fn retain_modes(self) -> &'static [bool] {
        match self {
            Method::Semu | Method::Rl | Method::Salun | Method::Npo => &[false, true],
            Method::Ga => &[false],
            Method::Ft | Method::L1 | Method::Retrain | Method::GradDiff => &[true],
        }
    }

    /// The forget-set objective a baseline trains (None: it trains on the remaining data only).
    pub fn objective(self) -> Option<Objective> {
        match self {
            Method::Rl | Method::Salun => Some(Objective::Rl),
            Method::Ga => Some(Objective::Ga),
            Method::GradDiff => Some(Objective::GradDiff),
            Method::Npo => Some(Objective::Npo),
            Method::Semu | Method::Ft | Method::L1 | Method::Retrain => None,
        }
    }
}

/// Learning-rate schedule over epochs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Constant,
    Cosine,
    /// ×0.1 at 50% and at 75% of the epochs.
    Step,
}

/// The baselines' own settings (the shared ones — epochs, lr, optimizer… — are SemuConfig's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BaselineSettings {
    /// SalUn: share of the trainable weights (top forget-gradient magnitude) that may change.
    pub mask_ratio: f64,
    /// l1: weight of Σ|w| at the first epoch (decays linearly to 0).
    pub l1: f64,
    /// Default: cosine for `retrain`, constant otherwise.
    pub schedule: Option<Schedule>,
}

impl Default for BaselineSettings {
    fn default() -> Self {
        BaselineSettings { mask_ratio: 0.5, l1: 5e-4, schedule: None }
    }
}

impl BaselineSettings {
    /// `--mask-ratio` in (0, 1], `--l1` finite and ≥ 0.
    pub fn validate(&self) -> Result<()> {
        if !(self.mask_ratio > 0.0 && self.mask_ratio <= 1.0 && self.l1 >= 0.0 && self.l1.is_finite()) {
            return Err(Error::msg(format!(
                "--mask-ratio must be in (0, 1] and --l1 a finite number ≥ 0 (mask ratio {}, l1 {})",
                self.mask_ratio, self.l1
            )));
        }
        Ok(())
    }

    pub fn schedule_for(&self, m: Method) -> Schedule {
        self.schedule.unwrap_or(if m == Method::Retrain { Schedule::Cosine } else { Schedule::Constant })
    }
}

/// The result of any method: the classifier, the final values of every tensor it may have
/// changed, and what the report needs.
pub struct Outcome {
    pub method: Method,
    pub net: Model,
    /// Final values (detached, on the run's device) of the tensors the method trained or reset.
    pub weights: Weights,
    /// SEMU only: the trained adapters, the adapted layers and those with a zero gradient.
    pub adapters: Vec<Adapter>,
    pub layers: Vec<LayerReport>,
    pub skipped_zero_gradient: Vec<String>,
    /// Trained parameters: Σ k² for SEMU, the mask's size for SalUn, every trainable element
    /// otherwise.
    pub trainable: i64,
    pub total_parameters: i64,
    pub classes: i64,
    pub used_retain_data: bool,
    pub epochs: Vec<EpochStats>,
    pub timings: Timings,
    /// Time of the whole method (gradient/mask, SVD, training), export and verify excluded.
    pub wall_seconds: f64,
    pub forget_acc_before: f64,
    pub retain_acc_before: Option<f64>,
    /// SEMU with `--lr auto`: the rate chosen and why.
    pub lr_choice: Option<crate::semu::auto::LrChoice>,
    /// The forget accuracy SEMU trained down to (the retrained level), when known.
    pub target: Option<crate::semu::auto::Target>,
    /// SEMU with `--max-trained`: the γ the budget chose.
    pub gamma_chosen: Option<f64>,
}

impl Outcome {
    pub fn overrides(&self) -> &Weights {
        &self.weights
    }
    pub fn accuracy(&self, ds: &dyn Dataset, batch: usize) -> Result<f64> {
        self.net.accuracy(ds, batch, &self.weights)
    }
    /// Elements of every tensor the method may have changed.
    pub fn weights_touched(&self) -> i64 {
        self.weights.elements()
    }
}

/// Runs `method` (SEMU or a baseline) on `model`. `retain` is remaining data the method may use:
/// required by ft / l1 / retrain, ignored by ga, optional for semu / rl / salun.
#[allow(clippy::too_many_arguments)]
pub fn run(
    model: &OnnxModel,
    forget: &dyn Dataset,
    retain: Option<&dyn Dataset>,
    test: Option<&dyn Dataset>,
    method: Method,
    cfg: &SemuConfig,
    extra: &BaselineSettings,
    device: Device,
    spec: &Spec,
    obs: &mut dyn Observer,
) -> Result<Outcome> {
    let t0 = Instant::now();
    if method == Method::Semu {
        let u = unlearn(model, forget, retain, test, cfg, device, spec, obs)?;
        // 2-D weights stay factors, formed one at a time where they are read: a large model's
        // trained weights are never all in memory beside its own.
        let weights = {
            let _g = tch::no_grad_guard();
            adapted(&u.adapters)?
        };
        return Ok(Outcome {
            method,
            net: u.net,
            weights,
            adapters: u.adapters,
            layers: u.layers,
            skipped_zero_gradient: u.skipped_zero_gradient,
            trainable: u.trainable,
            total_parameters: u.total_parameters,
            classes: u.classes,
            used_retain_data: retain.is_some(),
            epochs: u.epochs,
            timings: u.timings,
            wall_seconds: t0.elapsed().as_secs_f64(),
            forget_acc_before: u.forget_acc_before,
            retain_acc_before: u.retain_acc_before,
            lr_choice: u.lr_choice,
            target: u.target,
            gamma_chosen: u.gamma_chosen,
        });
    }
    cfg.validate()?;
    extra.validate()?;
    let retain = match (method.retain_modes(), retain) {
        ([true], None) => {
            return Err(Error::msg(format!("--method {} trains on the remaining data: give --retain", method.name())))
        }
        ([false], _) => None,
        (_, r) => r,
    };
    if forget.is_empty() {
        return Err(Error::msg(format!("{}: the forget set is empty", forget.source())));
    }
    let all = find_params(model);
    let trained: Vec<&Param> = all.iter().filter(|p| p.role.trainable()).collect();
    if trained.is_empty() {
        return Err(Error::msg(format!("{}: no Conv/Gemm/MatMul/BatchNorm weight to train", model.path.display())));
    }
    // retrain also resets BatchNorm's running statistics, so they must be live values too.
    let live: Vec<&Param> = if method == Method::Retrain { all.iter().collect() } else { trained.clone() };
    let dynamic: HashSet<String> = live.iter().map(|p| p.name.clone()).collect();
    let mut net = Model::new(model, device, dynamic, spec)?;
    let classes = net.width(forget)?;
    for ds in std::iter::once(forget).chain(retain) {
        net.check_labels(ds, classes)?;
    }
    let mut timings = Timings::default();
    obs.phase("accuracy before");
    let mut step = |d, n| obs.step("accuracy before", d, n);
    let forget_acc_before =
        net.accuracy_with(forget, crate::semu::train::eval_batch(cfg.batch_size), &HashMap::new(), &mut step)?;
    let retain_acc_before = retain
        .map(|r| net.accuracy_with(r, crate::semu::train::eval_batch(cfg.batch_size), &HashMap::new(), &mut step))
        .transpose()?;

    let mask = if method == Method::Salun {
        obs.phase("saliency mask");
        let t = Instant::now();
        let names: Vec<String> = trained.iter().map(|p| p.name.clone()).collect();
        let total = forget.len();
        let grads = forget_gradient(&mut net, &names, forget, cfg.batch_size, |d| obs.gradient_progress(d, total))?;
        let mask =
            saliency_mask(&names.iter().map(|n| grads[n].shallow_clone()).collect::<Vec<_>>(), extra.mask_ratio)?;
        timings.gradient = t.elapsed().as_secs_f64();
        Some(mask)
    } else {
        None
    };

    let kind = |p: &Param| -> Result<Kind> {
        let init = model.initializer(&p.name).expect("found among the initializers");
        kind_of(DType::from_onnx(init.data_type())?)
    };
    let mut rng = params::init_rng(cfg.seed);
    // retrain: BatchNorm's running statistics restart at mean 0 / variance 1 for the whole run.
    let mut reset = HashMap::new();
    if method == Method::Retrain {
        for p in all.iter().filter(|p| !p.role.trainable()) {
            let v = params::initial_value(p, &mut rng, device)?.f_to_kind(kind(p)?)?;
            net.plan.set_param(&p.name, v.shallow_clone())?;
            reset.insert(p.name.clone(), v);
        }
    }
    let mut start = Vec::new();
    for p in &trained {
        let v = match method {
            Method::Retrain => params::initial_value(p, &mut rng, device)?,
            _ => net.plan.param(&p.name).expect("planned as dynamic").shallow_clone(),
        };
        start.push((p.name.clone(), v, kind(p)?));
    }
    let mut w = train::Weights::new(start)?;
    let settings = train::LoopSettings {
        method,
        epochs: cfg.epochs,
        // The baselines do not probe: `auto` is their usual rate.
        lr: cfg.lr.or(0.01),
        schedule: extra.schedule_for(method),
        batch_size: cfg.batch_size,
        optimizer: cfg.optimizer,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        alpha: if retain.is_some() { cfg.alpha } else { 0.0 },
        l1: extra.l1,
        npo_beta: cfg.npo_beta,
        classes,
        seed: cfg.seed,
        precision: cfg.precision,
    };
    obs.phase("training");
    let t = Instant::now();
    let epochs = train::train(&net, &mut w, forget, retain, &settings, mask.as_deref(), obs)?;
    timings.training = t.elapsed().as_secs_f64();
    let mut weights = w.detached()?;
    weights.extend(reset);
    let trainable = match &mask {
        Some(m) => m.iter().map(|t| t.f_sum(Kind::Int64)?.f_int64_value(&[])).sum::<Result<i64, _>>()?,
        None => trained.iter().map(|p| p.numel()).sum(),
    };
    Ok(Outcome {
        method,
        net,
        weights: weights.into(),
        adapters: Vec::new(),
        layers: Vec::new(),
        skipped_zero_gradient: Vec::new(),
        trainable,
        total_parameters: model.graph().initializer.iter().map(|t| t.dims.iter().product::<i64>()).sum(),
        classes,
        used_retain_data: retain.is_some(),
        epochs,
        timings,
        wall_seconds: t0.elapsed().as_secs_f64(),
        forget_acc_before,
        retain_acc_before,
        lr_choice: None,
        target: None,
        gamma_chosen: None,
    })
}

/// SalUn's mask: 1 where |gradient| is among the top `ratio` of all entries (ranked over every
/// tensor together), 0 elsewhere; f32, on the gradients' device.
pub fn saliency_mask(grads: &[Tensor], ratio: f64) -> Result<Vec<Tensor>> {
    let flat: Vec<Tensor> =
        grads.iter().map(|g| g.f_abs()?.f_to_kind(Kind::Float)?.f_reshape([-1])).collect::<Result<_, _>>()?;
    let all = Tensor::f_cat(&flat, 0)?;
    let n = all.numel() as i64;
    let keep = ((ratio * n as f64).round() as i64).clamp(1, n);
    // Rank by sorting so that ties at the threshold still give exactly `keep` entries.
    let (_, order) = all.f_sort(0, true)?;
    let chosen = all.f_zeros_like()?.f_index_fill(0, &order.f_narrow(0, 0, keep)?, 1.0)?;
    let mut out = Vec::with_capacity(grads.len());
    let mut at = 0;
    for g in grads {
        let len = g.numel() as i64;
        out.push(chosen.f_narrow(0, at, len)?.f_reshape(g.size())?);
        at += len;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saliency_mask_keeps_the_top_share_over_all_tensors() {
        let a = Tensor::from_slice(&[0.1f32, -5.0, 0.2, 3.0]);
        let b = Tensor::from_slice(&[4.0f32, 0.0]).reshape([1, 2]);
        let m = saliency_mask(&[a, b], 0.5).unwrap();
        assert_eq!(Vec::<f32>::try_from(&m[0]).unwrap(), vec![0.0, 1.0, 0.0, 1.0]);
        assert_eq!(Vec::<f32>::try_from(m[1].reshape([-1])).unwrap(), vec![1.0, 0.0]);
    }
}

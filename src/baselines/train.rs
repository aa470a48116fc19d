//! The training loop shared by the baselines: every trainable tensor is a live f32 leaf (cast to
//! the model's dtype in each forward), updated by the same SGD / Adam as SEMU's R matrices.
use super::{Method, Schedule};
use crate::data::{batches, Dataset};
use crate::error::Result;
use crate::semu::optim::{Optimizer, OptimizerKind};
use crate::semu::train::{eval_batch, random_other_label, token_rng, EpochProgress, EpochStats};
use crate::semu::Observer;
use crate::task::objective::{random_targets, ForgetLoss};
use crate::task::{Model, Objective, Targets, TaskKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// The trained tensors: f32 (f64 for f64 models) leaves, and the model's own kind for each.
pub struct Weights {
    pub names: Vec<String>,
    pub leaves: Vec<Tensor>,
    kinds: Vec<Kind>,
}

impl Weights {
    /// Leaves starting at `values` (name → initial value, any float kind).
    pub fn new(values: Vec<(String, Tensor, Kind)>) -> Result<Self> {
        let mut w = Weights { names: vec![], leaves: vec![], kinds: vec![] };
        for (name, v, kind) in values {
            let master = if kind == Kind::Double { Kind::Double } else { Kind::Float };
            // A copy: the leaves are updated in place and must not alias the plan's originals.
            w.leaves.push(v.f_detach_copy()?.f_to_kind(master)?.f_set_requires_grad(true)?);
            w.names.push(name);
            w.kinds.push(kind);
        }
        Ok(w)
    }

    /// The weights every forward uses (differentiable, in the model's dtypes).
    pub fn overrides(&self) -> Result<HashMap<String, Tensor>> {
        self.names
            .iter()
            .zip(self.leaves.iter().zip(&self.kinds))
            .map(|(n, (l, &k))| Ok((n.clone(), l.f_to_kind(k)?)))
            .collect()
    }

    /// The final values, detached.
    pub fn detached(&self) -> Result<HashMap<String, Tensor>> {
        let _g = tch::no_grad_guard();
        self.overrides()?.into_iter().map(|(n, t)| Ok((n, t.f_detach()?))).collect()
    }
}

/// What one training run needs beyond the data.
pub struct LoopSettings {
    pub method: Method,
    pub epochs: usize,
    pub lr: f64,
    pub schedule: Schedule,
    pub batch_size: usize,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    /// Weight of the retain term of `rl` / `salun` (0 = forget term only).
    pub alpha: f64,
    /// `l1`: the penalty's weight at the first epoch.
    pub l1: f64,
    /// `npo`: the inverse temperature β.
    pub npo_beta: f64,
    pub classes: i64,
    pub seed: u64,
    /// What each step's products compute in (`--precision`); the weights stay in their dtypes.
    pub precision: crate::engine::precision::Precision,
}

/// The learning rate of epoch `e` (0-based) of `epochs`: constant; cosine annealing to 0; or
/// step decay (×0.1 at 50% and again at 75% of the epochs, like the reference MultiStepLR).
pub fn lr_at(base: f64, schedule: Schedule, e: usize, epochs: usize) -> f64 {
    let t = e as f64 / epochs.max(1) as f64;
    match schedule {
        Schedule::Constant => base,
        Schedule::Cosine => base * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
        Schedule::Step => {
            base * if t >= 0.75 {
                0.01
            } else if t >= 0.5 {
                0.1
            } else {
                1.0
            }
        }
    }
}

/// Draws retain batches forever, reshuffling after each pass.
struct Cycle {
    order: Vec<usize>,
    pos: usize,
}

impl Cycle {
    fn new(n: usize) -> Self {
        Cycle { order: (0..n).collect(), pos: n }
    }
    fn take(&mut self, n: usize, rng: &mut StdRng) -> Vec<usize> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n.min(self.order.len()) {
            if self.pos == self.order.len() {
                self.order.shuffle(rng);
                self.pos = 0;
            }
            out.push(self.order[self.pos]);
            self.pos += 1;
        }
        out
    }
}

/// Trains `w` for the method; with `mask` (SalUn) only the masked entries move: gradients are
/// masked before the step and the other entries restored after it, so that weight decay and
/// momentum cannot drift them either. `obs` sees each batch and each epoch. Returns every
/// epoch's statistics.
pub fn train(
    net: &Model,
    w: &mut Weights,
    forget: &dyn Dataset,
    retain: Option<&dyn Dataset>,
    s: &LoopSettings,
    mask: Option<&[Tensor]>,
    obs: &mut dyn Observer,
) -> Result<Vec<EpochStats>> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut token_rng = token_rng(s.seed);
    let frozen = HashMap::new();
    let objective = s.method.objective();
    let mut opt = Optimizer::new(s.optimizer, s.lr, s.momentum, s.weight_decay, w.leaves.len());
    let originals: Vec<Tensor> = w.leaves.iter().map(|l| l.f_detach_copy()).collect::<Result<_, _>>()?;
    let forget_labels = if net.task == TaskKind::Classify { forget.labels()? } else { Vec::new() };
    let mut cycle = Cycle::new(retain.map_or(0, |r| r.len()));
    let on_retain = matches!(s.method, Method::Ft | Method::L1 | Method::Retrain);
    let driver: &dyn Dataset = match (on_retain, retain) {
        (true, Some(r)) => r,
        _ => forget,
    };
    let mut history = Vec::new();
    for epoch in 0..s.epochs {
        let t0 = std::time::Instant::now();
        opt.set_lr(lr_at(s.lr, s.schedule, epoch, s.epochs));
        // l1-sparse unlearning: the penalty decays linearly to 0 over the run.
        let l1 = s.l1 * (1.0 - epoch as f64 / s.epochs as f64);
        let random: Vec<i64> = forget_labels.iter().map(|&y| random_other_label(&mut rng, y, s.classes)).collect();
        let mut order: Vec<usize> = (0..driver.len()).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut steps) = (0.0, 0);
        let mut at = EpochProgress {
            epoch: epoch + 1,
            epochs: s.epochs,
            batch: 0,
            batches: order.len().div_ceil(s.batch_size.max(1)),
            loss: 0.0,
            forget_acc: None,
        };
        for idx in batches(&order, s.batch_size) {
            let weights = w.overrides()?;
            let b = driver.records(idx)?;
            let low = crate::engine::precision::scope(s.precision.lowered());
            let out = net.forward(&b, &weights)?;
            let mut loss = match objective {
                Some(obj) => {
                    let targets = match obj {
                        Objective::Rl => Some(random_targets(net, &b, idx, &random, s.classes, &mut token_rng)?),
                        _ => None,
                    };
                    let loss = ForgetLoss {
                        objective: obj,
                        npo_beta: s.npo_beta,
                        kl_weight: 0.0,
                        frozen: &frozen,
                        forget_classes: &[],
                    };
                    loss.term(net, &out, &b, targets.as_ref())?
                }
                None => net.loss(&out, &b, &Targets::True)?,
            };
            let retain_term = matches!(objective, Some(o) if o.uses_retain() && o != Objective::Ga);
            if let (true, Some(r), true) = (retain_term, retain, s.alpha != 0.0) {
                let rb = r.records(&cycle.take(idx.len(), &mut rng))?;
                let lr = net.loss(&net.forward(&rb, &weights)?, &rb, &Targets::True)?;
                loss = loss.f_add(&lr.f_mul_scalar(s.alpha)?)?;
            }
            if s.method == Method::L1 && l1 != 0.0 {
                for l in &w.leaves {
                    let norm = l.f_abs()?.f_sum(Kind::Float)?;
                    loss = loss.f_add(&norm.f_mul_scalar(l1)?)?;
                }
            }
            loss.f_backward()?;
            drop(low);
            if let Some(mask) = mask {
                let _g = tch::no_grad_guard();
                for (l, m) in w.leaves.iter().zip(mask) {
                    let mut g = l.grad();
                    if g.defined() {
                        let _ = g.f_mul_(m)?;
                    }
                }
            }
            opt.step(&mut w.leaves)?;
            if let Some(mask) = mask {
                let _g = tch::no_grad_guard();
                for ((l, m), o) in w.leaves.iter_mut().zip(mask).zip(&originals) {
                    let kept = l.f_where_self(&m.f_to_kind(Kind::Bool)?, o)?;
                    l.f_copy_(&kept)?;
                }
            }
            loss_sum += loss.f_double_value(&[])?;
            steps += 1;
            (at.batch, at.loss) = (steps, loss_sum / steps as f64);
            obs.epoch_progress(&at);
        }
        let weights = w.detached()?;
        let forget_acc = net.accuracy(forget, eval_batch(s.batch_size), &weights)?;
        obs.epoch_progress(&EpochProgress { forget_acc: Some(forget_acc), ..at });
        let stats = EpochStats {
            epoch: epoch + 1,
            loss: loss_sum / steps.max(1) as f64,
            forget_acc,
            forget_loss: None,
            retain_acc: retain.map(|r| net.accuracy(r, eval_batch(s.batch_size), &weights)).transpose()?,
            seconds: t0.elapsed().as_secs_f64(),
            batches: None,
        };
        obs.epoch(&stats);
        history.push(stats);
    }
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(lr_at(0.1, Schedule::Constant, 7, 10), 0.1);
        assert!((lr_at(0.1, Schedule::Cosine, 0, 10) - 0.1).abs() < 1e-12);
        assert!((lr_at(0.1, Schedule::Cosine, 5, 10) - 0.05).abs() < 1e-12);
        assert!(lr_at(0.1, Schedule::Cosine, 9, 10) < 0.003);
        let step: Vec<f64> = (0..4).map(|e| lr_at(1.0, Schedule::Step, e, 4)).collect();
        assert_eq!(step, vec![1.0, 1.0, 0.1, 0.01]);
    }
}

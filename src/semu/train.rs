//! Step 6 of SEMU.md: fine-tune only the R matrices with the unlearning objective on the forget
//! set — by default the random-label loss (labels redrawn every epoch, uniform over the other
//! classes; random tokens for a language model) — plus α × the retain loss when remaining data
//! is given.
use super::adapter::Adapter;
use super::optim::{Optimizer, OptimizerKind};
use super::unlearn::Observer;
use crate::data::{batches, Dataset};
use crate::engine::precision::{self, Precision};
use crate::engine::Weights;
use crate::error::Result;
use crate::task::diffusion::{Draw, Phase, Teacher};
use crate::task::objective::{random_targets, ForgetLoss};
use crate::task::{Model, Objective, Targets, TaskKind};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use tch::Tensor;

#[derive(Debug, Clone)]
pub struct TrainSettings {
    pub epochs: usize,
    pub lr: f64,
    pub batch_size: usize,
    /// Remaining-data records beside each forget batch; None: as many as the forget batch holds.
    pub retain_batch_size: Option<usize>,
    /// What each step's products compute in; scoring stays f32.
    pub precision: Precision,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub alpha: f64,
    pub objective: Objective,
    /// NPO's inverse temperature β.
    pub npo_beta: f64,
    /// λ of the KL term of `redistribute` / `nearest`.
    pub kl_weight: f64,
    /// Classes forgotten as a whole (class forgetting), else empty.
    pub forget_classes: Vec<i64>,
    pub early_exit: bool,
    /// Stop after the first epoch that reaches this (the retrained level).
    pub stop_at: Option<super::auto::Target>,
    pub seed: u64,
    /// Keep each epoch's sample order and random labels in its stats (parity checks).
    pub record_batches: bool,
    /// Train this many steps instead of `epochs` passes: batches are drawn from the forget set
    /// reshuffled whenever it runs out, and statistics are taken every [`STEPS_PER_ROUND`] steps.
    pub iterations: Option<usize>,
    /// Clip the R gradients' global norm to this before each step.
    pub clip: Option<f64>,
}

/// Steps between two measurements when training by iterations.
pub const STEPS_PER_ROUND: usize = 25;

/// What one epoch did; accuracies are fractions on the true labels.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub loss: f64,
    pub forget_acc: f64,
    /// Median loss on the forget set's true targets, when the stop target is a loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forget_loss: Option<f64>,
    pub retain_acc: Option<f64>,
    pub seconds: f64,
    /// With `record_batches`: the forget-set order and the random label of every sample.
    #[serde(skip)]
    pub batches: Option<(Vec<usize>, Vec<i64>)>,
}

/// Where an epoch stands, for a progress display: batches done, the mean loss so far, and the
/// forget-set accuracy once it is measured (the retain accuracy arrives with [`EpochStats`]).
#[derive(Debug, Clone, Copy)]
pub struct EpochProgress {
    pub epoch: usize,
    pub epochs: usize,
    pub batch: usize,
    pub batches: usize,
    pub loss: f64,
    pub forget_acc: Option<f64>,
}

impl EpochStats {
    /// The early-exit score: (UA + RA)/2 with remaining data, UA alone otherwise.
    pub fn score(&self) -> f64 {
        let ua = 1.0 - self.forget_acc;
        match self.retain_acc {
            Some(ra) => (ua + ra) / 2.0,
            None => ua,
        }
    }
}

/// The weights every forward uses: each adapted initializer replaced by `W + U R Vᵀ`.
pub fn overrides(adapters: &[Adapter]) -> Result<HashMap<String, Tensor>> {
    adapters.iter().map(|a| Ok((a.name.clone(), a.weight()?))).collect()
}

/// [`overrides`] with 2-D weights left as factors: a training step forms none of them (nor
/// their m×n gradients) where MatMul or Gemm consume them ([`crate::engine::LowRank`]).
pub fn adapted(adapters: &[Adapter]) -> Result<Weights> {
    let mut w = Weights::default();
    for a in adapters {
        if let Some(lr) = a.low_rank()? {
            w.low_rank.insert(a.name.clone(), lr);
        } else {
            w.full.insert(a.name.clone(), a.weight()?);
        }
    }
    Ok(w)
}

/// A label different from `y`, uniform over the other `classes - 1` classes.
pub fn random_other_label(rng: &mut StdRng, y: i64, classes: i64) -> i64 {
    (y + rng.random_range(1..classes)) % classes
}

/// Scoring needs no gradients: it runs in batches of at least 64 whatever the training batch
/// (a language model trains on a few texts at a time but is scored on hundreds).
pub fn eval_batch(train_batch: usize) -> usize {
    train_batch.max(64)
}

/// A separate stream for random tokens, so that a classifier's labels and order keep the
/// stream they always had (same seed, same bytes).
pub fn token_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x746f_6b65_6e73)
}

/// Scales the gradients of `params` so that their global norm is at most `max` (PyTorch's
/// `clip_grad_norm_`).
fn clip_grad_norm(params: &[Tensor], max: f64) -> Result<()> {
    let _g = tch::no_grad_guard();
    let grads: Vec<Tensor> = params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect();
    let mut sq = 0.0;
    for g in &grads {
        sq += g.f_square()?.f_sum(tch::Kind::Double)?.f_double_value(&[])?;
    }
    let scale = max / (sq.sqrt() + 1e-6);
    if scale < 1.0 {
        for g in &grads {
            let _ = g.shallow_clone().f_mul_scalar_(scale)?;
        }
    }
    Ok(())
}

/// Trains the adapters' R; `obs` sees each batch and each epoch's statistics. Returns all epochs.
/// With early exit, training stops when the score has not improved by 0.01 for 2 epochs and
/// the best epoch's R is kept.
pub fn train(
    net: &Model,
    adapters: &mut [Adapter],
    forget: &dyn Dataset,
    retain: Option<&dyn Dataset>,
    classes: i64,
    s: &TrainSettings,
    obs: &mut dyn Observer,
) -> Result<Vec<EpochStats>> {
    let mut rng = StdRng::seed_from_u64(s.seed);
    let mut opt = Optimizer::new(s.optimizer, s.lr, s.momentum, s.weight_decay, adapters.len());
    let mut token_rng = token_rng(s.seed);
    let frozen = HashMap::new();
    // Replayed draws (parity checks) bring their own batches; `step` counts them.
    let replay = net.diffusion.as_ref().and_then(|d| d.replay.as_ref());
    let mut step = 0;
    let objective = ForgetLoss {
        objective: s.objective,
        npo_beta: s.npo_beta,
        kl_weight: s.kl_weight,
        frozen: &frozen,
        forget_classes: &s.forget_classes,
    };
    let classify = net.task == TaskKind::Classify;
    // Labels only: formats that store them apart (ImageFolder, CIFAR) decode no images for this.
    let forget_labels = if classify { forget.labels()? } else { Vec::new() };
    let mut retain_order: Vec<usize> = retain.map(|r| (0..r.len()).collect()).unwrap_or_default();
    let mut retain_pos = retain_order.len(); // forces a shuffle before first use
    let mut history: Vec<EpochStats> = Vec::new();
    let mut best: Option<(f64, Vec<Tensor>)> = None;
    let mut stale = 0;
    let epochs = s.iterations.map_or(s.epochs, |n| n.div_ceil(STEPS_PER_ROUND));
    let mut cycle: Vec<usize> = Vec::new();
    for epoch in 1..=epochs {
        let t0 = std::time::Instant::now();
        let random: Vec<i64> = if s.objective == Objective::Rl {
            forget_labels.iter().map(|&y| random_other_label(&mut rng, y, classes)).collect()
        } else {
            Vec::new()
        };
        let mut order: Vec<usize> = (0..forget.len()).collect();
        order.shuffle(&mut rng);
        if let Some(n) = s.iterations {
            // This round's steps, from the forget set reshuffled each time it is used up.
            let steps = STEPS_PER_ROUND.min(n - (epoch - 1) * STEPS_PER_ROUND);
            order.clear();
            if let Some(r) = replay {
                order.extend(r.train[step..step + steps].iter().flatten());
            }
            while order.len() < steps * s.batch_size.max(1) {
                if cycle.is_empty() {
                    cycle = (0..forget.len()).collect();
                    cycle.shuffle(&mut rng);
                }
                order.push(cycle.pop().expect("not empty"));
            }
        }
        let (mut loss_sum, mut steps) = (0.0, 0);
        let mut at = EpochProgress {
            epoch,
            epochs,
            batch: 0,
            batches: order.len().div_ceil(s.batch_size.max(1)),
            loss: 0.0,
            forget_acc: None,
        };
        for idx in batches(&order, s.batch_size) {
            let draw = if replay.is_some() { Draw::Replay(Phase::Train, step) } else { Draw::Fresh };
            step += 1;
            let fb = net.records_with(forget, idx, draw)?;
            let targets = match s.objective {
                Objective::Rl if net.diffusion.is_none() => {
                    Some(random_targets(net, &fb, idx, &random, classes, &mut token_rng)?)
                }
                _ => None,
            };
            let w = adapted(adapters)?;
            let low = precision::scope(s.precision.lowered());
            let out = net.forward(&fb, &w)?;
            let mut loss = match &net.diffusion {
                Some(d) => {
                    d.forget_term(net, &out, &fb, if d.teacher == Teacher::Current { &w } else { &frozen }, &w)?
                }
                None => objective.term(net, &out, &fb, targets.as_ref())?,
            };
            if let (Some(r), true) = (retain.filter(|_| s.objective.uses_retain()), s.alpha != 0.0) {
                let mut ridx = Vec::with_capacity(idx.len());
                while ridx.len() < s.retain_batch_size.unwrap_or(idx.len()).min(r.len()) {
                    if retain_pos == retain_order.len() {
                        retain_order.shuffle(&mut rng);
                        retain_pos = 0;
                    }
                    ridx.push(retain_order[retain_pos]);
                    retain_pos += 1;
                }
                let rb = net.records_with(r, &ridx, Draw::Fresh)?;
                let lr = net.loss(&net.forward(&rb, &w)?, &rb, &Targets::True)?;
                loss = loss.f_add(&lr.f_mul_scalar(s.alpha)?)?;
            }
            loss.f_backward()?;
            drop(low);
            let mut rs: Vec<Tensor> = adapters.iter().map(|a| a.r.shallow_clone()).collect();
            if let Some(c) = s.clip {
                clip_grad_norm(&rs, c)?;
            }
            for a in adapters.iter() {
                a.mask_grad()?;
            }
            opt.step(&mut rs)?;
            loss_sum += loss.f_double_value(&[])?;
            steps += 1;
            (at.batch, at.loss) = (steps, loss_sum / steps as f64);
            obs.epoch_progress(&at);
        }
        // Built without gradients, each weight is formed as the fold forms it: these scores
        // are the exported model's.
        let w = {
            let _g = tch::no_grad_guard();
            adapted(adapters)?
        };
        // The median loss the stop reads comes from the same pass as the accuracy.
        let by_loss = s.stop_at.as_ref().is_some_and(|t| t.metric == super::auto::Metric::Loss);
        let (forget_acc, forget_loss) = net.score(forget, eval_batch(s.batch_size), &w, by_loss)?;
        obs.epoch_progress(&EpochProgress { forget_acc: Some(forget_acc), ..at });
        let stats = EpochStats {
            epoch,
            loss: loss_sum / steps.max(1) as f64,
            forget_acc,
            forget_loss,
            // A diffusion model's remaining data is large and costs three passes, and a language
            // model's is many times its forget set (a third of each round's time on the text-LM
            // fixtures): measured at the end, unless early exit scores each round by it.
            retain_acc: retain
                .filter(|_| classify || (s.early_exit && net.diffusion.is_none()))
                .map(|r| net.accuracy(r, eval_batch(s.batch_size), &w))
                .transpose()?,
            seconds: t0.elapsed().as_secs_f64(),
            batches: s.record_batches.then(|| (order.clone(), random.clone())),
        };
        obs.epoch(&stats);
        let score = stats.score();
        let forgotten = s.stop_at.as_ref().is_some_and(|t| t.reached(&stats));
        history.push(stats);
        if s.early_exit {
            let improved = best.as_ref().is_none_or(|(b, _)| score > *b + 0.01);
            if improved || best.as_ref().is_some_and(|(b, _)| score > *b) {
                let snapshot = adapters.iter().map(|a| a.r.f_detach_copy()).collect::<Result<_, _>>()?;
                best = Some((score, snapshot));
            }
            stale = if improved { 0 } else { stale + 1 };
            if stale >= 2 {
                break;
            }
        }
        if forgotten {
            break;
        }
    }
    if let Some((_, snapshot)) = best {
        let _g = tch::no_grad_guard();
        for (a, r) in adapters.iter_mut().zip(snapshot) {
            a.r.f_copy_(&r)?;
        }
    }
    Ok(history)
}

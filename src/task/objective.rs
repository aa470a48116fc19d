//! Unlearning objectives on the forget set, shared by SEMU (inside its subspace) and the
//! full-model baselines. Each works for every task through the task's loss and log-likelihood:
//! - `rl`: the loss against random targets (a class ≠ the true one; random tokens for a LM).
//! - `ga`: gradient ascent, the negated loss.
//! - `graddiff`: gradient ascent on the forget set plus α × the loss on the remaining data.
//! - `npo`: Negative Preference Optimization (Zhang et al. 2024),
//!   `−(2/β)·mean log σ(−β·(log π(x) − log π_ref(x)))` with π_ref the frozen input model.
//! - `nearest`: the loss against the class the frozen input model ranks highest after the true
//!   one (and any other forgotten class): each sample moves across its nearest boundary.
//! - `redistribute`: push the true class's probability down, `−log(1 − q_y)`, and keep the
//!   frozen model's odds between the other classes, `λ·KL(p̃ ‖ q̃)` (p̃, q̃: the frozen and the
//!   current distributions renormalised over the classes that are not forgotten). At λ = 1 this
//!   is the cross-entropy to p̃: the true class's mass handed to the others in the frozen
//!   model's proportions, which is where a retrained model puts a forgotten class's samples.
//!   Needs no remaining data.
//!
//! The caller adds α × the remaining-data loss for `rl` and `npo` when remaining data is given.
use super::{Model, TaskKind};
use crate::data::Batch;
use crate::error::Result;
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Random targets on the forget set (the paper's random labelling).
    #[default]
    Rl,
    /// Gradient ascent on the forget set.
    Ga,
    /// Gradient ascent on the forget set + α × descent on the remaining data.
    #[value(name = "graddiff")]
    GradDiff,
    /// Negative Preference Optimization against the frozen input model.
    Npo,
    /// The frozen model's nearest other class as the target (no remaining data needed).
    Nearest,
    /// The true class's probability handed to the other classes in the frozen model's
    /// proportions (no remaining data needed).
    Redistribute,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Rl => "rl",
            Objective::Ga => "ga",
            Objective::GradDiff => "graddiff",
            Objective::Npo => "npo",
            Objective::Nearest => "nearest",
            Objective::Redistribute => "redistribute",
        }
    }
    /// Whether the objective needs remaining data / may use it.
    pub fn needs_retain(self) -> bool {
        self == Objective::GradDiff
    }
    pub fn uses_retain(self) -> bool {
        self != Objective::Ga
    }
    /// Whether the objective reads the frozen input model's outputs.
    pub fn uses_frozen(self) -> bool {
        matches!(self, Objective::Npo | Objective::Nearest | Objective::Redistribute)
    }
}

/// The targets a loss is taken against.
pub enum Targets<'a> {
    /// The records' own (class ids, or the next tokens).
    True,
    /// Replacements of the same shape (random labels, random tokens).
    Given(&'a Tensor),
}

impl<'a> Targets<'a> {
    pub fn or(&self, own: &'a Tensor) -> &'a Tensor {
        match self {
            Targets::True => own,
            Targets::Given(t) => t,
        }
    }
}

/// Random next tokens for every position of `ids` (B×T), each ≠ the true token, uniform over
/// the other `vocab − 1` ids.
pub fn random_tokens(ids: &Tensor, vocab: i64, rng: &mut StdRng) -> Result<Tensor> {
    let flat = Vec::<i64>::try_from(ids.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Int64)?.f_reshape([-1])?)?;
    let r: Vec<i64> = flat.iter().map(|&t| (t.rem_euclid(vocab) + rng.random_range(1..vocab)) % vocab).collect();
    Ok(Tensor::f_from_slice(&r)?.f_reshape(ids.size())?)
}

/// A forget objective with its settings: what [`ForgetLoss::term`] needs besides the batch.
pub struct ForgetLoss<'a> {
    pub objective: Objective,
    /// NPO's inverse temperature β.
    pub npo_beta: f64,
    /// λ of `redistribute` and `nearest`: weight of the KL term over the classes kept.
    pub kl_weight: f64,
    /// The input model's weights view (usually empty overrides: the plan's own initializers).
    pub frozen: &'a HashMap<String, Tensor>,
    /// Classes being forgotten as a whole: never a target, left out of the KL term.
    pub forget_classes: &'a [i64],
}

impl ForgetLoss<'_> {
    /// The forget term for batch `b`, whose output under the weights being trained is `out`;
    /// `random` holds the `rl` targets.
    pub fn term(&self, model: &Model, out: &Tensor, b: &Batch, random: Option<&Tensor>) -> Result<Tensor> {
        match self.objective {
            Objective::Rl => {
                let t = random.map_or(Targets::True, Targets::Given);
                model.loss(out, b, &t)
            }
            Objective::Ga | Objective::GradDiff => Ok(model.loss(out, b, &Targets::True)?.f_neg()?),
            Objective::Npo => {
                let reference = {
                    let _g = tch::no_grad_guard();
                    model.log_likelihood(&model.forward(b, self.frozen)?, b)?
                };
                let ratio = model.log_likelihood(out, b)?.f_sub(&reference)?;
                // −(2/β)·log σ(−β·ratio), averaged over the records.
                let l = ratio.f_mul_scalar(-self.npo_beta)?.f_log_sigmoid()?.f_mean(Kind::Float)?;
                Ok(l.f_mul_scalar(-2.0 / self.npo_beta)?)
            }
            Objective::Nearest | Objective::Redistribute => {
                let (logits, y, w) = model.scored(out, b)?;
                let frozen = {
                    let _g = tch::no_grad_guard();
                    model.scored(&model.forward(b, self.frozen)?, b)?.0
                };
                let forgotten = forgotten_mask(&y, logits.size()[1], self.forget_classes)?;
                let rows = if self.objective == Objective::Nearest {
                    let target = nearest_other(&frozen, &forgotten)?;
                    let lp = logits.f_log_softmax(-1, Kind::Float)?;
                    lp.f_gather(1, &target.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?.f_neg()?
                } else {
                    push_down(&logits, &forgotten)?
                };
                let rows = if self.kl_weight != 0.0 {
                    rows.f_add(&kept_kl(&frozen, &logits, &forgotten)?.f_mul_scalar(self.kl_weight)?)?
                } else {
                    rows
                };
                Ok(rows.f_mul(&w)?.f_sum(Kind::Float)?.f_div(&w.f_sum(Kind::Float)?.f_clamp_min(1.0)?)?)
            }
        }
    }
}

/// M×C booleans: each row's target class and every wholly forgotten class.
pub fn forgotten_mask(y: &Tensor, classes: i64, forget_classes: &[i64]) -> Result<Tensor> {
    let dev = y.device();
    let mut m = Tensor::f_zeros([y.size()[0], classes], (Kind::Bool, dev))?;
    let y = y.f_to_kind(Kind::Int64)?.f_unsqueeze(1)?;
    m = m.f_scatter_value(1, &y, 1)?;
    for &c in forget_classes.iter().filter(|&&c| (0..classes).contains(&c)) {
        let _ = m.f_narrow(1, c, 1)?.f_fill_(1)?;
    }
    Ok(m)
}

/// The class each row's frozen logits rank highest among those not forgotten.
pub fn nearest_other(frozen: &Tensor, forgotten: &Tensor) -> Result<Tensor> {
    Ok(frozen.f_masked_fill(forgotten, f64::NEG_INFINITY)?.f_argmax(1, false)?)
}

/// Per row, `−log Σ_{kept} q_c = −log(1 − q_forgotten)`: zero once the forgotten classes hold
/// no probability, so it stops pushing by itself.
fn push_down(logits: &Tensor, forgotten: &Tensor) -> Result<Tensor> {
    let lp = logits.f_log_softmax(-1, Kind::Float)?;
    Ok(lp.f_masked_fill(forgotten, f64::NEG_INFINITY)?.f_logsumexp([1], false)?.f_neg()?)
}

/// Per row, KL(p̃ ‖ q̃) between the frozen and the current distributions renormalised over the
/// kept classes: zero while the model's odds between kept classes are the frozen model's.
pub fn kept_kl(frozen: &Tensor, logits: &Tensor, forgotten: &Tensor) -> Result<Tensor> {
    let kept = |t: &Tensor| -> Result<Tensor> {
        Ok(t.f_masked_fill(forgotten, f64::NEG_INFINITY)?.f_log_softmax(-1, Kind::Float)?)
    };
    let (lp, lq) = (kept(frozen)?, kept(logits)?);
    let p = lp.f_exp()?;
    // 0·(−∞ − −∞) at forgotten classes: zero those terms explicitly.
    let d = p.f_mul(&lp.f_sub(&lq)?)?.f_masked_fill(forgotten, 0.0)?;
    Ok(d.f_sum_dim_intlist(1, false, Kind::Float)?)
}

/// The `rl` targets of the records at `idx` (batch `b`): a classifier's random labels drawn for
/// this epoch by the caller (`labels`, one per record of the set), or random tokens drawn now.
pub fn random_targets(
    model: &Model,
    b: &Batch,
    idx: &[usize],
    labels: &[i64],
    vocab: i64,
    rng: &mut StdRng,
) -> Result<Tensor> {
    match model.task {
        TaskKind::Classify => Ok(Tensor::f_from_slice(&idx.iter().map(|&i| labels[i]).collect::<Vec<_>>())?),
        TaskKind::CausalLm => random_tokens(&model.token_ids(b)?, vocab, rng),
        TaskKind::Diffusion => Err(crate::error::Error::msg("random labels: the diffusion task draws its own targets")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random logits whose arg-max is the true class in every row: the hard case for relabelling.
    fn confident(rows: i64, classes: i64, seed: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        let logits = Tensor::randn([rows, classes], (Kind::Float, tch::Device::Cpu));
        let y = Tensor::randint(classes, [rows], (Kind::Int64, tch::Device::Cpu));
        let boosted = logits.scatter_value(1, &y.unsqueeze(1), 50.0);
        (boosted, y)
    }

    #[test]
    fn nearest_never_returns_the_true_class_or_a_forgotten_one() {
        for seed in 0..20 {
            let (frozen, y) = confident(64, 10, seed);
            let forgotten = forgotten_mask(&y, 10, &[3, 7]).unwrap();
            let t = Vec::<i64>::try_from(nearest_other(&frozen, &forgotten).unwrap()).unwrap();
            let y = Vec::<i64>::try_from(&y).unwrap();
            for (t, y) in t.iter().zip(&y) {
                assert!(t != y && *t != 3 && *t != 7, "seed {seed}: target {t} for true class {y}");
            }
        }
        // It is the frozen model's best remaining class.
        let frozen = Tensor::from_slice(&[9.0f32, 1.0, 5.0, 4.0]).reshape([1, 4]);
        let forgotten = forgotten_mask(&Tensor::from_slice(&[0i64]), 4, &[]).unwrap();
        assert_eq!(nearest_other(&frozen, &forgotten).unwrap().int64_value(&[0]), 2);
    }

    #[test]
    fn the_kl_term_is_zero_at_the_frozen_model_and_positive_away_from_it() {
        let (frozen, y) = confident(32, 10, 1);
        let forgotten = forgotten_mask(&y, 10, &[]).unwrap();
        let same = kept_kl(&frozen, &frozen, &forgotten).unwrap();
        assert!(same.abs().max().double_value(&[]) < 1e-6, "KL at R = 0: {same:?}");
        // Moving only the forgotten class's logit leaves the odds between the others alone.
        let pushed = frozen.masked_fill(&forgotten, -20.0);
        assert!(kept_kl(&frozen, &pushed, &forgotten).unwrap().abs().max().double_value(&[]) < 1e-5);
        let moved = &frozen + Tensor::randn([32, 10], (Kind::Float, tch::Device::Cpu));
        let kl = kept_kl(&frozen, &moved, &forgotten).unwrap();
        assert!(kl.min().double_value(&[]) > 0.0, "KL must be positive once the other classes' odds move");
    }

    #[test]
    fn push_down_vanishes_once_the_forgotten_class_holds_no_probability() {
        let (frozen, y) = confident(8, 5, 2);
        let forgotten = forgotten_mask(&y, 5, &[]).unwrap();
        assert!(push_down(&frozen, &forgotten).unwrap().min().double_value(&[]) > 10.0);
        let gone = frozen.masked_fill(&forgotten, -100.0);
        assert!(push_down(&gone, &forgotten).unwrap().abs().max().double_value(&[]) < 1e-6);
    }
}

//! Unlearning objectives on the forget set, shared by SEMU (inside its subspace) and the
//! full-model baselines. Each works for every task through the task's loss and log-likelihood:
//! - `rl`: the loss against random targets (a class ≠ the true one; random tokens for a LM).
//! - `ga`: gradient ascent, the negated loss.
//! - `graddiff`: gradient ascent on the forget set plus α × the loss on the remaining data.
//! - `npo`: Negative Preference Optimization (Zhang et al. 2024),
//!   `−(2/β)·mean log σ(−β·(log π(x) − log π_ref(x)))` with π_ref the frozen input model.
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
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Rl => "rl",
            Objective::Ga => "ga",
            Objective::GradDiff => "graddiff",
            Objective::Npo => "npo",
        }
    }
    /// Whether the objective needs remaining data / may use it.
    pub fn needs_retain(self) -> bool {
        self == Objective::GradDiff
    }
    pub fn uses_retain(self) -> bool {
        self != Objective::Ga
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

/// The forget term of `objective` for batch `b`, whose output under the weights being trained
/// is `out`. `random` holds the `rl` targets; `frozen` the input model's weights view for `npo`
/// (usually empty overrides: the plan's own initializers).
pub fn forget_term(
    objective: Objective,
    model: &Model,
    out: &Tensor,
    b: &Batch,
    random: Option<&Tensor>,
    frozen: &HashMap<String, Tensor>,
    beta: f64,
) -> Result<Tensor> {
    match objective {
        Objective::Rl => {
            let t = random.map_or(Targets::True, Targets::Given);
            model.loss(out, b, &t)
        }
        Objective::Ga | Objective::GradDiff => Ok(model.loss(out, b, &Targets::True)?.f_neg()?),
        Objective::Npo => {
            let reference = {
                let _g = tch::no_grad_guard();
                model.log_likelihood(&model.forward(b, frozen)?, b)?
            };
            let ratio = model.log_likelihood(out, b)?.f_sub(&reference)?;
            // −(2/β)·log σ(−β·ratio), averaged over the records.
            let l = ratio.f_mul_scalar(-beta)?.f_log_sigmoid()?.f_mean(Kind::Float)?;
            Ok(l.f_mul_scalar(-2.0 / beta)?)
        }
    }
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
    }
}

//! Did a language model forget? The measures of the LLM-unlearning benchmarks (TOFU, MUSE,
//! OpenUnlearning), teacher-forced on each text:
//! - perplexity: exp of the mean next-token NLL over all scored tokens of a set;
//! - exact memorisation: the share of a text's next tokens that greedy decoding gets right,
//!   averaged over texts;
//! - extraction strength: 1 − k/n for the shortest prefix k after which every greedy next token
//!   is right, averaged over texts;
//! - Min-K% probability membership attack: a text's score is the mean log-probability of its
//!   lowest K% tokens; the AUC tells the forget set (members) from a holdout set never trained
//!   on (non-members). 0.5 = the attack cannot tell them apart, as for a model that never saw
//!   the forget set; near 1 = the forget set is still recognisable.
use crate::data::{batches, Dataset};
use crate::engine::Overrides;
use crate::error::{Error, Result};
use crate::task::lm::{per_sample, SampleScore};
use crate::task::{Model, TaskKind};
use serde::Serialize;

/// Min-K%'s K, as OpenUnlearning's default.
pub const MIN_K: f64 = 0.4;

/// One set's numbers; percentages for memorisation and extraction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SetMetrics {
    pub texts: usize,
    pub tokens: i64,
    pub perplexity: f64,
    pub memorisation: f64,
    pub extraction_strength: f64,
    pub mean_nll: f64,
}

impl SetMetrics {
    pub fn of(s: &[SampleScore]) -> Self {
        let tokens: i64 = s.iter().map(|x| x.tokens).sum();
        let nll: f64 = s.iter().map(|x| x.nll).sum();
        let mean_nll = nll / tokens.max(1) as f64;
        let per_text = |f: &dyn Fn(&SampleScore) -> f64| {
            let scored: Vec<f64> = s.iter().filter(|x| x.tokens > 0).map(f).collect();
            100.0 * scored.iter().sum::<f64>() / scored.len().max(1) as f64
        };
        SetMetrics {
            texts: s.len(),
            tokens,
            perplexity: mean_nll.exp(),
            memorisation: per_text(&|x| x.correct as f64 / x.tokens as f64),
            extraction_strength: per_text(&|x| x.extraction),
            mean_nll,
        }
    }
}

/// Everything reported for one language model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LmEvaluation {
    pub forget: SetMetrics,
    pub retain: Option<SetMetrics>,
    pub holdout: Option<SetMetrics>,
    /// AUC of the Min-K% attack, forget (members) vs holdout (non-members).
    pub min_k_auc: Option<f64>,
    pub min_k: f64,
}

/// Scores every text of `ds` under `overrides`.
pub fn score_set(net: &Model, ds: &dyn Dataset, batch: usize, overrides: &dyn Overrides) -> Result<Vec<SampleScore>> {
    if net.task != TaskKind::CausalLm {
        return Err(Error::msg("language-model metrics need the causal-lm task"));
    }
    let _g = tch::no_grad_guard();
    let order: Vec<usize> = (0..ds.len()).collect();
    let mut out = Vec::with_capacity(ds.len());
    for idx in batches(&order, batch) {
        let b = ds.records(idx)?;
        let logits = net.forward(&b, overrides)?;
        out.extend(per_sample(&logits, &net.token_ids(&b)?, &net.mask(&b)?, MIN_K)?);
    }
    Ok(out)
}

/// Evaluates `net` (with `overrides`) on the forget set and, when given, retain and holdout sets.
pub fn evaluate(
    net: &Model,
    overrides: &dyn Overrides,
    forget: &dyn Dataset,
    retain: Option<&dyn Dataset>,
    holdout: Option<&dyn Dataset>,
    batch: usize,
) -> Result<LmEvaluation> {
    let f = score_set(net, forget, batch, overrides)?;
    let r = retain.map(|d| score_set(net, d, batch, overrides)).transpose()?;
    let h = holdout.map(|d| score_set(net, d, batch, overrides)).transpose()?;
    let min_k_auc = h.as_ref().map(|h| {
        let members: Vec<f64> = f.iter().filter(|x| x.tokens > 0).map(|x| x.min_k).collect();
        let others: Vec<f64> = h.iter().filter(|x| x.tokens > 0).map(|x| x.min_k).collect();
        auc(&members, &others)
    });
    Ok(LmEvaluation {
        forget: SetMetrics::of(&f),
        retain: r.as_deref().map(SetMetrics::of),
        holdout: h.as_deref().map(SetMetrics::of),
        min_k_auc,
        min_k: MIN_K,
    })
}

/// The probability that a positive scores above a negative (ties count half): the area under
/// the ROC curve, by ranks (Mann–Whitney U).
pub fn auc(pos: &[f64], neg: &[f64]) -> f64 {
    if pos.is_empty() || neg.is_empty() {
        return 0.5;
    }
    let mut all: Vec<(f64, bool)> = pos.iter().map(|&v| (v, true)).chain(neg.iter().map(|&v| (v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j + 1 < all.len() && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += all[i..=j].iter().filter(|x| x.1).count() as f64 * avg;
        i = j + 1;
    }
    let (p, n) = (pos.len() as f64, neg.len() as f64);
    (rank_sum - p * (p + 1.0) / 2.0) / (p * n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_by_ranks() {
        assert_eq!(auc(&[3.0, 4.0], &[1.0, 2.0]), 1.0);
        assert_eq!(auc(&[1.0, 2.0], &[3.0, 4.0]), 0.0);
        assert_eq!(auc(&[1.0], &[1.0]), 0.5);
        // One of four pairs ordered wrong.
        assert_eq!(auc(&[2.0, 4.0], &[1.0, 3.0]), 0.75);
    }
}

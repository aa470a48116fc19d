//! Did it forget? The SalUn / SEMU evaluation protocol (SEMU.md §9), all numbers in percent:
//! UA = 100 − acc(D_f), RA = acc(D_r), TA = acc(D_t), MIA-efficacy on the confidence feature (and
//! the other four SalUn features), and the Avg. Gap to a retrained model.
//!
//! [`evaluate_tables`] does the arithmetic from probability tables and labels; [`evaluate`] runs a
//! classifier [`Model`] (with optional weight overrides, e.g. SEMU's adapters) over the data first.
//! Language models have their own measures in [`lm`].
use crate::data::{self, Dataset};
use crate::error::{Error, Result};
use crate::task::Model;
use serde::Serialize;
use std::collections::HashMap;

pub mod diffusion;
pub mod frechet;
pub mod lm;
pub mod metrics;
pub mod mia;

pub use metrics::{accuracy, features, Feature, FeatureMatrix, ProbTable};
pub use mia::MiaScore;

/// The four headline numbers of the protocol, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metrics {
    #[serde(rename = "UA")]
    pub ua: f64,
    #[serde(rename = "RA")]
    pub ra: f64,
    #[serde(rename = "TA")]
    pub ta: f64,
    /// MIA-efficacy on the confidence feature.
    #[serde(rename = "MIA")]
    pub mia: f64,
}

/// One number per attack feature, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PerFeature {
    pub confidence: f64,
    pub correctness: f64,
    pub entropy: f64,
    pub modified_entropy: f64,
    pub probabilities: f64,
}

impl PerFeature {
    pub fn get(&self, f: Feature) -> f64 {
        match f {
            Feature::Confidence => self.confidence,
            Feature::Correctness => self.correctness,
            Feature::Entropy => self.entropy,
            Feature::ModifiedEntropy => self.modified_entropy,
            Feature::Probabilities => self.probabilities,
        }
    }

    fn from_fn(mut f: impl FnMut(Feature) -> Result<f64>) -> Result<Self> {
        Ok(PerFeature {
            confidence: f(Feature::Confidence)?,
            correctness: f(Feature::Correctness)?,
            entropy: f(Feature::Entropy)?,
            modified_entropy: f(Feature::ModifiedEntropy)?,
            probabilities: f(Feature::Probabilities)?,
        })
    }
}

/// How many samples each number rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Samples {
    pub forget: usize,
    pub retain: usize,
    /// Test samples behind TA and the MIA non-members (the other classes for class forgetting).
    pub test: usize,
    pub mia_members: usize,
}

/// Everything the protocol reports for one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub metrics: Metrics,
    /// MIA-efficacy with each SalUn feature (`confidence` is `metrics.MIA`).
    pub mia_features: PerFeature,
    /// How well each attack tells its own members from non-members (50 = not at all).
    pub mia_attack_accuracy: PerFeature,
    /// Set for class forgetting: TA then covers the test samples of the other classes only.
    pub forget_classes: Option<Vec<i64>>,
    /// Test accuracy on the forgotten classes (class forgetting only).
    pub forget_class_test_accuracy: Option<f64>,
    /// Accuracy on the whole test set, whatever the mode.
    pub test_accuracy_all: f64,
    pub samples: Samples,
}

/// Options shared by [`evaluate`] and [`evaluate_tables`].
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The forgotten classes; `Some(vec![])` asks for random-sample forgetting. `None`: class
    /// forgetting when D_f is all one class that D_r lacks, random-sample forgetting otherwise.
    pub forget_classes: Option<Vec<i64>>,
    /// Seeds the choice of the retain samples that serve as MIA members.
    pub seed: u64,
    /// Samples per forward pass in [`evaluate`].
    pub batch_size: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { forget_classes: None, seed: 0, batch_size: 256 }
    }
}

/// A data split as probabilities and labels.
#[derive(Debug, Clone, Copy)]
pub struct Split<'a> {
    pub probs: &'a ProbTable,
    pub labels: &'a [i64],
}

/// The forget, retain and test data of one evaluation.
#[derive(Clone, Copy)]
pub struct EvalData<'a> {
    pub forget: &'a dyn Dataset,
    pub retain: &'a dyn Dataset,
    pub test: &'a dyn Dataset,
}

/// The forgotten classes: those asked for, else D_f's single class when D_r has none of it.
pub fn forget_classes(asked: Option<&[i64]>, forget: &[i64], retain: &[i64]) -> Option<Vec<i64>> {
    if let Some(c) = asked {
        let mut c = c.to_vec();
        c.sort_unstable();
        c.dedup();
        return (!c.is_empty()).then_some(c);
    }
    let &first = forget.first()?;
    (forget.iter().all(|&y| y == first) && !retain.contains(&first)).then(|| vec![first])
}

/// The protocol from probability tables: needs no model, so every number can be checked by hand.
pub fn evaluate_tables(forget: Split, retain: Split, test: Split, opts: &EvalOptions) -> Result<Evaluation> {
    forget.probs.check_labels(forget.labels, "forget data")?;
    retain.probs.check_labels(retain.labels, "retain data")?;
    test.probs.check_labels(test.labels, "test data")?;
    let classes = forget.probs.classes();
    if retain.probs.classes() != classes || test.probs.classes() != classes {
        return Err(Error::msg(format!(
            "probability tables disagree on the class count (forget {classes}, retain {}, test {})",
            retain.probs.classes(),
            test.probs.classes()
        )));
    }
    if forget.probs.is_empty() || retain.probs.is_empty() {
        return Err(Error::msg("evaluation needs forget and retain samples (D_f and D_r are not empty)"));
    }
    let fc = forget_classes(opts.forget_classes.as_deref(), forget.labels, retain.labels);
    // Class forgetting: D_t becomes the other classes' test samples, for TA and the MIA alike.
    let (on, off): (Vec<usize>, Vec<usize>) = match &fc {
        Some(c) => (0..test.labels.len()).partition(|&i| c.contains(&test.labels[i])),
        None => (vec![], (0..test.labels.len()).collect()),
    };
    if off.is_empty() {
        return Err(Error::msg(match &fc {
            Some(c) => format!("the test data has no samples outside the forgotten classes {c:?}"),
            None => "evaluation needs test samples (D_t is empty)".into(),
        }));
    }
    let pick = |idx: &[usize]| (test.probs.select(idx), idx.iter().map(|&i| test.labels[i]).collect::<Vec<_>>());
    let (t_probs, t_labels) = pick(&off);
    let forget_class_test_accuracy = match fc {
        Some(_) if !on.is_empty() => {
            let (p, y) = pick(&on);
            Some(accuracy(&p, &y))
        }
        _ => None,
    };
    let members = mia::pick_members(retain.probs.len(), t_probs.len(), opts.seed);
    let m_labels: Vec<i64> = members.iter().map(|&i| retain.labels[i]).collect();
    let m_probs = retain.probs.select(&members);
    let mut scores = HashMap::new();
    for f in Feature::ALL {
        let s = mia::attack(
            &features(&m_probs, &m_labels, f),
            &features(&t_probs, &t_labels, f),
            &features(forget.probs, forget.labels, f),
        )
        .map_err(|e| Error::msg(format!("{} feature: {e}", f.name())))?;
        scores.insert(f, s);
    }
    let mia_features = PerFeature::from_fn(|f| Ok(scores[&f].efficacy))?;
    Ok(Evaluation {
        metrics: Metrics {
            ua: 100.0 - accuracy(forget.probs, forget.labels),
            ra: accuracy(retain.probs, retain.labels),
            ta: accuracy(&t_probs, &t_labels),
            mia: mia_features.confidence,
        },
        mia_features,
        mia_attack_accuracy: PerFeature::from_fn(|f| Ok(scores[&f].attack_accuracy))?,
        forget_classes: fc,
        forget_class_test_accuracy,
        test_accuracy_all: accuracy(test.probs, test.labels),
        samples: Samples {
            forget: forget.labels.len(),
            retain: retain.labels.len(),
            test: off.len(),
            mia_members: members.len(),
        },
    })
}

/// Runs `classifier` (with `overrides` for its dynamic initializers, empty for the model as
/// shipped) over the three data sets and applies the protocol.
pub fn evaluate(
    classifier: &Model,
    overrides: &dyn crate::engine::Overrides,
    data: EvalData,
    opts: &EvalOptions,
) -> Result<Evaluation> {
    // Labels are checked here too, so that an error names the file rather than the split.
    let table = |ds: &dyn Dataset| -> Result<(ProbTable, Vec<i64>)> {
        let p = ProbTable::from_tensor(&classifier.probabilities(ds, opts.batch_size, overrides)?)
            .map_err(|e| Error::msg(format!("{}: {e}", ds.source())))?;
        let y = data::labels(ds)?;
        p.check_labels(&y, &ds.source())?;
        Ok((p, y))
    };
    let (f, r, t) = (table(data.forget)?, table(data.retain)?, table(data.test)?);
    fn split((p, y): &(ProbTable, Vec<i64>)) -> Split<'_> {
        Split { probs: p, labels: y }
    }
    evaluate_tables(split(&f), split(&r), split(&t), opts)
}

/// Avg. Gap: mean |Δ| over UA, RA, TA and MIA between a method and the retrained reference.
pub fn avg_gap(method: &Metrics, retrained: &Metrics) -> f64 {
    let d = |a: f64, b: f64| (a - b).abs();
    (d(method.ua, retrained.ua)
        + d(method.ra, retrained.ra)
        + d(method.ta, retrained.ta)
        + d(method.mia, retrained.mia))
        / 4.0
}

#[cfg(test)]
mod tests;

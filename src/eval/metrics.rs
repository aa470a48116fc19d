//! The arithmetic of the SalUn / SEMU protocol (SEMU.md §9) on plain numbers: accuracy and the
//! five membership-inference features, from a table of softmax probabilities and true labels.
//! Nothing here runs a model, so every number can be checked by hand.
use crate::error::{Error, Result};
use serde::Serialize;
use tch::{Kind, Tensor};

/// Softmax probabilities: one row of `classes` values per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbTable {
    classes: usize,
    values: Vec<f32>,
}

impl ProbTable {
    /// A table from row-major values; every value must be finite.
    pub fn new(classes: usize, values: Vec<f32>) -> Result<Self> {
        if classes == 0 || !values.len().is_multiple_of(classes) {
            return Err(Error::msg(format!(
                "probability table: {} values do not make rows of {classes}",
                values.len()
            )));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::msg(format!("probability table: sample {} has a non-finite probability", i / classes)));
        }
        Ok(ProbTable { classes, values })
    }

    /// A table from explicit rows (all of one length).
    pub fn from_rows(rows: &[Vec<f32>]) -> Result<Self> {
        let classes = rows.first().map_or(1, Vec::len);
        if let Some(i) = rows.iter().position(|r| r.len() != classes) {
            return Err(Error::msg(format!(
                "probability table: row {i} has {} values, row 0 has {classes}",
                rows[i].len()
            )));
        }
        Self::new(classes, rows.concat())
    }

    /// A table from an N×C tensor (as `Classifier::probabilities` returns).
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        let size = t.size();
        let &[_, c] = size.as_slice() else {
            return Err(Error::msg(format!("probabilities have shape {size:?}; expected N×C")));
        };
        let flat = t.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?;
        Self::new(c as usize, Vec::<f32>::try_from(flat)?)
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.classes
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.classes..(i + 1) * self.classes]
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> ProbTable {
        ProbTable { classes: self.classes, values: idx.iter().flat_map(|&i| self.row(i).iter().copied()).collect() }
    }

    /// Arg-max of row `i` (the first of equal maxima, as `argmax` in PyTorch).
    pub fn predicted(&self, i: usize) -> usize {
        let r = self.row(i);
        (1..r.len()).fold(0, |best, j| if r[j] > r[best] { j } else { best })
    }

    /// Checks that `labels` has one class id per row, each a column of the table.
    pub fn check_labels(&self, labels: &[i64], set: &str) -> Result<()> {
        if labels.len() != self.len() {
            return Err(Error::msg(format!("{set}: {} labels for {} samples", labels.len(), self.len())));
        }
        if let Some(i) = labels.iter().position(|&y| y < 0 || y as usize >= self.classes) {
            return Err(Error::msg(format!(
                "{set}: sample {i} has label {} but the model has {} classes",
                labels[i], self.classes
            )));
        }
        Ok(())
    }
}

/// Accuracy in percent (0 for an empty set). Labels must have been checked.
pub fn accuracy(p: &ProbTable, labels: &[i64]) -> f64 {
    if p.is_empty() {
        return 0.0;
    }
    let correct = (0..p.len()).filter(|&i| p.predicted(i) as i64 == labels[i]).count();
    100.0 * correct as f64 / p.len() as f64
}

/// What the membership-inference attack sees of each sample (SalUn's five features).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// Softmax probability of the true label: the one §9's MIA-efficacy uses.
    Confidence,
    /// 1 when the prediction is right, else 0.
    Correctness,
    /// Shannon entropy of the prediction.
    Entropy,
    /// Song & Mittal's modified entropy, which also uses the true label.
    ModifiedEntropy,
    /// The whole probability vector.
    Probabilities,
}

impl Feature {
    pub const ALL: [Feature; 5] =
        [Feature::Confidence, Feature::Correctness, Feature::Entropy, Feature::ModifiedEntropy, Feature::Probabilities];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Confidence => "confidence",
            Feature::Correctness => "correctness",
            Feature::Entropy => "entropy",
            Feature::ModifiedEntropy => "modified entropy",
            Feature::Probabilities => "probabilities",
        }
    }
}

/// Row-major samples × `width` attack features.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureMatrix {
    pub width: usize,
    pub values: Vec<f64>,
}

impl FeatureMatrix {
    pub fn rows(&self) -> usize {
        self.values.len() / self.width.max(1)
    }
}

/// ln with the probability floored at 1e-30, as SalUn does, so a hard 0 gives a large finite value.
fn ln(p: f64) -> f64 {
    p.max(1e-30).ln()
}

/// The attack feature `f` of every row. Labels must have been checked.
pub fn features(p: &ProbTable, labels: &[i64], f: Feature) -> FeatureMatrix {
    let rows = 0..p.len();
    let one = |g: &dyn Fn(&[f64], usize) -> f64| FeatureMatrix {
        width: 1,
        values: rows
            .clone()
            .map(|i| {
                let r: Vec<f64> = p.row(i).iter().map(|&v| v as f64).collect();
                g(&r, labels[i] as usize)
            })
            .collect(),
    };
    match f {
        Feature::Confidence => one(&|r, y| r[y]),
        Feature::Correctness => FeatureMatrix {
            width: 1,
            values: rows.map(|i| f64::from(u8::from(p.predicted(i) as i64 == labels[i]))).collect(),
        },
        Feature::Entropy => one(&|r, _| -r.iter().filter(|&&v| v > 0.0).map(|&v| v * v.ln()).sum::<f64>()),
        // −(1−p_y)·ln p_y − Σ_{i≠y} p_i·ln(1−p_i): low for confident, correct predictions.
        Feature::ModifiedEntropy => one(&|r, y| {
            let others: f64 = r.iter().enumerate().filter(|&(i, _)| i != y).map(|(_, &v)| v * ln(1.0 - v)).sum();
            -(1.0 - r[y]) * ln(r[y]) - others
        }),
        Feature::Probabilities => {
            FeatureMatrix { width: p.classes(), values: p.values.iter().map(|&v| v as f64).collect() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (ProbTable, Vec<i64>) {
        let t =
            ProbTable::from_rows(&[vec![0.7, 0.2, 0.1], vec![0.1, 0.8, 0.1], vec![0.3, 0.3, 0.4], vec![0.5, 0.5, 0.0]])
                .unwrap();
        (t, vec![0, 2, 2, 1])
    }

    #[test]
    fn accuracy_counts_argmax_hits_with_first_maximum_on_ties() {
        let (t, y) = table();
        t.check_labels(&y, "test").unwrap();
        // Row 3 ties 0.5/0.5: arg-max is class 0, so label 1 is a miss.
        assert_eq!(accuracy(&t, &y), 50.0);
        assert_eq!(accuracy(&t.select(&[0, 2]), &[0, 2]), 100.0);
        assert_eq!(accuracy(&t.select(&[]), &[]), 0.0);
    }

    #[test]
    fn features_match_hand_computed_values() {
        let (t, y) = table();
        assert_eq!(
            features(&t, &y, Feature::Confidence).values,
            vec![0.7f32 as f64, 0.1f32 as f64, 0.4f32 as f64, 0.5]
        );
        assert_eq!(features(&t, &y, Feature::Correctness).values, vec![1.0, 0.0, 1.0, 0.0]);
        let e = features(&t, &y, Feature::Entropy).values;
        assert!((e[3] - 2f64.ln()).abs() < 1e-6, "{e:?}");
        let m = features(&t, &y, Feature::ModifiedEntropy).values;
        // Row 3, label 1: −0.5·ln 0.5 − 0.5·ln 0.5 − 0·ln 1 = ln 2.
        assert!((m[3] - 2f64.ln()).abs() < 1e-6, "{m:?}");
        let (a, b) = (0.7f32 as f64, [0.2f32 as f64, 0.1f32 as f64]);
        let want = -(1.0 - a) * a.ln() - b[0] * (1.0 - b[0]).ln() - b[1] * (1.0 - b[1]).ln();
        assert!((m[0] - want).abs() < 1e-9);
        let p = features(&t, &y, Feature::Probabilities);
        assert_eq!((p.width, p.rows()), (3, 4));
    }

    #[test]
    fn a_certain_wrong_answer_gets_a_large_finite_modified_entropy() {
        let t = ProbTable::from_rows(&[vec![1.0, 0.0]]).unwrap();
        let m = features(&t, &[1], Feature::ModifiedEntropy).values[0];
        assert!(m.is_finite() && m > 60.0, "{m}");
    }

    #[test]
    fn bad_tables_and_labels_are_named() {
        assert!(ProbTable::new(3, vec![0.5; 4]).is_err());
        assert!(ProbTable::new(2, vec![0.5, f32::NAN]).unwrap_err().to_string().contains("sample 0"));
        let (t, _) = table();
        let err = t.check_labels(&[0, 1, 7, 0], "forget").unwrap_err().to_string();
        assert!(err.contains("forget") && err.contains("sample 2") && err.contains("label 7"), "{err}");
        assert!(t.check_labels(&[0], "retain").is_err());
    }

    #[test]
    fn tensors_become_tables() {
        let t = Tensor::from_slice(&[0.25f32, 0.75, 1.0, 0.0]).view([2, 2]);
        let p = ProbTable::from_tensor(&t).unwrap();
        assert_eq!((p.len(), p.classes(), p.predicted(0), p.predicted(1)), (2, 2, 1, 0));
        assert!(ProbTable::from_tensor(&Tensor::from_slice(&[1.0f32])).is_err());
    }
}

//! MIA-efficacy as SalUn measures it: an RBF SVM (C = 3, γ = 1/n_features, i.e. scikit-learn's
//! `SVC(C=3, gamma="auto")`) learns to tell members (retain samples, label 1) from non-members
//! (test samples, label 0) by one feature of the model's output; the efficacy is the share of the
//! forget set it calls non-member. The SVM is linfa-svm's SMO solver, not ours.
use super::metrics::FeatureMatrix;
use crate::error::{Error, Result};
use linfa::prelude::{Fit, Predict};
use linfa_svm::Svm;
use ndarray16::{Array1, Array2};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// The SVM's regularisation, as in SalUn.
pub const C: f64 = 3.0;
/// SMO stopping tolerance: libsvm's (and so scikit-learn's) default.
const TOLERANCE: f64 = 1e-3;

/// One attack's outcome, in percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiaScore {
    /// Share of the targets (D_f) predicted non-member: higher = looks more like unseen data.
    pub efficacy: f64,
    /// The SVM's accuracy on its own members + non-members: near 50 when they look alike.
    pub attack_accuracy: f64,
}

/// Which retain samples serve as members: `min(n_retain, n_test)` of them, drawn without
/// replacement by a seeded RNG, in ascending order.
pub fn pick_members(n_retain: usize, n_test: usize, seed: u64) -> Vec<usize> {
    let mut idx = rand::seq::index::sample(&mut StdRng::seed_from_u64(seed), n_retain, n_test.min(n_retain)).into_vec();
    idx.sort_unstable();
    idx
}

fn array(m: &FeatureMatrix, what: &str) -> Result<Array2<f64>> {
    Array2::from_shape_vec((m.rows(), m.width), m.values.clone())
        .map_err(|e| Error::msg(format!("MIA {what} features: {e}")))
}

/// Trains the attack on `members` vs `nonmembers` and scores `targets` (all of one width).
pub fn attack(members: &FeatureMatrix, nonmembers: &FeatureMatrix, targets: &FeatureMatrix) -> Result<MiaScore> {
    let width = members.width;
    if width == 0 || nonmembers.width != width || targets.width != width {
        return Err(Error::msg(format!(
            "MIA: feature widths differ (members {width}, non-members {}, targets {})",
            nonmembers.width, targets.width
        )));
    }
    if members.rows() == 0 || nonmembers.rows() == 0 {
        return Err(Error::msg("MIA: needs at least one member (retain) and one non-member (test) sample"));
    }
    if let Some(v) = [members, nonmembers, targets].iter().flat_map(|m| m.values.iter()).find(|v| !v.is_finite()) {
        return Err(Error::msg(format!("MIA: non-finite feature value {v}")));
    }
    let mut x = members.values.clone();
    x.extend_from_slice(&nonmembers.values);
    let train = FeatureMatrix { width, values: x };
    let y: Array1<bool> = (0..train.rows()).map(|i| i < members.rows()).collect();
    let data = linfa::Dataset::new(array(&train, "training")?, y.clone());
    // linfa's Gaussian kernel is exp(−‖x−x′‖²/eps), so eps = 1/γ = n_features.
    let svm = Svm::<f64, bool>::params()
        .pos_neg_weights(C, C)
        .gaussian_kernel(width as f64)
        .eps(TOLERANCE)
        .fit(&data)
        .map_err(|e| Error::msg(format!("MIA: the SVM did not train: {e}")))?;
    let seen: Array1<bool> = svm.predict(data.records());
    let hits = seen.iter().zip(y.iter()).filter(|(a, b)| a == b).count();
    let attack_accuracy = 100.0 * hits as f64 / y.len() as f64;
    let efficacy = if targets.rows() == 0 {
        0.0
    } else {
        let said: Array1<bool> = svm.predict(&array(targets, "target")?);
        100.0 * said.iter().filter(|&&member| !member).count() as f64 / said.len() as f64
    };
    Ok(MiaScore { efficacy, attack_accuracy })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn col(v: Vec<f64>) -> FeatureMatrix {
        FeatureMatrix { width: 1, values: v }
    }

    fn uniform(n: usize, lo: f64, hi: f64, seed: u64) -> Vec<f64> {
        let mut r = StdRng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(lo..hi)).collect()
    }

    #[test]
    fn separable_confidences_give_full_efficacy_for_unseen_like_targets() {
        // Members are confident (as training data is), non-members are not.
        let members = col(uniform(200, 0.9, 1.0, 1));
        let nonmembers = col(uniform(200, 0.1, 0.5, 2));
        let s = attack(&members, &nonmembers, &col(uniform(100, 0.1, 0.5, 3))).unwrap();
        assert!(s.attack_accuracy > 99.0, "{s:?}");
        assert!(s.efficacy > 99.0, "{s:?}");
        // Targets that look like training data are called members: efficacy ~0.
        let s = attack(&members, &nonmembers, &col(uniform(100, 0.9, 1.0, 4))).unwrap();
        assert!(s.efficacy < 1.0, "{s:?}");
    }

    #[test]
    fn identical_sets_leave_the_attack_at_chance() {
        // Every value appears once as member and once as non-member: no decision can beat 50%.
        let v = uniform(150, 0.0, 1.0, 5);
        let s = attack(&col(v.clone()), &col(v.clone()), &col(v)).unwrap();
        assert!((s.attack_accuracy - 50.0).abs() < 1e-9, "{s:?}");
    }

    #[test]
    fn same_distribution_sets_stay_near_chance() {
        let members = col(uniform(300, 0.0, 1.0, 6));
        let nonmembers = col(uniform(300, 0.0, 1.0, 7));
        let s = attack(&members, &nonmembers, &col(uniform(300, 0.0, 1.0, 8))).unwrap();
        // C = 3 and γ = 1 keep the RBF boundary smooth: it cannot memorise 600 random points.
        assert!(s.attack_accuracy < 65.0, "{s:?}");
        assert!(s.efficacy > 15.0 && s.efficacy < 85.0, "{s:?}");
    }

    #[test]
    fn probability_vectors_work_as_features() {
        // Two-column features: members peaked on column 0, non-members flat.
        let m: Vec<f64> = uniform(100, 0.9, 1.0, 9).into_iter().flat_map(|p| [p, 1.0 - p]).collect();
        let n: Vec<f64> = uniform(100, 0.4, 0.6, 10).into_iter().flat_map(|p| [p, 1.0 - p]).collect();
        let f = |v: Vec<f64>| FeatureMatrix { width: 2, values: v };
        let s = attack(&f(m), &f(n.clone()), &f(n)).unwrap();
        assert!(s.efficacy > 99.0 && s.attack_accuracy > 99.0, "{s:?}");
    }

    #[test]
    fn members_are_a_seeded_sorted_subset() {
        let a = pick_members(1000, 100, 3);
        assert_eq!(a, pick_members(1000, 100, 3));
        assert_ne!(a, pick_members(1000, 100, 4));
        assert_eq!(a.len(), 100);
        assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 1000);
        assert_eq!(pick_members(5, 100, 0), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        assert!(attack(&col(vec![]), &col(vec![0.5]), &col(vec![0.5])).is_err());
        assert!(attack(&col(vec![0.5]), &col(vec![f64::NAN]), &col(vec![0.5])).is_err());
        let wide = FeatureMatrix { width: 2, values: vec![0.5, 0.5] };
        assert!(attack(&col(vec![0.5]), &col(vec![0.1]), &wide).is_err());
        assert_eq!(attack(&col(vec![0.9]), &col(vec![0.1]), &col(vec![])).unwrap().efficacy, 0.0);
    }
}

//! The protocol on hand-made probability tables with known answers.
use super::*;

/// A 3-class row that puts `p` on class `c` and splits the rest evenly.
fn row(c: usize, p: f32) -> Vec<f32> {
    let mut r = vec![(1.0 - p) / 2.0; 3];
    r[c] = p;
    r
}

/// Rows predicting `pred[i]` with confidence `p`, labelled `labels[i]`.
fn table(pred: &[usize], p: f32) -> ProbTable {
    ProbTable::from_rows(&pred.iter().map(|&c| row(c, p)).collect::<Vec<_>>()).unwrap()
}

fn split<'a>(t: &'a ProbTable, y: &'a [i64]) -> Split<'a> {
    Split { probs: t, labels: y }
}

#[test]
fn random_forgetting_scores_are_exact_accuracies() {
    let (f, fy) = (table(&[0, 1, 1, 2], 0.8), [0, 0, 2, 1]); // 1 of 4 right
    let (r, ry) = (table(&[0, 1, 2, 0, 1], 0.9), [0, 1, 2, 0, 2]); // 4 of 5 right
    let (t, ty) = (table(&[2, 1, 0, 0], 0.7), [2, 1, 0, 1]); // 3 of 4 right
    let e = evaluate_tables(split(&f, &fy), split(&r, &ry), split(&t, &ty), &EvalOptions::default()).unwrap();
    assert_eq!((e.metrics.ua, e.metrics.ra, e.metrics.ta), (75.0, 80.0, 75.0));
    assert_eq!(e.forget_classes, None);
    assert_eq!(e.forget_class_test_accuracy, None);
    assert_eq!(e.test_accuracy_all, 75.0);
    assert_eq!(e.samples, Samples { forget: 4, retain: 5, test: 4, mia_members: 4 });
    assert_eq!(e.metrics.mia, e.mia_features.confidence);
    for f in Feature::ALL {
        assert!((0.0..=100.0).contains(&e.mia_features.get(f)), "{f:?}: {e:?}");
    }
}

#[test]
fn class_forgetting_moves_the_forgotten_class_out_of_ta() {
    // D_f is all class 2 and D_r has none: class forgetting is detected.
    let (f, fy) = (table(&[2, 2, 0], 0.9), [2, 2, 2]);
    let (r, ry) = (table(&[0, 1, 1], 0.9), [0, 1, 0]);
    let (t, ty) = (table(&[2, 0, 0, 1, 1, 0], 0.6), [2, 2, 0, 1, 1, 1]);
    let e = evaluate_tables(split(&f, &fy), split(&r, &ry), split(&t, &ty), &EvalOptions::default()).unwrap();
    assert_eq!(e.forget_classes, Some(vec![2]));
    assert!((e.metrics.ua - 100.0 / 3.0).abs() < 1e-9);
    assert!((e.metrics.ra - 200.0 / 3.0).abs() < 1e-9);
    assert_eq!(e.metrics.ta, 75.0); // other classes: 3 of 4
    assert_eq!(e.forget_class_test_accuracy, Some(50.0)); // class 2: 1 of 2
    assert!((e.test_accuracy_all - 400.0 / 6.0).abs() < 1e-9);
    assert_eq!((e.samples.test, e.samples.mia_members), (4, 3));

    // Asking for random forgetting (no class) keeps the whole test set.
    let opts = EvalOptions { forget_classes: Some(vec![]), ..Default::default() };
    let e = evaluate_tables(split(&f, &fy), split(&r, &ry), split(&t, &ty), &opts).unwrap();
    assert_eq!((e.forget_classes.clone(), e.samples.test), (None, 6));
    assert!((e.metrics.ta - 400.0 / 6.0).abs() < 1e-9);
}

#[test]
fn class_detection_needs_one_class_absent_from_retain() {
    assert_eq!(forget_classes(None, &[3, 3], &[0, 1]), Some(vec![3]));
    assert_eq!(forget_classes(None, &[3, 3], &[0, 3]), None);
    assert_eq!(forget_classes(None, &[3, 4], &[0, 1]), None);
    assert_eq!(forget_classes(None, &[], &[0]), None);
    assert_eq!(forget_classes(Some(&[5, 1, 5]), &[3], &[3]), Some(vec![1, 5]));
}

/// n rows of class `c` (labelled `c`) whose true-label confidence runs evenly over [lo, hi).
fn ramp(n: usize, c: usize, lo: f32, hi: f32) -> (ProbTable, Vec<i64>) {
    let rows: Vec<Vec<f32>> = (0..n).map(|i| row(c, lo + (hi - lo) * i as f32 / n as f32)).collect();
    (ProbTable::from_rows(&rows).unwrap(), vec![c as i64; n])
}

#[test]
fn mia_calls_unseen_looking_forget_data_non_member() {
    let (r, ry) = ramp(200, 0, 0.95, 1.0); // training data: near-certain
    let (t, ty) = ramp(100, 1, 0.4, 0.7); // unseen data: unsure
    let opts = EvalOptions { forget_classes: Some(vec![]), ..Default::default() };
    let (f, fy) = ramp(50, 2, 0.4, 0.7); // forgotten well: looks unseen
    let e = evaluate_tables(split(&f, &fy), split(&r, &ry), split(&t, &ty), &opts).unwrap();
    assert!(e.metrics.mia > 99.0 && e.mia_attack_accuracy.confidence > 99.0, "{e:?}");
    let (f, fy) = ramp(50, 2, 0.95, 1.0); // not forgotten: looks like training data
    let e = evaluate_tables(split(&f, &fy), split(&r, &ry), split(&t, &ty), &opts).unwrap();
    assert!(e.metrics.mia < 1.0, "{e:?}");
    // Every prediction is right in both sets, so correctness cannot tell them apart.
    assert!((e.mia_attack_accuracy.correctness - 50.0).abs() < 1e-9, "{e:?}");
}

#[test]
fn avg_gap_is_the_mean_absolute_difference() {
    let a = Metrics { ua: 10.0, ra: 90.0, ta: 80.0, mia: 20.0 };
    let b = Metrics { ua: 20.0, ra: 100.0, ta: 70.0, mia: 20.0 };
    assert_eq!(avg_gap(&a, &b), 7.5);
    assert_eq!(avg_gap(&a, &a), 0.0);
}

#[test]
fn unusable_inputs_are_named_errors() {
    let (a, ay) = (table(&[0, 1], 0.9), [0i64, 1]);
    let two = ProbTable::from_rows(&[vec![0.5, 0.5]]).unwrap();
    let o = EvalOptions::default();
    let err = evaluate_tables(split(&a, &ay), split(&a, &ay), split(&two, &[0]), &o).unwrap_err().to_string();
    assert!(err.contains("class count"), "{err}");
    let empty = ProbTable::new(3, vec![]).unwrap();
    let err = evaluate_tables(split(&a, &ay), split(&a, &ay), split(&empty, &[]), &o).unwrap_err().to_string();
    assert!(err.contains("D_t is empty"), "{err}");
    let only = EvalOptions { forget_classes: Some(vec![0, 1]), ..Default::default() };
    let err = evaluate_tables(split(&a, &ay), split(&a, &ay), split(&a, &ay), &only).unwrap_err().to_string();
    assert!(err.contains("no samples outside"), "{err}");
    let err = evaluate_tables(split(&a, &[0, 9]), split(&a, &ay), split(&a, &ay), &o).unwrap_err().to_string();
    assert!(err.contains("forget data") && err.contains("label 9"), "{err}");
}

//! `semu eval` as users run it on the digits fixture: the SalUn / SEMU metrics of the shipped model
//! and of one retrained without class 3, the JSON they are written to, and usage errors.
use serde_json::Value;
use std::path::PathBuf;
use std::process::{Command, Output};

fn fx(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs `semu eval` on a split of the digits fixture and returns its JSON and printed text.
fn eval(split: &str, extra: &[&str]) -> (Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("out/eval.json");
    let (f, r, t) = (fx(&format!("forget_{split}.npz")), fx(&format!("retain_{split}.npz")), fx("test.npz"));
    let m = fx("model.onnx");
    let mut args = vec!["eval", "--model", &m, "--forget", &f];
    args.extend(["--retain", &r, "--test", &t, "--device", "cpu", "--json", json.to_str().unwrap()]);
    args.extend(extra);
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    // Written atomically: the file is complete and no temporary is left beside it.
    let left: Vec<_> = std::fs::read_dir(json.parent().unwrap()).unwrap().collect();
    assert_eq!(left.len(), 1, "{left:?}");
    (serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap(), text(&o))
}

fn num(v: &Value, path: &[&str]) -> f64 {
    path.iter().fold(v, |v, k| &v[*k]).as_f64().unwrap_or_else(|| panic!("no number at {path:?} in {v:#}"))
}

#[test]
fn class_forgetting_against_the_retrained_model() {
    let retrained = fx("retrain_class3.onnx");
    let (v, out) = eval("class3", &["--retrained", &retrained]);
    for k in ["UA", "RA", "TA", "MIA"] {
        for m in [&v["metrics"], &v["retrained"]["metrics"]] {
            let x = m[k].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&x), "{k} = {x}");
        }
    }
    // The shipped model knows class 3: nothing forgotten, its forget data looks like training data.
    assert!(num(&v, &["metrics", "UA"]) < 2.0, "{v:#}");
    assert!(num(&v, &["metrics", "MIA"]) < 20.0, "{v:#}");
    assert!(num(&v, &["forget_class_test_accuracy"]) > 90.0, "{v:#}");
    // The retrained model never saw class 3: it gets it wrong, on training and test data alike.
    let r = &v["retrained"];
    assert!(num(r, &["metrics", "UA"]) > 90.0, "{v:#}");
    assert!(num(r, &["forget_class_test_accuracy"]) < 10.0, "{v:#}");
    assert!(num(r, &["metrics", "MIA"]) > 80.0, "{v:#}");
    // Both keep the other classes: TA is measured on them only (323 of the 360 test samples).
    assert_eq!(v["forget_classes"], serde_json::json!([3]));
    assert_eq!(v["samples"]["test"], 323);
    assert_eq!(v["samples"]["mia_members"], 323);
    for m in [&v["metrics"], &r["metrics"]] {
        assert!(m["RA"].as_f64().unwrap() > 95.0 && m["TA"].as_f64().unwrap() > 90.0, "{v:#}");
    }
    let gap = num(&v, &["avg_gap"]);
    let want: f64 = ["UA", "RA", "TA", "MIA"]
        .iter()
        .map(|k| (num(&v, &["metrics", k]) - num(r, &["metrics", k])).abs())
        .sum::<f64>()
        / 4.0;
    assert!(gap > 0.0 && (gap - want).abs() < 1e-9, "{gap} vs {want}");
    let features = v["mia_features"].as_object().unwrap();
    assert_eq!(features.len(), 5, "{features:?}");
    assert_eq!(num(&v, &["mia_features", "confidence"]), num(&v, &["metrics", "MIA"]));
    assert!(out.contains("Avg. Gap") && out.contains("class forgetting [3]"), "{out}");
}

#[test]
fn random_forgetting_without_a_reference_and_a_reproducible_mia() {
    let (v, out) = eval("random10", &["--seed", "7"]);
    assert!(v["forget_classes"].is_null(), "{v:#}");
    assert!(v.get("retrained").is_none() && v.get("avg_gap").is_none(), "{v:#}");
    assert_eq!(v["samples"]["test"], 360);
    assert_eq!(num(&v, &["metrics", "TA"]), num(&v, &["test_accuracy_all"]));
    assert!(out.contains("random-sample forgetting"), "{out}");
    // The same seed picks the same MIA members, so the same numbers come out.
    let (again, _) = eval("random10", &["--seed", "7"]);
    assert_eq!(v["mia_features"], again["mia_features"]);
}

#[test]
fn bad_usage_and_missing_files_are_reported() {
    let (m, f, t) = (fx("model.onnx"), fx("forget_class3.npz"), fx("test.npz"));
    let o = semu(&["eval", "--model", &m, "--forget", &f, "--retain", &f, "--test", &t, "--batch-size", "0"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = semu(&["eval", "--model", &m, "--forget", &f, "--retain", "/nonexistent/retain.npz", "--test", &t]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("/nonexistent/retain.npz"), "{}", text(&o));
    let o = semu(&["eval", "--model", &m, "--forget", &f, "--test", &t]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

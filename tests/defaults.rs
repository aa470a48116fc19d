//! The default settings, with no learning rate given: class forgetting on the digits fixture
//! lands within one point of retraining without remaining data, `--lr auto` is deterministic
//! and reported, sample forgetting stops at the held-out level, and `--objective rl` is still
//! the paper's recipe.
use std::path::{Path, PathBuf};
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

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// `semu unlearn` on the digits model with `args`; the output and report land in `dir`.
fn unlearn(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, serde_json::Value) {
    let (out, rep) = (dir.join(format!("{name}.onnx")), dir.join(format!("{name}.json")));
    let model = fx("model.onnx");
    let mut all = vec!["unlearn", "--model", &model, "--device", "cpu"];
    all.extend_from_slice(&["--out", out.to_str().unwrap(), "--report", rep.to_str().unwrap()]);
    all.extend_from_slice(args);
    let o = semu(&all);
    assert!(o.status.success(), "{}", text(&o));
    (out, json(&rep))
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(std::fs::read(p).unwrap()).iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn defaults_forget_class_3_within_one_point_of_retraining_and_say_how() {
    let dir = tempfile::tempdir().unwrap();
    let (forget, test) = (fx("forget_class3.npz"), fx("test.npz"));
    let (out, r) = unlearn(dir.path(), "a", &["--forget", &forget, "--test", &test]);
    assert_eq!(r["settings"]["objective"], "nearest");
    assert_eq!(r["settings"]["lr"], "auto");
    let choice = &r["lr_choice"];
    let tried = choice["tried"].as_array().unwrap();
    assert!(!tried.is_empty() && tried.last().unwrap()["reached"] == true, "{choice}");
    assert_eq!(choice["lr"], tried.last().unwrap()["lr"]);
    assert!(tried[..tried.len() - 1].iter().all(|t| t["reached"] == false), "the smallest rate that reaches it");
    assert!(r["forget_target"]["reason"].as_str().unwrap().contains("class forgetting (class 3)"));
    assert_eq!(r["forget_target"]["metric"], "accuracy");
    let share = r["trainable_share"].as_f64().unwrap();
    assert!(share <= 0.015, "trained share {share}");

    let ev = dir.path().join("eval.json");
    let o = semu(&[
        "eval",
        "--model",
        out.to_str().unwrap(),
        "--forget",
        &forget,
        "--retain",
        &fx("retain_class3.npz"),
        "--test",
        &test,
        "--retrained",
        &fx("retrain_class3.onnx"),
        "--json",
        ev.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let e = json(&ev);
    let gap = e["avg_gap"].as_f64().unwrap();
    println!("defaults, class 3, no remaining data: {} Avg. Gap {gap:.2}", e["metrics"]);
    assert!(gap <= 1.0, "Avg. Gap {gap} to retraining: {}", e["metrics"]);
    assert_eq!(e["metrics"]["UA"].as_f64().unwrap(), 100.0);
}

#[test]
fn lr_auto_is_deterministic_for_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--train", &*fx("train.npz"), "--forget-class", "5", "--test", &*fx("test.npz")];
    let (a, ra) = unlearn(dir.path(), "a", &args);
    let (b, rb) = unlearn(dir.path(), "b", &args);
    assert_eq!(sha256(&a), sha256(&b));
    assert_eq!(ra["lr_choice"], rb["lr_choice"]);
    assert_eq!(ra["epochs"].as_array().unwrap().len(), rb["epochs"].as_array().unwrap().len());
    // Class 5 from the training set: forgotten on the test data, the other classes kept.
    let t = &ra["test_accuracy"];
    assert_eq!(t["on_forget_class"]["after"].as_f64().unwrap(), 0.0, "{t}");
    let (before, after) =
        (t["on_other_classes"]["before"].as_f64().unwrap(), t["on_other_classes"]["after"].as_f64().unwrap());
    assert!(after >= before - 0.01, "other classes {before} → {after}");
}

#[test]
fn sample_forgetting_stops_at_the_held_out_loss() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) = unlearn(dir.path(), "r", &["--forget", &fx("forget_random10.npz"), "--test", &fx("test.npz")]);
    let t = &r["forget_target"];
    assert_eq!(t["metric"], "loss", "{t}");
    let epochs = r["epochs"].as_array().unwrap();
    let last = epochs.last().unwrap();
    let target = t["value"].as_f64().unwrap();
    assert!(last["forget_loss"].as_f64().unwrap() >= target, "{last} vs target {target}");
    for e in &epochs[..epochs.len() - 1] {
        assert!(e["forget_loss"].as_f64().unwrap() < target, "stops at the first epoch that reaches it: {e}");
    }
    // The held-out level is reached without damage: the test accuracy moves by under a point.
    let all = &r["test_accuracy"]["all"];
    assert!((all["after"].as_f64().unwrap() - all["before"].as_f64().unwrap()).abs() < 0.01, "{all}");
}

#[test]
fn objective_rl_is_the_papers_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let (_, r) =
        unlearn(dir.path(), "rl", &["--forget", &fx("forget_class3.npz"), "--objective", "rl", "--epochs", "1"]);
    let s = &r["settings"];
    assert_eq!((s["objective"].as_str(), s["lr"].as_f64(), s["gamma"].as_f64()), (Some("rl"), Some(0.01), Some(0.9)));
    assert_eq!(s["stop_at_target"], false);
    assert!(r.get("lr_choice").is_none() && r.get("forget_target").is_none(), "{r}");
}

#[test]
fn a_bad_lr_is_a_usage_error() {
    let o = semu(&["unlearn", "--model", &fx("model.onnx"), "--forget", &fx("forget_class3.npz"), "--lr", "fast"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("`auto`"), "{}", text(&o));
}

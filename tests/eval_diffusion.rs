//! `semu eval --task diffusion` on the DDPM fixture (tools/make_ddpm.py), small (10 per class,
//! 10 DDIM steps): the original model makes 3s and the twin retrained without class 3 does not,
//! models in one run share their starting noise, a seed fixes the numbers, a judge that is no
//! classifier is refused by name.
use semu::onnx::{build, DType};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

fn fx(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ddpm").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_ddpm.py)", p.display());
    p.to_str().unwrap().to_string()
}

/// `semu eval` of the fixture's model; 10 samples per class, 10 DDIM steps and forget class 3
/// unless `extra` sets them.
fn eval(extra: &[&str]) -> Output {
    let mut args = vec!["eval".to_string(), "--model".into(), fx("model.onnx"), "--device".into(), "cpu".into()];
    for (flag, default) in [("--forget-class", "3"), ("--n", "10"), ("--steps", "10")] {
        if !extra.contains(&flag) {
            args.extend([flag.into(), default.into()]);
        }
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Command::new(env!("CARGO_BIN_EXE_semu")).args(&args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn num(v: &Value, role: &str, key: &str) -> f64 {
    v[role][key].as_f64().unwrap_or_else(|| panic!("{role}.{key} in {v}"))
}

/// A model's figures without its timings.
fn figures(v: &Value, role: &str) -> Value {
    let mut f = v[role].clone();
    let m = f.as_object_mut().unwrap();
    m.retain(|k, _| !k.ends_with("_seconds") && k != "path");
    f
}

#[test]
fn original_makes_threes_and_the_retrained_twin_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("e.json"), dir.path().join("report"));
    let (judge, test, model, twin) = (fx("judge.onnx"), fx("test.npz"), fx("model.onnx"), fx("retrain_class3.onnx"));
    let o = eval(&[
        "--judge",
        &judge,
        "--test",
        &test,
        "--original",
        &model,
        "--retrained",
        &twin,
        "--json",
        out.to_str().unwrap(),
        "--report-dir",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v = json(&out);
    println!("{}", text(&o));
    assert!(num(&v, "model", "forget_rate") >= 0.8, "{v}");
    assert!(num(&v, "model", "other_accuracy") >= 0.8, "{v}");
    assert!(num(&v, "retrained", "forget_rate") <= 0.2, "{v}");
    let fd = num(&v, "model", "fd_other");
    assert!(fd.is_finite() && fd > 0.0, "FD-other {fd}");
    let went: u64 = v["retrained"]["forget_judged_as"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).sum();
    assert_eq!(went, 10, "every class-3 sample gets a label");
    assert_eq!(v["real_images_other"], 360 - 37, "the test set's images of classes other than 3");
    // --original is the same file: the same x_T sample by sample gives the same figures.
    assert_eq!(figures(&v, "model"), figures(&v, "original"));
    for f in ["report.md", "samples_model.png", "samples_original.png", "samples_retrained.png"] {
        assert!(report.join(f).is_file(), "{f} missing from the report folder");
    }

    // The same seed in a new run: the same numbers; another seed: other samples.
    let again = dir.path().join("again.json");
    let o = eval(&["--judge", &judge, "--test", &test, "--json", again.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(figures(&json(&again), "model"), figures(&v, "model"));
    let other = dir.path().join("other.json");
    let o = eval(&["--judge", &judge, "--test", &test, "--seed", "1", "--json", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_ne!(num(&json(&other), "model", "fd_other"), fd);
}

#[test]
fn bad_judges_and_flags_are_refused_by_name() {
    let judge = fx("judge.onnx");
    // The ε-network as judge: three inputs, not one image.
    let bad = fx("model.onnx");
    let o = eval(&["--judge", &bad]);
    let msg = text(&o);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{msg}");
    assert!(msg.contains(&bad) && msg.contains("judge") && !msg.contains("panicked"), "{msg}");
    // A graph of one image input whose first output is [batch, 64], not [batch, 10] logits.
    let (_dir, flat) = build::write(
        vec![build::node("Flatten", &["input"], &["flat"])],
        vec![],
        vec![build::value("input", DType::F32, &[-1, 1, 8, 8])],
        vec![build::value("flat", DType::F32, &[-1, 64])],
        17,
    );
    let flat = flat.to_str().unwrap();
    let o = eval(&["--judge", flat]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains(flat) && text(&o).contains("[batch, 10] class logits"), "{}", text(&o));
    let o = eval(&["--judge", &judge, "--judge-features", "logits"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("logits output"), "{}", text(&o));
    for (flags, says) in [
        (&["--forget-class", "10"][..], "--forget-class 10"),
        (&["--n", "0"][..], "--n 0"),
        (&["--eta", "2"][..], "--eta 2"),
        (&["--forget", &judge][..], "--forget"),
    ] {
        let mut args = vec!["--judge", &judge];
        args.extend(flags);
        let o = eval(&args);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {}", text(&o));
        assert!(text(&o).contains(says), "{flags:?}: {}", text(&o));
    }
    let o = eval(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--judge"), "{}", text(&o));
}

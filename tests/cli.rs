//! The `semu` binary as users run it: inspect, run, unlearn; exit codes; atomic outputs.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn fx(p: &str) -> String {
    root().join("fixtures").join(p).display().to_string()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn inspect_lists_adaptable_weights_as_json() {
    let o = semu(&["inspect", &fx("digits/model.onnx"), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["adaptable"].as_array().unwrap().len(), 5);
    assert_eq!(v["unsupported_ops"].as_array().unwrap().len(), 0);
    assert_eq!(v["summary"]["opsets"]["ai.onnx"], 17);
    assert_eq!(v["summary"]["inputs"][0]["name"], "input");
}

#[test]
fn run_writes_outputs_and_agrees_with_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let x = tch::Tensor::read_npz(fx("digits/test.npz")).unwrap().into_iter().find(|(n, _)| n == "x").unwrap().1;
    let xp = dir.path().join("x.npy");
    x.narrow(0, 0, 20).write_npy(&xp).unwrap();
    let out = dir.path().join("out");
    let o = semu(&[
        "run",
        &fx("digits/model.onnx"),
        "--input",
        &format!("input={}", xp.display()),
        "--output-dir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--compare-ort",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let y = tch::Tensor::read_npy(out.join("logits.npy")).unwrap();
    assert_eq!(y.size(), vec![20, 10]);
    assert!(text(&o).contains("max abs"), "{}", text(&o));
    // A missing input is named, with the flag to pass it.
    let o = semu(&["run", &fx("digits/model.onnx")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--input input=FILE.npy"), "{}", text(&o));
}

fn unlearn_args<'a>(out: &'a str, extra: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["unlearn", "--model", &fx("digits/model.onnx"), "--forget", &fx("digits/forget_class3.npz")]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.extend(["--out", out, "--lr", "0.001", "--gamma", "0.6", "--epochs", "3", "--device", "cpu"].map(String::from));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run_semu(args: &[String]) -> Output {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    semu(&refs)
}

#[test]
fn unlearn_writes_a_verified_model_and_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("forgot.onnx");
    let report = dir.path().join("r.json");
    let o = run_semu(&unlearn_args(
        out.to_str().unwrap(),
        &["--report", report.to_str().unwrap(), "--test", &fx("digits/test.npz")],
    ));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("verified    passed"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verified"], true);
    assert_eq!(r["used_retain_data"], false);
    assert_eq!(r["settings"]["alpha"], 0.0, "no remaining data means alpha = 0");
    assert_eq!(r["layers"].as_array().unwrap().len(), 5);
    for key in ["k", "trainable", "share_of_parameters", "explained_variance", "shape", "name"] {
        assert!(r["layers"][0].get(key).is_some(), "layer report lacks {key}");
    }
    for key in ["gradient", "svd", "training", "fold", "export", "verify"] {
        assert!(r["timings"][key].as_f64().is_some(), "timing {key}");
    }
    let sha = semu::report::sha256_file(&out).unwrap();
    assert_eq!(r["sha256"]["output"], sha.as_str());
    assert_eq!(r["sha256"]["model"], semu::report::sha256_file(Path::new(&fx("digits/model.onnx"))).unwrap().as_str());
    assert!(r["forget_accuracy"]["after"].as_f64().unwrap() < r["forget_accuracy"]["before"].as_f64().unwrap());
    assert!(r["verification"]["rows"].as_array().unwrap().iter().any(|row| row["runtime"] == "onnxruntime"));
    // Only the output, the report: no staging leftovers.
    let names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn failed_verification_exits_3_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("forgot.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(unlearn_args(out.to_str().unwrap(), &[]))
        .env("SEMU_FAULT_TAMPER_EXPORT", "1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("verification failed, nothing written"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing at OUT, no staging leftovers");
}

#[test]
fn external_data_models_are_written_with_external_data_beside_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("forgot.onnx");
    let mut args = unlearn_args(out.to_str().unwrap(), &[]);
    args[2] = fx("external/single/model.onnx");
    let o = run_semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("model.onnx.data").exists());
    let m = semu::onnx::OnnxModel::load(&out).unwrap();
    assert!(m.graph().initializer.iter().all(|t| t.raw_data.is_none() && !t.external_data.is_empty()));
}

#[test]
fn bad_input_gets_clear_errors_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let out = out.to_str().unwrap();
    // Usage errors exit 2.
    let o = run_semu(&unlearn_args(out, &["--gamma", "1.5"]));
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("gamma"), "{}", text(&o));
    let o = semu(&["unlearn", "--model", "x.onnx"]);
    assert_eq!(o.status.code(), Some(2));
    // Labels outside the model's classes name the file and the sample.
    let bad = dir.path().join("bad.npz");
    let x = tch::Tensor::zeros([4, 1, 8, 8], (tch::Kind::Float, tch::Device::Cpu));
    let y = tch::Tensor::from_slice(&[1i64, 2, 17, 3]);
    tch::Tensor::write_npz(&[("x", x), ("y", y)], &bad).unwrap();
    let mut args = unlearn_args(out, &[]);
    args[4] = bad.display().to_string();
    let o = run_semu(&args);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(t.contains("bad.npz") && t.contains("sample 2") && t.contains("17"), "{t}");
    // A missing model names the file.
    let mut args = unlearn_args(out, &[]);
    args[2] = "/nonexistent/model.onnx".into();
    let o = run_semu(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("/nonexistent/model.onnx"), "{}", text(&o));
    assert!(!Path::new(out).exists());
}

#[test]
fn config_file_sets_values_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "gamma = 0.6\nlr = 0.001\nepochs = 2\nseed = 7\ndevice = \"cpu\"\n").unwrap();
    let out = dir.path().join("o.onnx");
    let report = dir.path().join("r.json");
    let o = semu(&[
        "unlearn",
        "--model",
        &fx("digits/model.onnx"),
        "--forget",
        &fx("digits/forget_class3.npz"),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        "--epochs",
        "3",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["settings"]["gamma"], 0.6);
    assert_eq!(r["settings"]["seed"], 7);
    assert_eq!(r["settings"]["epochs"], 3, "the flag overrides the file");
    assert_eq!(r["device"], "cpu");
    std::fs::write(&cfg, "gama = 0.6\n").unwrap();
    let o = semu(&[
        "unlearn",
        "--model",
        &fx("digits/model.onnx"),
        "--forget",
        &fx("digits/forget_class3.npz"),
        "--out",
        out.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown field `gama`"), "{}", text(&o));
}

#[test]
fn run_writes_a_sequence_output_item_by_item() {
    use semu::onnx::build::{node, value, write};
    use semu::onnx::DType;
    let (_m, model) = write(
        vec![node("SplitToSequence", &["x"], &["parts"])],
        vec![],
        vec![value("x", DType::F32, &[3, 2])],
        vec![value("parts", DType::F32, &[1, 2])],
        13,
    );
    let dir = tempfile::tempdir().unwrap();
    let xp = dir.path().join("x.npy");
    tch::Tensor::from_slice(&[1f32, 2., 3., 4., 5., 6.]).reshape([3, 2]).write_npy(&xp).unwrap();
    let out = dir.path().join("out");
    let o = semu(&[
        "run",
        model.to_str().unwrap(),
        "--input",
        &format!("x={}", xp.display()),
        "--output-dir",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("parts: sequence of 3"), "{}", text(&o));
    for i in 0..3 {
        let t = tch::Tensor::read_npy(out.join(format!("parts.{i}.npy"))).unwrap();
        assert_eq!(t.size(), vec![1, 2]);
        assert_eq!(Vec::<f32>::try_from(t.reshape([-1])).unwrap(), vec![2. * i as f32 + 1., 2. * i as f32 + 2.]);
    }
    let out2 = dir.path().join("out2");
    let (x, o2) = (format!("x={}", xp.display()), out2.to_str().unwrap());
    let o = semu(&["run", model.to_str().unwrap(), "--input", &x, "--output-dir", o2, "--compare-ort"]);
    assert!(!o.status.success() && text(&o).contains("tensor outputs only"), "{}", text(&o));
    assert!(!out2.exists(), "nothing is written when the comparison cannot run");
}

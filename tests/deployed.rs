//! Deployed models as their deployment pipeline leaves them (fixtures/deployed, made by
//! tools/make_deployed.py with onnxruntime's quantizers): unlearned in their own format.
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fx(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p).display().to_string()
}

fn semu_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semu"));
    c.args(args).current_dir(std::env::temp_dir());
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `semu unlearn ARGS --out DIR/out.onnx --report DIR/report.json`: (output, report if written).
fn unlearn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Output, Option<serde_json::Value>) {
    let (out, rep) = (dir.join("out.onnx"), dir.join("report.json"));
    let mut all = vec!["unlearn", "--out", out.to_str().unwrap(), "--report", rep.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = semu_env(&all, env);
    assert!(!text(&o).contains("frame #"), "a libtorch backtrace reached the user:\n{}", text(&o));
    let r = rep.exists().then(|| serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap());
    (o, r)
}

fn op_counts(m: &OnnxModel) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &m.graph().node {
        *c.entry(format!("{}:{}", n.domain(), n.op_type())).or_default() += 1;
    }
    c
}

/// The export keeps the input's graph and every initializer's type and shape; the scales and
/// zero points (every float or rank < 2 tensor of a quantized weight's node) keep their bytes;
/// returns how many of `weights` (integer initializers) changed.
fn same_format(input: &OnnxModel, out: &OnnxModel, weights: &[&str]) -> usize {
    assert_eq!(op_counts(input), op_counts(out), "the export has the input's ops");
    let mut changed = 0;
    for t in &input.graph().initializer {
        let o = out.initializer(t.name()).unwrap_or_else(|| panic!("{} is in the export", t.name()));
        assert_eq!((o.data_type(), &o.dims), (t.data_type(), &t.dims), "{} keeps its type and shape", t.name());
        let same = input.tensor(t).unwrap() == out.tensor(o).unwrap();
        if weights.contains(&t.name()) {
            changed += usize::from(!same);
        } else if t.data_type() != 1 || t.dims.len() < 2 {
            // Scales and zero points (and biases) are the file's own.
            assert!(same, "{} is unchanged", t.name());
        }
    }
    changed
}

fn layer_names(r: &serde_json::Value) -> Vec<String> {
    r["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_qdq_model_unlearns_and_stays_qdq_with_its_scales() {
    let dir = tempfile::tempdir().unwrap();
    let model = fx("deployed/digits_qdq_pc.onnx");
    let (forget, test) = (fx("digits/forget_class3.npz"), fx("digits/test.npz"));
    let (o, r) = unlearn(dir.path(), &["--model", &model, "--forget", &forget, "--test", &test], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r = r.unwrap();
    assert_eq!(r["verified"], true);
    assert_eq!(r["forget_accuracy"]["after"].as_f64().unwrap(), 0.0, "class 3 forgotten");
    assert!(r["test_accuracy"]["on_other_classes"]["after"].as_f64().unwrap() > 0.97);
    let q = &r["quantization"];
    assert_eq!(q["weights"].as_u64().unwrap() as usize, r["layers"].as_array().unwrap().len());
    assert!(q["changed_integers"].as_i64().unwrap() > 0);
    assert_eq!(q["formats"][0], "i8 per channel (axis 0)");
    let (input, out) = (OnnxModel::load(&model).unwrap(), OnnxModel::load(dir.path().join("out.onnx")).unwrap());
    let names = layer_names(&r);
    let changed = same_format(&input, &out, &names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(changed >= 1, "the integer weights changed");
    for n in &names {
        assert_eq!(out.initializer(n).unwrap().data_type(), 3, "{n} is still int8");
    }
    // The engine on the export computes what training saw (the fold adds no rounding there).
    let rows = r["verification"]["rows"].as_array().unwrap();
    let folded = rows.iter().find(|x| x["runtime"] == "engine (folded file)").unwrap();
    assert_eq!(folded["max_abs"].as_f64().unwrap(), 0.0, "{folded}");
}

#[test]
fn a_tampered_quantized_export_fails_the_gate_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let model = fx("deployed/digits_qdq.onnx");
    let (forget, test) = (fx("digits/forget_class3.npz"), fx("digits/test.npz"));
    let args = ["--model", &model, "--forget", &forget, "--test", &test, "--epochs", "2", "--lr", "3e-4"];
    let (o, r) = unlearn(dir.path(), &args, &[("SEMU_FAULT_TAMPER_EXPORT", "zero")]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert_eq!(r.unwrap()["verified"], false);
    assert!(!dir.path().join("out.onnx").exists());
}

#[test]
fn a_4bit_matmulnbits_model_unlearns_and_stays_packed() {
    let dir = tempfile::tempdir().unwrap();
    let model = fx("deployed/text_cls_nbits.onnx");
    let (train, test, tok) = (fx("text_cls/train.jsonl"), fx("text_cls/test.jsonl"), fx("text_cls/tokenizer.json"));
    let args = ["--model", &model, "--tokenizer", &tok, "--train", &train, "--forget-class", "4", "--test", &test];
    let (o, r) = unlearn(dir.path(), &args, &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r = r.unwrap();
    assert_eq!(r["verified"], true);
    assert_eq!(r["forget_accuracy"]["after"].as_f64().unwrap(), 0.0);
    let q = &r["quantization"];
    assert_eq!(q["formats"][0], "u4 MatMulNBits blocks of 32");
    assert!(q["weights"].as_u64().unwrap() >= 1);
    let (input, out) = (OnnxModel::load(&model).unwrap(), OnnxModel::load(dir.path().join("out.onnx")).unwrap());
    let names = layer_names(&r);
    same_format(&input, &out, &names.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(op_counts(&out)["com.microsoft:MatMulNBits"] >= 1);
}

#[test]
fn an_unlearning_patch_of_a_quantized_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("p.safetensors");
    let args = [
        "--model",
        &fx("deployed/digits_qdq.onnx"),
        "--forget",
        &fx("digits/forget_class3.npz"),
        "--out-patch",
        patch.to_str().unwrap(),
    ];
    let (o, _) = unlearn(dir.path(), &args, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("quantized"), "{}", text(&o));
    assert!(!patch.exists() && !dir.path().join("out.onnx").exists());
}

//! The unlearning patch: `semu patch apply` re-creates `semu unlearn`'s output byte for byte
//! (f32 and f16 weights, inline and external data), `revert` comes back within rounding, the
//! patch is small and self-describing, and the run report is an audit record.
use semu::onnx::OnnxModel;
use semu::patch::Patch;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn fx(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// One CPU unlearning run of `model` with --out-patch and --report, shared by the tests.
struct Run {
    _dir: tempfile::TempDir,
    out: PathBuf,
    patch: PathBuf,
    report: PathBuf,
}

fn unlearn(model: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (out, patch, report) = (p("forgot.onnx"), p("forget.patch.safetensors"), p("report.json"));
    let s = |p: &Path| p.display().to_string();
    let o = semu(&[
        "unlearn",
        "--model",
        &fx(model),
        "--forget",
        &fx("digits/forget_class3.npz"),
        "--epochs",
        "2",
        "--lr",
        "0.001",
        "--gamma",
        "0.6",
        "--device",
        "cpu",
        "--out",
        &s(&out),
        "--out-patch",
        &s(&patch),
        "--report",
        &s(&report),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    Run { _dir: dir, out, patch, report }
}

fn digits_run() -> &'static Run {
    static RUN: OnceLock<Run> = OnceLock::new();
    RUN.get_or_init(|| unlearn("digits/model.onnx"))
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn apply_recreates_the_unlearned_model_byte_for_byte() {
    let r = digits_run();
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.onnx");
    let o = semu(&[
        "patch",
        "apply",
        &fx("digits/model.onnx"),
        r.patch.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(same_bytes(&again, &r.out), "patch apply must give the exact bytes semu unlearn wrote");
    assert!(text(&o).contains("byte-identical to the unlearned export"), "{}", text(&o));

    // The same weights as external data: the output keeps the layout, with the same values.
    let ext = dir.path().join("ext/forgot.onnx");
    let o = semu(&[
        "patch",
        "apply",
        &fx("external/single/model.onnx"),
        r.patch.to_str().unwrap(),
        "--out",
        ext.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("ext/model.onnx.data").exists());
    let (a, b) = (OnnxModel::load(&ext).unwrap(), OnnxModel::load(&r.out).unwrap());
    for t in &b.graph().initializer {
        assert!(a.tensor(a.initializer(t.name()).unwrap()).unwrap() == b.tensor(t).unwrap(), "{}", t.name());
    }
}

#[test]
fn float16_weights_are_recreated_exactly_too() {
    let r = unlearn("digits_f16/model.onnx");
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("again.onnx");
    let o = semu(&[
        "patch",
        "apply",
        &fx("digits_f16/model.onnx"),
        r.patch.to_str().unwrap(),
        "--out",
        again.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(same_bytes(&again, &r.out));
    let p = Patch::read(&r.patch).unwrap();
    assert!(p.layers.iter().all(|l| l.info.dtype == "f16"));
}

#[test]
fn revert_comes_back_within_rounding_and_reports_the_error() {
    let r = digits_run();
    let dir = tempfile::tempdir().unwrap();
    let (back, rep) = (dir.path().join("back.onnx"), dir.path().join("revert.json"));
    let o = semu(&[
        "patch",
        "revert",
        r.out.to_str().unwrap(),
        r.patch.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
        "--original",
        &fx("digits/model.onnx"),
        "--report",
        rep.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("max error"), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    let errs = v["max_error"].as_array().unwrap();
    assert_eq!(errs.len(), 5);
    for e in errs {
        assert!(e["max_abs_error"].as_f64().unwrap() < 1e-6, "{e}");
    }
    assert_eq!(v["command"], "patch revert");
    assert_eq!(v["outputs"][0]["sha256"].as_str().unwrap().len(), 64);
    // Reverting something the patch did not produce is refused (the original model, here).
    let o = semu(&[
        "patch",
        "revert",
        &fx("digits/model.onnx"),
        r.patch.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("not the ones the patch produced"), "{}", text(&o));
}

#[test]
fn the_patch_is_small_and_describes_itself() {
    let r = digits_run();
    let size = std::fs::metadata(&r.patch).unwrap().len();
    let model = std::fs::metadata(fx("digits/model.onnx")).unwrap().len();
    assert!(size < 64 * 1024 && size * 10 < model, "patch {size} bytes, model {model}");
    let p = Patch::read(&r.patch).unwrap();
    let names: Vec<&str> = p.layers.iter().map(|l| l.info.name.as_str()).collect();
    assert_eq!(
        names,
        ["onnx::Conv_41", "onnx::Conv_44", "onnx::Conv_47", "classifier.1.weight", "classifier.3.weight"]
    );
    let fc = &p.layers[3];
    assert_eq!((fc.info.shape.clone(), fc.info.conv), (vec![64, 1024], false));
    assert_eq!(
        (fc.u.size(), fc.r.size(), fc.v.size()),
        (vec![64, fc.info.k as i64], vec![fc.info.k as i64; 2], vec![1024, fc.info.k as i64])
    );
    assert!(p.layers[0].info.conv);
    for k in ["semu.version", "semu.git_commit", "semu.model_sha256", "semu.forget_sha256"] {
        assert!(p.metadata.contains_key(k), "{k}");
    }
    let o = semu(&["patch", "show", r.patch.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["layers"][3]["k"], fc.info.k);
}

#[test]
fn apply_refuses_a_model_the_patch_was_not_made_from_unless_forced() {
    let r = digits_run();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let args = [
        "patch",
        "apply",
        &fx("digits/retrain_class3.onnx"),
        r.patch.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    let o = semu(&args);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("5 weight(s) are not the ones the patch was made from"), "{}", text(&o));
    assert!(!out.exists());
    let o = semu(&[&args[..], &["--force"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("DIFFERS from the patch's base"), "{}", text(&o));
}

#[test]
fn the_run_report_is_an_audit_record() {
    let r = digits_run();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&r.report).unwrap()).unwrap();
    let sha = |p: &Path| semu::report::sha256_file(p).unwrap();
    assert_eq!(v["sha256"]["patch"], sha(&r.patch).as_str());
    assert_eq!(v["sha256"]["output"], sha(&r.out).as_str());
    assert_eq!(v["sha256"]["model"], sha(Path::new(&fx("digits/model.onnx"))).as_str());
    let outputs: Vec<&str> =
        v["sha256"]["outputs"].as_array().unwrap().iter().map(|o| o["path"].as_str().unwrap()).collect();
    assert_eq!(outputs, [r.out.to_str().unwrap(), r.patch.to_str().unwrap()]);
    let commit = v["git_commit"].as_str().unwrap();
    assert!(commit == "unknown" || (commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{commit}");
    for k in ["started_at", "finished_at"] {
        let t = v[k].as_str().unwrap();
        assert!(t.len() >= 20 && &t[10..11] == "T" && t.ends_with('Z'), "{k}: {t}");
    }
    assert!(v["started_at"].as_str() <= v["finished_at"].as_str());
    assert_eq!(v["settings"]["seed"], 0);
    assert_eq!(v["device"], "cpu");
    assert!(v["verification"]["rows"].as_array().is_some_and(|r| !r.is_empty()));
    assert!(v["semu_version"].is_string() && v["forget_accuracy"]["after"].is_number());
}

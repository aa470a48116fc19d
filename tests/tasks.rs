//! The task layer: image classifiers unchanged to the byte, text classifiers with several int64
//! inputs, fixed-shape exports, causal language models, and the errors a user meets first.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fx(p: &str) -> String {
    root().join("fixtures").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The image-classifier runs whose exports were hashed with the binary built just before the
/// task layer (commit b08015b, this machine): name, then the arguments after `--out`.
fn image_runs() -> Vec<(&'static str, Vec<String>)> {
    let d = |f: &str| fx(&format!("digits/{f}"));
    let common = ["--seed", "0", "--device", "cpu", "--no-verify", "-q"];
    let mut runs = vec![
        ("semu", vec!["--forget".into(), d("forget_class3.npz"), "--lr".into(), "1e-3".into(), "--gamma".into(), "0.6".into(), "--epochs".into(), "3".into()]),
        ("semu_retain", vec!["--forget".into(), d("forget_class3.npz"), "--retain".into(), d("retain_class3.npz"), "--lr".into(), "5e-4".into(), "--gamma".into(), "0.6".into(), "--epochs".into(), "2".into()]),
        ("rl", vec!["--method".into(), "rl".into(), "--forget".into(), d("forget_random10.npz"), "--retain".into(), d("retain_random10.npz"), "--lr".into(), "1e-3".into(), "--epochs".into(), "2".into()]),
        ("ga", vec!["--method".into(), "ga".into(), "--forget".into(), d("forget_class3.npz"), "--lr".into(), "1e-4".into(), "--epochs".into(), "1".into()]),
    ];
    for (_, r) in &mut runs {
        r.extend(common.iter().map(|s| s.to_string()));
    }
    runs
}

#[test]
fn image_classifiers_give_the_same_bytes_as_before_the_task_layer() {
    let want: HashMap<String, String> = std::fs::read_to_string(root().join("tests/tasks_data/pre_task_layer.sha256"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(h, n)| (n.to_string(), h.to_string())))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in image_runs() {
        let out = dir.path().join(format!("{name}.onnx"));
        let mut all = vec!["unlearn".to_string(), "--model".into(), fx("digits/model.onnx"), "--out".into(), out.display().to_string()];
        all.extend(args);
        let o = semu(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{name}: {}", text(&o));
        assert_eq!(sha256(&out), want[&format!("{name}.onnx")], "{name}: the export's bytes changed");
    }
}

#[test]
fn two_nc_outputs_without_output_name_is_an_error_naming_both() {
    use semu::onnx::{build, DType, OnnxModel};
    let mut m = OnnxModel::load(fx("digits/model.onnx")).unwrap();
    let g = m.proto.graph.as_mut().unwrap();
    let first = g.output[0].name().to_string();
    g.node.push(build::node("Identity", &[&first], &["scores_copy"]));
    g.output.push(build::value("scores_copy", DType::F32, &[-1, 10]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.onnx");
    m.save(&path, &HashMap::new()).unwrap();
    let out = dir.path().join("out.onnx");
    let args = ["unlearn", "--model", path.to_str().unwrap(), "--forget", &fx("digits/forget_class3.npz")];
    let o = semu(&[&args[..], &["--out", out.to_str().unwrap(), "--epochs", "1"]].concat());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains(&first) && t.contains("scores_copy") && t.contains("--output-name"), "{t}");
    assert!(!out.exists());
    // Naming one of them works.
    let o = semu(&[&args[..], &["--out", out.to_str().unwrap(), "--epochs", "1", "--output-name", "scores_copy"]].concat());
    assert!(o.status.success(), "{}", text(&o));
}

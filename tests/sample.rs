//! `semu sample` on the diffusion fixture (tools/make_ddpm.py): samples look like the requested
//! class to the fixture's judge, a seed fixes the bytes, η = 0 matches the onnxruntime DDIM of
//! tools/ddpm_reference.py, and bad settings are usage errors that say what is missing.
use semu::data::npy::{read_npy, read_npz};
use semu::engine::{Plan, PlanOptions, Registry, Value};
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::Tensor;

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ddpm").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_ddpm.py)", p.display());
    p
}

fn sample(model: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["sample", "--model", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend(["--device", "cpu"]);
    args.extend(extra);
    Command::new(env!("CARGO_BIN_EXE_semu")).args(&args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn array(npz: &Path, name: &str) -> Tensor {
    read_npz(npz).unwrap().into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

#[test]
fn samples_are_judged_the_class_they_were_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npz");
    let grid = dir.path().join("grid.png");
    let o = sample(
        &fx("model.onnx"),
        &out,
        &["--classes", "0,3,7", "--n", "16", "--steps", "25", "--guidance", "2", "--grid", grid.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let (x, y) = (array(&out, "x"), array(&out, "y"));
    assert_eq!(x.size(), [48, 1, 8, 8]);
    assert!(x.min().double_value(&[]) >= -1.0 && x.max().double_value(&[]) <= 1.0, "x leaves [-1, 1]");
    assert!(std::fs::read(&grid).unwrap().starts_with(b"\x89PNG"), "the grid is not a PNG");

    // The judge reads images in [0, 1].
    let judge = OnnxModel::load(fx("judge.onnx")).unwrap();
    let plan = Plan::new(&judge, &Registry::standard(), &PlanOptions::default()).unwrap();
    let feeds = HashMap::from([("input".to_string(), Value::Tensor((x + 1.0) / 2.0))]);
    let logits = plan.run_values(&feeds).unwrap()[0].as_tensor().unwrap().shallow_clone();
    let hit = logits.argmax(1, false).eq_tensor(&y).to_kind(tch::Kind::Float);
    for (i, c) in [0, 3, 7].into_iter().enumerate() {
        let rate = hit.narrow(0, 16 * i as i64, 16).mean(tch::Kind::Float).double_value(&[]);
        assert!(rate >= 0.9, "class {c}: the judge agrees on {rate:.2} of the samples (want ≥ 0.90)");
    }
}

#[test]
fn a_seed_gives_the_same_bytes_and_another_seed_other_samples() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str, eta: &str, name: &str| {
        let out = dir.path().join(name);
        let o = sample(
            &fx("model.onnx"),
            &out,
            &["--class", "2", "--n", "4", "--steps", "10", "--seed", seed, "--eta", eta],
        );
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(out).unwrap()
    };
    assert_eq!(run("1", "0", "a.npz"), run("1", "0", "b.npz"), "seed 1 twice gave different files (η 0)");
    assert_eq!(run("1", "1", "c.npz"), run("1", "1", "d.npz"), "seed 1 twice gave different files (η 1)");
    assert_ne!(run("1", "0", "a.npz"), run("2", "0", "e.npz"), "seeds 1 and 2 gave the same samples");
    assert_ne!(run("1", "0", "a.npz"), run("1", "1", "c.npz"), "η 1 gave η 0's samples");
}

#[test]
fn ddim_from_given_noise_matches_the_onnxruntime_reference() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npz");
    // tools/ddpm_reference.py: 25 steps, η 0, w 2, one row each of these classes.
    let y: Vec<i64> = Vec::try_from(read_npy(&fx("ref/ddim_y.npy")).unwrap()).unwrap();
    let classes = y.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    let noise = fx("ref/ddim_noise.npy");
    let o = sample(
        &fx("model.onnx"),
        &out,
        &["--classes", &classes, "--n", "1", "--noise", noise.to_str().unwrap(), "--eta", "0", "--guidance", "2"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let want = read_npy(&fx("ref/ddim_x0.npy")).unwrap();
    let diff = (array(&out, "x") - want).abs().max().double_value(&[]);
    assert!(diff <= 1e-3, "semu's DDIM samples differ from the onnxruntime reference by {diff}");
}

#[test]
fn bad_settings_are_usage_errors_naming_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.npz");
    let mut m = OnnxModel::load(fx("model.onnx")).unwrap();
    m.proto.metadata_props.clear();
    let bare = dir.path().join("bare.onnx");
    std::fs::write(&bare, prost::Message::encode_to_vec(&m.proto)).unwrap();

    let o = sample(&bare, &out, &["--class", "3", "--n", "1"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    for want in
        ["bare.onnx", "prediction", "schedule", "beta_start", "timesteps", "null_label", "--null-class", "input.t"]
    {
        assert!(t.contains(want), "'{want}' missing from: {t}");
    }
    assert!(!out.exists(), "an output was written on error");

    // The flags give all of it.
    let flags = [
        "--prediction",
        "eps",
        "--beta-schedule",
        "linear",
        "--beta-start",
        "1e-4",
        "--beta-end",
        "0.02",
        "--timesteps",
        "1000",
        "--null-class",
        "10",
        "--num-classes",
        "10",
        "--data-range",
        "-1,1",
        "--inputs",
        "x_t,t,y",
        "--class",
        "3",
        "--n",
        "1",
        "--steps",
        "5",
    ];
    let o = sample(&bare, &out, &flags);
    assert!(o.status.success() && out.exists(), "{}", text(&o));

    let o = sample(&fx("model.onnx"), &out, &["--class", "10", "--n", "1"]);
    assert!(o.status.code() == Some(2) && text(&o).contains("class 10 is out of range"), "{}", text(&o));
    let o = sample(&fx("model.onnx"), &out, &["--class", "1", "--inputs", "x,t,y"]);
    assert!(o.status.code() == Some(2) && text(&o).contains("no input 'x'"), "{}", text(&o));
}

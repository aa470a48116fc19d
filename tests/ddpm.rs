//! The diffusion fixture (tools/make_ddpm.py): the class-conditional ε-network runs on the engine,
//! matches onnxruntime's output shipped with it, and carries its `semu.diffusion.*` settings.
use semu::data::npy::read_npy;
use semu::onnx::OnnxModel;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ddpm").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_ddpm.py)", p.display());
    p
}

#[test]
fn the_ddpm_fixture_runs_on_the_engine_as_onnxruntime_does() {
    let dir = tempfile::tempdir().unwrap();
    let model = fx("model.onnx");
    let mut args =
        vec!["run".to_string(), model.display().to_string(), "--compare-ort".into(), "--device".into(), "cpu".into()];
    for name in ["x_t", "t", "y"] {
        args.extend(["--input".into(), format!("{name}={}", fx(&format!("ref/{name}.npy")).display())]);
    }
    args.extend(["--output-dir".into(), dir.path().display().to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_semu")).args(&args).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && text.contains(" 0 outside"), "{text}");

    let got = read_npy(&dir.path().join("eps.npy")).unwrap();
    let want = read_npy(&fx("ref/eps.npy")).unwrap();
    let diff = (&got - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-4, "engine eps differs from onnxruntime's shipped eps by {diff}");
    // Rows 1 and 3 share x_t and t and differ in the class (3 vs the null class 10): the
    // class embedding must reach the output, or guidance has nothing to work with.
    let cond = (got.get(1) - got.get(3)).abs().max().double_value(&[]);
    assert!(cond > 1e-3, "eps ignores the class input (rows 1 and 3 differ by {cond})");
}

#[test]
fn the_ddpm_fixture_carries_its_diffusion_settings() {
    let m = OnnxModel::load(fx("model.onnx")).unwrap();
    let props: Vec<(&str, &str)> = m.proto.metadata_props.iter().map(|p| (p.key(), p.value())).collect();
    for (k, v) in [
        ("semu.diffusion.prediction", "eps"),
        ("semu.diffusion.schedule", "linear"),
        ("semu.diffusion.timesteps", "1000"),
        ("semu.diffusion.null_label", "10"),
        ("semu.diffusion.num_classes", "10"),
        ("semu.diffusion.data_range", "-1,1"),
        ("semu.diffusion.input.t", "t"),
    ] {
        assert!(props.contains(&(k, v)), "{k}={v} missing from the model's metadata: {props:?}");
    }
}

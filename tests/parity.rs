//! Parity with an independent PyTorch implementation written from SEMU.md (tools/semu_reference.py):
//! same forget data, same batches and random labels → same rank per layer and same R after one
//! epoch, under both the reference code's definitions and the paper's.
use semu::data::NpzDataset;
use semu::onnx::OnnxModel;
use semu::semu::unlearn::Quiet;
use semu::semu::{unlearn, Parity, SemuConfig};
use std::path::PathBuf;
use std::process::Command;
use tch::{Device, Tensor};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn python() -> PathBuf {
    root().join(".venv/bin/python")
}

fn parity_case(parity: Parity, forget: &str, gamma: f64) {
    let model_path = root().join("fixtures/digits/model.onnx");
    let forget_path = root().join("fixtures/digits").join(forget);
    let m = OnnxModel::load(&model_path).unwrap();
    let f = NpzDataset::open(&forget_path).unwrap();
    let cfg = SemuConfig {
        epochs: 1,
        gamma,
        lr: semu::semu::Lr::Fixed(0.01),
        batch_size: 64,
        parity,
        alpha: 0.0,
        record_batches: true,
        ..Default::default()
    };
    let u = unlearn(&m, &f, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let (order, labels) = u.epochs[0].batches.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let batches = dir.path().join("batches.npz");
    let order: Vec<i64> = order.iter().map(|&i| i as i64).collect();
    Tensor::write_npz(&[("order", Tensor::from_slice(&order)), ("labels", Tensor::from_slice(&labels))], &batches)
        .unwrap();
    let out = dir.path().join("ref.npz");
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tools/semu_reference.py")).args([&model_path, &forget_path, &batches, &out]).args([
        "--gamma",
        &gamma.to_string(),
        "--lr",
        "0.01",
        "--batch-size",
        "64",
    ]);
    if parity == Parity::Paper {
        cmd.arg("--paper");
    }
    let st = cmd.status().expect("run tools/semu_reference.py (make setup installs its venv)");
    assert!(st.success(), "reference implementation failed");
    let reference = Tensor::read_npz(&out).unwrap();
    let get = |name: &str| reference.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone()).unwrap();
    assert_eq!(u.adapters.len(), 5);
    for (i, a) in u.adapters.iter().enumerate() {
        let k = get(&format!("k_{i}")).int64_value(&[]) as usize;
        assert_eq!(a.k, k, "{parity:?} {}: rank", a.name);
        let r_ref = get(&format!("R_{i}"));
        let r = a.r.detach();
        assert_eq!(r.size(), r_ref.size(), "{}", a.name);
        let diff = (&r - &r_ref).abs().max().double_value(&[]);
        let scale = r_ref.abs().max().double_value(&[]);
        assert!(scale > 0.0, "{}: R did not move", a.name);
        assert!(diff <= 1e-4, "{parity:?} {}: max |R - R_ref| = {diff} (scale {scale})", a.name);
    }
}

#[test]
fn reference_parity_class_forgetting() {
    parity_case(Parity::Reference, "forget_class3.npz", 0.9);
}

#[test]
fn paper_definitions_parity_random_forgetting() {
    parity_case(Parity::Paper, "forget_random10.npz", 0.8);
}

//! CUDA: the build must link libtorch_cuda (the linker drops it under --as-needed, silently
//! disabling CUDA), and on a GPU machine the engine and SEMU must agree with the CPU.
//! Tests that need a GPU print why they skip on CPU-only machines.
use semu::data::{Dataset, NpzDataset};
use semu::onnx::OnnxModel;
use semu::semu::unlearn::Quiet;
use semu::semu::{unlearn, SemuConfig};
use std::collections::HashMap;
use std::path::Path;
use tch::Device;

#[test]
fn libtorch_cuda_is_linked_into_test_binaries() {
    let _ = tch::Cuda::is_available();
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    assert!(maps.contains("libtorch_cuda.so"), "libtorch_cuda.so is not loaded: CUDA would be silently unavailable");
}

fn gpu() -> bool {
    if tch::Cuda::is_available() {
        return true;
    }
    println!("skipped: libtorch sees no CUDA device on this machine");
    false
}

fn digits(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits").join(file)
}

/// The digits model, its class-3 forget set and a SEMU setting that trains in a second.
fn class3() -> (OnnxModel, NpzDataset, SemuConfig) {
    let m = OnnxModel::load(digits("model.onnx")).unwrap();
    let forget = NpzDataset::open(&digits("forget_class3.npz")).unwrap();
    (m, forget, SemuConfig { lr: semu::semu::Lr::Fixed(0.001), gamma: 0.6, alpha: 0.0, ..Default::default() })
}

#[test]
fn cuda_forward_and_unlearning_match_cpu() {
    if !gpu() {
        return;
    }
    let (m, forget, cfg) = class3();
    let test = NpzDataset::open(&digits("test.npz")).unwrap();
    let (x, _) = test.batch(&(0..200).collect::<Vec<_>>()).unwrap();
    let logits = |dev: Device| {
        let c = semu::task::Model::new(&m, dev, Default::default(), &Default::default()).unwrap();
        let _g = tch::no_grad_guard();
        c.logits(&x.to_device(dev), &HashMap::new()).unwrap().to_device(Device::Cpu)
    };
    let d = (logits(Device::Cpu) - logits(Device::Cuda(0))).abs().max().double_value(&[]);
    assert!(d < 1e-3, "CUDA vs CPU logits differ by {d}");
    let cpu = unlearn(&m, &forget, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let gpu = unlearn(&m, &forget, None, None, &cfg, Device::Cuda(0), &Default::default(), &mut Quiet).unwrap();
    for (a, b) in cpu.adapters.iter().zip(&gpu.adapters) {
        assert_eq!(a.k, b.k, "{}: rank on CPU vs CUDA", a.name);
    }
    let (ac, ag) = (cpu.accuracy(&forget, 256).unwrap(), gpu.accuracy(&forget, 256).unwrap());
    assert!((ac - ag).abs() <= 0.05, "forget accuracy CPU {ac} vs CUDA {ag}");
}

/// `--precision bf16` on a GPU: the products compute in bf16, R and its gradient stay f32, and
/// forgetting still reaches the f32 run's level.
#[test]
fn cuda_bf16_products_train_r_in_f32() {
    if !gpu() {
        return;
    }
    let (m, forget, cfg) = class3();
    let low = SemuConfig { precision: semu::engine::precision::Precision::Bf16, ..cfg.clone() };
    let f32 = unlearn(&m, &forget, None, None, &cfg, Device::Cuda(0), &Default::default(), &mut Quiet).unwrap();
    let bf16 = unlearn(&m, &forget, None, None, &low, Device::Cuda(0), &Default::default(), &mut Quiet).unwrap();
    assert!(bf16.adapters.iter().all(|a| a.r.kind() == tch::Kind::Float));
    let (a, b) = (f32.accuracy(&forget, 256).unwrap(), bf16.accuracy(&forget, 256).unwrap());
    assert!((a - b).abs() <= 0.05, "forget accuracy f32 {a} vs bf16 {b}");
}

//! SEMU end to end on the digits fixture: adapters start as the identity, the fold is exact,
//! the export is the input graph with only adapted weights changed, the gate catches tampering,
//! runs are reproducible, and forgetting reaches the quality bar.
use semu::data::{self, Dataset, NpzDataset, Subset};
use semu::export::folded_weights;
use semu::onnx::OnnxModel;
use semu::semu::gradient::forget_gradient;
use semu::semu::svd::decompose;
use semu::semu::train::overrides;
use semu::semu::unlearn::Quiet;
use semu::semu::{find_layers, unlearn, Adapter, LayerKind, Lr, Parity, SemuConfig};
use semu::task::Model;
use semu::verify::gate::{self, Probe};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Tensor};

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits").join(p)
}

fn digits() -> OnnxModel {
    OnnxModel::load(fx("model.onnx")).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn tuned() -> SemuConfig {
    SemuConfig { lr: Lr::Fixed(0.001), gamma: 0.6, alpha: 0.0, ..Default::default() }
}

#[test]
fn zero_r_gives_the_input_models_outputs() {
    let m = digits();
    let layers = find_layers(&m);
    assert_eq!(layers.len(), 5);
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let mut clf = Model::new(&m, Device::Cpu, names.iter().cloned().collect(), &Default::default()).unwrap();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let grads = forget_gradient(&mut clf, &names, &forget, 64, |_| {}).unwrap();
    let adapters: Vec<Adapter> = layers
        .iter()
        .map(|l| {
            let w = clf.plan.param(&l.name).unwrap().shallow_clone();
            let d = decompose(&grads[&l.name], l.kind == LayerKind::Conv).unwrap();
            Adapter::new(l, &w, &d, 0.9, Parity::Paper).unwrap().unwrap()
        })
        .collect();
    let (x, _) = NpzDataset::open(&fx("test.npz")).unwrap().batch(&(0..100).collect::<Vec<_>>()).unwrap();
    let _g = tch::no_grad_guard();
    let plain = clf.logits(&x, &HashMap::new()).unwrap();
    let adapted = clf.logits(&x, &overrides(&adapters).unwrap()).unwrap();
    assert_eq!(max_diff(&plain, &adapted), 0.0, "R = 0 must leave the model unchanged");
}

#[test]
fn forget_gradient_is_the_sum_of_per_batch_gradients() {
    let m = digits();
    let names: Vec<String> = find_layers(&m).iter().map(|l| l.name.clone()).collect();
    let mut clf = Model::new(&m, Device::Cpu, names.iter().cloned().collect(), &Default::default()).unwrap();
    let forget = NpzDataset::open(&fx("forget_random10.npz")).unwrap();
    let whole = forget_gradient(&mut clf, &names, &forget, 32, |_| {}).unwrap();
    let mut summed: HashMap<String, Tensor> = HashMap::new();
    for start in (0..forget.len()).step_by(32) {
        let sub = Subset { inner: &forget, idx: (start..(start + 32).min(forget.len())).collect() };
        for (n, g) in forget_gradient(&mut clf, &names, &sub, 1000, |_| {}).unwrap() {
            let acc = summed.remove(&n).map_or(g.shallow_clone(), |a| a + &g);
            summed.insert(n, acc);
        }
    }
    for n in &names {
        let scale = whole[n].abs().max().double_value(&[]);
        assert!(scale > 0.0, "{n}: zero gradient");
        assert!(max_diff(&whole[n], &summed[n]) <= 1e-5 * scale.max(1.0), "{n}");
    }
    // Summed, not averaged: a batch-size change leaves it as the sum of batch means, so
    // batch 32 and batch 1000 (one batch) differ by roughly the number of batches.
    let one = forget_gradient(&mut clf, &names, &forget, 1000, |_| {}).unwrap();
    let n = &names[4];
    let ratio = whole[n].norm().double_value(&[]) / one[n].norm().double_value(&[]);
    assert!(ratio > 2.0, "expected a sum over ~{} batches, ratio {ratio}", forget.len().div_ceil(32));
}

#[test]
fn export_changes_only_adapted_weights_matches_adapters_and_gate_catches_tampering() {
    let m = digits();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let cfg = SemuConfig { epochs: 2, ..tuned() };
    let u = unlearn(&m, &forget, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let weights = folded_weights(&m, &u.adapters).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.onnx");
    m.save(&out, &weights).unwrap();

    // Same graph, opsets, metadata; only the adapted initializers differ.
    let back = OnnxModel::load(&out).unwrap();
    let strip = |m: &OnnxModel| {
        let mut p = m.proto.clone();
        p.graph.as_mut().unwrap().initializer.retain(|t| !weights.contains_key(t.name()));
        p
    };
    assert_eq!(strip(&back), strip(&m));
    for t in &back.graph().initializer {
        let orig = m.initializer(t.name()).unwrap();
        assert_eq!(t.data_type(), orig.data_type());
        let changed = back.tensor(t).unwrap() != m.tensor(orig).unwrap();
        assert_eq!(changed, weights.contains_key(t.name()), "{}", t.name());
    }

    // The folded file in the engine equals the adapted model to 1e-5.
    let test = NpzDataset::open(&fx("test.npz")).unwrap();
    let (x, _) = test.batch(&(0..128).collect::<Vec<_>>()).unwrap();
    let w = overrides(&u.adapters).unwrap();
    let _g = tch::no_grad_guard();
    let adapted = u.net.logits(&x, &w).unwrap();
    let folded = Model::new(&back, Device::Cpu, Default::default(), &Default::default()).unwrap();
    assert!(max_diff(&folded.logits(&x, &HashMap::new()).unwrap(), &adapted) <= 1e-5);

    // The gate passes the honest export (onnxruntime + tract) ...
    let probes = vec![Probe {
        name: "test".into(),
        feeds: vec![("input".into(), x.shallow_clone())],
        expected: adapted.shallow_clone(),
        input_expected: None,
    }];
    let tol = gate::tolerance_for(&adapted);
    let ok = gate::check(&out, "logits", &probes, tol).unwrap();
    assert!(ok.passed, "{:?}", ok.failure());
    assert!(ok.rows.iter().any(|r| r.runtime == "onnxruntime"));
    // ... and fails one whose weight was changed after folding.
    let name = u.adapters[0].name.clone();
    let mut t = weights[&name].clone();
    let mut v = t.to_f32_vec().unwrap();
    v[0] += 0.5;
    t = t.with_f32_values(&v).unwrap();
    let tampered = dir.path().join("tampered.onnx");
    back.save(&tampered, &HashMap::from([(name, t)])).unwrap();
    let bad = gate::check(&tampered, "logits", &probes, tol).unwrap();
    assert!(!bad.passed, "a tampered export must fail the gate");
    assert!(bad.failure().unwrap().contains("onnxruntime") || bad.failure().unwrap().contains("engine"));
}

#[test]
fn class_forgetting_without_remaining_data_meets_the_quality_bar() {
    let m = digits();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let test = NpzDataset::open(&fx("test.npz")).unwrap();
    let u = unlearn(&m, &forget, None, None, &tuned(), Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let labels = data::labels(&test).unwrap();
    let class3 = Subset { inner: &test, idx: (0..labels.len()).filter(|&i| labels[i] == 3).collect() };
    let others = Subset { inner: &test, idx: (0..labels.len()).filter(|&i| labels[i] != 3).collect() };
    let (a3, ao) = (u.accuracy(&class3, 256).unwrap(), u.accuracy(&others, 256).unwrap());
    let share = u.trainable as f64 / u.total_parameters as f64;
    println!("class 3 {a3:.4}, others {ao:.4}, trainable share {share:.5}");
    assert!(a3 <= 0.05, "class-3 test accuracy {a3}");
    assert!(ao >= 0.93, "other classes' test accuracy {ao}");
    assert!(share <= 0.015, "share of parameters {share}");
    assert!(u.forget_acc_before > 0.95);
}

#[test]
fn class_forgetting_with_remaining_data_meets_the_quality_bar() {
    let m = digits();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let retain = NpzDataset::open(&fx("retain_class3.npz")).unwrap();
    let test = NpzDataset::open(&fx("test.npz")).unwrap();
    let cfg = SemuConfig { lr: Lr::Fixed(0.0005), gamma: 0.6, alpha: 1.0, ..Default::default() };
    let u = unlearn(&m, &forget, Some(&retain), None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let labels = data::labels(&test).unwrap();
    let class3 = Subset { inner: &test, idx: (0..labels.len()).filter(|&i| labels[i] == 3).collect() };
    let others = Subset { inner: &test, idx: (0..labels.len()).filter(|&i| labels[i] != 3).collect() };
    let (a3, ao) = (u.accuracy(&class3, 256).unwrap(), u.accuracy(&others, 256).unwrap());
    println!("with remaining data: class 3 {a3:.4}, others {ao:.4}");
    assert!(a3 <= 0.02, "class-3 test accuracy {a3}");
    assert!(ao >= 0.96, "other classes' test accuracy {ao}");
}

#[test]
fn same_seed_same_bytes_and_f16_weights_stay_f16() {
    let dir = tempfile::tempdir().unwrap();
    let forget = NpzDataset::open(&fx("forget_random10.npz")).unwrap();
    let cfg = SemuConfig { epochs: 2, ..tuned() };
    let run = |model: &OnnxModel, out: &Path| {
        let u = unlearn(model, &forget, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
        model.save(out, &folded_weights(model, &u.adapters).unwrap()).unwrap();
    };
    let m = digits();
    run(&m, &dir.path().join("a.onnx"));
    run(&m, &dir.path().join("b.onnx"));
    assert_eq!(std::fs::read(dir.path().join("a.onnx")).unwrap(), std::fs::read(dir.path().join("b.onnx")).unwrap());

    let half = OnnxModel::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits_f16/model.onnx")).unwrap();
    let layers = find_layers(&half);
    assert_eq!(layers.len(), 5, "weights behind Cast nodes are found");
    run(&half, &dir.path().join("h.onnx"));
    let back = OnnxModel::load(dir.path().join("h.onnx")).unwrap();
    for l in &layers {
        let t = back.initializer(&l.name).unwrap();
        assert_eq!(t.data_type(), 10, "{} stays float16", l.name);
        assert_ne!(back.tensor(t).unwrap(), half.tensor(half.initializer(&l.name).unwrap()).unwrap());
    }
}

/// A weight of `FACTORED_FROM` elements or more trains as factors (`x W + (x U R) Vᵀ`): R still
/// learns through that product, and the fold formed from the factors one weight at a time is
/// byte for byte the adapter's own fold.
#[test]
fn a_wide_weight_trains_as_factors_and_folds_to_the_adapters_bytes() {
    use semu::onnx::build::{f32_init, node, value, write};
    use semu::onnx::DType;
    tch::manual_seed(11);
    let init = |name: &str, dims: [i64; 2]| {
        let t = Tensor::randn(dims, (tch::Kind::Float, Device::Cpu)) / (dims[0] as f64).sqrt();
        f32_init(name, &dims, &Vec::<f32>::try_from(t.flatten(0, -1)).unwrap())
    };
    let wide = [64, 2048];
    assert!(wide[0] * wide[1] >= semu::semu::adapter::FACTORED_FROM);
    let (_dir, path) = write(
        vec![
            node("Flatten", &["x"], &["flat"]),
            node("MatMul", &["flat", "w1"], &["h"]),
            node("Relu", &["h"], &["r"]),
            node("MatMul", &["r", "w2"], &["y"]),
        ],
        vec![init("w1", wide), init("w2", [2048, 10])],
        vec![value("x", DType::F32, &[-1, 1, 8, 8])],
        vec![value("y", DType::F32, &[-1, 10])],
        13,
    );
    let m = OnnxModel::load(&path).unwrap();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let cfg = SemuConfig { lr: Lr::Fixed(0.01), gamma: 0.9, epochs: 2, ..Default::default() };
    let u = unlearn(&m, &forget, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap();
    let w = {
        let _g = tch::no_grad_guard();
        semu::semu::train::adapted(&u.adapters).unwrap()
    };
    assert!(w.low_rank.contains_key("w1") && w.full.contains_key("w2"), "w1 factored, w2 formed");
    let a = u.adapters.iter().find(|a| a.name == "w1").unwrap();
    assert!(a.r.abs().max().double_value(&[]) > 0.0, "R of the factored weight did not train");
    let via_factors = semu::export::weight_replacements(&m, &w).unwrap();
    let via_adapters = folded_weights(&m, &u.adapters).unwrap();
    assert_eq!(via_factors.len(), 2);
    for (name, d) in &via_adapters {
        assert!(via_factors[name].bytes == d.bytes, "{name}: the fold from the factors differs");
    }
}

/// `--precision bf16`: a training step's products and convolutions compute in bf16 (R moves
/// differently from the f32 run), R stays f32, and class 3 is still forgotten.
#[test]
fn bf16_products_train_r_in_f32_and_still_forget() {
    use semu::engine::precision::Precision;
    let m = digits();
    let forget = NpzDataset::open(&fx("forget_class3.npz")).unwrap();
    let cfg = tuned();
    let run = |precision| {
        let cfg = SemuConfig { precision, ..cfg.clone() };
        unlearn(&m, &forget, None, None, &cfg, Device::Cpu, &Default::default(), &mut Quiet).unwrap()
    };
    let (exact, low) = (run(Precision::F32), run(Precision::Bf16));
    let moved = |u: &semu::semu::unlearn::Unlearned| {
        u.adapters.iter().map(|a| a.r.abs().sum(tch::Kind::Double).double_value(&[])).sum::<f64>()
    };
    assert!(low.adapters.iter().all(|a| a.r.kind() == tch::Kind::Float));
    let differ = exact.adapters.iter().zip(&low.adapters).any(|(a, b)| !a.r.equal(&b.r));
    assert!(differ, "bf16 training gave the f32 run's R bit for bit: the products were not lowered");
    assert!(
        (moved(&exact) - moved(&low)).abs() <= 0.1 * moved(&exact),
        "R moved {} in f32, {} in bf16",
        moved(&exact),
        moved(&low)
    );
    let (a, b) = (exact.epochs.last().unwrap().forget_acc, low.epochs.last().unwrap().forget_acc);
    assert!((a - b).abs() <= 0.05, "forget accuracy f32 {a} vs bf16 {b}");
    assert!(b <= 0.2, "bf16: forget accuracy {b} from {}", low.forget_acc_before);
}

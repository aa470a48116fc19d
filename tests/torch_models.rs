//! Real-model conformance: PyTorch exports (tools/export_models.py, random weights, fixed seeds)
//! run through the engine on CPU, forward and backward.
//!
//! For each model the engine's output must match
//!   - PyTorch's eager output (expected_0.npy), and
//!   - ONNX Runtime's output on the same input,
//!
//! element-wise with `|engine − ref| ≤ 1e-4·|ref| + 1e-4·max|ref|` (`TOL`: relative 1e-4, with a
//! floor of 1e-4 of the output's largest magnitude for elements near zero). tract runs too, as a
//! third opinion: if it cannot load a model that is only a warning, but if it runs, it must agree.
//! Backward: every Conv/Gemm/MatMul weight initializer is made a dynamic, requires-grad parameter;
//! the gradient of sum(outputs) must reach each one, finite and not all zero.
use semu::engine::convert::{dtype_of, from_tensor};
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::{OnnxModel, TensorData};
use semu::verify::{compare, Comparison, OrtSession, Tolerance, TractSession};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use tch::{Kind, Tensor};

const TOL: Tolerance = Tolerance::new(0.0, 1e-4).with_scale_rtol(1e-4);

fn model_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/.cache/models").join(name);
    assert!(
        dir.join("model.onnx").is_file(),
        "missing fixture {}: run `make fixtures` (or `.venv/bin/python tools/export_models.py`)",
        dir.join("model.onnx").display()
    );
    dir
}

struct Fixture {
    model: OnnxModel,
    path: PathBuf,
    /// Graph inputs in graph order, named.
    inputs: Vec<(String, Tensor)>,
    expected: Tensor,
}

fn fixture(name: &str) -> Fixture {
    let dir = model_dir(name);
    let path = dir.join("model.onnx");
    let model = OnnxModel::load(&path).unwrap();
    let inits: HashSet<&str> = model.graph().initializer.iter().map(|t| t.name()).collect();
    let names: Vec<String> =
        model.graph().input.iter().map(|v| v.name().to_string()).filter(|n| !inits.contains(n.as_str())).collect();
    let inputs = names
        .into_iter()
        .enumerate()
        .map(|(i, n)| (n, Tensor::read_npy(dir.join(format!("input_{i}.npy"))).expect("input npy")))
        .collect();
    let expected = Tensor::read_npy(dir.join("expected_0.npy")).expect("expected npy");
    Fixture { model, path, inputs, expected }
}

fn data(t: &Tensor) -> TensorData {
    from_tensor(t, dtype_of(t.kind()).unwrap()).unwrap()
}

fn named_outputs(plan: &Plan, outs: &[Tensor]) -> Vec<(String, TensorData)> {
    plan.output_names().iter().zip(outs).map(|(n, t)| (n.to_string(), data(t))).collect()
}

fn report(model: &str, what: &str, c: &Comparison) {
    println!(
        "{model}: {what}: max abs {:.3e}, max rel {:.3e}, {}",
        c.max_abs(),
        c.max_rel(),
        if c.passed() { "ok" } else { "FAIL" }
    );
}

/// Initializers used as the weight (input 1) of a Conv, Gemm or MatMul node.
fn weight_initializers(model: &OnnxModel) -> Vec<String> {
    let inits: HashSet<&str> = model.graph().initializer.iter().map(|t| t.name()).collect();
    let mut seen = HashSet::new();
    model
        .graph()
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "Conv" | "Gemm" | "MatMul"))
        .filter_map(|n| n.input.get(1).filter(|w| inits.contains(w.as_str())).cloned())
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

fn check_model(name: &str) {
    let fx = fixture(name);
    let reg = Registry::standard();
    let feeds: HashMap<String, Tensor> = fx.inputs.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
    let feed_data: Vec<(String, TensorData)> = fx.inputs.iter().map(|(n, t)| (n.clone(), data(t))).collect();
    let mut failures = Vec::new();

    // Forward, against PyTorch eager and ONNX Runtime.
    let plan = Plan::new(&fx.model, &reg, &PlanOptions::default()).unwrap_or_else(|e| panic!("{name}: plan: {e}"));
    let outs = plan.run(&feeds).unwrap_or_else(|e| panic!("{name}: run: {e}"));
    let engine = named_outputs(&plan, &outs);
    let torch = vec![(engine[0].0.clone(), data(&fx.expected))];
    let vs_torch = compare(&engine, &torch, TOL);
    report(name, "engine vs torch", &vs_torch);
    failures.extend(vs_torch.check(&format!("{name}: engine vs torch")).err());
    let ort = OrtSession::load(&fx.path, 2).unwrap().run(&feed_data).unwrap();
    let vs_ort = compare(&engine, &ort, TOL);
    report(name, "engine vs onnxruntime", &vs_ort);
    failures.extend(vs_ort.check(&format!("{name}: engine vs onnxruntime")).err());
    match TractSession::load(&fx.path).and_then(|s| s.run(&feed_data)) {
        Ok(tract) => {
            let c = compare(&tract, &ort, TOL);
            report(name, "tract vs onnxruntime", &c);
            failures.extend(c.check(&format!("{name}: tract vs onnxruntime")).err());
        }
        Err(e) if e.is_load_failure() => println!("{name}: warning: {e}"),
        Err(e) => failures.push(e.into()),
    }

    // Backward through every weight.
    let weights = weight_initializers(&fx.model);
    assert!(!weights.is_empty(), "{name}: no Conv/Gemm/MatMul weight initializer");
    let opts = PlanOptions { dynamic: weights.iter().cloned().collect(), ..PlanOptions::default() };
    let mut plan = Plan::new(&fx.model, &reg, &opts).unwrap_or_else(|e| panic!("{name}: dynamic plan: {e}"));
    for w in &weights {
        let p = plan.param(w).unwrap().detach().set_requires_grad(true);
        plan.set_param(w, p).unwrap();
    }
    let outs = plan.run(&feeds).unwrap_or_else(|e| panic!("{name}: run with dynamic weights: {e}"));
    let same = compare(&named_outputs(&plan, &outs), &engine, Tolerance::new(1e-6, 1e-5));
    failures.extend(same.check(&format!("{name}: dynamic weights change the forward pass")).err());
    let loss = outs.iter().map(|t| t.sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
    loss.backward();
    let mut bad = Vec::new();
    for w in &weights {
        let g = plan.param(w).unwrap().grad();
        let ok = g.defined() && g.isfinite().all().int64_value(&[]) == 1 && g.abs().max().double_value(&[]) > 0.0;
        if !ok {
            bad.push(w.clone());
        }
    }
    println!("{name}: backward: {}/{} weight gradients finite and non-zero", weights.len() - bad.len(), weights.len());
    if !bad.is_empty() {
        failures.push(semu::Error::msg(format!("{name}: no finite, non-zero gradient for {bad:?}")));
    }
    let msgs: Vec<String> = failures.iter().map(|e| e.to_string()).collect();
    assert!(msgs.is_empty(), "{}", msgs.join("\n"));
}

#[test]
fn resnet18() {
    check_model("resnet18");
}

#[test]
fn mobilenet_v2() {
    check_model("mobilenet_v2");
}

#[test]
fn vit_tiny() {
    check_model("vit_tiny");
}

#[test]
fn bert_tiny() {
    check_model("bert_tiny");
}

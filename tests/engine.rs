//! The engine's planner: unsupported ops reported all at once before running, static sub-graphs
//! folded (but never through weights being trained), values freed after their last use,
//! gradients reaching dynamic initializers, device strings parsed.
use semu::engine::{parse_device, Plan, PlanOptions, Registry};
use semu::onnx::build::{f32_init, node, value, write};
use semu::onnx::{DType, OnnxModel};
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

#[test]
fn unsupported_ops_are_listed_together_before_running() {
    let (_d, p) = write(
        vec![
            node("FancyOp", &["x"], &["a"]),
            node("Relu", &["a"], &["b"]),
            node("OtherOp", &["b"], &["c"]),
            node("FancyOp", &["c"], &["y"]),
        ],
        vec![],
        vec![value("x", DType::F32, &[2])],
        vec![value("y", DType::F32, &[2])],
        13,
    );
    let m = OnnxModel::load(&p).unwrap();
    let err = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).err().unwrap().to_string();
    assert!(err.contains("FancyOp (domain ai.onnx, opset 13): first at node 'FancyOp_a'"), "{err}");
    assert!(err.contains("OtherOp (domain ai.onnx, opset 13): first at node 'OtherOp_c'"), "{err}");
    assert_eq!(err.matches("FancyOp (").count(), 1, "each op once: {err}");
}

/// y = relu(relu(…relu(x · Wᵀ)…)) with a Transpose on the weight and a Shape→Reshape chain.
fn chain(n: usize) -> (tempfile::TempDir, std::path::PathBuf) {
    let mut nodes = vec![node("Transpose", &["W"], &["Wt"]), node("MatMul", &["x", "Wt"], &["h0"])];
    for i in 0..n {
        nodes.push(node("Relu", &[&format!("h{i}")], &[&format!("h{}", i + 1)]));
    }
    nodes.push(node("Shape", &["W"], &["ws"]));
    nodes.push(node("Reshape", &[&format!("h{n}"), "ws"], &["y"]));
    write(
        nodes,
        vec![f32_init("W", &[4, 4], &(0..16).map(|i| i as f32 / 7.0 - 1.0).collect::<Vec<_>>())],
        vec![value("x", DType::F32, &[4, 4])],
        vec![value("y", DType::F32, &[4, 4])],
        13,
    )
}

#[test]
fn static_subgraphs_fold_values_are_freed_and_dynamic_weights_get_gradients() {
    let (_d, p) = chain(20);
    let m = OnnxModel::load(&p).unwrap();
    let reg = Registry::standard();
    let plan = Plan::new(&m, &reg, &PlanOptions::default()).unwrap();
    let (folded, steps) = plan.stats();
    assert_eq!(folded, 2, "Transpose(W) and Shape(W) are folded");
    assert_eq!(steps, 22);
    assert!(plan.peak_live_values() <= 3, "a chain keeps ~2 values alive, got {}", plan.peak_live_values());

    // With W trainable, nothing that reads it is folded, and the gradient reaches it.
    let opts = PlanOptions { dynamic: HashSet::from(["W".to_string()]), ..Default::default() };
    let mut plan = Plan::new(&m, &reg, &opts).unwrap();
    assert_eq!(plan.stats().0, 0);
    let w = plan.param("W").unwrap().detach().set_requires_grad(true);
    plan.set_param("W", w.shallow_clone()).unwrap();
    let x = Tensor::rand([4, 4], (Kind::Float, Device::Cpu));
    let y = plan.run(&HashMap::from([("x".to_string(), x.shallow_clone())])).unwrap().remove(0);
    let g = Tensor::run_backward(&[y.sum(Kind::Float)], &[&w], false, false).remove(0);
    // d/dW of sum(relu(x Wᵀ)) = (1[xWᵀ > 0])ᵀ x
    let mask = x.matmul(&w.detach().tr()).gt(0.0).to_kind(Kind::Float);
    let want = mask.tr().matmul(&x);
    assert!((g - want).abs().max().double_value(&[]) < 1e-5);
}

#[test]
fn run_errors_name_the_missing_input() {
    let (_d, p) = chain(1);
    let m = OnnxModel::load(&p).unwrap();
    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).unwrap();
    let e = plan.run(&HashMap::new()).err().unwrap().to_string();
    assert!(e.contains("the model needs input 'x'"), "{e}");
}

#[test]
fn device_strings() {
    assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
    assert!(parse_device("auto").is_ok());
    assert!(parse_device("gpu").unwrap_err().to_string().contains("expected auto, cpu, cuda or cuda:N"));
    if !tch::Cuda::is_available() {
        assert!(parse_device("cuda:0").unwrap_err().to_string().contains("CUDA is not available"));
    }
}

/// An op that panics (a bug) fails its node with an error instead of taking the process down.
#[test]
fn a_panicking_op_becomes_the_nodes_error() {
    let mut reg = Registry::standard();
    // Opset 101 picks this entry over the real Relu.
    reg.add("Relu", 101, |_| semu::engine::op(|_| panic!("index 3 out of range")));
    let (_d, path) = write(
        vec![node("Relu", &["x"], &["y"])],
        vec![],
        vec![value("x", DType::F32, &[2])],
        vec![value("y", DType::F32, &[2])],
        101,
    );
    // No real model imports opset 101 (the load-time check refuses it): skip the check.
    let m = OnnxModel::load_unchecked(&path).unwrap();
    let plan = Plan::new(&m, &reg, &PlanOptions::default()).unwrap();
    let feeds = HashMap::from([("x".to_string(), Tensor::from_slice(&[1f32, -1.0]))]);
    let err = plan.run(&feeds).expect_err("must fail").to_string();
    assert!(err.contains("Relu_y") && err.contains("index 3 out of range") && err.contains("internal error"), "{err}");
    assert!(!semu::engine::inside_op());
}

//! Control flow through the engine: a Loop body and an If branch that read outer values, run
//! forward, and back-propagate into a trainable initializer used inside the Loop body.
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::build::{f32_init, node, value, write};
use semu::onnx::proto::{AttributeProto, GraphProto, TensorProto};
use semu::onnx::{DType, OnnxModel};
use std::collections::{HashMap, HashSet};
use tch::{Kind, Tensor};

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(5), g: Some(g), ..Default::default() }
}

fn graph(name: &str, nodes: Vec<semu::onnx::proto::NodeProto>, inputs: Vec<&str>, outputs: Vec<&str>) -> GraphProto {
    // Subgraph value types are left to the runtime (allowed by ONNX for subgraph inputs/outputs).
    let vi = |n: &str| semu::onnx::proto::ValueInfoProto { name: Some(n.into()), ..Default::default() };
    GraphProto {
        name: Some(name.into()),
        node: nodes,
        input: inputs.into_iter().map(vi).collect(),
        output: outputs.into_iter().map(vi).collect(),
        ..Default::default()
    }
}

fn i64_init(name: &str, v: i64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        data_type: Some(DType::I64.onnx_code()),
        int64_data: vec![v],
        ..Default::default()
    }
}

/// acc = x · w³ by a Loop of 3 trips whose body reads the outer `w`; then
/// y = If(flag) { acc · 2 } else { acc − 1 }, both branches reading the outer `acc`.
fn model() -> (tempfile::TempDir, std::path::PathBuf) {
    let body = graph(
        "body",
        vec![node("Mul", &["acc_in", "w"], &["acc_out"]), node("Identity", &["cond_in"], &["cond_out"])],
        vec!["i", "cond_in", "acc_in"],
        vec!["cond_out", "acc_out"],
    );
    let mut lp = node("Loop", &["trips", "", "x"], &["acc"]);
    lp.attribute.push(graph_attr("body", body));
    let then_b = graph("then", vec![node("Mul", &["acc", "two"], &["t"])], vec![], vec!["t"]);
    let else_b = graph("else", vec![node("Sub", &["acc", "one"], &["e"])], vec![], vec!["e"]);
    let mut iff = node("If", &["flag"], &["y"]);
    iff.attribute.push(graph_attr("then_branch", then_b));
    iff.attribute.push(graph_attr("else_branch", else_b));
    write(
        vec![lp, iff],
        vec![
            f32_init("w", &[3], &[0.5, -2.0, 1.5]),
            f32_init("two", &[], &[2.0]),
            f32_init("one", &[], &[1.0]),
            i64_init("trips", 3),
        ],
        vec![value("x", DType::F32, &[3]), value("flag", DType::Bool, &[])],
        vec![value("y", DType::F32, &[3])],
        16,
    )
}

#[test]
fn loop_and_if_run_forward_and_backward() {
    let (_dir, path) = model();
    let m = OnnxModel::load(&path).unwrap();
    let opts = PlanOptions { dynamic: HashSet::from(["w".to_string()]), ..Default::default() };
    let mut plan = Plan::new(&m, &Registry::standard(), &opts).unwrap();
    let w = plan.param("w").unwrap().f_detach().unwrap().set_requires_grad(true);
    plan.set_param("w", w.shallow_clone()).unwrap();
    let x = Tensor::from_slice(&[1.0f32, 2.0, -1.0]);
    let wv = [0.5f32, -2.0, 1.5];
    for flag in [true, false] {
        let feeds = HashMap::from([("x".to_string(), x.shallow_clone()), ("flag".to_string(), Tensor::from(flag))]);
        let y = plan.run(&feeds).unwrap().remove(0);
        let got = Vec::<f32>::try_from(y.detach()).unwrap();
        let xv = [1.0f32, 2.0, -1.0];
        for k in 0..3 {
            let acc = xv[k] * wv[k].powi(3);
            let want = if flag { acc * 2.0 } else { acc - 1.0 };
            assert!((got[k] - want).abs() < 1e-5, "flag {flag}, y[{k}] = {}, want {want}", got[k]);
        }
        // d/dw Σ y = 3·x·w² (·2 in the then branch).
        let g = Tensor::f_run_backward(&[y.sum(Kind::Float)], &[&w], false, false).unwrap().remove(0);
        let g = Vec::<f32>::try_from(g).unwrap();
        for k in 0..3 {
            let want = 3.0 * xv[k] * wv[k].powi(2) * if flag { 2.0 } else { 1.0 };
            assert!((g[k] - want).abs() < 1e-4, "flag {flag}, dw[{k}] = {}, want {want}", g[k]);
        }
    }
}

#[test]
fn a_missing_outer_value_names_the_node() {
    let body = graph(
        "body",
        vec![node("Mul", &["acc_in", "nowhere"], &["acc_out"])],
        vec!["i", "c", "acc_in"],
        vec!["c", "acc_out"],
    );
    let mut lp = node("Loop", &["trips", "", "x"], &["acc"]);
    lp.attribute.push(graph_attr("body", body));
    let (_dir, path) = write(
        vec![lp],
        vec![i64_init("trips", 2)],
        vec![value("x", DType::F32, &[3])],
        vec![value("acc", DType::F32, &[3])],
        16,
    );
    // Refused at load (src/onnx/check), and by the planner for a model that skipped the check.
    let err = OnnxModel::load(&path).expect_err("must fail").to_string();
    assert!(err.contains("input 'nowhere'") && err.contains("(Loop): subgraph 'body'"), "{err}");
    let m = OnnxModel::load_unchecked(&path).unwrap();
    let err = Plan::new(&m, &Registry::standard(), &PlanOptions::default()).err().expect("must fail").to_string();
    eprintln!("{err}");
    assert!(err.contains("nowhere") && err.contains("Loop"), "{err}");
}

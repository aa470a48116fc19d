//! Tiny ONNX models built in code with the prost types (tests, examples, bug reports).
use crate::onnx::proto::{
    tensor_shape_proto::{dimension, Dimension},
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use crate::onnx::{DType, TensorData};
use prost::Message;
use std::path::PathBuf;

/// A graph value of `dtype`; a negative dim is symbolic ("batch").
pub fn value(name: &str, dtype: DType, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| Dimension {
            value: Some(if d < 0 { dimension::Value::DimParam("batch".into()) } else { dimension::Value::DimValue(d) }),
            ..Default::default()
        })
        .collect();
    let tensor = type_proto::Tensor { elem_type: Some(dtype.onnx_code()), shape: Some(TensorShapeProto { dim }) };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

pub fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!("{op}_{}", outputs.join("_"))),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

/// An int attribute (type INT).
pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(2), i: Some(v), ..Default::default() }
}

/// An ints attribute (type INTS).
pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(7), ints: v.to_vec(), ..Default::default() }
}

/// A string attribute (type STRING).
pub fn attr_string(name: &str, v: &str) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(3), s: Some(v.into()), ..Default::default() }
}

pub fn f32_init(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DType::F32.onnx_code()),
        raw_data: Some(v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        ..Default::default()
    }
}

pub fn f32_data(dims: &[i64], v: &[f32]) -> TensorData {
    TensorData { dtype: DType::F32, dims: dims.to_vec(), bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
}

/// Writes a model (default domain at `opset`) to a fresh temporary folder; keep the guard alive.
pub fn write(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    opset: i64,
) -> (tempfile::TempDir, PathBuf) {
    let graph = GraphProto {
        name: Some("tiny".into()),
        node: nodes,
        initializer: inits,
        input: inputs,
        output: outputs,
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }],
        producer_name: Some("semu-tests".into()),
        graph: Some(graph),
        ..Default::default()
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("model.onnx");
    std::fs::write(&path, model.encode_to_vec()).expect("write model");
    (dir, path)
}

/// `y = relu(x · W + b)` with x: [batch, 3], W: [3, 2], b: [2], opset 13.
pub fn linear_relu() -> (tempfile::TempDir, PathBuf) {
    let w = f32_init("W", &[3, 2], &[1.0, -1.0, 0.5, 2.0, -0.25, 0.0]);
    let b = f32_init("b", &[2], &[0.1, -0.2]);
    write(
        vec![node("MatMul", &["x", "W"], &["xw"]), node("Add", &["xw", "b"], &["z"]), node("Relu", &["z"], &["y"])],
        vec![w, b],
        vec![value("x", DType::F32, &[-1, 3])],
        vec![value("y", DType::F32, &[-1, 2])],
        13,
    )
}

/// Its expected output, computed by hand.
pub fn linear_relu_expected(x: &[[f32; 3]]) -> Vec<f32> {
    let w = [[1.0, -1.0], [0.5, 2.0], [-0.25, 0.0]];
    let b = [0.1, -0.2];
    x.iter()
        .flat_map(|r| (0..2).map(move |j| (r[0] * w[0][j] + r[1] * w[1][j] + r[2] * w[2][j] + b[j]).max(0.0)))
        .collect()
}

/// One Identity per element type, so every supported dtype round-trips through a runtime.
pub fn identities(dtypes: &[DType]) -> (tempfile::TempDir, PathBuf) {
    let names: Vec<(String, String)> = (0..dtypes.len()).map(|i| (format!("in{i}"), format!("out{i}"))).collect();
    write(
        names.iter().map(|(i, o)| node("Identity", &[i], &[o])).collect(),
        vec![],
        names.iter().zip(dtypes).map(|((i, _), d)| value(i, *d, &[2, 2])).collect(),
        names.iter().zip(dtypes).map(|((_, o), d)| value(o, *d, &[2, 2])).collect(),
        13,
    )
}

/// Four elements of `d` with distinct, non-trivial bit patterns.
pub fn sample(d: DType) -> TensorData {
    let n = 4 * d.size().expect("fixed-size type");
    let bytes: Vec<u8> = match d {
        DType::Bool => vec![1, 0, 0, 1],
        DType::F32 => [1.5f32, -2.0, 0.0, 3.25].iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F64 => [1.5f64, -2.0, 1e-300, 3.25].iter().flat_map(|x| x.to_le_bytes()).collect(),
        DType::F16 => [1.5f32, -2.0, 0.0, 65504.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        _ => (0..n).map(|i| (i * 37 + 11) as u8).collect(),
    };
    TensorData { dtype: d, dims: vec![2, 2], bytes }
}

//! A model at a glance: opsets, inputs/outputs, op histogram, parameter count.
use super::proto::{tensor_shape_proto::dimension, type_proto, GraphProto, ValueInfoProto};
use super::{DType, OnnxModel};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ValueSummary {
    pub name: String,
    /// Element type, or the kind of non-tensor value ("sequence", "map", …).
    pub dtype: String,
    /// Dims: a number, a symbolic name, or "?".
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelSummary {
    pub path: String,
    pub ir_version: i64,
    pub producer: String,
    pub opsets: BTreeMap<String, i64>,
    pub inputs: Vec<ValueSummary>,
    pub outputs: Vec<ValueSummary>,
    pub nodes: usize,
    /// Ops by type, nodes inside subgraphs included.
    pub op_histogram: BTreeMap<String, usize>,
    pub initializers: usize,
    pub parameters: i64,
    pub external_data: bool,
}

pub fn value_summary(v: &ValueInfoProto) -> ValueSummary {
    let (dtype, shape) = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => {
            let d = DType::from_onnx(t.elem_type()).map(|d| d.name()).unwrap_or_else(|_| "?".into());
            let s = t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match &d.value {
                            Some(dimension::Value::DimValue(v)) => v.to_string(),
                            Some(dimension::Value::DimParam(p)) => p.clone(),
                            None => "?".into(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (d, s)
        }
        Some(type_proto::Value::SequenceType(_)) => ("sequence".into(), vec![]),
        Some(type_proto::Value::MapType(_)) => ("map".into(), vec![]),
        Some(type_proto::Value::OptionalType(_)) => ("optional".into(), vec![]),
        _ => ("?".into(), vec![]),
    };
    ValueSummary { name: v.name().to_string(), dtype, shape }
}

/// Counts ops by type, including those inside subgraphs (If branches, Loop/Scan bodies).
fn count_ops(g: &GraphProto, hist: &mut BTreeMap<String, usize>) {
    for n in &g.node {
        let key = if n.domain().is_empty() || n.domain() == "ai.onnx" {
            n.op_type().to_string()
        } else {
            format!("{}:{}", n.domain(), n.op_type())
        };
        *hist.entry(key).or_insert(0) += 1;
        for a in &n.attribute {
            for sub in a.g.iter().chain(&a.graphs) {
                count_ops(sub, hist);
            }
        }
    }
}

impl ModelSummary {
    pub fn of(m: &OnnxModel) -> Self {
        let g = m.graph();
        let inits: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let mut hist = BTreeMap::new();
        count_ops(g, &mut hist);
        ModelSummary {
            path: m.path.display().to_string(),
            ir_version: m.proto.ir_version(),
            producer: format!("{} {}", m.proto.producer_name(), m.proto.producer_version()).trim().to_string(),
            opsets: m
                .proto
                .opset_import
                .iter()
                .map(|o| (if o.domain().is_empty() { "ai.onnx".into() } else { o.domain().to_string() }, o.version()))
                .collect(),
            inputs: g.input.iter().filter(|v| !inits.contains(v.name())).map(value_summary).collect(),
            outputs: g.output.iter().map(value_summary).collect(),
            nodes: g.node.len(),
            op_histogram: hist,
            initializers: g.initializer.len(),
            parameters: g.initializer.iter().map(|t| t.dims.iter().product::<i64>()).sum(),
            external_data: g.initializer.iter().any(super::tensor::is_external),
        }
    }
}

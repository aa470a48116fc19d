//! Which weights SEMU adapts (SEMU.md §1): float initializers feeding the weight operand of a
//! Conv, Gemm or MatMul (or onnxruntime's Attention and FusedMatMul), directly or through ops
//! that only rename, cast or transpose.
use crate::onnx::proto::NodeProto;
use crate::onnx::{DType, OnnxModel};
use std::collections::{BTreeMap, HashMap};

/// Op kinds whose weight SEMU can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum LayerKind {
    Conv,
    Gemm,
    MatMul,
}

/// One adaptable weight (an initializer), with every node that uses it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Layer {
    pub name: String,
    pub kind: LayerKind,
    pub dims: Vec<i64>,
    pub dtype: DType,
    /// Names of the consuming Conv/Gemm/MatMul nodes (a shared weight has several).
    pub nodes: Vec<String>,
}

impl Layer {
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }
}

/// FakeQuantize: a quantized weight in its float working copy (`semu::quantized`).
const PASS_THROUGH: &[&str] = &["Identity", "Cast", "Transpose", "FakeQuantize"];

/// Follows `value` back through pass-through ops to an initializer name, if it comes from one.
fn source_initializer<'a>(
    value: &'a str,
    producer: &HashMap<&'a str, &'a NodeProto>,
    inits: &HashMap<&'a str, DType>,
) -> Option<&'a str> {
    let mut v = value;
    for _ in 0..16 {
        if inits.contains_key(v) {
            return Some(v);
        }
        let n = producer.get(v)?;
        if !PASS_THROUGH.contains(&n.op_type()) {
            return None;
        }
        v = n.input.first()?.as_str();
    }
    None
}

/// All adaptable weights of the model, in order of first use.
pub fn find_layers(model: &OnnxModel) -> Vec<Layer> {
    let g = model.graph();
    let inits: HashMap<&str, DType> = g
        .initializer
        .iter()
        .filter_map(|t| DType::from_onnx(t.data_type()).ok().filter(|d| d.is_float()).map(|d| (t.name(), d)))
        .collect();
    let dims: HashMap<&str, &Vec<i64>> = g.initializer.iter().map(|t| (t.name(), &t.dims)).collect();
    let mut producer = HashMap::new();
    for n in &g.node {
        for o in &n.output {
            producer.insert(o.as_str(), n);
        }
    }
    let mut found: BTreeMap<usize, Layer> = BTreeMap::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        let (kind, operand) = match n.op_type() {
            "Conv" => (LayerKind::Conv, 1),
            "Gemm" => (LayerKind::Gemm, 1),
            "MatMul" => (LayerKind::MatMul, 1),
            // onnxruntime's fusions: Attention's packed QKV weight, FusedMatMul's operands.
            "Attention" | "FusedMatMul" if n.domain() == "com.microsoft" => (LayerKind::MatMul, 1),
            _ => continue,
        };
        // MatMul's weight may be either operand (x·W or W·x); Gemm's B is the usual weight but
        // some exporters put it in A.
        let fixed = kind == LayerKind::Conv || n.op_type() == "Attention";
        let candidates: Vec<usize> = if fixed { vec![operand] } else { vec![1, 0] };
        for c in candidates {
            let Some(inp) = n.input.get(c) else { continue };
            let Some(w) = source_initializer(inp, &producer, &inits) else { continue };
            let d = dims[w].clone();
            let ok = match kind {
                LayerKind::Conv => d.len() >= 3,
                _ => d.len() == 2,
            };
            if !ok {
                continue;
            }
            let label = if n.name().is_empty() { format!("{}#{i}", n.op_type()) } else { n.name().to_string() };
            let slot = *index.entry(w).or_insert(i);
            found
                .entry(slot)
                .or_insert_with(|| Layer { name: w.to_string(), kind, dims: d, dtype: inits[w], nodes: Vec::new() })
                .nodes
                .push(label);
            break;
        }
    }
    found.into_values().collect()
}

//! Element types onnxruntime's type inference would contradict: an initializer whose type is not
//! its graph input's, inputs of one type parameter bound to two types, and a value_info or graph
//! output that declares a type other than the one its node certainly produces. Only ops whose
//! result type is certain (below) are inferred; anything else stays unknown and is not judged.
use super::{node, norm_domain, Reason};
use crate::onnx::dtype::DType;
use crate::onnx::proto::{type_proto, GraphProto, NodeProto, ValueInfoProto};
use crate::onnx::NodeExt;
use std::collections::HashMap;

/// Ops whose first output has the element type of their first input.
#[rustfmt::skip]
const SAME_AS_FIRST: &[&str] = &[
    "Identity", "Abs", "Neg", "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Sigmoid", "HardSigmoid",
    "HardSwish", "Tanh", "Softplus", "Softsign", "Gelu", "Mish", "Exp", "Log", "Sqrt", "Reciprocal", "Floor",
    "Ceil", "Round", "Sign", "Erf", "Sin", "Cos", "Tan", "Softmax", "LogSoftmax", "Hardmax", "Add", "Sub", "Mul",
    "Div", "Pow", "Mod", "MatMul", "Gemm", "Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "BatchNormalization", "InstanceNormalization", "LayerNormalization", "LRN", "Dropout",
    "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Concat", "Slice", "Pad", "Expand", "Tile", "Gather",
    "GatherElements", "GatherND", "Max", "Min", "Sum", "Mean", "Clip", "ReduceMean", "ReduceSum", "ReduceMax",
    "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare", "DepthToSpace", "SpaceToDepth", "Resize",
    "Upsample", "Trilu", "CumSum", "Split",
];

/// Ops whose inputs all share one type parameter.
#[rustfmt::skip]
const ONE_TYPE: &[&str] = &[
    "Add", "Sub", "Mul", "Div", "MatMul", "Concat", "Max", "Min", "Sum", "Mean", "Equal", "Less", "Greater",
    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Gemm", "Conv", "ConvTranspose", "InstanceNormalization",
    "PRelu",
];

/// Ops whose inputs are all float tensors (float16, float, double, bfloat16) at every opset.
#[rustfmt::skip]
const FLOAT_ONLY: &[&str] = &[
    "Conv", "ConvTranspose", "AveragePool", "GlobalAveragePool", "BatchNormalization", "InstanceNormalization",
    "Softmax", "LogSoftmax", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt", "Sin", "Cos", "Elu", "Selu", "Softplus",
    "Softsign", "HardSigmoid",
];

/// Ops whose result is bool.
#[rustfmt::skip]
const BOOL_RESULT: &[&str] = &[
    "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf",
];

/// Ops whose result is int64.
#[rustfmt::skip]
const INT64_RESULT: &[&str] = &[
    "Shape", "Size", "ArgMax", "ArgMin", "NonZero",
];

const BOOL: i32 = 9;
const INT64: i32 = 7;
const FLOAT: i32 = 1;
const STRING: i32 = 8;

fn tensor_elem(v: &ValueInfoProto) -> Option<i32> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(t.elem_type()).filter(|&c| c != 0),
        _ => None,
    }
}

fn is_float(code: i32) -> bool {
    DType::from_onnx(code).is_ok_and(DType::is_float)
}

fn type_name(code: i32) -> String {
    DType::from_onnx(code).map_or_else(|_| format!("type {code}"), |d| d.name())
}

/// The types known for sure before any node runs: those of enclosing graphs, the graph inputs'
/// declared types and the initializers' own. An initializer that contradicts its input is refused.
pub(super) fn declared(g: &GraphProto, outer: &HashMap<String, i32>) -> Result<HashMap<String, i32>, Reason> {
    let mut known = outer.clone();
    for v in &g.input {
        if let Some(c) = tensor_elem(v) {
            known.insert(v.name().to_string(), c);
        }
    }
    for t in &g.initializer {
        let c = t.data_type();
        if let Some(i) = g.input.iter().find(|v| v.name() == t.name()).and_then(tensor_elem) {
            if i != c {
                return Err(format!(
                    "initializer '{}' holds {} but graph input '{}' declares {}",
                    t.name(),
                    type_name(c),
                    t.name(),
                    type_name(i)
                ));
            }
        }
        known.insert(t.name().to_string(), c);
    }
    Ok(known)
}

/// Walks the nodes in `order`, inferring what is certain and comparing it with what the graph
/// declares (value_info, graph outputs).
pub(super) fn infer(g: &GraphProto, order: &[usize], mut known: HashMap<String, i32>) -> Result<(), Reason> {
    // A graph output's own declaration wins over value_info (which onnxruntime ignores for it).
    let mut decl: HashMap<&str, (i32, &str)> = HashMap::new();
    let outputs = g.output.iter().map(|v| (v, "graph output"));
    for (v, what) in outputs.chain(g.value_info.iter().map(|v| (v, "value_info"))) {
        if let Some(c) = tensor_elem(v) {
            decl.entry(v.name()).or_insert((c, what));
        }
    }
    for &i in order {
        let n = &g.node[i];
        if !norm_domain(n.domain()).is_empty() {
            continue;
        }
        let op = n.op_type();
        let mut typed = n.input.iter().filter_map(|s| known.get(s.as_str()).map(|&c| (s, c)));
        if let Some((name, c)) = typed.find(|&(_, c)| FLOAT_ONLY.contains(&op) && !is_float(c)) {
            return Err(node(n, format!("input '{name}' is {}; {op} takes float tensors only", type_name(c))));
        }
        if ONE_TYPE.contains(&op) {
            let typed: Vec<(&String, i32)> =
                n.input.iter().filter_map(|s| known.get(s.as_str()).map(|&c| (s, c))).collect();
            if let Some(w) = typed.windows(2).find(|w| w[0].1 != w[1].1) {
                return Err(node(
                    n,
                    format!(
                        "inputs '{}' ({}) and '{}' ({}) must have one element type",
                        w[0].0,
                        type_name(w[0].1),
                        w[1].0,
                        type_name(w[1].1)
                    ),
                ));
            }
        }
        for (k, out) in n.output.iter().enumerate().filter(|(_, o)| !o.is_empty()) {
            let Some(c) = result_type(n, k, &known)? else { continue };
            if let Some(&(d, what)) = decl.get(out.as_str()) {
                if d != c {
                    return Err(node(
                        n,
                        format!("produces '{out}' as {} but its {what} declares {}", type_name(c), type_name(d)),
                    ));
                }
            }
            known.insert(out.clone(), c);
        }
    }
    Ok(())
}

/// The element type of output `k` of `n` when it is certain.
fn result_type(n: &NodeProto, k: usize, known: &HashMap<String, i32>) -> Result<Option<i32>, Reason> {
    let op = n.op_type();
    let input = |i: usize| n.input.get(i).and_then(|s| known.get(s.as_str()).copied());
    if op == "Split" || (k == 0 && SAME_AS_FIRST.contains(&op)) {
        return Ok(input(0));
    }
    if k != 0 {
        return Ok(None);
    }
    Ok(match op {
        _ if BOOL_RESULT.contains(&op) => Some(BOOL),
        _ if INT64_RESULT.contains(&op) => Some(INT64),
        "Where" => input(1),
        "CastLike" => input(1),
        "Cast" => {
            let to = n.get_i("to").map_err(|e| e.to_string())?;
            match to {
                Some(c) => {
                    let c = i32::try_from(c).ok().filter(|&c| DType::from_onnx(c).is_ok());
                    Some(c.ok_or_else(|| node(n, format!("attribute 'to': unknown element type {}", to.unwrap_or(0))))?)
                }
                None => None,
            }
        }
        "Constant" => constant_type(n),
        "ConstantOfShape" => match n.get_t("value").map_err(|e| e.to_string())? {
            Some(t) => Some(t.data_type()),
            None => Some(FLOAT),
        },
        _ => None,
    })
}

fn constant_type(n: &NodeProto) -> Option<i32> {
    let a = n.attribute.first()?;
    match a.name() {
        "value" => a.t.as_ref().map(|t| t.data_type()),
        "value_float" | "value_floats" => Some(FLOAT),
        "value_int" | "value_ints" => Some(INT64),
        "value_string" | "value_strings" => Some(STRING),
        _ => None,
    }
}

//! Model validation at load: the rules of the ONNX checker that ONNX Runtime enforces when it
//! loads a model, so that semu refuses what onnxruntime would refuse, and nothing it loads.
//! Every rule was tried against onnxruntime 1.31 (duplicate graph outputs, duplicate initializers,
//! an IR version of 0, unsorted nodes and value_info that contradicts a graph input all load there,
//! so they are accepted here). A failure is one line naming the value, node or tensor and the rule.
//!
//! - IR version present and at most [`MAX_IR_VERSION`]; an opset import (from IR 3), each known
//!   domain's version within 1..=its latest; every node's domain imported.
//! - Each graph (subgraphs too): inputs, initializers and node outputs define each name once
//!   (initializers may repeat an input's name, and one another, as onnxruntime allows); node
//!   names unique; every node input and graph output defined (in the graph or an enclosing one);
//!   the nodes can be put in an order where each value is made before it is read (no cycle).
//! - Attribute names present and unique on a node.
//! - Every element type known (tensor types of inputs, outputs, value_info; initializers and
//!   attribute tensors); declared types that contradict an initializer or a node's result
//!   (see [`types`]).
//! - External data: a regular file inside the model's folder, holding the bytes the tensor needs.
mod schema;
mod types;

use super::dtype::DType;
use super::proto::{type_proto, GraphProto, NodeProto, TensorProto, TypeProto};
use super::tensor::{external_path, external_ref, is_external, numel};
use super::{NodeExt, OnnxModel};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;

/// The newest IR version known (onnx 1.22); onnxruntime refuses newer ones.
pub const MAX_IR_VERSION: i64 = 13;

/// The newest opset of each domain the ONNX standard defines (onnx 1.22). Other domains (vendor
/// ops) are not bounded here.
const MAX_OPSET: &[(&str, i64)] =
    &[("", 27), ("ai.onnx.ml", 5), ("ai.onnx.training", 1), ("ai.onnx.preview.training", 1), ("ai.onnx.preview", 1)];

/// Why a model is refused: one line.
pub type Reason = String;

/// Runs every rule on `model`; external data is looked for relative to `model.dir`.
pub fn check(model: &OnnxModel) -> Result<(), Reason> {
    let p = &model.proto;
    let ir = p.ir_version.ok_or("the model has no IR version (ir_version is required)")?;
    if ir > MAX_IR_VERSION {
        return Err(format!("IR version {ir} is newer than the newest known ({MAX_IR_VERSION})"));
    }
    let mut opsets: HashMap<&str, i64> = HashMap::new();
    for o in &p.opset_import {
        let d = norm_domain(o.domain());
        let v = o.version();
        if let Some((_, max)) = MAX_OPSET.iter().find(|(k, _)| *k == d) {
            if !(1..=*max).contains(&v) {
                let shown = if d.is_empty() { "ai.onnx" } else { d };
                return Err(format!("opset import {shown} version {v} is outside the known range 1..={max}"));
            }
        }
        opsets.insert(d, v);
    }
    if ir >= 3 && opsets.is_empty() {
        return Err(format!("the model imports no opset (required from IR version 3; this one is {ir})"));
    }
    let g = model.graph();
    let cx = Cx { opsets: &opsets, ir, dir: &model.dir };
    for v in &g.input {
        if v.r#type.is_none() {
            return Err(format!("graph input '{}' has no type", v.name()));
        }
    }
    cx.graph(g, &Outer::default())?;
    Ok(())
}

/// "" and "ai.onnx" are the same domain.
fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}

struct Cx<'a> {
    opsets: &'a HashMap<&'a str, i64>,
    ir: i64,
    dir: &'a Path,
}

/// What an enclosing graph makes visible to a subgraph: names, and element types where known.
#[derive(Default, Clone)]
struct Outer {
    names: HashSet<String>,
    types: HashMap<String, i32>,
}

impl Cx<'_> {
    /// Checks `g` (and its subgraphs); returns the names it reads from enclosing graphs.
    fn graph(&self, g: &GraphProto, outer: &Outer) -> Result<BTreeSet<String>, Reason> {
        // Definitions: inputs, initializers, node outputs; each once.
        let mut defined: HashSet<&str> = HashSet::new();
        for v in &g.input {
            if v.name().is_empty() {
                return Err("a graph input has an empty name".into());
            }
            if !defined.insert(v.name()) {
                return Err(format!("graph input '{}' is declared twice (each value is defined once)", v.name()));
            }
        }
        for t in &g.initializer {
            if t.name().is_empty() {
                return Err("an initializer has an empty name".into());
            }
            self.tensor(t, &format!("initializer '{}'", t.name()))?;
            defined.insert(t.name());
        }
        let mut producer: HashMap<&str, usize> = HashMap::new();
        let mut node_names: HashSet<&str> = HashSet::new();
        for (i, n) in g.node.iter().enumerate() {
            if !n.name().is_empty() && !node_names.insert(n.name()) {
                return Err(format!("two nodes are named '{}' (node names must be unique)", n.name()));
            }
            for o in n.output.iter().filter(|o| !o.is_empty()) {
                if let Some(&j) = producer.get(o.as_str()) {
                    let by =
                        if j == i { "this node already".to_string() } else { format!("node '{}'", g.node[j].label()) };
                    return Err(node(
                        n,
                        format!("output '{o}' is already produced by {by} (each value is defined once)"),
                    ));
                }
                if defined.contains(o.as_str()) {
                    return Err(node(n, format!("output '{o}' is already a graph input or initializer")));
                }
                producer.insert(o, i);
            }
        }
        defined.extend(producer.keys().copied());
        // onnxruntime reads value_info only for values inside the graph (node outputs that are
        // no graph output); entries for anything else are ignored there, so here too.
        let outputs: HashSet<&str> = g.output.iter().map(|v| v.name()).collect();
        let inner_info = g.value_info.iter().filter(|v| producer.contains_key(v.name()) && !outputs.contains(v.name()));
        for v in g.input.iter().chain(&g.output).chain(inner_info) {
            if let Some(t) = &v.r#type {
                elem_types(t).map_err(|code| format!("value '{}' has an unknown element type {code}", v.name()))?;
            }
        }
        // The scope subgraphs see: everything here plus what encloses this graph.
        let mut inner = outer.clone();
        inner.names.extend(defined.iter().map(|s| s.to_string()));
        let known = types::declared(g, &outer.types)?;
        inner.types.extend(known.iter().map(|(k, v)| (k.to_string(), *v)));
        let mut reads_outer = BTreeSet::new();
        let mut implicit: Vec<BTreeSet<String>> = Vec::with_capacity(g.node.len());
        for n in &g.node {
            self.node(n)?;
            let mut sub_reads = BTreeSet::new();
            for a in &n.attribute {
                for sg in a.g.iter().chain(&a.graphs) {
                    let r = self.graph(sg, &inner).map_err(|e| node(n, format!("subgraph '{}': {e}", a.name())))?;
                    sub_reads.extend(r);
                }
            }
            for name in n.input.iter().filter(|s| !s.is_empty()).chain(&sub_reads) {
                if !defined.contains(name.as_str()) {
                    if !outer.names.contains(name) {
                        return Err(node(
                            n,
                            format!("input '{name}' is neither a graph input, an initializer nor any node's output"),
                        ));
                    }
                    reads_outer.insert(name.clone());
                }
            }
            implicit.push(sub_reads);
        }
        for o in &g.output {
            if !defined.contains(o.name()) {
                if !outer.names.contains(o.name()) {
                    return Err(format!(
                        "graph output '{}' is produced by no node and is no input or initializer",
                        o.name()
                    ));
                }
                reads_outer.insert(o.name().to_string());
            }
        }
        let order = topo_order(g, &producer, &implicit)?;
        types::infer(g, &order, known)?;
        Ok(reads_outer)
    }

    fn node(&self, n: &NodeProto) -> Result<(), Reason> {
        let d = norm_domain(n.domain());
        // Before IR 3 a model without imports uses the default domain at opset 1.
        let imported = self.opsets.contains_key(d) || (d.is_empty() && self.ir < 3);
        if !imported {
            return Err(node(n, format!("its domain '{}' is not imported by the model", n.domain())));
        }
        let mut seen = HashSet::new();
        for a in &n.attribute {
            if a.name().is_empty() {
                return Err(node(n, "an attribute has an empty name"));
            }
            if !seen.insert(a.name()) {
                return Err(node(n, format!("attribute '{}' appears more than once", a.name())));
            }
            for t in a.t.iter().chain(&a.tensors) {
                self.tensor(t, &format!("node '{}' ({}), attribute '{}'", n.label(), n.op_type(), a.name()))?;
            }
        }
        schema::check_node(n, d, self.opsets.get(d).copied().unwrap_or(1)).map_err(|r| node(n, r))?;
        Ok(())
    }

    /// A tensor's element type, dims and external data. `what` names it in the message.
    fn tensor(&self, t: &TensorProto, what: &str) -> Result<(), Reason> {
        let dtype = match t.data_type() {
            0 => return Err(format!("{what}: element type UNDEFINED (0) is not allowed")),
            c => DType::from_onnx(c).map_err(|_| format!("{what}: unknown element type {c}"))?,
        };
        if let Some(d) = t.dims.iter().find(|&&d| d < 0) {
            return Err(format!("{what}: negative dim {d} in {:?}", t.dims));
        }
        if !is_external(t) {
            // Raw bytes must be exactly what the dims and type need (onnxruntime refuses other
            // sizes when it loads the model). Typed fields are counted when the tensor is read.
            let raw = t.raw_data().len();
            let need = t.dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
            let bits = dtype.bits().map(|b| b as u64);
            let need = need.zip(bits).and_then(|(n, b)| n.checked_mul(b)).map(|b| b.div_ceil(8) as usize);
            if raw > 0 && need.is_some_and(|n| n != raw) {
                return Err(format!(
                    "{what}: holds {raw} bytes but dims {:?} of {} need {}",
                    t.dims,
                    dtype.name(),
                    need.unwrap_or(0)
                ));
            }
            return Ok(());
        }
        let r = external_ref(t).map_err(|e| format!("{what}: {e}"))?;
        let path = external_path(self.dir, &r.location).map_err(|e| format!("{what}: {e}"))?;
        let meta = std::fs::metadata(&path)
            .map_err(|e| format!("{what}: external data file {} cannot be read ({e})", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{what}: external data {} is not a regular file", path.display()));
        }
        let need = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64))
            .and_then(|n| usize::try_from(n).ok())
            .map(|_| dtype.byte_len(numel(&t.dims)))
            .ok_or_else(|| format!("{what}: dims {:?} overflow", t.dims))?;
        let len = r.length.or(need.map(|n| n as u64)).unwrap_or(0);
        if r.offset.checked_add(len).is_none_or(|end| end > meta.len()) {
            return Err(format!(
                "{what}: external data {} holds {} bytes; offset {} + length {len} is past its end",
                path.display(),
                meta.len(),
                r.offset
            ));
        }
        Ok(())
    }
}

fn node(n: &NodeProto, reason: impl Into<String>) -> Reason {
    format!("node '{}' ({}): {}", n.label(), n.op_type(), reason.into())
}

/// The element type codes a type mentions; Err(code) for the first unknown one (0 included).
fn elem_types(t: &TypeProto) -> Result<(), i32> {
    use type_proto::Value as V;
    let code = |c: i32| DType::from_onnx(c).map(|_| ()).map_err(|_| c);
    match &t.value {
        Some(V::TensorType(x)) => code(x.elem_type()),
        Some(V::SparseTensorType(x)) => code(x.elem_type()),
        Some(V::SequenceType(s)) => s.elem_type.as_deref().map_or(Ok(()), elem_types),
        Some(V::OptionalType(s)) => s.elem_type.as_deref().map_or(Ok(()), elem_types),
        Some(V::MapType(m)) => {
            code(m.key_type())?;
            m.value_type.as_deref().map_or(Ok(()), elem_types)
        }
        None => Ok(()),
    }
}

/// Kahn's order over the nodes (file order among ready nodes); a cycle is refused.
fn topo_order(
    g: &GraphProto,
    producer: &HashMap<&str, usize>,
    implicit: &[BTreeSet<String>],
) -> Result<Vec<usize>, Reason> {
    let mut indeg = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        let reads: BTreeSet<&str> = n.input.iter().chain(&implicit[i]).map(String::as_str).collect();
        for p in reads.iter().filter_map(|r| producer.get(r)) {
            indeg[i] += 1;
            users[*p].push(i);
        }
    }
    kahn(indeg, &users).map_err(|stuck| {
        node(&g.node[stuck], "the graph has a cycle through this node (no order computes its inputs first)")
    })
}

/// Kahn's algorithm on `indeg` (producers per node) and `users` (the nodes each feeds), taking
/// ready nodes in file order so already-sorted graphs keep their order. Err: a node on a cycle.
/// Shared by the load-time check and the engine's plan.
pub fn kahn(mut indeg: Vec<usize>, users: &[Vec<usize>]) -> Result<Vec<usize>, usize> {
    let mut ready: BTreeSet<usize> = (0..indeg.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(indeg.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    match (0..indeg.len()).find(|&i| indeg[i] > 0) {
        Some(stuck) => Err(stuck),
        None => Ok(order),
    }
}

#[cfg(test)]
mod tests;

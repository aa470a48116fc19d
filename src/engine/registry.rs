//! The op registry: (domain, op_type, opset range) → a builder that parses the node's attributes
//! once, at plan time, and returns the op that runs on tensors.
use super::{Inputs, LowRank, PlanOptions, Value, ValueInputs};
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use crate::onnx::DType;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// What a builder sees: the node, the opset its domain is imported at, and — for ops with
/// subgraphs (If, Loop, Scan…) — the scope to plan them in and the outer values they read.
pub struct OpCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
    pub scope: Option<&'a Scope<'a>>,
    /// Names of outer values the node's subgraphs read; they follow the node's inputs.
    pub implicit: &'a [String],
    /// The element type the graph declares for each input (graph inputs, initializers,
    /// value_info), where it does. Types the engine stores widened (int4 as int8…) need it.
    pub input_types: &'a [Option<DType>],
}

impl<'a> OpCtx<'a> {
    /// A context for a node without subgraphs (unit tests, one-off ops).
    pub fn new(node: &'a NodeProto, opset: i64) -> Self {
        OpCtx { node, opset, scope: None, implicit: &[], input_types: &[] }
    }

    /// The declared element type of input `i`, if the graph states it.
    pub fn input_type(&self, i: usize) -> Option<DType> {
        self.input_types.get(i).copied().flatten()
    }
}

/// Where a graph is planned: the ops, the model's opset imports, its folder (external data) and
/// the plan options. Subgraphs are planned in their parent's scope.
pub struct Scope<'a> {
    pub reg: &'a Registry,
    /// Normalised domain ("" for ai.onnx) → imported opset.
    pub opsets: HashMap<String, i64>,
    pub dir: &'a Path,
    pub opts: &'a PlanOptions,
}

impl Scope<'_> {
    pub fn opset(&self, domain: &str) -> i64 {
        self.opsets.get(norm_domain(domain)).copied().unwrap_or(0)
    }
}

/// A built op. Closures `Fn(&Inputs) -> Result<Vec<Tensor>>` are ops on tensors; ops that take
/// or give sequences, optionals or strings override `run_values` (see [`vop`]).
pub trait Op {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>>;

    fn run_values(&self, x: &ValueInputs) -> Result<Vec<Value>> {
        Ok(self.run(&x.as_tensors()?)?.into_iter().map(Value::Tensor).collect())
    }

    /// Whether input `i` may be given as a [`LowRank`] weight ([`Self::run_low_rank`]); where
    /// not, the weight is formed for the op.
    fn takes_low_rank(&self, _i: usize) -> bool {
        false
    }

    /// The outputs with input `i` standing for `w` (`x` holds its base there), without forming it.
    fn run_low_rank(&self, x: &Inputs, _i: usize, _w: &LowRank) -> Result<Vec<Tensor>> {
        Err(x.err("internal: this op takes no low-rank weight"))
    }
}

impl<F: Fn(&Inputs) -> Result<Vec<Tensor>>> Op for F {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        self(x)
    }
}

pub type BoxOp = Box<dyn Op>;
pub type Build = fn(&OpCtx) -> Result<BoxOp>;

/// Wraps a closure as a boxed op (helps type inference in builders).
pub fn op(f: impl Fn(&Inputs) -> Result<Vec<Tensor>> + 'static) -> Result<BoxOp> {
    Ok(Box::new(f))
}

struct ValueOp<F>(F);

impl<F: Fn(&ValueInputs) -> Result<Vec<Value>>> Op for ValueOp<F> {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let owned: Vec<Option<Value>> = x.vals.iter().map(|t| t.map(|t| Value::Tensor(t.shallow_clone()))).collect();
        let vals = owned.iter().map(Option::as_ref).collect();
        (self.0)(&ValueInputs { node: x.node, vals })?.into_iter().map(Value::into_tensor).collect()
    }
    fn run_values(&self, x: &ValueInputs) -> Result<Vec<Value>> {
        (self.0)(x)
    }
}

/// Wraps a closure over [`Value`]s (sequences, optionals, strings, subgraph ops) as a boxed op.
pub fn vop(f: impl Fn(&ValueInputs) -> Result<Vec<Value>> + 'static) -> Result<BoxOp> {
    Ok(Box::new(ValueOp(f)))
}

struct Entry {
    since: i64,
    until: i64,
    build: Build,
}

#[derive(Default)]
pub struct Registry {
    entries: HashMap<(String, String), Vec<Entry>>,
}

/// "" and "ai.onnx" name the same default domain.
pub fn norm_domain(d: &str) -> &str {
    if d == "ai.onnx" {
        ""
    } else {
        d
    }
}

impl Registry {
    /// Every op the engine implements.
    pub fn standard() -> Self {
        let mut r = Registry::default();
        super::ops::register_all(&mut r);
        r
    }

    /// Registers `op_type` of the default domain for every opset from `since` on.
    pub fn add(&mut self, op_type: &str, since: i64, build: Build) {
        self.add_range("", op_type, since, i64::MAX, build);
    }

    /// Registers for opsets `since..=until` of `domain`.
    pub fn add_range(&mut self, domain: &str, op_type: &str, since: i64, until: i64, build: Build) {
        let e = self.entries.entry((norm_domain(domain).to_string(), op_type.to_string())).or_default();
        e.push(Entry { since, until, build });
        e.sort_by_key(|e| std::cmp::Reverse(e.since));
    }

    pub fn find(&self, domain: &str, op_type: &str, opset: i64) -> Option<Build> {
        let es = self.entries.get(&(norm_domain(domain).to_string(), op_type.to_string()))?;
        es.iter().find(|e| e.since <= opset && opset <= e.until).map(|e| e.build)
    }

    /// Sorted `(domain, op_type)` pairs, for `inspect` and the conformance table.
    pub fn ops(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.entries.keys().cloned().collect();
        v.sort();
        v
    }
}

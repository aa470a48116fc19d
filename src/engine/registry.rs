//! The op registry: (domain, op_type, opset range) → a builder that parses the node's attributes
//! once, at plan time, and returns the op that runs on tensors.
use super::Inputs;
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use std::collections::HashMap;
use tch::Tensor;

/// What a builder sees: the node and the opset its domain is imported at.
pub struct OpCtx<'a> {
    pub node: &'a NodeProto,
    pub opset: i64,
}

/// A built op. Closures `Fn(&Inputs) -> Result<Vec<Tensor>>` are ops too.
pub trait Op {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>>;
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

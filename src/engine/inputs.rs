//! The inputs an op receives, with helpers for the common ways ONNX ops read them.
use super::Value;
use crate::error::{Error, Result};
use crate::onnx::proto::NodeProto;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

pub struct Inputs<'a> {
    pub node: &'a NodeProto,
    /// One entry per node input; None where the input name is empty (optional, skipped).
    pub vals: Vec<Option<&'a Tensor>>,
}

impl<'a> Inputs<'a> {
    pub fn len(&self) -> usize {
        self.vals.len()
    }
    pub fn is_empty(&self) -> bool {
        self.vals.is_empty()
    }
    /// Optional input `i` (absent when past the end or skipped with an empty name).
    pub fn get(&self, i: usize) -> Option<&'a Tensor> {
        self.vals.get(i).copied().flatten()
    }
    /// Required input `i`.
    pub fn req(&self, i: usize) -> Result<&'a Tensor> {
        self.get(i).ok_or_else(|| self.err(format!("input {i} is required")))
    }
    /// All present inputs, in order (variadic ops: Sum, Concat, Max…).
    pub fn all(&self) -> Vec<&'a Tensor> {
        self.vals.iter().flatten().copied().collect()
    }
    /// An integer tensor input read as a list (shapes, axes, pads…), None when absent.
    pub fn ints(&self, i: usize) -> Result<Option<Vec<i64>>> {
        self.get(i).map(to_ints).transpose()
    }
    /// A scalar input read as f64, None when absent.
    pub fn scalar(&self, i: usize) -> Result<Option<f64>> {
        self.get(i).map(|t| Ok(t.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_double_value(&[0])?)).transpose()
    }
    pub fn err(&self, reason: impl Into<String>) -> Error {
        self.node.node_err(reason)
    }
    /// Refuses an output of shape `dims` that the element bound ([`crate::limits`]) forbids,
    /// before libtorch is asked to allocate it.
    pub fn bounded(&self, dims: &[i64]) -> Result<()> {
        crate::limits::check_elements(dims).map(|_| ()).map_err(|e| self.err(format!("output {e}")))
    }
}

/// Reads an integer tensor (any int kind, any rank) as a flat list.
pub fn to_ints(t: &Tensor) -> Result<Vec<i64>> {
    let flat = t.f_to_kind(Kind::Int64)?.f_reshape([-1])?.f_to_device(tch::Device::Cpu)?;
    Ok(Vec::<i64>::try_from(&flat)?)
}

/// The inputs of an op that handles non-tensor values (sequences, optionals, strings,
/// subgraphs). After the node's own inputs come the outer values its subgraphs read
/// (`OpCtx::implicit`, in that order).
pub struct ValueInputs<'a> {
    pub node: &'a NodeProto,
    pub vals: Vec<Option<&'a Value>>,
}

impl<'a> ValueInputs<'a> {
    pub fn get(&self, i: usize) -> Option<&'a Value> {
        self.vals.get(i).copied().flatten()
    }
    pub fn req(&self, i: usize) -> Result<&'a Value> {
        self.get(i).ok_or_else(|| self.err(format!("input {i} is required")))
    }
    /// Optional input `i`, which must be a tensor when present.
    pub fn tensor(&self, i: usize) -> Result<Option<&'a Tensor>> {
        match self.get(i) {
            None => Ok(None),
            Some(Value::Tensor(t)) => Ok(Some(t)),
            Some(v) => Err(self.err(format!("input {i} must be a tensor, found {}", v.describe()))),
        }
    }
    pub fn req_tensor(&self, i: usize) -> Result<&'a Tensor> {
        self.tensor(i)?.ok_or_else(|| self.err(format!("input {i} is required")))
    }
    /// Views these inputs as tensors, for ops that only take tensors.
    pub fn as_tensors(&self) -> Result<Inputs<'a>> {
        let vals = (0..self.vals.len()).map(|i| self.tensor(i)).collect::<Result<_>>()?;
        Ok(Inputs { node: self.node, vals })
    }
    pub fn err(&self, reason: impl Into<String>) -> Error {
        self.node.node_err(reason)
    }
}

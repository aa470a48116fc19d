//! Tasks: what a model is for, and so how a batch of records feeds its graph, which output is
//! read, the loss whose gradient SEMU decomposes, the unlearning objectives and the metrics.
//! Gradient → SVD → adapters → training → fold → export → gate is one pipeline for every task;
//! a new kind of model is a new [`TaskKind`], not a copy of the pipeline.
//!
//! - `classify`: any number of inputs of any dtype, one N×C output; targets are class ids.
//! - `causal-lm`: token ids in, B×T×V next-token logits out; targets are the inputs shifted by
//!   one, padding masked.
//! - `diffusion`: a class-conditional noise network ε_θ(x_t, t, y); records are clean images and
//!   their classes, noised by the task (`diffusion`), the output is the predicted noise.
pub mod diffusion;
pub mod lm;
pub mod model;
pub mod objective;

pub use model::{cross_entropy, GraphInput, Model, Spec};
pub use objective::{Objective, Targets};

use crate::onnx::proto::{type_proto, ValueInfoProto};
use crate::onnx::OnnxModel;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    Classify,
    CausalLm,
    Diffusion,
}

impl TaskKind {
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::Classify => "classify",
            TaskKind::CausalLm => "causal-lm",
            TaskKind::Diffusion => "diffusion",
        }
    }
    /// The rank of the output this task reads.
    pub fn output_rank(self) -> usize {
        match self {
            TaskKind::Classify => 2,
            TaskKind::CausalLm => 3,
            TaskKind::Diffusion => 4,
        }
    }
    /// What the per-epoch "forget accuracy" means for this task.
    pub fn accuracy_name(self) -> &'static str {
        match self {
            TaskKind::Classify => "accuracy",
            TaskKind::CausalLm => "next-token accuracy (memorisation)",
            TaskKind::Diffusion => "own-class noise share",
        }
    }
}

/// The declared element type and rank of a graph value (None where not declared).
pub(crate) fn declared(v: &ValueInfoProto) -> Option<(i32, Option<usize>)> {
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => Some((t.elem_type(), t.shape.as_ref().map(|s| s.dim.len()))),
        _ => None,
    }
}

/// The declared dims of a graph value (None where symbolic or unknown; empty when undeclared).
pub fn declared_dims(v: &ValueInfoProto) -> Vec<Option<i64>> {
    use crate::onnx::proto::tensor_shape_proto::dimension;
    match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t
            .shape
            .as_ref()
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(dimension::Value::DimValue(v)) if v > 0 => Some(v),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// An ONNX element type the engine computes in as a float.
pub(crate) fn is_float_type(elem: i32) -> bool {
    crate::onnx::DType::from_onnx(elem).is_ok_and(crate::onnx::DType::is_float)
}

pub(crate) fn is_int_type(elem: i32) -> bool {
    matches!(elem, 2..=7 | 12 | 13)
}

/// The task a graph looks made for, and why: a model carrying `semu.diffusion.*` metadata is a
/// diffusion ε-network; a causal LM takes integer token ids and gives rank-3 float logits
/// (`output` names the output when the user chose one); anything else is a classifier.
pub fn infer(model: &OnnxModel, output: Option<&str>) -> (TaskKind, String) {
    if let Some(p) = model.proto.metadata_props.iter().find(|p| p.key().starts_with("semu.diffusion.")) {
        return (TaskKind::Diffusion, format!("metadata property '{}' (a diffusion ε-network)", p.key()));
    }
    let g = model.graph();
    let inits: std::collections::HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let int_input =
        g.input.iter().filter(|i| !inits.contains(i.name())).find(|i| declared(i).is_some_and(|(e, _)| is_int_type(e)));
    let outs: Vec<&ValueInfoProto> = g.output.iter().filter(|o| output.is_none_or(|n| o.name() == n)).collect();
    let rank3 = outs.iter().find(|o| declared(o).is_some_and(|(e, r)| is_float_type(e) && r == Some(3)));
    match (int_input, rank3) {
        (Some(i), Some(o)) => (
            TaskKind::CausalLm,
            format!("integer input '{}' and rank-3 float output '{}' (B×T×V next-token logits)", i.name(), o.name()),
        ),
        _ => (TaskKind::Classify, "no integer input with rank-3 logits: an N×C classifier".to_string()),
    }
}

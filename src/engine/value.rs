//! Values that flow between nodes. Almost every graph only carries tensors; sequences, optionals
//! and string tensors exist for the ONNX ops that need them (SequenceInsert, Optional,
//! StringNormalizer…) and for the bodies of If/Loop/Scan.
use super::convert::to_tensor;
use crate::error::{Error, Result};
use crate::onnx::proto::{OptionalProto, SequenceProto, TensorProto, TypeProto};
use crate::onnx::TensorData;
use std::path::Path;
use tch::{Device, Tensor};

#[derive(Debug)]
pub enum Value {
    Tensor(Tensor),
    /// A string tensor (libtorch has no string dtype): row-major data and its shape.
    Str(Strings),
    /// An ONNX sequence; elements are tensors (or string tensors) in practice.
    Seq(Vec<Value>),
    /// An ONNX optional: `None` is the empty optional.
    Opt(Option<Box<Value>>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Strings {
    pub dims: Vec<i64>,
    pub data: Vec<String>,
}

impl Strings {
    pub fn new(dims: Vec<i64>, data: Vec<String>) -> Result<Self> {
        let n: i64 = dims.iter().product();
        if n as usize != data.len() {
            return Err(Error::msg(format!("{} strings for shape {dims:?}", data.len())));
        }
        Ok(Strings { dims, data })
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Tensor(t)
    }
}

impl Value {
    /// A cheap copy: tensors share storage, containers are rebuilt.
    pub fn shallow_clone(&self) -> Value {
        match self {
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Seq(v) => Value::Seq(v.iter().map(Value::shallow_clone).collect()),
            Value::Opt(o) => Value::Opt(o.as_ref().map(|v| Box::new(v.shallow_clone()))),
        }
    }

    /// What this value is, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Value::Tensor(t) => format!("a {:?} tensor {:?}", t.kind(), t.size()),
            Value::Str(s) => format!("a string tensor {:?}", s.dims),
            Value::Seq(v) => format!("a sequence of {} values", v.len()),
            Value::Opt(None) => "an empty optional".into(),
            Value::Opt(Some(v)) => format!("an optional holding {}", v.describe()),
        }
    }

    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_tensor(self) -> Result<Tensor> {
        match self {
            Value::Tensor(t) => Ok(t),
            other => Err(Error::msg(format!("expected a tensor, found {}", other.describe()))),
        }
    }

    /// Moves every tensor inside to `dev` (a no-op for tensors already there).
    pub fn to_device(self, dev: Device) -> Result<Value> {
        Ok(match self {
            Value::Tensor(t) if t.device() != dev => Value::Tensor(t.f_to_device(dev)?),
            Value::Seq(v) => Value::Seq(v.into_iter().map(|x| x.to_device(dev)).collect::<Result<_>>()?),
            Value::Opt(Some(v)) => Value::Opt(Some(Box::new(v.to_device(dev)?))),
            other => other,
        })
    }

    /// Decodes a tensor (numeric or string) from its protobuf form; `base` resolves external data.
    pub fn from_tensor_proto(t: &TensorProto, base: &Path) -> Result<Value> {
        if t.data_type() == crate::onnx::DType::String.onnx_code() {
            let data = t
                .string_data
                .iter()
                .map(|b| String::from_utf8(b.clone()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::Tensor {
                    tensor: t.name().into(),
                    reason: "holds a string that is not UTF-8".into(),
                })?;
            return Ok(Value::Str(Strings::new(t.dims.clone(), data)?));
        }
        Ok(Value::Tensor(to_tensor(&TensorData::from_proto(t, base)?)?))
    }

    pub fn from_sequence_proto(s: &SequenceProto, base: &Path) -> Result<Value> {
        let mut items = Vec::new();
        for t in &s.tensor_values {
            items.push(Value::from_tensor_proto(t, base)?);
        }
        for q in &s.sequence_values {
            items.push(Value::from_sequence_proto(q, base)?);
        }
        for o in &s.optional_values {
            items.push(Value::from_optional_proto(o, base)?);
        }
        if !s.map_values.is_empty() || !s.sparse_tensor_values.is_empty() {
            return Err(Error::msg(format!("sequence '{}': maps and sparse tensors are not supported", s.name())));
        }
        Ok(Value::Seq(items))
    }

    pub fn from_optional_proto(o: &OptionalProto, base: &Path) -> Result<Value> {
        let inner = if let Some(t) = &o.tensor_value {
            Some(Value::from_tensor_proto(t, base)?)
        } else if let Some(s) = &o.sequence_value {
            Some(Value::from_sequence_proto(s, base)?)
        } else if let Some(q) = &o.optional_value {
            Some(Value::from_optional_proto(q, base)?)
        } else {
            None
        };
        Ok(Value::Opt(inner.map(Box::new)))
    }

    /// Decodes a serialized value of type `ty` (a graph input/output type): a TensorProto,
    /// SequenceProto or OptionalProto, as the ONNX test data stores them.
    pub fn decode(bytes: &[u8], ty: Option<&TypeProto>, base: &Path) -> Result<Value> {
        use crate::onnx::proto::type_proto::Value as T;
        use prost::Message;
        let bad = |what: &str, e: prost::DecodeError| Error::msg(format!("not a {what} ({e})"));
        match ty.and_then(|t| t.value.as_ref()) {
            Some(T::SequenceType(_)) => {
                Value::from_sequence_proto(&SequenceProto::decode(bytes).map_err(|e| bad("SequenceProto", e))?, base)
            }
            Some(T::OptionalType(_)) => {
                Value::from_optional_proto(&OptionalProto::decode(bytes).map_err(|e| bad("OptionalProto", e))?, base)
            }
            Some(T::MapType(_)) | Some(T::SparseTensorType(_)) => {
                Err(Error::msg("map and sparse values are not supported"))
            }
            _ => Value::from_tensor_proto(&TensorProto::decode(bytes).map_err(|e| bad("TensorProto", e))?, base),
        }
    }
}

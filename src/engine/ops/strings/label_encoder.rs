//! ai.onnx.ml LabelEncoder: a lookup table from keys to values (strings, integers or floats),
//! with a default for keys not in the table. Opset 1 maps strings ↔ their index in one list.
use super::str_value;
use crate::engine::{to_ints, vop, BoxOp, OpCtx, Registry, Value, ValueInputs};
use crate::error::{Error, Result};
use crate::onnx::proto::NodeProto;
use crate::onnx::NodeExt;
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor};

const ML: &str = "ai.onnx.ml";

pub fn register(r: &mut Registry) {
    r.add_range(ML, "LabelEncoder", 1, 1, label_encoder_v1);
    r.add_range(ML, "LabelEncoder", 2, i64::MAX, label_encoder);
}

/// A column of keys or values as the attributes give it.
enum Col {
    Str(Vec<String>),
    Num(Tensor),
}

/// Keys → position in the values; later duplicates win, as the spec says.
enum Keys {
    Str(HashMap<String, usize>),
    Int(HashMap<i64, usize>),
    /// f64 bits, with every NaN one key (NaN keys match any NaN) and -0 the same as 0.
    Float(HashMap<u64, usize>),
}

/// Output values; the last entry is the default.
enum Vals {
    Str(Vec<String>),
    Num(Tensor),
}

struct Table {
    keys: Keys,
    vals: Vals,
}

fn is_float(k: Kind) -> bool {
    matches!(k, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16)
}

fn float_key(v: f64) -> u64 {
    if v.is_nan() {
        f64::NAN.to_bits()
    } else if v == 0.0 {
        0
    } else {
        v.to_bits()
    }
}

fn floats(t: &Tensor) -> Result<Vec<f64>> {
    Ok(Vec::<f64>::try_from(t.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_to_device(tch::Device::Cpu)?)?)
}

impl Keys {
    fn new(c: &Col) -> Result<Keys> {
        Ok(match c {
            Col::Str(v) => Keys::Str(v.iter().enumerate().map(|(i, k)| (k.clone(), i)).collect()),
            Col::Num(t) if is_float(t.kind()) => {
                Keys::Float(floats(t)?.into_iter().enumerate().map(|(i, k)| (float_key(k), i)).collect())
            }
            Col::Num(t) => Keys::Int(to_ints(t)?.into_iter().enumerate().map(|(i, k)| (k, i)).collect()),
        })
    }
}

impl Table {
    /// Position of every input element in the values (the default's when absent), and the shape.
    fn positions(&self, x: &ValueInputs) -> Result<(Vec<usize>, Vec<i64>)> {
        let miss = match &self.vals {
            Vals::Str(v) => v.len() - 1,
            Vals::Num(t) => t.size()[0] as usize - 1,
        };
        let v = x.req(0)?;
        Ok(match (v, &self.keys) {
            (Value::Str(s), Keys::Str(m)) => {
                (s.data.iter().map(|k| *m.get(k).unwrap_or(&miss)).collect(), s.dims.clone())
            }
            (Value::Tensor(t), Keys::Int(m)) if !is_float(t.kind()) => {
                (to_ints(t)?.iter().map(|k| *m.get(k).unwrap_or(&miss)).collect(), t.size())
            }
            (Value::Tensor(t), Keys::Float(m)) if is_float(t.kind()) => {
                (floats(t)?.into_iter().map(|k| *m.get(&float_key(k)).unwrap_or(&miss)).collect(), t.size())
            }
            _ => return Err(x.err(format!("input is {}, which does not match the type of the keys", v.describe()))),
        })
    }

    fn apply(&self, x: &ValueInputs) -> Result<Value> {
        let (pos, dims) = self.positions(x)?;
        Ok(match &self.vals {
            Vals::Str(v) => str_value(dims, pos.into_iter().map(|p| v[p].clone()).collect())?,
            Vals::Num(t) => {
                let idx: Vec<i64> = pos.into_iter().map(|p| p as i64).collect();
                let y = t.f_index_select(0, &Tensor::f_from_slice(&idx)?)?.f_reshape(&dims)?;
                // Numeric inputs keep their device; string inputs give CPU tensors (the plan moves them).
                match x.req(0)? {
                    Value::Tensor(i) => Value::Tensor(y.f_to_device(i.device())?),
                    _ => Value::Tensor(y),
                }
            }
        })
    }
}

/// Opset 1: strings → their index in `classes_strings` (default_int64), or int64 → the string at
/// that index (default_string); the input's type picks the direction.
fn label_encoder_v1(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let classes = n.get_strings("classes_strings")?.unwrap_or_default();
    let (def_i, def_s) =
        (n.get_i("default_int64")?.unwrap_or(-1), n.get_s("default_string")?.unwrap_or("_Unused".into()));
    // The first occurrence of a repeated class is its index.
    let mut first = HashMap::new();
    for (i, c) in classes.iter().enumerate() {
        first.entry(c.clone()).or_insert(i);
    }
    let idx: Vec<i64> = (0..classes.len() as i64).collect();
    let to_int = Table {
        keys: Keys::Str(first),
        vals: Vals::Num(Tensor::f_from_slice(&idx.iter().copied().chain([def_i]).collect::<Vec<_>>())?),
    };
    let to_str = Table {
        keys: Keys::Int(idx.iter().map(|&i| (i, i as usize)).collect()),
        vals: Vals::Str(classes.into_iter().chain([def_s]).collect()),
    };
    vop(move |x| {
        let table = if matches!(x.req(0)?, Value::Str(_)) { &to_int } else { &to_str };
        Ok(vec![table.apply(x)?])
    })
}

/// A tensor attribute decoded as a string list or a 1-D tensor.
fn tensor_attr(n: &NodeProto, name: &str) -> Result<Option<Col>> {
    let Some(tp) = n.get_t(name)? else { return Ok(None) };
    let err = |e: Error| n.attr_err(name, e.to_string());
    Ok(Some(match Value::from_tensor_proto(tp, Path::new(".")).map_err(err)? {
        Value::Str(s) => Col::Str(s.data),
        Value::Tensor(t) => Col::Num(t.f_reshape([-1])?),
        v => return Err(n.attr_err(name, format!("decoded as {}", v.describe()))),
    }))
}

/// The one `<prefix>_*` attribute that is set: strings, int64s, floats or (opset 4) a tensor.
fn column(ctx: &OpCtx, prefix: &str) -> Result<(Col, bool)> {
    let n = ctx.node;
    let mut found = Vec::new();
    if let Some(v) = n.get_strings(&format!("{prefix}_strings"))? {
        found.push((Col::Str(v), false));
    }
    if let Some(v) = n.get_ints(&format!("{prefix}_int64s"))? {
        found.push((Col::Num(Tensor::f_from_slice(&v)?), false));
    }
    if let Some(v) = n.get_floats(&format!("{prefix}_floats"))? {
        found.push((Col::Num(Tensor::f_from_slice(&v)?), false));
    }
    if ctx.opset >= 4 {
        if let Some(c) = tensor_attr(n, &format!("{prefix}_tensor"))? {
            found.push((c, true));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        k => Err(n.attr_err(&format!("{prefix}_*"), format!("exactly one must be set, found {k}"))),
    }
}

/// The values with the default appended: `default_tensor` when the values came as a tensor
/// (else the spec's per-type default), otherwise `default_string`/`default_int64`/`default_float`.
fn values_with_default(ctx: &OpCtx, vals: Col, from_tensor: bool) -> Result<Vals> {
    let n = ctx.node;
    let def = if from_tensor { tensor_attr(n, "default_tensor")? } else { None };
    Ok(match vals {
        Col::Str(mut v) => {
            let d = match def {
                Some(Col::Str(d)) if d.len() == 1 => d[0].clone(),
                Some(_) => return Err(n.attr_err("default_tensor", "must hold one string")),
                None if from_tensor => "_Unused".into(),
                None => n.get_s("default_string")?.unwrap_or("_Unused".into()),
            };
            v.push(d);
            Vals::Str(v)
        }
        Col::Num(t) => {
            let k = t.kind();
            let d = match def {
                Some(Col::Num(d)) if d.numel() == 1 => d.f_to_kind(k)?,
                Some(_) => return Err(n.attr_err("default_tensor", "must hold one number")),
                None if is_float(k) => {
                    let f = if from_tensor { -0.0 } else { n.get_f("default_float")?.unwrap_or(-0.0) };
                    Tensor::f_from_slice(&[f as f64])?.f_to_kind(k)?
                }
                None => {
                    let i = if from_tensor { -1 } else { n.get_i("default_int64")?.unwrap_or(-1) };
                    Tensor::f_from_slice(&[i])?.f_to_kind(k)?
                }
            };
            Vals::Num(Tensor::f_cat(&[t, d.f_reshape([1])?], 0)?)
        }
    })
}

/// Opsets 2+: `keys_*` → `values_*`, looked up by value.
fn label_encoder(ctx: &OpCtx) -> Result<BoxOp> {
    let (keys, _) = column(ctx, "keys")?;
    let (vals, from_tensor) = column(ctx, "values")?;
    let len = |c: &Col| match c {
        Col::Str(v) => v.len() as i64,
        Col::Num(t) => t.numel() as i64,
    };
    if len(&keys) != len(&vals) {
        let why = format!("{} keys for {} values", len(&keys), len(&vals));
        return Err(ctx.node.attr_err("keys_*", why));
    }
    let table = Table { keys: Keys::new(&keys)?, vals: values_with_default(ctx, vals, from_tensor)? };
    vop(move |x| Ok(vec![table.apply(x)?]))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{attr_strings, run, strings};
    use super::*;
    use crate::onnx::build::{attr_int, node};
    use crate::onnx::proto::AttributeProto;

    #[test]
    fn v1_maps_both_ways_by_input_type() {
        let mut n = node("LabelEncoder", &["x"], &["y"]);
        n.attribute = vec![attr_strings("classes_strings", &["a", "b", "a"]), attr_int("default_int64", 7)];
        let y = run(&n, ML, 1, &[strings(&[3], &["b", "a", "z"])]).unwrap();
        assert_eq!(to_ints(y[0].as_tensor().unwrap()).unwrap(), [1, 0, 7]);
        let y = run(&n, ML, 1, &[Value::Tensor(Tensor::from_slice(&[2i64, 5]))]).unwrap();
        assert!(matches!(&y[0], Value::Str(s) if s.data == ["a", "_Unused"]));
    }

    #[test]
    fn float_keys_match_nan_and_lengths_must_agree() {
        let mut n = node("LabelEncoder", &["x"], &["y"]);
        let floats = AttributeProto {
            name: Some("keys_floats".into()),
            r#type: Some(6),
            floats: vec![f32::NAN, 0.0],
            ..Default::default()
        };
        n.attribute = vec![floats, attr_strings("values_strings", &["nan", "zero"])];
        let x = Tensor::from_slice(&[-f32::NAN, -0.0, 1.0]);
        let y = run(&n, ML, 2, &[Value::Tensor(x)]).unwrap();
        assert!(matches!(&y[0], Value::Str(s) if s.data == ["nan", "zero", "_Unused"]));
        n.attribute[1] = attr_strings("values_strings", &["nan"]);
        assert!(run(&n, ML, 2, &[]).is_err());
    }
}

//! Quantized models keep their format. A weight stored as integers behind DequantizeLinear (QDQ,
//! what onnxruntime's static quantizer writes: per tensor, per channel or blocked; int8, uint8,
//! int4, uint4, int16, uint16) is lifted into a float working copy of the model that SEMU trains,
//! and the fold re-quantizes `W + U R Vᵀ` with the file's own scales and zero points.
//!
//! In the working copy each lifted weight's DequantizeLinear, and each activation's
//! QuantizeLinear → DequantizeLinear pair, becomes one `FakeQuantize` (semu's own op: same value,
//! straight-through gradient): training sees exactly the integers the export will hold, and the
//! gradient flows through the rounding that would otherwise stop it. The working copy never
//! leaves the process; the export is the original file with new integers.
use crate::engine::convert::{kind_of, to_tensor};
use crate::engine::ops::quant::{dequantized_values, int_range, quantized_values, spread_param, SEMU_DOMAIN};
use crate::error::Result;
use crate::onnx::proto::{NodeProto, OperatorSetIdProto, TensorProto};
use crate::onnx::tensor::set_inline;
use crate::onnx::{DType, NodeExt, OnnxModel};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// One integer weight behind a DequantizeLinear.
pub struct QuantWeight {
    /// The integer initializer (a float one of the same name in the working copy).
    pub name: String,
    pub dtype: DType,
    /// Per tensor, per channel or blocked, as the report says it.
    pub layout: String,
    scale: Tensor,
    zero_point: Option<Tensor>,
    calc: Kind,
    lo: f64,
    hi: f64,
}

/// The float working copy of a quantized model.
pub struct Lifted {
    pub model: OnnxModel,
    pub weights: Vec<QuantWeight>,
    /// Activation QuantizeLinear → DequantizeLinear pairs made differentiable.
    pub activation_pairs: usize,
}

/// What re-quantizing the trained weights did, for the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Requantized {
    /// Integer weights re-quantized (those SEMU changed).
    pub weights: usize,
    /// Their types and layouts, e.g. "int8 per channel (axis 0)".
    pub formats: Vec<String>,
    /// Largest |dequantized integer − trained float weight|: the rounding the fold added.
    pub rounding_max_abs: f64,
    /// The same, in quantization steps (≤ 0.5 unless a value saturated).
    pub rounding_max_steps: f64,
    /// Trained values outside the type's range, clamped.
    pub saturated: i64,
}

fn attr_i(n: &NodeProto, name: &str, default: i64) -> Result<i64> {
    Ok(n.get_i(name)?.unwrap_or(default))
}

fn int_node(op: &str, inputs: Vec<String>, output: &str, attrs: &[(&str, i64)]) -> NodeProto {
    let mut n = crate::onnx::build::node(op, &[], &[output]);
    n.input = inputs;
    n.domain = Some(SEMU_DOMAIN.to_string());
    n.attribute = attrs.iter().map(|(k, v)| crate::onnx::build::attr_int(k, *v)).collect();
    n
}

/// The range a QuantizeLinear/DequantizeLinear pair saturates to: the zero point's type, else
/// `output_dtype`, else uint8.
fn pair_range(q: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> Result<Option<(f64, f64)>> {
    let dtype = match q.input.get(2).filter(|z| !z.is_empty()) {
        Some(z) => match inits.get(z.as_str()) {
            Some(t) => DType::from_onnx(t.data_type())?,
            None => return Ok(None),
        },
        None => match attr_i(q, "output_dtype", 0)? {
            0 => DType::U8,
            c => DType::from_onnx(c as i32)?,
        },
    };
    Ok(int_range(dtype))
}

/// The working copy, or None when no weight is quantized (the model is used as it is).
pub fn lift(model: &OnnxModel) -> Result<Option<Lifted>> {
    let g = model.graph();
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for n in &g.node {
        for i in n.input.iter().chain(crate::engine::plan::implicit_inputs(n).iter()) {
            *uses.entry(inits.get_key_value(i.as_str()).map_or("", |(k, _)| *k)).or_default() += 1;
        }
    }
    let producer: HashMap<&str, &NodeProto> =
        g.node.iter().flat_map(|n| n.output.iter().map(move |o| (o.as_str(), n))).collect();
    let is_dq = |n: &NodeProto| n.op_type() == "DequantizeLinear" && crate::engine::registry::norm_domain(n.domain()).is_empty();
    let mut copy = model.clone();
    let mut weights = Vec::new();
    let mut pairs = 0;
    let mut new_nodes = Vec::with_capacity(g.node.len());
    let mut new_inits: HashMap<String, TensorProto> = HashMap::new();
    for n in &g.node {
        if !is_dq(n) {
            new_nodes.push(n.clone());
            continue;
        }
        let (axis, block) = (attr_i(n, "axis", 1)?, attr_i(n, "block_size", 0)?);
        let layout_attrs = [("axis", axis), ("block_size", block)];
        let (x, s) = (n.input[0].as_str(), n.input.get(1).map(String::as_str).unwrap_or(""));
        let zp = n.input.get(2).map(String::as_str).filter(|z| !z.is_empty());
        // A weight: an integer initializer of rank ≥ 2 that only this node reads, with constant
        // scale and zero point. (Rank-1 int32 tensors are biases: left as they are.)
        if let (Some(w), Some(st)) = (inits.get(x), inits.get(s)) {
            let dtype = DType::from_onnx(w.data_type())?;
            let range = int_range(dtype);
            let zp_init = zp.map(|z| inits.get(z).copied());
            if let (Some((lo, hi)), true, true, false) =
                (range, w.dims.len() >= 2, uses.get(x) == Some(&1), matches!(zp_init, Some(None)))
            {
                let q = to_tensor(&model.tensor(w)?)?;
                let scale = to_tensor(&model.tensor(st)?)?;
                let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
                let spread = |v: &Tensor| spread_param(v, axis, block, &w.dims).map_err(|e| n.node_err(e));
                let sc = spread(&scale.f_to_kind(calc)?)?;
                let z = zp_init
                    .flatten()
                    .map(|t| spread(&crate::engine::convert::computable(&to_tensor(&model.tensor(t)?)?)?.f_to_kind(Kind::Double)?))
                    .transpose()?;
                let fw = dequantized_values(&q.f_to_kind(Kind::Double)?, &sc, z.as_ref(), calc)?.f_to_kind(scale.kind())?;
                let mut t = (*w).clone();
                let fdt = crate::engine::convert::dtype_of(scale.kind())?;
                t.data_type = Some(fdt.onnx_code());
                t.data_location = None;
                t.external_data.clear();
                set_inline(&mut t, &crate::engine::convert::from_tensor(&fw, fdt)?);
                new_inits.insert(x.to_string(), t);
                let layout = match (scale.numel(), block) {
                    (1, _) => "per tensor".to_string(),
                    (_, 0) => format!("per channel (axis {axis})"),
                    _ => format!("blocks of {block} (axis {axis})"),
                };
                weights.push(QuantWeight {
                    name: x.to_string(),
                    dtype,
                    layout,
                    scale: sc,
                    zero_point: z,
                    calc,
                    lo,
                    hi,
                });
                let attrs = [layout_attrs[0], layout_attrs[1], ("lo", lo as i64), ("hi", hi as i64)];
                new_nodes.push(int_node("FakeQuantize", n.input.clone(), &n.output[0], &attrs));
                continue;
            }
        }
        // An activation pair: DequantizeLinear(QuantizeLinear(a, s, zp), s, zp).
        if let Some(q) = producer.get(x).filter(|q| q.op_type() == "QuantizeLinear") {
            let same = q.input.get(1) == n.input.get(1)
                && q.input.get(2).filter(|z| !z.is_empty()) == n.input.get(2).filter(|z| !z.is_empty())
                && attr_i(q, "axis", 1)? == axis
                && attr_i(q, "block_size", 0)? == block;
            if let (true, Some((lo, hi))) = (same, pair_range(q, &inits)?) {
                let mut inputs = n.input.clone();
                inputs[0] = q.input[0].clone();
                let attrs = [layout_attrs[0], layout_attrs[1], ("lo", lo as i64), ("hi", hi as i64)];
                new_nodes.push(int_node("FakeQuantize", inputs, &n.output[0], &attrs));
                pairs += 1;
                continue;
            }
        }
        new_nodes.push(n.clone());
    }
    if weights.is_empty() {
        return Ok(None);
    }
    let graph = copy.proto.graph.as_mut().expect("checked at load");
    graph.node = new_nodes;
    for t in graph.initializer.iter_mut() {
        if let Some(f) = new_inits.remove(t.name()) {
            *t = f;
        }
    }
    copy.proto.opset_import.push(OperatorSetIdProto { domain: Some(SEMU_DOMAIN.into()), version: Some(1) });
    tracing::info!(
        "quantized model: {} integer weight(s) lifted to float for training, {} activation pair(s) made differentiable",
        weights.len(),
        pairs
    );
    Ok(Some(Lifted { model: copy, weights, activation_pairs: pairs }))
}

impl Lifted {
    /// The trained float weights among `weights` re-quantized (integer tensors of each
    /// weight's type, same scales and zero points); other tensors pass through unchanged.
    pub fn requantize(&self, weights: &HashMap<String, Tensor>) -> Result<(HashMap<String, Tensor>, Requantized)> {
        let _g = tch::no_grad_guard();
        let mut out = HashMap::new();
        let mut rep = Requantized::default();
        for (name, t) in weights {
            let Some(q) = self.weights.iter().find(|q| &q.name == name) else {
                out.insert(name.clone(), t.shallow_clone());
                continue;
            };
            let v = t.f_to_device(tch::Device::Cpu)?.f_to_kind(q.calc)?;
            let (raw, ints) = quantized_values(&v, &q.scale, q.zero_point.as_ref(), q.lo, q.hi)?;
            rep.saturated += raw.f_ne_tensor(&ints)?.f_sum(Kind::Int64)?.int64_value(&[]);
            let back = dequantized_values(&ints, &q.scale, q.zero_point.as_ref(), q.calc)?;
            let err = back.f_sub(&v)?.f_abs()?;
            rep.rounding_max_abs = rep.rounding_max_abs.max(err.f_max()?.f_double_value(&[])?);
            let steps = err.f_div(&q.scale.f_abs()?)?.f_max()?.f_double_value(&[])?;
            rep.rounding_max_steps = rep.rounding_max_steps.max(steps);
            rep.weights += 1;
            let format = format!("{} {}", q.dtype.name(), q.layout);
            if !rep.formats.contains(&format) {
                rep.formats.push(format);
            }
            out.insert(name.clone(), ints.f_to_kind(kind_of(q.dtype)?)?);
        }
        Ok((out, rep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{attr_int, node, value, write};

    /// x → DQ(W int8, per channel) → MatMul: the working copy holds W's float values, and the
    /// re-quantized untouched weight gives back the same integers.
    #[test]
    fn lifted_weights_requantize_to_the_same_integers() {
        let wq: Vec<i8> = vec![-128, -3, 0, 7, 127, 42];
        let mut w = TensorProto { name: Some("w".into()), dims: vec![3, 2], data_type: Some(3), ..Default::default() };
        w.raw_data = Some(wq.iter().map(|v| *v as u8).collect());
        let s = crate::onnx::build::f32_init("s", &[2], &[0.5, 0.03]);
        let mut dq = node("DequantizeLinear", &["w", "s"], &["wf"]);
        dq.attribute.push(attr_int("axis", 1));
        let mm = node("MatMul", &["x", "wf"], &["y"]);
        let (x, y) = (value("x", DType::F32, &[1, 3]), value("y", DType::F32, &[1, 2]));
        let (_dir, path) = write(vec![dq, mm], vec![w, s], vec![x], vec![y], 21);
        let m = OnnxModel::load(&path).unwrap();
        let l = lift(&m).unwrap().expect("one weight");
        assert_eq!(l.weights.len(), 1);
        assert_eq!(l.weights[0].layout, "per channel (axis 1)");
        let f = l.model.initializer("w").unwrap();
        assert_eq!(f.data_type(), 1);
        let vals = l.model.tensor(f).unwrap().to_f32_vec().unwrap();
        // (q − 0) · s in f32, W's rows alternating between the two channel scales.
        let want: Vec<f32> = wq.iter().enumerate().map(|(i, &q)| q as f32 * [0.5f32, 0.03][i % 2]).collect();
        assert_eq!(vals, want);
        let ft = to_tensor(&l.model.tensor(f).unwrap()).unwrap();
        let (back, rep) = l.requantize(&HashMap::from([("w".to_string(), ft)])).unwrap();
        assert_eq!(Vec::<i8>::try_from(back["w"].reshape([-1])).unwrap(), wq);
        assert_eq!((rep.weights, rep.saturated), (1, 0));
        assert!(rep.rounding_max_steps < 1e-3, "{}", rep.rounding_max_steps);
        assert!(l.model.graph().node.iter().any(|n| n.op_type() == "FakeQuantize"));
    }
}

//! onnxruntime's QOperator format (`quantize_static(..., quant_format=QuantFormat.QOperator)`):
//! QuantizeLinear on the input, QLinearConv / QLinearMatMul / `com.microsoft::QGemm` on uint8 or
//! int8 activations (MaxPool, Flatten and the like in between), DequantizeLinear at the output;
//! integer weights, int32 biases.
//!
//! In the working copy each quantized activation holds its dequantized float value
//! `(q − zp) · s` (which MaxPool, Flatten, Reshape… treat as they treat `q`), and each integer op
//! becomes its float twin over the operands' integer forms (`FakeQuantize integer=1`, exact in
//! f64): the same integer sum plus the int32 bias, the same multiplier formed in the same types
//! as the engine's op, and a `FakeQuantize` that rounds half to even and saturates to the output
//! zero point's type. Training therefore sees the integers the export computes, to the bit, and
//! the gradient passes each rounding straight through.
use super::{attr_i, init_from, int_node, QuantWeight, Rewrite};
use crate::engine::convert::{computable, dtype_of, to_tensor};
use crate::engine::ops::quant::{dequantized_values, int_range, spread_param};
use crate::error::Result;
use crate::onnx::build::{attr_int, node};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::{DType, NodeExt, OnnxModel};
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// Ops that move or select quantized values without arithmetic: on `(q − zp) · s` (s > 0) they
/// compute what they compute on `q`.
const PASS: &[&str] = &["MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity"];

fn is_qop(n: &NodeProto) -> bool {
    matches!((n.domain(), n.op_type()), ("", "QLinearConv" | "QLinearMatMul") | ("com.microsoft", "QGemm"))
}

fn input(n: &NodeProto, i: usize) -> Option<&str> {
    n.input.get(i).map(String::as_str).filter(|s| !s.is_empty())
}

/// The quantized activations of a QOperator graph, each with the (scale, zero point) names it
/// was quantized with; None when the graph has no QLinearConv/QLinearMatMul/QGemm. Every reader
/// of one must be an op this module lifts: anything else is an error naming it.
pub(super) fn activations(g: &GraphProto) -> Result<Option<HashMap<String, (String, String)>>> {
    if !g.node.iter().any(is_qop) {
        return Ok(None);
    }
    let mut acts: HashMap<String, (String, String)> = HashMap::new();
    for n in &g.node {
        let (s, z) = match (n.domain(), n.op_type()) {
            ("", "QuantizeLinear") => (1, 2),
            ("", "QLinearConv" | "QLinearMatMul") => (6, 7),
            ("com.microsoft", "QGemm") if input(n, 7).is_some() => (7, 8),
            ("", op) if PASS.contains(&op) => {
                if let Some(p) = input(n, 0).and_then(|x| acts.get(x)).cloned() {
                    acts.insert(n.output[0].clone(), p);
                }
                continue;
            }
            _ => continue,
        };
        let (Some(s), Some(z)) = (input(n, s), input(n, z)) else {
            return Err(n.node_err("a QOperator model's quantized values need an explicit scale and zero point"));
        };
        acts.insert(n.output[0].clone(), (s.to_string(), z.to_string()));
    }
    for n in &g.node {
        for (i, x) in n.input.iter().enumerate().filter(|(_, x)| acts.contains_key(x.as_str())) {
            let ok = match (n.domain(), n.op_type()) {
                ("", "QLinearMatMul") => i == 0 || i == 3,
                ("", "QLinearConv" | "DequantizeLinear") | ("com.microsoft", "QGemm") => i == 0,
                ("", op) => PASS.contains(&op) && i == 0,
                _ => false,
            };
            if !ok {
                return Err(n.node_err(format!(
                    "reads the quantized activation '{x}' (input {i}): SEMU lifts QOperator models made of \
                     QuantizeLinear, QLinearConv, QLinearMatMul, com.microsoft QGemm, DequantizeLinear and \
                     {}; quantize the float model in QDQ format instead (QuantFormat.QDQ)",
                    PASS.join("/")
                )));
            }
        }
    }
    if let Some(o) = g.output.iter().find(|o| acts.contains_key(o.name())) {
        return Err(crate::error::Error::msg(format!(
            "graph output '{}' is a quantized integer tensor: SEMU lifts QOperator models whose outputs are \
             dequantized (DequantizeLinear)",
            o.name()
        )));
    }
    Ok(Some(acts))
}

/// The working copy's node for a QuantizeLinear or DequantizeLinear on a quantized activation:
/// the pair's value as one `FakeQuantize`, and the DequantizeLinear an Identity (its input already
/// holds the dequantized value). None for any other node.
pub(super) fn activation_node(
    n: &NodeProto,
    acts: &HashMap<String, (String, String)>,
    model: &OnnxModel,
    inits: &HashMap<&str, &TensorProto>,
) -> Result<Option<NodeProto>> {
    let x = input(n, 0).unwrap_or("");
    match (n.domain(), n.op_type()) {
        ("", "QuantizeLinear") if acts.contains_key(n.output[0].as_str()) => {
            let (lo, hi) = zp_range(n, input(n, 2), inits)?;
            let attrs = [("axis", attr_i(n, "axis", 1)?), ("lo", lo as i64), ("hi", hi as i64)];
            Ok(Some(int_node("FakeQuantize", n.input.clone(), &n.output[0], &attrs)))
        }
        ("", "DequantizeLinear") if acts.contains_key(x) => {
            same_params(n, x, 1, 2, acts, model, inits)?;
            Ok(Some(node("Identity", &[x], &[&n.output[0]])))
        }
        _ => Ok(None),
    }
}

/// The saturation range of a zero point's integer type.
fn zp_range(n: &NodeProto, zp: Option<&str>, inits: &HashMap<&str, &TensorProto>) -> Result<(f64, f64)> {
    let t = zp.and_then(|z| inits.get(z)).ok_or_else(|| n.node_err("needs a constant zero point"))?;
    let d = DType::from_onnx(t.data_type())?;
    int_range(d)
        .ok_or_else(|| n.node_err(format!("zero point '{}' has type {}, not an integer type", t.name(), d.name())))
}

/// Errors unless input `x` of `n` is read with the scale and zero point (inputs `s`, `z`) it was
/// quantized with (the same names, or constants of the same bytes).
fn same_params(
    n: &NodeProto,
    x: &str,
    s: usize,
    z: usize,
    acts: &HashMap<String, (String, String)>,
    model: &OnnxModel,
    inits: &HashMap<&str, &TensorProto>,
) -> Result<()> {
    let (s0, z0) = &acts[x];
    let same = |a: &str, b: Option<&str>| -> Result<bool> {
        let Some(b) = b else { return Ok(false) };
        Ok(a == b
            || match (inits.get(a), inits.get(b)) {
                (Some(p), Some(q)) => model.tensor(p)? == model.tensor(q)?,
                _ => false,
            })
    };
    if same(s0, input(n, s))? && same(z0, input(n, z))? {
        return Ok(());
    }
    Err(n.node_err(format!(
        "reads '{x}' with scale/zero point {:?}/{:?}, but it was quantized with '{s0}'/'{z0}': SEMU cannot \
         lift a requantizing read",
        input(n, s),
        input(n, z)
    )))
}

/// A constant input as a tensor, or an error naming it.
fn constant(model: &OnnxModel, n: &NodeProto, i: usize, inits: &HashMap<&str, &TensorProto>) -> Result<Tensor> {
    let name = input(n, i).ok_or_else(|| n.node_err(format!("input {i} is missing")))?;
    let t = inits.get(name).ok_or_else(|| n.node_err(format!("input {i} ('{name}') must be a constant")))?;
    to_tensor(&model.tensor(t)?)
}

struct Ctx<'a> {
    model: &'a OnnxModel,
    n: &'a NodeProto,
    inits: &'a HashMap<&'a str, &'a TensorProto>,
    uses: &'a HashMap<&'a str, usize>,
    acts: &'a HashMap<String, (String, String)>,
    nodes: Vec<NodeProto>,
    added: Vec<TensorProto>,
    weight: Option<(QuantWeight, TensorProto)>,
}

impl Ctx<'_> {
    /// `{y}.semu_{what}`: a value of the working copy named after the op's output.
    fn name(&self, what: &str) -> String {
        format!("{}.semu_{what}", self.n.output[0])
    }

    /// Operand `i` (scale `i + 1`, zero point `i + 2`) in its integer form `q − zp`, f64: a
    /// quantized activation, or the op's integer weight (lifted to float, channels along `axis`).
    fn operand(&mut self, i: usize, axis: i64) -> Result<String> {
        let n = self.n;
        let x = input(n, i).ok_or_else(|| n.node_err(format!("input {i} is missing")))?;
        let out = self.name(&format!("int{i}"));
        let (lo, hi) = zp_range(n, input(n, i + 2), self.inits)?;
        let mut attrs = vec![("lo", lo as i64), ("hi", hi as i64), ("integer", 1)];
        if self.acts.contains_key(x) {
            same_params(n, x, i + 1, i + 2, self.acts, self.model, self.inits)?;
        } else {
            self.lift_weight(x, i, axis, lo, hi)?;
            attrs.push(("axis", axis));
        }
        let inputs = n.input[i..i + 3].to_vec();
        self.nodes.push(int_node("FakeQuantize", inputs, &out, &attrs));
        Ok(out)
    }

    /// The integer initializer `w` (input `i`) as the float weight SEMU trains.
    fn lift_weight(&mut self, w: &str, i: usize, axis: i64, lo: f64, hi: f64) -> Result<()> {
        let n = self.n;
        let t = self.inits.get(w).filter(|t| t.dims.len() >= 2 && self.uses.get(w) == Some(&1)).ok_or_else(|| {
            n.node_err(format!(
                "input {i} ('{w}') is neither a quantized activation nor an integer weight (a constant of rank >= 2 \
                 that only this node reads)"
            ))
        })?;
        let dtype = DType::from_onnx(t.data_type())?;
        if int_range(dtype) != Some((lo, hi)) {
            return Err(n.node_err(format!("weight '{w}' ({}) and its zero point differ in type", dtype.name())));
        }
        let scale = constant(self.model, n, i + 1, self.inits)?;
        let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let spread = |v: &Tensor| spread_param(v, axis, 0, &t.dims).map_err(|e| n.node_err(e));
        let sc = spread(&scale.f_to_kind(calc)?)?;
        let z = spread(&computable(&constant(self.model, n, i + 2, self.inits)?)?.f_to_kind(Kind::Double)?)?;
        let q = computable(&to_tensor(&self.model.tensor(t)?)?)?.f_to_kind(Kind::Double)?;
        let fw = dequantized_values(&q, &sc, Some(&z), calc)?.f_to_kind(scale.kind())?;
        let layout = if scale.numel() == 1 { "per tensor" } else { "per channel" };
        let weight = QuantWeight {
            name: w.to_string(),
            dtype,
            layout: format!("{layout}, QOperator ({})", n.op_type()),
            scale: sc,
            zero_point: Some(z),
            calc,
            lo,
            hi,
            original: q,
            packing: None,
            // The int32 bias and the requantization multiplier were made with these scales.
            rescale: None,
        };
        self.weight = Some((weight, init_from(w, &fw, dtype_of(scale.kind())?)?));
        Ok(())
    }

    /// A constant added to the working copy.
    fn constant(&mut self, what: &str, t: &Tensor) -> Result<String> {
        let name = self.name(what);
        self.added.push(init_from(&name, t, dtype_of(t.kind())?)?);
        Ok(name)
    }

    /// `Cast(input i, to f64)`, for the int32 bias.
    fn bias(&mut self, i: usize) -> Option<String> {
        let b = input(self.n, i)?;
        let out = self.name("bias");
        let mut c = node("Cast", &[b], &[&out]);
        c.attribute.push(attr_int("to", DType::F64.onnx_code() as i64));
        self.nodes.push(c);
        Some(out)
    }

    /// From `v` (f64, the engine's value before rounding divided by `scale`): the output's
    /// integers saturated to the zero point's type (input `z`), dequantized with scale input `s`
    /// into the op's output.
    fn requantize(&mut self, v: &str, scale: &str, s: usize, z: usize) -> Result<()> {
        let n = self.n;
        let (lo, hi) = zp_range(n, input(n, z), self.inits)?;
        let (q, f) = (self.name("out_int"), self.name("out_float"));
        let zp = input(n, z).unwrap_or_default();
        let attrs = [("lo", lo as i64), ("hi", hi as i64), ("integer", 1)];
        self.nodes.push(int_node("FakeQuantize", vec![v.into(), scale.into(), zp.into()], &q, &attrs));
        let ys = constant(self.model, n, s, self.inits)?;
        let mut c = node("Cast", &[&q], &[&f]);
        c.attribute.push(attr_int("to", dtype_of(ys.kind())?.onnx_code() as i64));
        self.nodes.push(c);
        self.nodes.push(node("Mul", &[&f, input(n, s).unwrap_or_default()], &[&n.output[0]]));
        Ok(())
    }

    fn done(self) -> Rewrite {
        Rewrite { weight: self.weight, nodes: self.nodes, added: self.added }
    }
}

/// QLinearConv: `Conv(x − x_zp, w − w_zp) + bias` in f64, times `x_s · w_s / y_s` (f32, as the
/// engine's op forms it), rounded and saturated.
fn qlinear_conv(cx: &mut Ctx) -> Result<()> {
    let n = cx.n;
    let (x, w) = (cx.operand(0, 1)?, cx.operand(3, 0)?);
    let acc = cx.name("acc");
    let mut inputs = vec![x, w];
    inputs.extend(cx.bias(8));
    let mut conv = node("Conv", &[], &[&acc]);
    conv.input = inputs;
    conv.attribute = n.attribute.clone();
    cx.nodes.push(conv);
    // A per-channel multiplier runs along the output's channel dim: [C, 1, …].
    let rank = cx.weight.as_ref().map_or(2, |(w, _)| w.original.dim());
    let ws = constant(cx.model, n, 4, cx.inits)?;
    let ws = if ws.numel() > 1 { ws.f_reshape([vec![-1], vec![1; rank.max(2) - 2]].concat())? } else { ws };
    let m = constant(cx.model, n, 1, cx.inits)?.f_mul(&ws)?.f_div(&constant(cx.model, n, 6, cx.inits)?)?;
    let m = cx.constant("multiplier", &m.f_to_kind(Kind::Double)?)?;
    let (scaled, one) = (cx.name("scaled"), cx.constant("one", &Tensor::from(1.0f64))?);
    cx.nodes.push(node("Mul", &[&acc, &m], &[&scaled]));
    cx.requantize(&scaled, &one, 6, 7)
}

/// QLinearMatMul: `(a − a_zp)(b − b_zp)` in f64, times `a_s · b_s / y_s` (f32), rounded and
/// saturated. B is a weight (per column: axis 1) or another quantized activation.
fn qlinear_matmul(cx: &mut Ctx) -> Result<()> {
    let n = cx.n;
    if constant(cx.model, n, 1, cx.inits)?.numel() != 1 {
        return Err(n.node_err("a per-row a_scale is not supported"));
    }
    let (a, b) = (cx.operand(0, 1)?, cx.operand(3, 1)?);
    let acc = cx.name("acc");
    cx.nodes.push(node("MatMul", &[&a, &b], &[&acc]));
    let m = constant(cx.model, n, 1, cx.inits)?
        .f_mul(&constant(cx.model, n, 4, cx.inits)?)?
        .f_div(&constant(cx.model, n, 6, cx.inits)?)?;
    let m = cx.constant("multiplier", &m.f_to_kind(Kind::Double)?)?;
    let (scaled, one) = (cx.name("scaled"), cx.constant("one", &Tensor::from(1.0f64))?);
    cx.nodes.push(node("Mul", &[&acc, &m], &[&scaled]));
    cx.requantize(&scaled, &one, 6, 7)
}

/// com.microsoft QGemm: `(A − a_zp)(B − b_zp) + C` in f64, times `a_s · b_s · alpha` (f64, as
/// the engine's op forms it); a float output as it is, a quantized one divided by y_s, rounded
/// and saturated.
fn qgemm(cx: &mut Ctx) -> Result<()> {
    let n = cx.n;
    let tb = attr_i(n, "transB", 0)? != 0;
    let (a, b) = (cx.operand(0, 1)?, cx.operand(3, if tb { 0 } else { 1 })?);
    let acc = cx.name("acc");
    let mut inputs = vec![a, b];
    inputs.extend(cx.bias(6));
    let mut gemm = node("Gemm", &[], &[&acc]);
    gemm.input = inputs;
    gemm.attribute = n.attribute.iter().filter(|a| a.name() == "transA" || a.name() == "transB").cloned().collect();
    cx.nodes.push(gemm);
    let alpha = n.get_f("alpha")?.map_or(1.0, f64::from);
    let bs = constant(cx.model, n, 4, cx.inits)?.f_to_kind(Kind::Double)?;
    let bs = if bs.numel() > 1 { bs.f_reshape([1, -1])? } else { bs.f_reshape([1, 1])? };
    let m = constant(cx.model, n, 1, cx.inits)?.f_to_kind(Kind::Double)?.f_reshape([1, 1])?;
    let m = cx.constant("multiplier", &m.f_mul(&bs)?.f_mul_scalar(alpha)?)?;
    let y = cx.name("scaled");
    cx.nodes.push(node("Mul", &[&acc, &m], &[&y]));
    if input(n, 7).is_none() {
        let mut c = node("Cast", &[&y], &[&n.output[0]]);
        c.attribute.push(attr_int("to", DType::F32.onnx_code() as i64));
        cx.nodes.push(c);
        return Ok(());
    }
    let ys = cx.constant("y_scale", &constant(cx.model, n, 7, cx.inits)?.f_to_kind(Kind::Double)?)?;
    cx.requantize(&y, &ys, 7, 8)
}

/// The working copy's nodes for a QLinearConv, QLinearMatMul or QGemm, with its lifted weight.
pub(super) fn lift_op(
    model: &OnnxModel,
    n: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    uses: &HashMap<&str, usize>,
    acts: &HashMap<String, (String, String)>,
) -> Result<Option<Rewrite>> {
    let mut cx = Ctx { model, n, inits, uses, acts, nodes: Vec::new(), added: Vec::new(), weight: None };
    match (n.domain(), n.op_type()) {
        ("", "QLinearConv") => qlinear_conv(&mut cx)?,
        ("", "QLinearMatMul") => qlinear_matmul(&mut cx)?,
        ("com.microsoft", "QGemm") => qgemm(&mut cx)?,
        _ => return Ok(None),
    }
    Ok(Some(cx.done()))
}

#[cfg(test)]
mod tests {
    use super::super::lift;
    use crate::engine::{Plan, PlanOptions, Registry};
    use crate::onnx::build::{f32_init, node, value, write};
    use crate::onnx::proto::TensorProto;
    use crate::onnx::{DType, OnnxModel};
    use std::collections::HashMap;
    use tch::Tensor;

    fn ints(name: &str, dtype: DType, dims: &[i64], v: &[i64]) -> TensorProto {
        TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(dtype.onnx_code()),
            raw_data: Some(v.iter().map(|x| *x as u8).collect()),
            ..Default::default()
        }
    }

    /// x → QuantizeLinear → QLinearMatMul(W int8, per-column scales) → `extra` → DequantizeLinear.
    fn qmatmul(extra: Option<&str>) -> (tempfile::TempDir, std::path::PathBuf) {
        let w: Vec<i64> = (0..12).map(|i| (i * 37 % 255) - 127).collect();
        let inits = vec![
            f32_init("xs", &[], &[0.05]),
            ints("xz", DType::U8, &[], &[128]),
            ints("w", DType::I8, &[4, 3], &w),
            f32_init("ws", &[3], &[0.02, 0.011, 0.03]),
            ints("wz", DType::I8, &[3], &[0, 3, -2]),
            f32_init("ys", &[], &[0.07]),
            ints("yz", DType::U8, &[], &[100]),
        ];
        let mut nodes = vec![
            node("QuantizeLinear", &["x", "xs", "xz"], &["xq"]),
            node("QLinearMatMul", &["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz"], &["yq"]),
        ];
        let last = match extra {
            Some(op) => {
                nodes.push(node(op, &["yq", "ys", "yz", "yq", "ys", "yz", "ys", "yz"], &["zq"]));
                "zq"
            }
            None => "yq",
        };
        nodes.push(node("DequantizeLinear", &[last, "ys", "yz"], &["y"]));
        write(nodes, inits, vec![value("x", DType::F32, &[5, 4])], vec![value("y", DType::F32, &[5, 3])], 13)
    }

    fn run(m: &OnnxModel, x: &Tensor) -> Tensor {
        let plan = Plan::new(m, &Registry::standard(), &PlanOptions::default()).unwrap();
        plan.run(&HashMap::from([("x".to_string(), x.shallow_clone())])).unwrap().remove(0)
    }

    /// The working copy computes the QOperator graph's values to the bit (saturating outputs
    /// included), the weight becomes float, and the untouched weight re-quantizes to its integers.
    #[test]
    fn a_qlinear_matmul_lifts_to_the_same_values() {
        let (_dir, path) = qmatmul(None);
        let m = OnnxModel::load(&path).unwrap();
        let l = lift(&m).unwrap().expect("a weight");
        assert_eq!((l.weights.len(), l.activation_pairs), (1, 1));
        assert_eq!(l.weights[0].layout, "per channel, QOperator (QLinearMatMul)");
        let x = Tensor::linspace(-6.0, 6.0, 20, (tch::Kind::Float, tch::Device::Cpu)).reshape([5, 4]);
        let (a, b) = (run(&m, &x), run(&l.model, &x));
        assert!(a.equal(&b), "{a} vs {b}");
        // Both ends of the uint8 output range are reached, so saturation is compared too.
        let q = (&a / 0.07 + 100.0).round();
        assert!(q.min().double_value(&[]) == 0.0 && q.max().double_value(&[]) == 255.0, "{q}");
        let f = l.model.initializer("w").unwrap();
        assert_eq!(f.data_type(), DType::F32.onnx_code());
        let ft = crate::engine::convert::to_tensor(&l.model.tensor(f).unwrap()).unwrap();
        let (back, rep) = l.requantize(&HashMap::from([("w".to_string(), ft)])).unwrap();
        let orig = crate::engine::convert::to_tensor(&m.tensor(m.initializer("w").unwrap()).unwrap()).unwrap();
        assert!(back["w"].equal(&orig));
        assert_eq!((rep.changed_integers, rep.saturated), (0, 0));
    }

    /// A QOperator op the lift has no float twin for is an error naming it, not a wrong model.
    #[test]
    fn an_unliftable_qoperator_op_is_an_error_naming_it() {
        let (_dir, path) = qmatmul(Some("QLinearAdd"));
        let m = OnnxModel::load(&path).unwrap();
        let err = lift(&m).err().expect("refused").to_string();
        assert!(err.contains("QLinearAdd") && err.contains("'yq'") && err.contains("QDQ"), "{err}");
    }
}

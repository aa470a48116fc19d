//! Quantized models keep their format. A weight stored as integers behind DequantizeLinear (QDQ,
//! what onnxruntime's static quantizer writes: per tensor, per channel or blocked; int8, uint8,
//! int4, uint4, int16, uint16), behind ConvInteger/MatMulInteger (what its dynamic quantizer
//! writes), packed in onnxruntime's `MatMulNBits` (2/4/8-bit blocks, what its 4-bit quantizer
//! writes for LLMs) or read by QLinearConv/QLinearMatMul/QGemm on integer activations (its static
//! quantizer's QOperator format, [`qop`]) is lifted into a float working copy of the model that
//! SEMU trains, and the fold re-quantizes `W + U R Vᵀ` with the file's own scales and zero points.
//!
//! In the working copy each lifted weight's DequantizeLinear (a MatMulNBits becomes
//! `MatMul(A, FakeQuantize(W)ᵀ)`; an integer op, its float twin on fake-quantized operands), and
//! each activation's
//! QuantizeLinear → DequantizeLinear pair, becomes one `FakeQuantize` (semu's own op: same value,
//! straight-through gradient): training sees exactly the integers the export will hold, and the
//! gradient flows through the rounding that would otherwise stop it. The working copy never
//! leaves the process; the export is the original file with new integers.
use crate::engine::convert::{kind_of, to_tensor};
use crate::engine::ops::contrib::quant::unpack;
use crate::engine::ops::quant::{dequantized_values, int_range, quantized_values, spread_param, SEMU_DOMAIN};
use crate::error::{Error, Result};
use crate::onnx::proto::{NodeProto, OperatorSetIdProto, TensorProto};
use crate::onnx::tensor::set_inline;
use crate::onnx::{DType, NodeExt, OnnxModel};
use std::collections::HashMap;
use tch::{Kind, Tensor};

mod qop;

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
    /// The file's integers, f64, in the float weight's shape (to count what changed).
    original: Tensor,
    /// MatMulNBits' bit packing, when the weight is stored that way.
    packing: Option<Packing>,
    /// Where new scales can go (`--requantize recompute`): a per-tensor or per-channel scale
    /// (and zero point) that only this weight uses.
    rescale: Option<Rescale>,
}

struct Rescale {
    scale: String,
    zero_point: Option<String>,
    /// The channel axis of the weight; None: one scale for the tensor.
    axis: Option<usize>,
    /// The file's scale values (kept where a channel is all zero).
    raw: Tensor,
}

impl Rescale {
    /// For a weight of `dims` with scale `s` (values `raw`) and zero point `zp` along `axis`,
    /// when only one node reads each and the layout is per tensor or per channel.
    fn new(
        s: &str,
        zp: Option<&str>,
        raw: &Tensor,
        axis: i64,
        block: i64,
        dims: &[i64],
        uses: &HashMap<&str, usize>,
    ) -> Option<Self> {
        let once = |n: &str| uses.get(n) == Some(&1);
        if block != 0 || !once(s) || !zp.is_none_or(once) {
            return None;
        }
        let r = dims.len() as i64;
        let axis = (raw.numel() > 1).then(|| axis.rem_euclid(r.max(1)) as usize);
        Some(Rescale { scale: s.into(), zero_point: zp.map(str::to_string), axis, raw: raw.shallow_clone() })
    }
}

/// MatMulNBits' layout: B is uint8 [N, blocks, block·bits/8], values `bits` wide, lowest bits
/// first; K may end inside the last block.
struct Packing {
    bits: i64,
    block: i64,
    /// The unpacked integers [N, blocks·block], padding included (kept as the file has it).
    padded: Tensor,
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
    /// Integers that differ from the file's.
    pub changed_integers: i64,
    /// `--requantize recompute`: the scales (and zero points) were fitted to the trained weights.
    pub scales_recomputed: bool,
}

/// The inverse of MatMulNBits' [`unpack`]: [..., m · 8/bits] values in [0, 2^bits) → [..., m] uint8.
fn pack_bits(t: &Tensor, bits: i64) -> Result<Tensor> {
    let per = 8 / bits;
    let mut shape = t.size();
    let last = shape.pop().unwrap_or(1);
    let v = t.f_to_kind(Kind::Int64)?.f_reshape([shape.clone(), vec![last / per, per]].concat())?;
    let weights = Tensor::f_from_slice(&(0..per).map(|i| 1i64 << (i * bits)).collect::<Vec<_>>())?;
    shape.push(last / per);
    Ok(v.f_mul(&weights)?.f_sum_dim_intlist(-1, false, Kind::Int64)?.f_to_kind(Kind::Uint8)?.f_reshape(&shape)?)
}

/// One quantized op's rewrite in the working copy: the nodes standing for it, its weight with the
/// float initializer (named as the integer one it replaces), and any initializers added.
struct Rewrite {
    weight: Option<(QuantWeight, TensorProto)>,
    nodes: Vec<NodeProto>,
    added: Vec<TensorProto>,
}

fn init_from(name: &str, t: &Tensor, dtype: DType) -> Result<TensorProto> {
    let data = crate::engine::convert::from_tensor(t, dtype)?;
    let mut p = TensorProto {
        name: Some(name.into()),
        dims: data.dims.clone(),
        data_type: Some(dtype.onnx_code()),
        ..Default::default()
    };
    set_inline(&mut p, &data);
    Ok(p)
}

/// A MatMulNBits whose B, scales and (uint8) zero points are constants only it reads, as
/// `FakeQuantize → Transpose → MatMul (→ Add bias)` over a float [N, K] weight named as B.
fn lift_nbits(
    model: &OnnxModel,
    n: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    uses: &HashMap<&str, usize>,
) -> Result<Option<Rewrite>> {
    let input = |i: usize| n.input.get(i).map(String::as_str).filter(|s| !s.is_empty());
    let (Some(b_name), Some(s_name)) = (input(1), input(2)) else { return Ok(None) };
    let (Some(b), Some(st)) = (inits.get(b_name), inits.get(s_name)) else { return Ok(None) };
    let zp = match input(3) {
        Some(z) => match inits.get(z).filter(|t| t.data_type() == 2) {
            Some(t) => Some(*t),
            None => return Ok(None), // float or computed zero points: left as they are
        },
        None => None,
    };
    if b.data_type() != 2 || uses.get(b_name) != Some(&1) || input(4).is_some() {
        return Ok(None);
    }
    let (k, nn, bits, block) =
        (attr_i(n, "K", 0)?, attr_i(n, "N", 0)?, attr_i(n, "bits", 4)?, attr_i(n, "block_size", 0)?);
    if ![2, 4, 8].contains(&bits) || k < 1 || nn < 1 || block < 1 || block * bits % 8 != 0 {
        return Ok(None);
    }
    let blocks = (k + block - 1) / block;
    let blob = block * bits / 8;
    let bq = to_tensor(&model.tensor(b)?)?;
    let scale = to_tensor(&model.tensor(st)?)?;
    if bq.numel() as i64 != nn * blocks * blob || scale.numel() as i64 != nn * blocks {
        return Err(n.node_err(format!(
            "B {:?} / scales {:?} do not fit N {nn}, K {k}, block {block}",
            bq.size(),
            scale.size()
        )));
    }
    let padded = unpack(&bq.f_reshape([nn, blocks * blob])?, bits)?.f_to_kind(Kind::Double)?;
    let zpv = match zp {
        Some(z) => {
            let z = to_tensor(&model.tensor(z)?)?;
            unpack(&z.f_reshape([nn, -1])?, bits)?.f_narrow(1, 0, blocks)?
        }
        None => Tensor::f_full([nn, blocks], 1i64 << (bits - 1), (Kind::Int64, tch::Device::Cpu))?,
    }
    .f_to_kind(Kind::Uint8)?;
    let scale = scale.f_reshape([nn, blocks])?;
    let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let shape = [nn, k];
    let spread = |v: &Tensor| spread_param(v, 1, block, &shape).map_err(|e| n.node_err(e));
    let (sc, z) = (spread(&scale.f_to_kind(calc)?)?, spread(&zpv.f_to_kind(Kind::Double)?)?);
    let original = padded.f_narrow(1, 0, k)?;
    let fw = dequantized_values(&original, &sc, Some(&z), calc)?.f_to_kind(scale.kind())?;
    let fdt = crate::engine::convert::dtype_of(scale.kind())?;
    let (s_new, z_new) = (format!("{s_name}.semu_blocks"), format!("{b_name}.semu_zero_points"));
    let float = init_from(b_name, &fw, fdt)?;
    let added = vec![init_from(&s_new, &scale, fdt)?, init_from(&z_new, &zpv, DType::U8)?];
    let (fq, wt, y) = (format!("{b_name}.semu_weight"), format!("{b_name}.semu_weight_t"), n.output[0].clone());
    let hi = ((1i64 << bits) - 1) as f64;
    let attrs = [("axis", 1), ("block_size", block), ("lo", 0), ("hi", hi as i64)];
    let mut nodes = vec![int_node("FakeQuantize", vec![b_name.into(), s_new, z_new], &fq, &attrs)];
    let mut t = crate::onnx::build::node("Transpose", &[&fq], &[&wt]);
    t.attribute.push(crate::onnx::build::attr_ints("perm", &[1, 0]));
    nodes.push(t);
    match input(5) {
        Some(bias) => {
            let mm = format!("{y}.semu_matmul");
            nodes.push(crate::onnx::build::node("MatMul", &[&n.input[0], &wt], &[&mm]));
            nodes.push(crate::onnx::build::node("Add", &[&mm, bias], &[&y]));
        }
        None => nodes.push(crate::onnx::build::node("MatMul", &[&n.input[0], &wt], &[&y])),
    }
    let q = QuantWeight {
        name: b_name.to_string(),
        dtype: if bits == 8 {
            DType::U8
        } else if bits == 4 {
            DType::U4
        } else {
            DType::U2
        },
        layout: format!("MatMulNBits blocks of {block}"),
        scale: sc,
        zero_point: Some(z),
        calc,
        lo: 0.0,
        hi,
        original,
        packing: Some(Packing { bits, block, padded }),
        rescale: None,
    };
    Ok(Some(Rewrite { weight: Some((q, float)), nodes, added }))
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

/// The dynamic quantizer's pattern: `DynamicQuantizeLinear(x) → (a, a_s, a_zp)`,
/// `ConvInteger/MatMulInteger(a, W, a_zp, w_zp) → Cast → Mul(·, a_s·w_s)`. The integer op
/// becomes `Conv/MatMul` in f64 over `FakeQuantize(x, a_s, a_zp)` and `FakeQuantize(W_f, w_s,
/// w_zp)` in their integer form: the same exact integer sum (a float one would round, and the
/// next layer's dynamic range would move with it), which the Cast and Mul that follow scale as
/// before; W_f, the trained weight, stays in real units.
fn lift_integer(
    model: &OnnxModel,
    n: &NodeProto,
    inits: &HashMap<&str, &TensorProto>,
    uses: &HashMap<&str, usize>,
    producer: &HashMap<&str, &NodeProto>,
    users: &HashMap<&str, Vec<&NodeProto>>,
) -> Result<Option<Rewrite>> {
    let conv = n.op_type() == "ConvInteger";
    let input = |i: usize| n.input.get(i).map(String::as_str).filter(|s| !s.is_empty());
    let (Some(a), Some(w_name)) = (input(0), input(1)) else { return Ok(None) };
    let Some(d) = producer.get(a).filter(|d| d.op_type() == "DynamicQuantizeLinear" && d.output.len() == 3) else {
        return Ok(None);
    };
    let (a_s, a_zp) = (d.output[1].as_str(), d.output[2].as_str());
    let Some(w) = inits.get(w_name).filter(|w| w.dims.len() >= 2 && uses.get(w_name) == Some(&1)) else {
        return Ok(None);
    };
    let Some((lo, hi)) = int_range(DType::from_onnx(w.data_type())?) else { return Ok(None) };
    if input(2) != Some(a_zp) {
        return Ok(None);
    }
    let w_zp = match input(3) {
        Some(z) => match inits.get(z) {
            Some(t) => Some(*t),
            None => return Ok(None),
        },
        None => None,
    };
    // Cast(y) → Mul(·, m) with m = Mul(a_s, w_s): w_s is the weight's scale.
    let y = n.output[0].as_str();
    let only = |v: &str| users.get(v).filter(|u| u.len() == 1).map(|u| u[0]);
    let Some(cast) = only(y).filter(|c| c.op_type() == "Cast") else { return Ok(None) };
    let Some(mul) = only(&cast.output[0]).filter(|m| m.op_type() == "Mul") else { return Ok(None) };
    let Some(m) = mul.input.iter().find(|i| **i != cast.output[0]) else { return Ok(None) };
    let Some(scales) = producer.get(m.as_str()).filter(|p| p.op_type() == "Mul") else { return Ok(None) };
    let Some(w_s) = scales.input.iter().find(|i| i.as_str() != a_s).filter(|_| scales.input.iter().any(|i| i == a_s))
    else {
        return Ok(None);
    };
    let Some(st) = inits.get(w_s.as_str()) else { return Ok(None) };
    let scale = to_tensor(&model.tensor(st)?)?;
    // Per channel: MatMul's B [K, N] by column, Conv's W by output channel.
    let axis = if conv { 0 } else { 1 };
    let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
    let spread = |v: &Tensor| spread_param(v, axis, 0, &w.dims).map_err(|e| n.node_err(e));
    let sc = spread(&scale.f_to_kind(calc)?)?;
    let z = w_zp
        .map(|t| spread(&crate::engine::convert::computable(&to_tensor(&model.tensor(t)?)?)?.f_to_kind(Kind::Double)?))
        .transpose()?;
    let q = crate::engine::convert::computable(&to_tensor(&model.tensor(w)?)?)?.f_to_kind(Kind::Double)?;
    let fw = dequantized_values(&q, &sc, z.as_ref(), calc)?.f_to_kind(scale.kind())?;
    let (fa, fwn) = (format!("{y}.semu_a"), format!("{w_name}.semu_weight"));
    let mut w_inputs = vec![w_name.to_string(), w_s.clone()];
    if let Some(zn) = input(3) {
        w_inputs.push(zn.to_string());
    }
    let a_attrs = [("lo", 0), ("hi", 255), ("integer", 1)];
    let w_attrs = [("axis", axis), ("lo", lo as i64), ("hi", hi as i64), ("integer", 1)];
    let mut nodes = vec![
        int_node("FakeQuantize", vec![d.input[0].clone(), a_s.into(), a_zp.into()], &fa, &a_attrs),
        int_node("FakeQuantize", w_inputs, &fwn, &w_attrs),
    ];
    let mut float = crate::onnx::build::node(if conv { "Conv" } else { "MatMul" }, &[&fa, &fwn], &[y]);
    float.attribute = n.attribute.clone();
    nodes.push(float);
    let layout = if scale.numel() == 1 { "per tensor" } else { "per channel" };
    let q = QuantWeight {
        name: w_name.to_string(),
        dtype: DType::from_onnx(w.data_type())?,
        layout: format!("{layout}, dynamic activations ({})", n.op_type()),
        scale: sc,
        zero_point: z,
        calc,
        lo,
        hi,
        original: q,
        packing: None,
        rescale: Rescale::new(w_s, input(3), &scale, axis, 0, &w.dims, uses),
    };
    // The working copy's initializer: the float weight, named as the integer one.
    let float = init_from(w_name, &fw, crate::engine::convert::dtype_of(scale.kind())?)?;
    Ok(Some(Rewrite { weight: Some((q, float)), nodes, added: Vec::new() }))
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
    let mut users: HashMap<&str, Vec<&NodeProto>> = HashMap::new();
    for n in &g.node {
        for i in &n.input {
            users.entry(i.as_str()).or_default().push(n);
        }
    }
    let is_dq = |n: &NodeProto| {
        n.op_type() == "DequantizeLinear" && crate::engine::registry::norm_domain(n.domain()).is_empty()
    };
    let mut copy = model.clone();
    let mut weights = Vec::new();
    let mut pairs = 0;
    let mut new_nodes = Vec::with_capacity(g.node.len());
    let mut new_inits: HashMap<String, TensorProto> = HashMap::new();
    let mut added_inits = Vec::new();
    // QOperator: every quantized activation, and the ops reading it, change together.
    let acts = qop::activations(g)?;
    for n in &g.node {
        if let Some(a) = &acts {
            if let Some(node) = qop::activation_node(n, a, model, &inits)? {
                pairs += usize::from(node.op_type() == "FakeQuantize");
                new_nodes.push(node);
                continue;
            }
        }
        let rewrite = match (n.domain(), n.op_type(), &acts) {
            ("com.microsoft", "MatMulNBits", _) => lift_nbits(model, n, &inits, &uses)?,
            ("", "ConvInteger" | "MatMulInteger", _) => lift_integer(model, n, &inits, &uses, &producer, &users)?,
            (_, _, Some(a)) => qop::lift_op(model, n, &inits, &uses, a)?,
            _ => None,
        };
        if let Some(r) = rewrite {
            if let Some((w, float)) = r.weight {
                new_inits.insert(w.name.clone(), float);
                weights.push(w);
            }
            added_inits.extend(r.added);
            new_nodes.extend(r.nodes);
            continue;
        }
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
                let q = crate::engine::convert::computable(&q)?;
                let scale = to_tensor(&model.tensor(st)?)?;
                let calc = if scale.kind() == Kind::Double { Kind::Double } else { Kind::Float };
                let spread = |v: &Tensor| spread_param(v, axis, block, &w.dims).map_err(|e| n.node_err(e));
                let sc = spread(&scale.f_to_kind(calc)?)?;
                let z = zp_init
                    .flatten()
                    .map(|t| {
                        spread(
                            &crate::engine::convert::computable(&to_tensor(&model.tensor(t)?)?)?
                                .f_to_kind(Kind::Double)?,
                        )
                    })
                    .transpose()?;
                let fw =
                    dequantized_values(&q.f_to_kind(Kind::Double)?, &sc, z.as_ref(), calc)?.f_to_kind(scale.kind())?;
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
                    original: q.f_to_kind(Kind::Double)?,
                    packing: None,
                    rescale: Rescale::new(s, zp, &scale, axis, block, &w.dims, &uses),
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
    graph.initializer.extend(added_inits);
    if let Some(a) = &acts {
        // Quantized activations hold floats now: their declared integer types no longer apply.
        graph.value_info.retain(|v| !a.contains_key(v.name()));
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
    /// `--requantize recompute`: new scales (and zero points, for a type with a non-zero one)
    /// from each trained weight's own range, per tensor or per channel as the file has them —
    /// symmetric `max|W| / hi` for signed types with zero points at 0, else min/max over the
    /// type's range. Updates the lifted weights (so [`Self::requantize`] uses them) and returns
    /// the new initializer values by name.
    pub fn recompute(&mut self, trained: &HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
        let _g = tch::no_grad_guard();
        let mut out = HashMap::new();
        for q in self.weights.iter_mut() {
            let Some(t) = trained.get(&q.name) else { continue };
            let Some(r) = &q.rescale else {
                return Err(Error::msg(format!(
                    "weight '{}' ({}): --requantize recompute needs a per-tensor or per-channel scale that only \
                     this weight uses; use --requantize keep",
                    q.name, q.layout
                )));
            };
            let v = t.f_to_device(tch::Device::Cpu)?.f_to_kind(q.calc)?;
            let dims = v.size();
            let per_group = |x: &Tensor, max: bool| -> Result<Tensor> {
                Ok(match r.axis {
                    None => {
                        if max {
                            x.f_max()?
                        } else {
                            x.f_min()?
                        }
                    }
                    Some(a) => {
                        let rows = x.f_movedim(&[a as i64][..], &[0i64][..])?.f_reshape([dims[a], -1])?;
                        if max {
                            rows.f_amax(&[1i64][..], false)?
                        } else {
                            rows.f_amin(&[1i64][..], false)?
                        }
                    }
                })
            };
            let zero_zp = match &q.zero_point {
                Some(z) => z.f_abs()?.f_max()?.f_double_value(&[])? == 0.0,
                None => true,
            };
            let raw = r.raw.f_to_kind(q.calc)?.f_reshape([-1])?;
            let (s, z) = if q.lo < 0.0 && zero_zp {
                (per_group(&v.f_abs()?, true)?.f_div_scalar(q.hi)?, None)
            } else {
                let (mn, mx) = (per_group(&v, false)?.f_clamp_max(0.0)?, per_group(&v, true)?.f_clamp_min(0.0)?);
                let s = mx.f_sub(&mn)?.f_div_scalar(q.hi - q.lo)?;
                let s = s.f_where_self(&s.f_gt(0.0)?, &raw.f_reshape(s.size())?)?;
                let z = mn.f_div(&s)?.f_neg()?.f_add_scalar(q.lo)?.f_round()?.f_clamp(q.lo, q.hi)?;
                (s, Some(z))
            };
            let s = s.f_where_self(&s.f_gt(0.0)?, &raw.f_reshape(s.size())?)?;
            let axis = r.axis.map_or(0, |a| a as i64);
            q.scale = spread_param(&s, axis, 0, &dims).map_err(Error::msg)?;
            out.insert(r.scale.clone(), s.f_reshape(r.raw.size())?);
            if let (Some(z), Some(name)) = (z, &r.zero_point) {
                let zd = z.f_to_kind(Kind::Double)?;
                q.zero_point = Some(spread_param(&zd, axis, 0, &dims).map_err(Error::msg)?);
                out.insert(name.clone(), zd.f_reshape(r.raw.size())?);
            }
        }
        Ok(out)
    }

    /// The weights whose scales `--requantize recompute` cannot refit (blocked or packed
    /// layouts, or a scale other nodes share), as "name (layout)".
    pub fn not_rescalable(&self) -> Vec<String> {
        self.weights.iter().filter(|q| q.rescale.is_none()).map(|q| format!("{} ({})", q.name, q.layout)).collect()
    }

    /// The working copy with `values` in place of its initializers of the same names.
    pub fn with_values(&self, values: &HashMap<String, Tensor>) -> Result<OnnxModel> {
        let mut m = self.model.clone();
        let g = m.proto.graph.as_mut().expect("checked at load");
        for t in g.initializer.iter_mut() {
            if let Some(v) = values.get(t.name()) {
                let data = crate::engine::convert::from_tensor(v, DType::from_onnx(t.data_type())?)?;
                t.data_location = None;
                t.external_data.clear();
                set_inline(t, &data);
            }
        }
        Ok(m)
    }
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
            rep.changed_integers += ints.f_ne_tensor(&q.original)?.f_sum(Kind::Int64)?.int64_value(&[]);
            let format = format!("{} {}", q.dtype.name(), q.layout);
            if !rep.formats.contains(&format) {
                rep.formats.push(format);
            }
            let stored = match &q.packing {
                // Back into the file's bytes: the K values into the padded rows, then packed.
                Some(p) => {
                    let k = ints.size()[1];
                    let rows = p.padded.f_detach_copy()?;
                    rows.f_narrow(1, 0, k)?.f_copy_(&ints)?;
                    let blocks = rows.size()[1] / p.block;
                    pack_bits(&rows, p.bits)?.f_reshape([rows.size()[0], blocks, p.block * p.bits / 8])?
                }
                None => ints.f_to_kind(kind_of(q.dtype)?)?,
            };
            out.insert(name.clone(), stored);
        }
        rep.formats.sort(); // `weights` is a map: one order for every run
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

    #[test]
    fn packing_inverts_matmulnbits_unpacking() {
        for bits in [2i64, 4, 8] {
            let bytes = Tensor::from_slice(&[0u8, 1, 0x5a, 0xf0, 0xff, 0x37]).reshape([2, 3]);
            let values = unpack(&bytes, bits).unwrap();
            assert_eq!(values.size(), [2, 3 * 8 / bits]);
            assert!(values.max().int64_value(&[]) < 1 << bits);
            assert!(pack_bits(&values, bits).unwrap().equal(&bytes), "{bits} bits");
        }
    }
}

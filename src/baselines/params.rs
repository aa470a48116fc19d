//! Which weights the baselines train, and how `retrain` re-initialises them.
//!
//! Trainable = every float initializer that feeds a Conv / Gemm / MatMul (its weight, directly
//! or through Identity / Cast / Transpose, and its bias: Conv and Gemm's third input, or the
//! initializer added to a MatMul's output), plus BatchNormalization's scale and bias. The
//! running mean and variance are not trained (the engine runs BatchNorm in inference semantics:
//! it normalises with the stored statistics), but `retrain` resets them to 0 and 1.
use crate::error::Result;
use crate::onnx::proto::NodeProto;
use crate::onnx::{DType, NodeExt, OnnxModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

/// What a tensor is to its layer: decides its PyTorch default initialisation.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// kaiming_uniform(a = √5): U(±1/√fan_in).
    Weight {
        fan_in: i64,
    },
    /// U(±1/√fan_in) with the fan-in of the layer's weight.
    Bias {
        fan_in: i64,
    },
    BnScale,
    BnBias,
    BnMean,
    BnVar,
}

impl Role {
    /// Trained by the baselines (the running statistics are only reset).
    pub fn trainable(self) -> bool {
        !matches!(self, Role::BnMean | Role::BnVar)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Param {
    pub name: String,
    pub role: Role,
    pub dims: Vec<i64>,
}

impl Param {
    pub fn numel(&self) -> i64 {
        self.dims.iter().product()
    }
}

const PASS_THROUGH: &[&str] = &["Identity", "Cast", "Transpose", "FakeQuantize"];

struct Graph<'a> {
    producer: HashMap<&'a str, &'a NodeProto>,
    floats: HashMap<&'a str, &'a Vec<i64>>,
}

impl<'a> Graph<'a> {
    /// The float initializer behind `value` (through pass-through ops), and whether a 2-D
    /// transpose lies on the way (which swaps the roles of its two dimensions).
    fn source(&self, value: &'a str) -> Option<(&'a str, bool)> {
        let (mut v, mut flipped) = (value, false);
        for _ in 0..16 {
            if self.floats.contains_key(v) {
                return Some((v, flipped));
            }
            let n = self.producer.get(v)?;
            if !PASS_THROUGH.contains(&n.op_type()) {
                return None;
            }
            if n.op_type() == "Transpose" {
                let perm = n.get_ints("perm").ok().flatten();
                flipped ^= perm.is_none_or(|p| p == [1, 0]);
            }
            v = n.input.first()?.as_str();
        }
        None
    }

    fn dims(&self, name: &str) -> &'a [i64] {
        self.floats[name]
    }
}

/// Every trainable tensor of the model (and BatchNorm's running statistics), in graph order.
pub fn find_params(model: &OnnxModel) -> Vec<Param> {
    let g = model.graph();
    let floats = g
        .initializer
        .iter()
        .filter(|t| DType::from_onnx(t.data_type()).is_ok_and(|d| d.is_float()))
        .map(|t| (t.name(), &t.dims))
        .collect();
    let mut producer = HashMap::new();
    for n in &g.node {
        for o in &n.output {
            producer.insert(o.as_str(), n);
        }
    }
    let graph = Graph { producer, floats };
    let mut out: Vec<Param> = Vec::new();
    let mut seen = HashSet::new();
    let mut push = |name: &str, role: Role, out: &mut Vec<Param>| {
        if seen.insert(name.to_string()) {
            out.push(Param { name: name.to_string(), role, dims: graph.dims(name).to_vec() });
        }
    };
    // A MatMul output's fan-in, so that `MatMul → Add(bias)` gives the bias its fan-in.
    let mut matmul_fan_in: HashMap<&str, i64> = HashMap::new();
    for n in &g.node {
        let input = |i: usize| n.input.get(i).filter(|s| !s.is_empty()).map(String::as_str);
        let src = |i: usize| input(i).and_then(|v| graph.source(v));
        match n.op_type() {
            "Conv" => {
                let w = src(1).filter(|(w, _)| graph.dims(w).len() >= 3);
                let fan_in = w.map(|(w, _)| graph.dims(w)[1..].iter().product::<i64>());
                if let Some((w, _)) = w {
                    push(w, Role::Weight { fan_in: fan_in.unwrap_or(1) }, &mut out);
                }
                if let Some((b, _)) = src(2) {
                    let fan_in = fan_in.unwrap_or_else(|| graph.dims(b).iter().product());
                    push(b, Role::Bias { fan_in }, &mut out);
                }
            }
            "Gemm" | "MatMul" => {
                let gemm = n.op_type() == "Gemm";
                let flag = |a: &str| gemm && n.get_i(a).ok().flatten() == Some(1);
                // The weight is usually the second operand (x·W), sometimes the first (W·x).
                let found = [1usize, 0].into_iter().find_map(|i| {
                    let (w, flipped) = src(i).filter(|(w, _)| graph.dims(w).len() == 2)?;
                    let d = graph.dims(w);
                    // K (the summed dimension) is dims[0] of a right operand, dims[1] of a left
                    // one, swapped by a transpose in the graph or by transA / transB.
                    let trans = flipped ^ flag(if i == 1 { "transB" } else { "transA" });
                    let k = if (i == 1) ^ trans { d[0] } else { d[1] };
                    Some((w, k))
                });
                if let Some((w, fan_in)) = found {
                    push(w, Role::Weight { fan_in }, &mut out);
                    if gemm {
                        if let Some((b, _)) = src(2) {
                            push(b, Role::Bias { fan_in }, &mut out);
                        }
                    } else if let Some(o) = n.output.first() {
                        matmul_fan_in.insert(o.as_str(), fan_in);
                    }
                }
            }
            "Add" => {
                for (x, b) in [(0, 1), (1, 0)] {
                    let fan_in = input(x).and_then(|v| matmul_fan_in.get(v).copied());
                    if let (Some(fan_in), Some((b, _))) = (fan_in, src(b)) {
                        push(b, Role::Bias { fan_in }, &mut out);
                    }
                }
            }
            "BatchNormalization" => {
                for (i, role) in [(1, Role::BnScale), (2, Role::BnBias), (3, Role::BnMean), (4, Role::BnVar)] {
                    if let Some((t, _)) = src(i) {
                        push(t, role, &mut out);
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// PyTorch's default initial value of `p` (Conv / Linear: kaiming_uniform(a = √5) weights and
/// U(±1/√fan_in) biases; BatchNorm: scale 1, bias 0, mean 0, variance 1), as f32 on `device`.
pub fn initial_value(p: &Param, rng: &mut StdRng, device: Device) -> Result<Tensor> {
    let n = p.numel().max(0) as usize;
    let values: Vec<f32> = match p.role {
        Role::Weight { fan_in } | Role::Bias { fan_in } => {
            // kaiming_uniform with a = √5: gain² = 2 / (1 + 5), bound = gain·√(3 / fan_in).
            let bound = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 } as f32;
            if bound > 0.0 {
                (0..n).map(|_| rng.random_range(-bound..bound)).collect()
            } else {
                vec![0.0; n]
            }
        }
        Role::BnScale | Role::BnVar => vec![1.0; n],
        Role::BnBias | Role::BnMean => vec![0.0; n],
    };
    Ok(Tensor::f_from_slice(&values)?.f_reshape(&p.dims)?.f_to_kind(Kind::Float)?.f_to_device(device)?)
}

/// A fresh seeded generator for re-initialisation (independent of libtorch's global one).
pub fn init_rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ 0x5eed_1417)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build::{attr_ints as ints, f32_init, node, value, write};
    use crate::onnx::proto::AttributeProto;

    /// Conv(+bias) → BatchNorm → Flatten → Gemm(transB=1, bias) → MatMul(Transpose(W2)) → Add(b2).
    fn model() -> (tempfile::TempDir, OnnxModel) {
        let z = |n: usize| vec![0.5f32; n];
        let mut gemm = node("Gemm", &["f", "G", "g"], &["h"]);
        gemm.attribute.push(AttributeProto {
            name: Some("transB".into()),
            r#type: Some(2),
            i: Some(1),
            ..Default::default()
        });
        let mut tr = node("Transpose", &["W2"], &["W2t"]);
        tr.attribute.push(ints("perm", &[1, 0]));
        let (dir, path) = write(
            vec![
                node("Conv", &["x", "C", "c"], &["y"]),
                node("BatchNormalization", &["y", "s", "b", "m", "v"], &["z"]),
                node("Flatten", &["z"], &["f"]),
                gemm,
                tr,
                node("MatMul", &["h", "W2t"], &["o"]),
                node("Add", &["o", "b2"], &["out"]),
            ],
            vec![
                f32_init("C", &[2, 3, 3, 3], &z(54)),
                f32_init("c", &[2], &z(2)),
                f32_init("s", &[2], &z(2)),
                f32_init("b", &[2], &z(2)),
                f32_init("m", &[2], &z(2)),
                f32_init("v", &[2], &z(2)),
                f32_init("G", &[5, 8], &z(40)),
                f32_init("g", &[5], &z(5)),
                f32_init("W2", &[4, 5], &z(20)),
                f32_init("b2", &[4], &z(4)),
            ],
            vec![value("x", DType::F32, &[-1, 3, 2, 2])],
            vec![value("out", DType::F32, &[-1, 4])],
            15,
        );
        let m = OnnxModel::load(&path).unwrap();
        (dir, m)
    }

    #[test]
    fn finds_weights_biases_and_batchnorm_with_fan_ins() {
        let (_d, m) = model();
        let got: Vec<(String, Role)> = find_params(&m).into_iter().map(|p| (p.name, p.role)).collect();
        let want = [
            ("C", Role::Weight { fan_in: 27 }),
            ("c", Role::Bias { fan_in: 27 }),
            ("s", Role::BnScale),
            ("b", Role::BnBias),
            ("m", Role::BnMean),
            ("v", Role::BnVar),
            ("G", Role::Weight { fan_in: 8 }),
            ("g", Role::Bias { fan_in: 8 }),
            // Stored 4×5, transposed to 5×4 in the graph: fan-in 5.
            ("W2", Role::Weight { fan_in: 5 }),
            ("b2", Role::Bias { fan_in: 5 }),
        ];
        assert_eq!(got, want.iter().map(|(n, r)| (n.to_string(), *r)).collect::<Vec<_>>());
    }

    #[test]
    fn initial_values_follow_pytorch_defaults() {
        let mut rng = init_rng(0);
        let w = Param { name: "w".into(), role: Role::Weight { fan_in: 16 }, dims: vec![64, 16] };
        let t = initial_value(&w, &mut rng, Device::Cpu).unwrap();
        let (lo, hi) = (t.min().double_value(&[]), t.max().double_value(&[]));
        assert!(lo >= -0.25 && hi < 0.25 && hi - lo > 0.45, "U(±1/4): [{lo}, {hi}]");
        let var = Param { name: "v".into(), role: Role::BnVar, dims: vec![3] };
        assert_eq!(Vec::<f32>::try_from(initial_value(&var, &mut rng, Device::Cpu).unwrap()).unwrap(), vec![1.0; 3]);
    }
}

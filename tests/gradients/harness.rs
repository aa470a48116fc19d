//! Gradient-check harness: a one-node ONNX model built in memory with f64 values, run through the
//! engine, back-propagated, and compared with central finite differences.
//!
//! Every float argument of the node is either a graph input (fed as a requires-grad leaf), a
//! dynamic initializer (a requires-grad parameter of the plan) or a static initializer (folded,
//! not checked). The loss is `Σₖ sum(yₖ · wₖ)` over the node's outputs with fixed random `wₖ`, so
//! every output element's gradient path counts with a distinct weight.
use proptest::test_runner::TestCaseError;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::proto::{
    attribute_proto::AttributeType, type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorProto, TypeProto, ValueInfoProto,
};
use semu::onnx::{DType, OnnxModel};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

/// proptest settings with `cases` per test; `SEMU_GRAD_CASES=N` overrides it for a longer hunt.
pub fn cfg(cases: u32) -> proptest::test_runner::Config {
    let cases = std::env::var("SEMU_GRAD_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(cases);
    proptest::test_runner::Config { cases, failure_persistence: None, ..Default::default() }
}
use tch::{Kind, Tensor};

/// Finite-difference step (f64: truncation ~eps², rounding ~1e-16/eps).
const EPS: f64 = 1e-6;
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-7;
/// Elements checked one by one per tensor; larger tensors get a random sample of this many
/// (plus the random-direction check, which covers every element at once).
const MAX_ELEMS: usize = 48;

/// Float values with their shape.
#[derive(Clone, Debug)]
pub struct Val {
    pub dims: Vec<i64>,
    pub v: Vec<f64>,
}

fn numel(dims: &[i64]) -> usize {
    dims.iter().product::<i64>() as usize
}

/// Seeded value generator; every case draws its data from one seed so failures reproduce.
pub struct Gen(StdRng);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(StdRng::seed_from_u64(seed))
    }
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.0
    }
    pub fn uniform(&mut self, dims: &[i64], lo: f64, hi: f64) -> Val {
        let v = (0..numel(dims)).map(|_| self.0.random_range(lo..hi)).collect();
        Val { dims: dims.to_vec(), v }
    }
    /// Values in [-1, 1).
    pub fn val(&mut self, dims: &[i64]) -> Val {
        self.uniform(dims, -1.0, 1.0)
    }
    /// Values in [lo, hi) at least `margin` away from every kink (non-differentiable point).
    pub fn away(&mut self, dims: &[i64], lo: f64, hi: f64, kinks: &[f64], margin: f64) -> Val {
        let v = (0..numel(dims))
            .map(|_| loop {
                let x = self.0.random_range(lo..hi);
                if kinks.iter().all(|k| (x - k).abs() >= margin) {
                    break x;
                }
            })
            .collect();
        Val { dims: dims.to_vec(), v }
    }
    /// Pairwise distinct values in about [-1, 1] (gaps ≥ 1.6/n), for max-like ops: no ties.
    pub fn distinct(&mut self, dims: &[i64]) -> Val {
        let n = numel(dims).max(1);
        let mut v: Vec<f64> = (0..numel(dims))
            .map(|i| (2.0 * i as f64 - n as f64) / n as f64 + self.0.random_range(0.0..0.2 / n as f64))
            .collect();
        v.shuffle(&mut self.0);
        Val { dims: dims.to_vec(), v }
    }
    pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<i64> {
        (0..n).map(|_| self.0.random_range(lo..hi)).collect()
    }
    pub fn bools(&mut self, n: usize) -> Vec<bool> {
        (0..n).map(|_| self.0.random_bool(0.5)).collect()
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Role {
    Input,
    Param,
    Const,
}

enum Arg {
    Float(Role, Val),
    Ints(Vec<i64>, Vec<i64>),
    Bools(Vec<i64>, Vec<bool>),
    /// The same value as an earlier argument (the node reads one name twice).
    Alias(usize),
    Absent,
}

/// One node, its attributes and arguments, and how many of its outputs enter the loss.
pub struct Case {
    op: String,
    opset: i64,
    /// The node's domain ("" for ai.onnx; another is imported at version 1 beside ai.onnx).
    domain: String,
    attrs: Vec<AttributeProto>,
    args: Vec<Arg>,
    outputs: usize,
    pub g: Gen,
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto { name: Some(name.into()), r#type: Some(ty as i32), ..Default::default() }
}

fn tensor_proto(name: &str, dims: &[i64], dtype: DType, raw: Vec<u8>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(dtype.onnx_code()),
        raw_data: Some(raw),
        ..Default::default()
    }
}

fn f64_value(name: &str) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: Some(DType::F64.onnx_code()), shape: None };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

fn tensor(v: &Val) -> Tensor {
    Tensor::from_slice(&v.v).reshape(&v.dims)
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).expect("f64 values")
}

/// A checked leaf: its argument index, name and role.
struct Leaf {
    arg: usize,
    name: String,
    role: Role,
}

impl Case {
    pub fn new(op: &str, opset: i64, seed: u64) -> Self {
        Case { op: op.into(), opset, domain: String::new(), attrs: vec![], args: vec![], outputs: 1, g: Gen::new(seed) }
    }
    /// Puts the node in `domain` (imported at version 1), e.g. "com.microsoft".
    #[allow(dead_code)] // only tests/contrib.rs builds vendor-domain nodes
    pub fn domain(&mut self, domain: &str) -> &mut Self {
        self.domain = domain.into();
        self
    }
    pub fn i(&mut self, name: &str, v: i64) -> &mut Self {
        self.attrs.push(AttributeProto { i: Some(v), ..attr(name, AttributeType::Int) });
        self
    }
    pub fn f(&mut self, name: &str, v: f64) -> &mut Self {
        self.attrs.push(AttributeProto { f: Some(v as f32), ..attr(name, AttributeType::Float) });
        self
    }
    pub fn s(&mut self, name: &str, v: &str) -> &mut Self {
        self.attrs.push(AttributeProto { s: Some(v.as_bytes().to_vec()), ..attr(name, AttributeType::String) });
        self
    }
    pub fn ints_attr(&mut self, name: &str, v: &[i64]) -> &mut Self {
        self.attrs.push(AttributeProto { ints: v.to_vec(), ..attr(name, AttributeType::Ints) });
        self
    }
    pub fn arg(&mut self, role: Role, v: Val) -> &mut Self {
        self.args.push(Arg::Float(role, v));
        self
    }
    pub fn input(&mut self, v: Val) -> &mut Self {
        self.arg(Role::Input, v)
    }
    pub fn param(&mut self, v: Val) -> &mut Self {
        self.arg(Role::Param, v)
    }
    pub fn constant(&mut self, v: Val) -> &mut Self {
        self.arg(Role::Const, v)
    }
    /// A 1-D int64 initializer (shapes, axes, indices…).
    pub fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.ints_shaped(&[v.len() as i64], v)
    }
    pub fn ints_shaped(&mut self, dims: &[i64], v: &[i64]) -> &mut Self {
        self.args.push(Arg::Ints(dims.to_vec(), v.to_vec()));
        self
    }
    pub fn bools(&mut self, dims: &[i64], v: &[bool]) -> &mut Self {
        self.args.push(Arg::Bools(dims.to_vec(), v.to_vec()));
        self
    }
    /// Argument `i` again, under its name.
    pub fn same_as(&mut self, i: usize) -> &mut Self {
        self.args.push(Arg::Alias(i));
        self
    }
    /// An omitted optional input (empty name).
    pub fn absent(&mut self) -> &mut Self {
        self.args.push(Arg::Absent);
        self
    }
    pub fn outputs(&mut self, n: usize) -> &mut Self {
        self.outputs = n;
        self
    }

    fn name(i: usize) -> String {
        format!("x{i}")
    }

    /// The case in words, for failure messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} (opset {})", self.op, self.opset);
        for a in &self.attrs {
            let v = match a.r#type() {
                AttributeType::Int => a.i().to_string(),
                AttributeType::Float => a.f().to_string(),
                AttributeType::String => String::from_utf8_lossy(a.s()).into_owned(),
                _ => format!("{:?}", a.ints),
            };
            let _ = write!(s, " {}={v}", a.name());
        }
        for (i, a) in self.args.iter().enumerate() {
            let _ = match a {
                Arg::Float(r, v) => write!(s, "\n  {}: {r:?} f64 {:?}", Self::name(i), v.dims),
                Arg::Ints(d, v) => write!(s, "\n  {}: int64 {d:?} = {v:?}", Self::name(i)),
                Arg::Bools(d, _) => write!(s, "\n  {}: bool {d:?}", Self::name(i)),
                Arg::Alias(j) => write!(s, "\n  {} again", Self::name(*j)),
                Arg::Absent => write!(s, "\n  (absent)"),
            };
        }
        s
    }

    fn model(&self) -> OnnxModel {
        let mut inits = vec![];
        let mut inputs = vec![];
        let mut names = vec![];
        for (i, a) in self.args.iter().enumerate() {
            let n = Self::name(i);
            match a {
                Arg::Float(Role::Input, _) => inputs.push(f64_value(&n)),
                Arg::Float(_, v) => inits.push(tensor_proto(
                    &n,
                    &v.dims,
                    DType::F64,
                    v.v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )),
                Arg::Ints(d, v) => {
                    inits.push(tensor_proto(&n, d, DType::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
                }
                Arg::Bools(d, v) => inits.push(tensor_proto(&n, d, DType::Bool, v.iter().map(|&b| b as u8).collect())),
                Arg::Alias(_) | Arg::Absent => {}
            }
            names.push(match a {
                Arg::Absent => String::new(),
                Arg::Alias(j) => Self::name(*j),
                _ => n,
            });
        }
        let outs: Vec<String> = (0..self.outputs).map(|k| format!("y{k}")).collect();
        let node = NodeProto {
            op_type: Some(self.op.clone()),
            domain: (!self.domain.is_empty()).then(|| self.domain.clone()),
            name: Some("node".into()),
            input: names,
            output: outs.clone(),
            attribute: self.attrs.clone(),
            ..Default::default()
        };
        let graph = GraphProto {
            name: Some("gradcheck".into()),
            node: vec![node],
            initializer: inits,
            input: inputs,
            output: outs.iter().map(|o| f64_value(o)).collect(),
            ..Default::default()
        };
        let proto = ModelProto {
            ir_version: Some(8),
            opset_import: std::iter::once((String::new(), self.opset))
                .chain((!self.domain.is_empty()).then(|| (self.domain.clone(), 1)))
                .map(|(d, v)| OperatorSetIdProto { domain: Some(d), version: Some(v) })
                .collect(),
            graph: Some(graph),
            ..Default::default()
        };
        OnnxModel { proto, path: PathBuf::from("<gradcheck>"), dir: PathBuf::new() }
    }

    /// Builds, runs, back-propagates and compares; fails with the case and the first mismatch.
    pub fn check(&mut self) -> Result<(), TestCaseError> {
        self.check_in(&Registry::standard()).map_err(|e| TestCaseError::fail(format!("{}\n{e}", self.describe())))
    }

    /// The check against the ops of `reg`; the error names the first mismatch.
    pub fn check_in(&mut self, reg: &Registry) -> Result<(), String> {
        let model = self.model();
        let leaves: Vec<Leaf> = self
            .args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                Arg::Float(r @ (Role::Input | Role::Param), _) => Some(Leaf { arg: i, name: Self::name(i), role: *r }),
                _ => None,
            })
            .collect();
        let dynamic: HashSet<String> =
            leaves.iter().filter(|l| l.role == Role::Param).map(|l| l.name.clone()).collect();
        let mut plan =
            Plan::new(&model, reg, &PlanOptions { dynamic, ..Default::default() }).map_err(|e| format!("plan: {e}"))?;
        let base: Vec<Val> = leaves
            .iter()
            .map(|l| match &self.args[l.arg] {
                Arg::Float(_, v) => v.clone(),
                _ => unreachable!(),
            })
            .collect();
        let ts: Vec<Tensor> = base.iter().map(|v| tensor(v).set_requires_grad(true)).collect();
        let mut feeds = HashMap::new();
        for (l, t) in leaves.iter().zip(&ts) {
            match l.role {
                Role::Input => {
                    feeds.insert(l.name.clone(), t.shallow_clone());
                }
                _ => plan.set_param(&l.name, t.shallow_clone()).map_err(|e| e.to_string())?,
            }
        }
        let outs = plan.run(&feeds).map_err(|e| format!("run: {e}"))?;
        for (k, y) in outs.iter().enumerate() {
            if y.kind() != Kind::Double {
                return Err(format!("output y{k} is {:?}, expected Double (f64 in, f64 out)", y.kind()));
            }
            if !values(y).iter().all(|x| x.is_finite()) {
                return Err(format!("output y{k} has non-finite values: {y}"));
            }
        }
        let weights: Vec<Tensor> = outs.iter().map(|y| tensor(&self.g.val(&y.size()))).collect();
        let loss_of = |outs: &[Tensor]| -> Tensor {
            outs.iter().zip(&weights).map(|(y, w)| (y * w).sum(Kind::Double)).fold(Tensor::from(0.0f64), |a, b| a + b)
        };
        let loss = loss_of(&outs);
        let grads: Vec<Option<Vec<f64>>> = if loss.requires_grad() {
            let gs = Tensor::f_run_backward(&[&loss], &ts, false, false).map_err(|e| format!("backward: {e}"))?;
            gs.iter().map(|g| g.defined().then(|| values(g))).collect()
        } else {
            leaves.iter().map(|_| None).collect()
        };

        // Loss at perturbed values: `vals` replaces every leaf.
        let eval = |vals: &[Val]| -> Result<f64, String> {
            let _g = tch::no_grad_guard();
            let mut feeds = HashMap::new();
            let mut over = HashMap::new();
            for (l, v) in leaves.iter().zip(vals) {
                let m = if l.role == Role::Input { &mut feeds } else { &mut over };
                m.insert(l.name.clone(), tensor(v));
            }
            let outs = plan.run_with(&feeds, &over).map_err(|e| format!("run: {e}"))?;
            Ok(loss_of(&outs).double_value(&[]))
        };
        let central = |vals: &mut Vec<Val>, dir: &dyn Fn(&mut Vec<Val>, f64)| -> Result<f64, String> {
            dir(vals, EPS);
            let hi = eval(vals)?;
            dir(vals, -2.0 * EPS);
            let lo = eval(vals)?;
            dir(vals, EPS);
            Ok((hi - lo) / (2.0 * EPS))
        };
        let close = |a: f64, n: f64, scale: f64| (a - n).abs() <= RTOL * a.abs().max(n.abs()).max(scale) + ATOL;

        let mut vals = base.clone();
        for (li, l) in leaves.iter().enumerate() {
            let n = base[li].v.len();
            let mut idx: Vec<usize> = (0..n).collect();
            if n > MAX_ELEMS {
                idx.shuffle(self.g.rng());
                idx.truncate(MAX_ELEMS);
            }
            for &j in &idx {
                let num = central(&mut vals, &|v: &mut Vec<Val>, d| v[li].v[j] += d)?;
                let ana = match &grads[li] {
                    Some(g) => g[j],
                    None if num.abs() <= ATOL => continue,
                    None => {
                        return Err(format!(
                            "no gradient reached {} ({:?}) but d loss/d {}[{j}] ≈ {num:e}",
                            l.name, l.role, l.name
                        ))
                    }
                };
                if !close(ana, num, 0.0) {
                    return Err(format!(
                        "d loss/d {}[{j}] ({:?}, flat index): autograd {ana:e}, finite difference {num:e}",
                        l.name, l.role
                    ));
                }
            }
        }
        // One random direction through every element of every leaf at once.
        let dirs: Vec<Val> = base.iter().map(|v| self.g.val(&v.dims)).collect();
        let num = central(&mut vals, &|v: &mut Vec<Val>, d| {
            for (x, u) in v.iter_mut().zip(&dirs) {
                x.v.iter_mut().zip(&u.v).for_each(|(a, b)| *a += d * b);
            }
        })?;
        let terms: Vec<f64> = grads
            .iter()
            .zip(&dirs)
            .flat_map(|(g, u)| u.v.iter().enumerate().map(move |(j, b)| g.as_ref().map_or(0.0, |g| g[j] * b)))
            .collect();
        let ana: f64 = terms.iter().sum();
        let scale: f64 = terms.iter().map(|t| t.abs()).sum::<f64>() * 1e-3;
        if !close(ana, num, scale) {
            return Err(format!("random direction: autograd {ana:e}, finite difference {num:e}"));
        }
        Ok(())
    }
}

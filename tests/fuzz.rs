//! The fuzz target (issue 15): structured mutations of ONNX models (real exports and one-op
//! graphs of every registered op), of data files (npy, npz, safetensors, CSV, JSONL) and of
//! `unlearn` settings, through load → plan → run; a sample of cases runs a short `semu unlearn`
//! through the binary. Each case is made from its number alone, so a failure is replayed by its
//! number (`SEMU_FUZZ_REPLAY=N`) and a long run resumes where it stopped.
//!
//! What fails a case: a panic that escapes the engine, libtorch's C++ frames or an empty message
//! in an error, a case running past `HANG`, and, for `unlearn`, an exit other than 0–3, a file at
//! `--out` after a failure, or a written model whose outputs are not finite. Panics inside an op,
//! which the engine turns into that node's one-line error, are counted and listed, not failed.
//!
//! A loop of our own on stable Rust rather than cargo-fuzz (needs nightly) or afl (would
//! instrument libtorch's callers and fork a process per input): structured inputs reach the
//! planner and the ops, which byte-level mutation of a protobuf rarely gets past, and numbering
//! cases makes a run resumable and any failure reproducible without a corpus.
//!
//! `make test` runs [`smoke`] (10,000 cases); `make fuzz` runs [`long`] (`SEMU_FUZZ_CASES`,
//! default 1,000,000, for at most `SEMU_FUZZ_MINUTES`, resuming from `target/fuzz/`).
mod common;

use prost::Message;
use rand::rngs::StdRng;
use rand::seq::{IndexedMutRandom, IndexedRandom};
use rand::{Rng, SeedableRng};
use semu::data::DataSpec;
use semu::engine::plan::{Plan, PlanOptions};
use semu::engine::registry::Registry;
use semu::engine::value::Value;
use semu::onnx::build::{attr_int, attr_ints, attr_string, node};
use semu::onnx::proto::tensor_shape_proto::{dimension, Dimension};
use semu::onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, OperatorSetIdProto, StringStringEntryProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use semu::onnx::{DType, OnnxModel, TensorData};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Cases are `SEED ^ number`: changing it gives a new stream.
const SEED: u64 = 0x5e3_u64 << 40;
/// A case running this long is a hang: the watchdog names it and ends the process.
const HANG: Duration = Duration::from_secs(60);
/// Every this many cases (offset 7) runs `semu unlearn` through the binary.
const UNLEARN_EVERY: u64 = 2500;
/// The fuzzing process's address-space limit: an unbounded allocation fails (and is reported)
/// instead of taking the machine's memory. Children (`semu unlearn`) get the usual limit back.
const ADDRESS_SPACE: u64 = 10 << 30;
/// Element bound for the fuzzed process: big enough for every seed model, small enough that a
/// mutant asking for more is refused rather than swapping the machine.
const MAX_ELEMENTS: u64 = 1 << 24;

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p)
}

/// Values that find off-by-one, sign and overflow bugs.
const INTS: [i64; 16] = [0, 1, 2, 3, -1, -2, -3, 4, 7, 64, 100_000, 1 << 31, 1 << 40, i64::MAX, i64::MIN, -(1 << 33)];

fn int(r: &mut StdRng) -> i64 {
    if r.random_bool(0.7) {
        r.random_range(-3..6)
    } else {
        *INTS.choose(r).unwrap()
    }
}

fn float(r: &mut StdRng) -> f32 {
    *[0.0, -0.0, 1.0, -1.0, 0.5, 1e-30, 1e30, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0].choose(r).unwrap()
}

/// `n` random elements of `dtype`, or `None` for a type not fuzzed as data (strings).
fn rand_data(r: &mut StdRng, dtype: DType, dims: &[i64]) -> Option<TensorData> {
    let n: usize = dims.iter().map(|&d| d.max(0) as usize).product();
    let size = dtype.size().filter(|_| dtype != DType::String)?;
    let mut bytes = Vec::with_capacity(n * size);
    let small = r.random_bool(0.6);
    for _ in 0..n {
        match dtype {
            DType::F32 => bytes.extend(if small { r.random_range(-2.0f32..2.0) } else { float(r) }.to_le_bytes()),
            DType::Bool => bytes.push(r.random_range(0..2)),
            DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::U16 | DType::U32 | DType::U64 => {
                let v = if small { r.random_range(-1..5) } else { int(r) };
                bytes.extend(&v.to_le_bytes()[..size]);
            }
            _ => bytes.extend((0..size).map(|_| r.random::<u8>())),
        }
    }
    Some(TensorData { dtype, dims: dims.to_vec(), bytes })
}

fn tensor_type(v: &ValueInfoProto) -> Option<&type_proto::Tensor> {
    match v.r#type.as_ref()?.value.as_ref()? {
        type_proto::Value::TensorType(t) => Some(t),
        _ => None,
    }
}

fn tensor_type_mut(v: &mut ValueInfoProto) -> Option<&mut type_proto::Tensor> {
    match v.r#type.as_mut()?.value.as_mut()? {
        type_proto::Value::TensorType(t) => Some(t),
        _ => None,
    }
}

fn typed(name: &str, elem: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    let shape = dims.map(|d| TensorShapeProto {
        dim: d
            .iter()
            .map(|&v| Dimension { value: Some(dimension::Value::DimValue(v)), ..Default::default() })
            .collect(),
    });
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor { elem_type: Some(elem), shape })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn initializer(name: &str, d: &TensorData) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: d.dims.clone(),
        data_type: Some(d.dtype.onnx_code()),
        raw_data: Some(d.bytes.clone()),
        ..Default::default()
    }
}

/// What a case came to.
enum Verdict {
    Ran,
    /// A clean refusal (the error text).
    Refused(String),
    /// Not runnable as generated (a string input, say): neither counted as run nor refused.
    Skipped,
    Failed(String),
}

/// The error a user would read, judged: libtorch frames or an empty message fail.
fn refused(e: impl std::fmt::Display) -> Verdict {
    let e = e.to_string();
    for bad in ["frame #", "Exception raised from", "libc10", "panicked at"] {
        if e.contains(bad) {
            return Verdict::Failed(format!("'{bad}' reached the error: {e}"));
        }
    }
    if e.trim().is_empty() {
        return Verdict::Failed("an empty error".into());
    }
    // Under the fuzzer's address-space limit (`ADDRESS_SPACE`) an allocation that the element
    // bound should have refused fails in the allocator instead: an op that does not check.
    if e.contains("can't allocate memory") || e.contains("not enough memory") {
        return Verdict::Failed(format!("an allocation the element bound did not stop: {e}"));
    }
    Verdict::Refused(e)
}

/// The fixed inputs of the generator, read once.
struct Seeds {
    models: Vec<(ModelProto, PathBuf)>,
    ops: Vec<(String, String)>,
    tokenizer: PathBuf,
}

impl Seeds {
    fn load() -> Self {
        let models =
            ["digits/model.onnx", "digits_f16/model.onnx", "text_cls/model.onnx", "external/single/model.onnx"]
                .iter()
                .map(|p| {
                    let path = fx(p);
                    let m = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
                    (m, path)
                })
                .collect();
        Seeds { models, ops: Registry::standard().ops(), tokenizer: fx("text_cls/tokenizer.json") }
    }
}

/// Feeds for every graph input that is not an initializer: the declared type and shape (free
/// dims 1–3), one dim changed in a fifth of the cases.
fn feeds(r: &mut StdRng, g: &GraphProto) -> Option<HashMap<String, Value>> {
    let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
    let mut out = HashMap::new();
    for v in g.input.iter().filter(|v| !inits.contains(&v.name())) {
        let t = tensor_type(v)?;
        let dtype = DType::from_onnx(t.elem_type()).ok()?;
        let mut dims: Vec<i64> = match &t.shape {
            Some(s) => s
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(dimension::Value::DimValue(v)) if (0..=64).contains(&v) => v,
                    _ => r.random_range(1..4),
                })
                .collect(),
            None => (0..r.random_range(0..4)).map(|_| r.random_range(1..4)).collect(),
        };
        if !dims.is_empty() && r.random_bool(0.2) {
            let i = r.random_range(0..dims.len());
            dims[i] = r.random_range(0..6);
        }
        let data = rand_data(r, dtype, &dims)?;
        out.insert(v.name().to_string(), Value::Tensor(semu::engine::convert::to_tensor(&data).ok()?));
    }
    Some(out)
}

/// Load (with the load-time checks), plan, run once.
fn load_plan_run(r: &mut StdRng, m: &ModelProto, path: &Path) -> Verdict {
    let bytes = m.encode_to_vec();
    if let Some(dump) = std::env::var_os("SEMU_FUZZ_DUMP") {
        std::fs::write(dump, &bytes).unwrap(); // replaying a case: keep its model to look at
    }
    let dir = path.parent().unwrap().to_path_buf();
    let model = match OnnxModel::from_bytes(&bytes, path.to_path_buf(), dir) {
        Ok(m) => m,
        Err(e) => return refused(e),
    };
    let plan = match Plan::new(&model, &Registry::standard(), &PlanOptions::default()) {
        Ok(p) => p,
        Err(e) => return refused(e),
    };
    let Some(feeds) = feeds(r, model.graph()) else { return Verdict::Skipped };
    match plan.run_values(&feeds) {
        Ok(_) => Verdict::Ran,
        Err(e) => refused(e),
    }
}

fn value_names(g: &GraphProto) -> Vec<String> {
    let mut v: Vec<String> = g.input.iter().map(|i| i.name().to_string()).collect();
    v.extend(g.initializer.iter().map(|t| t.name().to_string()));
    v.extend(g.node.iter().flat_map(|n| n.output.clone()));
    v
}

/// One structured edit of a model.
fn mutate_model(r: &mut StdRng, m: &mut ModelProto, ops: &[(String, String)]) {
    let names = value_names(m.graph.as_ref().unwrap());
    let g = m.graph.as_mut().unwrap();
    let n_nodes = g.node.len();
    let pick = |r: &mut StdRng| r.random_range(0..n_nodes.max(1));
    match r.random_range(0..22) {
        0 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            if !n.input.is_empty() {
                let i = r.random_range(0..n.input.len());
                n.input[i] = if r.random_bool(0.8) { names.choose(r).unwrap().clone() } else { "ghost".into() };
            }
        }
        1 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            if !n.output.is_empty() {
                n.output[0] = names.choose(r).unwrap().clone();
            }
        }
        2 if n_nodes > 1 => {
            let (i, j) = (pick(r), pick(r));
            g.node.swap(i, j);
        }
        3 if n_nodes > 0 => {
            let n = g.node[pick(r)].clone();
            g.node.push(n);
        }
        4 if n_nodes > 0 => {
            g.node.remove(pick(r));
        }
        5 if !g.initializer.is_empty() => {
            let i = r.random_range(0..g.initializer.len());
            g.initializer[i].data_type = Some(*[0, 1, 6, 7, 9, 10, 11, 16, 17, 21, 23, 999].choose(r).unwrap());
        }
        6 => {
            let all: Vec<_> = g.input.iter_mut().chain(g.output.iter_mut()).collect();
            if let Some(v) = all.into_iter().nth(r.random_range(0..4)) {
                if let Some(t) = tensor_type_mut(v) {
                    t.elem_type = Some(*[0, 1, 6, 7, 8, 9, 10, 999].choose(r).unwrap());
                }
            }
        }
        7 => {
            let elem = *[1, 6, 7, 10, 999, 0].choose(r).unwrap();
            g.value_info.push(typed(names.choose(r).unwrap(), elem, None));
        }
        8 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            if let Some(a) = n.attribute.choose(r).cloned() {
                n.attribute.push(a);
            }
        }
        9 => {
            if let Some(o) = m.opset_import.first_mut() {
                o.version = Some(*[-1, 0, 1, 6, 7, 9, 11, 13, 17, 21, 23, 26, 99].choose(r).unwrap());
            }
        }
        10 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            if let Some(a) = n.attribute.choose_mut(r) {
                if a.i.is_some() {
                    a.i = Some(int(r));
                }
                if !a.ints.is_empty() {
                    let i = r.random_range(0..a.ints.len());
                    a.ints[i] = int(r);
                }
                if a.f.is_some() {
                    a.f = Some(float(r));
                }
            }
        }
        11 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(r).unwrap();
            if t.dims.is_empty() || r.random_bool(0.2) {
                t.dims.push(int(r));
            } else {
                let i = r.random_range(0..t.dims.len());
                t.dims[i] = int(r);
            }
        }
        12 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(r).unwrap();
            if let Some(raw) = t.raw_data.as_mut() {
                let keep = r.random_range(0..=raw.len());
                raw.truncate(keep);
                if r.random_bool(0.3) {
                    raw.extend(std::iter::repeat_n(0xffu8, r.random_range(1..64)));
                }
            }
        }
        13 => {
            if let Some(v) = g.input.choose_mut(r) {
                if let Some(s) = tensor_type_mut(v).and_then(|t| t.shape.as_mut()) {
                    if let Some(d) = s.dim.choose_mut(r) {
                        d.value = Some(if r.random_bool(0.3) {
                            dimension::Value::DimParam("n".into())
                        } else {
                            dimension::Value::DimValue(int(r))
                        });
                    }
                }
            }
        }
        14 if n_nodes > 0 => {
            let (domain, op) = ops.choose(r).unwrap().clone();
            let n = &mut g.node[pick(r)];
            n.op_type = Some(op);
            n.domain = Some(domain);
        }
        15 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            if r.random_bool(0.5) && !n.input.is_empty() {
                n.input.pop();
            } else {
                n.input.push(if r.random_bool(0.5) { String::new() } else { names.choose(r).unwrap().clone() });
            }
        }
        16 if !g.initializer.is_empty() => {
            let t = g.initializer.choose_mut(r).unwrap();
            t.data_location = Some(1);
            let loc = ["model.onnx.data", "../model.onnx", "/etc/passwd", "", "missing.bin", "a/../../b", "model.onnx"];
            let entry = |k: &str, v: String| StringStringEntryProto { key: Some(k.into()), value: Some(v) };
            t.external_data = vec![entry("location", loc.choose(r).unwrap().to_string())];
            if r.random_bool(0.6) {
                t.external_data.push(entry("offset", int(r).to_string()));
            }
            if r.random_bool(0.6) {
                t.external_data.push(entry("length", int(r).to_string()));
            }
        }
        17 => {
            if r.random_bool(0.5) && !g.output.is_empty() {
                let i = r.random_range(0..g.output.len());
                g.output.remove(i);
            } else if !g.input.is_empty() {
                let i = r.random_range(0..g.input.len());
                g.input.remove(i);
            }
        }
        18 if n_nodes > 0 => {
            g.node[pick(r)].domain =
                Some(["com.microsoft", "ai.onnx.ml", "x", "ai.onnx"].choose(r).unwrap().to_string());
        }
        19 => m.ir_version = Some(*[-1, 0, 2, 3, 7, 9, 10, 11, 99].choose(r).unwrap()),
        20 if n_nodes > 0 => {
            let n = &mut g.node[pick(r)];
            n.attribute.push(random_attr(r));
        }
        _ => {
            if let Some(t) = g.initializer.choose_mut(r) {
                // Values kept, contents made hostile: NaN, Inf, huge.
                if let Some(raw) = t.raw_data.as_mut() {
                    let f = float(r).to_le_bytes();
                    for c in raw.chunks_mut(4).take(8) {
                        c.copy_from_slice(&f[..c.len()]);
                    }
                }
            }
        }
    }
}

const ATTRS: [&str; 40] = [
    "axis",
    "axes",
    "perm",
    "keepdims",
    "kernel_shape",
    "strides",
    "pads",
    "dilations",
    "group",
    "to",
    "mode",
    "k",
    "largest",
    "sorted",
    "transA",
    "transB",
    "alpha",
    "beta",
    "epsilon",
    "split",
    "starts",
    "ends",
    "num_outputs",
    "batch_dims",
    "exclusive",
    "reverse",
    "blocksize",
    "auto_pad",
    "ceil_mode",
    "output_padding",
    "output_shape",
    "dtype",
    "size",
    "p",
    "allowzero",
    "upper",
    "equation",
    "noop_with_empty_axes",
    "value",
    "coordinate_transformation_mode",
];

fn random_attr(r: &mut StdRng) -> AttributeProto {
    let name = *ATTRS.choose(r).unwrap();
    match r.random_range(0..5) {
        0 | 1 => attr_int(name, int(r)),
        2 => attr_ints(name, &(0..r.random_range(0..5)).map(|_| int(r)).collect::<Vec<_>>()),
        3 => AttributeProto { name: Some(name.into()), r#type: Some(1), f: Some(float(r)), ..Default::default() },
        _ => {
            let s = [
                "constant",
                "reflect",
                "edge",
                "nearest",
                "linear",
                "cubic",
                "DCR",
                "CRD",
                "SAME_UPPER",
                "VALID",
                "ij,jk->ik",
                "",
                "bogus",
            ];
            attr_string(name, s.choose(r).unwrap())
        }
    }
}

fn model_case(r: &mut StdRng, seeds: &Seeds) -> Verdict {
    let (seed, path) = seeds.models.choose(r).unwrap();
    let mut m = seed.clone();
    for _ in 0..r.random_range(1..4) {
        mutate_model(r, &mut m, &seeds.ops);
    }
    if r.random_bool(0.08) {
        // A few byte-level edits of the encoding: decoding must refuse or hold.
        let mut bytes = m.encode_to_vec();
        for _ in 0..r.random_range(1..8) {
            let i = r.random_range(0..bytes.len());
            bytes[i] = r.random();
        }
        if r.random_bool(0.3) {
            bytes.truncate(r.random_range(0..bytes.len()));
        }
        let dir = path.parent().unwrap().to_path_buf();
        return match OnnxModel::from_bytes(&bytes, path.clone(), dir) {
            Ok(model) => match Plan::new(&model, &Registry::standard(), &PlanOptions::default()) {
                Ok(_) => Verdict::Ran,
                Err(e) => refused(e),
            },
            Err(e) => refused(e),
        };
    }
    load_plan_run(r, &m, path)
}

/// One node of a random registered op on random inputs (fed, or initializers that planning
/// folds) with random attributes.
fn op_case(r: &mut StdRng, seeds: &Seeds) -> Verdict {
    let (domain, op) = seeds.ops.choose(r).unwrap().clone();
    let n_in = r.random_range(0..5);
    let (mut inputs, mut inits, mut names) = (Vec::new(), Vec::new(), Vec::new());
    let types =
        [DType::F32, DType::F32, DType::F32, DType::I64, DType::I64, DType::I32, DType::Bool, DType::F16, DType::U8];
    // Most ops take one element type throughout: a shared one gets more cases past type checks.
    let shared = r.random_bool(0.6).then(|| *types.choose(r).unwrap());
    for i in 0..n_in {
        let name = format!("x{i}");
        if i > 0 && r.random_bool(0.1) {
            names.push(String::new()); // an omitted optional input
            continue;
        }
        let dtype = shared.unwrap_or_else(|| *types.choose(r).unwrap());
        let dims: Vec<i64> =
            (0..r.random_range(0..5)).map(|_| if r.random_bool(0.07) { 0 } else { r.random_range(1..5) }).collect();
        let data = rand_data(r, dtype, &dims).unwrap();
        if r.random_bool(0.4) {
            inits.push(initializer(&name, &data));
        } else {
            inputs.push(typed(&name, dtype.onnx_code(), Some(&dims)));
        }
        names.push(name);
    }
    let outs: Vec<String> = (0..r.random_range(1..4)).map(|i| format!("y{i}")).collect();
    let mut n = node(
        &op,
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
        &outs.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    n.domain = Some(domain.clone());
    n.attribute = (0..r.random_range(0..4)).map(|_| random_attr(r)).collect();
    let graph = GraphProto {
        name: Some("fuzz".into()),
        node: vec![n],
        initializer: inits,
        input: inputs,
        // Outputs untyped: what the op gives is what the fuzzer wants to see.
        output: outs.iter().map(|o| ValueInfoProto { name: Some(o.clone()), ..Default::default() }).collect(),
        ..Default::default()
    };
    let mut opset_import = vec![OperatorSetIdProto {
        domain: Some(String::new()),
        version: Some(*[11, 13, 17, 18, 21, 23, 24].choose(r).unwrap()),
    }];
    if !domain.is_empty() {
        opset_import.push(OperatorSetIdProto { domain: Some(domain), version: Some(1) });
    }
    let m = ModelProto { ir_version: Some(8), opset_import, graph: Some(graph), ..Default::default() };
    load_plan_run(r, &m, &std::env::temp_dir().join("fuzz-op.onnx"))
}

/// An `.npy` image: a header (possibly lying) and a payload (possibly short or long).
fn npy_bytes(r: &mut StdRng, descr: &str, shape: &[i64], values: &[u8]) -> Vec<u8> {
    let descr = if r.random_bool(0.1) {
        *["<f8", ">f4", "|b1", "<U3", "O", "<c8", "<i8", "|u1", "f4", "<f2"].choose(r).unwrap()
    } else {
        descr
    };
    let mut shape = shape.to_vec();
    if r.random_bool(0.15) && !shape.is_empty() {
        let i = r.random_range(0..shape.len());
        shape[i] = int(r);
    }
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let order = if r.random_bool(0.05) { "True" } else { "False" };
    let mut h = format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    if r.random_bool(0.05) {
        h.truncate(r.random_range(0..h.len()));
    }
    let mut v = common::npy_dict(&h, &[]);
    let mut payload = values.to_vec();
    if r.random_bool(0.1) {
        payload.truncate(r.random_range(0..=payload.len()));
    } else if r.random_bool(0.05) {
        payload.extend([0u8; 13]);
    }
    v.extend(payload);
    v
}

/// Digits-shaped records: `n` samples of 64 floats and their labels (some out of range).
fn records(r: &mut StdRng) -> (usize, Vec<u8>, Vec<u8>) {
    let n = r.random_range(0..6);
    let mut x: Vec<f32> = (0..n * 64).map(|_| r.random_range(0.0f32..16.0)).collect();
    if n > 0 && r.random_bool(0.1) {
        let i = r.random_range(0..x.len());
        x[i] = float(r);
    }
    let y: Vec<u8> = (0..n)
        .flat_map(|_| if r.random_bool(0.95) { r.random_range(0i64..10) } else { int(r) }.to_le_bytes())
        .collect();
    (n, x.iter().flat_map(|v| v.to_le_bytes()).collect(), y)
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

/// A data file of a random format, mutated, opened as `semu` opens `--forget`, then read.
fn data_case(r: &mut StdRng, seeds: &Seeds, dir: &Path) -> Verdict {
    let (n, x, y) = records(r);
    let mut spec = DataSpec::default();
    let path = match r.random_range(0..5) {
        0 => {
            let p = dir.join("x.npy");
            write(&p, &npy_bytes(r, "<f4", &[n as i64, 1, 8, 8], &x));
            write(&dir.join("y.npy"), &npy_bytes(r, "<i8", &[n as i64], &y));
            p
        }
        1 => {
            let p = dir.join("d.npz");
            let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
            let method =
                if r.random_bool(0.5) { zip::CompressionMethod::Stored } else { zip::CompressionMethod::Deflated };
            let xname = *["x.npy", "input.npy", "x", "y.npy", "../x.npy"].choose(r).unwrap();
            let entries =
                [(xname, npy_bytes(r, "<f4", &[n as i64, 64], &x)), ("y.npy", npy_bytes(r, "<i8", &[n as i64], &y))];
            for (name, bytes) in entries.iter().take(if r.random_bool(0.1) { 1 } else { 2 }) {
                z.start_file(*name, zip::write::FileOptions::default().compression_method(method)).unwrap();
                z.write_all(bytes).unwrap();
            }
            z.finish().unwrap();
            if r.random_bool(0.2) {
                let mut b = std::fs::read(&p).unwrap();
                for _ in 0..r.random_range(1..5) {
                    let i = r.random_range(0..b.len());
                    b[i] = r.random();
                }
                write(&p, &b);
            }
            p
        }
        2 => {
            let p = dir.join("d.safetensors");
            write(&p, &safetensors_bytes(r, n, &x, &y));
            p
        }
        3 => {
            let p = dir.join("d.csv");
            write(&p, &csv_bytes(r, n));
            p
        }
        _ => {
            spec.text.tokenizer = Some(seeds.tokenizer.clone());
            spec.text.labels_required = true;
            let p = dir.join("d.jsonl");
            write(&p, &jsonl_bytes(r, n));
            p
        }
    };
    let ds = match semu::data::open_with(&path, &spec) {
        Ok(ds) => ds,
        Err(e) => return refused(e),
    };
    if let Err(e) = ds.labels() {
        return refused(e);
    }
    let idx: Vec<usize> = (0..ds.len().min(3)).collect();
    match ds.records(&idx) {
        Ok(_) => Verdict::Ran,
        Err(e) => refused(e),
    }
}

fn safetensors_bytes(r: &mut StdRng, n: usize, x: &[u8], y: &[u8]) -> Vec<u8> {
    let mut entries = vec![("x", "F32", vec![n as i64, 64], x.to_vec()), ("y", "I64", vec![n as i64], y.to_vec())];
    if r.random_bool(0.2) {
        let e = entries.choose_mut(r).unwrap();
        e.1 = ["F16", "BF16", "U8", "BOOL", "F64", "I32", "XX", ""].choose(r).unwrap();
    }
    if r.random_bool(0.2) {
        let e = entries.choose_mut(r).unwrap();
        e.2.push(int(r));
    }
    let mut header = BTreeMap::new();
    let mut payload: Vec<u8> = Vec::new();
    for (name, dtype, shape, bytes) in &entries {
        let (mut a, mut b) = (payload.len() as i64, (payload.len() + bytes.len()) as i64);
        if r.random_bool(0.1) {
            a = int(r);
        }
        if r.random_bool(0.1) {
            b = int(r);
        }
        payload.extend(bytes);
        header.insert(name.to_string(), serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [a, b]}));
    }
    let mut h = serde_json::to_vec(&header).unwrap();
    if r.random_bool(0.05) {
        h.truncate(r.random_range(0..h.len()));
    }
    let mut len = h.len() as u64;
    if r.random_bool(0.05) {
        len = int(r) as u64;
    }
    let mut v = len.to_le_bytes().to_vec();
    v.extend(h);
    if r.random_bool(0.1) {
        payload.truncate(r.random_range(0..=payload.len()));
    }
    v.extend(payload);
    v
}

fn cell(r: &mut StdRng) -> String {
    match r.random_range(0..12) {
        0 => "nan".into(),
        1 => String::new(),
        2 => "\"a,b\"".into(),
        3 => "1e400".into(),
        4 => "-".into(),
        5 => "x".repeat(r.random_range(1..300)),
        _ => format!("{}", r.random_range(0..17)),
    }
}

fn csv_bytes(r: &mut StdRng, n: usize) -> Vec<u8> {
    let cols = if r.random_bool(0.8) { 65 } else { r.random_range(0..70) };
    let mut s = String::new();
    if r.random_bool(0.5) {
        let mut h: Vec<String> = (0..cols.max(1) - 1).map(|i| format!("f{i}")).collect();
        h.push("label".into());
        s += &h.join(",");
        s.push('\n');
    }
    for _ in 0..n {
        let c = if r.random_bool(0.9) { cols } else { r.random_range(0..70) };
        let row: Vec<String> =
            (0..c).map(|_| if r.random_bool(0.95) { format!("{}", r.random_range(0..17)) } else { cell(r) }).collect();
        s += &row.join(",");
        s.push('\n');
    }
    let mut b = s.into_bytes();
    if r.random_bool(0.05) && !b.is_empty() {
        let i = r.random_range(0..b.len());
        b[i] = 0xff;
    }
    b
}

fn jsonl_bytes(r: &mut StdRng, n: usize) -> Vec<u8> {
    let mut s = String::new();
    for _ in 0..n {
        let text =
            ["hello world", "", "x", "ünïcödé ☃", "a b c d e f g h"].choose(r).unwrap().repeat(r.random_range(1..40));
        let line = match r.random_range(0..12) {
            0 => "{\"text\": 3, \"label\": 1}".to_string(),
            1 => format!("{{\"text\": \"{text}\"}}"),
            2 => "{not json".to_string(),
            3 => format!("{{\"text\": \"{text}\", \"label\": {}}}", int(r)),
            4 => format!("{{\"text\": \"{text}\", \"label\": \"pos\"}}"),
            5 => "[]".to_string(),
            _ => format!("{{\"text\": \"{text}\", \"label\": {}}}", r.random_range(0..4)),
        };
        s += &line;
        s.push('\n');
    }
    let mut b = s.into_bytes();
    if r.random_bool(0.05) && !b.is_empty() {
        let i = r.random_range(0..b.len());
        b[i] = 0xc3;
    }
    b
}

/// `semu unlearn` through the binary with a few random settings: exit 0–3 only, a clean error,
/// nothing at `--out` after a failure, finite outputs from a model that was written.
fn unlearn_case(r: &mut StdRng, dir: &Path) -> Verdict {
    let out = dir.join("o.onnx");
    let _ = std::fs::remove_file(&out);
    let mut args: Vec<String> = ["unlearn", "--model"].map(String::from).to_vec();
    args.push(fx("digits/model.onnx").display().to_string());
    args.extend(["--forget".into(), fx("digits/forget_class3.npz").display().to_string()]);
    args.extend([
        "--out".into(),
        out.display().to_string(),
        "--epochs".into(),
        "1".into(),
        "--device".into(),
        "cpu".into(),
    ]);
    let values = ["nan", "inf", "-1", "0", "1e30", "1e-30", "0.5", "abc", "", "3", "0.001", "1e308", "2"];
    let flags = [
        "--lr",
        "--gamma",
        "--alpha",
        "--weight-decay",
        "--momentum",
        "--batch-size",
        "--objective",
        "--kl-weight",
        "--tolerance",
        "--optimizer",
    ];
    for _ in 0..r.random_range(0..4) {
        let flag = *flags.choose(r).unwrap();
        let v = match flag {
            "--objective" => *["rl", "ga", "nearest", "npo", "graddiff", "redistribute", "x"].choose(r).unwrap(),
            "--optimizer" => *["sgd", "adam", "lbfgs"].choose(r).unwrap(),
            _ => values.choose(r).unwrap(),
        };
        args.extend([flag.to_string(), v.to_string()]);
    }
    if r.random_bool(0.3) {
        args.extend(["--retain".into(), fx("digits/retain_class3.npz").display().to_string()]);
    }
    if !args.iter().any(|a| a == "--lr") {
        args.extend(["--lr".into(), "0.001".into()]);
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_semu"));
    cmd.args(&args).current_dir(dir).env_remove("RUST_BACKTRACE");
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            set_address_space(libc::RLIM_INFINITY);
            Ok(())
        })
    };
    let o = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let code = o.status.code();
    for bad in ["frame #", "Exception raised from", "panicked", "internal error"] {
        if err.contains(bad) {
            return Verdict::Failed(format!("'{bad}' from `semu {}`: {err}", args.join(" ")));
        }
    }
    match code {
        Some(0) => match finite_outputs(&out) {
            Ok(()) => Verdict::Ran,
            Err(e) => Verdict::Failed(format!("`semu {}` wrote a model that {e}", args.join(" "))),
        },
        Some(1..=3) if out.exists() => {
            Verdict::Failed(format!("`semu {}` failed but wrote {}", args.join(" "), out.display()))
        }
        Some(1..=3) => refused(err.lines().last().unwrap_or_default()),
        other => Verdict::Failed(format!("`semu {}` exited with {other:?}: {err}", args.join(" "))),
    }
}

fn finite_outputs(out: &Path) -> Result<(), String> {
    let model = OnnxModel::load(out).map_err(|e| format!("does not load: {e}"))?;
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions::default()).map_err(|e| e.to_string())?;
    let test = semu::data::open(&fx("digits/test.npz")).map_err(|e| e.to_string())?;
    let (x, _) = test.batch(&(0..32).collect::<Vec<_>>()).map_err(|e| e.to_string())?;
    let name = plan.inputs()[0].name.clone();
    let ys = plan.run(&HashMap::from([(name, x)])).map_err(|e| e.to_string())?;
    match ys.iter().all(|y| y.isfinite().all().int64_value(&[]) == 1) {
        true => Ok(()),
        false => Err("outputs NaN or Inf".into()),
    }
}

/// Sets this process's soft address-space limit (the hard one stays as it was).
fn set_address_space(bytes: u64) {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_AS, &mut r) == 0 {
            r.rlim_cur = bytes.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_AS, &r);
        }
    }
}

thread_local! {
    /// Set while a case runs: its panics are the fuzzer's to report, not the test harness's.
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs case `i` (see the module doc); `Err` is a failure.
fn run_case(i: u64, seeds: &Seeds, dir: &Path) -> (&'static str, Verdict) {
    let mut r = StdRng::seed_from_u64(SEED ^ i);
    let family = if i % UNLEARN_EVERY == 7 {
        "unlearn"
    } else {
        *["model", "model", "model", "op", "op", "op", "op", "data", "data", "data"].choose(&mut r).unwrap()
    };
    IN_CASE.with(|c| c.set(true));
    let v = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match family {
        "model" => model_case(&mut r, seeds),
        "op" => op_case(&mut r, seeds),
        "data" => data_case(&mut r, seeds, dir),
        _ => unlearn_case(&mut r, dir),
    }));
    IN_CASE.with(|c| c.set(false));
    let v = v.unwrap_or_else(|p| {
        let what = p.downcast_ref::<String>().cloned().or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()));
        Verdict::Failed(format!("panic: {}", what.unwrap_or_default()))
    });
    (family, v)
}

/// An error message without its particulars: quoted names and numbers masked, cut short.
fn gist(e: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    for c in e.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            _ if quoted => {}
            '0'..='9' => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            _ => out.push(c),
        }
    }
    out.chars().take(110).collect()
}

/// Counts and failures of a run.
#[derive(Default)]
struct Tally {
    by_family: BTreeMap<&'static str, [u64; 3]>,
    op_panics: BTreeMap<String, u64>,
    /// Refusals by family and the gist of the message (digits and quoted names masked).
    reasons: BTreeMap<(&'static str, String), u64>,
    failures: Vec<(u64, &'static str, String)>,
    slowest: (Duration, u64),
}

impl Tally {
    fn add(&mut self, i: u64, family: &'static str, v: Verdict, took: Duration) {
        let slot = match &v {
            Verdict::Ran => 0,
            Verdict::Refused(_) => 1,
            Verdict::Skipped => 2,
            Verdict::Failed(_) => 1,
        };
        self.by_family.entry(family).or_default()[slot] += 1;
        match v {
            Verdict::Refused(e) if e.contains("internal error on these inputs") => {
                *self.op_panics.entry(gist(&e)).or_default() += 1;
            }
            Verdict::Failed(f) => self.failures.push((i, family, f)),
            Verdict::Refused(e) => *self.reasons.entry((family, gist(&e))).or_default() += 1,
            _ => {}
        }
        if took > self.slowest.0 {
            self.slowest = (took, i);
        }
    }

    fn report(&self, cases: u64, took: Duration) -> String {
        let mut s = format!("{cases} cases in {:.0} s\n", took.as_secs_f64());
        for (f, [ran, refused, skipped]) in &self.by_family {
            s += &format!("  {f:8} ran {ran:8}  refused {refused:8}  skipped {skipped:6}\n");
        }
        s += &format!("  slowest case {} ({:.2} s)\n", self.slowest.1, self.slowest.0.as_secs_f64());
        s += &format!("  failures {}\n", self.failures.len());
        for (i, f, what) in self.failures.iter().take(20) {
            s += &format!("    case {i} ({f}): {}\n", what.chars().take(400).collect::<String>());
        }
        if std::env::var_os("SEMU_FUZZ_REASONS").is_some() {
            let mut top: Vec<_> = self.reasons.iter().collect();
            top.sort_by(|a, b| b.1.cmp(a.1));
            for ((f, why), k) in top.iter().take(60) {
                s += &format!("    {k:6}  {f:6} {why}\n");
            }
        }
        let total: u64 = self.op_panics.values().sum();
        s += &format!("  panics inside an op, reported as that node's error: {total}\n");
        let mut top: Vec<_> = self.op_panics.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        for (op, k) in top.into_iter().take(12) {
            s += &format!("    {k:6}  {op}\n");
        }
        s
    }
}

/// Runs cases `from..to` until `deadline`. `state`, when given, holds `running N` while case N
/// runs and `next N` once the run ends, so a resumed run knows which case ended the process.
fn fuzz(from: u64, to: u64, deadline: Option<Instant>, state: Option<&Path>) -> (Tally, u64) {
    semu::limits::set_max_elements(MAX_ELEMENTS);
    set_address_space(ADDRESS_SPACE);
    tch::set_num_threads(1);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_CASE.with(|c| c.get()) && !semu::engine::plan::inside_op() {
            default_hook(info)
        }
    }));
    let seeds = Seeds::load();
    let dir = tempfile::tempdir().unwrap();
    let running = std::sync::Arc::new(AtomicU64::new(u64::MAX));
    let started = std::sync::Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    {
        let (running, started) = (running.clone(), started.clone());
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_secs(1));
            let i = running.load(Ordering::SeqCst);
            let since =
                t0.elapsed().as_millis() as u64 - started.load(Ordering::SeqCst).min(t0.elapsed().as_millis() as u64);
            if i != u64::MAX && since > HANG.as_millis() as u64 {
                eprintln!("fuzz: case {i} has run for {} s: a hang (replay: SEMU_FUZZ_REPLAY={i})", since / 1000);
                // SAFETY: ends the process without exit handlers, which could wait on the stuck case.
                unsafe { libc::_exit(3) };
            }
        });
    }
    let mut tally = Tally::default();
    let mut i = from;
    let state = state.map(|s| std::fs::File::create(s).unwrap());
    let mark = |what: String| {
        use std::os::unix::fs::FileExt;
        if let Some(f) = &state {
            f.write_all_at(format!("{what:<40}\n").as_bytes(), 0).unwrap();
        }
    };
    while i < to && deadline.is_none_or(|d| Instant::now() < d) {
        mark(format!("running {i}"));
        started.store(t0.elapsed().as_millis() as u64, Ordering::SeqCst);
        running.store(i, Ordering::SeqCst);
        let t = Instant::now();
        let (family, v) = run_case(i, &seeds, dir.path());
        running.store(u64::MAX, Ordering::SeqCst);
        tally.add(i, family, v, t.elapsed());
        i += 1;
    }
    mark(format!("next {i}"));
    (tally, i - from)
}

#[test]
fn smoke() {
    let t = Instant::now();
    let (tally, n) = fuzz(0, 10_000, None, None);
    let report = tally.report(n, t.elapsed());
    eprintln!("{report}");
    assert!(tally.failures.is_empty(), "{report}");
    // The generator must reach past the loader: a fuzzer whose every case is refused tests nothing.
    for (f, [ran, ..]) in &tally.by_family {
        assert!(*ran > 0, "no {f} case ran:\n{report}");
    }
}

/// `make fuzz`: a long run, resumed from `target/fuzz/state`; failures are appended to
/// `target/fuzz/failures.txt`. `SEMU_FUZZ_REPLAY=N[,M…]` runs those cases only, printing each.
#[test]
#[ignore]
fn long() {
    if let Ok(list) = std::env::var("SEMU_FUZZ_REPLAY") {
        for i in list.split(',').filter_map(|s| s.trim().parse::<u64>().ok()) {
            let (tally, _) = fuzz(i, i + 1, None, None);
            eprintln!("case {i}: {}", tally.report(1, Duration::ZERO));
        }
        return;
    }
    let env = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (cases, minutes) = (env("SEMU_FUZZ_CASES", 1_000_000), env("SEMU_FUZZ_MINUTES", 60));
    let (shard, shards) = (env("SEMU_FUZZ_SHARD", 0), env("SEMU_FUZZ_SHARDS", 1));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz");
    std::fs::create_dir_all(&root).unwrap();
    let state = root.join(format!("state-{shard}-of-{shards}"));
    // Shard k of n takes the k-th n-th of the case numbers.
    let (lo, hi) = (cases * shard / shards, cases * (shard + 1) / shards);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(root.join("failures.txt")).unwrap();
    let last = std::fs::read_to_string(&state).unwrap_or_default();
    let mut words = last.split_whitespace();
    let (how, at) = (words.next(), words.next().and_then(|v| v.parse::<u64>().ok()));
    let done = match (how, at) {
        (Some("next"), Some(n)) => n,
        (Some("running"), Some(n)) => {
            // The previous run ended inside case n (a crash, a hang, or the machine killing it).
            writeln!(f, "case {n}: the fuzzing process ended inside this case (replay: SEMU_FUZZ_REPLAY={n})").unwrap();
            n + 1
        }
        _ => lo,
    }
    .clamp(lo, hi);
    let t = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(minutes * 60);
    let (tally, n) = fuzz(done, hi, Some(deadline), Some(&state));
    let report = tally.report(n, t.elapsed());
    eprintln!("shard {shard}/{shards}: cases {done}..{} of {lo}..{hi}\n{report}", done + n);
    for (i, fam, what) in &tally.failures {
        writeln!(f, "case {i} ({fam}): {what}").unwrap();
    }
    std::fs::write(root.join(format!("report-{shard}-of-{shards}.txt")), &report).unwrap();
    assert!(tally.failures.is_empty(), "{report}");
}

/// Found by the first 1,000,000-case run: an `.npy` header whose `descr` starts with a multi-byte
/// character panicked in the reader (a string split inside a character), through every command.
#[test]
fn fuzz_regressions_npy_descr_starting_with_a_multibyte_character() {
    let dir = tempfile::tempdir().unwrap();
    let npy = common::npy;
    std::fs::write(dir.path().join("x.npy"), npy("\u{fffd}f4", "(1, 64)", &[0; 256])).unwrap();
    std::fs::write(dir.path().join("y.npy"), npy("<i8", "(1,)", &[0; 8])).unwrap();
    let e = semu::data::open(&dir.path().join("x.npy")).err().expect("refused").to_string();
    assert!(e.contains("x.npy") && e.contains("f4"), "{e}");
}

/// Runs one `op` node on `inputs` (all fed) with `attrs`; the error text on failure.
fn one_node(op: &str, inputs: &[TensorData], attrs: Vec<AttributeProto>, opset: i64) -> Result<Vec<Value>, String> {
    let names: Vec<String> = (0..inputs.len()).map(|i| format!("x{i}")).collect();
    let mut n = node(op, &names.iter().map(String::as_str).collect::<Vec<_>>(), &["y"]);
    n.attribute = attrs;
    let graph = GraphProto {
        name: Some("regression".into()),
        node: vec![n],
        input: inputs.iter().zip(&names).map(|(d, name)| typed(name, d.dtype.onnx_code(), Some(&d.dims))).collect(),
        output: vec![ValueInfoProto { name: Some("y".into()), ..Default::default() }],
        ..Default::default()
    };
    let opset_import = vec![OperatorSetIdProto { domain: Some(String::new()), version: Some(opset) }];
    let m = ModelProto { ir_version: Some(8), opset_import, graph: Some(graph), ..Default::default() };
    let path = std::env::temp_dir().join("regression.onnx");
    let model = OnnxModel::from_bytes(&m.encode_to_vec(), path, std::env::temp_dir()).map_err(|e| e.to_string())?;
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions::default()).map_err(|e| e.to_string())?;
    let feeds = inputs
        .iter()
        .zip(&names)
        .map(|(d, name)| (name.clone(), Value::Tensor(semu::engine::convert::to_tensor(d).unwrap())))
        .collect();
    plan.run_values(&feeds).map_err(|e| e.to_string())
}

fn data(dtype: DType, dims: &[i64], values: &[i64]) -> TensorData {
    let size = dtype.size().unwrap();
    let bytes = values
        .iter()
        .flat_map(|&v| match dtype {
            DType::F32 => (v as f32).to_le_bytes().to_vec(),
            _ => v.to_le_bytes()[..size].to_vec(),
        })
        .collect();
    TensorData { dtype, dims: dims.to_vec(), bytes }
}

/// Found by the first fuzz runs: these panicked inside the op (an index past a scalar's shape,
/// an unwrap of libtorch's refusal), which the engine reported as "internal error on these
/// inputs". Each must now be an ordinary error naming the node, or a result.
#[test]
fn fuzz_regressions_ops_that_panicked() {
    let scalar = data(DType::F32, &[], &[2]);
    let idx = data(DType::I64, &[1], &[0]);
    for (op, inputs, attrs) in [
        ("Gather", vec![scalar.clone(), idx.clone()], vec![]),
        ("GatherElements", vec![scalar.clone(), idx.clone()], vec![]),
        ("ScatterElements", vec![scalar.clone(), idx.clone(), data(DType::F32, &[1], &[1])], vec![]),
        ("SplitToSequence", vec![scalar.clone()], vec![]),
        ("AffineGrid", vec![scalar.clone(), data(DType::I64, &[4], &[1, 1, 2, 2])], vec![]),
        ("Shrink", vec![data(DType::Bool, &[2], &[0, 1])], vec![]),
        // From the first 1,000,000-case run:
        ("TopK", vec![scalar.clone(), idx.clone()], vec![]),
        ("OneHot", vec![idx.clone(), data(DType::I64, &[], &[-3]), data(DType::F32, &[2], &[0, 1])], vec![]),
        ("OneHot", vec![idx.clone(), data(DType::I64, &[], &[3]), data(DType::F32, &[1], &[0])], vec![]),
        ("CenterCropPad", vec![scalar.clone(), data(DType::I64, &[1], &[3])], vec![attr_ints("axes", &[0])]),
        (
            "RotaryEmbedding",
            vec![
                data(DType::F32, &[1, 1, 1, 2], &[1, 2]),
                data(DType::F32, &[1, 1], &[1]),
                data(DType::F32, &[1, 1], &[0]),
                data(DType::I64, &[1], &[0]),
            ],
            vec![],
        ),
    ] {
        let e = one_node(op, &inputs, attrs, 20).err().unwrap_or_else(|| panic!("{op} ran"));
        assert!(e.contains(op) && !e.contains("internal error"), "{op}: {e}");
    }
    // An allocation the element bound did not stop (1 TiB under the fuzzer's address-space limit).
    let e = one_node(
        "CenterCropPad",
        &[data(DType::U8, &[4, 1], &[0; 4]), data(DType::I64, &[2], &[1 << 20, 1 << 20])],
        vec![],
        18,
    )
    .unwrap_err();
    assert!(e.contains("over the limit") && e.contains("CenterCropPad"), "{e}");
    // Integer ReduceMean over a scalar's axis 0, and over no elements: values, not panics.
    let y = one_node("ReduceMean", &[data(DType::I64, &[], &[7])], vec![attr_ints("axes", &[0])], 13).unwrap();
    let Value::Tensor(y) = &y[0] else { panic!("a tensor") };
    assert_eq!(y.int64_value(&[]), 7);
    let y = one_node("ReduceMean", &[data(DType::I64, &[0, 2], &[])], vec![attr_ints("axes", &[0])], 13).unwrap();
    let Value::Tensor(y) = &y[0] else { panic!("a tensor") };
    assert_eq!(y.size(), [1, 2]);
}

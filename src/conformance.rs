//! The ONNX backend test data (shipped in the onnx wheel) run through the engine: one case is a
//! folder with `model.onnx` and `test_data_set_*/{input,output}_N.pb`. Used by
//! `tests/conformance.rs` and `make conformance`.
use crate::engine::convert::{dtype_of, from_tensor};
use crate::engine::{Plan, PlanOptions, Registry, Value};
use crate::error::{Error, Result};
use crate::onnx::proto::{type_proto, TensorProto};
use crate::onnx::{DType, OnnxModel, TensorData};
use prost::Message;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Pass,
    /// Ran, but an output differs (or has the wrong dtype/shape).
    Fail(String),
    /// The model uses ops the engine lacks.
    Unsupported(String),
    /// Anything else: load error, runtime error, unreadable test data.
    Error(String),
}

/// `onnx/backend/test/data` inside the project's venv, or `$SEMU_ONNX_TESTDATA`.
pub fn data_root() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SEMU_ONNX_TESTDATA") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(venv)
        .ok()?
        .flatten()
        .map(|e| e.path().join("site-packages/onnx/backend/test/data"))
        .find(|p| p.is_dir())
}

/// The older model suites (`pytorch-converted`, `pytorch-operator`, `simple`) extracted by
/// `tools/fetch_onnx_suites.py` into `.venv/onnx-suites`, or `$SEMU_ONNX_SUITES`.
pub fn model_suites_root() -> PathBuf {
    std::env::var("SEMU_ONNX_SUITES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/onnx-suites"))
}

pub const MODEL_SUITES: [&str; 3] = ["pytorch-converted", "pytorch-operator", "simple"];

/// Case folders under `data_root()/node`, sorted by name.
pub fn node_cases(root: &Path) -> Vec<PathBuf> {
    case_dirs(&root.join("node"))
}

/// Every folder under `dir` holding a `model.onnx`, sorted by name.
pub fn case_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.join("model.onnx").exists()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

pub fn read_tensor_pb(path: &Path) -> Result<TensorData> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let t = TensorProto::decode(bytes.as_slice())
        .map_err(|e| Error::msg(format!("{}: not a TensorProto ({e})", path.display())))?;
    if t.data_type() == 0 {
        return Err(Error::msg(format!("{}: not a plain tensor (sequence/optional/map data)", path.display())));
    }
    TensorData::from_proto(&t, path.parent().unwrap_or(Path::new(".")))
}

/// Tolerances per dtype: (relative, absolute). The ONNX backend suite itself uses 1e-3 / 1e-7.
pub fn tolerance(d: DType) -> (f64, f64) {
    match d {
        DType::F64 => (1e-6, 1e-7),
        DType::F32 | DType::C64 => (1e-3, 1e-5),
        DType::F16 | DType::BF16 => (1e-2, 1e-3),
        _ => (0.0, 0.0),
    }
}

/// Compares one output; Err names the first mismatch.
pub fn compare(got: &TensorData, want: &TensorData) -> std::result::Result<(), String> {
    if got.dims != want.dims {
        return Err(format!("shape {:?}, expected {:?}", got.dims, want.dims));
    }
    if want.dtype == DType::String {
        return Err("string tensors are not supported".into());
    }
    let (rtol, atol) = tolerance(want.dtype);
    let (g, w) = (as_f64(got)?, as_f64(want)?);
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        let same = (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= atol + rtol * b.abs();
        if !same {
            return Err(format!("element {i}: got {a}, expected {b} (rtol {rtol}, atol {atol})"));
        }
    }
    Ok(())
}

fn as_f64(t: &TensorData) -> std::result::Result<Vec<f64>, String> {
    let b = &t.bytes;
    Ok(match t.dtype {
        DType::F32 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::F64 => b.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
        DType::F16 => b.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        DType::BF16 => b.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f64()).collect(),
        DType::I8 => b.iter().map(|&x| x as i8 as f64).collect(),
        DType::U8 | DType::Bool => b.iter().map(|&x| x as f64).collect(),
        DType::I16 => b.chunks_exact(2).map(|c| i16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        DType::U16 => b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as f64).collect(),
        DType::I32 => b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::U32 => b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::I64 => b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::U64 => b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        DType::C64 => b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
        d if d.is_narrow() => t.narrow_values().map_err(|e| e.to_string())?.into_iter().map(f64::from).collect(),
        d => return Err(format!("cannot compare {d} tensors")),
    })
}

/// Runs every `test_data_set_*` of one node-test case folder on CPU.
pub fn run_node_case(dir: &Path, reg: &Registry) -> Outcome {
    let model = match OnnxModel::load(dir.join("model.onnx")) {
        Ok(m) => m,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let missing = crate::engine::unsupported_ops(&model, reg);
    if !missing.is_empty() {
        return Outcome::Unsupported(missing.join("; "));
    }
    let mut sets: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()).collect())
        .unwrap_or_default();
    sets.sort();
    let inputs: Vec<crate::onnx::proto::ValueInfoProto> = {
        let inits: std::collections::HashSet<&str> = model.graph().initializer.iter().map(|t| t.name()).collect();
        model.graph().input.iter().filter(|v| !inits.contains(v.name())).cloned().collect()
    };
    let plan = match Plan::new(&model, reg, &PlanOptions::default()) {
        Ok(p) => p,
        Err(Error::Unsupported(m)) => return Outcome::Unsupported(m),
        Err(e) => return Outcome::Error(e.to_string()),
    };
    for set in sets {
        let outcome = (|| -> std::result::Result<(), Outcome> {
            let mut feeds = HashMap::new();
            for (i, vi) in inputs.iter().enumerate() {
                let v =
                    read_value_pb(&set.join(format!("input_{i}.pb")), vi).map_err(|e| Outcome::Error(e.to_string()))?;
                feeds.insert(vi.name().to_string(), v);
            }
            compare_outputs(&plan, &feeds, &set, &model)
        })();
        if let Err(o) = outcome {
            return o;
        }
    }
    Outcome::Pass
}

/// Reads a test-data file holding a value of `vi`'s type (tensor, sequence or optional).
pub fn read_value_pb(path: &Path, vi: &crate::onnx::proto::ValueInfoProto) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Value::decode(&bytes, vi.r#type.as_ref(), base).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
}

fn compare_outputs(
    plan: &Plan,
    feeds: &HashMap<String, Value>,
    set: &Path,
    model: &OnnxModel,
) -> std::result::Result<(), Outcome> {
    let outs = plan.run_values(feeds).map_err(|e| Outcome::Error(e.to_string()))?;
    for (i, (got, vi)) in outs.iter().zip(&model.graph().output).enumerate() {
        let path = set.join(format!("output_{i}.pb"));
        let fail = |m: String| Outcome::Fail(format!("output '{}': {m}", vi.name()));
        // Numeric tensors compare against the file's own dtype (u16 results wrap as in ONNX);
        // sequences, optionals and strings by value.
        let numeric = match vi.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.elem_type() != DType::String.onnx_code(),
            Some(_) => false,
            None => true,
        };
        match got {
            Value::Tensor(g) if numeric => {
                let want = read_tensor_pb(&path).map_err(|e| Outcome::Error(e.to_string()))?;
                compare_tensor(g, &want).map_err(fail)?
            }
            _ => {
                let want = read_value_pb(&path, vi).map_err(|e| Outcome::Error(e.to_string()))?;
                compare_value(got, &want).map_err(fail)?
            }
        }
    }
    Ok(())
}

/// Compares values of any kind: tensors by dtype and tolerance, strings exactly, sequences and
/// optionals element by element.
pub fn compare_value(got: &Value, want: &Value) -> std::result::Result<(), String> {
    match (got, want) {
        (Value::Tensor(g), Value::Tensor(w)) => {
            let w = crate::engine::convert::from_tensor(w, dtype_of(w.kind()).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            compare_tensor(g, &w)
        }
        (Value::Str(g), Value::Str(w)) if g == w => Ok(()),
        (Value::Str(g), Value::Str(w)) => {
            Err(format!("strings {:?} {:?}, expected {:?} {:?}", g.dims, g.data, w.dims, w.data))
        }
        (Value::Seq(g), Value::Seq(w)) => {
            if g.len() != w.len() {
                return Err(format!("sequence of {} values, expected {}", g.len(), w.len()));
            }
            g.iter()
                .zip(w)
                .enumerate()
                .try_for_each(|(i, (a, b))| compare_value(a, b).map_err(|m| format!("item {i}: {m}")))
        }
        (Value::Opt(None), Value::Opt(None)) => Ok(()),
        (Value::Opt(Some(g)), Value::Opt(Some(w))) => compare_value(g, w),
        (g, w) => Err(format!("got {}, expected {}", g.describe(), w.describe())),
    }
}

/// A tensor against expected data; types libtorch lacks live widened (`engine::convert`) and
/// compare by value.
fn compare_tensor(got: &tch::Tensor, want: &TensorData) -> std::result::Result<(), String> {
    let have = dtype_of(got.kind()).map_err(|e| e.to_string())?;
    let widened = matches!(
        (want.dtype, have),
        (DType::U16, DType::I32)
            | (DType::U32 | DType::U64, DType::I64)
            | (DType::I4 | DType::I2, DType::I8)
            | (DType::U4 | DType::U2, DType::U8)
            | (DType::F4E2M1 | DType::F8E8M0, DType::F32)
    );
    if have != want.dtype && !widened {
        return Err(format!("dtype {have}, expected {}", want.dtype));
    }
    let got = from_tensor(got, want.dtype).map_err(|e| e.to_string())?;
    compare(&got, want)
}

/// `light` models ship only their expected output: the input is ONNX's deterministic dummy data,
/// `arange(n) / n` in float32 with unknown dims set to 1.
pub fn run_light_case(model_path: &Path, reg: &Registry) -> Outcome {
    let model = match OnnxModel::load(model_path) {
        Ok(m) => m,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let missing = crate::engine::unsupported_ops(&model, reg);
    if !missing.is_empty() {
        return Outcome::Unsupported(missing.join("; "));
    }
    let plan = match Plan::new(&model, reg, &PlanOptions::default()) {
        Ok(p) => p,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    let inits: std::collections::HashSet<&str> = model.graph().initializer.iter().map(|t| t.name()).collect();
    let mut feeds = HashMap::new();
    for v in model.graph().input.iter().filter(|v| !inits.contains(v.name())) {
        let s = crate::onnx::summary::value_summary(v);
        let dims: Vec<i64> = s.shape.iter().map(|d| d.parse().unwrap_or(1)).collect();
        let n: i64 = dims.iter().product();
        let x = tch::Tensor::arange(n, (tch::Kind::Float, tch::Device::Cpu)).f_div_scalar(n as f64);
        match x.and_then(|x| x.f_reshape(&dims)) {
            Ok(x) => feeds.insert(v.name().to_string(), x),
            Err(e) => return Outcome::Error(e.to_string()),
        };
    }
    let stem = model_path.with_extension("");
    let set = stem.parent().unwrap_or(Path::new(".")).to_path_buf();
    let prefix = stem.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let outs = match plan.run(&feeds) {
        Ok(o) => o,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    for (i, (got, vi)) in outs.iter().zip(&model.graph().output).enumerate() {
        let want = match read_tensor_pb(&set.join(format!("{prefix}_output_{i}.pb"))) {
            Ok(w) => w,
            Err(e) => return Outcome::Error(e.to_string()),
        };
        let got = match from_tensor(got, want.dtype) {
            Ok(g) => g,
            Err(e) => return Outcome::Fail(e.to_string()),
        };
        if let Err(m) = compare(&got, &want) {
            return Outcome::Fail(format!("output '{}': {m}", vi.name()));
        }
    }
    Outcome::Pass
}

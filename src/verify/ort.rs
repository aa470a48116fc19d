//! ONNX Runtime as the reference runtime, through the `ort` crate with the library loaded at run
//! time: `SEMU_ORT_DYLIB` if set, else the venv's library found by build.rs. The environment is
//! created once per process (ONNX Runtime allows only one).
use crate::error::{Error, Result};
use crate::onnx::{DType, TensorData};
use ort::memory::Allocator;
use ort::session::Session;
use ort::value::{DynTensor, DynTensorValueType, TensorElementType, ValueType};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Where the ONNX Runtime shared library is taken from, in order of preference.
pub fn dylib_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SEMU_ORT_DYLIB").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::msg(format!("SEMU_ORT_DYLIB={} is not a file", p.display())));
        }
        return Ok(p);
    }
    let built = env!("SEMU_BUILD_ORT_DYLIB");
    if !built.is_empty() && Path::new(built).is_file() {
        return Ok(PathBuf::from(built));
    }
    Err(Error::msg(format!(
        "ONNX Runtime library not found{}: set SEMU_ORT_DYLIB to the path of libonnxruntime.so \
         (e.g. <venv>/lib/python3.11/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)",
        if built.is_empty() { String::new() } else { format!(" (the build's {built} is gone)") }
    )))
}

/// The process-wide environment; the first call loads the library.
fn environment() -> Result<&'static ort::environment::Environment> {
    static ENV: OnceLock<std::result::Result<ort::environment::Environment, String>> = OnceLock::new();
    let env = ENV.get_or_init(|| {
        let path = dylib_path().map_err(|e| e.to_string())?;
        let builder =
            ort::init_from(&path).map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
        builder.with_name("semu").with_telemetry(false).build().map_err(|e| format!("ONNX Runtime: {e}"))
    });
    env.as_ref().map_err(|e| Error::msg(e.clone()))
}

/// A model loaded in ONNX Runtime (CPU execution provider).
pub struct OrtSession {
    path: PathBuf,
    // `Session::run` takes `&mut self` (ONNX Runtime internals are not thread safe).
    session: Mutex<Session>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl OrtSession {
    /// Loads `path`; `threads` = 0 lets ONNX Runtime choose the intra-op thread count.
    pub fn load(path: &Path, threads: usize) -> Result<Self> {
        let env = environment()?;
        let model_err = |e: String| Error::Model { path: path.to_path_buf(), reason: format!("onnxruntime: {e}") };
        let mut builder = Session::builder(env).map_err(|e| model_err(e.to_string()))?;
        if threads > 0 {
            builder = builder.with_intra_threads(threads).map_err(|e| model_err(e.to_string()))?;
        }
        let session = builder.commit_from_file(path).map_err(|e| {
            let text = e.to_string();
            match missing_kernel(&text) {
                Some((op, node)) => Error::NoKernel {
                    path: path.to_path_buf(),
                    runtime: "onnxruntime".into(),
                    provider: "CPU execution provider".into(),
                    op,
                    node,
                },
                None => model_err(text),
            }
        })?;
        let inputs = session.inputs().iter().map(|o| o.name().to_string()).collect();
        let outputs = session.outputs().iter().map(|o| o.name().to_string()).collect();
        Ok(OrtSession { path: path.to_path_buf(), session: Mutex::new(session), inputs, outputs })
    }

    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model on named feeds; returns every graph output, in graph order.
    pub fn run(&self, feeds: &[(String, TensorData)]) -> Result<Vec<(String, TensorData)>> {
        let err = |what: String| Error::msg(format!("onnxruntime, {}: {what}", self.path.display()));
        for name in &self.inputs {
            if !feeds.iter().any(|(n, _)| n == name) {
                return Err(err(format!("no feed for input '{name}'")));
            }
        }
        let mut values = Vec::with_capacity(feeds.len());
        for (name, data) in feeds {
            values.push((name.clone(), to_ort(data).map_err(|e| err(format!("input '{name}': {e}")))?));
        }
        let mut session = self.session.lock().map_err(|_| err("a previous run panicked".into()))?;
        let mut outs = session.run(values).map_err(|e| err(e.to_string()))?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let v = outs.remove(name.as_str()).ok_or_else(|| err(format!("output '{name}' missing")))?;
            let t = v.downcast::<DynTensorValueType>().map_err(|e| err(format!("output '{name}': {e}")))?;
            result.push((name.clone(), from_ort(&t).map_err(|e| err(format!("output '{name}': {e}")))?));
        }
        Ok(result)
    }
}

/// The op and node of onnxruntime's "Could not find an implementation for OP(VERSION) node with
/// name 'NODE'": the session has no kernel for that op on its providers.
fn missing_kernel(text: &str) -> Option<(String, String)> {
    const SAYS: &str = "Could not find an implementation for ";
    let rest = &text[text.find(SAYS)? + SAYS.len()..];
    let op = rest.split(['(', ' ']).next().filter(|o| !o.is_empty())?;
    let node = rest.split_once("node with name '").and_then(|(_, n)| n.split('\'').next()).unwrap_or_default();
    Some((op.to_string(), node.to_string()))
}

fn element_type(d: DType) -> Result<TensorElementType> {
    Ok(match d {
        DType::F32 => TensorElementType::Float32,
        DType::F64 => TensorElementType::Float64,
        DType::F16 => TensorElementType::Float16,
        DType::BF16 => TensorElementType::Bfloat16,
        DType::I8 => TensorElementType::Int8,
        DType::U8 => TensorElementType::Uint8,
        DType::I16 => TensorElementType::Int16,
        DType::U16 => TensorElementType::Uint16,
        DType::I32 => TensorElementType::Int32,
        DType::U32 => TensorElementType::Uint32,
        DType::I64 => TensorElementType::Int64,
        DType::U64 => TensorElementType::Uint64,
        DType::Bool => TensorElementType::Bool,
        d => return Err(Error::msg(format!("element type {d} is not supported here"))),
    })
}

fn dtype_of(t: TensorElementType) -> Result<DType> {
    let all = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::BF16,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ];
    all.into_iter()
        .find(|d| element_type(*d).is_ok_and(|e| e == t))
        .ok_or_else(|| Error::msg(format!("onnxruntime element type {t:?} is not supported here")))
}

/// Copies packed little-endian bytes into a fresh CPU tensor. One byte-level path serves every
/// fixed-size type, f16/bf16 included (`ort`'s typed constructors need its `half` feature).
fn to_ort(d: &TensorData) -> Result<DynTensor> {
    let ty = element_type(d.dtype)?;
    let want = d.numel() * d.dtype.size().unwrap_or(0);
    if d.bytes.len() != want || d.dims.iter().any(|&x| x < 0) {
        return Err(Error::msg(format!("{} bytes for {} {:?}", d.bytes.len(), d.dtype, d.dims)));
    }
    let mut t = DynTensor::new(&Allocator::default(), ty, d.dims.clone()).map_err(|e| Error::msg(e.to_string()))?;
    if want > 0 {
        let ptr = t.data_ptr_mut().cast::<u8>();
        // SAFETY: the default allocator is CPU memory; ONNX Runtime sized the buffer for
        // `numel` elements of `ty`, which is exactly `want` bytes (checked above); the source
        // does not overlap a buffer we just allocated.
        unsafe { std::ptr::copy_nonoverlapping(d.bytes.as_ptr(), ptr, want) };
    }
    Ok(t)
}

fn from_ort(t: &DynTensor) -> Result<TensorData> {
    let ValueType::Tensor { ty, shape, .. } = t.dtype() else {
        return Err(Error::msg("not a tensor"));
    };
    if !t.memory_info().is_cpu_accessible() {
        return Err(Error::msg("the tensor is not in CPU memory"));
    }
    let dtype = dtype_of(*ty)?;
    let dims: Vec<i64> = shape.iter().copied().collect();
    let n = crate::onnx::tensor::numel(&dims) * dtype.size().unwrap_or(0);
    let mut bytes = vec![0u8; n];
    if n > 0 {
        let ptr = t.data_ptr().cast::<u8>();
        // SAFETY: a CPU tensor of this type and shape holds exactly `n` contiguous bytes.
        unsafe { std::ptr::copy_nonoverlapping(ptr, bytes.as_mut_ptr(), n) };
    }
    Ok(TensorData { dtype, dims, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build as tm;
    use crate::verify::{compare, Tolerance};

    #[test]
    fn runs_a_tiny_model() {
        let (_dir, path) = tm::linear_relu();
        let s = OrtSession::load(&path, 1).unwrap();
        assert_eq!((s.input_names(), s.output_names()), (&["x".to_string()][..], &["y".to_string()][..]));
        let x = [[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 0.0]];
        let out = s.run(&[("x".into(), tm::f32_data(&[3, 3], x.as_flattened()))]).unwrap();
        let want = vec![("y".to_string(), tm::f32_data(&[3, 2], &tm::linear_relu_expected(&x)))];
        let c = compare(&out, &want, Tolerance::new(1e-6, 1e-6));
        assert!(c.passed(), "{c}");
    }

    #[test]
    fn every_dtype_round_trips() {
        let dtypes = [DType::F32, DType::F64, DType::F16, DType::I64, DType::I32, DType::Bool, DType::U8, DType::I8];
        let (_dir, path) = tm::identities(&dtypes);
        let s = OrtSession::load(&path, 0).unwrap();
        let feeds: Vec<_> = dtypes.iter().enumerate().map(|(i, d)| (format!("in{i}"), tm::sample(*d))).collect();
        let out = s.run(&feeds).unwrap();
        for (i, (name, t)) in out.iter().enumerate() {
            assert_eq!((name.as_str(), t), (format!("out{i}").as_str(), &feeds[i].1));
        }
    }

    #[test]
    fn a_missing_kernel_names_the_op_and_node() {
        let text = "Failed to commit: [ONNXRuntimeError] : 9 : NOT_IMPLEMENTED : Could not find an implementation \
                    for NhwcConv(1) node with name 'NhwcConv_0-/unet/conv_in/Conv'";
        assert_eq!(missing_kernel(text), Some(("NhwcConv".into(), "NhwcConv_0-/unet/conv_in/Conv".into())));
        assert_eq!(missing_kernel("Load model from m.onnx failed: Protobuf parsing failed"), None);
    }

    #[test]
    fn errors_name_the_model() {
        let (dir, path) = tm::linear_relu();
        let s = OrtSession::load(&path, 1).unwrap();
        let e = s.run(&[]).unwrap_err().to_string();
        assert!(e.contains("model.onnx") && e.contains("'x'"), "{e}");
        let wrong = TensorData { dtype: DType::I64, dims: vec![1, 3], bytes: vec![0; 24] };
        let e = s.run(&[("x".into(), wrong)]).unwrap_err().to_string();
        assert!(e.contains("model.onnx"), "{e}");
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"not a model").unwrap();
        let e = OrtSession::load(&junk, 1).err().unwrap();
        assert!(matches!(e, Error::Model { .. }) && e.to_string().contains("junk.onnx"), "{e}");
    }
}

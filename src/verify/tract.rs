//! tract as a second, independent reference runtime (pure Rust, shares no code with ONNX Runtime
//! or libtorch). tract covers fewer ops than ONNX Runtime, so "tract cannot handle this model"
//! is its own error kind: a limit of tract that callers report as a warning, not a failure.
use crate::error::Error;
use crate::onnx::{DType, TensorData};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tract_onnx::prelude::{
    onnx, DatumType, Framework, InferenceFact, InferenceModel, InferenceModelExt, IntoRunnable, Tensor,
    TypedRunnableModel,
};

#[derive(Debug, thiserror::Error)]
pub enum TractError {
    /// tract could not parse, type or optimise the model for these input shapes.
    #[error("tract cannot load {}: {reason}", path.display())]
    Load { path: PathBuf, reason: String },
    /// The model loaded but running it failed, or the feeds do not fit it.
    #[error("tract, {}: {reason}", path.display())]
    Run { path: PathBuf, reason: String },
}

impl TractError {
    pub fn is_load_failure(&self) -> bool {
        matches!(self, TractError::Load { .. })
    }
}

impl From<TractError> for Error {
    fn from(e: TractError) -> Self {
        Error::msg(e.to_string())
    }
}

pub type TractResult<T> = std::result::Result<T, TractError>;

/// Shapes and types the optimised plan was built for; a different feed rebuilds it.
type Signature = Vec<(DatumType, Vec<usize>)>;

/// A model parsed by tract. Typing and optimisation need concrete input shapes, so they happen
/// at the first `run` and again whenever the feeds' shapes or types change.
pub struct TractSession {
    path: PathBuf,
    model: InferenceModel,
    inputs: Vec<String>,
    outputs: Vec<String>,
    plan: Mutex<Option<(Signature, Arc<TypedRunnableModel>)>>,
}

impl TractSession {
    pub fn load(path: &Path) -> TractResult<Self> {
        let load_err = |e: String| TractError::Load { path: path.to_path_buf(), reason: e };
        let proto = onnx().proto_model_for_path(path).map_err(|e| load_err(format!("{e:#}")))?;
        // tract reads every node by its op name alone, so com.microsoft's Attention would be
        // taken for ONNX's (and tract panics on its inputs): other domains are not tract's.
        let graph = proto.graph.as_ref().ok_or_else(|| load_err("the model has no graph".into()))?;
        if let Some(n) = graph.node.iter().find(|n| !["", "ai.onnx", "ai.onnx.ml"].contains(&n.domain.as_str())) {
            return Err(load_err(format!(
                "node '{}' is {}::{}: tract implements the ONNX domains only",
                n.name, n.domain, n.op_type
            )));
        }
        let dir = path.parent().and_then(Path::to_str);
        let parsed = std::panic::catch_unwind(AssertUnwindSafe(|| onnx().parse(&proto, dir)))
            .map_err(|_| load_err("tract panicked while parsing the model".into()))?
            .map_err(|e| load_err(format!("{e:#}")))?;
        if !parsed.unresolved_inputs.is_empty() {
            return Err(load_err(format!("inputs not found in the graph: {:?}", parsed.unresolved_inputs)));
        }
        let model = parsed.model;
        let label = |o| model.outlet_label(o).map(str::to_string).unwrap_or_else(|| model.node(o.node).name.clone());
        let inputs = model.input_outlets().map_err(|e| load_err(format!("{e:#}")))?.iter().map(|&o| label(o)).collect();
        let outputs =
            model.output_outlets().map_err(|e| load_err(format!("{e:#}")))?.iter().map(|&o| label(o)).collect();
        Ok(TractSession { path: path.to_path_buf(), model, inputs, outputs, plan: Mutex::new(None) })
    }

    pub fn input_names(&self) -> &[String] {
        &self.inputs
    }
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the model on named feeds; returns every graph output, in graph order.
    pub fn run(&self, feeds: &[(String, TensorData)]) -> TractResult<Vec<(String, TensorData)>> {
        let run_err = |e: String| TractError::Run { path: self.path.clone(), reason: e };
        let mut tensors = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let (_, d) =
                feeds.iter().find(|(n, _)| n == name).ok_or_else(|| run_err(format!("no feed for input '{name}'")))?;
            tensors.push(to_tract(d).map_err(|e| run_err(format!("input '{name}': {e}")))?);
        }
        let sig: Signature = tensors.iter().map(|t| (t.datum_type(), t.shape().to_vec())).collect();
        let plan = {
            let mut cached = self.plan.lock().map_err(|_| run_err("a previous run panicked".into()))?;
            match cached.as_ref() {
                Some((s, p)) if *s == sig => p.clone(),
                _ => {
                    let p = self.optimise(&tensors)?;
                    *cached = Some((sig, p.clone()));
                    p
                }
            }
        };
        let outs = plan.run(tensors.into_iter().map(Into::into).collect()).map_err(|e| run_err(format!("{e:#}")))?;
        if outs.len() != self.outputs.len() {
            return Err(run_err(format!("{} outputs, the model declares {}", outs.len(), self.outputs.len())));
        }
        let mut result = Vec::with_capacity(outs.len());
        for (name, t) in self.outputs.iter().zip(outs) {
            result.push((name.clone(), from_tract(&t).map_err(|e| run_err(format!("output '{name}': {e}")))?));
        }
        Ok(result)
    }

    fn optimise(&self, feeds: &[Tensor]) -> TractResult<Arc<TypedRunnableModel>> {
        let load_err =
            |e: tract_onnx::prelude::TractError| TractError::Load { path: self.path.clone(), reason: format!("{e:#}") };
        let mut model = self.model.clone();
        for (i, t) in feeds.iter().enumerate() {
            model.set_input_fact(i, InferenceFact::dt_shape_from_tensor(t)).map_err(load_err)?;
        }
        // A panic inside tract is a limit of tract, not of the model: reported as a load failure.
        std::panic::catch_unwind(AssertUnwindSafe(|| model.into_optimized().and_then(|m| m.into_runnable())))
            .map_err(|_| TractError::Load {
                path: self.path.clone(),
                reason: "tract panicked optimising the model".into(),
            })?
            .map_err(load_err)
    }
}

fn datum_type(d: DType) -> Option<DatumType> {
    Some(match d {
        DType::F32 => DatumType::F32,
        DType::F64 => DatumType::F64,
        DType::F16 => DatumType::F16,
        DType::I8 => DatumType::I8,
        DType::U8 => DatumType::U8,
        DType::I16 => DatumType::I16,
        DType::U16 => DatumType::U16,
        DType::I32 => DatumType::I32,
        DType::U32 => DatumType::U32,
        DType::I64 => DatumType::I64,
        DType::U64 => DatumType::U64,
        DType::Bool => DatumType::Bool,
        _ => return None,
    })
}

fn to_tract(d: &TensorData) -> Result<Tensor, String> {
    let dt = datum_type(d.dtype).ok_or_else(|| format!("element type {} is not supported by tract", d.dtype))?;
    let shape: Vec<usize> = d
        .dims
        .iter()
        .map(|&x| usize::try_from(x).map_err(|_| format!("dims {:?}", d.dims)))
        .collect::<Result<_, _>>()?;
    let mut t = Tensor::zero_dt(dt, &shape).map_err(|e| format!("{e:#}"))?;
    let dst = t.as_bytes_mut();
    if dst.len() != d.bytes.len() {
        return Err(format!("{} bytes for {} {:?}", d.bytes.len(), d.dtype, d.dims));
    }
    if d.dtype == DType::Bool {
        // A Rust bool must be 0 or 1; ONNX readers treat any non-zero byte as true.
        dst.iter_mut().zip(&d.bytes).for_each(|(o, &b)| *o = u8::from(b != 0));
    } else {
        dst.copy_from_slice(&d.bytes);
    }
    Ok(t)
}

fn from_tract(t: &Tensor) -> Result<TensorData, String> {
    let dims = t.shape().iter().map(|&x| x as i64).collect();
    // Shape-like outputs may come back as symbolic dims; they are plain integers by now.
    let t = if t.datum_type() == DatumType::TDim {
        t.cast_to_dt(DatumType::I64).map_err(|e| format!("{e:#}"))?
    } else {
        std::borrow::Cow::Borrowed(t)
    };
    let dtype = [
        DType::F32,
        DType::F64,
        DType::F16,
        DType::I8,
        DType::U8,
        DType::I16,
        DType::U16,
        DType::I32,
        DType::U32,
        DType::I64,
        DType::U64,
        DType::Bool,
    ]
    .into_iter()
    .find(|d| datum_type(*d) == Some(t.datum_type()))
    .ok_or_else(|| format!("tract type {:?} is not supported here", t.datum_type()))?;
    Ok(TensorData { dtype, dims, bytes: t.as_bytes().to_vec() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::build as tm;
    use crate::verify::{compare, Tolerance};

    #[test]
    fn runs_a_tiny_model_and_replans_for_new_shapes() {
        let (_dir, path) = tm::linear_relu();
        let s = TractSession::load(&path).unwrap();
        assert_eq!((s.input_names(), s.output_names()), (&["x".to_string()][..], &["y".to_string()][..]));
        for x in [vec![[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], vec![[0.5, -3.0, 1.0]]] {
            let n = x.len() as i64;
            let out = s.run(&[("x".into(), tm::f32_data(&[n, 3], x.as_flattened()))]).unwrap();
            let want = vec![("y".to_string(), tm::f32_data(&[n, 2], &tm::linear_relu_expected(&x)))];
            let c = compare(&out, &want, Tolerance::new(1e-6, 1e-6));
            assert!(c.passed(), "{c}");
        }
    }

    #[test]
    fn every_dtype_round_trips() {
        let dtypes = [DType::F32, DType::F64, DType::F16, DType::I64, DType::I32, DType::Bool, DType::U8, DType::I8];
        let (_dir, path) = tm::identities(&dtypes);
        let s = TractSession::load(&path).unwrap();
        let feeds: Vec<_> = dtypes.iter().enumerate().map(|(i, d)| (format!("in{i}"), tm::sample(*d))).collect();
        let out = s.run(&feeds).unwrap();
        for (i, (name, t)) in out.iter().enumerate() {
            assert_eq!((name.as_str(), t), (format!("out{i}").as_str(), &feeds[i].1));
        }
    }

    #[test]
    fn load_failures_are_their_own_kind() {
        let (dir, path) = tm::linear_relu();
        let junk = dir.path().join("junk.onnx");
        std::fs::write(&junk, b"not a model").unwrap();
        let e = TractSession::load(&junk).err().unwrap();
        assert!(e.is_load_failure() && e.to_string().contains("junk.onnx"), "{e}");
        // An op tract does not know fails when the plan is built: still a load failure.
        let (_d2, odd) = tm::write(
            vec![tm::node("NoSuchOp", &["x"], &["y"])],
            vec![],
            vec![tm::value("x", DType::F32, &[1])],
            vec![tm::value("y", DType::F32, &[1])],
            13,
        );
        let e = TractSession::load(&odd).and_then(|s| s.run(&[("x".into(), tm::f32_data(&[1], &[1.0]))]).map(|_| s));
        assert!(e.as_ref().err().is_some_and(TractError::is_load_failure), "{:?}", e.err());
        // com.microsoft's Attention is not ONNX's (tract, reading op names only, panicked on it).
        let mut attention = tm::node("Attention", &["x", "w", "b"], &["y"]);
        attention.domain = Some("com.microsoft".into());
        let (_d3, ms) = tm::write(
            vec![attention],
            vec![tm::f32_init("w", &[2, 6], &[0.5; 12]), tm::f32_init("b", &[6], &[0.0; 6])],
            vec![tm::value("x", DType::F32, &[1, 3, 2])],
            vec![tm::value("y", DType::F32, &[1, 3, 2])],
            13,
        );
        let e = TractSession::load(&ms).err().unwrap();
        assert!(e.is_load_failure() && e.to_string().contains("com.microsoft::Attention"), "{e}");
        // A missing feed is a run error, not a load failure.
        let s = TractSession::load(&path).unwrap();
        let e = s.run(&[]).unwrap_err();
        assert!(!e.is_load_failure() && e.to_string().contains("'x'"), "{e}");
    }
}

//! Writing safetensors files atomically, one tensor in memory at a time: `--out-weights` (a
//! model's weights with the input checkpoint's keys, types and metadata) and unlearning patches.
use super::checkpoint::Checkpoint;
use super::dtype::{convert, safetensors_dtype};
use super::BindReport;
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel, TensorData};
use safetensors::tensor::{Dtype, View};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Where one output tensor's bytes come from; read when the writer reaches it.
pub enum Source<'a> {
    Bytes(Cow<'a, [u8]>),
    /// An initializer of the model, decoded on demand (external data is read then).
    Initializer(&'a OnnxModel, usize),
    /// A checkpoint tensor converted to another float type.
    Converted(&'a [u8], DType, DType),
}

pub struct OutTensor<'a> {
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub len: usize,
    pub source: Source<'a>,
}

/// `View` can't fail, so a read error is parked here and the file is discarded afterwards.
struct Lazy<'a, 'e> {
    t: OutTensor<'a>,
    err: &'e RefCell<Option<Error>>,
}

impl View for Lazy<'_, '_> {
    fn dtype(&self) -> Dtype {
        self.t.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.t.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        let got = match &self.t.source {
            Source::Bytes(b) => return Cow::Borrowed(b.as_ref()),
            Source::Initializer(m, i) => m.tensor(&m.graph().initializer[*i]).map(|d| d.bytes),
            Source::Converted(b, from, to) => convert(b, *from, *to),
        };
        match got {
            Ok(v) if v.len() == self.t.len => Cow::Owned(v),
            Ok(v) => {
                let msg = format!("{} bytes where {} were expected", v.len(), self.t.len);
                self.err.borrow_mut().get_or_insert(Error::msg(msg));
                Cow::Owned(vec![0; self.t.len])
            }
            Err(e) => {
                self.err.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.t.len])
            }
        }
    }
    fn data_len(&self) -> usize {
        self.t.len
    }
}

/// Writes `tensors` and `metadata` as a safetensors file at `path`, atomically (a temporary file
/// in the same folder, synced, then renamed).
pub fn write_safetensors(
    path: &Path,
    tensors: Vec<(String, OutTensor<'_>)>,
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let dir = crate::paths::folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".semu-")
        .suffix(".safetensors.part")
        .tempfile_in(dir)
        .map_err(|e| Error::io(dir, e))?;
    let err = RefCell::new(None);
    let views = tensors.into_iter().map(|(k, t)| (k, Lazy { t, err: &err }));
    let meta: HashMap<String, String> = metadata.into_iter().collect();
    safetensors::tensor::serialize_to_file(views, &Some(meta), tmp.path())
        .map_err(|e| Error::msg(format!("{}: writing safetensors: {e:?}", path.display())))?;
    if let Some(e) = err.into_inner() {
        return Err(Error::msg(format!("{}: not written: {e}", path.display())));
    }
    #[cfg(unix)]
    {
        // Temporary files are private (0600); the output is an ordinary file.
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp.as_file().set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    tmp.as_file().sync_all().map_err(|e| Error::io(tmp.path(), e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// What `--out-weights` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrittenWeights {
    pub path: PathBuf,
    pub tensors: usize,
    /// Changed tensors written from the unlearned model (the rest are the input's bytes).
    pub changed: usize,
    /// Initializers safetensors has no type for (strings, complex, float8), left out.
    pub skipped: Vec<String>,
    /// Changed initializers the input checkpoint had no key for (kept from the model under
    /// `--allow-partial`): written under their initializer names so no change is lost.
    pub added: Vec<String>,
}

/// The model's weights after `changed` (initializer → new data in the graph's dtype) as
/// safetensors at `out`. With `bound` (the model's weights came from a checkpoint) the output
/// has the checkpoint's keys, types and `__metadata__` — changed tensors converted back to their
/// stored type, all others copied byte for byte; without it, keys are the initializer names.
/// `provenance` is added to the metadata.
pub fn write_weights(
    out: &Path,
    model: &OnnxModel,
    bound: Option<&BindReport>,
    changed: &HashMap<String, TensorData>,
    provenance: &BTreeMap<String, String>,
) -> Result<WrittenWeights> {
    let tensor_err = |name: &str, reason: String| Error::Tensor { tensor: name.to_string(), reason };
    let Some(report) = bound else {
        let mut tensors = Vec::new();
        let mut skipped = Vec::new();
        for (i, t) in model.graph().initializer.iter().enumerate() {
            let dt = DType::from_onnx(t.data_type())?;
            let (Some(st), Some(size)) = (safetensors_dtype(dt), dt.size()) else {
                skipped.push(t.name().to_string());
                continue;
            };
            let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            let len = shape.iter().product::<usize>() * size;
            let source = match changed.get(t.name()) {
                Some(d) => Source::Bytes(Cow::Borrowed(&d.bytes)),
                None => Source::Initializer(model, i),
            };
            tensors.push((t.name().to_string(), OutTensor { dtype: st, shape, len, source }));
        }
        let n = tensors.len();
        write_safetensors(out, tensors, provenance.clone())?;
        let written =
            WrittenWeights { path: out.to_path_buf(), tensors: n, changed: changed.len(), skipped, added: vec![] };
        return Ok(written);
    };
    let ck = Checkpoint::open(&report.files)?;
    // Checkpoint key → the new value of an initializer bound to it (tied weights must agree).
    let mut new_value: HashMap<&str, &TensorData> = HashMap::new();
    for b in &report.bound {
        let Some(d) = changed.get(&b.initializer) else { continue };
        if let Some(prev) = new_value.insert(&b.key, d) {
            if prev.bytes != d.bytes {
                return Err(tensor_err(&b.key, "two initializers bound to it changed differently".into()));
            }
        }
    }
    let mut tensors = Vec::new();
    for (key, e) in &ck.entries {
        let len = e.end - e.start;
        let source = match new_value.get(key.as_str()) {
            Some(d) => {
                if d.dims != e.dims() {
                    return Err(tensor_err(key, format!("new value is {:?}, the weights hold {:?}", d.dims, e.dims())));
                }
                Source::Converted(&d.bytes, d.dtype, e.onnx_dtype())
            }
            None => Source::Bytes(Cow::Borrowed(ck.bytes(e))),
        };
        tensors.push((key.clone(), OutTensor { dtype: e.dtype, shape: e.shape.clone(), len, source }));
    }
    let bound_names: HashSet<&str> = report.bound.iter().map(|b| b.initializer.as_str()).collect();
    let mut added: Vec<String> = changed.keys().filter(|n| !bound_names.contains(n.as_str())).cloned().collect();
    added.sort();
    for name in &added {
        let d = &changed[name];
        let st = safetensors_dtype(d.dtype)
            .ok_or_else(|| tensor_err(name, format!("{} has no safetensors type", d.dtype)))?;
        if ck.entries.contains_key(name) {
            return Err(tensor_err(name, "changed, not bound, and its name is another tensor's key".into()));
        }
        let shape = d.dims.iter().map(|&x| x.max(0) as usize).collect();
        let out = OutTensor { dtype: st, shape, len: d.bytes.len(), source: Source::Bytes(Cow::Borrowed(&d.bytes)) };
        tensors.push((name.clone(), out));
    }
    let mut meta = report.metadata.clone();
    meta.extend(provenance.iter().map(|(k, v)| (k.clone(), v.clone())));
    let n = tensors.len();
    write_safetensors(out, tensors, meta)?;
    let changed = new_value.len() + added.len();
    Ok(WrittenWeights { path: out.to_path_buf(), tensors: n, changed, skipped: Vec::new(), added })
}

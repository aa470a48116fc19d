//! Loading and saving whole models. Saving re-encodes the parsed proto with chosen initializers
//! replaced and everything else untouched; external data keeps its layout (file names, offsets).
use super::proto::{ModelProto, TensorProto};
use super::tensor::{external_path, external_ref, is_external, set_inline, TensorData};
use crate::error::{Error, Result};
use prost::Message;
use std::collections::{BTreeMap, HashMap};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A parsed model and the folder its external data is relative to.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    pub proto: ModelProto,
    pub path: PathBuf,
    pub dir: PathBuf,
}

impl OnnxModel {
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_bytes(&bytes, path, dir)
    }

    pub fn from_bytes(bytes: &[u8], path: PathBuf, dir: PathBuf) -> Result<Self> {
        let proto = ModelProto::decode(bytes).map_err(|e| Error::Model { path: path.clone(), reason: e.to_string() })?;
        if proto.graph.is_none() {
            return Err(Error::Model { path, reason: "it has no graph".into() });
        }
        Ok(OnnxModel { proto, path, dir })
    }

    pub fn graph(&self) -> &super::proto::GraphProto {
        self.proto.graph.as_ref().expect("checked at load")
    }

    /// The opset version imported for `domain` ("" and "ai.onnx" are the same domain).
    pub fn opset(&self, domain: &str) -> Option<i64> {
        let norm = |d: &str| if d == "ai.onnx" { String::new() } else { d.to_string() };
        self.proto.opset_import.iter().find(|o| norm(o.domain()) == norm(domain)).map(|o| o.version())
    }

    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.graph().initializer.iter().find(|t| t.name() == name)
    }

    /// Decodes one initializer (reading external data on demand).
    pub fn tensor(&self, t: &TensorProto) -> Result<TensorData> {
        TensorData::from_proto(t, &self.dir)
    }

    /// Writes the model to `out` with `replace`d initializers, atomically: everything goes to
    /// temporary files in the destination folder first and is renamed into place at the end.
    /// Replacements must keep each tensor's dtype and shape. External files the model uses are
    /// copied beside `out` (same names, same offsets), then patched in place.
    pub fn save(&self, out: &Path, replace: &HashMap<String, TensorData>) -> Result<SavedModel> {
        let out_dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().expect("checked at load");
        for name in replace.keys() {
            if !graph.initializer.iter().any(|t| t.name() == name) {
                return Err(Error::Tensor { tensor: name.clone(), reason: "no initializer of that name to replace".into() });
            }
        }
        // Plan external files: original location -> (source path, new location).
        let same_dir = same_file(&out_dir, &self.dir);
        let out_name = out.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut files: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        for t in graph.initializer.iter().filter(|t| is_external(t)) {
            let r = external_ref(t)?;
            let src = external_path(&self.dir, &r.location)?;
            // Writing beside the input would overwrite its data: give the copy a distinct name.
            let loc = if same_dir { format!("{out_name}.{}", r.location.replace('/', "_")) } else { r.location.clone() };
            files.entry(r.location.clone()).or_insert((src, loc));
        }
        let mut staged = Vec::new();
        let mut patches: BTreeMap<String, Vec<(u64, Vec<u8>)>> = BTreeMap::new();
        for t in graph.initializer.iter_mut() {
            let new = replace.get(t.name());
            if let Some(d) = new {
                let old_dims = &t.dims;
                if d.dims != *old_dims || d.dtype.onnx_code() != t.data_type() {
                    return Err(Error::Tensor {
                        tensor: t.name().to_string(),
                        reason: format!("replacement is {} {:?}, the model has {} {:?}", d.dtype, d.dims,
                            super::DType::from_onnx(t.data_type())?, old_dims),
                    });
                }
            }
            if is_external(t) {
                let r = external_ref(t)?;
                let (_, new_loc) = &files[&r.location];
                if new_loc != &r.location {
                    for kv in t.external_data.iter_mut().filter(|kv| kv.key() == "location") {
                        kv.value = Some(new_loc.clone());
                    }
                }
                if let Some(d) = new {
                    patches.entry(r.location.clone()).or_default().push((r.offset, d.bytes.clone()));
                }
            } else if let Some(d) = new {
                set_inline(t, d);
            }
        }
        let mut written = Vec::new();
        for (loc, (src, new_loc)) in &files {
            let dst = out_dir.join(new_loc);
            if same_file(&dst, src) {
                return Err(Error::msg(format!("refusing to overwrite the input's external data {}", src.display())));
            }
            let tmp = temp_beside(&dst)?;
            std::fs::copy(src, tmp.path()).map_err(|e| Error::io(src, e))?;
            let mut f = std::fs::OpenOptions::new().write(true).open(tmp.path()).map_err(|e| Error::io(tmp.path(), e))?;
            for (off, bytes) in patches.get(loc).into_iter().flatten() {
                f.seek(SeekFrom::Start(*off)).and_then(|_| f.write_all(bytes)).map_err(|e| Error::io(tmp.path(), e))?;
            }
            f.sync_all().map_err(|e| Error::io(tmp.path(), e))?;
            staged.push((tmp, dst.clone()));
            written.push(dst);
        }
        let tmp = temp_beside(out)?;
        std::fs::write(tmp.path(), proto.encode_to_vec()).map_err(|e| Error::io(tmp.path(), e))?;
        staged.push((tmp, out.to_path_buf()));
        // Only now, with every file complete, move them into place (model file last).
        for (tmp, dst) in staged {
            tmp.persist(&dst).map_err(|e| Error::io(&dst, e.error))?;
        }
        written.push(out.to_path_buf());
        Ok(SavedModel { model: out.to_path_buf(), files: written })
    }
}

#[derive(Debug, Clone)]
pub struct SavedModel {
    pub model: PathBuf,
    /// Every file written, model last.
    pub files: Vec<PathBuf>,
}

fn temp_beside(dst: &Path) -> Result<tempfile::NamedTempFile> {
    let dir = dst.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    tempfile::Builder::new().prefix(".semu-tmp-").tempfile_in(dir).map_err(|e| Error::io(dir, e))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

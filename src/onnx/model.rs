//! Loading and saving whole models. Saving re-encodes the parsed proto with chosen initializers
//! replaced and everything else untouched; external data keeps its layout (file names, offsets).
use super::proto::{ModelProto, TensorProto};
pub use super::staging::Staged;
use super::tensor::{external_file, external_ref, is_external, set_inline, TensorData};
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
    /// Reads and validates a model (see [`super::check`]): what onnxruntime would refuse to load
    /// is refused here, before any command works on it.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let m = Self::load_unchecked(path)?;
        m.check()?;
        Ok(m)
    }

    /// Reads a model without validating it (to list its external data before fetching it).
    pub fn load_unchecked(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        crate::paths::regular_file(&path)?;
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(&bytes, path, dir)
    }

    /// Decodes and validates a model held in memory; `dir` is where its external data lives.
    pub fn from_bytes(bytes: &[u8], path: PathBuf, dir: PathBuf) -> Result<Self> {
        let m = Self::parse(bytes, path, dir)?;
        m.check()?;
        Ok(m)
    }

    fn parse(bytes: &[u8], path: PathBuf, dir: PathBuf) -> Result<Self> {
        let proto =
            ModelProto::decode(bytes).map_err(|e| Error::Model { path: path.clone(), reason: e.to_string() })?;
        if proto.graph.is_none() {
            return Err(Error::Model { path, reason: "it has no graph".into() });
        }
        Ok(OnnxModel { proto, path, dir })
    }

    /// The load-time rules of [`super::check`], as an error naming this model's file.
    pub fn check(&self) -> Result<()> {
        super::check::check(self).map_err(|reason| Error::Model { path: self.path.clone(), reason })
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

    /// Writes the model to `out` with `replace`d initializers, atomically (see [`Self::stage`]).
    pub fn save(&self, out: &Path, replace: &HashMap<String, TensorData>) -> Result<SavedModel> {
        self.stage(out, replace)?.commit()
    }

    /// Writes every file of the output into a hidden staging folder beside `out`; nothing is
    /// visible at `out` until [`Staged::commit`]. Replacements must keep each tensor's dtype and
    /// shape. External files are copied (same names, same offsets), then patched in place; when
    /// `out` sits beside the input, or another model's file has the name, they get distinct names
    /// so no other model's data is ever touched.
    pub fn stage(&self, out: &Path, replace: &HashMap<String, TensorData>) -> Result<Staged> {
        let out_dir = crate::paths::folder_of(out).to_path_buf();
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
        let out_name = out
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .ok_or_else(|| Error::msg(format!("{}: not a file path", out.display())))?;
        let mut proto = self.proto.clone();
        let graph = proto.graph.as_mut().expect("checked at load");
        for name in replace.keys() {
            if !graph.initializer.iter().any(|t| t.name() == name) {
                return Err(Error::Tensor {
                    tensor: name.clone(),
                    reason: "no initializer of that name to replace".into(),
                });
            }
        }
        // External files: original location -> (source path, new location).
        let same_dir = same_file(&out_dir, &self.dir);
        let mut files: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
        for t in graph.initializer.iter().filter(|t| is_external(t)) {
            let r = external_ref(t)?;
            let src = external_file(&self.dir, &r.location)
                .map_err(|e| Error::Tensor { tensor: t.name().to_string(), reason: e.to_string() })?;
            // A file of that name in the output folder that `out` does not already use belongs to
            // another model (a second export to one folder): it gets the output's prefix too.
            let foreign = out_dir.join(&r.location).exists() && !uses_location(out, &r.location);
            let loc = if same_dir || foreign {
                format!("{out_name}.{}", r.location.replace('/', "_"))
            } else {
                r.location.clone()
            };
            files.entry(r.location.clone()).or_insert((src, loc));
        }
        let mut patches: BTreeMap<String, Vec<(u64, &[u8])>> = BTreeMap::new();
        for t in graph.initializer.iter_mut() {
            let new = replace.get(t.name());
            if let Some(d) = new {
                if d.dims != t.dims || d.dtype.onnx_code() != t.data_type() {
                    return Err(Error::Tensor {
                        tensor: t.name().to_string(),
                        reason: format!(
                            "replacement is {} {:?}, the model has {} {:?}",
                            d.dtype,
                            d.dims,
                            super::DType::from_onnx(t.data_type())?,
                            t.dims
                        ),
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
                    patches.entry(r.location.clone()).or_default().push((r.offset, &d.bytes));
                }
            } else if let Some(d) = new {
                set_inline(t, d);
            }
        }
        let dir = super::staging::create(&out_dir, &out_name)?;
        let mut rel = Vec::new();
        for (loc, (src, new_loc)) in &files {
            let tmp = dir.path().join(new_loc);
            if let Some(p) = tmp.parent() {
                std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
            }
            std::fs::copy(src, &tmp).map_err(|e| Error::io(src, e))?;
            let mut f = std::fs::OpenOptions::new().write(true).open(&tmp).map_err(|e| Error::io(&tmp, e))?;
            for (off, bytes) in patches.get(loc).into_iter().flatten() {
                f.seek(SeekFrom::Start(*off)).and_then(|_| f.write_all(bytes)).map_err(|e| Error::io(&tmp, e))?;
            }
            f.sync_all().map_err(|e| Error::io(&tmp, e))?;
            rel.push(PathBuf::from(new_loc));
        }
        let model_tmp = dir.path().join(&out_name);
        std::fs::write(&model_tmp, proto.encode_to_vec()).map_err(|e| Error::io(&model_tmp, e))?;
        rel.push(PathBuf::from(&out_name));
        Ok(Staged::new(dir, out_dir, rel))
    }
}

#[derive(Debug, Clone)]
pub struct SavedModel {
    pub model: PathBuf,
    /// Every file written, model last.
    pub files: Vec<PathBuf>,
}

/// Whether the model at `path` (if any) keeps external data in `location`.
fn uses_location(path: &Path, location: &str) -> bool {
    let Ok(bytes) = std::fs::read(path) else { return false };
    let Ok(m) = ModelProto::decode(bytes.as_slice()) else { return false };
    m.graph
        .iter()
        .flat_map(|g| &g.initializer)
        .filter(|t| is_external(t))
        .any(|t| external_ref(t).is_ok_and(|r| r.location == location))
}

/// A model opened by a bare file name has the folder "" (`Path::parent`), which does not
/// canonicalize: it is the working directory, or the output beside it would overwrite its data.
fn same_file(a: &Path, b: &Path) -> bool {
    let here = |p: &Path| if p.as_os_str().is_empty() { Path::new(".").canonicalize() } else { p.canonicalize() };
    match (here(a), here(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

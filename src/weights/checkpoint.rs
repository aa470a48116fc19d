//! A safetensors checkpoint: one or more memory-mapped files (shards), or the shards an
//! `*.safetensors.index.json` names. Tensors are located by key; their bytes are read on demand.
use super::dtype::onnx_dtype;
use crate::error::{Error, Result};
use crate::onnx::DType;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// One tensor of a checkpoint: which shard holds it, its type and shape, and where its bytes are.
#[derive(Debug, Clone)]
pub struct Entry {
    pub shard: usize,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Byte range in the shard's file.
    pub start: usize,
    pub end: usize,
}

impl Entry {
    pub fn dims(&self) -> Vec<i64> {
        self.shape.iter().map(|&d| d as i64).collect()
    }
    /// The ONNX element type of the stored data.
    pub fn onnx_dtype(&self) -> DType {
        onnx_dtype(self.dtype)
    }
}

pub struct Shard {
    pub path: PathBuf,
    map: Mmap,
}

pub struct Checkpoint {
    pub shards: Vec<Shard>,
    pub entries: BTreeMap<String, Entry>,
    /// The shards' `__metadata__`, merged (the first shard that sets a key wins).
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// Opens safetensors files and index files (`*.index.json`, whose shards are read from the
    /// index's folder). A key held by two files is an error.
    pub fn open(files: &[PathBuf]) -> Result<Self> {
        let mut shard_paths: Vec<PathBuf> = Vec::new();
        let mut index_maps: Vec<(PathBuf, HashMap<String, PathBuf>)> = Vec::new();
        for f in files {
            if f.to_string_lossy().ends_with(".json") {
                let (shards, map) = read_index(f)?;
                for s in shards {
                    if !shard_paths.contains(&s) {
                        shard_paths.push(s);
                    }
                }
                index_maps.push((f.clone(), map));
            } else if !shard_paths.contains(f) {
                shard_paths.push(f.clone());
            }
        }
        if shard_paths.is_empty() {
            return Err(Error::msg("--weights: no safetensors file given"));
        }
        let mut ck = Checkpoint { shards: Vec::new(), entries: BTreeMap::new(), metadata: BTreeMap::new() };
        for p in shard_paths {
            ck.add_shard(p)?;
        }
        for (index, map) in index_maps {
            for (key, shard) in map {
                let found = ck.entries.get(&key).map(|e| &ck.shards[e.shard].path);
                if found != Some(&shard) {
                    return Err(Error::msg(format!(
                        "{}: the index puts `{key}` in {}, but {}",
                        index.display(),
                        shard.display(),
                        match found {
                            Some(p) => format!("it is in {}", p.display()),
                            None => "that file has no such tensor".into(),
                        }
                    )));
                }
            }
        }
        Ok(ck)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<()> {
        let bad = |why: String| Error::msg(format!("{}: {why}", path.display()));
        crate::paths::regular_file(&path)?;
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        // SAFETY: a read-only shared mapping, only ever read as bytes. A file truncated by
        // another process while mapped is outside what this tool guards against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let (header, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(format!("not a readable safetensors file ({e:?})")))?;
        let base = 8 + header;
        let shard = self.shards.len();
        for (name, info) in meta.tensors() {
            if let Some(prev) = self.entries.get(&name) {
                return Err(bad(format!(
                    "tensor `{name}` is also in {}: each key must be in one file only",
                    self.shards[prev.shard].path.display()
                )));
            }
            let entry = Entry {
                shard,
                dtype: info.dtype,
                shape: info.shape.clone(),
                start: base + info.data_offsets.0,
                end: base + info.data_offsets.1,
            };
            self.entries.insert(name, entry);
        }
        if let Some(m) = meta.metadata() {
            for (k, v) in m {
                self.metadata.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        self.shards.push(Shard { path, map });
        Ok(())
    }

    /// The stored bytes of `e` (borrowed from the mapping).
    pub fn bytes(&self, e: &Entry) -> &[u8] {
        &self.shards[e.shard].map[e.start..e.end]
    }

    /// Copies the bytes of `e` out, then lets the kernel drop the mapped pages, so a copied
    /// checkpoint is not held twice in resident memory (once mapped, once copied).
    pub fn copy_bytes(&self, e: &Entry) -> Vec<u8> {
        let v = self.bytes(e).to_vec();
        self.release(e);
        v
    }

    /// Drops the resident pages of `e`'s range (a hint; failures are harmless).
    pub fn release(&self, e: &Entry) {
        let map = &self.shards[e.shard].map;
        // madvise needs a page-aligned start; shrink the range inwards to whole 4 KiB pages (on
        // larger pages the call fails with EINVAL, which only means the hint is not taken).
        let page = 4096;
        let start = e.start.div_ceil(page) * page;
        let end = e.end / page * page;
        if end > start {
            // SAFETY: MADV_DONTNEED on a read-only shared file mapping only discards cached
            // pages; later reads fault them back in from the file, so no data is lost.
            let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start) };
        }
    }

    pub fn shard_of(&self, e: &Entry) -> &Path {
        &self.shards[e.shard].path
    }
}

/// Reads an index (`{"metadata": …, "weight_map": {key: shard file}}`): its shards (sorted) and
/// the key → shard path map.
fn read_index(path: &Path) -> Result<(Vec<PathBuf>, HashMap<String, PathBuf>)> {
    let bad = |why: String| Error::msg(format!("{}: {why}", path.display()));
    crate::paths::regular_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("has no \"weight_map\" object (expected a safetensors index)".into()))?;
    let dir = path.parent().unwrap_or(Path::new(""));
    let mut shards: Vec<PathBuf> = Vec::new();
    let mut keys = HashMap::new();
    for (key, shard) in map {
        let name = shard.as_str().ok_or_else(|| bad(format!("weight_map[\"{key}\"] is not a file name")))?;
        let p = crate::paths::file_inside(dir, name, "shard").map_err(|e| bad(e.to_string()))?;
        if !shards.contains(&p) {
            shards.push(p.clone());
        }
        keys.insert(key.clone(), p);
    }
    shards.sort();
    Ok((shards, keys))
}

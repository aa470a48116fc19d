//! safetensors weights for an ONNX graph: [`bind`] puts a checkpoint's tensors into the model's
//! initializers (by exact name, PyTorch state-dict name, or an explicit name map), converting
//! between float types where the graph's type differs; [`write_weights`] writes a model's
//! (changed) weights back as safetensors with the input's keys, types and metadata.
pub mod checkpoint;
pub mod dtype;
pub mod names;
mod problems;
pub mod write;

pub use checkpoint::Checkpoint;
pub use names::MatchKind;
pub use write::{write_safetensors, write_weights, WrittenWeights};

use crate::error::Result;
use crate::onnx::proto::TensorProto;
use crate::onnx::tensor::{external_path, external_ref, is_external, numel, set_inline};
use crate::onnx::{DType, OnnxModel, TensorData};
use problems::Problems;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What `--weights`, `--name-map` and `--allow-partial` ask for.
#[derive(Debug, Clone, Default)]
pub struct WeightsOptions {
    /// safetensors files (the shards of one checkpoint) and/or `*.safetensors.index.json` files.
    pub files: Vec<PathBuf>,
    /// JSON object: ONNX initializer name → safetensors key.
    pub name_map: Option<PathBuf>,
    /// Missing and unused tensors are warnings instead of an error.
    pub allow_partial: bool,
}

/// One initializer filled from the checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Binding {
    pub initializer: String,
    pub key: String,
    pub file: PathBuf,
    pub by: MatchKind,
    pub shape: Vec<i64>,
    /// The type stored in the file and the graph's type; they differ when converted.
    pub stored: DType,
    pub graph: DType,
}

impl Binding {
    pub fn converted(&self) -> bool {
        self.stored != self.graph
    }
}

/// What [`bind`] did: every binding (with its float conversion, if any), and what was left out.
#[derive(Debug, Clone, Serialize)]
pub struct BindReport {
    /// The safetensors files read, in order (an index's shards included).
    pub files: Vec<PathBuf>,
    pub bound: Vec<Binding>,
    /// Float initializers the checkpoint does not cover; the model's own values are used
    /// (only with `allow_partial`).
    pub missing: Vec<String>,
    /// Checkpoint keys no initializer uses (only with `allow_partial`).
    pub unused: Vec<String>,
    /// Non-float or single-element initializers not in the checkpoint: graph constants (shapes,
    /// axes, scalars), kept from the model.
    pub constants_kept: usize,
    /// The checkpoint's `__metadata__` (merged over shards).
    pub metadata: BTreeMap<String, String>,
}

impl BindReport {
    /// One line per float conversion, e.g. `fc.weight: f16 in the weights → f32 in the graph`.
    pub fn conversions(&self) -> Vec<String> {
        self.bound
            .iter()
            .filter(|b| b.converted())
            .map(|b| format!("{}: {} in the weights → {} in the graph", b.initializer, b.stored, b.graph))
            .collect()
    }

    /// The conversions grouped by type pair, e.g. `10 tensors f16 → f32: a, b, … and 2 more`.
    pub fn conversion_summary(&self) -> Vec<String> {
        let mut groups: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
        for b in self.bound.iter().filter(|b| b.converted()) {
            groups.entry((b.stored.to_string(), b.graph.to_string())).or_default().push(b.initializer.clone());
        }
        groups
            .into_iter()
            .map(|((from, to), names)| {
                format!(
                    "{} tensor(s) {from} in the weights → {to} in the graph: {}",
                    names.len(),
                    problems::short_list(&names)
                )
            })
            .collect()
    }

    /// Warnings for what `allow_partial` let through.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if !self.missing.is_empty() {
            w.push(format!(
                "{} initializer(s) not in the weights, the model's own values are used: {}",
                self.missing.len(),
                problems::short_list(&self.missing)
            ));
        }
        if !self.unused.is_empty() {
            w.push(format!(
                "{} tensor(s) in the weights match no initializer: {}",
                self.unused.len(),
                problems::short_list(&self.unused)
            ));
        }
        w
    }
}

/// An initializer that holds data of its own: inline bytes of the right size, or an external file
/// long enough for it. Skeleton exports (weights stripped, or their external file absent) do not.
fn has_own_data(t: &TensorProto, dir: &Path) -> bool {
    let Ok(dtype) = DType::from_onnx(t.data_type()) else { return false };
    let Some(size) = dtype.size() else { return true };
    let want = (numel(&t.dims) * size) as u64;
    if is_external(t) {
        let Ok(r) = external_ref(t) else { return false };
        let Ok(p) = external_path(dir, &r.location) else { return false };
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        return r.offset + r.length.unwrap_or(want) <= len && r.length.is_none_or(|l| l == want);
    }
    TensorData::from_proto(t, dir).is_ok_and(|d| d.bytes.len() as u64 == want)
}

/// Fills the model's initializers from the safetensors checkpoint in `opts`, in place (inline
/// `raw_data`, in the graph's dtype). Every problem — shape or type mismatches, name-map entries
/// that point nowhere, ambiguous names, and (unless `allow_partial`) missing and unused tensors —
/// is reported together in one error.
pub fn bind(model: &mut OnnxModel, opts: &WeightsOptions) -> Result<BindReport> {
    let ck = Checkpoint::open(&opts.files)?;
    let name_map = opts.name_map.as_deref().map(names::read_name_map).transpose()?.unwrap_or_default();
    let g = model.graph();
    let mut p = Problems::default();
    let inits: BTreeSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
    for (init, key) in &name_map {
        if !inits.contains(init.as_str()) {
            p.name_map.push(format!("\"{init}\": the model has no initializer of that name"));
        } else if !ck.entries.contains_key(key) {
            p.name_map.push(format!("\"{init}\" → \"{key}\": no tensor of that name in the weights"));
        }
    }
    let by_alias = names::state_dict_candidates(ck.entries.keys());
    let mut plan: Vec<(usize, Binding)> = Vec::new();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    let mut unbound: Vec<usize> = Vec::new();
    for (i, t) in g.initializer.iter().enumerate() {
        let name = t.name();
        let found: Option<(String, MatchKind)> = if let Some(k) = name_map.get(name) {
            ck.entries.contains_key(k).then(|| (k.clone(), MatchKind::NameMap))
        } else if ck.entries.contains_key(name) {
            Some((name.to_string(), MatchKind::Exact))
        } else {
            match by_alias.get(names::lookup_name(name)).map(Vec::as_slice) {
                Some([k]) => Some((k.clone(), MatchKind::StateDict)),
                Some(many) if many.len() > 1 => {
                    p.ambiguous.push(format!("{name}: could be any of {}", many.join(", ")));
                    None
                }
                _ => None,
            }
        };
        let Some((key, by)) = found else {
            if !name_map.contains_key(name) {
                unbound.push(i);
            }
            continue;
        };
        let e = &ck.entries[&key];
        used.insert(ck.entries.get_key_value(&key).expect("present").0);
        let graph = DType::from_onnx(t.data_type())?;
        let (stored, dims) = (e.onnx_dtype(), e.dims());
        let file = ck.shard_of(e).to_path_buf();
        if dims != t.dims {
            p.shape.push(format!("{name} ← {key}: {dims:?} in {}, the graph needs {:?}", file.display(), t.dims));
        }
        if !dtype::convertible(stored, graph) {
            p.dtype.push(format!("{name} ← {key}: {stored} in {}, the graph needs {graph}", file.display()));
        }
        plan.push((i, Binding { initializer: name.to_string(), key, file, by, shape: dims, stored, graph }));
    }
    let (mut missing, mut constants_kept) = (Vec::new(), 0);
    for &i in &unbound {
        let t = &g.initializer[i];
        let dtype = DType::from_onnx(t.data_type()).ok();
        let param_like = dtype.is_some_and(|d| d.is_float()) && numel(&t.dims) > 1;
        if !has_own_data(t, &model.dir) {
            p.no_data.push(problems::describe_missing(g, t, &ck, &used));
        } else if param_like {
            missing.push(t.name().to_string());
            p.missing.push(problems::describe_missing(g, t, &ck, &used));
        } else {
            constants_kept += 1;
        }
    }
    let unused: Vec<String> = ck.entries.keys().filter(|k| !used.contains(k.as_str())).cloned().collect();
    p.unused = unused.iter().map(|k| problems::describe_unused(k, &ck)).collect();
    p.check(&opts.files, &model.path, opts.allow_partial)?;

    let graph = model.proto.graph.as_mut().expect("checked at load");
    for (i, b) in &plan {
        let e = &ck.entries[&b.key];
        let bytes = if b.converted() {
            let v = dtype::convert(ck.bytes(e), b.stored, b.graph)?;
            ck.release(e);
            v
        } else {
            ck.copy_bytes(e)
        };
        put_inline(&mut graph.initializer[*i], bytes);
    }
    Ok(BindReport {
        files: ck.shards.iter().map(|s| s.path.clone()).collect(),
        bound: plan.into_iter().map(|(_, b)| b).collect(),
        missing: if opts.allow_partial { missing } else { Vec::new() },
        unused: if opts.allow_partial { unused } else { Vec::new() },
        constants_kept,
        metadata: ck.metadata.clone(),
    })
}

/// Makes `t` an inline tensor holding `bytes` (moved in, not copied).
fn put_inline(t: &mut TensorProto, bytes: Vec<u8>) {
    set_inline(t, &TensorData { dtype: DType::U8, dims: vec![0], bytes: Vec::new() });
    t.raw_data = Some(bytes);
    t.data_location = None;
    t.external_data.clear();
}

//! Forget-set gradients as files: `semu gradient` writes one (a shard's, or the whole forget
//! set's), `semu gradient reduce` adds the shards, `semu unlearn --gradient` starts from the sum.
//! safetensors: one f64 tensor per adapted weight, named as the weight; `__metadata__` holds
//! `semu.gradient.format` and `semu.gradient` (JSON [`GradientMeta`]): what the gradient is of,
//! so parts of different runs are never added and a gradient never meets another model.
use crate::error::{Error, Result};
use crate::weights::write::{OutTensor, Source};
use crate::weights::{write_safetensors, Checkpoint};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub const FORMAT_KEY: &str = "semu.gradient.format";
pub const META_KEY: &str = "semu.gradient";
pub const FORMAT: &str = "1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerShape {
    pub name: String,
    pub shape: Vec<i64>,
}

/// What a gradient is the gradient of; parts must agree on all of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Origin {
    pub model_sha256: String,
    /// The `--weights` files bound into the model, by SHA-256 (empty without).
    pub weights_sha256: Vec<String>,
    /// SHA-256 of the forget file, or of the chosen indices with `--train` (as in the report).
    pub forget_sha256: String,
    pub forget_samples: usize,
    pub task: String,
    /// The gradient is a sum of batch means: the batches must be the same in every part.
    pub batch_size: usize,
    pub layers: Vec<LayerShape>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradientMeta {
    #[serde(flatten)]
    pub origin: Origin,
    /// How the forget set was chosen from `--train`, when it was.
    pub selection: Option<String>,
    pub shards: usize,
    /// The shard indices summed in this file: one for a part; all of them for a whole or
    /// reduced gradient.
    pub parts: Vec<usize>,
    /// Forget samples summed in this file.
    pub samples: usize,
    /// Where the shard index came from: `--shard`, `JOB_COMPLETION_INDEX`,
    /// `SLURM_ARRAY_TASK_ID`; `whole` without sharding; `reduce` for a sum of parts.
    pub index_from: String,
    pub semu_version: String,
}

impl GradientMeta {
    /// Every shard is in it: a gradient of the whole forget set.
    pub fn is_complete(&self) -> bool {
        self.parts.len() == self.shards && self.parts.iter().enumerate().all(|(i, &p)| i == p)
    }
}

/// The first way `b` (of `path`) is not a gradient of what `a` is, in words.
fn mismatch(a: &Origin, b: &Origin) -> Option<String> {
    let short = |s: &str| s.chars().take(12).collect::<String>();
    if a.model_sha256 != b.model_sha256 {
        return Some(format!(
            "of another model (SHA-256 {}…, not {}…)",
            short(&b.model_sha256),
            short(&a.model_sha256)
        ));
    }
    if a.weights_sha256 != b.weights_sha256 {
        return Some("of the model with other --weights".into());
    }
    if a.forget_sha256 != b.forget_sha256 || a.forget_samples != b.forget_samples {
        return Some(format!(
            "of another forget set ({} samples, SHA-256 {}…; not {} samples, {}…)",
            b.forget_samples,
            short(&b.forget_sha256),
            a.forget_samples,
            short(&a.forget_sha256)
        ));
    }
    if a.task != b.task {
        return Some(format!("for task {}, not {}", b.task, a.task));
    }
    if a.batch_size != b.batch_size {
        return Some(format!("summed over batches of {}, not {}", b.batch_size, a.batch_size));
    }
    if a.layers != b.layers {
        return Some(format!("of other layers ({}; not {})", layer_list(&b.layers), layer_list(&a.layers)));
    }
    None
}

fn layer_list(l: &[LayerShape]) -> String {
    let names: Vec<String> = l.iter().take(6).map(|l| format!("{} {:?}", l.name, l.shape)).collect();
    let more = l.len().saturating_sub(6);
    if more > 0 {
        format!("{} and {more} more", names.join(", "))
    } else {
        names.join(", ")
    }
}

/// A gradient in memory: the metadata and one f64 CPU tensor per layer, in the layers' order.
pub struct GradientFile {
    pub meta: GradientMeta,
    pub tensors: Vec<Tensor>,
}

impl GradientFile {
    /// Writes the file atomically (temporary file in the same folder, synced, renamed).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut meta = BTreeMap::new();
        meta.insert(FORMAT_KEY.to_string(), FORMAT.to_string());
        meta.insert(META_KEY.to_string(), serde_json::to_string(&self.meta).map_err(|e| Error::msg(e.to_string()))?);
        let mut out = Vec::new();
        for (l, t) in self.meta.origin.layers.iter().zip(&self.tensors) {
            let t = t.f_detach()?.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Double)?.f_contiguous()?;
            if t.size() != l.shape {
                return Err(Error::msg(format!("{}: gradient of shape {:?}, not {:?}", l.name, t.size(), l.shape)));
            }
            let mut bytes = vec![0u8; t.numel() * 8];
            t.f_copy_data_u8(&mut bytes, t.numel())?;
            let shape = l.shape.iter().map(|&d| d as usize).collect();
            let len = bytes.len();
            let source = Source::Bytes(Cow::Owned(bytes));
            out.push((l.name.clone(), OutTensor { dtype: safetensors::tensor::Dtype::F64, shape, len, source }));
        }
        write_safetensors(path, out, meta)
    }
}

/// A gradient file opened (memory-mapped, checked), its tensors read on demand.
pub struct Opened {
    pub path: PathBuf,
    pub meta: GradientMeta,
    ck: Checkpoint,
}

impl Opened {
    /// Opens a file `semu gradient` wrote, checking that every layer it lists is there as f64 of
    /// the listed shape.
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::msg(format!("{}: not a semu gradient file: {why}", path.display()));
        let ck = Checkpoint::open(&[path.to_path_buf()])?;
        if ck.metadata.get(FORMAT_KEY).map(String::as_str) != Some(FORMAT) {
            return Err(bad(format!("no `{FORMAT_KEY}: {FORMAT}` in its metadata (write it with `semu gradient`)")));
        }
        let text = ck.metadata.get(META_KEY).ok_or_else(|| bad(format!("no `{META_KEY}` in its metadata")))?;
        let meta: GradientMeta = serde_json::from_str(text).map_err(|e| bad(format!("{META_KEY}: {e}")))?;
        if meta.shards == 0 || meta.parts.is_empty() || meta.parts.iter().any(|&p| p >= meta.shards) {
            return Err(bad(format!("shard indices {:?} of {} shard(s)", meta.parts, meta.shards)));
        }
        for l in &meta.origin.layers {
            let e = ck.entries.get(&l.name).ok_or_else(|| bad(format!("tensor `{}` is missing", l.name)))?;
            if e.dtype != safetensors::tensor::Dtype::F64 || e.dims() != l.shape {
                return Err(bad(format!("tensor `{}` is {:?} {:?}, not F64 {:?}", l.name, e.dtype, e.dims(), l.shape)));
            }
        }
        Ok(Opened { path: path.to_path_buf(), meta, ck })
    }

    /// Layer `name`'s gradient, f64 on the CPU.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let e = self
            .ck
            .entries
            .get(name)
            .ok_or_else(|| Error::msg(format!("{}: no gradient for weight '{name}'", self.path.display())))?;
        let t = Tensor::f_from_data_size(self.ck.bytes(e), &e.dims(), Kind::Double)?;
        self.ck.release(e);
        Ok(t)
    }

    /// Checks that this gradient is of `want` (model, weights, forget set, task) and whole, and
    /// that it has every weight of `want.layers` (others it holds are ignored: a weight's
    /// gradient does not depend on which others are adapted). A different batch size only
    /// rescales it (SEMU uses its singular vectors), so that is a warning, returned.
    pub fn check_for(&self, want: &Origin) -> Result<Vec<String>> {
        let p = self.path.display();
        let have = &self.meta.origin;
        if !self.meta.is_complete() {
            return Err(Error::msg(format!(
                "{p}: holds shard(s) {:?} of {} only: add all the parts with `semu gradient reduce` first",
                self.meta.parts, self.meta.shards
            )));
        }
        let mut layers_only = want.clone();
        layers_only.layers = have.layers.clone();
        layers_only.batch_size = have.batch_size;
        if let Some(why) = mismatch(&layers_only, have) {
            return Err(Error::msg(format!("{p}: this gradient is {why}: compute it for this run's inputs")));
        }
        for l in &want.layers {
            match have.layers.iter().find(|h| h.name == l.name) {
                None => {
                    return Err(Error::msg(format!(
                        "{p}: no gradient for weight '{}' (it holds {}): compute it with this run's --layers",
                        l.name,
                        layer_list(&have.layers)
                    )))
                }
                Some(h) if h.shape != l.shape => {
                    return Err(Error::msg(format!(
                        "{p}: the gradient of weight '{}' is {:?}, the weight {:?}",
                        l.name, h.shape, l.shape
                    )))
                }
                Some(_) => {}
            }
        }
        let mut warnings = Vec::new();
        if have.batch_size != want.batch_size {
            warnings.push(format!(
                "{p}: summed over batches of {}, this run uses {}: the gradient's scale and the last batch's \
                 weight differ from a gradient computed here (its singular vectors, which SEMU uses, hardly)",
                have.batch_size, want.batch_size
            ));
        }
        Ok(warnings)
    }

    /// The gradients of `names`, f64 on the CPU.
    pub fn given(&self, names: &[String]) -> Result<GivenGradient> {
        let tensors: HashMap<String, Tensor> =
            names.iter().map(|n| Ok((n.clone(), self.tensor(n)?))).collect::<Result<_>>()?;
        Ok(GivenGradient { source: self.path.display().to_string(), tensors })
    }
}

/// Adds the parts at `paths` (f64, in shard order whatever the order given). Refuses, naming the
/// file, parts of another model, forget set, batch size, shard count or layers, and a shard
/// missing or given twice.
pub fn reduce(paths: &[PathBuf]) -> Result<GradientFile> {
    let Some(first) = paths.first() else { return Err(Error::msg("no gradient parts given")) };
    let mut parts = paths.iter().map(|p| Opened::open(p)).collect::<Result<Vec<_>>>()?;
    let head = parts[0].meta.clone();
    let mut holder: BTreeMap<usize, &Path> = BTreeMap::new();
    for o in &parts {
        let p = o.path.display();
        if let Some(why) = mismatch(&head.origin, &o.meta.origin) {
            let first = first.display();
            return Err(Error::msg(format!("{p}: not a part of the same gradient as {first}: it is {why}")));
        }
        if o.meta.shards != head.shards {
            return Err(Error::msg(format!(
                "{p}: a part of {} shard(s), but {} is one of {}: compute every part with the same --shards",
                o.meta.shards,
                first.display(),
                head.shards
            )));
        }
        for &i in &o.meta.parts {
            if let Some(other) = holder.insert(i, &o.path) {
                return Err(Error::msg(format!("{p}: shard {i} of {} is also in {}", head.shards, other.display())));
            }
        }
    }
    let missing: Vec<usize> = (0..head.shards).filter(|i| !holder.contains_key(i)).collect();
    if !missing.is_empty() {
        return Err(Error::msg(format!(
            "shard(s) {missing:?} of {} missing: none of the {} part(s) given holds them",
            head.shards,
            paths.len()
        )));
    }
    let samples: usize = parts.iter().map(|o| o.meta.samples).sum();
    if samples != head.origin.forget_samples {
        return Err(Error::msg(format!(
            "the parts hold {samples} samples, the forget set has {}: a part was not written by `semu gradient`",
            head.origin.forget_samples
        )));
    }
    // Shard order, so the sum's rounding does not depend on the order of the arguments.
    parts.sort_by_key(|o| o.meta.parts[0]);
    let mut tensors = Vec::new();
    for l in &head.origin.layers {
        let mut acc = parts[0].tensor(&l.name)?;
        for o in &parts[1..] {
            acc = acc.f_add(&o.tensor(&l.name)?)?;
        }
        tensors.push(acc);
    }
    let meta = GradientMeta { parts: (0..head.shards).collect(), samples, index_from: "reduce".into(), ..head };
    Ok(GradientFile { meta, tensors })
}

/// A gradient read from a file, for `SemuConfig::gradient`: SEMU skips its gradient pass.
pub struct GivenGradient {
    /// The file, for messages.
    pub source: String,
    /// Per weight name, f64 on the CPU.
    pub tensors: HashMap<String, Tensor>,
}

/// Clones share the tensors (a configuration is cloned per run of a sweep).
impl Clone for GivenGradient {
    fn clone(&self) -> Self {
        let tensors = self.tensors.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        GivenGradient { source: self.source.clone(), tensors }
    }
}

impl std::fmt::Debug for GivenGradient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GivenGradient({}, {} tensors)", self.source, self.tensors.len())
    }
}

//! Everything that keeps a checkpoint from fitting a graph, gathered so that one error lists it
//! all (with hints), instead of failing on the first tensor.
use super::checkpoint::Checkpoint;
use super::names;
use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, TensorProto};
use crate::onnx::DType;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Longest list printed per category; the rest is counted.
const SHOWN: usize = 200;

#[derive(Default)]
pub struct Problems {
    pub name_map: Vec<String>,
    pub ambiguous: Vec<String>,
    pub shape: Vec<String>,
    pub dtype: Vec<String>,
    /// Initializers with no data anywhere (always an error).
    pub no_data: Vec<String>,
    /// Float initializers the checkpoint does not cover (an error unless allow_partial).
    pub missing: Vec<String>,
    /// Checkpoint keys no initializer uses (an error unless allow_partial).
    pub unused: Vec<String>,
}

fn dims_text(d: &[i64]) -> String {
    format!("[{}]", d.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(", "))
}

/// `a, b, c and 12 more`, for warnings.
pub fn short_list(v: &[String]) -> String {
    const N: usize = 8;
    let head = v.iter().take(N).cloned().collect::<Vec<_>>().join(", ");
    if v.len() > N {
        format!("{head} and {} more", v.len() - N)
    } else {
        head
    }
}

/// `name dtype [dims]`, plus the state-dict names its consuming nodes suggest when the
/// checkpoint has an unused tensor of that name and shape.
pub fn describe_missing(g: &GraphProto, t: &TensorProto, ck: &Checkpoint, used: &BTreeSet<&str>) -> String {
    let dtype = DType::from_onnx(t.data_type()).map(|d| d.to_string()).unwrap_or_default();
    let mut s = format!("{} {dtype} {}", t.name(), dims_text(&t.dims));
    for (node, key) in names::suggested_keys(g, t.name()) {
        let hit = ck.entries.get(&key).filter(|e| e.dims() == t.dims && !used.contains(key.as_str()));
        if hit.is_some() {
            s += &format!(
                " (used by {node}; the weights have `{key}` of this shape: if the exporter folded \
                     nothing into it, map it with --name-map)"
            );
            break;
        }
    }
    s
}

pub fn describe_unused(key: &str, ck: &Checkpoint) -> String {
    let e = &ck.entries[key];
    format!("{key} {} {} in {}", e.onnx_dtype(), dims_text(&e.dims()), ck.shard_of(e).display())
}

impl Problems {
    /// Ok when nothing blocks binding; otherwise one error listing every problem.
    pub fn check(&self, files: &[PathBuf], model: &Path, allow_partial: bool) -> Result<()> {
        let mut sections: Vec<(String, &[String])> = vec![
            ("--name-map entries that point nowhere".into(), &self.name_map),
            ("ambiguous: several tensors fit one initializer (use --name-map)".into(), &self.ambiguous),
            ("shape mismatch".into(), &self.shape),
            ("type mismatch (only float types convert)".into(), &self.dtype),
            ("initializers with no data, neither in the model nor in the weights".into(), &self.no_data),
        ];
        if !allow_partial {
            sections.push(("missing: float initializers the weights do not cover".into(), &self.missing));
            sections.push(("unused: tensors in the weights that match no initializer".into(), &self.unused));
        }
        let total: usize = sections.iter().map(|(_, v)| v.len()).sum();
        if total == 0 {
            return Ok(());
        }
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        let mut msg = format!("the weights {} do not fit {} ({total} problems):", names.join(", "), model.display());
        for (title, items) in sections.iter().filter(|(_, v)| !v.is_empty()) {
            msg += &format!("\n  {title} ({}):", items.len());
            for it in items.iter().take(SHOWN) {
                msg += &format!("\n    {it}");
            }
            if items.len() > SHOWN {
                msg += &format!("\n    … and {} more", items.len() - SHOWN);
            }
        }
        let partial_helps = !allow_partial && (!self.missing.is_empty() || !self.unused.is_empty());
        if partial_helps {
            msg +=
                "\n  --allow-partial keeps the model's own values for missing initializers and ignores unused tensors";
        }
        if !self.missing.is_empty() || !self.unused.is_empty() || !self.ambiguous.is_empty() {
            msg += "\n  --name-map MAP.json maps initializer names to tensor names: {\"onnx::Conv_41\": \"features.0.weight\"}";
        }
        Err(Error::msg(msg))
    }
}

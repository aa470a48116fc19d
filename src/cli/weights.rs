//! `--weights W.safetensors [--name-map MAP.json] [--allow-partial]` on every command that takes
//! a model: the checkpoint's tensors fill the graph's initializers before anything runs.
use super::fetch::RemoteArgs;
use anyhow::Context;
use semu::onnx::OnnxModel;
use semu::weights::{self, BindReport, MatchKind, WeightsOptions};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct WeightsArgs {
    /// safetensors weights for the model's initializers (by exact name, PyTorch state-dict name,
    /// or --name-map). Repeat for the shards of one checkpoint, or give its *.safetensors.index.json.
    #[arg(long = "weights", value_name = "W.safetensors")]
    pub weights: Vec<PathBuf>,
    /// JSON object mapping ONNX initializer names to safetensors keys.
    #[arg(long, value_name = "MAP.json", requires = "weights")]
    pub name_map: Option<PathBuf>,
    /// Warn instead of failing on initializers the weights lack (the model's own values are
    /// used) and on tensors no initializer uses.
    #[arg(long, requires = "weights")]
    pub allow_partial: bool,
}

/// The same flags for a second model (`semu verify`'s B).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct WeightsArgsB {
    /// safetensors weights for model B (as --weights for A).
    #[arg(long, value_name = "W.safetensors")]
    pub b_weights: Vec<PathBuf>,
    /// Name map for model B's weights.
    #[arg(long, value_name = "MAP.json", requires = "b_weights")]
    pub b_name_map: Option<PathBuf>,
    /// --allow-partial for model B's weights.
    #[arg(long, requires = "b_weights")]
    pub b_allow_partial: bool,
}

impl From<&WeightsArgsB> for WeightsArgs {
    fn from(b: &WeightsArgsB) -> Self {
        WeightsArgs { weights: b.b_weights.clone(), name_map: b.b_name_map.clone(), allow_partial: b.b_allow_partial }
    }
}

impl WeightsArgs {
    pub fn given(&self) -> bool {
        !self.weights.is_empty()
    }

    /// Binds the weights (when given) into `model`, logging conversions and warnings.
    pub fn bind(&self, model: &mut OnnxModel, remote: &RemoteArgs) -> anyhow::Result<Option<BindReport>> {
        if !self.given() {
            return Ok(None);
        }
        let mut files = Vec::new();
        for w in &self.weights {
            files.extend(local_files(w, remote)?);
        }
        let name_map = self.name_map.as_deref().map(|p| remote.file(p)).transpose()?;
        let opts = WeightsOptions { files, name_map, allow_partial: self.allow_partial };
        let report = weights::bind(model, &opts)?;
        let count = |k: MatchKind| report.bound.iter().filter(|b| b.by == k).count();
        tracing::info!(
            "weights: {} initializers from {} file(s) ({} by exact name, {} by state-dict name, {} by name map)",
            report.bound.len(),
            report.files.len(),
            count(MatchKind::Exact),
            count(MatchKind::StateDict),
            count(MatchKind::NameMap)
        );
        for c in report.conversion_summary() {
            tracing::info!("weights: converted {c}");
        }
        for w in report.warnings() {
            tracing::warn!("weights: {w}");
        }
        Ok(Some(report))
    }
}

/// A weights argument as local files: a path, a URL, or the URL of an index whose shards are
/// fetched from beside it.
fn local_files(arg: &Path, remote: &RemoteArgs) -> anyhow::Result<Vec<PathBuf>> {
    let s = arg.to_string_lossy();
    if !s.contains("://") || !s.ends_with(".json") {
        return Ok(vec![remote.file(arg)?]);
    }
    let index = remote.file(arg)?;
    let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("{s}: not valid JSON"))?;
    let map: HashMap<String, String> = serde_json::from_value(v.get("weight_map").cloned().unwrap_or_default())
        .with_context(|| format!("{s}: no \"weight_map\" of key → shard file"))?;
    let mut shards: Vec<&String> = map.values().collect();
    shards.sort();
    shards.dedup();
    let base = &s[..s.rfind('/').map_or(0, |i| i + 1)];
    shards.into_iter().map(|f| remote.file(Path::new(&format!("{base}{f}")))).collect()
}

/// Writes a model whose weights were bound in memory to a temporary folder and points `model`
/// at it, for ONNX Runtime, which reads models from files. The folder lives as long as the
/// returned guard.
pub fn materialize(model: &mut OnnxModel) -> anyhow::Result<semu::onnx::staging::Scratch> {
    let dir = semu::onnx::staging::Scratch::new("semu-bound-")?;
    let name = model.path.file_name().map(PathBuf::from).unwrap_or_else(|| "model.onnx".into());
    let saved = model.save(&dir.path().join(name), &HashMap::new())?;
    model.path = saved.model;
    model.dir = dir.path().to_path_buf();
    Ok(dir)
}

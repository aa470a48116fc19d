//! Which checkpoint key feeds which ONNX initializer: an explicit name map, the exact name, or
//! the PyTorch state-dict name the exporter kept (possibly mangled or wrapped in a prefix).
use crate::onnx::proto::GraphProto;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// How an initializer found its tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchKind {
    NameMap,
    Exact,
    StateDict,
}

/// Prefixes that wrap a state dict without changing its layout: DataParallel (`module.`),
/// torch.compile (`_orig_mod.`) and hub checkpoints that nest the network (`model.`).
const WRAPPERS: &[&str] = &["module.", "_orig_mod.", "model."];
/// Prefixes torch.export / dynamo put before a parameter's or buffer's name, dots made `_`.
const MANGLED: &[&str] = &["p_", "b_", "L__self___", "l__self___", ""];

fn strip_wrappers(mut s: &str) -> &str {
    while let Some(rest) = WRAPPERS.iter().find_map(|w| s.strip_prefix(w)) {
        s = rest;
    }
    s
}

/// The names an exporter may have given the initializer that holds checkpoint tensor `key`.
fn aliases(key: &str) -> BTreeSet<String> {
    let bare = strip_wrappers(key);
    let mut out = BTreeSet::from([bare.to_string()]);
    if bare.contains('.') {
        let flat = bare.replace('.', "_");
        out.extend(MANGLED.iter().map(|p| format!("{p}{flat}")));
    }
    out
}

/// Candidate keys per initializer name, through state-dict aliases (exact names are handled by
/// the caller first). An initializer with two candidates is ambiguous.
pub fn state_dict_candidates<'a>(keys: impl Iterator<Item = &'a String>) -> HashMap<String, Vec<String>> {
    let mut by_alias: HashMap<String, Vec<String>> = HashMap::new();
    for k in keys {
        for a in aliases(k) {
            by_alias.entry(a).or_default().push(k.clone());
        }
    }
    by_alias
}

/// The lookup name of an initializer for [`state_dict_candidates`].
pub fn lookup_name(init: &str) -> &str {
    strip_wrappers(init)
}

/// The PyTorch module path a TorchScript-exported node name encodes: `/features/features.0/Conv`
/// → `features.0`, `/bert/encoder/layer.0/attention/self/query/MatMul` →
/// `bert.encoder.layer.0.attention.self.query` (a scope is either relative to its parent or
/// already qualified).
pub fn module_path(node_name: &str) -> Option<String> {
    let parts: Vec<&str> = node_name.split('/').filter(|s| !s.is_empty()).collect();
    let (_, scopes) = parts.split_last()?;
    let mut acc = String::new();
    for s in scopes {
        if acc.is_empty() || s.starts_with(&format!("{acc}.")) {
            acc = s.to_string();
        } else {
            acc = format!("{acc}.{s}");
        }
    }
    (!acc.is_empty()).then_some(acc)
}

/// The state-dict parameter name of input `i` of an op, for the common layers.
fn param_suffix(op: &str, i: usize) -> Option<&'static str> {
    Some(match (op, i) {
        ("Conv" | "ConvTranspose" | "Gemm", 1) => "weight",
        ("Conv" | "ConvTranspose" | "Gemm", 2) => "bias",
        ("BatchNormalization", 1) | ("LayerNormalization" | "InstanceNormalization", 1) => "weight",
        ("BatchNormalization", 2) | ("LayerNormalization" | "InstanceNormalization", 2) => "bias",
        ("BatchNormalization", 3) => "running_mean",
        ("BatchNormalization", 4) => "running_var",
        ("Gather", 0) => "weight",
        _ => return None,
    })
}

/// State-dict names the graph suggests for an initializer with an exporter-made name (such as
/// `onnx::Conv_41`): module path of each consuming node + the parameter's role. Only a hint —
/// the exporter may have folded other layers (BatchNorm) into the tensor.
pub fn suggested_keys(g: &GraphProto, init: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in &g.node {
        for (i, input) in n.input.iter().enumerate() {
            if input != init {
                continue;
            }
            if let (Some(path), Some(suffix)) = (module_path(n.name()), param_suffix(n.op_type(), i)) {
                out.push((n.name().to_string(), format!("{path}.{suffix}")));
            }
        }
    }
    out
}

/// Reads a `--name-map` file: a JSON object mapping ONNX initializer names to checkpoint keys.
pub fn read_name_map(path: &std::path::Path) -> crate::Result<BTreeMap<String, String>> {
    let bad = |why: String| crate::Error::msg(format!("{}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| crate::Error::io(path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON ({e})")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("expected a JSON object {\"ONNX initializer name\": \"safetensors key\", …}".into()))?;
    obj.iter()
        .map(|(k, v)| match v.as_str() {
            Some(s) => Ok((k.clone(), s.to_string())),
            None => Err(bad(format!("the value for \"{k}\" is not a string"))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_from_torchscript_node_names() {
        assert_eq!(module_path("/features/features.0/Conv").as_deref(), Some("features.0"));
        assert_eq!(
            module_path("/bert/encoder/layer.0/attention/self/query/MatMul").as_deref(),
            Some("bert.encoder.layer.0.attention.self.query")
        );
        assert_eq!(module_path("Conv_3"), None);
    }

    #[test]
    fn aliases_cover_wrappers_and_mangled_names() {
        let a = aliases("module.classifier.1.weight");
        for want in ["classifier.1.weight", "p_classifier_1_weight", "L__self___classifier_1_weight"] {
            assert!(a.contains(want), "{want} in {a:?}");
        }
        assert_eq!(lookup_name("model.fc.weight"), "fc.weight");
    }
}

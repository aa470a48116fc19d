//! What a model's folder says about its text data, as transformers and optimum write it:
//! `tokenizer.json`, `config.json` (labels, maximum length) and `tokenizer_config.json`, and the
//! graph's fixed sequence length.
use super::text::TextOptions;
use crate::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::Path;

impl TextOptions {
    /// The options read beside `model`: its `tokenizer.json`, string labels, maximum length,
    /// and the fixed length of its `input_ids` when the graph declares one.
    pub fn beside_model(model: &OnnxModel) -> Self {
        let dir = model.path.parent().unwrap_or(Path::new("."));
        let config = read_json(&dir.join("config.json"));
        let tok_config = read_json(&dir.join("tokenizer_config.json"));
        TextOptions {
            tokenizer: Some(dir.join("tokenizer.json")),
            pad_to: super::model_input(model, Some("input_ids"))
                .ok()
                .and_then(|(_, d)| d.get(1).copied().flatten())
                .map(|v| v as usize),
            model_max_length: model_max_length(config.as_ref(), tok_config.as_ref()),
            label2id: config.as_ref().and_then(label2id),
            ..TextOptions::default()
        }
    }
}

/// A JSON file beside the model, when there is one; one that does not parse is skipped with a
/// warning (it may belong to something else).
fn read_json(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(path).ok()?;
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!("{}: not valid JSON ({e}); not read", path.display());
            None
        }
    }
}

/// The model's string labels, as transformers writes them in config.json: `label2id`, else the
/// inverse of `id2label`.
fn label2id(config: &serde_json::Value) -> Option<HashMap<String, i64>> {
    let from = |key: &str, flip: bool| -> Option<HashMap<String, i64>> {
        let m = config.get(key)?.as_object()?;
        let pairs = m.iter().map(|(k, v)| {
            if flip {
                Some((v.as_str()?.to_string(), k.parse().ok()?))
            } else {
                Some((k.clone(), v.as_i64()?))
            }
        });
        pairs.collect::<Option<HashMap<_, _>>>().filter(|m| !m.is_empty())
    };
    from("label2id", false).or_else(|| from("id2label", true))
}

/// The longest sequence the model takes: tokenizer_config.json's `model_max_length` (when it is
/// a real length, not transformers' "unbounded" 1e30), else config.json's
/// `max_position_embeddings` / `n_positions`.
fn model_max_length(config: Option<&serde_json::Value>, tok: Option<&serde_json::Value>) -> Option<usize> {
    let tok_max = tok.and_then(|t| t.get("model_max_length")?.as_u64()).filter(|&m| m > 0 && m < 1 << 24);
    let cfg_max = config.and_then(|c| {
        ["max_position_embeddings", "n_positions"].iter().find_map(|k| c.get(*k)?.as_u64()).filter(|&m| m > 0)
    });
    tok_max.or(cfg_max).map(|m| m as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label2id_reads_transformers_config_or_inverts_id2label() {
        let both = json!({"label2id": {"neg": 0, "pos": 1}, "id2label": {"0": "x", "1": "y"}});
        assert_eq!(label2id(&both).unwrap().get("pos"), Some(&1));
        let only_ids = json!({"id2label": {"0": "neg", "1": "pos"}});
        let m = label2id(&only_ids).unwrap();
        assert_eq!((m["neg"], m["pos"], m.len()), (0, 1, 2));
        assert!(label2id(&json!({"label2id": {}})).is_none());
    }

    #[test]
    fn model_max_length_prefers_the_tokenizer_config_unless_unbounded() {
        let cfg = json!({"max_position_embeddings": 514});
        assert_eq!(model_max_length(Some(&cfg), Some(&json!({"model_max_length": 512}))), Some(512));
        let unbounded = json!({"model_max_length": 1e30});
        assert_eq!(model_max_length(Some(&cfg), Some(&unbounded)), Some(514));
        assert_eq!(model_max_length(Some(&json!({"n_positions": 1024})), None), Some(1024));
        assert_eq!(model_max_length(None, None), None);
    }
}

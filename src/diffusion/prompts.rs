//! Prompts of a text-conditioned ε-network as the states it is fed: the model's tokenizer.json
//! (HF `tokenizers`, its own padding and truncation, else padded with its pad or `<|endoftext|>`
//! id / cut to the context length) and its text encoder ONNX run on the engine.
use super::schedule::TextSettings;
use crate::engine::{Plan, PlanOptions, Registry, Value};
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The token ids of `prompts`, P×L (L = the context length).
pub fn token_ids(text: &TextSettings, prompts: &[&str]) -> Result<Tensor> {
    let path = &text.tokenizer;
    let tok = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| Error::msg(format!("{}: not a tokenizer.json this tokenizer reads: {e}", path.display())))?;
    let pad = tok.get_padding().map(|p| p.pad_id).or_else(|| tok.token_to_id("<|endoftext|>")).unwrap_or(0);
    let len = text.context_length;
    let mut ids = Vec::with_capacity(prompts.len() * len);
    for p in prompts {
        let enc =
            tok.encode(*p, true).map_err(|e| Error::msg(format!("{}: tokenizing \"{p}\": {e}", path.display())))?;
        let mut row: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
        row.resize(len, pad as i64);
        ids.extend(row);
    }
    Ok(Tensor::f_from_slice(&ids)?.f_reshape([prompts.len() as i64, len as i64])?)
}

/// The text encoder's states for `prompts`, P×L×D f32 on `device`.
pub fn encode(text: &TextSettings, prompts: &[&str], device: Device) -> Result<Tensor> {
    let ids = token_ids(text, prompts)?;
    let path = &text.encoder;
    let model = OnnxModel::load(path).map_err(|e| Error::msg(format!("the text encoder {}: {e}", path.display())))?;
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { device, ..Default::default() })?;
    let feeds = HashMap::from([(text.encoder_input.clone(), Value::Tensor(ids.f_to_device(device)?))]);
    let names: Vec<String> = plan.output_names().iter().map(|s| s.to_string()).collect();
    let at = names.iter().position(|n| *n == text.encoder_output).ok_or_else(|| {
        Error::msg(format!(
            "{}: no output '{}' (semu.diffusion.text_encoder.output; its outputs: {})",
            path.display(),
            text.encoder_output,
            names.join(", ")
        ))
    })?;
    let _g = tch::no_grad_guard();
    let out = plan.run_values(&feeds)?.swap_remove(at);
    let t =
        out.as_tensor().ok_or_else(|| Error::msg(format!("{}: '{}' is not a tensor", path.display(), names[at])))?;
    Ok(t.f_to_kind(Kind::Float)?.f_detach()?)
}

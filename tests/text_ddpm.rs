//! The text-conditioned diffusion fixture (tools/make_text_ddpm.py): a diffusers
//! UNet2DConditionModel, its CLIP text encoder and tokenizer, and the UNet as onnxruntime's unet
//! optimizer rewrites it (NhwcConv, GroupNorm, SkipGroupNorm, packed-QKV/KV MultiHeadAttention,
//! BiasSplitGelu, BiasAdd, SkipLayerNormalization) run on the engine as onnxruntime runs them.
use semu::data::npy::read_npy;
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/text_ddpm").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_text_ddpm.py)", p.display());
    p
}

/// The engine's outputs of `model` on the named `ref/<input>.npy` arrays.
fn run(model: &str, inputs: &[&str]) -> Vec<Tensor> {
    let m = OnnxModel::load(fx(model)).unwrap();
    let plan = Plan::new(&m, &Registry::standard(), &PlanOptions::default())
        .unwrap_or_else(|e| panic!("{model} does not plan on the engine: {e}"));
    let feeds: HashMap<String, Tensor> =
        inputs.iter().map(|n| (n.to_string(), read_npy(&fx(&format!("ref/{n}.npy"))).unwrap())).collect();
    plan.run(&feeds).unwrap_or_else(|e| panic!("{model} does not run on the engine: {e}"))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double)).abs().max().double_value(&[])
}

const UNET_INPUTS: [&str; 3] = ["sample", "timestep", "encoder_hidden_states"];

#[test]
fn the_diffusers_unet_matches_onnxruntime_and_reads_the_prompt() {
    let got = &run("unet.onnx", &UNET_INPUTS)[0];
    let want = read_npy(&fx("ref/out_sample.npy")).unwrap();
    let diff = max_abs(got, &want);
    assert!(diff <= 1e-4, "unet.onnx: engine vs onnxruntime max abs {diff}");
    // Rows 1 and 3 share sample and timestep; their prompts are "a handwritten three" and "".
    let cond = (got.get(1) - got.get(3)).abs().max().double_value(&[]);
    assert!(cond > 1e-3, "the output ignores encoder_hidden_states (rows 1 and 3 differ by {cond})");
}

#[test]
fn the_unet_as_onnxruntimes_optimizer_fuses_it_computes_the_same() {
    let m = OnnxModel::load(fx("unet_optimized.onnx")).unwrap();
    let fused: Vec<&str> =
        m.graph().node.iter().filter(|n| n.domain() == "com.microsoft").map(|n| n.op_type()).collect();
    for op in ["NhwcConv", "GroupNorm", "SkipGroupNorm", "MultiHeadAttention", "BiasSplitGelu", "BiasAdd"] {
        assert!(fused.contains(&op), "the optimizer's output has no {op}: {fused:?}");
    }
    // onnxruntime has no CPU kernel for NhwcConv, GroupNorm…: the reference is its output on the
    // graph before fusion, which the fused graph must reproduce.
    let got = &run("unet_optimized.onnx", &UNET_INPUTS)[0];
    let diff = max_abs(got, &read_npy(&fx("ref/out_sample.npy")).unwrap());
    assert!(diff <= 1e-4, "unet_optimized.onnx: engine vs onnxruntime on unet.onnx max abs {diff}");
}

#[test]
fn the_clip_text_encoder_matches_onnxruntime() {
    let got = &run("text_encoder.onnx", &["input_ids"])[0];
    let diff = max_abs(got, &read_npy(&fx("ref/last_hidden_state.npy")).unwrap());
    assert!(diff <= 1e-4, "text_encoder.onnx: engine vs onnxruntime max abs {diff}");
}

#[test]
fn the_tokenizer_gives_the_ids_python_gave() {
    let tok = tokenizers::Tokenizer::from_file(fx("tokenizer.json")).unwrap();
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx("ref/prompts.json")).unwrap()).unwrap();
    let prompts = refs["prompts"].as_array().unwrap();
    assert!(prompts.len() >= 11, "{prompts:?}");
    for (p, ids) in prompts.iter().zip(refs["ids"].as_array().unwrap()) {
        let p = p.as_str().unwrap();
        let want: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(p, true).unwrap().get_ids().to_vec();
        assert_eq!(got, want, "prompt {p:?}");
    }
    // The same ids fed the encoder for ref/last_hidden_state.npy.
    let ids = read_npy(&fx("ref/input_ids.npy")).unwrap();
    assert_eq!(ids.size()[0] as usize, prompts.len());
}

#[test]
fn the_unet_carries_its_prompt_conditioning_settings() {
    let m = OnnxModel::load(fx("unet.onnx")).unwrap();
    let props: Vec<(&str, &str)> = m.proto.metadata_props.iter().map(|p| (p.key(), p.value())).collect();
    for (k, v) in [
        ("semu.diffusion.prediction", "eps"),
        ("semu.diffusion.schedule", "linear"),
        ("semu.diffusion.timesteps", "1000"),
        ("semu.diffusion.data_range", "-1,1"),
        ("semu.diffusion.input.x", "sample"),
        ("semu.diffusion.input.t", "timestep"),
        ("semu.diffusion.input.context", "encoder_hidden_states"),
        ("semu.diffusion.text_encoder", "text_encoder.onnx"),
        ("semu.diffusion.tokenizer", "tokenizer.json"),
        ("semu.diffusion.null_prompt", ""),
    ] {
        assert!(props.contains(&(k, v)), "{k}={v} missing from unet.onnx's metadata: {props:?}");
    }
    assert!(!props.iter().any(|(k, _)| k.ends_with("null_label")), "a prompt model has no null class: {props:?}");
}

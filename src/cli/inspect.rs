//! `semu inspect MODEL.onnx [--json]`.
use super::CmdResult;
use anyhow::Context;
use semu::engine::{unsupported_ops, Registry};
use semu::onnx::summary::ModelSummary;
use semu::onnx::OnnxModel;
use semu::semu::find_layers;
use std::io::Write;
use std::path::PathBuf;

/// Show a model's opsets, inputs/outputs, op histogram, parameters, the weights SEMU can adapt
/// and any op the engine does not support.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  semu inspect fixtures/digits/model.onnx\n  semu inspect model.onnx --json | jq .adaptable"
)]
pub struct Args {
    /// The ONNX model (a path, https://…, or hf://OWNER/REPO[@REVISION]/PATH).
    model: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// The device the engine would run on (auto | cpu | cuda | cuda:N); shown in the summary.
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

pub fn run(mut a: Args) -> CmdResult {
    a.model = a.remote.model(&a.model)?;
    let mut model = OnnxModel::load(&a.model)?;
    let bound = a.weights.bind(&mut model, &a.remote)?;
    let s = ModelSummary::of(&model);
    let layers = find_layers(&model);
    let unsupported = unsupported_ops(&model, &Registry::standard());
    let device = semu::engine::device_name(super::device(&a.device)?);
    let adaptable: i64 = layers.iter().map(|l| l.numel()).sum();
    let mut out = std::io::stdout().lock();
    if a.json {
        let v = serde_json::json!({
            "summary": s, "adaptable": layers, "adaptable_parameters": adaptable, "unsupported_ops": unsupported, "device": device,
            "weights": bound,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let vals = |vs: &[semu::onnx::summary::ValueSummary]| {
        vs.iter().map(|v| format!("    {}: {}[{}]", v.name, v.dtype, v.shape.join(", "))).collect::<Vec<_>>().join("\n")
    };
    let opsets: Vec<String> = s.opsets.iter().map(|(d, v)| format!("{d} {v}")).collect();
    writeln!(out, "model      {}", s.path)?;
    writeln!(out, "producer   {} (IR {}), opset {}", s.producer, s.ir_version, opsets.join(", "))?;
    writeln!(out, "inputs\n{}", vals(&s.inputs))?;
    writeln!(out, "outputs\n{}", vals(&s.outputs))?;
    let hist: Vec<String> = s.op_histogram.iter().map(|(k, v)| format!("{k}×{v}")).collect();
    let all: usize = s.op_histogram.values().sum();
    let inner = if all > s.nodes { format!(" (+{} in subgraphs)", all - s.nodes) } else { String::new() };
    writeln!(out, "nodes      {}{inner}: {}", s.nodes, hist.join(" "))?;
    writeln!(
        out,
        "parameters {} in {} initializers{}",
        s.parameters,
        s.initializers,
        if s.external_data { " (external data)" } else { "" }
    )?;
    writeln!(
        out,
        "adaptable  {} weights, {} parameters ({:.1}%)",
        layers.len(),
        adaptable,
        pct(adaptable, s.parameters)
    )?;
    for l in &layers {
        let dims: Vec<String> = l.dims.iter().map(|d| d.to_string()).collect();
        let layout = if l.layout.is_native() { "" } else { " (O×k×I: input channels last)" };
        writeln!(
            out,
            "    {:<40} {:?} {} [{}]{layout} used by {}",
            l.name,
            l.kind,
            l.dtype,
            dims.join("×"),
            l.nodes.join(", ")
        )?;
    }
    if let Some(b) = &bound {
        let files: Vec<String> = b.files.iter().map(|f| f.display().to_string()).collect();
        writeln!(out, "weights    {} initializers from {}", b.bound.len(), files.join(", "))?;
        for c in b.conversion_summary() {
            writeln!(out, "    {c}")?;
        }
    }
    if unsupported.is_empty() {
        writeln!(out, "engine     every op is supported (device {device})")?;
    } else {
        writeln!(out, "unsupported ops\n    {}", unsupported.join("\n    "))?;
    }
    out.flush().context("writing to stdout")?;
    Ok(())
}

fn pct(a: i64, b: i64) -> f64 {
    if b == 0 {
        0.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

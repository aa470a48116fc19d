//! `semu patch apply|revert|show`: re-create an unlearned model from the original and the patch
//! `semu unlearn --out-patch` wrote (byte for byte), or undo it.
use super::weights::WeightsArgs;
use super::{CmdResult, Exit};
use anyhow::Context;
use semu::audit::{self, FileHash};
use semu::onnx::OnnxModel;
use semu::patch::{self, LayerError, LayerOutcome, Patch};
use semu::report::{sha256_file, write_atomic};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Apply, revert or show an unlearning patch (`semu unlearn --out-patch`).
#[derive(clap::Args)]
#[command(after_help = "Examples:
  semu unlearn --model m.onnx --forget f.npz --out forgot.onnx --out-patch p.safetensors
  semu patch apply m.onnx p.safetensors --out again.onnx        # the bytes of forgot.onnx
  semu patch revert forgot.onnx p.safetensors --out back.onnx --original m.onnx
  semu patch show p.safetensors

Apply re-creates the exported weights byte for byte when the patch was made on the CPU (from a
GPU run, to the last bit or so). Each weight must be the one the patch was made from (apply) or
produced (revert), by SHA-256, unless --force.")]
pub struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Subcommand)]
enum Cmd {
    /// W + U R Vᵀ for every patched weight of MODEL, written to --out.
    Apply(Change),
    /// W' − U R Vᵀ: undo the patch (exact up to floating point; see --original).
    Revert(Change),
    /// The patch's layers and provenance.
    Show {
        patch: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(clap::Args)]
struct Change {
    /// The model to change.
    model: PathBuf,
    /// The patch (safetensors).
    patch: PathBuf,
    /// Where to write the changed model (external data beside it, same layout).
    #[arg(long)]
    out: PathBuf,
    /// revert: also report the max error against this model (the original).
    #[arg(long)]
    original: Option<PathBuf>,
    /// Use weights whose SHA-256 differs from the patch's record.
    #[arg(long)]
    force: bool,
    /// Write an audit record (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[command(flatten)]
    weights: WeightsArgs,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
}

#[derive(Serialize)]
struct PatchReport {
    command: &'static str,
    semu_version: &'static str,
    git_commit: &'static str,
    started_at: String,
    finished_at: String,
    model: FileHash,
    weights: Vec<FileHash>,
    patch: FileHash,
    patch_metadata: std::collections::BTreeMap<String, String>,
    layers: Vec<LayerOutcome>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<FileHash>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_error: Option<Vec<LayerError>>,
    outputs: Vec<FileHash>,
}

pub fn run(a: Args) -> CmdResult {
    match a.cmd {
        Cmd::Apply(c) => change(c, true),
        Cmd::Revert(c) => change(c, false),
        Cmd::Show { patch, json } => show(&patch, json),
    }
}

fn change(mut c: Change, forward: bool) -> CmdResult {
    let started_at = audit::now_rfc3339();
    c.model = c.remote.model(&c.model)?;
    c.patch = c.remote.file(&c.patch)?;
    semu::paths::check_output(&c.out, "--out", &[&c.model, &c.patch]).map_err(super::usage)?;
    if let Some(r) = &c.report {
        semu::paths::check_output(r, "--report", &[&c.model, &c.patch]).map_err(super::usage)?;
    }
    let mut model = OnnxModel::load(&c.model)?;
    let bound = c.weights.bind(&mut model, &c.remote)?;
    let p = Patch::read(&c.patch)?;
    let done = if forward { patch::apply(&model, &p, c.force)? } else { patch::revert(&model, &p, c.force)? };
    let original = c.original.as_deref().map(|o| c.remote.model(o)).transpose()?;
    let max_error = match &original {
        Some(o) => Some(patch::max_error(&done.replacements, &OnnxModel::load(o)?)?),
        None => None,
    };
    semu::verify::gate::check_finite_weights(&done.replacements)
        .map_err(|e| Exit { code: 3, err: anyhow::anyhow!("nothing written at {}: {e}", c.out.display()) })?;
    let saved = model.save(&c.out, &done.replacements)?;
    let verb = if forward { "applied" } else { "reverted" };
    println!("semu patch: {verb} {} ({} weights) to {}", c.patch.display(), p.layers.len(), c.model.display());
    let (input, output) = if forward {
        (
            ("is the one the patch was made from", "DIFFERS from the patch's base"),
            ("byte-identical to the unlearned export", "not byte-identical to the unlearned export"),
        )
    } else {
        (
            ("is the one the patch produced", "DIFFERS from the patch's output"),
            ("byte-identical to the original", "the original up to rounding"),
        )
    };
    for l in &done.layers {
        let pick = |ok: bool, (yes, no): (&'static str, &'static str)| if ok { yes } else { no };
        println!(
            "    {:<40} weight {} · result {}",
            l.name,
            pick(l.input_matches, input),
            pick(l.output_matches, output)
        );
    }
    if let Some(errs) = &max_error {
        let worst = errs.iter().map(|e| e.max_abs_error).fold(0.0, f64::max);
        let differing: usize = errs.iter().map(|e| e.differing_elements).sum();
        println!(
            "max error   {worst:.3e} against {} ({differing} elements differ)",
            original.as_ref().unwrap().display()
        );
    }
    println!("output      {}", saved.model.display());
    if let Some(r) = &c.report {
        let report = PatchReport {
            command: if forward { "patch apply" } else { "patch revert" },
            semu_version: audit::VERSION,
            git_commit: audit::git_commit(),
            started_at,
            finished_at: audit::now_rfc3339(),
            model: FileHash::of(&c.model)?,
            weights: bound.iter().flat_map(|b| &b.files).map(|f| FileHash::of(f)).collect::<semu::Result<_>>()?,
            patch: FileHash::of(&c.patch)?,
            patch_metadata: p.metadata.clone(),
            layers: done.layers,
            original: original.as_deref().map(FileHash::of).transpose()?,
            max_error,
            outputs: saved.files.iter().map(|f| FileHash::of(f)).collect::<semu::Result<_>>()?,
        };
        write_atomic(r, serde_json::to_string_pretty(&report)?.as_bytes())
            .with_context(|| format!("writing the report {}", r.display()))?;
        println!("report      {}", r.display());
    }
    Ok(())
}

fn show(path: &Path, json: bool) -> CmdResult {
    let p = Patch::read(path)?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if json {
        let infos: Vec<_> = p.layers.iter().map(|l| &l.info).collect();
        let v = serde_json::json!({
            "patch": path.display().to_string(), "bytes": size, "sha256": sha256_file(path)?,
            "layers": infos, "metadata": p.metadata,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("patch       {} ({size} bytes)", path.display());
    for (k, v) in &p.metadata {
        println!("    {k:<24} {v}");
    }
    println!("layers      {}", p.layers.len());
    for l in &p.layers {
        let i = &l.info;
        let kind = if i.conv { "conv" } else { "2-D" };
        println!("    {:<40} {kind:<4} {} {:?} k={}", i.name, i.dtype, i.shape, i.k);
    }
    Ok(())
}

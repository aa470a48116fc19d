//! The run report: everything needed to audit or repeat an unlearning run, and the report
//! folder (`--report-dir`): report.json, report.md and the plots as PNG and SVG.
pub mod diagnostics;
pub mod font;
pub mod md;
pub mod plots;

pub use diagnostics::{diagnostics, LayerDiagnostics};

use crate::error::Error;
use crate::semu::train::EpochStats;
use crate::semu::unlearn::{LayerReport, SemuConfig, Timings};
use crate::verify::gate::GateReport;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub before: f64,
    pub after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LmBeforeAfter {
    pub before: crate::eval::lm::LmEvaluation,
    pub after: crate::eval::lm::LmEvaluation,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hashes {
    pub model: String,
    pub forget: String,
    pub retain: Option<String>,
    pub output: Option<String>,
    /// The `--weights` safetensors files the model's initializers came from.
    pub weights: Vec<crate::audit::FileHash>,
    /// The unlearning patch (`--out-patch`) and the safetensors weights (`--out-weights`).
    pub patch: Option<String>,
    pub out_weights: Option<String>,
    /// The forget-set gradient given with `--gradient` (the gradient pass was skipped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gradient: Option<crate::audit::FileHash>,
    /// Every file written (model, external data, weights, patch).
    pub outputs: Vec<crate::audit::FileHash>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnlearnReport {
    pub semu_version: &'static str,
    pub method: &'static str,
    /// The task ("classify", "causal-lm") and why it was chosen.
    pub task: &'static str,
    pub task_reason: String,
    pub model: String,
    pub output: Option<String>,
    pub device: String,
    pub settings: SemuConfig,
    /// `--lr auto`: the rate chosen, why, and every rate tried.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lr_choice: Option<crate::semu::auto::LrChoice>,
    /// The forget accuracy SEMU trained down to (the retrained level) and why; training stopped
    /// at the first epoch that reached it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forget_target: Option<crate::semu::auto::Target>,
    /// `--max-trained`: the γ (one for every layer) whose adapters fit the budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma_chosen: Option<f64>,
    pub used_retain_data: bool,
    /// How the forget set was chosen from a training set (`--train`), with its exact indices.
    pub forget_selection: Option<crate::data::forget::ForgetRecord>,
    /// Classes, or a language model's vocabulary size (the output's last axis).
    pub classes: i64,
    pub layers: Vec<LayerReport>,
    pub skipped_zero_gradient: Vec<String>,
    /// Per adapted layer: the head of the gradient's spectrum and a |ΔW| histogram (for plots).
    pub diagnostics: Vec<LayerDiagnostics>,
    pub total_parameters: i64,
    pub trainable_parameters: i64,
    pub trainable_share: f64,
    /// Elements of the adapted weight tensors (every one of them may change when folded).
    pub weights_touched: i64,
    /// Elements whose value differs in the export, and their share of all parameters.
    pub changed_parameters: i64,
    pub changed_share: f64,
    /// A quantized model: how the fold re-quantized the trained weights (same scales and zero
    /// points); `changed_parameters` then counts changed integers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantization: Option<crate::semu::quantized::Requantized>,
    /// Time of the method itself (gradient/mask, SVD, training), export and verify excluded.
    pub wall_seconds: f64,
    /// The baselines' own settings (mask ratio, l1, schedule); absent for SEMU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_settings: Option<crate::baselines::BaselineSettings>,
    pub epochs: Vec<EpochStats>,
    pub forget_accuracy: Accuracy,
    pub retain_accuracy: Option<Accuracy>,
    pub test_accuracy: Option<TestAccuracy>,
    /// Language models: perplexity, memorisation, extraction strength and the Min-K% attack on
    /// the forget, retain and holdout (--test) texts, before and after.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_model: Option<LmBeforeAfter>,
    pub timings: Timings,
    pub verification: Option<GateReport>,
    pub verified: bool,
    pub sha256: Hashes,
    /// The git commit semu was built from ("unknown" outside a git checkout).
    pub git_commit: &'static str,
    /// When the run started and ended (RFC 3339, UTC).
    pub started_at: String,
    pub finished_at: String,
    /// How `--weights` filled the model's initializers: files, bindings, float conversions.
    pub weights: Option<crate::weights::BindReport>,
}

/// Test-set accuracy, split into the forgotten class and the others for class forgetting.
#[derive(Debug, Clone, Serialize)]
pub struct TestAccuracy {
    pub all: Accuracy,
    pub forget_class: Option<i64>,
    pub on_forget_class: Option<Accuracy>,
    pub on_other_classes: Option<Accuracy>,
}

/// SHA-256 of a file, streamed, as lowercase hex.
pub fn sha256_file(path: &Path) -> crate::Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| crate::Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| crate::Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to a temporary file in the same folder, then renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> crate::Result<()> {
    let dir = crate::paths::folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut b = tempfile::Builder::new();
    // Readable like any other output (a temporary file is owner-only by default).
    #[cfg(unix)]
    b.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = b.tempfile_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Writes the report folder (created if needed; existing files of the same names are replaced):
/// report.json, the plots (PNG and SVG) and report.md, which links to them. Returns the paths.
pub fn write_dir(report: &UnlearnReport, dir: &Path) -> crate::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut written = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> crate::Result<()> {
        let p = dir.join(name);
        write_atomic(&p, bytes)?;
        written.push(p);
        Ok(())
    };
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::msg(format!("report.json: {e}")))?;
    put("report.json", json.as_bytes())?;
    let figures = plots::figures(report)?;
    for f in &figures {
        put(&format!("{}.png", f.stem), &f.png)?;
        put(&format!("{}.svg", f.stem), f.svg.as_bytes())?;
    }
    put("report.md", md::markdown(report, &figures).as_bytes())?;
    Ok(written)
}

//! The run report: everything needed to audit or repeat an unlearning run.
use crate::semu::train::EpochStats;
use crate::semu::unlearn::{LayerReport, SemuConfig, Timings};
use crate::verify::gate::GateReport;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub before: f64,
    pub after: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Hashes {
    pub model: String,
    pub forget: String,
    pub retain: Option<String>,
    pub output: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct UnlearnReport {
    pub semu_version: &'static str,
    pub method: &'static str,
    pub model: String,
    pub output: Option<String>,
    pub device: String,
    pub settings: SemuConfig,
    pub used_retain_data: bool,
    pub classes: i64,
    pub layers: Vec<LayerReport>,
    pub skipped_zero_gradient: Vec<String>,
    pub total_parameters: i64,
    pub trainable_parameters: i64,
    pub trainable_share: f64,
    /// Elements of the adapted weight tensors (every one of them may change when folded).
    pub weights_touched: i64,
    pub epochs: Vec<EpochStats>,
    pub forget_accuracy: Accuracy,
    pub retain_accuracy: Option<Accuracy>,
    pub test_accuracy: Option<TestAccuracy>,
    pub timings: Timings,
    pub verification: Option<GateReport>,
    pub verified: bool,
    pub sha256: Hashes,
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

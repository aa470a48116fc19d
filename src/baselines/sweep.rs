//! Running a sweep: every run of the grid on the same splits, exported through the same
//! fold → stage → verification gate path as `semu unlearn`, then evaluated with the SalUn / SEMU
//! protocol. Each finished run is cached in `OUT/runs/<key>/` (`result.json`, and the verified
//! `model.onnx`), the key hashing the run's configuration with the inputs' SHA-256, the device
//! and the evaluation options, so a restarted sweep skips what it already did.
use super::run;
use super::spec::{RunConfig, SweepSpec};
use crate::data::{self, Dataset};
use crate::engine::{device_name, parse_device};
use crate::error::{Error, Result};
use crate::eval::{self, EvalData, EvalOptions, Evaluation};
use crate::export::{changed_elements, weight_replacements};
use crate::onnx::OnnxModel;
use crate::report::sha256_file;
use crate::semu::quantized::{lift, Lifted};
use crate::semu::unlearn::Quiet;
use crate::task::{Model, Spec};
use crate::verify::gate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tch::Device;

/// The protocol's numbers for one model, in percent (what the tables need).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scores {
    #[serde(rename = "UA")]
    pub ua: f64,
    #[serde(rename = "RA")]
    pub ra: f64,
    #[serde(rename = "TA")]
    pub ta: f64,
    #[serde(rename = "MIA")]
    pub mia: f64,
    pub forget_class_test_accuracy: Option<f64>,
    pub test_accuracy_all: f64,
}

impl Scores {
    fn of(e: &Evaluation) -> Self {
        let m = &e.metrics;
        Scores {
            ua: m.ua,
            ra: m.ra,
            ta: m.ta,
            mia: m.mia,
            forget_class_test_accuracy: e.forget_class_test_accuracy,
            test_accuracy_all: e.test_accuracy_all,
        }
    }

    /// Avg. Gap: mean |Δ| over UA, RA, TA and MIA.
    pub fn gap(&self, reference: &Scores) -> f64 {
        let m = |s: &Scores| eval::Metrics { ua: s.ua, ra: s.ra, ta: s.ta, mia: s.mia };
        eval::avg_gap(&m(self), &m(reference))
    }
}

/// One finished run, as cached in `runs/<key>/result.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub key: String,
    pub config: RunConfig,
    pub scores: Scores,
    /// The full evaluation (MIA per feature, sample counts…).
    pub evaluation: serde_json::Value,
    /// Elements whose value differs in the export (SEMU's low-rank update touches every
    /// element of an adapted weight, so this is not the paper's measure; see `trained_share`).
    pub changed_parameters: i64,
    pub total_parameters: i64,
    /// changed_parameters / total_parameters.
    pub changed_share: f64,
    /// Parameters the method trains: Σ k² for SEMU, the mask for SalUn, every trainable weight
    /// otherwise (the paper's "share of parameters").
    pub trainable_parameters: i64,
    /// trainable_parameters / total_parameters.
    pub trained_share: f64,
    pub wall_seconds: f64,
    pub epochs_run: usize,
    /// SEMU with `lr = "auto"`: the rate chosen and why.
    #[serde(default)]
    pub lr_choice: Option<crate::semu::auto::LrChoice>,
    pub verified: bool,
    /// Why the gate failed, when it did.
    pub verification_failure: Option<String>,
    /// The verified export, relative to the sweep's folder (absent when the gate failed).
    pub model: Option<PathBuf>,
}

/// The retrained model every run is compared with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reference {
    /// "retrained model PATH" or "retrain run KEY".
    pub source: String,
    pub scores: Scores,
}

/// A run that ended in an error (a diverged gradient ascent, say); not cached, so a restarted
/// sweep tries it again.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FailedRun {
    pub key: String,
    pub config: RunConfig,
    pub error: String,
}

/// What [`run_sweep`] hands back: the reference, one result per finished run (grid order) and
/// the runs that failed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepResult {
    pub reference: Reference,
    pub runs: Vec<RunResult>,
    pub failed: Vec<FailedRun>,
}

/// Progress of a sweep, one event per run start and end (the reference run has index 0).
pub enum Progress<'a> {
    Start {
        index: usize,
        total: usize,
        run: &'a RunConfig,
    },
    Done {
        index: usize,
        total: usize,
        result: &'a RunResult,
        cached: bool,
    },
    /// The reference is known (before the first grid run starts).
    Reference(&'a Reference),
    Failed {
        index: usize,
        total: usize,
        failure: &'a FailedRun,
    },
}

struct Inputs {
    model: OnnxModel,
    /// A quantized model's float working copy: runs train on it and their exports are
    /// re-quantized with the file's scales, as `semu unlearn` does.
    lifted: Option<Lifted>,
    forget: Box<dyn Dataset>,
    retain: Box<dyn Dataset>,
    test: Box<dyn Dataset>,
    device: Device,
    opts: EvalOptions,
    /// Hashed into every run's key with its configuration.
    identity: serde_json::Value,
}

impl Inputs {
    fn open(spec: &SweepSpec) -> Result<Self> {
        let device = parse_device(&spec.device)?;
        let forget_classes = (!spec.forget_class.is_empty()).then(|| spec.forget_class.clone());
        let opts = EvalOptions { forget_classes, seed: spec.seed, batch_size: 256 };
        let identity = serde_json::json!({
            "semu_version": env!("CARGO_PKG_VERSION"),
            "model": sha256_file(&spec.model)?,
            "forget": sha256_file(&spec.forget)?,
            "retain": sha256_file(&spec.retain)?,
            "test": sha256_file(&spec.test)?,
            "device": device_name(device),
            "forget_class": spec.forget_class,
            "eval_seed": spec.seed,
            "names": [spec.input_name, spec.output_name],
        });
        let model = OnnxModel::load(&spec.model)?;
        // Text data is tokenized with the tokenizer.json beside the model.
        let read = data::DataSpec { text: data::text::TextOptions::beside_model(&model), ..Default::default() };
        Ok(Inputs {
            lifted: lift(&model)?,
            forget: data::open_with(&spec.forget, &read)?,
            retain: data::open_with(&spec.retain, &read)?,
            test: data::open_with(&spec.test, &read)?,
            model,
            device,
            opts,
            identity,
        })
    }

    fn data(&self) -> EvalData<'_> {
        EvalData { forget: self.forget.as_ref(), retain: self.retain.as_ref(), test: self.test.as_ref() }
    }

    fn key(&self, run: &RunConfig) -> String {
        let mut h = Sha256::new();
        h.update(self.identity.to_string());
        h.update(run.canonical());
        h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

/// Runs every run of `spec` not already cached (and the reference retrain when no retrained
/// model is given); writes nothing but the cache: the tables come from [`super::table`].
pub fn run_sweep(spec: &SweepSpec, progress: &mut dyn FnMut(Progress)) -> Result<SweepResult> {
    let runs = spec.runs()?;
    let inputs = Inputs::open(spec)?;
    let names =
        Spec { task: None, input: spec.input_name.clone(), output: spec.output_name.clone(), ..Default::default() };
    let total = runs.len();
    let reference = match &spec.retrained {
        Some(p) => {
            let m = OnnxModel::load(p)?;
            let net = Model::new(&m, inputs.device, HashSet::new(), &names)?;
            let e = eval::evaluate(&net, &HashMap::new(), inputs.data(), &inputs.opts)
                .map_err(|e| Error::msg(format!("evaluating the retrained model {}: {e}", p.display())))?;
            Reference { source: format!("retrained model {}", p.display()), scores: Scores::of(&e) }
        }
        None => {
            let r = spec.reference_run();
            progress(Progress::Start { index: 0, total, run: &r });
            let (res, cached) = run_cached(spec, &inputs, &r)
                .map_err(|e| Error::msg(format!("the reference run ({}) failed: {e}", r.label())))?;
            progress(Progress::Done { index: 0, total, result: &res, cached });
            Reference { source: format!("retrain run {}", res.key), scores: res.scores }
        }
    };
    progress(Progress::Reference(&reference));
    let (mut results, mut failed) = (Vec::with_capacity(total), Vec::new());
    for (i, r) in runs.iter().enumerate() {
        progress(Progress::Start { index: i + 1, total, run: r });
        match run_cached(spec, &inputs, r) {
            Ok((res, cached)) => {
                progress(Progress::Done { index: i + 1, total, result: &res, cached });
                results.push(res);
            }
            Err(e) => {
                let failure = FailedRun { key: inputs.key(r), config: r.clone(), error: e.to_string() };
                progress(Progress::Failed { index: i + 1, total, failure: &failure });
                failed.push(failure);
            }
        }
    }
    Ok(SweepResult { reference, runs: results, failed })
}

/// The cached result of `run` when there is one, else runs it and caches it.
fn run_cached(spec: &SweepSpec, inputs: &Inputs, run: &RunConfig) -> Result<(RunResult, bool)> {
    let key = inputs.key(run);
    let dir = spec.out.join("runs").join(&key);
    let file = dir.join("result.json");
    if let Ok(text) = std::fs::read_to_string(&file) {
        // An unreadable or foreign result is redone rather than trusted.
        if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
            if r.key == key {
                return Ok((r, true));
            }
        }
    }
    let res = execute(spec, inputs, run, key, &dir)?;
    let json = serde_json::to_string_pretty(&res).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&file, json.as_bytes())?;
    Ok((res, false))
}

fn execute(spec: &SweepSpec, inputs: &Inputs, rc: &RunConfig, key: String, dir: &Path) -> Result<RunResult> {
    tch::manual_seed(rc.semu.seed as i64);
    let retain = rc.remaining.then_some(inputs.retain.as_ref());
    let names =
        Spec { task: None, input: spec.input_name.clone(), output: spec.output_name.clone(), ..Default::default() };
    let o = run(
        inputs.lifted.as_ref().map_or(&inputs.model, |l| &l.model),
        inputs.forget.as_ref(),
        retain,
        Some(inputs.test.as_ref()),
        rc.method,
        &rc.semu,
        &rc.baseline,
        inputs.device,
        &names,
        &mut Quiet,
    )
    .map_err(|e| Error::msg(format!("{}: {e}", rc.label())))?;
    let replacements = match &inputs.lifted {
        Some(l) => weight_replacements(&inputs.model, &l.requantize(&o.weights.formed_all()?)?.0)?,
        None => weight_replacements(&inputs.model, o.overrides())?,
    };
    let (changed, total) = changed_elements(&inputs.model, &replacements)?;
    let out = dir.join("model.onnx");
    let staged = inputs.model.stage(&out, &replacements)?;
    let sets: [(&str, &dyn Dataset); 2] = [("forget", inputs.forget.as_ref()), ("test", inputs.test.as_ref())];
    let probes = gate::probes(&o.net, o.overrides(), &sets)?;
    let tol = gate::tolerance_for(&probes[0].expected);
    let input = Some(inputs.model.path.as_path());
    let report = gate::check_with(&staged.model_path(), input, &o.net.output, &probes, tol, &mut |_, _| {})?;
    let model = if report.passed {
        staged.commit()?;
        Some(PathBuf::from("runs").join(&key).join("model.onnx"))
    } else {
        None
    };
    let e = eval::evaluate(&o.net, o.overrides(), inputs.data(), &inputs.opts)?;
    Ok(RunResult {
        key,
        config: rc.clone(),
        scores: Scores::of(&e),
        evaluation: serde_json::to_value(&e).map_err(|e| Error::msg(e.to_string()))?,
        changed_parameters: changed,
        total_parameters: total,
        changed_share: changed as f64 / total.max(1) as f64,
        trainable_parameters: o.trainable,
        trained_share: o.trainable as f64 / total.max(1) as f64,
        wall_seconds: o.wall_seconds,
        epochs_run: o.epochs.len(),
        lr_choice: o.lr_choice.clone(),
        verified: report.passed,
        verification_failure: report.failure(),
        model,
    })
}

/// Writes a file through a temporary file in the same folder, then renames it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = crate::paths::folder_of(path);
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    std::io::Write::write_all(&mut tmp, bytes).map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

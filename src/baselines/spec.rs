//! What a sweep runs: data, output folder and a grid (methods × γ × lr × with/without remaining
//! data), read from TOML or assembled from command-line flags, expanded into one [`RunConfig`]
//! per run. Relative paths in a TOML file are relative to the file's folder.
//!
//! ```toml
//! model = "model.onnx"
//! forget = "forget_class3.npz"
//! retain = "retain_class3.npz"      # D_r: evaluation always uses it; methods only when asked
//! test = "test.npz"
//! out = "sweep-class3"
//! # retrained = "retrain.onnx"      # else the sweep trains the reference with `retrain`
//! [defaults]                        # any setting below, for every run
//! epochs = 10
//! [reference]                       # settings of the retrain reference
//! epochs = 40
//! [[grid]]
//! methods = ["semu"]
//! gamma = [0.6, 0.9]
//! lr = [1e-3, 1e-2]
//! remaining = [false, true]
//! set = { alpha = 1.0 }            # settings for this block only
//! ```
use super::{BaselineSettings, Method, Schedule};
use crate::error::{Error, Result};
use crate::semu::optim::OptimizerKind;
use crate::semu::{Lr, Parity, SemuConfig};
use crate::task::Objective;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Settings a sweep may fix; unset ones keep their defaults (SEMU's, the baselines').
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub epochs: Option<usize>,
    pub lr: Option<Lr>,
    pub gamma: Option<f64>,
    /// SEMU's forget objective (the baselines' follow from their method).
    pub objective: Option<Objective>,
    pub kl_weight: Option<f64>,
    pub stop_at_target: Option<bool>,
    pub batch_size: Option<usize>,
    pub optimizer: Option<OptimizerKind>,
    pub momentum: Option<f64>,
    pub weight_decay: Option<f64>,
    pub alpha: Option<f64>,
    pub projection: Option<bool>,
    pub parity: Option<Parity>,
    pub early_exit: Option<bool>,
    pub mask_ratio: Option<f64>,
    pub l1: Option<f64>,
    pub schedule: Option<Schedule>,
    pub seed: Option<u64>,
}

impl Settings {
    pub fn apply(&self, c: &mut SemuConfig, b: &mut BaselineSettings) {
        macro_rules! set {
            ($dst:expr, $v:expr) => {
                if let Some(v) = $v.clone() {
                    $dst = v;
                }
            };
        }
        set!(c.epochs, self.epochs);
        set!(c.lr, self.lr);
        set!(c.gamma, self.gamma);
        set!(c.objective, self.objective);
        set!(c.kl_weight, self.kl_weight);
        set!(c.stop_at_target, self.stop_at_target);
        set!(c.batch_size, self.batch_size);
        set!(c.optimizer, self.optimizer);
        set!(c.momentum, self.momentum);
        set!(c.weight_decay, self.weight_decay);
        set!(c.alpha, self.alpha);
        set!(c.projection, self.projection);
        set!(c.parity, self.parity);
        set!(c.early_exit, self.early_exit);
        set!(c.seed, self.seed);
        set!(b.mask_ratio, self.mask_ratio);
        set!(b.l1, self.l1);
        if self.schedule.is_some() {
            b.schedule = self.schedule;
        }
    }
}

/// One block of the grid: its methods × γ (SEMU only) × lr × remaining-data modes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Grid {
    pub methods: Vec<Method>,
    /// Empty: the settings' γ.
    pub gamma: Vec<f64>,
    /// Empty: the settings' lr. Numbers or "auto".
    pub lr: Vec<Lr>,
    /// SEMU's forget objectives (empty: the settings' objective).
    pub objective: Vec<Objective>,
    /// With (true) / without (false) remaining data; empty: every mode the method supports.
    /// Modes a method cannot run in are skipped (ft needs D_r, ga never uses it).
    pub remaining: Vec<bool>,
    pub set: Settings,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSpec {
    pub model: PathBuf,
    pub forget: PathBuf,
    pub retain: PathBuf,
    pub test: PathBuf,
    pub out: PathBuf,
    #[serde(default)]
    pub retrained: Option<PathBuf>,
    /// Class forgetting: the forgotten classes (default: D_f's class when it is one D_r lacks).
    #[serde(default)]
    pub forget_class: Vec<i64>,
    #[serde(default = "auto")]
    pub device: String,
    /// Seeds the MIA's choice of member samples.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub input_name: Option<String>,
    #[serde(default)]
    pub output_name: Option<String>,
    #[serde(default)]
    pub defaults: Settings,
    #[serde(default)]
    pub reference: Settings,
    #[serde(default)]
    pub grid: Vec<Grid>,
}

fn auto() -> String {
    "auto".into()
}

/// Everything one run depends on (hashed for the cache): settings that do not apply to the
/// method are reset to their defaults, so they cannot split the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    pub method: Method,
    /// Whether the method saw D_r.
    pub remaining: bool,
    pub semu: SemuConfig,
    pub baseline: BaselineSettings,
}

impl RunConfig {
    pub fn new(method: Method, remaining: bool, mut semu: SemuConfig, mut baseline: BaselineSettings) -> Self {
        let d = SemuConfig::default();
        if method != Method::Semu {
            (semu.gamma, semu.projection, semu.parity, semu.layers) = (d.gamma, d.projection, d.parity, d.layers);
            semu.early_exit = false;
            semu.objective = d.objective;
        }
        if method != Method::Npo && !(method == Method::Semu && semu.objective == crate::task::Objective::Npo) {
            semu.npo_beta = d.npo_beta;
        }
        if !(remaining && matches!(method, Method::Semu | Method::Rl | Method::Salun | Method::GradDiff | Method::Npo))
        {
            semu.alpha = 0.0;
        }
        let b = BaselineSettings::default();
        if method != Method::Salun {
            baseline.mask_ratio = b.mask_ratio;
        }
        if method != Method::L1 {
            baseline.l1 = b.l1;
        }
        baseline.schedule = (method != Method::Semu).then(|| baseline.schedule_for(method));
        RunConfig { method, remaining, semu, baseline }
    }

    /// The configuration as compact JSON (field order fixed by the types): equality and hashing.
    pub fn canonical(&self) -> String {
        serde_json::to_string(self).expect("plain data serialises")
    }

    /// `semu γ=0.90 lr=1e-3 +D_r`: one line for progress and tables.
    pub fn label(&self) -> String {
        let gamma = if self.method == Method::Semu { format!(" γ={:.2}", self.semu.gamma) } else { String::new() };
        let dr = if self.remaining { " +D_r" } else { "" };
        let objective = if self.method == Method::Semu && self.semu.objective != Objective::Rl {
            format!(" {}", self.semu.objective.name())
        } else {
            String::new()
        };
        format!("{}{objective}{gamma} lr={}{dr}", self.method.name(), self.semu.lr)
    }
}

impl SweepSpec {
    /// Reads a TOML sweep; relative paths become relative to the file's folder.
    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut spec: SweepSpec =
            toml::from_str(&text).map_err(|e| Error::msg(crate::error::toml_problem(path, &text, &e)))?;
        let base = path.parent().unwrap_or(Path::new(""));
        for p in [&mut spec.model, &mut spec.forget, &mut spec.retain, &mut spec.test, &mut spec.out] {
            *p = base.join(&*p);
        }
        if let Some(r) = &mut spec.retrained {
            *r = base.join(&*r);
        }
        Ok(spec)
    }

    /// The base settings: SEMU's and the baselines' defaults under `[defaults]`.
    fn base(&self) -> (SemuConfig, BaselineSettings) {
        let (mut c, mut b) = (SemuConfig::default(), BaselineSettings::default());
        self.defaults.apply(&mut c, &mut b);
        (c, b)
    }

    /// Every run of the grid, in order, without duplicates.
    pub fn runs(&self) -> Result<Vec<RunConfig>> {
        if self.grid.is_empty() || self.grid.iter().any(|g| g.methods.is_empty()) {
            return Err(Error::msg("the sweep's grid is empty: give at least one method ([[grid]] methods = […])"));
        }
        let mut out: Vec<RunConfig> = Vec::new();
        for g in &self.grid {
            let (mut c, mut b) = self.base();
            g.set.apply(&mut c, &mut b);
            for &m in &g.methods {
                let modes: Vec<bool> = if g.remaining.is_empty() {
                    m.retain_modes().to_vec()
                } else {
                    g.remaining.iter().copied().filter(|r| m.retain_modes().contains(r)).collect()
                };
                let gammas = if m == Method::Semu && !g.gamma.is_empty() { g.gamma.clone() } else { vec![c.gamma] };
                let lrs = if g.lr.is_empty() { vec![c.lr] } else { g.lr.clone() };
                let objectives =
                    if m == Method::Semu && !g.objective.is_empty() { g.objective.clone() } else { vec![c.objective] };
                for &remaining in &modes {
                    for (&gamma, &lr, &objective) in iproduct(&gammas, &lrs, &objectives) {
                        let semu = SemuConfig { gamma, lr, objective, ..c.clone() };
                        semu.validate()?;
                        let run = RunConfig::new(m, remaining, semu, b.clone());
                        if !out.iter().any(|o| o.canonical() == run.canonical()) {
                            out.push(run);
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// The retrain run that serves as the reference when no retrained model is given.
    pub fn reference_run(&self) -> RunConfig {
        let (mut c, mut b) = self.base();
        self.reference.apply(&mut c, &mut b);
        RunConfig::new(Method::Retrain, true, c, b)
    }
}

/// Every (a, b, c) of three lists, a slowest.
fn iproduct<'a, A, B, C>(a: &'a [A], b: &'a [B], c: &'a [C]) -> impl Iterator<Item = (&'a A, &'a B, &'a C)> {
    a.iter().flat_map(move |x| b.iter().flat_map(move |y| c.iter().map(move |z| (x, y, z))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_expands_per_method_modes_and_skips_duplicates() {
        let spec: SweepSpec = toml::from_str(
            r#"
            model = "m.onnx"
            forget = "f.npz"
            retain = "r.npz"
            test = "t.npz"
            out = "o"
            [defaults]
            epochs = 3
            [[grid]]
            methods = ["semu", "ga", "ft"]
            gamma = [0.6, 0.9]
            lr = [0.001, 0.01]
            [[grid]]
            methods = ["ga"]
            lr = [0.01]
            set = { epochs = 3 }
            "#,
        )
        .unwrap();
        let runs = spec.runs().unwrap();
        // semu: 2 modes × 2 γ × 2 lr; ga: without D_r × 2 lr; ft: with D_r × 2 lr; the last
        // block repeats a ga run.
        assert_eq!(runs.len(), 8 + 2 + 2);
        assert!(runs.iter().all(|r| r.semu.epochs == 3));
        assert!(runs.iter().filter(|r| r.method == Method::Ga).all(|r| !r.remaining && r.semu.alpha == 0.0));
        assert!(runs.iter().filter(|r| r.method == Method::Ft).all(|r| r.remaining));
        assert_eq!(spec.reference_run().baseline.schedule, Some(Schedule::Cosine));
        assert!(toml::from_str::<SweepSpec>("model='m'\nforget='f'\nretain='r'\ntest='t'\nout='o'\nbogus=1").is_err());
    }
}

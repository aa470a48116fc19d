//! The verification gate of an export: the written file, run in ONNX Runtime (the gate) and
//! tract (a second opinion), must compute what the engine computed with the adapters, and what
//! the engine computes from the folded file itself. Given the input model, each runtime's rows
//! follow the differential rule ([`super::differential`]): judged against the runtime's own
//! difference from the engine on the input model, measured on the same probes.
//!
//! onnxruntime is the gate: an export it cannot load for lack of a kernel (the CUDA-only
//! contrib ops of its unet optimizer, on its CPU provider) is reported, its engine rows still
//! checked, but it does not pass: nothing independent of the engine computed it.
use super::differential::{InputDeviation, ALLOWANCE_FACTOR};
use super::{compare_tensor, count_non_finite, non_finite_summary, OrtSession, Tolerance, TractSession};
use crate::data::Dataset;
use crate::engine::convert::{dtype_of, from_tensor};
use crate::engine::{Plan, PlanOptions, Registry};
use crate::error::{Error, Result};
use crate::onnx::{OnnxModel, TensorData};
use crate::task::Model;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// A batch to check on: every graph input (ints included, as the graph declares them, on the
/// CPU), with the engine's output for it (adapted model) and, for the differential rule, for
/// the input model (no overrides: R = 0).
pub struct Probe {
    pub name: String,
    pub feeds: Vec<(String, Tensor)>,
    pub expected: Tensor,
    pub input_expected: Option<Tensor>,
}

/// Up to 64 records of each named data set (exactly the declared batch for a fixed-batch
/// graph), with `net`'s output under `overrides`.
pub fn probes(net: &Model, overrides: &HashMap<String, Tensor>, sets: &[(&str, &dyn Dataset)]) -> Result<Vec<Probe>> {
    probes_with(net, net, overrides, sets)
}

/// [`probes`] when the input model differs from `net` by more than the overrides (a quantized
/// model whose scales the fold recomputed): `input_net` gives the input model's outputs.
pub fn probes_with(
    net: &Model,
    input_net: &Model,
    overrides: &HashMap<String, Tensor>,
    sets: &[(&str, &dyn Dataset)],
) -> Result<Vec<Probe>> {
    let _g = tch::no_grad_guard();
    let mut out = Vec::new();
    for (name, ds) in sets.iter().filter(|(_, d)| !d.is_empty()) {
        let n = ds.len();
        let idx: Vec<usize> = match net.fixed_batch {
            Some(fb) => (0..fb as usize).map(|j| j.min(n - 1)).collect(),
            None => (0..n.min(64)).collect(),
        };
        let b = net.records(*ds, &idx)?;
        let expected = net.forward(&b, overrides)?;
        let same = overrides.is_empty() && std::ptr::eq(net, input_net);
        let input_expected = if same { expected.shallow_clone() } else { input_net.forward(&b, &HashMap::new())? };
        let mut feeds: Vec<(String, Tensor)> = net
            .feeds(&b)?
            .into_iter()
            .map(|(k, t)| Ok((k, t.f_to_device(tch::Device::Cpu)?)))
            .collect::<Result<_>>()?;
        feeds.sort_by(|a, b| a.0.cmp(&b.0));
        out.push(Probe { name: name.to_string(), feeds, expected, input_expected: Some(input_expected) });
    }
    Ok(out)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GateRow {
    pub probe: String,
    pub runtime: String,
    pub reference: String,
    pub max_abs: f64,
    pub max_rel: f64,
    /// NaN or ±inf values in the output under test and its reference together: any fails the row.
    pub non_finite: usize,
    pub passed: bool,
    /// The runtime's max abs difference from the engine on the input model (the differential
    /// rule); `None` for the engine's own row, or when the input model was not run.
    pub input_max_abs: Option<f64>,
    /// What the differential rule added to the tolerance's absolute term for this row.
    pub allowance: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GateReport {
    /// The fixed tolerance (each row's `allowance` comes on top).
    pub tolerance: Tolerance,
    pub rows: Vec<GateRow>,
    pub warnings: Vec<String>,
    pub passed: bool,
    /// Each runtime's difference from the engine on the input model (empty when not run).
    pub input_deviation: Vec<InputDeviation>,
    /// The differential rule's factor (`allowance = factor × input max abs`, when beyond the tolerance).
    pub allowance_factor: f64,
    /// Why onnxruntime did not run the export (a missing kernel), when it did not: then nothing
    /// but the engine computed it and `passed` is false whatever the rows say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unverified: Option<String>,
}

impl GateReport {
    /// The first failing row, described for an error message; else why onnxruntime did not
    /// verify the export.
    pub fn failure(&self) -> Option<String> {
        let row = self.rows.iter().find(|r| !r.passed).map(|r| {
            if r.non_finite > 0 {
                return format!(
                    "{} output on the {} probe, or {} it is compared with, holds {} NaN/Inf values: \
the model computes nothing usable (a diverged training? try a lower --lr)",
                    r.runtime, r.probe, r.reference, r.non_finite
                );
            }
            let allowed = match r.input_max_abs {
                Some(d) if r.allowance > 0.0 => format!(
                    " + allowance {:.3e} = {ALLOWANCE_FACTOR} × its max abs {d:.3e} on the input model",
                    r.allowance
                ),
                _ => String::new(),
            };
            format!(
                "{} output on the {} probe differs from {}: max abs {:.3e}, max rel {:.3e} (tolerance {}{allowed})",
                r.runtime, r.probe, r.reference, r.max_abs, r.max_rel, self.tolerance
            )
        });
        row.or_else(|| {
            self.unverified.as_ref().map(|why| {
                format!(
                    "not verified: {why}; only the engine's own rows were checked (--no-verify writes it unverified)"
                )
            })
        })
    }
}

fn data(t: &Tensor) -> Result<TensorData> {
    from_tensor(t, dtype_of(t.kind())?)
}

/// Default tolerance: tight for f32/f64 outputs, loose for half-precision ones.
pub fn tolerance_for(t: &Tensor) -> Tolerance {
    match t.kind() {
        tch::Kind::Half | tch::Kind::BFloat16 => Tolerance::new(1e-2, 1e-2).with_scale_rtol(1e-3),
        _ => Tolerance::new(1e-4, 1e-4).with_scale_rtol(1e-5),
    }
}

/// Checks `model_path` on every probe: ONNX Runtime against the adapted engine's output
/// `output` and against the engine running the file itself; tract against the same (a load
/// failure of tract is a warning, a disagreement fails). Without the input model: the fixed
/// tolerance alone (see [`check_with`]).
pub fn check(model_path: &Path, output: &str, probes: &[Probe], tol: Tolerance) -> Result<GateReport> {
    check_with(model_path, None, output, probes, tol, &mut |_, _| {})
}

/// [`check`] with the differential rule when `input` (the file of the model the probes'
/// `input_expected` came from) is given and every probe has `input_expected`; telling
/// `progress` its steps: the input model measured, the runtimes loaded, each probe run in all.
pub fn check_with(
    model_path: &Path,
    input: Option<&Path>,
    output: &str,
    probes: &[Probe],
    tol: Tolerance,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<GateReport> {
    let steps = 2 + probes.len();
    progress(0, steps);
    let mut warnings = Vec::new();
    let deviations = match input {
        Some(path) if probes.iter().all(|p| p.input_expected.is_some()) => {
            input_deviations(path, output, probes, tol, &mut warnings)?
        }
        _ => Vec::new(),
    };
    warnings.extend(deviations.iter().filter_map(InputDeviation::note));
    // Each runtime's tolerance, allowance and input deviation.
    let judged = |runtime: &str| match deviations.iter().find(|d| d.runtime == runtime) {
        Some(d) => (d.tolerance(tol), d.allowance, Some(d.max_abs)),
        None => (tol, 0.0, None),
    };
    progress(1, steps);
    let model = OnnxModel::load(model_path)?;
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions::default())?;
    let out_idx = plan
        .output_names()
        .iter()
        .position(|o| *o == output)
        .ok_or_else(|| Error::msg(format!("{}: no output '{output}'", model_path.display())))?;
    let (ort, unverified) = match OrtSession::load(model_path, 0) {
        Ok(s) => (Some(s), None),
        Err(Error::NoKernel { path, runtime, provider, op, node }) => {
            // onnxruntime names the op without its domain: the graph has it.
            let domain = model.graph().node.iter().find(|n| n.name() == node).map(|n| n.domain());
            let op = match domain {
                Some(d) if !d.is_empty() && d != "ai.onnx" => format!("{d}::{op}"),
                _ => op,
            };
            let e = Error::NoKernel { path, runtime, provider, op, node };
            warnings.push(format!("{e} (so onnxruntime did not verify the export)"));
            (None, Some(e.to_string()))
        }
        Err(e) => return Err(e),
    };
    let tract = match TractSession::load(model_path) {
        Ok(t) => Some(t),
        Err(e) if e.is_load_failure() => {
            let only = if ort.is_some() { "; only onnxruntime verified it" } else { "" };
            warnings.push(format!("tract could not load the export ({e}){only}"));
            None
        }
        Err(e) => return Err(e.into()),
    };
    progress(2, steps);
    let mut rows = Vec::new();
    for (i, p) in probes.iter().enumerate() {
        let _g = tch::no_grad_guard();
        let engine_feeds: HashMap<String, Tensor> =
            p.feeds.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
        let folded = plan.run(&engine_feeds)?.swap_remove(out_idx);
        let feeds = p.feeds.iter().map(|(n, t)| Ok((n.clone(), data(t)?))).collect::<Result<Vec<_>>>()?;
        let expected = data(&p.expected.f_to_device(tch::Device::Cpu)?)?;
        let folded = data(&folded)?;
        let mut row = |runtime: &str, got: &TensorData, reference: &str, want: &TensorData| {
            let (tol, allowance, input_max_abs) =
                if runtime.starts_with("engine") { (tol, 0.0, None) } else { judged(runtime) };
            let d = compare_tensor(output, got, want, tol);
            // NaN matches NaN in a comparison; for the gate, any is a failure.
            let non_finite = count_non_finite(got) + count_non_finite(want);
            rows.push(GateRow {
                probe: p.name.clone(),
                runtime: runtime.into(),
                reference: reference.into(),
                max_abs: d.max_abs,
                max_rel: d.max_rel,
                non_finite,
                passed: d.passed() && non_finite == 0,
                input_max_abs,
                allowance,
            });
        };
        row("engine (folded file)", &folded, "engine (adapters)", &expected);
        if let Some(ort) = &ort {
            let ort_out = pick(ort.run(&feeds)?, output, model_path)?;
            row("onnxruntime", &ort_out, "engine (adapters)", &expected);
            row("onnxruntime", &ort_out, "engine (folded file)", &folded);
        }
        if let Some(t) = &tract {
            match t.run(&feeds) {
                Ok(outs) => row("tract", &pick(outs, output, model_path)?, "engine (adapters)", &expected),
                Err(e) => warnings.push(format!("tract could not run the export ({e})")),
            }
        }
        progress(3 + i, steps);
    }
    let passed = rows.iter().all(|r| r.passed) && unverified.is_none();
    Ok(GateReport {
        tolerance: tol,
        rows,
        warnings,
        passed,
        input_deviation: deviations,
        allowance_factor: ALLOWANCE_FACTOR,
        unverified,
    })
}

/// Runs the input model in onnxruntime and tract on every probe and measures each against the
/// engine's output for it. A runtime that cannot load or run the input model is left out (a
/// warning for onnxruntime: its rows then keep the fixed tolerance).
fn input_deviations(
    input: &Path,
    output: &str,
    probes: &[Probe],
    tol: Tolerance,
    warnings: &mut Vec<String>,
) -> Result<Vec<InputDeviation>> {
    let mut cases = Vec::with_capacity(probes.len());
    for p in probes {
        let feeds = p.feeds.iter().map(|(n, t)| Ok((n.clone(), data(t)?))).collect::<Result<Vec<_>>>()?;
        let want = p.input_expected.as_ref().expect("checked by the caller").f_to_device(tch::Device::Cpu)?;
        cases.push((feeds, data(&want)?));
    }
    let mut out = Vec::new();
    let ort = OrtSession::load(input, 0).and_then(|s| -> Result<Vec<_>> {
        cases.iter().map(|(f, want)| Ok(compare_tensor(output, &pick(s.run(f)?, output, input)?, want, tol))).collect()
    });
    match ort {
        Ok(diffs) => out.push(InputDeviation::new("onnxruntime", output, &diffs)),
        // The export has the same ops: its refusal is reported once, by the gate.
        Err(Error::NoKernel { .. }) => {}
        Err(e) => warnings.push(format!("onnxruntime could not run the input model ({e}): no differential allowance")),
    }
    // tract: a model it cannot load or run has no tract rows to judge either.
    let tract = TractSession::load(input).map_err(Error::from).and_then(|s| -> Result<Vec<_>> {
        cases.iter().map(|(f, want)| Ok(compare_tensor(output, &pick(s.run(f)?, output, input)?, want, tol))).collect()
    });
    if let Ok(diffs) = tract {
        out.push(InputDeviation::new("tract", output, &diffs));
    }
    Ok(out)
}

/// Refuses folded weights that hold NaN or ±inf, naming each such weight: an export of them
/// could only compute NaN, whatever the runtimes agree on.
pub fn check_finite_weights(weights: &HashMap<String, TensorData>) -> Result<()> {
    match non_finite_summary(weights) {
        None => Ok(()),
        Some(bad) => Err(Error::msg(format!("the folded weights {bad} are not finite"))),
    }
}

fn pick(outs: Vec<(String, TensorData)>, name: &str, path: &Path) -> Result<TensorData> {
    outs.into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .ok_or_else(|| Error::msg(format!("{}: runtime produced no output '{name}'", path.display())))
}

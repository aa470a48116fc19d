//! The verification gate of an export: the written file, run in ONNX Runtime (the gate) and
//! tract (a second opinion), must compute what the engine computed with the adapters, and what
//! the engine computes from the folded file itself. Given the input model, each runtime's rows
//! follow the differential rule ([`super::differential`]): judged against the runtime's own
//! difference from the engine on the input model, measured on the same probes.
//!
//! In a model that quantizes activations, a runtime may also differ on a few samples by a
//! rounding flip; with the engine's own rows exact, those rows are excused by name
//! ([`excuse_rounding_flips`]).
//!
//! onnxruntime is the gate: an export it cannot load for lack of a kernel (the CUDA-only
//! contrib ops of its unet optimizer, on its CPU provider) is reported, its engine rows still
//! checked, but it does not pass: nothing independent of the engine computed it.
use super::differential::{InputDeviation, ALLOWANCE_FACTOR};
use super::{
    compare_tensor, compare_values, count_non_finite, non_finite_summary, values_f64, OrtSession, Tolerance,
    TractSession,
};
use crate::data::Dataset;
use crate::engine::convert::{dtype_of, from_tensor};
use crate::engine::{Overrides, Plan, PlanOptions, Registry};
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
pub fn probes(net: &Model, overrides: &dyn Overrides, sets: &[(&str, &dyn Dataset)]) -> Result<Vec<Probe>> {
    probes_with(net, net, overrides, sets)
}

/// [`probes`] when the input model differs from `net` by more than the overrides (a quantized
/// model whose scales the fold recomputed): `input_net` gives the input model's outputs.
pub fn probes_with(
    net: &Model,
    input_net: &Model,
    overrides: &dyn Overrides,
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
        let same = overrides.names().is_empty() && std::ptr::eq(net, input_net);
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
    /// Samples (rows of the output's first axis) beyond the tolerance, of `samples`.
    pub samples_beyond: usize,
    pub samples: usize,
    /// A failed runtime row of a model that quantizes activations, where few samples differ:
    /// rounding flips, not a wrong export (see [`excuse_rounding_flips`]).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub excused: bool,
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
        let row = self.rows.iter().find(|r| !r.passed && !r.excused).map(|r| {
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
    // Four steps: the input model's deviations, then the export in the engine, onnxruntime and
    // tract, one at a time, each dropped before the next loads it: a large model's three copies
    // are never in memory together.
    let steps = 4;
    progress(0, steps);
    let mut warnings = Vec::new();
    let deviations = match input {
        Some(path) if probes.iter().all(|p| p.input_expected.is_some()) => {
            input_deviations(path, output, &input_cases(probes)?, tol, &mut warnings)
        }
        _ => Vec::new(),
    };
    warnings.extend(deviations.iter().filter_map(InputDeviation::note));
    progress(1, steps);
    let model = OnnxModel::load(model_path)?;
    let cases = engine_cases(&model, model_path, output, probes)?;
    crate::engine::memory::release_freed();
    progress(2, steps);
    let mut by_ort = Vec::new();
    let unverified = match OrtSession::load(model_path, 0) {
        Ok(ort) => {
            for c in &cases {
                by_ort.push(pick(ort.run(&c.feeds)?, output, model_path)?);
            }
            None
        }
        Err(Error::NoKernel { path, runtime, provider, op, node }) => {
            // onnxruntime names the op without its domain: the graph has it.
            let domain = model.graph().node.iter().find(|n| n.name() == node).map(|n| n.domain());
            let op = match domain {
                Some(d) if !d.is_empty() && d != "ai.onnx" => format!("{d}::{op}"),
                _ => op,
            };
            let e = Error::NoKernel { path, runtime, provider, op, node };
            warnings.push(format!("{e} (so onnxruntime did not verify the export)"));
            Some(e.to_string())
        }
        Err(e) => return Err(e),
    };
    crate::engine::memory::release_freed();
    progress(3, steps);
    let mut by_tract: Vec<Option<TensorData>> = Vec::new();
    match TractSession::load(model_path) {
        Ok(t) => {
            for c in &cases {
                by_tract.push(match t.run(&c.feeds) {
                    Ok(outs) => Some(pick(outs, output, model_path)?),
                    Err(e) => {
                        warnings.push(format!("tract could not run the export ({e})"));
                        None
                    }
                });
            }
        }
        Err(e) if e.is_load_failure() => {
            let only = if unverified.is_none() { "; only onnxruntime verified it" } else { "" };
            warnings.push(format!("tract could not load the export ({e}){only}"));
        }
        Err(e) => return Err(e.into()),
    }
    crate::engine::memory::release_freed();
    progress(4, steps);
    let mut rows = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        rows.push(case.row(output, "engine (folded file)", &case.folded, false, judged(&[], "", tol)));
        if let Some(got) = by_ort.get(i) {
            rows.extend(case.runtime_rows(output, "onnxruntime", got, judged(&deviations, "onnxruntime", tol)));
        }
        if let Some(Some(got)) = by_tract.get(i) {
            rows.push(case.row(output, "tract", got, false, judged(&deviations, "tract", tol)));
        }
    }
    if quantizes_activations(&model) {
        excuse_rounding_flips(&mut rows, &mut warnings);
    }
    let passed = rows.iter().all(|r| r.passed || r.excused) && unverified.is_none();
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

/// Every probe in runtime form, with the engine's output on the folded file beside the adapters'
/// (the engine's plan of the file is dropped on return).
fn engine_cases(model: &OnnxModel, model_path: &Path, output: &str, probes: &[Probe]) -> Result<Vec<Case>> {
    let plan = Plan::new(model, &Registry::standard(), &PlanOptions::default())?;
    let out_idx = plan
        .output_names()
        .iter()
        .position(|o| *o == output)
        .ok_or_else(|| Error::msg(format!("{}: no output '{output}'", model_path.display())))?;
    let _g = tch::no_grad_guard();
    probes
        .iter()
        .map(|p| {
            let engine_feeds: HashMap<String, Tensor> =
                p.feeds.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect();
            let folded = plan.run(&engine_feeds)?.swap_remove(out_idx);
            Ok(Case {
                probe: p.name.clone(),
                feeds: p.feeds.iter().map(|(n, t)| Ok((n.clone(), data(t)?))).collect::<Result<Vec<_>>>()?,
                expected: data(&p.expected.f_to_device(tch::Device::Cpu)?)?,
                folded: data(&folded)?,
            })
        })
        .collect()
}

/// How one runtime's rows are judged: its tolerance, the differential allowance in it, and its
/// deviation on the input model.
#[derive(Clone, Copy)]
struct Judged {
    tol: Tolerance,
    allowance: f64,
    input_max_abs: Option<f64>,
}

fn judged(deviations: &[InputDeviation], runtime: &str, tol: Tolerance) -> Judged {
    match deviations.iter().find(|d| d.runtime == runtime) {
        Some(d) => Judged { tol: d.tolerance(tol), allowance: d.allowance, input_max_abs: Some(d.max_abs) },
        None => Judged { tol, allowance: 0.0, input_max_abs: None },
    }
}

/// One probe in runtime form, with the engine's outputs on it (adapters, folded file).
struct Case {
    probe: String,
    feeds: Feeds,
    expected: TensorData,
    folded: TensorData,
}

impl Case {
    fn row(&self, output: &str, runtime: &str, got: &TensorData, on_folded: bool, j: Judged) -> GateRow {
        let (want, reference) =
            if on_folded { (&self.folded, "engine (folded file)") } else { (&self.expected, "engine (adapters)") };
        let d = compare_tensor(output, got, want, j.tol);
        // NaN matches NaN in a comparison; for the gate, any is a failure.
        let non_finite = count_non_finite(got) + count_non_finite(want);
        let (samples_beyond, samples) = if d.passed() {
            (0, got.dims.first().map_or(1, |&n| n as usize))
        } else {
            samples_beyond(output, got, want, j.tol)
        };
        GateRow {
            probe: self.probe.clone(),
            runtime: runtime.into(),
            reference: reference.into(),
            max_abs: d.max_abs,
            max_rel: d.max_rel,
            non_finite,
            passed: d.passed() && non_finite == 0,
            input_max_abs: j.input_max_abs,
            allowance: j.allowance,
            samples_beyond,
            samples,
            excused: false,
        }
    }

    /// An onnxruntime session's rows: against the engine with adapters and on the folded file.
    fn runtime_rows(&self, output: &str, runtime: &str, got: &TensorData, j: Judged) -> [GateRow; 2] {
        [self.row(output, runtime, got, false, j), self.row(output, runtime, got, true, j)]
    }
}

/// How many samples (rows of the first axis) of `got` differ from `want` beyond `tol`, of how
/// many; an output without a first axis, or of another shape, counts as one sample, all off.
fn samples_beyond(output: &str, got: &TensorData, want: &TensorData, tol: Tolerance) -> (usize, usize) {
    let (Ok(a), Ok(b)) = (values_f64(got), values_f64(want)) else { return (1, 1) };
    let n = got.dims.first().copied().unwrap_or(1).max(1) as usize;
    if got.dims != want.dims || a.len() % n != 0 {
        return (1, 1);
    }
    let per = a.len() / n;
    let beyond = (0..n)
        .filter(|&i| {
            let r = i * per..(i + 1) * per;
            !compare_values(output, got.dims[1..].to_vec(), &a[r.clone()], &b[r], tol).passed()
        })
        .count();
    (beyond, n)
}

/// Whether the graph quantizes activations (QuantizeLinear, DynamicQuantizeLinear, QLinear*):
/// then its outputs jump by a quantization step wherever a value lands on the other side of a
/// rounding boundary, and two float implementations that differ in the last bit can disagree
/// by that step on a sample.
fn quantizes_activations(model: &OnnxModel) -> bool {
    let ops = ["QuantizeLinear", "DynamicQuantizeLinear"];
    model.graph().node.iter().any(|n| ops.contains(&n.op_type()) || n.op_type().starts_with("QLinear"))
}

/// At most this share of a probe's samples may differ by a rounding flip (so a probe of fewer
/// than 20 samples, a scalar output or a shape mismatch never passes by it).
pub const FLIP_SHARE: f64 = 0.05;

/// A runtime row of a model that quantizes activations fails on few samples: with the engine
/// computing the file exactly as with the adapters (its own row, which keeps the fixed
/// tolerance), a runtime that differs on 1 sample of 64 rounded one activation the other way
/// (seen: onnxruntime's float Conv between QDQ pairs summing in another order on a VNNI CPU,
/// 0.128 on one sample's logits, on the export only), while a runtime that reads the file
/// differently differs on most samples. Such rows are excused and named in a warning; a
/// non-finite value, or more samples than [`FLIP_SHARE`], still fails.
fn excuse_rounding_flips(rows: &mut [GateRow], warnings: &mut Vec<String>) {
    let engine_ok = rows.iter().filter(|r| r.runtime.starts_with("engine")).all(|r| r.passed);
    for r in rows.iter_mut().filter(|r| engine_ok && !r.passed && r.non_finite == 0 && !r.runtime.starts_with("engine"))
    {
        let allowed = (r.samples as f64 * FLIP_SHARE).floor() as usize;
        if r.samples_beyond > 0 && r.samples_beyond <= allowed {
            r.excused = true;
            warnings.push(format!(
                "{} on the {} probe differs from {} on {} of {} samples (max abs {:.3e}), the rest within tolerance: \
the model quantizes activations, and a value that lands on the other side of a rounding boundary moves a sample by \
a quantization step; up to {allowed} such samples are allowed ({} of each probe)",
                r.runtime, r.probe, r.reference, r.samples_beyond, r.samples, r.max_abs, FLIP_SHARE
            ));
        }
    }
}

/// A probe's feeds in runtime form.
type Feeds = Vec<(String, TensorData)>;

/// A probe's feeds with the engine's output on the input model.
type InputCase = (Feeds, TensorData);

fn input_cases(probes: &[Probe]) -> Result<Vec<InputCase>> {
    let mut cases = Vec::with_capacity(probes.len());
    for p in probes {
        let feeds = p.feeds.iter().map(|(n, t)| Ok((n.clone(), data(t)?))).collect::<Result<Vec<_>>>()?;
        let want = p.input_expected.as_ref().expect("checked by the caller").f_to_device(tch::Device::Cpu)?;
        cases.push((feeds, data(&want)?));
    }
    Ok(cases)
}

/// One runtime's difference from the engine on the input model, over every probe.
fn deviation_of(
    runtime: &str,
    output: &str,
    cases: &[InputCase],
    tol: Tolerance,
    run: &dyn Fn(&Feeds) -> Result<TensorData>,
) -> Result<InputDeviation> {
    let diffs =
        cases.iter().map(|(f, want)| Ok(compare_tensor(output, &run(f)?, want, tol))).collect::<Result<Vec<_>>>()?;
    Ok(InputDeviation::new(runtime, output, &diffs))
}

/// Runs the input model in onnxruntime and tract on every probe and measures each against the
/// engine's output for it. A runtime that cannot load or run the input model is left out (a
/// warning for onnxruntime: its rows then keep the fixed tolerance).
fn input_deviations(
    input: &Path,
    output: &str,
    cases: &[InputCase],
    tol: Tolerance,
    warnings: &mut Vec<String>,
) -> Vec<InputDeviation> {
    let mut out = Vec::new();
    let ort = OrtSession::load(input, 0)
        .and_then(|s| deviation_of("onnxruntime", output, cases, tol, &|f| pick(s.run(f)?, output, input)));
    match ort {
        Ok(d) => out.push(d),
        // The export has the same ops: its refusal is reported once, by the gate.
        Err(Error::NoKernel { .. }) => {}
        Err(e) => warnings.push(format!("onnxruntime could not run the input model ({e}): no differential allowance")),
    }
    crate::engine::memory::release_freed();
    // tract: a model it cannot load or run has no tract rows to judge either.
    let tract = TractSession::load(input)
        .map_err(Error::from)
        .and_then(|s| deviation_of("tract", output, cases, tol, &|f| pick(s.run(f)?, output, input)));
    if let Ok(d) = tract {
        out.push(d);
    }
    crate::engine::memory::release_freed();
    out
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::DType;

    fn f32s(rows: usize, v: impl Fn(usize) -> f32) -> TensorData {
        let bytes = (0..rows * 10).flat_map(|i| v(i).to_le_bytes()).collect();
        TensorData { dtype: DType::F32, dims: vec![rows as i64, 10], bytes }
    }

    fn case(rows: usize) -> Case {
        let want = f32s(rows, |i| i as f32 * 0.01);
        Case { probe: "test".into(), feeds: vec![], expected: want.clone(), folded: want }
    }

    fn judged_rows(c: &Case, got: &TensorData) -> Vec<GateRow> {
        let j = Judged { tol: Tolerance::new(1e-4, 1e-4), allowance: 0.0, input_max_abs: None };
        let mut rows = vec![c.row("y", "engine (folded file)", &c.folded, false, j)];
        rows.extend(c.runtime_rows("y", "onnxruntime", got, j));
        rows
    }

    #[test]
    fn one_sample_off_by_a_step_is_a_rounding_flip() {
        let c = case(64);
        // Sample 7 moved by 0.128, the other 63 exact.
        let got = f32s(64, |i| i as f32 * 0.01 + if i / 10 == 7 { 0.128 } else { 0.0 });
        let mut rows = judged_rows(&c, &got);
        assert_eq!((rows[1].passed, rows[1].samples_beyond, rows[1].samples), (false, 1, 64));
        let mut warnings = Vec::new();
        excuse_rounding_flips(&mut rows, &mut warnings);
        assert!(rows[1].excused && rows[2].excused && !rows[0].excused);
        assert!(warnings[0].contains("on 1 of 64 samples"), "{warnings:?}");
    }

    #[test]
    fn many_samples_off_or_a_wrong_engine_row_still_fail() {
        let c = case(64);
        // 4 of 64 samples off: more than 5% (3).
        let got = f32s(64, |i| i as f32 * 0.01 + if i / 10 < 4 { 0.128 } else { 0.0 });
        let mut rows = judged_rows(&c, &got);
        excuse_rounding_flips(&mut rows, &mut Vec::new());
        assert!(rows.iter().all(|r| !r.excused));
        // One sample off, but the engine reads the file differently from the adapters.
        let got = f32s(64, |i| i as f32 * 0.01 + if i / 10 == 7 { 0.128 } else { 0.0 });
        let mut rows = judged_rows(&c, &got);
        rows[0].passed = false;
        excuse_rounding_flips(&mut rows, &mut Vec::new());
        assert!(rows.iter().all(|r| !r.excused));
        // The whole output of a batch of one, or of another shape: never a flip.
        let (one, other) = (case(1), f32s(2, |i| i as f32));
        let mut rows = judged_rows(&one, &f32s(1, |i| i as f32 * 0.01 + 0.128));
        rows.extend(judged_rows(&one, &other).into_iter().skip(1));
        excuse_rounding_flips(&mut rows, &mut Vec::new());
        assert!(rows.iter().skip(1).all(|r| !r.passed && !r.excused), "{rows:?}");
        assert_eq!((rows[3].samples_beyond, rows[3].samples), (1, 1));
        // One sample NaN.
        let got = f32s(64, |i| if i == 3 { f32::NAN } else { i as f32 * 0.01 });
        let mut rows = judged_rows(&c, &got);
        excuse_rounding_flips(&mut rows, &mut Vec::new());
        assert!(rows[1].non_finite > 0 && rows.iter().all(|r| !r.excused));
    }
}

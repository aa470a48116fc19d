//! The differential rule of the gate. A runtime may compute a graph differently from the ONNX
//! semantics that the engine follows: onnxruntime fuses QDQ pairs into integer kernels that
//! round once instead of twice, and its int8 kernels accumulate differently (see the README,
//! "Verification"). A fixed tolerance would then refuse every correct export of such a model,
//! so a runtime's difference from the engine on the export is judged against its difference on
//! the *input* model, measured on the same probes.
//!
//! Per runtime and output, `d` = max |runtime(input) − engine(input)| over every probe. When the
//! input's outputs are all within the fixed tolerance (any plain f32 model), nothing changes.
//! Otherwise the runtime's rows on the export are judged with `ALLOWANCE_FACTOR · d` added to
//! the tolerance's absolute term. An infinite `d` (a NaN or ±inf the engine does not have, or a
//! shape mismatch) earns nothing. The engine's own row (the file against the adapters) keeps the
//! fixed tolerance, so a weight changed after folding still fails there at full precision.
use super::{OutputDiff, Tolerance};

/// How many times the runtime's deviation on the input model its rows on the export may add.
/// The export is the input graph with some weight values changed, so the runtime's rounding
/// differs from the engine by about as much as on the input, but not exactly: unlearning moves
/// activations, and with them which products onnxruntime's int16 pairs clip. Measured with
/// onnxruntime 1.31.1 on x86 AVX2, the export's max abs over the input's: 16 randomly perturbed
/// int8 weight sets per model on 64 test images against `onnx.reference`, which the engine
/// matches (`tools/ort_int8_deviation.py --ratios`): 0.75–1.25 (QDQ), 0.94–1.12 (QDQ per
/// channel), 0.63–1.50 (dynamic int8); `semu unlearn` of class 3 with default settings, over the
/// gate's probes: 1.0 (QDQ), 1.06 (QDQ per channel), 1.93 (dynamic int8). 4 is twice the largest.
pub const ALLOWANCE_FACTOR: f64 = 4.0;

/// One runtime's difference from the engine on the input model, over every probe, and the
/// allowance it earns the runtime's rows on the export.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InputDeviation {
    pub runtime: String,
    pub output: String,
    /// max |runtime − engine| on the input model (infinite for an unmatched NaN/inf or shape).
    pub max_abs: f64,
    pub max_rel: f64,
    /// Every probe's output was within the fixed tolerance.
    pub within_tolerance: bool,
    /// Added to the absolute term of the tolerance of this runtime's rows on the export.
    pub allowance: f64,
}

impl InputDeviation {
    /// Folds one output's comparisons on every probe (runtime vs engine, input model).
    pub fn new(runtime: &str, output: &str, diffs: &[OutputDiff]) -> Self {
        let max_abs = diffs.iter().map(|d| d.max_abs).fold(0.0, f64::max);
        let max_rel = diffs.iter().map(|d| d.max_rel).fold(0.0, f64::max);
        let within_tolerance = diffs.iter().all(OutputDiff::passed);
        InputDeviation {
            runtime: runtime.into(),
            output: output.into(),
            max_abs,
            max_rel,
            within_tolerance,
            allowance: allowance(max_abs, within_tolerance),
        }
    }

    /// The tolerance of this runtime's rows on the export.
    pub fn tolerance(&self, fixed: Tolerance) -> Tolerance {
        fixed.with_allowance(self.allowance)
    }

    /// A line saying that (and why) the runtime's rows are judged more loosely; `None` when not.
    pub fn note(&self) -> Option<String> {
        (self.allowance > 0.0).then(|| {
            format!(
                "{} differs from the engine on the input model itself ('{}': max abs {:.3e}, beyond the \
fixed tolerance): its rows on the export are allowed {ALLOWANCE_FACTOR} × that = {:.3e} more (the \
differential rule)",
                self.runtime, self.output, self.max_abs, self.allowance
            )
        })
    }
}

/// `ALLOWANCE_FACTOR · max_abs` when the input model's deviation is beyond the fixed tolerance
/// and finite, else 0.
pub fn allowance(max_abs: f64, within_tolerance: bool) -> f64 {
    if within_tolerance || !max_abs.is_finite() {
        0.0
    } else {
        ALLOWANCE_FACTOR * max_abs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::compare_values;

    fn diff(a: &[f64], b: &[f64], tol: Tolerance) -> OutputDiff {
        compare_values("y", vec![a.len() as i64], a, b, tol)
    }

    #[test]
    fn within_the_fixed_tolerance_nothing_changes() {
        let tol = Tolerance::new(1e-4, 1e-4);
        let d = InputDeviation::new("onnxruntime", "y", &[diff(&[1.0, 2.00001], &[1.0, 2.0], tol)]);
        assert!(d.within_tolerance && d.max_abs > 0.0);
        assert_eq!((d.allowance, d.tolerance(tol)), (0.0, tol));
        assert_eq!(d.note(), None);
    }

    #[test]
    fn beyond_it_the_largest_deviation_over_probes_is_multiplied() {
        assert_eq!(ALLOWANCE_FACTOR, 4.0);
        let tol = Tolerance::new(1e-4, 1e-4);
        let probes = [diff(&[1.25, 2.0], &[1.0, 2.0], tol), diff(&[3.0, -1.125], &[3.0, -1.0], tol)];
        let d = InputDeviation::new("onnxruntime", "y", &probes);
        assert!(!d.within_tolerance);
        assert_eq!((d.max_abs, d.allowance), (0.25, 1.0));
        let wide = d.tolerance(tol);
        assert_eq!(wide.atol, 1e-4 + 1.0);
        // The export's rows: 1.0 more passes, 1.01 more fails (with the fixed terms on top).
        assert!(diff(&[2.0], &[1.0], wide).passed());
        assert!(!diff(&[3.0], &[1.0], wide).passed());
        assert!(d.note().unwrap().contains("1.000e0 more"));
    }

    #[test]
    fn an_unmatched_nan_earns_nothing() {
        let tol = Tolerance::new(1e-4, 1e-4);
        let d = InputDeviation::new("tract", "y", &[diff(&[f64::NAN], &[1.0], tol)]);
        assert!(!d.within_tolerance && d.max_abs.is_infinite());
        assert_eq!(d.allowance, 0.0);
    }
}

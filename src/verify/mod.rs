//! Verification: run a model in independent runtimes (ONNX Runtime, tract) and compare its
//! outputs with a reference. `compare` + `Tolerance` is the gate an exported model must pass.
//!
//! The pass rule, per element, with `a` the value under test and `b` the reference:
//! `|a − b| ≤ atol + rtol·|b| + scale_rtol·max|b|` (numpy's `allclose`, plus a term relative to
//! the output's largest magnitude, so near-zero logits are judged at the output's scale rather
//! than their own). NaN matches only NaN, ±inf only the same infinity. Values of every numeric
//! type are compared as f64, so an f16 output can be checked against an f32 reference.
pub mod differential;
pub mod gate;
pub mod ort;
pub mod tract;

pub use self::ort::OrtSession;
pub use self::tract::{TractError, TractSession};

use crate::error::{Error, Result};
use crate::onnx::{DType, TensorData};
use std::fmt;

/// Denominator floor of the reported relative difference `|a − b| / max(|b|, REL_FLOOR)`.
pub const REL_FLOOR: f64 = 1e-6;

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
    pub scale_rtol: f64,
}

impl Tolerance {
    /// `|a − b| ≤ atol + rtol·|b|`.
    pub const fn new(atol: f64, rtol: f64) -> Self {
        Tolerance { atol, rtol, scale_rtol: 0.0 }
    }
    /// Bit-for-bit equal values (integer outputs, identical runtimes).
    pub const fn exact() -> Self {
        Tolerance::new(0.0, 0.0)
    }
    /// Adds `scale_rtol·max|b|` (over the whole output) to the bound.
    pub const fn with_scale_rtol(mut self, scale_rtol: f64) -> Self {
        self.scale_rtol = scale_rtol;
        self
    }
    /// Adds `allowance` to the absolute term (the differential rule, [`differential`]).
    pub fn with_allowance(mut self, allowance: f64) -> Self {
        self.atol += allowance;
        self
    }
    /// The largest allowed |a − b| for reference value `b` in an output whose max |b| is `scale`.
    pub fn bound(&self, b: f64, scale: f64) -> f64 {
        self.atol + self.rtol * b.abs() + self.scale_rtol * scale
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "|a-b| <= {:e} + {:e}*|ref|", self.atol, self.rtol)?;
        if self.scale_rtol != 0.0 {
            write!(f, " + {:e}*max|ref|", self.scale_rtol)?;
        }
        Ok(())
    }
}

/// How one output differs from its reference.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OutputDiff {
    pub name: String,
    pub dims: Vec<i64>,
    /// max |a − b| (infinite when a NaN or an infinity is unmatched).
    pub max_abs: f64,
    /// max |a − b| / max(|b|, REL_FLOOR).
    pub max_rel: f64,
    /// max |b|, the output's scale (finite values only).
    pub ref_scale: f64,
    /// Elements outside the tolerance.
    pub violations: usize,
    /// The element furthest outside (or nearest to) its bound: flat index, value, reference.
    pub worst: Option<(usize, f64, f64)>,
    /// Why the values could not be compared at all (missing output, other shape); a failure.
    pub mismatch: Option<String>,
}

impl OutputDiff {
    pub fn passed(&self) -> bool {
        self.mismatch.is_none() && self.violations == 0
    }

    fn mismatched(name: &str, dims: Vec<i64>, why: String) -> Self {
        let inf = f64::INFINITY;
        OutputDiff {
            name: name.into(),
            dims,
            max_abs: inf,
            max_rel: inf,
            ref_scale: 0.0,
            violations: 0,
            worst: None,
            mismatch: Some(why),
        }
    }
}

impl fmt::Display for OutputDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "ok" } else { "FAIL" };
        if let Some(m) = &self.mismatch {
            return write!(f, "{verdict} '{}': {m}", self.name);
        }
        write!(
            f,
            "{verdict} '{}' {:?}: max abs {:.3e}, max rel {:.3e}, scale {:.3e}, {} outside",
            self.name, self.dims, self.max_abs, self.max_rel, self.ref_scale, self.violations
        )?;
        if let (false, Some((i, a, b))) = (self.passed(), self.worst) {
            write!(f, " (worst at flat index {i}: {a} vs {b})")?;
        }
        Ok(())
    }
}

/// Every reference output's difference, under one tolerance.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Comparison {
    pub tol: Tolerance,
    pub outputs: Vec<OutputDiff>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.outputs.iter().all(OutputDiff::passed)
    }
    pub fn max_abs(&self) -> f64 {
        self.outputs.iter().map(|o| o.max_abs).fold(0.0, f64::max)
    }
    pub fn max_rel(&self) -> f64 {
        self.outputs.iter().map(|o| o.max_rel).fold(0.0, f64::max)
    }
    /// `Ok` if every output passed, else an error starting with `what` and listing each output.
    pub fn check(&self, what: &str) -> Result<()> {
        if self.passed() {
            return Ok(());
        }
        Err(Error::msg(format!("{what}: outputs differ beyond {}\n{self}", self.tol)))
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, o) in self.outputs.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  {o}")?;
        }
        Ok(())
    }
}

/// Compares `actual` with `reference`, output by output, matched by name. Every reference output
/// must be present in `actual`; extra actual outputs are ignored.
pub fn compare(actual: &[(String, TensorData)], reference: &[(String, TensorData)], tol: Tolerance) -> Comparison {
    let outputs = reference
        .iter()
        .map(|(name, b)| match actual.iter().find(|(n, _)| n == name) {
            Some((_, a)) => compare_tensor(name, a, b, tol),
            None => OutputDiff::mismatched(name, b.dims.clone(), "missing from the outputs under test".into()),
        })
        .collect();
    Comparison { tol, outputs }
}

/// Compares one tensor with its reference (same shape required; dtypes may differ).
pub fn compare_tensor(name: &str, a: &TensorData, b: &TensorData, tol: Tolerance) -> OutputDiff {
    if a.dims != b.dims {
        return OutputDiff::mismatched(
            name,
            b.dims.clone(),
            format!("shape {:?}, the reference has {:?}", a.dims, b.dims),
        );
    }
    match (values_f64(a), values_f64(b)) {
        (Ok(av), Ok(bv)) => compare_values(name, b.dims.clone(), &av, &bv, tol),
        (Err(e), _) | (_, Err(e)) => OutputDiff::mismatched(name, b.dims.clone(), e.to_string()),
    }
}

/// The element-wise rule on flat values (`a` and `b` of equal length).
pub fn compare_values(name: &str, dims: Vec<i64>, a: &[f64], b: &[f64], tol: Tolerance) -> OutputDiff {
    if a.len() != b.len() {
        return OutputDiff::mismatched(name, dims, format!("{} values, the reference has {}", a.len(), b.len()));
    }
    let scale = b.iter().filter(|v| v.is_finite()).map(|v| v.abs()).fold(0.0, f64::max);
    let mut d = OutputDiff {
        name: name.into(),
        dims,
        max_abs: 0.0,
        max_rel: 0.0,
        ref_scale: scale,
        violations: 0,
        worst: None,
        mismatch: None,
    };
    let mut worst = (-1.0, -1.0);
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let same_special = (x.is_nan() && y.is_nan()) || (x.is_infinite() && x == y);
        let abs = if same_special {
            0.0
        } else if x.is_finite() && y.is_finite() {
            (x - y).abs()
        } else {
            f64::INFINITY
        };
        let bound = tol.bound(if y.is_finite() { y } else { 0.0 }, scale);
        d.max_abs = d.max_abs.max(abs);
        d.max_rel = d.max_rel.max(abs / y.abs().max(REL_FLOOR));
        if abs > bound {
            d.violations += 1;
        }
        // Rank by how far past (or how close to) its bound an element is, then by |a − b|.
        let ratio = if bound > 0.0 {
            abs / bound
        } else if abs > 0.0 {
            f64::INFINITY
        } else {
            0.0
        };
        if (ratio, abs) > worst {
            worst = (ratio, abs);
            d.worst = Some((i, x, y));
        }
    }
    d
}

/// How many elements of a float tensor are NaN or ±inf (0 for other types). An output or a
/// weight holding any is never a usable result, whatever it is compared with.
pub fn count_non_finite(d: &TensorData) -> usize {
    let b = &d.bytes;
    match d.dtype {
        DType::F32 => b.chunks_exact(4).filter(|c| !f32::from_le_bytes([c[0], c[1], c[2], c[3]]).is_finite()).count(),
        DType::F64 => {
            b.chunks_exact(8).filter(|c| !f64::from_le_bytes(std::array::from_fn(|i| c[i])).is_finite()).count()
        }
        DType::F16 => b.chunks_exact(2).filter(|c| !half::f16::from_le_bytes([c[0], c[1]]).is_finite()).count(),
        DType::BF16 => b.chunks_exact(2).filter(|c| !half::bf16::from_le_bytes([c[0], c[1]]).is_finite()).count(),
        _ => 0,
    }
}

/// The named tensors that hold NaN or ±inf, with how many, sorted by name, as one line for a
/// message ("'fc.weight' (12 NaN/Inf values), …"); `None` when all are finite.
pub fn non_finite_summary<'a>(tensors: impl IntoIterator<Item = (&'a String, &'a TensorData)>) -> Option<String> {
    let mut bad: Vec<(&String, usize)> =
        tensors.into_iter().map(|(n, t)| (n, count_non_finite(t))).filter(|(_, c)| *c > 0).collect();
    bad.sort();
    let parts: Vec<String> = bad.iter().map(|(n, c)| format!("'{n}' ({c} NaN/Inf values)")).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Every element as f64 (integers exactly up to 2^53, bool as 0/1).
pub fn values_f64(d: &TensorData) -> Result<Vec<f64>> {
    let b = &d.bytes;
    fn chunks<const N: usize>(b: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
        b.chunks_exact(N).map(|c| c.try_into().expect("exact chunks"))
    }
    let v: Vec<f64> = match d.dtype {
        DType::F32 => chunks::<4>(b).map(|c| f32::from_le_bytes(c) as f64).collect(),
        DType::F64 => chunks::<8>(b).map(f64::from_le_bytes).collect(),
        DType::F16 => chunks::<2>(b).map(|c| half::f16::from_le_bytes(c).to_f64()).collect(),
        DType::BF16 => chunks::<2>(b).map(|c| half::bf16::from_le_bytes(c).to_f64()).collect(),
        DType::I8 => b.iter().map(|&x| x as i8 as f64).collect(),
        DType::U8 => b.iter().map(|&x| x as f64).collect(),
        DType::Bool => b.iter().map(|&x| f64::from(u8::from(x != 0))).collect(),
        DType::I16 => chunks::<2>(b).map(|c| i16::from_le_bytes(c) as f64).collect(),
        DType::U16 => chunks::<2>(b).map(|c| u16::from_le_bytes(c) as f64).collect(),
        DType::I32 => chunks::<4>(b).map(|c| i32::from_le_bytes(c) as f64).collect(),
        DType::U32 => chunks::<4>(b).map(|c| u32::from_le_bytes(c) as f64).collect(),
        DType::I64 => chunks::<8>(b).map(|c| i64::from_le_bytes(c) as f64).collect(),
        DType::U64 => chunks::<8>(b).map(|c| u64::from_le_bytes(c) as f64).collect(),
        d => return Err(Error::msg(format!("cannot compare {d} values"))),
    };
    if v.len() != d.numel() {
        return Err(Error::msg(format!("{} bytes for {} {:?}", b.len(), d.dtype, d.dims)));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(dims: &[i64], v: &[f32]) -> TensorData {
        TensorData { dtype: DType::F32, dims: dims.to_vec(), bytes: v.iter().flat_map(|x| x.to_le_bytes()).collect() }
    }
    fn named(name: &str, t: TensorData) -> Vec<(String, TensorData)> {
        vec![(name.to_string(), t)]
    }

    #[test]
    fn identical_outputs_pass_exactly() {
        let t = f32s(&[2], &[1.0, -2.5]);
        let c = compare(&named("y", t.clone()), &named("y", t), Tolerance::exact());
        assert!(c.passed(), "{c}");
        assert_eq!((c.max_abs(), c.max_rel()), (0.0, 0.0));
    }

    #[test]
    fn relative_and_absolute_terms() {
        let b = f32s(&[3], &[100.0, 1.0, 0.0]);
        let a = f32s(&[3], &[100.005, 1.0, 1e-3]);
        // 0.005 ≤ 1e-4·100 passes; 1e-3 at a zero reference needs the absolute term.
        let c = compare(&named("y", a.clone()), &named("y", b.clone()), Tolerance::new(0.0, 1e-4));
        assert_eq!(c.outputs[0].violations, 1);
        assert_eq!(c.outputs[0].worst.map(|w| w.0), Some(2));
        assert!(compare(&named("y", a.clone()), &named("y", b.clone()), Tolerance::new(2e-3, 1e-4)).passed());
        // ...or the scale term: 2e-5 · max|b| = 2e-3.
        assert!(compare(&named("y", a), &named("y", b), Tolerance::new(0.0, 1e-4).with_scale_rtol(2e-5)).passed());
    }

    #[test]
    fn reported_differences() {
        let d = compare_values("y", vec![2], &[1.5, 0.0], &[1.0, 1e-9], Tolerance::exact());
        assert_eq!(d.max_abs, 0.5);
        assert!((d.max_rel - 0.5).abs() < 1e-12); // 1e-9 / max(1e-9, REL_FLOOR) = 1e-3 < 0.5
        assert_eq!(d.violations, 2);
        assert_eq!(d.ref_scale, 1.0);
    }

    #[test]
    fn nan_and_infinity() {
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        let ok = compare_values("y", vec![2], &[nan, inf], &[nan, inf], Tolerance::exact());
        assert!(ok.passed());
        let bad = compare_values("y", vec![3], &[nan, 1.0, -inf], &[0.0, nan, inf], Tolerance::new(1.0, 1.0));
        assert_eq!(bad.violations, 3);
        assert_eq!(bad.max_abs, inf);
    }

    #[test]
    fn non_finite_values_are_counted_and_named() {
        let t = f32s(&[4], &[1.0, f32::NAN, f32::INFINITY, -2.0]);
        assert_eq!(count_non_finite(&t), 2);
        let h = TensorData {
            dtype: DType::F16,
            dims: vec![2],
            bytes: [half::f16::NEG_INFINITY, half::f16::ONE].iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        assert_eq!(count_non_finite(&h), 1);
        let ok = ("b".to_string(), f32s(&[1], &[0.5]));
        let bad = ("a".to_string(), t);
        assert_eq!(non_finite_summary([(&ok.0, &ok.1)]), None);
        assert_eq!(non_finite_summary([(&ok.0, &ok.1), (&bad.0, &bad.1)]).unwrap(), "'a' (2 NaN/Inf values)");
    }

    #[test]
    fn missing_output_and_shape_mismatch_fail() {
        let t = f32s(&[2], &[1.0, 2.0]);
        let c = compare(&named("z", t.clone()), &named("y", t.clone()), Tolerance::new(1.0, 1.0));
        assert!(!c.passed());
        assert!(c.check("engine vs ort").unwrap_err().to_string().contains("missing"));
        let c = compare(&named("y", f32s(&[1, 2], &[1.0, 2.0])), &named("y", t), Tolerance::new(1.0, 1.0));
        assert!(c.outputs[0].mismatch.as_deref().unwrap().contains("shape"));
    }

    #[test]
    fn mixed_types_compare_as_values() {
        let ints = TensorData {
            dtype: DType::I64,
            dims: vec![2],
            bytes: [3i64, -4].iter().flat_map(|x| x.to_le_bytes()).collect(),
        };
        let halfs = TensorData {
            dtype: DType::F16,
            dims: vec![2],
            bytes: [3.0f32, -4.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect(),
        };
        assert!(compare(&named("y", halfs), &named("y", ints), Tolerance::exact()).passed());
        let bools = TensorData { dtype: DType::Bool, dims: vec![3], bytes: vec![0, 1, 7] };
        assert_eq!(values_f64(&bools).unwrap(), vec![0.0, 1.0, 1.0]);
    }
}

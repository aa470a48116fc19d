//! What the report's plots need of each adapted layer, summarised so the JSON stays small: the
//! head of the gradient's singular-value spectrum and a histogram of |ΔW| (bin counts only).
use crate::error::{Error, Result};
use crate::semu::adapter::Adapter;
use serde::Serialize;
use tch::Kind;

/// Singular values kept per layer; the cumulative share still uses the whole spectrum.
pub const SPECTRUM_CAP: usize = 256;
/// Bins of the |ΔW| histogram.
pub const HISTOGRAM_BINS: usize = 40;

#[derive(Debug, Clone, Serialize)]
pub struct LayerDiagnostics {
    pub name: String,
    pub k: usize,
    pub spectrum: Spectrum,
    pub delta_abs: Histogram,
}

/// The gradient's singular values. A conv has one spectrum per input channel: `mean`, `min`
/// and `max` are taken over channels (`min`/`max` are empty for a single spectrum).
#[derive(Debug, Clone, Serialize)]
pub struct Spectrum {
    /// Number of spectra (input channels of a conv, 1 otherwise).
    pub rows: usize,
    /// Length of each spectrum; only the first `mean.len()` values are kept.
    pub len: usize,
    pub mean: Vec<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub min: Vec<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub max: Vec<f32>,
    /// Share of Σs² explained by the first i+1 values, averaged over the nonzero spectra.
    pub cumulative: Vec<f32>,
}

/// Histogram of the finite |ΔW| over `[0, max]` in equal bins (the last bin includes `max`).
#[derive(Debug, Clone, Serialize)]
pub struct Histogram {
    pub max: f64,
    pub mean: f64,
    pub counts: Vec<u64>,
    /// NaN/Inf values (a diverged run), left out of the bins.
    #[serde(skip_serializing_if = "is_zero")]
    pub non_finite: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Spectrum {
    pub fn new(spectra: &[Vec<f64>]) -> Result<Self> {
        Self::with_energy(spectra, None)
    }

    /// [`Spectrum::new`] where `spectra` may be only the head of each spectrum: `energy` gives
    /// each whole spectrum's Σs² (the fast rank solver's ‖G‖²_F), so the shares stay true.
    pub fn with_energy(spectra: &[Vec<f64>], energy: Option<&[f64]>) -> Result<Self> {
        let len = spectra.iter().map(Vec::len).max().ok_or_else(|| Error::msg("a layer without spectrum"))?;
        let n = len.min(SPECTRUM_CAP);
        let column = |i: usize| spectra.iter().map(move |s| s.get(i).copied().unwrap_or(0.0));
        let mean = (0..n).map(|i| (column(i).sum::<f64>() / spectra.len() as f64) as f32).collect();
        let (min, max) = if spectra.len() > 1 {
            (
                (0..n).map(|i| column(i).fold(f64::INFINITY, f64::min) as f32).collect(),
                (0..n).map(|i| column(i).fold(0.0, f64::max) as f32).collect(),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let mut cumulative = vec![0.0f64; n];
        let mut nonzero = 0usize;
        for (row, s) in spectra.iter().enumerate() {
            let total: f64 = match energy.and_then(|e| e.get(row)) {
                Some(&e) => e,
                None => s.iter().map(|v| v * v).sum(),
            };
            if !(total > 0.0 && total.is_finite()) {
                continue;
            }
            nonzero += 1;
            let mut acc = 0.0;
            for (i, c) in cumulative.iter_mut().enumerate() {
                acc += s.get(i).map_or(0.0, |v| v * v) / total;
                *c += acc;
            }
        }
        let cumulative = cumulative.iter().map(|c| (c / nonzero.max(1) as f64) as f32).collect();
        Ok(Spectrum { rows: spectra.len(), len, mean, min, max, cumulative })
    }
}

impl Histogram {
    /// Bins `|values|` of a tensor (on its own device).
    pub fn of_abs(t: &tch::Tensor, bins: usize) -> Result<Self> {
        let _g = tch::no_grad_guard();
        let all = t.f_detach()?.f_to_kind(Kind::Float)?.f_abs()?.f_flatten(0, -1)?;
        // A diverged run still gets its report: non-finite values are counted apart.
        let a = all.f_masked_select(&all.f_isfinite()?)?;
        let n = a.numel() as u64;
        let non_finite = all.numel() as u64 - n;
        if n == 0 {
            return Ok(Histogram { max: 0.0, mean: 0.0, counts: vec![0; bins], non_finite });
        }
        let max = a.f_max()?.f_double_value(&[])?;
        let mean = a.f_mean(Kind::Double)?.f_double_value(&[])?;
        let counts = if max > 0.0 {
            let idx = a.f_mul_scalar(bins as f64 / max)?.f_floor()?.f_clamp(0.0, (bins - 1) as f64)?;
            let c = idx.f_to_kind(Kind::Int64)?.f_bincount::<tch::Tensor>(None, bins as i64)?;
            Vec::<i64>::try_from(c.f_to_device(tch::Device::Cpu)?)?.into_iter().map(|c| c as u64).collect()
        } else {
            let mut c = vec![0; bins];
            c[0] = n;
            c
        };
        Ok(Histogram { max, mean, counts, non_finite })
    }
}

/// The diagnostics of every adapter, in adapter order.
pub fn diagnostics(adapters: &[Adapter]) -> Result<Vec<LayerDiagnostics>> {
    adapters
        .iter()
        .map(|a| {
            let spectrum = Spectrum::with_energy(&a.spectra, a.energy.as_deref())
                .map_err(|e| Error::msg(format!("{}: {e}", a.name)))?;
            Ok(LayerDiagnostics {
                name: a.name.clone(),
                k: a.k,
                spectrum,
                delta_abs: Histogram::of_abs(&a.delta()?, HISTOGRAM_BINS)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Tensor};

    #[test]
    fn spectrum_summarises_channels_and_cumulates_per_channel() {
        // s² shares: [0.5, 0.5] and [1, 0]; a zero channel is left out of the cumulative mean.
        let s = vec![vec![1.0, 1.0], vec![2.0, 0.0], vec![0.0, 0.0]];
        let sp = Spectrum::new(&s).unwrap();
        assert_eq!((sp.rows, sp.len), (3, 2));
        assert_eq!(sp.mean, vec![1.0, 1.0 / 3.0]);
        assert_eq!((sp.min.clone(), sp.max.clone()), (vec![0.0, 0.0], vec![2.0, 1.0]));
        assert_eq!(sp.cumulative, vec![0.75, 1.0]);
        let one = Spectrum::new(&[vec![3.0, 4.0]]).unwrap();
        assert!(one.min.is_empty() && one.max.is_empty());
        assert!((one.cumulative[0] - 0.36).abs() < 1e-6);
    }

    #[test]
    fn long_spectra_are_capped() {
        let s: Vec<f64> = (0..1000).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let sp = Spectrum::new(&[s]).unwrap();
        assert_eq!((sp.len, sp.mean.len(), sp.cumulative.len()), (1000, SPECTRUM_CAP, SPECTRUM_CAP));
        assert!(sp.cumulative[SPECTRUM_CAP - 1] < 1.0);
    }

    #[test]
    fn histogram_counts_every_value_once() {
        let t = Tensor::from_slice(&[0.0f32, -0.1, 0.25, 0.5, -1.0, 1.0]).to_device(Device::Cpu);
        let h = Histogram::of_abs(&t, 4).unwrap();
        assert_eq!(h.counts, vec![2, 1, 1, 2]);
        assert_eq!(h.max, 1.0);
        assert!((h.mean - 2.85 / 6.0).abs() < 1e-6);
        let z = Histogram::of_abs(&Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)), 5).unwrap();
        assert_eq!(z.counts, vec![6, 0, 0, 0, 0]);
        let bad = Histogram::of_abs(&Tensor::from_slice(&[f32::NAN, 2.0, f32::INFINITY]), 2).unwrap();
        assert_eq!((bad.counts.clone(), bad.non_finite, bad.max), (vec![0, 1], 2, 2.0));
    }
}

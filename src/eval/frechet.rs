//! The Fréchet distance between two feature sets, each summarised as a Gaussian (FID's formula):
//! ‖μ₁ − μ₂‖² + tr(Σ₁ + Σ₂ − 2·√(Σ₁Σ₂)), in f64.
//!
//! tr √(Σ₁Σ₂) is the sum of the square roots of the eigenvalues of Σ₁Σ₂, which are those of the
//! symmetric positive semi-definite √Σ₁·Σ₂·√Σ₁; two symmetric eigendecompositions give it without
//! a general matrix square root, and stay exact when Σ is singular (features of dead ReLU units).
//! Should they fail or give a non-finite value, Σ + ε·I (ε = 1e-6, pytorch-fid's offset) is
//! tried once (SEMU-diffusion.md §4.4).
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

const OFFSET: f64 = 1e-6;

/// Fréchet distance between the rows of `a` (n₁×d) and of `b` (n₂×d); n ≥ 2 each.
pub fn frechet_distance(a: &Tensor, b: &Tensor) -> Result<f64> {
    let _g = tch::no_grad_guard();
    let (a, b) = (a.to_kind(Kind::Double), b.to_kind(Kind::Double));
    if a.dim() != 2 || b.dim() != 2 || a.size()[1] != b.size()[1] {
        return Err(Error::msg(format!(
            "Fréchet distance: feature sets of shapes {:?} and {:?}, want n×d with the same d",
            a.size(),
            b.size()
        )));
    }
    if a.size()[0] < 2 || b.size()[0] < 2 {
        return Err(Error::msg("Fréchet distance: each feature set needs at least 2 rows"));
    }
    if !finite(&a) || !finite(&b) {
        return Err(Error::msg("Fréchet distance: the features hold NaN or infinite values"));
    }
    let (m1, m2) = (a.mean_dim(0, false, Kind::Double), b.mean_dim(0, false, Kind::Double));
    let (s1, s2) = (covariance(&a, &m1), covariance(&b, &m2));
    let mean_term = (&m1 - &m2).square().sum(Kind::Double).double_value(&[]);
    let traces = s1.trace().double_value(&[]) + s2.trace().double_value(&[]);
    let root = match trace_sqrt_product(&s1, &s2) {
        Ok(r) if r.is_finite() => r,
        _ => {
            let eye = Tensor::eye(s1.size()[0], (Kind::Double, s1.device())) * OFFSET;
            trace_sqrt_product(&(&s1 + &eye), &(&s2 + &eye))?
        }
    };
    if !root.is_finite() {
        return Err(Error::msg("Fréchet distance: tr √(Σ₁Σ₂) is not finite even with the ε·I offset"));
    }
    Ok(mean_term + traces - 2.0 * root)
}

fn finite(t: &Tensor) -> bool {
    t.isfinite().all().int64_value(&[]) != 0
}

/// The unbiased covariance (n − 1), as numpy's `np.cov(x, rowvar=False)`.
fn covariance(x: &Tensor, mean: &Tensor) -> Tensor {
    let c = x - mean;
    c.transpose(0, 1).mm(&c) / (x.size()[0] - 1) as f64
}

/// tr √(S₁S₂) for symmetric positive semi-definite S₁, S₂.
fn trace_sqrt_product(s1: &Tensor, s2: &Tensor) -> Result<f64> {
    let (e, v) = s1.f_linalg_eigh("L")?;
    let root1 = (&v * e.clamp_min(0.0).sqrt().unsqueeze(0)).mm(&v.transpose(0, 1));
    let m = root1.mm(s2).mm(&root1);
    let m = (&m + m.transpose(0, 1)) * 0.5; // symmetric up to rounding
    let ev = m.f_linalg_eigvalsh("L")?;
    Ok(ev.clamp_min(0.0).sqrt().sum(Kind::Double).double_value(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(n: i64, d: i64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        Tensor::randn([n, d], (Kind::Double, tch::Device::Cpu))
    }

    #[test]
    fn identical_sets_are_at_distance_zero_even_with_dead_units() {
        let a = gaussian(200, 16, 0).relu();
        let _ = a.narrow(1, 0, 4).fill_(0.0); // dead units: Σ is singular
        let d = frechet_distance(&a, &a).unwrap();
        assert!(d.abs() < 1e-8, "{d}");
    }

    /// b = s·a + δ: Σ_b = s²Σ_a, so FD = ‖μ_a − μ_b‖² + (1 − s)²·tr Σ_a exactly (sample statistics).
    #[test]
    fn scaled_and_shifted_set_matches_the_closed_form() {
        let a = gaussian(300, 12, 1) * 0.7 + 0.2;
        let _ = a.narrow(1, 5, 2).fill_(1.5); // constant columns: singular Σ
        let (s, shift) = (1.8, Tensor::linspace(-1.0, 2.0, 12, (Kind::Double, tch::Device::Cpu)));
        let b = &a * s + &shift;
        let ma = a.mean_dim(0, false, Kind::Double);
        let mb = b.mean_dim(0, false, Kind::Double);
        let tr = covariance(&a, &ma).trace().double_value(&[]);
        let want = (&ma - &mb).square().sum(Kind::Double).double_value(&[]) + (1.0 - s) * (1.0 - s) * tr;
        let got = frechet_distance(&a, &b).unwrap();
        // The two zero eigenvalues come out as ±1e-16 or so, whose roots (1e-8) bound the error.
        assert!((got - want).abs() < 1e-7 * want, "{got} vs {want}");
    }

    /// In 2-D, tr √M = √(tr M + 2·√det M) for M with non-negative eigenvalues: a check of the
    /// eigen route on covariances that do not commute.
    #[test]
    fn two_dimensional_case_matches_the_closed_form() {
        let a = gaussian(500, 2, 2).mm(&Tensor::from_slice2(&[[1.0, 0.8], [0.0, 0.5]]));
        let b = gaussian(400, 2, 3).mm(&Tensor::from_slice2(&[[0.3, -0.4], [0.9, 1.2]])) + 0.5;
        let (ma, mb) = (a.mean_dim(0, false, Kind::Double), b.mean_dim(0, false, Kind::Double));
        let (sa, sb) = (covariance(&a, &ma), covariance(&b, &mb));
        let m = Vec::<f64>::try_from(sa.mm(&sb).flatten(0, -1)).unwrap();
        let root = (m[0] + m[3] + 2.0 * (m[0] * m[3] - m[1] * m[2]).sqrt()).sqrt();
        let want = (&ma - &mb).square().sum(Kind::Double).double_value(&[])
            + sa.trace().double_value(&[])
            + sb.trace().double_value(&[])
            - 2.0 * root;
        let got = frechet_distance(&a, &b).unwrap();
        assert!((got - want).abs() < 1e-10, "{got} vs {want}");
    }

    #[test]
    fn bad_shapes_and_nan_are_errors() {
        let a = gaussian(10, 3, 4);
        assert!(frechet_distance(&a, &gaussian(10, 4, 5)).is_err());
        assert!(frechet_distance(&a, &a.narrow(0, 0, 1)).is_err());
        let nan = a.copy();
        let _ = nan.get(0).get(0).fill_(f64::NAN);
        assert!(frechet_distance(&a, &nan).unwrap_err().to_string().contains("NaN"));
    }
}

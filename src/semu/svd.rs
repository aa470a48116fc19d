//! Steps 3–4 of SEMU.md: projection of the gradient, SVD (batched per input channel for convs),
//! and the rank chosen from the explained-variance threshold γ.
use super::fast_svd;
use super::layers::{Layer, LayerKind, WeightLayout};
use crate::error::Result;
use tch::{Kind, Tensor};

/// Which definitions to follow where the reference code differs from the paper (SEMU.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    /// Exact projection (divide by ‖W‖²) and the smallest k reaching γ.
    Paper,
    /// The authors' code: divide by ‖W‖, k = searchsorted(cum, γ, side="right").
    Reference,
}

/// `G − (⟨G,W⟩ / ‖W‖²) W`, or with ‖W‖ in the denominator under `Parity::Reference`.
pub fn project(g: &Tensor, w: &Tensor, parity: Parity) -> Result<Tensor> {
    let w = w.f_to_kind(Kind::Float)?;
    let dot = g.f_mul(&w)?.f_sum(Kind::Float)?;
    let norm = w.f_square()?.f_sum(Kind::Float)?;
    let denom = match parity {
        Parity::Paper => norm,
        Parity::Reference => norm.f_sqrt()?,
    };
    if denom.f_double_value(&[])? == 0.0 {
        return Ok(g.shallow_clone());
    }
    Ok(g.f_sub(&w.f_mul(&dot.f_div(&denom)?)?)?)
}

/// A thin SVD `G = U diag(S) Vᵀ`: 2-D (U m×r, S r, V n×r) or batched over input channels for
/// a conv (U I×O×r, S I×r, V I×K×r with K = kh·kw). The fast solver (`fast_svd`) keeps only
/// the head (r ≤ min(m, n)) and gives the whole spectrum's Σσ² = ‖G‖²_F in `energy`.
pub struct Decomposition {
    pub u: Tensor,
    pub s: Tensor,
    pub v: Tensor,
    pub conv: bool,
    /// Per row (input channel), Σσ² of the whole spectrum when `s` holds only its head.
    pub energy: Option<Vec<f64>>,
    /// The stored layout the gradient was viewed from ([`decompose_layer`]); an adapter checks
    /// it against its layer's, since a shape alone cannot tell a 3×3×3 view from its permutation.
    pub layout: WeightLayout,
}

/// Decomposes a gradient of shape `dims` (2-D, or O×I×k… for a conv).
pub fn decompose(g: &Tensor, conv: bool) -> Result<Decomposition> {
    let g = g.f_to_kind(Kind::Float)?;
    let m = if conv {
        let d = g.size();
        // O×I×kh×kw → I×O×(kh·kw): one matrix per input channel.
        g.f_reshape([d[0], d[1], -1])?.f_permute([1, 0, 2])?.f_contiguous()?
    } else {
        g
    };
    let (u, s, v) = if serial_batch(&m) { one_thread(|| m.f_svd(true, true))? } else { m.f_svd(true, true)? };
    Ok(Decomposition { u, s, v, conv, energy: None, layout: WeightLayout::Native })
}

/// Batches of at least this many matrices decompose on one thread ([`serial_batch`]).
pub const SERIAL_BATCH: i64 = 64;
/// … when each matrix has at most this many elements.
pub const SERIAL_MATRIX: i64 = 1 << 16;

/// A CPU batch of many small matrices (a conv's per-input-channel O×(kh·kw) gradients): libtorch
/// calls LAPACK once per matrix, each call too small to gain from threads yet paying their
/// fork and join: on 2 cores, ResNet-18's 20 convs took 0.3–0.5 s on 2 threads against 0.09 s
/// on one, and 4–22 s when another process held a core (joins waiting on a descheduled
/// thread). So such a batch runs on one thread.
/// Smaller batches keep the threaded call (and their bytes: a thread count can move U by an
/// ulp; tests/tasks.rs holds the digits fixture's exports to theirs).
fn serial_batch(m: &Tensor) -> bool {
    let d = m.size();
    d.len() == 3 && m.device() == tch::Device::Cpu && d[0] >= SERIAL_BATCH && d[1] * d[2] <= SERIAL_MATRIX
}

/// Runs `f` with libtorch's intra-op threads (OpenMP and MKL) set to 1, then restores them.
fn one_thread<T>(f: impl FnOnce() -> T) -> T {
    let threads = tch::get_num_threads();
    if threads <= 1 {
        return f();
    }
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            tch::set_num_threads(self.0);
        }
    }
    let _restore = Restore(threads);
    tch::set_num_threads(1);
    f()
}

/// [`decompose`], or for a 2-D gradient of min(m, n) ≥ `fast_svd::MIN_DIM` the head of its
/// SVD that decides k for `gamma` (`fast_svd`), falling back to the exact SVD where that cannot
/// decide as the exact one would (the reason is logged).
pub fn decompose_for(g: &Tensor, conv: bool, gamma: f64, parity: Parity, name: &str) -> Result<Decomposition> {
    if conv || !fast_svd::applies(&g.size()) {
        return decompose(g, conv);
    }
    match fast_svd::head_for(g, gamma, parity, fast_svd::Options::default())? {
        fast_svd::Fast::Head(d) => Ok(d),
        fast_svd::Fast::Exact(why) => {
            tracing::info!("{name}: exact SVD ({why})");
            decompose(g, conv)
        }
    }
}

/// [`decompose_for`] of the gradient `g` of `layer` (stored shape): a conv is decomposed in its
/// O×I×k… view whatever its stored layout (NhwcConv keeps input channels last).
pub fn decompose_layer(g: &Tensor, layer: &Layer, gamma: f64, parity: Parity) -> Result<Decomposition> {
    let mut d = decompose_for(&layer.view(g)?, layer.kind == LayerKind::Conv, gamma, parity, &layer.name)?;
    d.layout = layer.layout;
    Ok(d)
}

/// The exact SVD of the gradient `g` of `layer`, in its O×I×k… view (every component).
pub fn decompose_layer_exact(g: &Tensor, layer: &Layer) -> Result<Decomposition> {
    let mut d = decompose(&layer.view(g)?, layer.kind == LayerKind::Conv)?;
    d.layout = layer.layout;
    Ok(d)
}

/// Smallest k with Σ_{j≤k} s_j² / Σ s_j² ≥ γ (Paper), or the reference's searchsorted rule;
/// at least 1. None for an all-zero spectrum.
pub fn rank_for(s: &[f64], gamma: f64, parity: Parity) -> Option<usize> {
    let total: f64 = s.iter().map(|v| v * v).sum();
    rank_for_total(s, total, gamma, parity)
}

/// [`rank_for`] with the whole spectrum's Σs² given (`s` may be only its head).
pub fn rank_for_total(s: &[f64], total: f64, gamma: f64, parity: Parity) -> Option<usize> {
    rank_unfloored(s, total, gamma, parity).map(|k| k.clamp(1, s.len()))
}

/// [`rank_for_total`] without the floor of 1: the reference rule gives 0 where the first
/// component alone explains more than γ (the authors' diffusion code keeps that 0).
pub fn rank_unfloored(s: &[f64], total: f64, gamma: f64, parity: Parity) -> Option<usize> {
    if total <= 0.0 || !total.is_finite() {
        return None;
    }
    let mut cum = 0.0;
    let mut cums = Vec::with_capacity(s.len());
    for v in s {
        cum += v * v / total;
        cums.push(cum);
    }
    let k = match parity {
        // Small tolerance: cumulative sums of exactly-γ spectra must not round past γ.
        Parity::Paper => cums.iter().position(|&c| c >= gamma - 1e-12).map_or(s.len(), |p| p + 1),
        Parity::Reference => cums.iter().filter(|&&c| c <= gamma).count(),
    };
    Some(k.min(s.len()))
}

/// Fraction of Σ s² explained by the first k values.
pub fn explained(s: &[f64], k: usize) -> f64 {
    let total: f64 = s.iter().map(|v| v * v).sum();
    explained_total(s, k, total)
}

/// [`explained`] with the whole spectrum's Σs² given.
pub fn explained_total(s: &[f64], k: usize, total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    s.iter().take(k).map(|v| v * v).sum::<f64>() / total
}

/// The singular values as rows (one per input channel for a conv, one row for 2-D).
pub fn spectra(d: &Decomposition) -> Result<Vec<Vec<f64>>> {
    let s = d.s.f_to_kind(Kind::Double)?.f_to_device(tch::Device::Cpu)?;
    let s = if d.conv { s } else { s.f_unsqueeze(0)? };
    let (rows, width) = (s.size()[0] as usize, s.size()[1] as usize);
    // One copy out of libtorch, then the rows (a conv has hundreds: a tensor each costs more).
    let all = Vec::<f64>::try_from(s.f_contiguous()?.f_flatten(0, -1)?)?;
    Ok((0..rows).map(|i| all[i * width..(i + 1) * width].to_vec()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_rules_on_known_spectra() {
        // s² = [0.5, 0.3, 0.2] → cumulative [0.5, 0.8, 1.0].
        let s: Vec<f64> = [0.5f64, 0.3, 0.2].iter().map(|v| v.sqrt()).collect();
        assert_eq!(rank_for(&s, 0.5, Parity::Paper), Some(1));
        assert_eq!(rank_for(&s, 0.6, Parity::Paper), Some(2));
        assert_eq!(rank_for(&s, 0.8, Parity::Paper), Some(2));
        assert_eq!(rank_for(&s, 0.81, Parity::Paper), Some(3));
        assert_eq!(rank_for(&s, 1.0, Parity::Paper), Some(3));
        // Reference: count of cumulative values ≤ γ (usually one fewer), at least 1.
        assert_eq!(rank_for(&s, 0.6, Parity::Reference), Some(1));
        assert_eq!(rank_for(&s, 0.85, Parity::Reference), Some(2));
        assert_eq!(rank_for(&s, 0.4, Parity::Reference), Some(1));
        assert_eq!(rank_for(&[0.0, 0.0], 0.9, Parity::Paper), None);
        assert!((explained(&s, 2) - 0.8).abs() < 1e-12);
    }

    #[test]
    fn projection_is_orthogonal_to_w() {
        tch::manual_seed(0);
        let w = Tensor::randn([7, 5], (Kind::Float, tch::Device::Cpu));
        let g = Tensor::randn([7, 5], (Kind::Float, tch::Device::Cpu));
        let p = project(&g, &w, Parity::Paper).unwrap();
        let dot = p.f_mul(&w).unwrap().sum(Kind::Double).double_value(&[]);
        assert!(dot.abs() < 1e-4, "<G,W> = {dot}");
        // The reference rule is not a projection unless ‖W‖ = 1.
        let r = project(&g, &w, Parity::Reference).unwrap();
        let rdot = r.f_mul(&w).unwrap().sum(Kind::Double).double_value(&[]);
        assert!(rdot.abs() > 1e-3);
    }

    #[test]
    fn a_batch_of_many_small_matrices_decomposes_on_one_thread_and_restores_the_threads() {
        tch::manual_seed(2);
        let g = Tensor::randn([8, SERIAL_BATCH, 3, 3], (Kind::Float, tch::Device::Cpu));
        let threads = tch::get_num_threads();
        let d = decompose(&g, true).unwrap();
        assert_eq!(tch::get_num_threads(), threads, "the thread count is restored");
        assert!(serial_batch(&g.reshape([8, SERIAL_BATCH, 9]).permute([1, 0, 2])));
        assert!(!serial_batch(&g.narrow(1, 0, SERIAL_BATCH - 1).reshape([8, SERIAL_BATCH - 1, 9]).permute([1, 0, 2])));
        let rec = d.u.f_mul(&d.s.unsqueeze(1)).unwrap().bmm(&d.v.transpose(1, 2));
        let back = rec.permute([1, 0, 2]).reshape([8, SERIAL_BATCH, 3, 3]);
        let err = (back - &g).abs().max().double_value(&[]);
        assert!(err < 1e-4, "reconstruction error {err}");
        // The rows of `spectra` are the channels' singular values, in order.
        let rows = spectra(&d).unwrap();
        assert_eq!((rows.len(), rows[5].len()), (SERIAL_BATCH as usize, 8));
        assert_eq!(rows[5], Vec::<f64>::try_from(d.s.get(5).to_kind(Kind::Double)).unwrap());
    }

    #[test]
    fn conv_svd_is_per_input_channel_and_reconstructs() {
        tch::manual_seed(1);
        let g = Tensor::randn([6, 3, 3, 3], (Kind::Float, tch::Device::Cpu));
        let d = decompose(&g, true).unwrap();
        assert_eq!(d.u.size(), vec![3, 6, 6]);
        assert_eq!(d.s.size(), vec![3, 6]);
        assert_eq!(d.v.size(), vec![3, 9, 6]);
        let rec = d.u.f_mul(&d.s.unsqueeze(1)).unwrap().bmm(&d.v.transpose(1, 2));
        let back = rec.permute([1, 0, 2]).reshape([6, 3, 3, 3]);
        let err = (back - &g).abs().max().double_value(&[]);
        assert!(err < 1e-4, "reconstruction error {err}");
        // Channel i's spectrum is the SVD of G[:, i] as an O×(kh·kw) matrix.
        let s1 = g.select(1, 1).reshape([6, 9]).svd(true, true).1;
        let diff = (s1 - d.s.get(1)).abs().max().double_value(&[]);
        assert!(diff < 1e-4);
    }
}

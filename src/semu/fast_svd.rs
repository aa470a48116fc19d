//! Rank selection without the full SVD (issue 14, item 2). ‖G‖²_F = Σσ², so the k that γ picks
//! needs only the head of the spectrum and the Frobenius norm. A randomized subspace iteration
//! (Halko, Martinsson & Tropp 2011, algorithm 4.4; libtorch matmul, `linalg_qr` and a small
//! `svd`) grows its block until the Ritz values decide k by the same rule as `rank_for` (either
//! parity), then returns U_k, S_k, V_k from the small SVD of QᵀG.
//!
//! Where it cannot decide as the exact SVD would, it says so and the caller takes the exact SVD:
//! small matrices ([`MIN_DIM`]), a k that is a large share of min(m, n) ([`MAX_SHARE`]), and a
//! near tie at the γ boundary ([`TIE`]).
use super::svd::{rank_for_total, Decomposition, Parity};
use crate::error::Result;
use rand::{Rng, SeedableRng};
use tch::{Device, Kind, Tensor};

/// Below this min(m, n) the exact SVD is used: it takes under a second there, so there is
/// little to win, and every fixture's layers stay on it (their exports keep their bytes).
pub const MIN_DIM: i64 = 1024;

/// A block beyond this share of min(m, n) costs about what the exact SVD does: fall back.
pub const MAX_SHARE: f64 = 0.25;

/// Cumulative shares closer than this to γ are a near tie: left to the exact SVD. The exact
/// SVD's own f32 singular values carry ~1e-7 relative error, so that close even its k is
/// decided by rounding; the fast solver's estimate must not be the one to decide it.
pub const TIE: f64 = 1e-5;

/// Ritz values count as converged when no value up to k+1 moved by more than this share of
/// the largest in one iteration.
const STEADY: f64 = 1e-6;

/// Power iterations per block before it grows.
const MAX_ITERS: usize = 12;

/// How the solver runs; `Default` is what `decompose_for` uses.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// The first block's width.
    pub start: i64,
    pub max_share: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options { start: 64, max_share: MAX_SHARE }
    }
}

/// The fast solver's answer: the head of the decomposition, or why the exact SVD must be used.
pub enum Fast {
    Head(Decomposition),
    Exact(String),
}

/// A fixed-seed uniform block on the Rust side: the solver leaves libtorch's global generator
/// (training's shuffles and random labels) untouched, and repeats itself exactly.
fn random_block(n: i64, l: i64, seed: u64, device: Device) -> Result<Tensor> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let v: Vec<f32> = (0..n * l).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    Ok(Tensor::f_from_slice(&v)?.f_reshape([n, l])?.f_to_device(device)?)
}

fn orthonormal(y: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_linalg_qr(y, "reduced")?.0)
}

/// Σ_{i≤j} s_i² / total for every j.
fn cumulative(s: &[f64], total: f64) -> Vec<f64> {
    let mut acc = 0.0;
    s.iter()
        .map(|v| {
            acc += v * v / total;
            acc
        })
        .collect()
}

/// The cumulative shares that decide k (0-based indices): the last one that does not reach
/// γ and the first that does (Paper), or the last ≤ γ and the first > γ (Reference).
fn deciding(k: usize, parity: Parity) -> Vec<usize> {
    match parity {
        Parity::Paper => (k.saturating_sub(2)..k).collect(),
        Parity::Reference => (k - 1..k + 1).collect(),
    }
}

/// The head of the SVD of the 2-D `g` that decides `rank_for`'s k for `gamma`, or why not.
pub fn head_for(g: &Tensor, gamma: f64, parity: Parity, opts: Options) -> Result<Fast> {
    let _guard = tch::no_grad_guard();
    let g = g.f_to_kind(Kind::Float)?;
    let (m, n) = (g.size()[0], g.size()[1]);
    let r = m.min(n);
    let total = g.f_square()?.f_sum(Kind::Double)?.f_double_value(&[])?;
    if !(total > 0.0 && total.is_finite()) {
        return Ok(Fast::Exact("a zero or non-finite gradient".into()));
    }
    if gamma >= 1.0 - TIE {
        return Ok(Fast::Exact(format!("γ = {gamma} needs the whole spectrum")));
    }
    let cap = ((opts.max_share * r as f64) as i64).clamp(1, r);
    let mut l = opts.start.clamp(1, cap);
    let mut omega = random_block(n, l, 0, g.device())?;
    let gt = g.f_tr()?;
    loop {
        let mut q = orthonormal(&g.f_mm(&omega)?)?;
        let mut prev: Option<Vec<f64>> = None;
        let mut w = omega.shallow_clone();
        for it in 0..MAX_ITERS {
            // Bᵀ = GᵀQ = Q_b R_b, R_b = W_r S Zᵀ (an l×l SVD in f64), so
            // G ≈ Q Qᵀ G = (Q Z) S (Q_b W_r)ᵀ.
            let (qb, rb) = Tensor::f_linalg_qr(&gt.f_mm(&q)?, "reduced")?;
            let (wr, s, z) = rb.f_to_kind(Kind::Double)?.f_svd(true, true)?;
            let s: Vec<f64> = Vec::try_from(s.f_to_device(Device::Cpu)?)?;
            w = qb.f_mm(&wr.f_to_kind(Kind::Float)?)?;
            let cum = cumulative(&s, total);
            let k = rank_for_total(&s, total, gamma, parity).unwrap_or(s.len());
            let reached = cum.last().is_some_and(|&c| c >= gamma);
            // Room past k for the deciding values and for the Ritz values near k to converge
            // (none needed once the block spans all of min(m, n): its values are then exact).
            let room = l == r || (k as i64) + 8.max(k as i64 / 2) <= l;
            if !reached || !room {
                if it >= 1 {
                    break;
                }
            } else if let Some(p) = &prev {
                let top = s[0];
                let steady = s.iter().zip(p).take(k + 1).all(|(a, b)| (a - b).abs() <= STEADY * top);
                let margin = deciding(k, parity)
                    .iter()
                    .filter_map(|&j| cum.get(j))
                    .map(|c| (c - gamma).abs())
                    .fold(f64::INFINITY, f64::min);
                if steady && margin <= TIE {
                    return Ok(Fast::Exact(format!(
                        "a near tie at γ = {gamma}: a cumulative share within {margin:.1e} of it (k = {k})"
                    )));
                }
                if steady {
                    tracing::debug!("fast SVD: k {k} from a block of {l} after {} iteration(s)", it + 1);
                    let u = q.f_mm(&z.f_to_kind(Kind::Float)?)?;
                    let s = Tensor::f_from_slice(&s)?.f_to_kind(Kind::Float)?.f_to_device(g.device())?;
                    return Ok(Fast::Head(Decomposition {
                        u,
                        s,
                        v: w,
                        conv: false,
                        energy: Some(vec![total]),
                        layout: Default::default(),
                    }));
                }
            }
            prev = Some(s);
            q = orthonormal(&g.f_mm(&w)?)?;
        }
        if l >= cap {
            return Ok(Fast::Exact(format!(
                "k for γ = {gamma} needs more than {:.0}% of min(m, n) = {r}",
                100.0 * opts.max_share
            )));
        }
        // Grow: keep the current right Ritz vectors, add fresh random columns.
        let grown = (2 * l).min(cap);
        let fresh = random_block(n, grown - l, grown as u64, g.device())?;
        omega = Tensor::f_cat(&[w, fresh], 1)?;
        l = grown;
    }
}

/// Whether `g` (2-D) is large enough for the fast solver.
pub fn applies(dims: &[i64]) -> bool {
    dims.len() == 2 && dims[0].min(dims[1]) >= MIN_DIM
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::DType;
    use crate::semu::svd::{decompose, explained, rank_for};
    use crate::semu::LayerKind;

    /// U diag(σ) Vᵀ with random orthonormal U (m×r), V (n×r).
    fn with_spectrum(m: i64, n: i64, sigma: &[f64], seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let r = sigma.len() as i64;
        let opts = (Kind::Double, Device::Cpu);
        let u = Tensor::linalg_qr(&Tensor::randn([m, r], opts), "reduced").0;
        let v = Tensor::linalg_qr(&Tensor::randn([n, r], opts), "reduced").0;
        let s = Tensor::from_slice(sigma);
        (u * s.unsqueeze(0)).mm(&v.tr()).to_kind(Kind::Float)
    }

    /// ‖(I − U_k U_kᵀ) Ũ_k‖₂ = ‖U_k U_kᵀ − Ũ_k Ũ_kᵀ‖₂: the sine of the largest principal
    /// angle between the two k-dimensional subspaces.
    pub(crate) fn sin_angle(a: &Tensor, b: &Tensor, k: i64) -> f64 {
        let (a, b) = (a.narrow(1, 0, k).to_kind(Kind::Double), b.narrow(1, 0, k).to_kind(Kind::Double));
        let rest = &b - a.mm(&a.tr().mm(&b));
        rest.svd(true, false).1.max().double_value(&[])
    }

    /// The fast head against the exact SVD: the same k, the same subspaces.
    fn agrees(g: &Tensor, gamma: f64, parity: Parity) -> Option<usize> {
        let exact = decompose(g, false).unwrap();
        let s: Vec<f64> = Vec::try_from(exact.s.to_kind(Kind::Double)).unwrap();
        let k = rank_for(&s, gamma, parity).unwrap();
        let opts = Options { start: 8, max_share: 1.0 };
        let Fast::Head(d) = head_for(g, gamma, parity, opts).unwrap() else { return None };
        let fs: Vec<f64> = Vec::try_from(d.s.to_kind(Kind::Double)).unwrap();
        let total = d.energy.as_ref().unwrap()[0];
        assert_eq!(rank_for_total(&fs, total, gamma, parity), Some(k), "γ {gamma} {parity:?}");
        assert!((super::super::svd::explained_total(&fs, k, total) - explained(&s, k)).abs() < 1e-5);
        let k64 = k as i64;
        let (su, sv) = (sin_angle(&exact.u, &d.u, k64), sin_angle(&exact.v, &d.v, k64));
        assert!(su < 1e-3 && sv < 1e-3, "γ {gamma} {parity:?} k {k}: sin θ U {su:e}, V {sv:e}");
        Some(k)
    }

    #[test]
    fn decaying_spectra_give_the_exact_k_and_subspace_for_either_parity() {
        let sigma: Vec<f64> = (0..120).map(|i| (-(i as f64) / 12.0).exp()).collect();
        let g = with_spectrum(300, 200, &sigma, 0);
        for gamma in [0.5, 0.8, 0.9, 0.97] {
            for parity in [Parity::Paper, Parity::Reference] {
                assert!(agrees(&g, gamma, parity).is_some(), "γ {gamma} {parity:?} fell back");
            }
        }
        // A power law (slow decay): still exact where it answers.
        let sigma: Vec<f64> = (0..150).map(|i| 1.0 / (1.0 + i as f64)).collect();
        let g = with_spectrum(250, 400, &sigma, 1);
        assert!(agrees(&g.tr(), 0.8, Parity::Paper).is_some());
    }

    #[test]
    fn a_near_tie_at_gamma_goes_to_the_exact_svd() {
        // s² = [0.5, 0.3, 0.2] scaled, padded with a tiny tail: γ = 0.8 falls exactly on the
        // second cumulative share, so k is decided by rounding; the solver must not guess.
        let mut sigma: Vec<f64> = [0.5f64, 0.3, 0.2].iter().map(|v| v.sqrt()).collect();
        sigma.extend((0..20).map(|i| 1e-9 * (-(i as f64)).exp()));
        let g = with_spectrum(200, 150, &sigma, 2);
        let opts = Options { start: 8, max_share: 1.0 };
        match head_for(&g, 0.8, Parity::Paper, opts).unwrap() {
            Fast::Exact(why) => assert!(why.contains("near tie"), "{why}"),
            Fast::Head(_) => panic!("a near tie must fall back"),
        }
        // Away from the tie the same matrix is answered.
        assert_eq!(agrees(&g, 0.7, Parity::Paper), Some(2));
    }

    #[test]
    fn above_the_cutoff_semu_takes_the_head_and_the_adapter_its_k() {
        use crate::report::diagnostics::Spectrum;
        use crate::semu::{svd::decompose_for, Adapter, Layer};
        let sigma: Vec<f64> = (0..64).map(|i| (-(i as f64) / 8.0).exp()).collect();
        let g = with_spectrum(MIN_DIM, MIN_DIM + 76, &sigma, 4);
        let d = decompose_for(&g, false, 0.9, Parity::Paper, "w").unwrap();
        assert!(d.energy.is_some(), "the head, not the exact SVD");
        let k = rank_for(&sigma, 0.9, Parity::Paper).unwrap();
        let dims = vec![MIN_DIM, MIN_DIM + 76];
        let layer = Layer {
            name: "w".into(),
            kind: LayerKind::MatMul,
            dims: dims.clone(),
            dtype: DType::F32,
            nodes: vec![],
            layout: Default::default(),
        };
        let w = Tensor::zeros(&dims, (Kind::Float, Device::Cpu));
        let a = Adapter::new(&layer, &w, &d, 0.9, Parity::Paper).unwrap().unwrap();
        assert_eq!(a.k, k);
        assert!((a.explained - explained(&sigma, k)).abs() < 1e-5, "shares of ‖G‖², not of the head");
        let sp = Spectrum::with_energy(&a.spectra, a.energy.as_deref()).unwrap();
        assert!((sp.cumulative[k - 1] as f64 - explained(&sigma, k)).abs() < 1e-5);
    }

    #[test]
    fn large_shares_and_small_or_zero_matrices_fall_back() {
        let flat: Vec<f64> = vec![1.0; 100];
        let g = with_spectrum(120, 100, &flat, 3);
        let Fast::Exact(why) = head_for(&g, 0.9, Parity::Paper, Options::default()).unwrap() else {
            panic!("a flat spectrum needs 90% of the values")
        };
        assert!(why.contains("min(m, n)"), "{why}");
        let z = Tensor::zeros([50, 40], (Kind::Float, Device::Cpu));
        assert!(matches!(head_for(&z, 0.9, Parity::Paper, Options::default()).unwrap(), Fast::Exact(_)));
        assert!(!applies(&[4096, 512]) && applies(&[4096, 11008]) && !applies(&[64, 3, 3, 3]));
    }
}

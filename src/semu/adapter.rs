//! Step 5 and 7 of SEMU.md: the adapter `W' = W + U_k R V_kᵀ` with R = 0 at the start, and the
//! fold that writes `W'` back as a plain weight.
use super::layers::{Layer, WeightLayout};
use super::svd::{explained_total, rank_unfloored, spectra, Decomposition, Parity};
use crate::engine::LowRank;
use crate::error::Result;
use tch::{Device, Kind, Tensor};

/// How a layer's rank follows from its gradient's spectrum.
#[derive(Debug, Clone, Copy)]
pub struct RankRule {
    pub gamma: f64,
    pub parity: Parity,
    /// Convs: a rank per input channel (R_i is k_i×k_i, k_i may be 0: the authors' diffusion
    /// code) rather than the largest over the channels for all (their classification code).
    pub per_channel: bool,
    /// At least rank 1 wherever the gradient is not zero.
    pub floor: bool,
    /// The authors' DDPM adapter: U, V and R full (r×r, r = min of the matrix's dims), the rank
    /// a mask on R's gradient applied after the global-norm clip ([`Adapter::mask_grad`]), and
    /// an adapter even where every rank is 0 (its R's gradient counts in that clip).
    pub full: bool,
}

impl RankRule {
    /// The classification rule: one k for all channels, at least 1.
    pub fn layer(gamma: f64, parity: Parity) -> Self {
        RankRule { gamma, parity, per_channel: false, floor: true, full: false }
    }
}

/// A layer's gradient spectra (one row per input channel for a conv) with each row's whole
/// Σσ²: enough to count its adapter at any γ without building it (`--max-trained`).
pub struct Spectrum {
    pub rows: Vec<Vec<f64>>,
    pub totals: Vec<f64>,
    pub conv: bool,
}

impl Spectrum {
    pub fn of(d: &Decomposition) -> Result<Self> {
        let rows = spectra(d)?;
        let totals = match &d.energy {
            Some(e) => e.clone(),
            None => rows.iter().map(|s| s.iter().map(|v| v * v).sum()).collect(),
        };
        Ok(Spectrum { rows, totals, conv: d.conv })
    }

    /// The adapter's k and, for per-channel ranks or a full R, each channel's rank; None when
    /// the layer gets no adapter (a zero gradient, or every rank 0).
    pub fn ranks(&self, rule: &RankRule) -> Option<(usize, Vec<usize>)> {
        let ks: Vec<Option<usize>> = self
            .rows
            .iter()
            .zip(&self.totals)
            .map(|(s, &t)| {
                rank_unfloored(s, t, rule.gamma, rule.parity).map(|k| if rule.floor { k.clamp(1, s.len()) } else { k })
            })
            .collect();
        let k = ks.iter().flatten().copied().max().filter(|&k| k > 0 || rule.full)?;
        let channel_ranks = match (rule.per_channel && self.conv, rule.full) {
            (true, _) => ks.iter().map(|k| k.unwrap_or(0)).collect(),
            (false, true) => vec![k; self.rows.len()],
            (false, false) => Vec::new(),
        };
        Some((k, channel_ranks))
    }

    /// The trainable parameters of the adapter `rule` builds ([`Adapter::trainable`]); 0 for none.
    pub fn trainable(&self, rule: &RankRule) -> i64 {
        match self.ranks(rule) {
            None => 0,
            Some((k, ks)) if ks.is_empty() => (if self.conv { self.rows.len() } else { 1 } * k * k) as i64,
            Some((_, ks)) => ks.iter().map(|&k| (k * k) as i64).sum(),
        }
    }
}

/// The size (elements) from which a 2-D weight trains as factors: below it, forming `W + U R Vᵀ`
/// costs little memory, and small models keep the arithmetic (and bytes) they always had.
pub const FACTORED_FROM: i64 = 1 << 17;

pub struct Adapter {
    pub name: String,
    /// The weight's stored shape: `delta`, `weight` and `folded` have it.
    pub dims: Vec<i64>,
    /// How the stored axes map onto the O×I×k… view that U, R and V act in.
    pub layout: WeightLayout,
    pub conv: bool,
    pub k: usize,
    /// Mean (over input channels for a conv) share of Σs² explained at k.
    pub explained: f64,
    /// Singular values (one row per input channel for a conv), for reports and plots.
    pub spectra: Vec<Vec<f64>>,
    /// Σσ² of each row's whole spectrum when `spectra` holds only its head (fast solver).
    pub energy: Option<Vec<f64>>,
    w: Tensor,
    u: Tensor,
    v: Tensor,
    /// k×k (2-D) or I×k×k (conv); the only trainable tensor.
    pub r: Tensor,
    /// Per input channel, the top-left k_i×k_i block of R that trains (per-channel ranks, or
    /// a full R).
    mask: Option<Tensor>,
    /// U and V of every component, with R r×r (`RankRule::full`); `u`, `v` are their first k.
    full: Option<(Tensor, Tensor)>,
    /// The rank of each input channel (per-channel ranks), else empty.
    pub channel_ranks: Vec<usize>,
}

impl Adapter {
    /// Builds the adapter of `layer` from its gradient's decomposition; None when the gradient
    /// is all zero (the layer gets no adapter).
    pub fn new(layer: &Layer, w: &Tensor, d: &Decomposition, gamma: f64, parity: Parity) -> Result<Option<Self>> {
        Self::with_rule(layer, w, d, &RankRule::layer(gamma, parity))
    }

    /// [`Self::new`] under `rule`; None also when every channel's rank is 0.
    /// `w` is the weight as stored; `d` decomposes its gradient in the O×I×k… view
    /// (`svd::decompose_layer`).
    pub fn with_rule(layer: &Layer, w: &Tensor, d: &Decomposition, rule: &RankRule) -> Result<Option<Self>> {
        check_fits(layer, w, d)?;
        let spectrum = Spectrum::of(d)?;
        let Some((k, channel_ranks)) = spectrum.ranks(rule) else { return Ok(None) };
        let Spectrum { rows: sp, totals, .. } = spectrum;
        let per_channel = rule.per_channel && d.conv;
        let ex = if per_channel {
            sp.iter().zip(&totals).zip(&channel_ranks).map(|((s, &t), &k)| explained_total(s, k, t)).sum::<f64>()
        } else {
            sp.iter().zip(&totals).map(|(s, &t)| explained_total(s, k, t)).sum::<f64>()
        } / sp.len() as f64;
        let k64 = k as i64;
        let (u, v) = (d.u.f_narrow(-1, 0, k64)?.f_contiguous()?, d.v.f_narrow(-1, 0, k64)?.f_contiguous()?);
        let dev = w.device();
        // R's side: k, or every component for a full R.
        let n = if rule.full { d.s.size().last().copied().unwrap_or(0) as usize } else { k };
        let r_dims: Vec<i64> = if d.conv { vec![layer.view_dims()[1], n as i64, n as i64] } else { vec![n as i64; 2] };
        let r = Tensor::f_zeros(&r_dims, (Kind::Float, dev))?.f_set_requires_grad(true)?;
        let mask = if per_channel || rule.full {
            let mut m = vec![0f32; channel_ranks.len() * n * n];
            for (i, &ki) in channel_ranks.iter().enumerate() {
                for a in 0..ki {
                    for b in 0..ki {
                        m[(i * n + a) * n + b] = 1.0;
                    }
                }
            }
            Some(Tensor::f_from_slice(&m)?.f_reshape(&r_dims)?.f_to_device(dev)?)
        } else {
            None
        };
        let full = match rule.full {
            true => Some((d.u.f_to_device(dev)?, d.v.f_to_device(dev)?)),
            false => None,
        };
        Ok(Some(Adapter {
            name: layer.name.clone(),
            dims: layer.dims.clone(),
            layout: layer.layout,
            conv: d.conv,
            k,
            explained: ex,
            spectra: sp,
            energy: d.energy.clone(),
            w: w.f_detach()?,
            u: u.f_to_device(dev)?,
            v: v.f_to_device(dev)?,
            r,
            mask,
            full,
            channel_ranks,
        }))
    }

    /// Trainable parameters: k² (× input channels for a conv; Σ k_i² with per-channel ranks).
    pub fn trainable(&self) -> i64 {
        match &self.channel_ranks[..] {
            [] => self.r.numel() as i64,
            ks => ks.iter().map(|&k| (k * k) as i64).sum(),
        }
    }

    /// R on the bases [`Self::bases`] (k×k, I×k×k for a conv): its untrained entries (outside
    /// each channel's k_i×k_i block) zero.
    pub fn r_effective(&self) -> Result<Tensor> {
        let r = match &self.mask {
            Some(m) => self.r.f_mul(m)?,
            None => self.r.shallow_clone(),
        };
        match self.full {
            Some(_) => Ok(r.f_narrow(-1, 0, self.k as i64)?.f_narrow(-2, 0, self.k as i64)?),
            None => Ok(r),
        }
    }

    /// A full R (`RankRule::full`): zeroes the gradient outside each trained block, as the
    /// authors' code does after the clip and before the optimizer step (untrained entries then
    /// stay exactly 0 under SGD or Adam without weight decay).
    pub fn mask_grad(&self) -> Result<()> {
        if let (Some(_), Some(m)) = (&self.full, &self.mask) {
            let mut g = self.r.grad();
            if g.defined() {
                let _ = g.f_mul_(m)?;
            }
        }
        Ok(())
    }

    /// `(U R, V)`: `U R Vᵀ` is their product. A full R acts unmasked, as the authors' layer
    /// does: its gradient reaches every entry and [`Self::mask_grad`] drops the untrained ones.
    fn factors(&self) -> Result<(Tensor, Tensor)> {
        let (u, r, v) = match &self.full {
            Some((u, v)) => (u, self.r.shallow_clone(), v),
            None => (&self.u, self.r_effective()?, &self.v),
        };
        Ok((u.f_matmul(&r)?, v.shallow_clone()))
    }

    /// `U R Vᵀ` in the weight's stored layout, f32.
    pub fn delta(&self) -> Result<Tensor> {
        let (ur, v) = self.factors()?;
        if self.conv {
            let d = ur.f_matmul(&v.f_transpose(1, 2)?)?; // I×O×K
            let view = d.f_permute([1, 0, 2])?.f_reshape(self.layout.view_dims(&self.dims))?;
            self.layout.stored(&view)
        } else {
            Ok(ur.f_matmul(&v.f_tr()?)?)
        }
    }

    /// `W + U R Vᵀ` left as factors, for the engine's products that never form it (a 2-D
    /// weight of [`FACTORED_FROM`] elements or more); None for a conv or a smaller weight,
    /// which is formed ([`Self::weight`]).
    pub fn low_rank(&self) -> Result<Option<LowRank>> {
        if self.conv || self.dims.iter().product::<i64>() < FACTORED_FROM {
            return Ok(None);
        }
        let (a, b) = self.factors()?;
        Ok(Some(LowRank { base: self.w.shallow_clone(), a, b }))
    }

    /// `W + U R Vᵀ` in the weight's own dtype (differentiable in R).
    pub fn weight(&self) -> Result<Tensor> {
        let kind = self.w.kind();
        Ok(self.w.f_to_kind(Kind::Float)?.f_add(&self.delta()?)?.f_to_kind(kind)?)
    }

    /// The folded weight, detached, on the CPU.
    pub fn folded(&self) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        Ok(self.weight()?.f_detach()?.f_to_device(Device::Cpu)?)
    }

    /// The original weight.
    pub fn original(&self) -> &Tensor {
        &self.w
    }

    /// Drops the adapter's reference to the original weight, once nothing folds or forms it
    /// again (the engine's copy can then be freed); U, V, R and the spectra stay.
    pub fn release_weight(&mut self) {
        self.w = Tensor::new();
    }

    /// The fixed bases `(U_k, V_k)` of `U R Vᵀ` (for the unlearning patch, `crate::patch`).
    pub fn bases(&self) -> (&Tensor, &Tensor) {
        (&self.u, &self.v)
    }
}

/// The weight has the layer's stored shape and the decomposition its O×I×k… view (I matrices
/// O×K for a conv, one m×n matrix otherwise).
fn check_fits(layer: &Layer, w: &Tensor, d: &Decomposition) -> Result<()> {
    let bad = |why: String| Err(crate::error::Error::Tensor { tensor: layer.name.clone(), reason: why });
    if w.size() != layer.dims {
        return bad(format!("the weight is {:?}, the layer {:?}", w.size(), layer.dims));
    }
    if d.layout != layer.layout {
        return bad(format!(
            "its gradient was decomposed as {:?}, the weight is stored {:?}: decompose it with svd::decompose_layer",
            d.layout, layer.layout
        ));
    }
    let view = layer.view_dims();
    let want = if d.conv { vec![view[1], view[0], view[2..].iter().product()] } else { view.clone() };
    let (u, v) = (d.u.size(), d.v.size());
    let got = if d.conv && u.len() == 3 && v.len() == 3 {
        vec![u[0], u[1], v[1]]
    } else if !d.conv && u.len() == 2 && v.len() == 2 {
        vec![u[0], v[0]]
    } else {
        return bad(format!("U {u:?} and V {v:?} do not decompose a {} gradient", if d.conv { "conv" } else { "2-D" }));
    };
    if got != want {
        return bad(format!(
            "the decomposition is of a {got:?} gradient, the weight's O×I×k… view {view:?} needs {want:?} \
             (decompose the gradient with svd::decompose_layer)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semu::layers::LayerKind;
    use crate::semu::svd::decompose;

    fn layer(dims: &[i64], kind: LayerKind) -> Layer {
        Layer {
            name: "w".into(),
            kind,
            dims: dims.to_vec(),
            dtype: crate::onnx::DType::F32,
            nodes: vec![],
            layout: WeightLayout::Native,
        }
    }

    #[test]
    fn r_zero_leaves_the_weight_unchanged_and_r_moves_it_in_the_subspace() {
        tch::manual_seed(3);
        for (dims, kind) in [(vec![8i64, 5], LayerKind::Gemm), (vec![6, 4, 3, 3], LayerKind::Conv)] {
            let conv = kind == LayerKind::Conv;
            let w = Tensor::randn(&dims, (Kind::Float, Device::Cpu));
            let g = Tensor::randn(&dims, (Kind::Float, Device::Cpu));
            let d = decompose(&g, conv).unwrap();
            let a = Adapter::new(&layer(&dims, kind), &w, &d, 0.5, Parity::Paper).unwrap().unwrap();
            assert_eq!(a.weight().unwrap().size(), dims);
            assert_eq!(f64::try_from((a.weight().unwrap() - &w).abs().max()).unwrap(), 0.0);
            let _g = tch::no_grad_guard();
            let _ = a.r.shallow_clone().fill_(1.0);
            let delta = a.delta().unwrap();
            assert!(f64::try_from(delta.abs().max()).unwrap() > 0.0);
            // For 2-D, the change lies in span(U_k) on the left.
            if !conv {
                let uk = d.u.narrow(1, 0, a.k as i64);
                let proj = uk.matmul(&uk.tr()).matmul(&delta);
                assert!(f64::try_from((proj - &delta).abs().max()).unwrap() < 1e-4);
            }
        }
    }

    #[test]
    fn a_channels_last_weight_adapts_in_its_oihw_view_and_folds_back_in_its_own_layout() {
        use crate::semu::svd::decompose_layer;
        tch::manual_seed(5);
        // NhwcConv's [M, kH, kW, C]; its view is [M, C, kH, kW].
        let stored = [6i64, 3, 2, 4];
        let nhwc = Layer { layout: WeightLayout::ChannelsLast, ..layer(&stored, LayerKind::Conv) };
        assert_eq!(nhwc.view_dims(), vec![6, 4, 3, 2]);
        let w = Tensor::randn(stored, (Kind::Float, Device::Cpu));
        let g = Tensor::randn(stored, (Kind::Float, Device::Cpu));
        let d = decompose_layer(&g, &nhwc, 0.5, Parity::Paper).unwrap();
        let a = Adapter::new(&nhwc, &w, &d, 0.5, Parity::Paper).unwrap().unwrap();
        assert_eq!((a.r.size()[0], a.folded().unwrap().size()), (4, stored.to_vec()));
        assert!(a.folded().unwrap().equal(&w), "R = 0 folds to the weight itself");
        // The same adapter on the OIHW copy of the weight, permuted back, is the reference.
        let view_w = w.movedim(-1, 1).contiguous();
        let oihw = layer(&[6, 4, 3, 2], LayerKind::Conv);
        let reference = Adapter::new(
            &oihw,
            &view_w,
            &decompose_layer(&g.movedim(-1, 1), &oihw, 0.5, Parity::Paper).unwrap(),
            0.5,
            Parity::Paper,
        )
        .unwrap()
        .unwrap();
        let _g = tch::no_grad_guard();
        let r = Tensor::randn(a.r.size(), (Kind::Float, Device::Cpu));
        a.r.shallow_clone().copy_(&r);
        reference.r.shallow_clone().copy_(&r);
        let want = reference.folded().unwrap().movedim(1, -1);
        assert!(f64::try_from((a.folded().unwrap() - &w).abs().max()).unwrap() > 0.0);
        assert!(a.folded().unwrap().equal(&want), "fold = the OIHW fold permuted back");
        // A gradient decomposed as if stored OIHW is refused, not misread.
        let wrong = crate::semu::svd::decompose(&g, true).unwrap();
        let e = Adapter::new(&nhwc, &w, &wrong, 0.5, Parity::Paper).err().unwrap().to_string();
        assert!(e.contains("decompose_layer"), "{e}");
    }

    #[test]
    fn a_spectrum_counts_what_the_adapter_trains_at_every_gamma() {
        tch::manual_seed(7);
        let cases = [
            (vec![12i64, 9], LayerKind::Gemm, false),
            (vec![6, 4, 3, 3], LayerKind::Conv, false),
            (vec![6, 4, 3, 3], LayerKind::Conv, true),
        ];
        for (dims, kind, per_channel) in cases {
            let w = Tensor::randn(&dims, (Kind::Float, Device::Cpu));
            let d = decompose(&Tensor::randn(&dims, (Kind::Float, Device::Cpu)), kind == LayerKind::Conv).unwrap();
            let spectrum = Spectrum::of(&d).unwrap();
            let mut seen = Vec::new();
            for gamma in [0.05, 0.3, 0.6, 0.9, 0.99, 1.0] {
                let rule = RankRule { per_channel, ..RankRule::layer(gamma, Parity::Paper) };
                let a = Adapter::with_rule(&layer(&dims, kind), &w, &d, &rule).unwrap().unwrap();
                assert_eq!(spectrum.trainable(&rule), a.trainable(), "{dims:?} per-channel {per_channel} γ {gamma}");
                seen.push(a.trainable());
            }
            assert!(seen.windows(2).all(|p| p[0] <= p[1]) && seen[0] < seen[5], "rises with γ: {seen:?}");
        }
    }

    #[test]
    fn zero_gradient_gives_no_adapter() {
        let w = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let d = decompose(&Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)), false).unwrap();
        assert!(Adapter::new(&layer(&[4, 4], LayerKind::MatMul), &w, &d, 0.9, Parity::Paper).unwrap().is_none());
    }
}

//! Step 5 and 7 of SEMU.md: the adapter `W' = W + U_k R V_kᵀ` with R = 0 at the start, and the
//! fold that writes `W'` back as a plain weight.
use super::layers::Layer;
use super::svd::{explained_total, rank_for_total, spectra, Decomposition, Parity};
use crate::error::Result;
use tch::{Device, Kind, Tensor};

pub struct Adapter {
    pub name: String,
    pub dims: Vec<i64>,
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
}

impl Adapter {
    /// Builds the adapter of `layer` from its gradient's decomposition; None when the gradient
    /// is all zero (the layer gets no adapter).
    pub fn new(layer: &Layer, w: &Tensor, d: &Decomposition, gamma: f64, parity: Parity) -> Result<Option<Self>> {
        let sp = spectra(d)?;
        let totals: Vec<f64> = match &d.energy {
            Some(e) => e.clone(),
            None => sp.iter().map(|s| s.iter().map(|v| v * v).sum()).collect(),
        };
        let ks: Vec<usize> = sp.iter().zip(&totals).filter_map(|(s, &t)| rank_for_total(s, t, gamma, parity)).collect();
        let Some(&k) = ks.iter().max() else { return Ok(None) };
        let ex = sp.iter().zip(&totals).map(|(s, &t)| explained_total(s, k, t)).sum::<f64>() / sp.len() as f64;
        let k64 = k as i64;
        let (u, v) = (d.u.f_narrow(-1, 0, k64)?.f_contiguous()?, d.v.f_narrow(-1, 0, k64)?.f_contiguous()?);
        let dev = w.device();
        let r_dims: Vec<i64> = if d.conv { vec![layer.dims[1], k64, k64] } else { vec![k64, k64] };
        let r = Tensor::f_zeros(&r_dims, (Kind::Float, dev))?.f_set_requires_grad(true)?;
        Ok(Some(Adapter {
            name: layer.name.clone(),
            dims: layer.dims.clone(),
            conv: d.conv,
            k,
            explained: ex,
            spectra: sp,
            energy: d.energy.clone(),
            w: w.f_detach()?,
            u: u.f_to_device(dev)?,
            v: v.f_to_device(dev)?,
            r,
        }))
    }

    /// Trainable parameters: k² (× input channels for a conv).
    pub fn trainable(&self) -> i64 {
        self.r.numel() as i64
    }

    /// `U R Vᵀ` in the weight's layout, f32.
    pub fn delta(&self) -> Result<Tensor> {
        if self.conv {
            let d = self.u.f_matmul(&self.r)?.f_matmul(&self.v.f_transpose(1, 2)?)?; // I×O×K
            Ok(d.f_permute([1, 0, 2])?.f_reshape(&self.dims)?)
        } else {
            Ok(self.u.f_matmul(&self.r)?.f_matmul(&self.v.f_tr()?)?)
        }
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

    /// The fixed bases `(U_k, V_k)` of `U R Vᵀ` (for the unlearning patch, `crate::patch`).
    pub fn bases(&self) -> (&Tensor, &Tensor) {
        (&self.u, &self.v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semu::layers::LayerKind;
    use crate::semu::svd::decompose;

    fn layer(dims: &[i64], kind: LayerKind) -> Layer {
        Layer { name: "w".into(), kind, dims: dims.to_vec(), dtype: crate::onnx::DType::F32, nodes: vec![] }
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
    fn zero_gradient_gives_no_adapter() {
        let w = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        let d = decompose(&Tensor::zeros([4, 4], (Kind::Float, Device::Cpu)), false).unwrap();
        assert!(Adapter::new(&layer(&[4, 4], LayerKind::MatMul), &w, &d, 0.9, Parity::Paper).unwrap().is_none());
    }
}

//! The unlearning patch: the whole change of a SEMU run as a small safetensors file — per adapted
//! weight `U_k`, `R` and `V_k` (`<weight>.U`, `<weight>.R`, `<weight>.V`, f32) and, in
//! `__metadata__`, the weight's name, shape, dtype, k, conv-ness and SHA-256 before and after.
//! [`apply`] re-creates the folded weights byte for byte (the arithmetic of
//! `Adapter::weight`, on the CPU); [`revert`] subtracts the change again.
mod fold;

pub use fold::{apply, max_error, revert, Applied, LayerError, LayerOutcome, Reverted};

use crate::engine::convert::kind_of;
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel, TensorData};
use crate::semu::{Adapter, WeightLayout};
use crate::weights::write::{OutTensor, Source};
use crate::weights::{write_safetensors, Checkpoint};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// `__metadata__` key of the layer list (JSON), and the format tag.
pub const LAYERS_KEY: &str = "semu.patch.layers";
pub const FORMAT_KEY: &str = "semu.patch.format";
pub const FORMAT: &str = "1";

/// One adapted weight, as recorded in the patch's metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LayerInfo {
    pub name: String,
    pub shape: Vec<i64>,
    pub dtype: String,
    pub k: usize,
    pub conv: bool,
    /// How the stored weight's axes map onto the O×I×k… view of U R Vᵀ (absent: native).
    #[serde(default, skip_serializing_if = "WeightLayout::is_native")]
    pub layout: WeightLayout,
    /// SHA-256 of the weight's bytes before and after the fold (in its own dtype).
    pub weight_sha256: String,
    pub folded_sha256: String,
}

pub struct PatchLayer {
    pub info: LayerInfo,
    pub dtype: DType,
    /// f32, on the CPU: U (O×k, or I×O×k for a conv), R (k×k or I×k×k), V (I×k, or I×K×k).
    pub u: Tensor,
    pub r: Tensor,
    pub v: Tensor,
}

pub struct Patch {
    pub layers: Vec<PatchLayer>,
    /// Provenance and any other `__metadata__` keys (the layer list excluded).
    pub metadata: BTreeMap<String, String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn cpu_f32(t: &Tensor) -> Result<Tensor> {
    Ok(t.f_detach()?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_contiguous()?)
}

fn tensor_bytes(t: &Tensor) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; t.numel() * 4];
    t.f_copy_data_u8(&mut buf, t.numel())?;
    Ok(buf)
}

impl Patch {
    /// The patch of a SEMU run: the adapters' bases and trained R, with each weight's hash
    /// before (`model`) and after (`folded`, as exported) the fold.
    pub fn from_adapters(
        model: &OnnxModel,
        adapters: &[Adapter],
        folded: &HashMap<String, TensorData>,
        metadata: BTreeMap<String, String>,
    ) -> Result<Self> {
        let _g = tch::no_grad_guard();
        let mut layers = Vec::new();
        for a in adapters {
            let init = model.initializer(&a.name).ok_or_else(|| Error::Tensor {
                tensor: a.name.clone(),
                reason: "adapted but not an initializer of the model".into(),
            })?;
            let w = model.tensor(init)?;
            let after = folded.get(&a.name).ok_or_else(|| Error::Tensor {
                tensor: a.name.clone(),
                reason: "adapted but not among the folded weights".into(),
            })?;
            let (u, v) = a.bases();
            layers.push(PatchLayer {
                info: LayerInfo {
                    name: a.name.clone(),
                    shape: a.dims.clone(),
                    dtype: w.dtype.to_string(),
                    k: a.k,
                    conv: a.conv,
                    layout: a.layout,
                    weight_sha256: sha256_hex(&w.bytes),
                    folded_sha256: sha256_hex(&after.bytes),
                },
                dtype: w.dtype,
                u: cpu_f32(u)?,
                r: cpu_f32(&a.r_effective()?)?,
                v: cpu_f32(v)?,
            });
        }
        Ok(Patch { layers, metadata })
    }

    /// Writes the patch atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let infos: Vec<&LayerInfo> = self.layers.iter().map(|l| &l.info).collect();
        let mut meta = self.metadata.clone();
        meta.insert(FORMAT_KEY.into(), FORMAT.into());
        meta.insert(LAYERS_KEY.into(), serde_json::to_string(&infos).map_err(|e| Error::msg(e.to_string()))?);
        let mut tensors = Vec::new();
        for l in &self.layers {
            for (part, t) in [("U", &l.u), ("R", &l.r), ("V", &l.v)] {
                let bytes = tensor_bytes(t)?;
                let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
                let out = OutTensor {
                    dtype: safetensors::tensor::Dtype::F32,
                    shape,
                    len: bytes.len(),
                    source: Source::Bytes(Cow::Owned(bytes)),
                };
                tensors.push((format!("{}.{part}", l.info.name), out));
            }
        }
        write_safetensors(path, tensors, meta)
    }

    /// Reads a patch written by [`Patch::write`], checking that every layer has its three
    /// tensors with shapes that fit its recorded shape and k.
    pub fn read(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::msg(format!("{}: not a semu patch: {why}", path.display()));
        let ck = Checkpoint::open(&[path.to_path_buf()])?;
        let mut metadata = ck.metadata.clone();
        if metadata.remove(FORMAT_KEY).as_deref() != Some(FORMAT) {
            return Err(bad(format!("no `{FORMAT_KEY}: {FORMAT}` in its metadata")));
        }
        let list = metadata.remove(LAYERS_KEY).ok_or_else(|| bad(format!("no `{LAYERS_KEY}` in its metadata")))?;
        let infos: Vec<LayerInfo> = serde_json::from_str(&list).map_err(|e| bad(format!("{LAYERS_KEY}: {e}")))?;
        let mut layers = Vec::new();
        for info in infos {
            let get = |part: &str| -> Result<Tensor> {
                let key = format!("{}.{part}", info.name);
                let e = ck.entries.get(&key).ok_or_else(|| bad(format!("tensor `{key}` is missing")))?;
                if e.dtype != safetensors::tensor::Dtype::F32 {
                    return Err(bad(format!("tensor `{key}` is {:?}, not F32", e.dtype)));
                }
                Ok(Tensor::f_from_data_size(ck.bytes(e), &e.dims(), Kind::Float)?)
            };
            let (u, r, v) = (get("U")?, get("R")?, get("V")?);
            let dtype =
                parse_dtype(&info.dtype).ok_or_else(|| bad(format!("{}: dtype '{}'", info.name, info.dtype)))?;
            kind_of(dtype)?;
            check_shapes(&info, &u, &r, &v).map_err(|why| bad(format!("{}: {why}", info.name)))?;
            layers.push(PatchLayer { info, dtype, u, r, v });
        }
        Ok(Patch { layers, metadata })
    }
}

fn parse_dtype(s: &str) -> Option<DType> {
    [DType::F32, DType::F16, DType::BF16, DType::F64].into_iter().find(|d| d.to_string() == s)
}

/// U R Vᵀ must have the weight's shape: 2-D O×I, or a conv's O×I×kh×kw (its view, for a
/// channels-last weight) as I batches of O×K.
fn check_shapes(info: &LayerInfo, u: &Tensor, r: &Tensor, v: &Tensor) -> std::result::Result<(), String> {
    let (s, k) = (&info.layout.view_dims(&info.shape), info.k as i64);
    let want: [Vec<i64>; 3] = if info.conv {
        if s.len() < 3 {
            return Err(format!("a conv weight needs ≥ 3 dims, got {s:?}"));
        }
        let kk: i64 = s[2..].iter().product();
        [vec![s[1], s[0], k], vec![s[1], k, k], vec![s[1], kk, k]]
    } else {
        if s.len() != 2 {
            return Err(format!("a 2-D weight was expected, got {s:?}"));
        }
        [vec![s[0], k], vec![k, k], vec![s[1], k]]
    };
    for ((name, t), w) in [("U", u), ("R", r), ("V", v)].iter().zip(want) {
        if t.size() != w {
            return Err(format!("{name} is {:?}, expected {w:?} for shape {s:?} and k = {k}", t.size()));
        }
    }
    Ok(())
}

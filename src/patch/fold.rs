//! Applying and reverting a patch. The fold repeats `Adapter::delta` / `Adapter::weight` op for
//! op (same tensors, same layouts, same order of operations, f32, then the weight's dtype), so on
//! the CPU the result is the exact bytes `semu unlearn --device cpu` exported.
use super::{sha256_hex, Patch, PatchLayer};
use crate::engine::convert::{from_tensor, kind_of, to_tensor};
use crate::error::{Error, Result};
use crate::onnx::{OnnxModel, TensorData};
use serde::Serialize;
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// `U R Vᵀ` in the weight's layout, f32 — the same sequence as `Adapter::delta`.
fn delta(l: &PatchLayer) -> Result<Tensor> {
    if l.info.conv {
        let d = l.u.f_matmul(&l.r)?.f_matmul(&l.v.f_transpose(1, 2)?)?; // I×O×K
        let view = d.f_permute([1, 0, 2])?.f_reshape(l.info.layout.view_dims(&l.info.shape))?;
        l.info.layout.stored(&view)
    } else {
        Ok(l.u.f_matmul(&l.r)?.f_matmul(&l.v.f_tr()?)?)
    }
}

/// The model's current value of a patched weight, checked against the patch's record.
fn weight(model: &OnnxModel, l: &PatchLayer) -> Result<TensorData> {
    let err = |reason: String| Error::Tensor { tensor: l.info.name.clone(), reason };
    let init = model
        .initializer(&l.info.name)
        .ok_or_else(|| err(format!("the patch changes it, but {} has no such initializer", model.path.display())))?;
    let w = model.tensor(init)?;
    if w.dims != l.info.shape || w.dtype != l.dtype {
        return Err(err(format!(
            "the patch is for {} {:?}, {} has {} {:?}",
            l.dtype,
            l.info.shape,
            model.path.display(),
            w.dtype,
            w.dims
        )));
    }
    Ok(w)
}

/// Per weight: whether its bytes are the ones the patch recorded.
#[derive(Debug, Clone, Serialize)]
pub struct LayerOutcome {
    pub name: String,
    /// The input weight is the one the patch was made from (apply) or produced (revert).
    pub input_matches: bool,
    /// The result is byte-identical to the recorded output (apply) or original (revert).
    pub output_matches: bool,
}

pub struct Applied {
    pub replacements: HashMap<String, TensorData>,
    pub layers: Vec<LayerOutcome>,
}

pub type Reverted = Applied;

fn mismatch_error(model: &OnnxModel, names: &[String], what: &str) -> Error {
    Error::msg(format!(
        "{}: {} weight(s) are not the ones {what}: {} (--force uses them anyway)",
        model.path.display(),
        names.len(),
        names.join(", ")
    ))
}

/// `W + U R Vᵀ` for every layer of `patch`, in each weight's dtype. Unless `force`, every weight
/// must be the one the patch was made from (by SHA-256).
pub fn apply(model: &OnnxModel, patch: &Patch, force: bool) -> Result<Applied> {
    run(model, patch, force, 1.0)
}

/// `W' − U R Vᵀ`: undoes [`apply`] up to floating-point rounding. Unless `force`, every weight
/// must be the one the patch produced.
pub fn revert(model: &OnnxModel, patch: &Patch, force: bool) -> Result<Reverted> {
    run(model, patch, force, -1.0)
}

fn run(model: &OnnxModel, patch: &Patch, force: bool, sign: f64) -> Result<Applied> {
    let _g = tch::no_grad_guard();
    let forward = sign > 0.0;
    let mut replacements = HashMap::new();
    let mut layers = Vec::new();
    let mut wrong = Vec::new();
    for l in &patch.layers {
        let w = weight(model, l)?;
        let (want_in, want_out) = if forward {
            (&l.info.weight_sha256, &l.info.folded_sha256)
        } else {
            (&l.info.folded_sha256, &l.info.weight_sha256)
        };
        let input_matches = &sha256_hex(&w.bytes) == want_in;
        if !input_matches {
            wrong.push(l.info.name.clone());
        }
        // Big weights: free each copy as soon as the next exists (bytes → tensor → sum → bytes),
        // and add in place on our own f32 copy (same elementwise result as `Adapter::weight`).
        let mut f = to_tensor(&w)?.f_to_kind(Kind::Float)?;
        drop(w);
        let d = delta(l)?;
        if forward {
            let _ = f.f_add_(&d)?;
        } else {
            let _ = f.f_sub_(&d)?;
        }
        drop(d);
        let data = from_tensor(&f.f_to_kind(kind_of(l.dtype)?)?, l.dtype)?;
        layers.push(LayerOutcome {
            name: l.info.name.clone(),
            input_matches,
            output_matches: &sha256_hex(&data.bytes) == want_out,
        });
        replacements.insert(l.info.name.clone(), data);
    }
    if !wrong.is_empty() && !force {
        let what = if forward { "the patch was made from" } else { "the patch produced" };
        return Err(mismatch_error(model, &wrong, what));
    }
    Ok(Applied { replacements, layers })
}

/// Max |reverted − original| of one weight.
#[derive(Debug, Clone, Serialize)]
pub struct LayerError {
    pub name: String,
    pub max_abs_error: f64,
    pub differing_elements: usize,
}

/// How far `replacements` are from the same initializers of `original`.
pub fn max_error(replacements: &HashMap<String, TensorData>, original: &OnnxModel) -> Result<Vec<LayerError>> {
    let mut out = Vec::new();
    let mut names: Vec<&String> = replacements.keys().collect();
    names.sort();
    for name in names {
        let ours = &replacements[name];
        let init = original.initializer(name).ok_or_else(|| Error::Tensor {
            tensor: name.clone(),
            reason: format!("{} has no such initializer", original.path.display()),
        })?;
        let theirs = original.tensor(init)?;
        if theirs.dims != ours.dims {
            return Err(Error::Tensor {
                tensor: name.clone(),
                reason: format!("{:?} here, {:?} in {}", ours.dims, theirs.dims, original.path.display()),
            });
        }
        let (a, b) = (ours.to_f32_vec()?, theirs.to_f32_vec()?);
        let max = a.iter().zip(&b).map(|(x, y)| (f64::from(*x) - f64::from(*y)).abs()).fold(0.0, f64::max);
        let size = ours.dtype.size().unwrap_or(1).max(1);
        let differing = ours.bytes.chunks(size).zip(theirs.bytes.chunks(size)).filter(|(x, y)| x != y).count();
        out.push(LayerError { name: name.clone(), max_abs_error: max, differing_elements: differing });
    }
    Ok(out)
}

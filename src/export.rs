//! Fold and export: changed weights become plain initializers of the original model, in their
//! original dtype; everything else in the file stays as it was. SEMU folds `W + U R Vᵀ`; the
//! baselines hand over their final weight tensors; both leave through [`weight_replacements`].
use crate::engine::convert::from_tensor;
use crate::engine::Overrides;
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel, TensorData};
use crate::semu::Adapter;
use std::collections::HashMap;

/// `W + U R Vᵀ` for every adapter, as ONNX data of the initializer's own dtype.
pub fn folded_weights(model: &OnnxModel, adapters: &[Adapter]) -> Result<HashMap<String, TensorData>> {
    let folded = adapters.iter().map(|a| Ok((a.name.clone(), a.folded()?))).collect::<Result<HashMap<_, _>>>()?;
    weight_replacements(model, &folded)
}

/// Final weight tensors (any device, any float kind) as replacements for the model's
/// initializers of the same names, each converted to its initializer's dtype; the shape must
/// match the initializer's.
pub fn weight_replacements(model: &OnnxModel, weights: &dyn Overrides) -> Result<HashMap<String, TensorData>> {
    weight_replacements_with(model, weights, &mut |_, _| {})
}

/// [`weight_replacements`], telling `progress` how many tensors of how many are converted.
pub fn weight_replacements_with(
    model: &OnnxModel,
    weights: &dyn Overrides,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<HashMap<String, TensorData>> {
    let _g = tch::no_grad_guard();
    let names = weights.names();
    progress(0, names.len());
    // One weight formed at a time, its tensor dropped once it is bytes.
    names
        .iter()
        .enumerate()
        .map(|(i, &name)| {
            let t = weights.whole(name)?.ok_or_else(|| Error::msg(format!("internal: '{name}' named but not held")))?;
            let init = model.initializer(name).ok_or_else(|| Error::Tensor {
                tensor: name.to_string(),
                reason: "changed but not an initializer of the model".into(),
            })?;
            if t.size() != init.dims {
                return Err(Error::Tensor {
                    tensor: name.to_string(),
                    reason: format!("new value has shape {:?}, the initializer {:?}", t.size(), init.dims),
                });
            }
            let dtype = DType::from_onnx(init.data_type())?;
            let data = from_tensor(&t, dtype)?;
            progress(i + 1, names.len());
            Ok((name.to_string(), data))
        })
        .collect()
}

/// How many elements of the model's initializers the replacements actually change (compared in
/// the file's own dtype, so a change that rounds away in f16 does not count), and how many
/// elements all initializers hold together.
pub fn changed_elements(model: &OnnxModel, replacements: &HashMap<String, TensorData>) -> Result<(i64, i64)> {
    let total: i64 = model.graph().initializer.iter().map(|t| t.dims.iter().product::<i64>()).sum();
    let mut changed = 0i64;
    for (name, new) in replacements {
        let init = model.initializer(name).ok_or_else(|| Error::Tensor {
            tensor: name.clone(),
            reason: "replaced but not an initializer of the model".into(),
        })?;
        let old = model.tensor(init)?;
        if old.dtype != new.dtype || old.bytes.len() != new.bytes.len() {
            changed += new.numel() as i64;
            continue;
        }
        // Element-wise byte comparison in the stored dtype: equal bytes = unchanged value.
        let size = new.dtype.size().unwrap_or(1).max(1);
        changed += old.bytes.chunks(size).zip(new.bytes.chunks(size)).filter(|(a, b)| a != b).count() as i64;
    }
    Ok((changed, total))
}

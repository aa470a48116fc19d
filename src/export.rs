//! Fold and export: the adapted weights become plain initializers of the original model, in
//! their original dtype; everything else in the file stays as it was.
use crate::engine::convert::from_tensor;
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel, TensorData};
use crate::semu::Adapter;
use std::collections::HashMap;

/// `W + U R Vᵀ` for every adapter, as ONNX data of the initializer's own dtype.
pub fn folded_weights(model: &OnnxModel, adapters: &[Adapter]) -> Result<HashMap<String, TensorData>> {
    adapters
        .iter()
        .map(|a| {
            let init = model.initializer(&a.name).ok_or_else(|| Error::Tensor {
                tensor: a.name.clone(),
                reason: "adapted but not an initializer of the model".into(),
            })?;
            let dtype = DType::from_onnx(init.data_type())?;
            Ok((a.name.clone(), from_tensor(&a.folded()?, dtype)?))
        })
        .collect()
}

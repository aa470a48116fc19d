//! Checks of data against a model, before any work: labels within the model's classes, inputs of
//! the shape the model declares, something to work on. Errors name the data and the sample.
use super::Dataset;
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;

/// The data set is not empty and every label is a class id of a `classes`-way classifier.
pub fn validate(ds: &dyn Dataset, classes: i64) -> Result<()> {
    if ds.is_empty() {
        return Err(Error::msg(format!("{}: holds no samples", ds.source())));
    }
    let labels = ds.labels()?;
    if let Some((i, &bad)) = labels.iter().enumerate().find(|(_, &v)| v < 0 || v >= classes) {
        return Err(Error::msg(format!(
            "{}: {} has label {bad}, outside the model's {classes} classes (0..={})",
            ds.source(),
            ds.sample_name(i),
            classes - 1
        )));
    }
    Ok(())
}

/// The model input the data feeds — `name`, or the only graph input that is not an initializer —
/// and its declared dims (`None` where symbolic or unknown).
pub fn model_input(model: &OnnxModel, name: Option<&str>) -> Result<(String, Vec<Option<i64>>)> {
    let g = model.graph();
    let inputs: Vec<_> = g.input.iter().filter(|i| !g.initializer.iter().any(|t| t.name() == i.name())).collect();
    let path = model.path.display();
    let chosen = match name {
        Some(n) => inputs.iter().find(|i| i.name() == n).ok_or_else(|| {
            let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
            Error::msg(format!("{path}: no graph input '{n}' (inputs: {})", names.join(", ")))
        })?,
        None => match inputs.as_slice() {
            [one] => one,
            _ => {
                let names: Vec<&str> = inputs.iter().map(|i| i.name()).collect();
                return Err(Error::msg(format!(
                    "{path}: {} graph inputs [{}]: name the one the data feeds",
                    names.len(),
                    names.join(", ")
                )));
            }
        },
    };
    let dims = crate::task::declared_dims(chosen);
    Ok((chosen.name().to_string(), dims))
}

/// One sample's shape fits the model input's declared shape after its batch dimension (symbolic
/// dims fit anything; a model that declares no shape accepts any).
pub fn check_input_shape(ds: &dyn Dataset, model: &OnnxModel, input: Option<&str>) -> Result<()> {
    let (name, dims) = model_input(model, input)?;
    if dims.is_empty() {
        return Ok(());
    }
    let shape = ds.sample_shape()?;
    let fits = shape.len() + 1 == dims.len() && shape.iter().zip(&dims[1..]).all(|(&s, d)| d.is_none_or(|d| d == s));
    if fits {
        return Ok(());
    }
    let show: Vec<String> = dims.iter().map(|d| d.map_or("?".into(), |d| d.to_string())).collect();
    let mut hint = String::new();
    if let ([c, h, w], [_, Some(mc), mh, mw]) = (shape.as_slice(), dims.as_slice()) {
        if c != mc && (*mc == 1 || *mc == 3) {
            hint.push_str(if *mc == 1 { "; grayscale images?" } else { "; RGB images (no grayscale)?" });
        }
        if let (Some(mh), Some(mw)) = (mh, mw) {
            if (h, w) != (mh, mw) {
                hint.push_str(&format!("; resize the images to {mh},{mw}?"));
            }
        }
    }
    Err(Error::msg(format!(
        "{}: {} has shape {shape:?}, but the model input '{name}' of {} takes [{}] (batch first){hint}",
        ds.source(),
        ds.sample_name(0),
        model.path.display(),
        show.join(", ")
    )))
}

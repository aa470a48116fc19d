//! Record arrays: an `.npz` or `.safetensors` file that holds no `x` but one array per graph
//! input, named as the inputs (any dtype, first dim N), and the labels as `y` or `labels`
//! (optional where labels are not required: then all 0). Held in memory; a batch selects rows of
//! every array, keeping its dtype.
use super::{Batch, Dataset};
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

pub struct RecordDataset {
    source: String,
    /// The inputs, sorted by name.
    inputs: Vec<(String, Tensor)>,
    y: Tensor,
}

const INTEGER: [Kind; 5] = [Kind::Int64, Kind::Int, Kind::Int16, Kind::Int8, Kind::Uint8];

impl RecordDataset {
    /// Checks and keeps `arrays` (named as read; a trailing `.npy` is dropped): every one N×…,
    /// the labels `y` or `labels` integer and of length N. `source` names the data in messages.
    pub fn from_arrays(
        source: impl Into<String>,
        arrays: Vec<(String, Tensor)>,
        labels_required: bool,
    ) -> Result<Self> {
        let source = source.into();
        let bad = |why: String| Error::msg(format!("{source}: {why}"));
        let mut inputs = Vec::new();
        let mut labels: Option<(String, Tensor)> = None;
        for (name, t) in arrays {
            let name = name.strip_suffix(".npy").map(str::to_string).unwrap_or(name);
            if name == "y" || name == "labels" {
                if let Some((first, _)) = &labels {
                    return Err(bad(format!("holds both `{first}` and `{name}`: keep one array of labels")));
                }
                labels = Some((name, t));
            } else {
                inputs.push((name, t));
            }
        }
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        if inputs.is_empty() {
            return Err(bad("holds no input arrays: give `x`, or one array per graph input".into()));
        }
        // N: the number of labels, else the first input's first dim.
        let (n, by) = match &labels {
            Some((name, y)) => (y.size().first().copied().unwrap_or(0), name.as_str()),
            None => (inputs[0].1.size().first().copied().unwrap_or(0), inputs[0].0.as_str()),
        };
        for (name, t) in &inputs {
            if t.dim() == 0 || t.size()[0] != n {
                return Err(bad(format!(
                    "array `{name}` is {:?}, but `{by}` has {n} samples: every array needs the same first dim N",
                    t.size()
                )));
            }
            if t.is_floating_point() && !bool::try_from(t.f_isfinite()?.f_all()?)? {
                return Err(bad(format!("array `{name}` holds NaN or Inf values")));
            }
        }
        if n == 0 {
            return Err(bad("holds no samples".into()));
        }
        let y = match labels {
            Some((name, y)) => {
                if y.dim() != 1 {
                    return Err(bad(format!("`{name}` is {:?}: need one label per sample (N)", y.size())));
                }
                if !INTEGER.contains(&y.kind()) {
                    return Err(bad(format!("`{name}` must hold integer class ids, found {:?}", y.kind())));
                }
                y.f_to_kind(Kind::Int64)?
            }
            None if labels_required => {
                let names: Vec<&str> = inputs.iter().map(|(n, _)| n.as_str()).collect();
                return Err(bad(format!(
                    "has no labels: add an array `y` (or `labels`) of {n} class ids (found: {})",
                    names.join(", ")
                )));
            }
            None => Tensor::f_zeros([n], (Kind::Int64, tch::Device::Cpu))?,
        };
        Ok(RecordDataset { source, inputs, y })
    }

    /// The input names, sorted.
    pub fn input_names(&self) -> Vec<&str> {
        self.inputs.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The input a plain `batch` returns: `input_ids` where there is one, else the first by name.
    fn main_input(&self) -> &Tensor {
        let i = self.inputs.iter().position(|(n, _)| n == "input_ids").unwrap_or(0);
        &self.inputs[i].1
    }

    fn index(&self, idx: &[usize]) -> Result<Tensor> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source, self.len())));
        }
        let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        Ok(Tensor::f_from_slice(&i)?)
    }
}

impl Dataset for RecordDataset {
    fn len(&self) -> usize {
        self.y.size()[0] as usize
    }
    /// The main input (`input_ids`, else the first by name), in its dtype, and the labels.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let it = self.index(idx)?;
        Ok((self.main_input().f_index_select(0, &it)?, self.y.f_index_select(0, &it)?))
    }
    fn records(&self, idx: &[usize]) -> Result<Batch> {
        let it = self.index(idx)?;
        let inputs =
            self.inputs.iter().map(|(n, t)| Ok((n.clone(), t.f_index_select(0, &it)?))).collect::<Result<Vec<_>>>()?;
        Ok(Batch { inputs, y: self.y.f_index_select(0, &it)? })
    }
    fn source(&self) -> String {
        self.source.clone()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok(Vec::<i64>::try_from(&self.y)?)
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(self.main_input().size()[1..].to_vec())
    }
}

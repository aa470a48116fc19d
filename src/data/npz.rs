//! Data held in memory as two tensors: `.npz` archives holding `x` (N×…) and `y` (integer class
//! ids, N), `.npy` pairs (see `npy.rs`), and tables parsed from CSV. An `.npz` without `x` holds
//! record arrays (`records.rs`).
use super::{Dataset, RecordDataset};
use crate::error::{Error, Result};
use std::path::Path;
use tch::{Kind, Tensor};

pub struct NpzDataset {
    source: String,
    x: Tensor,
    y: Tensor,
}

impl NpzDataset {
    /// An `.npz` archive with arrays `x` and `y`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::from_xy(path, read(path)?)
    }

    /// An `.npz` archive: `x` and `y` as [`Self::open`] reads them, or, without `x`, record
    /// arrays (one per graph input, see [`RecordDataset`]).
    pub fn open_any(path: &Path, labels_required: bool) -> Result<Box<dyn Dataset>> {
        let arrays = read(path)?;
        if !arrays.iter().any(|(n, _)| n == "x" || n == "x.npy") {
            return Ok(Box::new(RecordDataset::from_arrays(path.display().to_string(), arrays, labels_required)?));
        }
        Ok(Box::new(Self::from_xy(path, arrays)?))
    }

    /// The arrays `x` and `y` of an archive read from `path`.
    fn from_xy(path: &Path, arrays: Vec<(String, Tensor)>) -> Result<Self> {
        let get = |name: &str| {
            arrays
                .iter()
                .find(|(n, _)| n == name || n == &format!("{name}.npy"))
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| {
                    Error::msg(format!("{}: has no array `{name}` (found: {})", path.display(), names(&arrays)))
                })
        };
        Self::from_tensors(path.display().to_string(), get("x")?, get("y")?)
    }

    /// Checks and keeps `x` (any numeric type, stored as float32) and `y` (integer class ids).
    /// `source` names the data in messages.
    pub fn from_tensors(source: impl Into<String>, x: Tensor, y: Tensor) -> Result<Self> {
        let source = source.into();
        let bad = |reason: String| Error::msg(format!("{source}: {reason}"));
        if x.size().first() != y.size().first() || y.dim() != 1 {
            return Err(bad(format!("`x` is {:?} and `y` is {:?}: need N×… and N", x.size(), y.size())));
        }
        if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
            return Err(bad(format!("`y` must hold integer class ids, found {:?}", y.kind())));
        }
        if y.size()[0] == 0 {
            return Err(bad("holds no samples".into()));
        }
        let x = x.f_to_kind(Kind::Float)?;
        let ds = NpzDataset { source, x, y: y.f_to_kind(Kind::Int64)? };
        let all: Vec<usize> = (0..ds.len()).collect();
        super::check_finite(&ds.x, &all, &ds)?;
        Ok(ds)
    }

    /// The whole label vector (for class counts and selections).
    pub fn label_tensor(&self) -> &Tensor {
        &self.y
    }
}

/// Every array of the archive at `path`.
fn read(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |reason: String| Error::msg(format!("{}: {reason}", path.display()));
    if !path.exists() {
        return Err(bad("no such file".into()));
    }
    super::npy_header::check_npz(path)?;
    let arrays = super::npy::read_npz(path)?;
    for (name, t) in &arrays {
        super::real_numbers(t).map_err(|why| bad(format!("array `{name}` {why}")))?;
    }
    Ok(arrays)
}

fn names(a: &[(String, Tensor)]) -> String {
    a.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

impl Dataset for NpzDataset {
    fn len(&self) -> usize {
        self.y.size()[0] as usize
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source, self.len())));
        }
        let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let it = Tensor::f_from_slice(&i)?;
        Ok((self.x.f_index_select(0, &it)?, self.y.f_index_select(0, &it)?))
    }
    fn source(&self) -> String {
        self.source.clone()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok(Vec::<i64>::try_from(&self.y)?)
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(self.x.size()[1..].to_vec())
    }
}

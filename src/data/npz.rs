//! `.npz` archives holding `x` (float32, N×…) and `y` (int64 class ids, N).
use super::Dataset;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub struct NpzDataset {
    path: PathBuf,
    x: Tensor,
    y: Tensor,
}

impl NpzDataset {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |reason: String| Error::msg(format!("{}: {reason}", path.display()));
        if !path.exists() {
            return Err(bad("no such file".into()));
        }
        let arrays = Tensor::read_npz(path).map_err(|e| bad(format!("not a readable .npz archive ({e})")))?;
        let get = |name: &str| {
            arrays
                .iter()
                .find(|(n, _)| n == name || n == &format!("{name}.npy"))
                .map(|(_, t)| t.shallow_clone())
                .ok_or_else(|| bad(format!("has no array `{name}` (found: {})", names(&arrays))))
        };
        let x = get("x")?;
        let y = get("y")?;
        if x.size().first() != y.size().first() || y.dim() != 1 {
            return Err(bad(format!("`x` is {:?} and `y` is {:?}: need N×… and N", x.size(), y.size())));
        }
        if !matches!(y.kind(), Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
            return Err(bad(format!("`y` must hold integer class ids, found {:?}", y.kind())));
        }
        let x = x.f_to_kind(Kind::Float)?;
        let finite = x.f_isfinite()?.f_all()?.f_int64_value(&[])? == 1;
        if !finite {
            let bad_row = x.f_isfinite()?.f_logical_not()?.f_flatten(1, -1)?.f_any_dim(1, false)?.f_nonzero()?;
            let row = bad_row.f_int64_value(&[0, 0]).unwrap_or(-1);
            return Err(bad(format!("`x` holds NaN or Inf values (first at sample {row})")));
        }
        if y.size()[0] == 0 {
            return Err(bad("holds no samples".into()));
        }
        Ok(NpzDataset { path: path.to_path_buf(), x, y: y.f_to_kind(Kind::Int64)? })
    }

    /// The whole label vector (for class counts and selections).
    pub fn labels(&self) -> &Tensor {
        &self.y
    }
}

fn names(a: &[(String, Tensor)]) -> String {
    a.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
}

impl Dataset for NpzDataset {
    fn len(&self) -> usize {
        self.y.size()[0] as usize
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let i: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
        let it = Tensor::f_from_slice(&i)?;
        Ok((self.x.f_index_select(0, &it)?, self.y.f_index_select(0, &it)?))
    }
    fn source(&self) -> String {
        self.path.display().to_string()
    }
}

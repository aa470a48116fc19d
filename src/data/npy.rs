//! `.npy` pairs: inputs in one file (`x.npy`), labels in another (`y.npy`), as `np.save` writes
//! them. Held in memory like an `.npz` archive.
use super::NpzDataset;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use tch::Tensor;

impl NpzDataset {
    /// Inputs from `x` and labels from `y`, both `.npy` files with the same first dimension.
    pub fn open_npy_pair(x: &Path, y: &Path) -> Result<Self> {
        let read = |p: &Path| {
            if !p.is_file() {
                return Err(Error::msg(format!("{}: no such file", p.display())));
            }
            super::npy_header::check_npy(p)?;
            Tensor::read_npy(p).map_err(|e| Error::msg(format!("{}: not a readable .npy array ({e})", p.display())))
        };
        let (xt, yt) = (read(x)?, read(y)?);
        Self::from_tensors(format!("{} + {}", x.display(), y.display()), xt, yt)
    }
}

/// The labels beside an inputs file: `y.npy` next to `x.npy`, or `NAME_y.npy` next to `NAME_x.npy`.
pub fn sibling_labels(x: &Path) -> Result<PathBuf> {
    let stem = x.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let y_stem = if stem == "x" { Some("y".to_string()) } else { stem.strip_suffix("_x").map(|s| format!("{s}_y")) };
    match y_stem.map(|s| x.with_file_name(format!("{s}.npy"))) {
        Some(y) if y.is_file() => Ok(y),
        Some(y) => Err(Error::msg(format!("{}: its labels file {} does not exist", x.display(), y.display()))),
        None => Err(Error::msg(format!(
            "{}: a .npy file holds inputs only: give the labels file too (or name the pair x.npy and y.npy)",
            x.display()
        ))),
    }
}

//! safetensors files holding `x` (N×…, any float or integer type) and `y` (integer class ids,
//! N). The file is memory-mapped; labels are read at open, inputs row by row per batch. A file
//! without `x` holds record arrays (`records.rs`).
use super::{Dataset, RecordDataset};
use crate::error::{Error, Result};
use memmap2::Mmap;
use safetensors::tensor::{Dtype, SafeTensors};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

pub struct SafetensorsDataset {
    path: PathBuf,
    map: Mmap,
    /// Byte offset of `x` in the file, its element type and one row's shape.
    x_start: usize,
    x_kind: Kind,
    row_shape: Vec<i64>,
    row_bytes: usize,
    y: Vec<i64>,
}

impl SafetensorsDataset {
    pub fn open(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::msg(format!("{}: {why}", path.display()));
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only mapping, read only as bytes; a file truncated by another process while
        // mapped is outside what this tool guards against.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (header, meta) =
            SafeTensors::read_metadata(&map).map_err(|e| bad(format!("not a readable safetensors file ({e:?})")))?;
        let tensors = meta.tensors();
        let get = |name: &str| {
            tensors.get(name).ok_or_else(|| {
                let mut found: Vec<&String> = tensors.keys().collect();
                found.sort();
                bad(format!("has no tensor `{name}` (found: {found:?})"))
            })
        };
        let (x, y) = (get("x")?, get("y")?);
        let n = x.shape.first().copied().unwrap_or(0);
        if y.shape.len() != 1 || y.shape[0] != n {
            return Err(bad(format!("`x` is {:?} and `y` is {:?}: need N×… and N", x.shape, y.shape)));
        }
        if n == 0 {
            return Err(bad("holds no samples".into()));
        }
        let data = 8 + header;
        let x_kind = kind(x.dtype).ok_or_else(|| bad(format!("`x` has unsupported type {:?}", x.dtype)))?;
        let y_bytes = &map[data + y.data_offsets.0..data + y.data_offsets.1];
        let y = labels(y.dtype, y_bytes)
            .ok_or_else(|| bad(format!("`y` must hold integer class ids, found {:?}", y.dtype)))?;
        let row_shape: Vec<i64> = x.shape[1..].iter().map(|&d| d as i64).collect();
        let row_bytes = x.shape[1..].iter().product::<usize>() * x.dtype.size();
        Ok(SafetensorsDataset {
            path: path.to_path_buf(),
            x_start: data + x.data_offsets.0,
            x_kind,
            row_shape,
            row_bytes,
            y,
            map,
        })
    }
}

/// A safetensors file: `x` and `y` as [`SafetensorsDataset::open`] reads them, or, without `x`,
/// record arrays (one per graph input, see [`RecordDataset`]), read into memory.
pub fn open_any(path: &Path, labels_required: bool) -> Result<Box<dyn Dataset>> {
    let bad = |why: String| Error::msg(format!("{}: {why}", path.display()));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: as in `SafetensorsDataset::open`: read-only, read as bytes.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let st = SafeTensors::deserialize(&map).map_err(|e| bad(format!("not a readable safetensors file ({e:?})")))?;
    if st.names().iter().any(|n| n.as_str() == "x") {
        return Ok(Box::new(SafetensorsDataset::open(path)?));
    }
    let mut arrays = Vec::new();
    for (name, view) in st.tensors() {
        let k = match view.dtype() {
            Dtype::BOOL => Kind::Bool,
            d => kind(d).ok_or_else(|| bad(format!("array `{name}` has unsupported type {d:?}")))?,
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        arrays.push((name, Tensor::f_from_data_size(view.data(), &shape, k)?));
    }
    Ok(Box::new(RecordDataset::from_arrays(path.display().to_string(), arrays, labels_required)?))
}

fn kind(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        _ => return None,
    })
}

/// Little-endian integers of any width to i64.
fn labels(d: Dtype, b: &[u8]) -> Option<Vec<i64>> {
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> i64) -> Vec<i64> {
        b.chunks_exact(N).map(|c| f(c.try_into().expect("chunks_exact gives N bytes"))).collect()
    }
    Some(match d {
        Dtype::U8 => b.iter().map(|&v| i64::from(v)).collect(),
        Dtype::I8 => b.iter().map(|&v| i64::from(v as i8)).collect(),
        Dtype::I16 => each(b, |c| i64::from(i16::from_le_bytes(c))),
        Dtype::U16 => each(b, |c| i64::from(u16::from_le_bytes(c))),
        Dtype::I32 => each(b, |c| i64::from(i32::from_le_bytes(c))),
        Dtype::U32 => each(b, |c| i64::from(u32::from_le_bytes(c))),
        Dtype::I64 => each(b, i64::from_le_bytes),
        _ => return None,
    })
}

impl Dataset for SafetensorsDataset {
    fn len(&self) -> usize {
        self.y.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut bytes = Vec::with_capacity(idx.len() * self.row_bytes);
        for &i in idx {
            if i >= self.len() {
                return Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source(), self.len())));
            }
            let at = self.x_start + i * self.row_bytes;
            bytes.extend_from_slice(&self.map[at..at + self.row_bytes]);
        }
        let mut shape = vec![idx.len() as i64];
        shape.extend(&self.row_shape);
        let x = Tensor::f_from_data_size(&bytes, &shape, self.x_kind)?.f_to_kind(Kind::Float)?;
        super::check_finite(&x, idx, self)?;
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        Ok((x, Tensor::f_from_slice(&y)?))
    }
    fn source(&self) -> String {
        self.path.display().to_string()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok(self.y.clone())
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(self.row_shape.clone())
    }
}

//! Labelled data for unlearning and evaluation. Every format implements [`Dataset`]: a length and
//! random access to batches, so the training loop never needs the whole set at once.
use crate::error::Result;
use tch::Tensor;

pub mod npz;

pub use npz::NpzDataset;

/// A classification data set: preprocessed inputs `x` (float32) and class ids `y` (int64).
pub trait Dataset {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `idx`, stacked: (x: B×…, y: B), on the CPU.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)>;
    /// Where the data came from (file, folder), for messages and reports.
    fn source(&self) -> String;
}

/// Consecutive batches of `size` over `order`.
pub fn batches(order: &[usize], size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(size.max(1))
}

/// Opens a data set by its path (format chosen by extension).
pub fn open(path: &std::path::Path) -> Result<Box<dyn Dataset>> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npz") => Ok(Box::new(NpzDataset::open(path)?)),
        _ => Err(crate::Error::msg(format!(
            "{}: unknown data format (expected a .npz file with arrays `x` and `y`)",
            path.display()
        ))),
    }
}

/// All labels of a data set, in order.
pub fn labels(ds: &dyn Dataset) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(ds.len());
    let order: Vec<usize> = (0..ds.len()).collect();
    for idx in batches(&order, 4096) {
        out.extend(Vec::<i64>::try_from(ds.batch(idx)?.1)?);
    }
    Ok(out)
}

/// The samples of `inner` at `idx` (e.g. one class of a test set).
pub struct Subset<'a> {
    pub inner: &'a dyn Dataset,
    pub idx: Vec<usize>,
}

impl Dataset for Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let mapped: Vec<usize> = idx.iter().map(|&i| self.idx[i]).collect();
        self.inner.batch(&mapped)
    }
    fn source(&self) -> String {
        format!("{} ({} selected samples)", self.inner.source(), self.idx.len())
    }
}

//! Chosen samples of another data set: [`Subset`] borrows it (e.g. one class of a test set for a
//! moment), [`OwnedSubset`] shares it (forget and retain sets that outlive their selection).
use super::{Batch, Dataset};
use crate::error::{Error, Result};
use std::rc::Rc;
use tch::Tensor;

/// The samples of `inner` at `idx`.
pub struct Subset<'a> {
    pub inner: &'a dyn Dataset,
    pub idx: Vec<usize>,
}

/// The samples of a shared `inner` at `idx`.
pub struct OwnedSubset {
    pub inner: Rc<dyn Dataset>,
    pub idx: Vec<usize>,
    /// What the selection was ("class 3", "10% at random, seed 0"), for `source`.
    pub label: String,
}

fn map(sub: &[usize], inner: &dyn Dataset, idx: &[usize]) -> Result<Vec<usize>> {
    idx.iter()
        .map(|&i| {
            sub.get(i).copied().ok_or_else(|| {
                Error::msg(format!("{}: no selected sample {i} (it holds {})", inner.source(), sub.len()))
            })
        })
        .collect()
}

fn labels(sub: &[usize], inner: &dyn Dataset) -> Result<Vec<i64>> {
    let all = inner.labels()?;
    sub.iter()
        .map(|&i| {
            all.get(i)
                .copied()
                .ok_or_else(|| Error::msg(format!("{}: no sample {i} (it holds {})", inner.source(), all.len())))
        })
        .collect()
}

fn name(sub: &[usize], inner: &dyn Dataset, i: usize) -> String {
    match sub.get(i) {
        Some(&j) => format!("selected sample {i} = {}", inner.sample_name(j)),
        None => format!("selected sample {i}"),
    }
}

impl Dataset for Subset<'_> {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        self.inner.batch(&map(&self.idx, self.inner, idx)?)
    }
    fn records(&self, idx: &[usize]) -> Result<Batch> {
        self.inner.records(&map(&self.idx, self.inner, idx)?)
    }
    fn source(&self) -> String {
        format!("{} ({} selected samples)", self.inner.source(), self.idx.len())
    }
    fn labels(&self) -> Result<Vec<i64>> {
        labels(&self.idx, self.inner)
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        self.inner.sample_shape()
    }
    fn sample_name(&self, i: usize) -> String {
        name(&self.idx, self.inner, i)
    }
}

impl Dataset for OwnedSubset {
    fn len(&self) -> usize {
        self.idx.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        self.inner.batch(&map(&self.idx, self.inner.as_ref(), idx)?)
    }
    fn records(&self, idx: &[usize]) -> Result<Batch> {
        self.inner.records(&map(&self.idx, self.inner.as_ref(), idx)?)
    }
    fn source(&self) -> String {
        format!("{} ({}: {} samples)", self.inner.source(), self.label, self.idx.len())
    }
    fn labels(&self) -> Result<Vec<i64>> {
        labels(&self.idx, self.inner.as_ref())
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        self.inner.sample_shape()
    }
    fn sample_name(&self, i: usize) -> String {
        name(&self.idx, self.inner.as_ref(), i)
    }
}

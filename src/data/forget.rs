//! Forget selection from one training set: by class, a seeded random fraction, an indices file,
//! explicit indices, or the training samples equal to those of another data set. The retain set
//! is the complement. The exact indices and their SHA-256 go into the report.
use super::{batches, Dataset, OwnedSubset};
use crate::error::{Error, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;

/// How to choose the samples to forget.
#[derive(Clone)]
pub enum ForgetBy {
    /// Every training sample of these classes.
    Classes(Vec<i64>),
    /// `floor(fraction × N)` samples drawn without replacement with `seed`.
    Fraction { fraction: f64, seed: u64 },
    /// Indices in a file, one a line (blank lines and `#` comments allowed).
    IndicesFile(PathBuf),
    /// These indices.
    Indices(Vec<usize>),
    /// The training samples equal (inputs and label) to the samples of this set; each of its
    /// samples must be found.
    Samples(Rc<dyn Dataset>),
}

/// The forget set, its complement, and what identifies the choice.
pub struct ForgetSplit {
    pub forget: OwnedSubset,
    pub retain: OwnedSubset,
    /// Indices into the training set, ascending, each once.
    pub forget_indices: Vec<usize>,
    /// [`indices_sha256`] of `forget_indices`.
    pub sha256: String,
    pub count: usize,
    /// What was asked ("classes [3]", "10% at random, seed 0", …).
    pub description: String,
}

/// What a report records of a selection.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForgetRecord {
    pub selection: String,
    pub count: usize,
    pub sha256: String,
    pub indices: Vec<usize>,
}

impl ForgetSplit {
    pub fn record(&self) -> ForgetRecord {
        ForgetRecord {
            selection: self.description.clone(),
            count: self.count,
            sha256: self.sha256.clone(),
            indices: self.forget_indices.clone(),
        }
    }
}

/// SHA-256 (hex) of the indices written one a line (`"{i}\n"`): the digest of an indices file
/// listing them in this order, so `sha256sum` can check it.
pub fn indices_sha256(indices: &[usize]) -> String {
    let mut h = Sha256::new();
    for i in indices {
        h.update(format!("{i}\n").as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads an indices file for a training set of `n` samples: one index a line; errors name the line.
pub fn read_indices(path: &std::path::Path, n: usize) -> Result<Vec<usize>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut out = Vec::new();
    for (k, line) in text.lines().enumerate() {
        let (at, t) = (format!("{}:{}", path.display(), k + 1), line.trim());
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let i: usize = t
            .parse()
            .map_err(|_| Error::msg(format!("{at}: `{t}` is not a sample index (one non-negative integer a line)")))?;
        if i >= n {
            return Err(Error::msg(format!(
                "{at}: index {i} is outside the training set ({n} samples, 0..={})",
                n - 1
            )));
        }
        if let Some(first) = seen.insert(i, k + 1) {
            return Err(Error::msg(format!("{at}: index {i} repeats line {first}")));
        }
        out.push(i);
    }
    if out.is_empty() {
        return Err(Error::msg(format!("{}: lists no index", path.display())));
    }
    Ok(out)
}

/// Splits `train` into the forget set chosen by `by` and its complement.
pub fn select_forget(train: Rc<dyn Dataset>, by: &ForgetBy) -> Result<ForgetSplit> {
    let n = train.len();
    let src = train.source();
    if n == 0 {
        return Err(Error::msg(format!("{src}: the training set holds no samples")));
    }
    let (forget, description): (BTreeSet<usize>, String) = match by {
        ForgetBy::Classes(classes) => {
            if classes.is_empty() {
                return Err(Error::msg("no class to forget given"));
            }
            let labels = train.labels()?;
            for c in classes {
                if !labels.contains(c) {
                    return Err(Error::msg(format!("{src}: class {c} has no sample to forget")));
                }
            }
            let set = (0..n).filter(|&i| classes.contains(&labels[i])).collect();
            let list: Vec<String> = classes.iter().map(i64::to_string).collect();
            (set, format!("class{} {}", if classes.len() > 1 { "es" } else { "" }, list.join(",")))
        }
        ForgetBy::Fraction { fraction, seed } => {
            if !(*fraction > 0.0 && *fraction <= 1.0) {
                return Err(Error::msg(format!("forget fraction {fraction} must be in (0, 1]")));
            }
            let k = (fraction * n as f64).floor() as usize;
            if k == 0 {
                return Err(Error::msg(format!("{src}: a fraction {fraction} of {n} samples selects none")));
            }
            let mut rng = StdRng::seed_from_u64(*seed);
            let set = rand::seq::index::sample(&mut rng, n, k).into_iter().collect();
            (set, format!("{}% at random, seed {seed}", fraction * 100.0))
        }
        ForgetBy::IndicesFile(path) => {
            let set = read_indices(path, n)?.into_iter().collect();
            (set, format!("indices from {}", path.display()))
        }
        ForgetBy::Indices(list) => {
            let mut set = BTreeSet::new();
            for (k, &i) in list.iter().enumerate() {
                if i >= n {
                    return Err(Error::msg(format!("forget index {i} (item {k}) is outside {src} ({n} samples)")));
                }
                if !set.insert(i) {
                    return Err(Error::msg(format!("forget index {i} is listed twice")));
                }
            }
            if set.is_empty() {
                return Err(Error::msg("no forget index given"));
            }
            let what = format!("{} given indices", set.len());
            (set, what)
        }
        ForgetBy::Samples(f) => (matching(train.as_ref(), f.as_ref())?, format!("the samples of {}", f.source())),
    };
    let forget_indices: Vec<usize> = forget.iter().copied().collect();
    let retain_indices: Vec<usize> = (0..n).filter(|i| !forget.contains(i)).collect();
    Ok(ForgetSplit {
        sha256: indices_sha256(&forget_indices),
        count: forget_indices.len(),
        forget: OwnedSubset {
            inner: train.clone(),
            idx: forget_indices.clone(),
            label: format!("forget: {description}"),
        },
        retain: OwnedSubset { inner: train, idx: retain_indices, label: format!("retain: all but {description}") },
        forget_indices,
        description,
    })
}

/// The input names of a record set (text, record arrays), sorted; `None` for a set of one
/// unnamed input `x`.
fn record_names(ds: &dyn Dataset) -> Result<Option<Vec<String>>> {
    let b = ds.records(&[0])?;
    if let [(name, _)] = b.inputs.as_slice() {
        if name.is_empty() {
            return Ok(None);
        }
    }
    let mut names: Vec<String> = b.inputs.into_iter().map(|(n, _)| n).collect();
    names.sort();
    Ok(Some(names))
}

/// SHA-256 of each sample's input bytes and label. A set of one input `x` is hashed batch by
/// batch as float32; a record set sample by sample (so that a text is not padded to others):
/// every input's name, dtype, shape and bytes, in name order.
fn digests(ds: &dyn Dataset) -> Result<Vec<[u8; 32]>> {
    if ds.is_empty() {
        return Ok(Vec::new());
    }
    if record_names(ds)?.is_some() {
        return (0..ds.len()).map(|i| record_digest(ds, i)).collect();
    }
    let order: Vec<usize> = (0..ds.len()).collect();
    let mut out = Vec::with_capacity(ds.len());
    for idx in batches(&order, 1024) {
        let (x, y) = ds.batch(idx)?;
        let x = Vec::<f32>::try_from(x.f_flatten(0, -1)?)?;
        let y = Vec::<i64>::try_from(y)?;
        let per = x.len() / idx.len().max(1);
        for (row, label) in x.chunks(per.max(1)).zip(&y) {
            let mut h = Sha256::new();
            row.iter().for_each(|v| h.update(v.to_le_bytes()));
            h.update(label.to_le_bytes());
            out.push(h.finalize().into());
        }
    }
    Ok(out)
}

fn record_digest(ds: &dyn Dataset, i: usize) -> Result<[u8; 32]> {
    let b = ds.records(&[i])?;
    let mut inputs: Vec<&(String, tch::Tensor)> = b.inputs.iter().collect();
    inputs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, t) in inputs {
        let t = t.f_contiguous()?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut bytes, numel)?;
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update(format!("{:?}{:?}", t.kind(), t.size()).as_bytes());
        h.update(&bytes);
    }
    for label in Vec::<i64>::try_from(&b.y)? {
        h.update(label.to_le_bytes());
    }
    Ok(h.finalize().into())
}

/// Training indices whose sample equals one of `forget`'s (all copies of a duplicated sample).
fn matching(train: &dyn Dataset, forget: &dyn Dataset) -> Result<BTreeSet<usize>> {
    if forget.is_empty() {
        return Err(Error::msg(format!("{}: the forget set holds no samples", forget.source())));
    }
    let (tn, fnames) = (record_names(train)?, record_names(forget)?);
    if tn != fnames {
        let show = |n: &Option<Vec<String>>| n.as_ref().map_or("one input x".to_string(), |n| n.join(", "));
        return Err(Error::msg(format!(
            "{}: samples with inputs [{}] cannot come from {} (inputs [{}])",
            forget.source(),
            show(&fnames),
            train.source(),
            show(&tn)
        )));
    }
    let (ts, fs) = (train.sample_shape()?, forget.sample_shape()?);
    if tn.is_none() && ts != fs {
        return Err(Error::msg(format!(
            "{}: samples of shape {fs:?} cannot come from {} (shape {ts:?})",
            forget.source(),
            train.source()
        )));
    }
    let wanted = digests(forget)?;
    let index: HashMap<[u8; 32], usize> = wanted.iter().enumerate().map(|(i, d)| (*d, i)).collect();
    let mut found = vec![false; wanted.len()];
    let mut set = BTreeSet::new();
    for (i, d) in digests(train)?.iter().enumerate() {
        if let Some(&f) = index.get(d) {
            set.insert(i);
            found[f] = true;
        }
    }
    // A forget sample listed twice shares a digest with its first copy.
    for (f, d) in wanted.iter().enumerate() {
        if !found[f] && !found[index[d]] {
            return Err(Error::msg(format!(
                "{}: {} is not in the training set {} (an explicit forget set must hold training samples)",
                forget.source(),
                forget.sample_name(f),
                train.source()
            )));
        }
    }
    Ok(set)
}

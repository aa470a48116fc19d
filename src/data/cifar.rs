//! CIFAR-10 / CIFAR-100 binary batches. A record is the label byte(s) then 3072 bytes of a 32×32
//! image, R, G and B planes in turn (already CHW). CIFAR-10: 1 label byte (`data_batch_*.bin`,
//! `test_batch.bin`); CIFAR-100: coarse then fine label (`train.bin`, `test.bin`), the fine one is
//! used. Files are memory-mapped and a batch converts only its records (uint8 / 255, then mean/std).
use super::{Dataset, OnRead, Preprocess};
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::path::{Path, PathBuf};
use tch::Tensor;

const PIXELS: usize = 3 * 32 * 32;

/// Which half of a folder holding both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Split {
    #[default]
    Train,
    Test,
}

pub struct Cifar {
    files: Vec<(PathBuf, Mmap)>,
    /// 1 for CIFAR-10, 2 for CIFAR-100.
    label_bytes: usize,
    /// Number of records before each file, and in all.
    starts: Vec<usize>,
    pre: Preprocess,
}

/// The batch files of a CIFAR folder for `split`, or `None` when the folder holds none.
pub fn files_in(dir: &Path, split: Split) -> Result<Option<Vec<PathBuf>>> {
    let mut train10: Vec<(u32, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(n) = name.strip_prefix("data_batch_").and_then(|n| n.strip_suffix(".bin")) {
            if let Ok(n) = n.parse() {
                train10.push((n, path.clone()));
            }
        }
    }
    train10.sort();
    let has = |n: &str| dir.join(n).is_file();
    let found = match split {
        Split::Train if !train10.is_empty() => train10.into_iter().map(|(_, p)| p).collect(),
        Split::Train if has("train.bin") => vec![dir.join("train.bin")],
        Split::Test if has("test_batch.bin") => vec![dir.join("test_batch.bin")],
        Split::Test if has("test.bin") => vec![dir.join("test.bin")],
        _ if !train10.is_empty() || ["train.bin", "test.bin", "test_batch.bin"].iter().any(|n| has(n)) => {
            return Err(Error::msg(format!("{}: CIFAR folder without the {split:?} split", dir.display())))
        }
        _ => return Ok(None),
    };
    Ok(Some(found))
}

impl Cifar {
    /// Opens CIFAR batch files (all of one kind). The kind comes from the file names, else from
    /// the file size.
    pub fn open(files: &[PathBuf], pre: &Preprocess) -> Result<Self> {
        Self::open_with_progress(files, pre, None)
    }

    /// [`Self::open`], telling `progress` how many bytes of the files are mapped and checked.
    pub fn open_with_progress(files: &[PathBuf], pre: &Preprocess, progress: OnRead) -> Result<Self> {
        let first = files.first().ok_or_else(|| Error::msg("no CIFAR batch file given"))?;
        if pre.grayscale == Some(true) || pre.image_size.is_some_and(|s| s != [32, 32]) {
            return Err(Error::msg(format!(
                "{}: CIFAR images are 32×32 RGB; resizing or grayscale is not supported for them",
                first.display()
            )));
        }
        pre.check(3).map_err(|e| Error::msg(format!("{}: {e}", first.display())))?;
        let mut maps = Vec::new();
        let mut label_bytes = None;
        let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
        let mut done = 0;
        for path in files {
            let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
            // SAFETY: the mapping is read-only and only ever read as plain bytes; a file truncated
            // by another process while mapped is outside what this tool guards against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
            let lb = kind(path, map.len())?;
            if *label_bytes.get_or_insert(lb) != lb {
                return Err(Error::msg(format!("{}: mixes CIFAR-10 and CIFAR-100 batch files", path.display())));
            }
            done += map.len() as u64;
            maps.push((path.clone(), map));
            if let Some(p) = progress {
                p(done, Some(total.max(done)));
            }
        }
        let label_bytes = label_bytes.unwrap_or(1);
        let mut starts = vec![0];
        for (_, m) in &maps {
            starts.push(starts.last().copied().unwrap_or(0) + m.len() / (label_bytes + PIXELS));
        }
        let ds = Cifar { files: maps, label_bytes, starts, pre: pre.clone() };
        if ds.is_empty() {
            return Err(Error::msg(format!("{}: holds no samples", ds.source())));
        }
        Ok(ds)
    }

    fn record(&self, i: usize) -> (usize, &[u8]) {
        let f = self.starts.partition_point(|&s| s <= i) - 1;
        let size = self.label_bytes + PIXELS;
        let at = (i - self.starts[f]) * size;
        (f, &self.files[f].1[at..at + size])
    }

    fn label(&self, i: usize) -> i64 {
        let (_, r) = self.record(i);
        i64::from(r[self.label_bytes - 1])
    }
}

/// Label bytes per record: 1 (CIFAR-10) or 2 (CIFAR-100).
fn kind(path: &Path, len: usize) -> Result<usize> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let by_name = if name.starts_with("data_batch_") || name == "test_batch.bin" {
        Some(1)
    } else if name == "train.bin" || name == "test.bin" {
        Some(2)
    } else {
        None
    };
    let fits = |lb: usize| len > 0 && len.is_multiple_of(lb + PIXELS);
    match by_name {
        Some(lb) if fits(lb) => Ok(lb),
        Some(lb) => Err(Error::msg(format!(
            "{}: {len} bytes is not a whole number of CIFAR-{} records ({} bytes each)",
            path.display(),
            if lb == 1 { 10 } else { 100 },
            lb + PIXELS
        ))),
        None => match (fits(1), fits(2)) {
            (true, false) => Ok(1),
            (false, true) => Ok(2),
            _ => Err(Error::msg(format!(
                "{}: not a CIFAR-10 or CIFAR-100 batch file (size {len} bytes)",
                path.display()
            ))),
        },
    }
}

impl Dataset for Cifar {
    fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        if let Some(&i) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source(), self.len())));
        }
        let mut x = Vec::with_capacity(idx.len() * PIXELS);
        for &i in idx {
            let (_, rec) = self.record(i);
            let start = x.len();
            x.extend(rec[self.label_bytes..].iter().map(|&b| f32::from(b) / 255.0));
            self.pre.normalise(&mut x[start..], 3);
        }
        let y: Vec<i64> = idx.iter().map(|&i| self.label(i)).collect();
        let x = Tensor::f_from_slice(&x)?.f_view([idx.len() as i64, 3, 32, 32])?;
        Ok((x, Tensor::f_from_slice(&y)?))
    }
    fn source(&self) -> String {
        match self.files.as_slice() {
            [(one, _)] => one.display().to_string(),
            many => {
                let dir = many[0].0.parent().map(|d| d.display().to_string()).unwrap_or_default();
                let names: Vec<String> = many
                    .iter()
                    .map(|(p, _)| p.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .collect();
                format!("{dir} ({})", names.join(", "))
            }
        }
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok((0..self.len()).map(|i| self.label(i)).collect())
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        Ok(vec![3, 32, 32])
    }
    fn sample_name(&self, i: usize) -> String {
        if i >= self.len() {
            return format!("sample {i}");
        }
        let (f, _) = self.record(i);
        format!("sample {i} (record {} of {})", i - self.starts[f], self.files[f].0.display())
    }
}

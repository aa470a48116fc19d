//! Labelled data for unlearning and evaluation. Every format implements [`Dataset`]: a length and
//! random access to batches, so the training loop never needs the whole set at once. Image
//! formats (ImageFolder, CIFAR) decode only the samples a batch asks for.
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::Tensor;

pub mod cifar;
pub mod csv_table;
pub mod forget;
pub mod image_folder;
pub mod npy;
pub mod npy_header;
pub mod npz;
pub mod preprocess;
pub mod records;
pub mod safetensors_file;
pub mod subset;
pub mod text;
pub mod text_config;
mod text_rows;
pub mod validate;

pub use cifar::{Cifar, Split};
pub use csv_table::{CsvDataset, CsvOptions};
pub use forget::{indices_sha256, read_indices, select_forget, ForgetBy, ForgetSplit};
pub use image_folder::ImageFolder;
pub use npz::NpzDataset;
pub use preprocess::Preprocess;
pub use records::RecordDataset;
pub use safetensors_file::SafetensorsDataset;
pub use subset::{OwnedSubset, Subset};
pub use text::{TextDataset, TextOptions};
pub use validate::{check_input_shape, model_input, validate};

/// One batch of records: named inputs (each B×…, any dtype) and targets `y` (B, int64: class
/// ids; zeros where the task takes its targets from the inputs, as a language model does).
/// An input named "" is "the model's one input": formats that hold a single `x` produce it.
pub struct Batch {
    pub inputs: Vec<(String, Tensor)>,
    pub y: Tensor,
}

impl Batch {
    /// The input called `name`.
    pub fn input(&self, name: &str) -> Option<&Tensor> {
        self.inputs.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
    /// Number of records.
    pub fn len(&self) -> usize {
        self.y.size().first().copied().unwrap_or(0) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A data set of records: preprocessed inputs and class ids `y` (int64). Image and array formats
/// hold one float input `x`; record formats (text, npz with one array per graph input) hold
/// several named inputs and override [`Dataset::records`].
pub trait Dataset {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The samples at `idx`, stacked: (x: B×…, y: B), on the CPU.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)>;
    /// The records at `idx`, every input named. The default wraps [`Dataset::batch`]'s `x` as
    /// the one unnamed input.
    fn records(&self, idx: &[usize]) -> Result<Batch> {
        let (x, y) = self.batch(idx)?;
        Ok(Batch { inputs: vec![(String::new(), x)], y })
    }
    /// Where the data came from (file, folder), for messages and reports.
    fn source(&self) -> String;
    /// Every label, in order. Formats that know their labels without decoding inputs override it.
    fn labels(&self) -> Result<Vec<i64>> {
        let order: Vec<usize> = (0..self.len()).collect();
        let mut out = Vec::with_capacity(self.len());
        for idx in batches(&order, 4096) {
            out.extend(Vec::<i64>::try_from(self.batch(idx)?.1)?);
        }
        Ok(out)
    }
    /// The shape of one input (without the batch dimension), read from the first sample.
    fn sample_shape(&self) -> Result<Vec<i64>> {
        if self.is_empty() {
            return Err(Error::msg(format!("{}: holds no samples", self.source())));
        }
        Ok(self.batch(&[0])?.0.size()[1..].to_vec())
    }
    /// How to name sample `i` in a message: its index, and its file or line where there is one.
    fn sample_name(&self, i: usize) -> String {
        format!("sample {i}")
    }
}

/// Consecutive batches of `size` over `order`.
pub fn batches(order: &[usize], size: usize) -> impl Iterator<Item = &[usize]> {
    order.chunks(size.max(1))
}

/// How to read a data set beyond its path. `Default` reads every format with its defaults.
#[derive(Debug, Clone, Default)]
pub struct DataSpec {
    /// Image preprocessing. Applies to ImageFolder and CIFAR only: array and CSV files are taken
    /// to hold model inputs as they are.
    pub preprocess: Preprocess,
    /// CSV: label column and header handling.
    pub csv: CsvOptions,
    /// Text (`.jsonl`, `.csv` with a text column): columns, tokenizer, lengths, string labels;
    /// and, for text and record arrays, whether labels are required.
    pub text: TextOptions,
    /// CIFAR folders hold both splits: which one to read (training batches by default).
    pub split: Split,
    /// `.npy` inputs: the labels file, when it is not `y.npy` beside `x.npy`.
    pub y: Option<PathBuf>,
    /// Told how far opening a data set has got (for a progress display).
    pub progress: Option<ReadProgress>,
}

/// How far opening a data set has got: `done` of `total` (when known) `unit`s ("bytes",
/// "images"). The last report for a set has `total == Some(done)`.
#[derive(Debug, Clone, Copy)]
pub struct Reading<'a> {
    pub source: &'a Path,
    pub done: u64,
    pub total: Option<u64>,
    pub unit: &'static str,
}

/// A callback for [`Reading`]s. The library only reports; the CLI draws.
#[derive(Clone)]
pub struct ReadProgress(Arc<dyn Fn(&Reading) + Send + Sync>);

impl ReadProgress {
    pub fn new(f: impl Fn(&Reading) + Send + Sync + 'static) -> Self {
        ReadProgress(Arc::new(f))
    }
}

impl std::fmt::Debug for ReadProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadProgress")
    }
}

/// A reader's progress callback: `(done, total when known)`, in the reader's own unit.
pub type OnRead<'a> = Option<&'a dyn Fn(u64, Option<u64>)>;

/// Formats read in one call (npz, npy, safetensors) report their size before and after.
fn in_one_go(
    files: &[&Path],
    on: &dyn Fn(u64, Option<u64>),
    open: impl FnOnce() -> Result<Box<dyn Dataset>>,
) -> Result<Box<dyn Dataset>> {
    let size: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    if size > 0 {
        on(0, Some(size));
    }
    let ds = open()?;
    on(size, Some(size));
    Ok(ds)
}

/// Opens a data set by its path with default options (see [`open_with`]).
pub fn open(path: &Path) -> Result<Box<dyn Dataset>> {
    open_with(path, &DataSpec::default())
}

/// Opens a data set by its path, the format chosen by extension or folder layout:
/// `.npz`; `.npy` (x, with `spec.y` or `y.npy` beside it) or a folder holding `x.npy` and `y.npy`;
/// `.safetensors` (`x`, `y`); `.npz`/`.safetensors` without `x`: record arrays, one per graph
/// input; `.jsonl` text; `.csv`: text when it has the text column (or `--text-column` was given),
/// else a numeric table; CIFAR `.bin` files or their folder; any other folder is an ImageFolder
/// (`root/<class>/<image>`).
pub fn open_with(path: &Path, spec: &DataSpec) -> Result<Box<dyn Dataset>> {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    if !path.exists() {
        return Err(Error::msg(format!("{}: no such file or folder", path.display())));
    }
    let on = |unit: &'static str| {
        move |done, total| {
            if let Some(p) = &spec.progress {
                (p.0)(&Reading { source: path, done, total, unit })
            }
        }
    };
    let (bytes, images, texts) = (on("bytes"), on("images"), on("texts"));
    if path.is_dir() {
        if path.join("x.npy").is_file() {
            let (x, y) = (path.join("x.npy"), path.join("y.npy"));
            return in_one_go(&[&x, &y], &bytes, || Ok(Box::new(NpzDataset::open_npy_pair(&x, &y)?)));
        }
        if let Some(files) = cifar::files_in(path, spec.split)? {
            return Ok(Box::new(Cifar::open_with_progress(&files, &spec.preprocess, Some(&bytes))?));
        }
        return Ok(Box::new(ImageFolder::open_with_progress(path, &spec.preprocess, Some(&images))?));
    }
    match ext.as_deref() {
        Some("npz") => in_one_go(&[path], &bytes, || NpzDataset::open_any(path, spec.text.labels_required)),
        Some("npy") => {
            let y = match &spec.y {
                Some(y) => y.clone(),
                None => npy::sibling_labels(path)?,
            };
            in_one_go(&[path, &y], &bytes, || Ok(Box::new(NpzDataset::open_npy_pair(path, &y)?)))
        }
        Some("safetensors") => {
            in_one_go(&[path], &bytes, || safetensors_file::open_any(path, spec.text.labels_required))
        }
        Some("jsonl") => Ok(Box::new(TextDataset::open_with_progress(path, &spec.text, Some(&texts))?)),
        Some("csv") if text::is_text_csv(path, &spec.text)? => {
            Ok(Box::new(TextDataset::open_with_progress(path, &spec.text, Some(&texts))?))
        }
        Some("csv") => Ok(Box::new(CsvDataset::open_with_progress(path, &spec.csv, Some(&bytes))?)),
        Some("bin") => Ok(Box::new(Cifar::open_with_progress(&[path.to_path_buf()], &spec.preprocess, Some(&bytes))?)),
        _ => Err(Error::msg(format!(
            "{}: unknown data format (expected .npz, .npy, .safetensors, .csv, .jsonl, CIFAR .bin, or an \
             ImageFolder directory root/<class>/<image>)",
            path.display()
        ))),
    }
}

/// All labels of a data set, in order.
pub fn labels(ds: &dyn Dataset) -> Result<Vec<i64>> {
    ds.labels()
}

/// Data sets hold real numbers: a complex array would be cast to its real part without a word.
pub(crate) fn real_numbers(t: &Tensor) -> std::result::Result<(), String> {
    match t.kind() {
        tch::Kind::ComplexHalf | tch::Kind::ComplexFloat | tch::Kind::ComplexDouble => {
            Err(format!("holds complex numbers ({:?}); data sets hold real inputs and integer labels", t.kind()))
        }
        _ => Ok(()),
    }
}

/// Fails on the first NaN or Inf in `x` (the batch at `idx` of `ds`), naming that sample.
pub(crate) fn check_finite(x: &Tensor, idx: &[usize], ds: &dyn Dataset) -> Result<()> {
    let bad = x.f_isfinite()?.f_logical_not()?.f_flatten(1, -1)?.f_any_dim(1, false)?;
    let rows = Vec::<bool>::try_from(bad)?;
    match rows.iter().position(|&b| b) {
        None => Ok(()),
        Some(r) => Err(Error::msg(format!(
            "{}: {} holds NaN or Inf values",
            ds.source(),
            ds.sample_name(idx.get(r).copied().unwrap_or(r))
        ))),
    }
}

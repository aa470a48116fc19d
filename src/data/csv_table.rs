//! CSV tables for tabular models: one sample a row, one label column (integer class ids), every
//! other column a numeric feature (x: N×F float32). Held in memory.
use super::{Dataset, NpzDataset, OnRead};
use crate::error::{Error, Result};
use std::path::Path;
use tch::Tensor;

/// How to read a CSV file.
#[derive(Debug, Clone, Default)]
pub struct CsvOptions {
    /// The label column: a header name, or a column number counted from 1 (as in messages).
    /// Default: the column named `label`, `target`, `class` or `y` (any case), else the last one.
    pub label_column: Option<String>,
    /// Whether the first row names the columns. Default: it does when any of its cells is not a
    /// number.
    pub header: Option<bool>,
}

pub struct CsvDataset {
    inner: NpzDataset,
    /// The file's line number of each sample.
    lines: Vec<u64>,
    features: Vec<String>,
    label: String,
}

impl CsvDataset {
    pub fn open(path: &Path, opt: &CsvOptions) -> Result<Self> {
        Self::open_with_progress(path, opt, None)
    }

    /// [`Self::open`], telling `progress` how many bytes of the file are parsed.
    pub fn open_with_progress(path: &Path, opt: &CsvOptions, progress: OnRead) -> Result<Self> {
        let file = path.display();
        let size = std::fs::metadata(path).map(|m| m.len()).ok();
        let mut reader = ::csv::ReaderBuilder::new()
            .has_headers(false)
            .trim(::csv::Trim::All)
            .from_path(path)
            .map_err(|e| Error::msg(format!("{file}: {e}")))?;
        let mut rows = Vec::new();
        for rec in reader.records() {
            let rec = rec.map_err(|e| Error::msg(format!("{file}: {e}")))?;
            let line = rec.position().map_or(0, |p| p.line());
            if let (Some(p), true) = (progress, rows.len() % 4096 == 0) {
                p(rec.position().map_or(0, |p| p.byte()), size);
            }
            rows.push((line, rec));
        }
        if let Some(p) = progress {
            let end = size.unwrap_or_else(|| reader.position().byte());
            p(end, Some(end));
        }
        let Some((_, first)) = rows.first() else {
            return Err(Error::msg(format!("{file}: holds no samples (the file is empty)")));
        };
        let header = opt.header.unwrap_or_else(|| first.iter().any(|c| !c.is_empty() && c.parse::<f64>().is_err()));
        let names: Vec<String> =
            if header { first.iter().map(str::to_string).collect() } else { vec![String::new(); first.len()] };
        let body = if header { &rows[1..] } else { &rows[..] };
        let label =
            label_index(&names, header, opt.label_column.as_deref()).map_err(|e| Error::msg(format!("{file}: {e}")))?;
        if names.len() < 2 {
            return Err(Error::msg(format!("{file}: needs a label column and at least one feature column")));
        }
        let (mut x, mut y, mut lines) = (Vec::new(), Vec::new(), Vec::new());
        for (line, rec) in body {
            for (c, cell) in rec.iter().enumerate() {
                let at = || match names[c].as_str() {
                    "" => format!("{file}: line {line}, column {}", c + 1),
                    name => format!("{file}: line {line}, column {} (`{name}`)", c + 1),
                };
                let v: f64 = match cell.parse() {
                    Ok(v) if f64::is_finite(v) => v,
                    Ok(_) => return Err(Error::msg(format!("{}: `{cell}` is not a finite number", at()))),
                    Err(_) if cell.is_empty() => return Err(Error::msg(format!("{}: empty cell", at()))),
                    Err(_) => return Err(Error::msg(format!("{}: `{cell}` is not a number", at()))),
                };
                if c != label {
                    x.push(v as f32);
                } else if v.fract() == 0.0 {
                    y.push(v as i64);
                } else {
                    return Err(Error::msg(format!("{}: `{cell}` is not an integer class id", at())));
                }
            }
            lines.push(*line);
        }
        if y.is_empty() {
            return Err(Error::msg(format!("{file}: holds no samples (only a header)")));
        }
        let xt = Tensor::f_from_slice(&x)?.f_view([y.len() as i64, names.len() as i64 - 1])?;
        let inner = NpzDataset::from_tensors(file.to_string(), xt, Tensor::f_from_slice(&y)?)?;
        let names: Vec<String> =
            names.into_iter().enumerate().map(|(i, n)| if header { n } else { format!("column {}", i + 1) }).collect();
        let label_name = names[label].clone();
        let features = names.into_iter().enumerate().filter(|&(i, _)| i != label).map(|(_, n)| n).collect();
        Ok(CsvDataset { inner, lines, features, label: label_name })
    }

    /// Feature column names, in the order of `x`'s columns.
    pub fn features(&self) -> &[String] {
        &self.features
    }

    /// The label column's name.
    pub fn label_column(&self) -> &str {
        &self.label
    }
}

/// The label column's index among `names`.
fn label_index(names: &[String], header: bool, want: Option<&str>) -> Result<usize> {
    let Some(want) = want else {
        let known = ["label", "target", "class", "y"];
        let named = header.then(|| names.iter().position(|n| known.contains(&n.to_ascii_lowercase().as_str())));
        return Ok(named.flatten().unwrap_or(names.len().saturating_sub(1)));
    };
    if let Some(i) = names.iter().position(|n| header && n == want) {
        return Ok(i);
    }
    match want.parse::<usize>() {
        Ok(i) if (1..=names.len()).contains(&i) => Ok(i - 1),
        Ok(i) => Err(Error::msg(format!("label column {i}: columns count from 1 to {}", names.len()))),
        Err(_) if header => Err(Error::msg(format!("no column named `{want}` (columns: {})", names.join(", ")))),
        Err(_) => Err(Error::msg(format!(
            "label column `{want}`: the file has no header row, give the column number (from 1)"
        ))),
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        self.inner.batch(idx)
    }
    fn source(&self) -> String {
        self.inner.source()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        self.inner.labels()
    }
    fn sample_shape(&self) -> Result<Vec<i64>> {
        self.inner.sample_shape()
    }
    fn sample_name(&self, i: usize) -> String {
        match self.lines.get(i) {
            Some(l) => format!("sample {i} (line {l})"),
            None => format!("sample {i}"),
        }
    }
}

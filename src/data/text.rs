//! Text data for text classifiers and language models: `.jsonl` (one JSON object a line) or
//! `.csv` (a header row) holding a text column and an optional label column. Every text is
//! tokenized once at open with a Hugging Face `tokenizer.json` (special tokens added, as the
//! Python `Tokenizer.encode` does); a batch pads its token ids to its longest text, or to the
//! model's fixed sequence length, and holds `input_ids`, `attention_mask` and `token_type_ids`
//! (int64, B×L).
//!
//! Too long a text: with `max_length` every text is truncated to it (special tokens kept, as
//! enabling truncation in the tokenizers library does). Without it, a text longer than the
//! model's fixed sequence length (`pad_to`), its maximum (`model_max_length`) or the tokenizer
//! file's own truncation is truncated to the shortest of those, with one warning per data set
//! saying how many texts were cut.
use super::text_rows::{self, Row};
use super::{Batch, Dataset, OnRead};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::Tensor;
use tokenizers::{Encoding, PaddingDirection, Tokenizer, TruncationParams};

/// How to read a text data set (and which labels a record set must hold).
#[derive(Debug, Clone)]
pub struct TextOptions {
    /// The column (JSON key or CSV header) holding the text. `None`: `text`.
    pub text_column: Option<String>,
    /// The column holding the label. `None`: `label`; a CSV file may also give a column number
    /// counted from 1.
    pub label_column: Option<String>,
    /// The `tokenizer.json` to tokenize with.
    pub tokenizer: Option<PathBuf>,
    /// Truncate every text to this many tokens, special tokens included.
    pub max_length: Option<usize>,
    /// The model's fixed sequence length: every batch is padded (and every text truncated) to it.
    pub pad_to: Option<usize>,
    /// The longest sequence the model takes (its position embeddings), where known.
    pub model_max_length: Option<usize>,
    /// String labels to class ids (the model's `label2id`). Without it a string label is an error.
    pub label2id: Option<HashMap<String, i64>>,
    /// Whether every sample needs a label (a classifier's do). When not, a set without a label
    /// column (text) or without `y`/`labels` (record arrays) has all labels 0.
    pub labels_required: bool,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            text_column: None,
            label_column: None,
            tokenizer: None,
            max_length: None,
            pad_to: None,
            model_max_length: None,
            label2id: None,
            labels_required: true,
        }
    }
}

impl TextOptions {
    pub fn text_column(&self) -> &str {
        self.text_column.as_deref().unwrap_or("text")
    }
    pub fn label_column(&self) -> &str {
        self.label_column.as_deref().unwrap_or("label")
    }
}

/// What fills the padding positions, and on which side they go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pad {
    pub id: i64,
    pub type_id: i64,
    pub left: bool,
}

/// Tokenized texts and their labels, held in memory.
pub struct TextDataset {
    path: PathBuf,
    ids: Vec<Vec<u32>>,
    type_ids: Vec<Vec<u32>>,
    lines: Vec<u64>,
    y: Vec<i64>,
    pad: Pad,
    pad_to: Option<usize>,
}

/// Whether a `.csv` file holds text: `--text-column` was given, or its header has the text column.
pub fn is_text_csv(path: &Path, opt: &TextOptions) -> Result<bool> {
    Ok(opt.text_column.is_some() || text_rows::csv_header(path)?.iter().any(|h| h == opt.text_column()))
}

impl TextDataset {
    pub fn open(path: &Path, opt: &TextOptions) -> Result<Self> {
        Self::open_with_progress(path, opt, None)
    }

    /// [`Self::open`], telling `progress` how many texts are tokenized.
    pub fn open_with_progress(path: &Path, opt: &TextOptions, progress: OnRead) -> Result<Self> {
        let file = path.display();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let rows = match ext.as_deref() {
            Some("jsonl") => text_rows::read_jsonl(path, opt)?,
            Some("csv") => text_rows::read_csv(path, opt)?,
            _ => return Err(Error::msg(format!("{file}: text data is read from .jsonl or .csv files"))),
        };
        let mut tok = load_tokenizer(path, opt)?;
        let pad = pad_of(&tok);
        tok.with_padding(None);
        let special = tok
            .encode("", true)
            .map_err(|e| Error::msg(format!("{file}: the tokenizer cannot encode an empty text ({e})")))?
            .len();
        let (limit, why) = limit(opt, &tok, special).map_err(|e| Error::msg(format!("{file}: {e}")))?;
        if let Some(max_length) = limit {
            let base = tok.get_truncation().cloned().unwrap_or_default();
            tok.with_truncation(Some(TruncationParams { max_length, ..base }))
                .map_err(|e| Error::msg(format!("{file}: truncation to {max_length} tokens: {e}")))?;
        }
        let mut ds = TextDataset {
            path: path.to_path_buf(),
            ids: Vec::with_capacity(rows.len()),
            type_ids: Vec::with_capacity(rows.len()),
            lines: Vec::with_capacity(rows.len()),
            y: Vec::with_capacity(rows.len()),
            pad,
            pad_to: opt.pad_to,
        };
        let mut cut = 0usize;
        for chunk in rows.chunks(1024) {
            for (row, enc) in chunk.iter().zip(encode(&tok, path, chunk)?) {
                if enc.is_empty() {
                    return Err(Error::msg(format!(
                        "{file}:{}: the text encodes to no tokens (empty, and the tokenizer adds no special \
                         tokens): drop the line",
                        row.line
                    )));
                }
                cut += usize::from(!enc.get_overflowing().is_empty());
                ds.ids.push(enc.get_ids().to_vec());
                ds.type_ids.push(enc.get_type_ids().to_vec());
                ds.lines.push(row.line);
                ds.y.push(row.label);
            }
            if let Some(p) = progress {
                p(ds.ids.len() as u64, Some(rows.len() as u64));
            }
        }
        if let (true, Some(l)) = (cut > 0 && opt.max_length.is_none(), limit) {
            tracing::warn!(
                "{file}: {cut} of {} texts are longer than {l} tokens ({why}) and were truncated to {l}; \
                 --max-length N sets the length",
                rows.len()
            );
        }
        Ok(ds)
    }

    /// What fills the padding positions.
    pub fn pad(&self) -> Pad {
        self.pad
    }

    /// The token ids of sample `i`, unpadded.
    pub fn token_ids(&self, i: usize) -> Option<&[u32]> {
        self.ids.get(i).map(Vec::as_slice)
    }

    /// The file's line number of sample `i`.
    pub fn line(&self, i: usize) -> Option<u64> {
        self.lines.get(i).copied()
    }

    fn check(&self, idx: &[usize]) -> Result<()> {
        match idx.iter().find(|&&i| i >= self.ids.len()) {
            Some(i) => Err(Error::msg(format!("{}: no sample {i} (it holds {})", self.source(), self.ids.len()))),
            None => Ok(()),
        }
    }
}

/// The tokenizer named by `opt`, or an error that says where it was looked for.
fn load_tokenizer(data: &Path, opt: &TextOptions) -> Result<Tokenizer> {
    let set = "--tokenizer PATH|URL|hf://… sets it";
    let Some(path) = &opt.tokenizer else {
        return Err(Error::msg(format!(
            "{}: text data needs a tokenizer (by default tokenizer.json beside the model): {set}",
            data.display()
        )));
    };
    if !path.is_file() {
        return Err(Error::msg(format!(
            "{}: no tokenizer file {} (semu looks for tokenizer.json beside the model): {set}",
            data.display(),
            path.display()
        )));
    }
    Tokenizer::from_file(path)
        .map_err(|e| Error::msg(format!("{}: not a readable tokenizer.json ({e}); {set}", path.display())))
}

/// The tokenizer's padding settings if it has them, else the id of its pad token (`[PAD]`,
/// `<pad>`, `<|endoftext|>`, in that order), else 0, on the right.
fn pad_of(tok: &Tokenizer) -> Pad {
    match tok.get_padding() {
        Some(p) => Pad {
            id: i64::from(p.pad_id),
            type_id: i64::from(p.pad_type_id),
            left: matches!(p.direction, PaddingDirection::Left),
        },
        None => Pad {
            id: ["[PAD]", "<pad>", "<|endoftext|>"].iter().find_map(|t| tok.token_to_id(t)).map_or(0, i64::from),
            type_id: 0,
            left: false,
        },
    }
}

/// The length texts are truncated to and why: `max_length` when given (checked against the
/// model's), else the shortest of the model's fixed length, its maximum and the tokenizer's own.
fn limit(opt: &TextOptions, tok: &Tokenizer, special: usize) -> Result<(Option<usize>, &'static str)> {
    if let Some(m) = opt.max_length {
        if let Some(p) = opt.pad_to.filter(|&p| m > p) {
            return Err(Error::msg(format!(
                "--max-length {m} is longer than the model's fixed sequence length {p} (its input_ids is \
                 declared B×{p}): give at most {p}"
            )));
        }
        if let Some(p) = opt.model_max_length.filter(|&p| m > p) {
            return Err(Error::msg(format!(
                "--max-length {m} is longer than the {p} tokens the model takes: give at most {p}"
            )));
        }
    }
    let candidates = [
        (opt.max_length, "--max-length"),
        (opt.pad_to, "the model's fixed sequence length"),
        (opt.model_max_length, "the model's maximum length"),
        (tok.get_truncation().map(|t| t.max_length), "the tokenizer file's truncation"),
    ];
    let chosen = match opt.max_length {
        Some(m) => Some((m, "--max-length")),
        None => candidates.iter().filter_map(|&(l, why)| l.map(|l| (l, why))).min_by_key(|&(l, _)| l),
    };
    match chosen {
        Some((l, why)) if l <= special => Err(Error::msg(format!(
            "a length of {l} tokens ({why}) leaves no room for text after the tokenizer's {special} special tokens"
        ))),
        Some((l, why)) => Ok((Some(l), why)),
        None => Ok((None, "")),
    }
}

/// Encodes `rows`' texts with special tokens; an error names the line of the text that failed.
fn encode(tok: &Tokenizer, path: &Path, rows: &[Row]) -> Result<Vec<Encoding>> {
    let texts: Vec<&str> = rows.iter().map(|r| r.text.as_str()).collect();
    if let Ok(all) = tok.encode_batch(texts, true) {
        return Ok(all);
    }
    rows.iter()
        .map(|r| {
            tok.encode(r.text.as_str(), true).map_err(|e| {
                Error::msg(format!("{}:{}: the tokenizer cannot encode this text ({e})", path.display(), r.line))
            })
        })
        .collect()
}

impl Dataset for TextDataset {
    fn len(&self) -> usize {
        self.ids.len()
    }
    /// `input_ids` (padded as in [`Dataset::records`]) and the labels.
    fn batch(&self, idx: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut b = self.records(idx)?;
        let ids = b.inputs.swap_remove(0).1;
        Ok((ids, b.y))
    }
    fn records(&self, idx: &[usize]) -> Result<Batch> {
        self.check(idx)?;
        let longest = idx.iter().map(|&i| self.ids[i].len()).max().unwrap_or(0);
        let l = self.pad_to.unwrap_or(longest);
        if longest > l {
            return Err(Error::msg(format!(
                "{}: a text of {longest} tokens does not fit the model's fixed length {l}",
                self.source()
            )));
        }
        let n = idx.len() * l;
        let (mut ids, mut mask, mut types) = (vec![self.pad.id; n], vec![0i64; n], vec![self.pad.type_id; n]);
        for (r, &i) in idx.iter().enumerate() {
            let len = self.ids[i].len();
            let start = r * l + if self.pad.left { l - len } else { 0 };
            for (k, (&t, &ty)) in self.ids[i].iter().zip(&self.type_ids[i]).enumerate() {
                ids[start + k] = i64::from(t);
                types[start + k] = i64::from(ty);
                mask[start + k] = 1;
            }
        }
        let shape = [idx.len() as i64, l as i64];
        let t = |v: &[i64]| -> Result<Tensor> { Ok(Tensor::f_from_slice(v)?.f_view(shape)?) };
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i]).collect();
        Ok(Batch {
            inputs: vec![
                ("input_ids".into(), t(&ids)?),
                ("attention_mask".into(), t(&mask)?),
                ("token_type_ids".into(), t(&types)?),
            ],
            y: Tensor::f_from_slice(&y)?,
        })
    }
    fn source(&self) -> String {
        self.path.display().to_string()
    }
    fn labels(&self) -> Result<Vec<i64>> {
        Ok(self.y.clone())
    }
    /// The token count of the first text.
    fn sample_shape(&self) -> Result<Vec<i64>> {
        match self.ids.first() {
            Some(s) => Ok(vec![s.len() as i64]),
            None => Err(Error::msg(format!("{}: holds no samples", self.source()))),
        }
    }
    fn sample_name(&self, i: usize) -> String {
        let file = self.path.file_name().map_or_else(|| self.source(), |f| f.to_string_lossy().into_owned());
        match self.lines.get(i) {
            Some(l) => format!("sample {i} ({file}:{l})"),
            None => format!("sample {i}"),
        }
    }
}

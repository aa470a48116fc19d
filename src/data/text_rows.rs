//! The rows of a text data set before tokenizing: one text and its class id per JSONL line or CSV
//! row, with the line it came from. Integer labels are class ids as they are; string labels go
//! through the model's `label2id`.
use super::TextOptions;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// One sample as read: its 1-based line in the file, its text and its class id (0 where the
/// set has no labels and none are required).
pub(super) struct Row {
    pub line: u64,
    pub text: String,
    pub label: i64,
}

/// Turns a label cell into a class id.
struct Labels<'a> {
    label2id: Option<&'a HashMap<String, i64>>,
}

impl Labels<'_> {
    fn id_of_str(&self, at: &str, column: &str, s: &str) -> Result<i64> {
        if s.trim().is_empty() {
            return Err(Error::msg(format!("{at}: `{column}` is empty: every sample needs a label")));
        }
        if let Some(&id) = self.label2id.and_then(|m| m.get(s)) {
            return Ok(id);
        }
        if let Ok(id) = s.trim().parse::<i64>() {
            return Ok(id);
        }
        Err(Error::msg(match self.label2id {
            Some(m) => {
                let mut known: Vec<(&String, &i64)> = m.iter().collect();
                known.sort_by_key(|&(k, v)| (*v, k.clone()));
                let known: Vec<String> = known.iter().map(|(k, v)| format!("{k:?}={v}")).collect();
                format!(
                    "{at}: `{column}` is {s:?}, not one of the model's labels ({}) nor an integer class id",
                    known.join(", ")
                )
            }
            None => format!(
                "{at}: `{column}` is the string {s:?}, and there is no label2id to map it to a class id \
                 (semu reads `label2id` from config.json beside the model): use integer class ids, or put \
                 the model's config.json beside it"
            ),
        }))
    }

    fn id_of_json(&self, at: &str, column: &str, v: &Value) -> Result<i64> {
        match v {
            Value::Number(n) => n.as_i64().ok_or_else(|| {
                Error::msg(format!("{at}: `{column}` is {n}, not an integer class id (nor a string label)"))
            }),
            Value::String(s) => self.id_of_str(at, column, s),
            other => Err(Error::msg(format!("{at}: `{column}` is {other}, not an integer class id or a string label"))),
        }
    }
}

/// Reads a `.jsonl` file: one JSON object a line (blank lines skipped).
pub(super) fn read_jsonl(path: &Path, opt: &TextOptions) -> Result<Vec<Row>> {
    let file = path.display();
    let body = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let (text_col, label_col) = (opt.text_column(), opt.label_column());
    let labels = Labels { label2id: opt.label2id.as_ref() };
    let mut rows = Vec::new();
    for (k, line) in body.lines().enumerate() {
        let at = format!("{file}:{}", k + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| {
            Error::msg(format!("{at}: not valid JSON ({e}); a .jsonl file holds one JSON object a line"))
        })?;
        let Value::Object(obj) = v else {
            return Err(Error::msg(format!("{at}: a JSON {}, not an object {{\"{text_col}\": …}}", kind(&v))));
        };
        let keys = || obj.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let text = match obj.get(text_col) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => return Err(Error::msg(format!("{at}: `{text_col}` is a {}, not a string", kind(other)))),
            None => {
                return Err(Error::msg(format!(
                    "{at}: no `{text_col}` key (keys: {}); --text-column NAME names the text",
                    keys()
                )))
            }
        };
        let label = match obj.get(label_col) {
            Some(v) => labels.id_of_json(&at, label_col, v)?,
            None if opt.labels_required || opt.label_column.is_some() => {
                return Err(Error::msg(format!(
                    "{at}: no `{label_col}` key (keys: {}); --label-column NAME names the label",
                    keys()
                )))
            }
            None => 0,
        };
        rows.push(Row { line: k as u64 + 1, text, label });
    }
    if rows.is_empty() {
        return Err(Error::msg(format!("{file}: holds no samples (the file is empty)")));
    }
    Ok(rows)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The header row of a CSV file (empty when the file is).
pub(super) fn csv_header(path: &Path) -> Result<Vec<String>> {
    let mut r = ::csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let h = r.headers().map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    Ok(h.iter().map(str::to_string).collect())
}

/// Line numbers of records by their byte offset. The csv crate's own line count is one short
/// after a CRLF line end (it starts the next record before the `\n`); this skips line ends at a
/// record's start. Offsets are asked in increasing order.
struct Lines<'a> {
    bytes: &'a [u8],
    at: usize,
    newlines: u64,
}

impl Lines<'_> {
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut b = (byte as usize).min(self.bytes.len());
        while b < self.bytes.len() && matches!(self.bytes[b], b'\r' | b'\n') {
            b += 1;
        }
        if b >= self.at {
            self.newlines += self.bytes[self.at..b].iter().filter(|&&c| c == b'\n').count() as u64;
            self.at = b;
        }
        self.newlines + 1
    }
}

/// Reads a `.csv` file with a header row naming its text column (and label column).
pub(super) fn read_csv(path: &Path, opt: &TextOptions) -> Result<Vec<Row>> {
    let file = path.display();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut reader = ::csv::ReaderBuilder::new().has_headers(true).from_reader(bytes.as_slice());
    let mut lines = Lines { bytes: &bytes, at: 0, newlines: 0 };
    let names: Vec<String> =
        reader.headers().map_err(|e| Error::msg(format!("{file}: {e}")))?.iter().map(str::to_string).collect();
    if names.iter().all(String::is_empty) {
        return Err(Error::msg(format!("{file}: holds no samples (the file is empty)")));
    }
    let (text_col, label_col) = (opt.text_column(), opt.label_column());
    let list = || names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ");
    let text = names.iter().position(|n| n == text_col).ok_or_else(|| {
        Error::msg(format!("{file}:1: no column `{text_col}` (columns: {}); --text-column NAME names the text", list()))
    })?;
    let label = match names.iter().position(|n| n == label_col) {
        Some(i) => Some(i),
        None => match label_col.parse::<usize>() {
            Ok(i) if opt.label_column.is_some() && (1..=names.len()).contains(&i) => Some(i - 1),
            _ if opt.labels_required || opt.label_column.is_some() => {
                return Err(Error::msg(format!(
                    "{file}:1: no column `{label_col}` (columns: {}); --label-column NAME names the label",
                    list()
                )))
            }
            _ => None,
        },
    };
    let labels = Labels { label2id: opt.label2id.as_ref() };
    let mut rows = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| Error::msg(format!("{file}: {e}")))?;
        let line = rec.position().map_or(0, |p| lines.line_at(p.byte()));
        let at = format!("{file}:{line}");
        let cell = |i: usize| rec.get(i).ok_or_else(|| Error::msg(format!("{at}: has no column {}", i + 1)));
        let y = match label {
            Some(i) => labels.id_of_str(&at, &names[i], cell(i)?)?,
            None => 0,
        };
        rows.push(Row { line, text: cell(text)?.to_string(), label: y });
    }
    if rows.is_empty() {
        return Err(Error::msg(format!("{file}: holds no samples (only a header)")));
    }
    Ok(rows)
}

//! The library's error type. `anyhow` lives only in the binary.
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a valid ONNX model: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("tensor '{tensor}': {reason}")]
    Tensor { tensor: String, reason: String },
    #[error("node '{node}' ({op}): {reason}")]
    Node { node: String, op: String, reason: String },
    #[error("node '{node}' ({op}), attribute '{attr}': {reason}")]
    Attr { node: String, op: String, attr: String, reason: String },
    /// A valid model that a runtime cannot run for lack of a kernel for one of its ops on the
    /// provider used (onnxruntime's CUDA-only contrib ops on its CPU provider).
    #[error(
        "{path}: {runtime} has no kernel for {op} on its {provider} (node '{node}'): the model is valid, \
         but {runtime} cannot run it there"
    )]
    NoKernel { path: PathBuf, runtime: String, provider: String, op: String, node: String },
    #[error("the model uses ops the engine does not support:\n{0}")]
    Unsupported(String),
    /// Shown as [`torch_summary`]: never libtorch's C++ stack frames.
    #[error("libtorch: {}", torch_summary(&.0.to_string()))]
    Torch(#[from] tch::TchError),
    #[error("{0}")]
    Msg(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Self {
        Error::Msg(m.into())
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// A TOML file's error on one line: `PATH, line L, column C: what` (the toml crate's own
/// display spans several lines and puts the reason last).
pub fn toml_problem(path: &std::path::Path, text: &str, e: &toml::de::Error) -> String {
    let at = e.span().map(|s| {
        let before = &text[..s.start.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!(", line {line}, column {col}")
    });
    format!("{}{}: {}", path.display(), at.unwrap_or_default(), e.message().trim())
}

/// The message of a libtorch exception without what follows it: "Exception raised from …",
/// the `frame #N` list and blank lines. What is left is joined on one line and cut at 400
/// characters. Text that is no libtorch exception passes through unchanged (on one line).
pub fn torch_summary(text: &str) -> String {
    let text = unescape_trace(text).replace("Internal torch error: ", "");
    let mut lines = Vec::new();
    for line in text.lines() {
        let (line, stop) = match frame_start(line) {
            Some(i) => (line[..i].trim(), true),
            None => (line.trim(), false),
        };
        if !line.is_empty() {
            lines.push(line);
        }
        if stop {
            break;
        }
    }
    let one = lines.join("; ");
    match one.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &one[..cut]),
        None => one,
    }
}

/// `text` without the lines of libtorch stack traces ("Exception raised from …", "frame #N: …"):
/// the last guard before a message reaches the user.
pub fn without_frames(text: &str) -> String {
    let text = unescape_trace(text);
    let kept = text.lines().filter_map(|l| match frame_start(l) {
        Some(i) => Some(l[..i].trim_end()).filter(|l| !l.trim().is_empty()),
        None => Some(l),
    });
    kept.collect::<Vec<_>>().join("\n")
}

/// A panic of tch's unwrapping methods shows the error with Debug, newlines escaped: undone
/// where the text holds a trace.
fn unescape_trace(text: &str) -> String {
    if frame_start(text).is_some() {
        text.replace("\\n", "\n")
    } else {
        text.to_string()
    }
}

/// Where a line's libtorch trace begins ("Exception raised from …" or "frame #N: …"), if it does.
fn frame_start(line: &str) -> Option<usize> {
    ["Exception raised from", "frame #"].iter().filter_map(|m| line.find(m)).min()
}

/// `bail!("...")`: return early with an `Error::Msg`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::error::Error::Msg(format!($($t)*))) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_summary_keeps_the_message_and_drops_the_frames() {
        let raw = "The size of tensor a (3) must match the size of tensor b (4) at \
                   non-singleton dimension 1\nException raised from infer_size_impl at ExpandUtils.cpp:31 (most \
                   recent call first):\nframe #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x9c \
                   (0x7f in libc10.so)\nframe #1: at::infer_size(...)\n";
        let s = torch_summary(&format!("Internal torch error: {raw}"));
        assert_eq!(s, "The size of tensor a (3) must match the size of tensor b (4) at non-singleton dimension 1");
        let e = Error::Torch(tch::TchError::Torch(raw.into())).to_string();
        assert!(e.starts_with("libtorch: The size of tensor a (3)") && !e.contains("frame #"), "{e}");
        assert_eq!(torch_summary("two\n\nlines"), "two; lines");
        assert_eq!(torch_summary(&"x".repeat(1000)).chars().count(), 401);
        assert_eq!(without_frames("a\nException raised from f\nframe #0: g\n  frame #1: h\nb"), "a\nb");
        // As a panic of an unwrapping tch method shows it: Debug, newlines escaped.
        let debug = format!("called `Result::unwrap()` on an `Err` value: {:?}", tch::TchError::Torch(raw.into()));
        let s = torch_summary(&debug);
        assert!(s.ends_with("at non-singleton dimension 1") && !s.contains("frame"), "{s}");
        assert!(!without_frames(&debug).contains("frame #"), "{}", without_frames(&debug));
    }
}

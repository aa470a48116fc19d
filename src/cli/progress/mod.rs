//! Progress: indicatif bars on a terminal, periodic log lines otherwise (CI logs stay readable),
//! nothing with -q. The library only reports (the `Observer` trait, `ReadProgress`, plain
//! callbacks); this module draws. Bars live on stderr, so stdout stays clean for piped output.
mod meter;

pub use meter::Meter;

use indicatif::{HumanBytes, MultiProgress, ProgressDrawTarget};
use semu::data::{ReadProgress, Reading};
use semu::semu::train::{EpochProgress, EpochStats};
use semu::semu::Observer;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{LazyLock, Mutex, OnceLock, PoisonError};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bars,
    Lines,
    Off,
}

static MODE: OnceLock<Mode> = OnceLock::new();

/// Every bar is drawn through this, so that log lines can lift the bars while they print.
static BARS: LazyLock<MultiProgress> = LazyLock::new(|| {
    let target = if mode() == Mode::Bars { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    MultiProgress::with_draw_target(target)
});

/// Chooses once how progress shows: bars only on a terminal with text logs, none with -q.
pub fn init(quiet: bool, json_logs: bool) {
    let mode = match (quiet, json_logs || !std::io::stderr().is_terminal()) {
        (true, _) => Mode::Off,
        (false, true) => Mode::Lines,
        (false, false) => Mode::Bars,
    };
    let _ = MODE.set(mode);
}

fn mode() -> Mode {
    MODE.get().copied().unwrap_or(Mode::Lines)
}

/// The log's writer: stderr, with the bars lifted while a line is written.
pub fn log_writer() -> LogWriter {
    LogWriter
}

pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The data readers' progress: one meter per data set opened.
pub fn reading() -> ReadProgress {
    let current: Mutex<Option<(PathBuf, Meter)>> = Mutex::new(None);
    ReadProgress::new(move |r: &Reading| {
        let mut cur = current.lock().unwrap_or_else(PoisonError::into_inner);
        if cur.as_ref().is_none_or(|(p, _)| p != r.source) {
            let name = r.source.file_name().unwrap_or(r.source.as_os_str()).to_string_lossy();
            let m = Meter::new(format!("reading {}", r.source.display()), r.unit).short(format!("reading {name}"));
            *cur = Some((r.source.to_path_buf(), m));
        }
        if let Some((_, m)) = cur.as_mut() {
            m.set(r.done, r.total);
        }
        if r.total == Some(r.done) {
            if let Some((_, m)) = cur.take() {
                m.finish();
            }
        }
    })
}

/// A download's progress (the callback of `semu::fetch`): a meter per file transferred. A model
/// brings its external data through the same callback, so later files are numbered.
pub struct Download {
    name: String,
    files: usize,
    meter: Option<Meter>,
    last: u64,
}

impl Download {
    pub fn new(url: &str) -> Self {
        // Only the file name: the rest of a URL may carry a token or a signature.
        let path = url.split(['?', '#']).next().unwrap_or(url);
        let name = path.rsplit('/').find(|s| !s.is_empty()).unwrap_or(path).to_string();
        Download { name, files: 0, meter: None, last: 0 }
    }

    pub fn show(&mut self, done: u64, total: Option<u64>) {
        // Fewer bytes than before: the server would not resume, the file starts over.
        let restart = self.meter.is_some() && done < self.last;
        if self.meter.is_none() || restart {
            self.files += usize::from(!restart);
            let label = match self.files {
                1 => format!("download {}", self.name),
                k => format!("download {}, file {k}", self.name),
            };
            let mut m = Meter::new(label, "bytes");
            if done > 0 {
                m.note(format!("resumed at {}", HumanBytes(done)));
            }
            self.meter = Some(m);
        }
        self.last = done;
        if let Some(m) = self.meter.as_mut() {
            m.set(done, total);
        }
        if total == Some(done) {
            self.finish();
        }
    }

    /// Closes a transfer whose size was never told.
    pub fn finish(&mut self) {
        if let Some(m) = self.meter.take() {
            m.finish();
        }
    }
}

/// The `Observer` of an unlearning run, and the meters of the phases the CLI drives itself.
pub struct Progress {
    off: bool,
    meter: Option<(String, Meter)>,
    started: Instant,
    phase_started: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Progress { off: quiet || mode() == Mode::Off, meter: None, started: now, phase_started: now }
    }

    /// The meter named `name`, replacing (and closing) any other.
    fn meter(&mut self, name: &str, unit: &'static str) -> &mut Meter {
        if self.meter.as_ref().is_none_or(|(n, _)| n != name) {
            self.finish();
            self.meter = Some((name.to_string(), Meter::new(name, unit).since(self.phase_started)));
        }
        &mut self.meter.as_mut().expect("just set").1
    }

    fn count(&mut self, name: &str, done: usize, total: usize, unit: &'static str) {
        if self.off {
            return;
        }
        self.meter(name, unit).set(done as u64, Some(total as u64));
        if done >= total {
            self.finish();
        }
    }

    /// Closes the running meter, if any.
    pub fn finish(&mut self) {
        if let Some((_, m)) = self.meter.take() {
            m.finish();
        }
    }
}

impl Observer for Progress {
    fn phase(&mut self, name: &str) {
        self.finish();
        self.phase_started = Instant::now();
        tracing::info!("{name} (t+{:.1}s)", self.started.elapsed().as_secs_f64());
        if let Some((rss, live)) = semu::engine::memory::usage() {
            tracing::debug!("memory at {name}: resident {rss:.2} GiB, allocated {live:.2} GiB");
        }
    }
    fn gradient_progress(&mut self, done: usize, total: usize) {
        self.count("gradient", done, total, "samples");
    }
    fn svd_progress(&mut self, done: usize, total: usize) {
        self.count("svd", done, total, "layers");
    }
    fn epoch_progress(&mut self, p: &EpochProgress) {
        if self.off {
            return;
        }
        let m = self.meter(&format!("epoch {}/{}", p.epoch, p.epochs), "batches");
        let acc = match p.forget_acc {
            Some(a) => format!(", forget acc {:.2}%", 100.0 * a),
            None if p.batch == p.batches => ", measuring accuracy".into(),
            None => String::new(),
        };
        m.message(format!("loss {:.4}{acc}", p.loss));
        m.set(p.batch as u64, Some(p.batches as u64));
    }
    fn epoch(&mut self, e: &EpochStats) {
        // The epoch line below closes the epoch: its meter goes without a line of its own.
        self.meter = None;
        let ra = e.retain_acc.map(|r| format!(", retain acc {:.2}%", 100.0 * r)).unwrap_or_default();
        let fl = e.forget_loss.map(|l| format!(", forget median loss {l:.4}")).unwrap_or_default();
        tracing::info!(
            "epoch {:>2}: loss {:.4}, forget acc {:.2}%{fl}{ra} ({:.1}s)",
            e.epoch,
            e.loss,
            100.0 * e.forget_acc,
            e.seconds
        );
    }
    fn step(&mut self, name: &str, done: usize, total: usize) {
        let unit = match name {
            "fold" => "tensors",
            n if n.starts_with("accuracy") => "samples",
            _ => "steps",
        };
        self.count(name, done, total, unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_named_by_its_file_without_query_or_token() {
        assert_eq!(Download::new("https://h/o/r/resolve/main/model.onnx?token=s3cret").name, "model.onnx");
        assert_eq!(Download::new("hf://o/r@v1/onnx/model.onnx").name, "model.onnx");
        assert_eq!(Download::new("http://h/d/").name, "d");
    }
}

//! Progress: indicatif bars on a terminal, periodic log lines otherwise (CI logs stay readable).
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use semu::semu::train::EpochStats;
use semu::semu::Observer;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

pub struct Progress {
    tty: bool,
    quiet: bool,
    bar: Option<ProgressBar>,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        let now = Instant::now();
        Progress { tty: std::io::stderr().is_terminal(), quiet, bar: None, started: now, last_log: now }
    }

    fn bar(&mut self, len: u64, unit: &str) -> &ProgressBar {
        if self.bar.is_none() {
            let b = if self.tty && !self.quiet {
                ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
            } else {
                ProgressBar::hidden()
            };
            let tpl = format!("  {{msg:10}} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
            b.set_style(ProgressStyle::with_template(&tpl).unwrap_or_else(|_| ProgressStyle::default_bar()));
            self.bar = Some(b);
        }
        self.bar.as_ref().expect("just set")
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }

    /// Counts for a phase: a bar on a TTY, a log line every few seconds otherwise.
    fn count(&mut self, phase: &str, done: usize, total: usize, unit: &str) {
        let b = self.bar(total as u64, unit);
        b.set_message(phase.to_string());
        b.set_position(done as u64);
        if !self.tty && (self.last_log.elapsed() > Duration::from_secs(5) || done == total) {
            self.last_log = Instant::now();
            tracing::info!("{phase}: {done}/{total} {unit}");
        }
        if done == total {
            self.finish();
        }
    }
}

impl Observer for Progress {
    fn phase(&mut self, name: &str) {
        self.finish();
        tracing::info!("{name} (t+{:.1}s)", self.started.elapsed().as_secs_f64());
    }
    fn gradient_progress(&mut self, done: usize, total: usize) {
        self.count("gradient", done, total, "samples");
    }
    fn svd_progress(&mut self, done: usize, total: usize) {
        self.count("svd", done, total, "layers");
    }
    fn epoch(&mut self, e: &EpochStats) {
        let ra = e.retain_acc.map(|r| format!(", retain acc {:.2}%", 100.0 * r)).unwrap_or_default();
        tracing::info!(
            "epoch {:>2}: loss {:.4}, forget acc {:.2}%{ra} ({:.1}s)",
            e.epoch,
            e.loss,
            100.0 * e.forget_acc,
            e.seconds
        );
    }
}

//! One counted activity on screen or in the log: [`Meter`].
use super::{mode, Mode, BARS};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

/// How often a log line reports a running count when there are no bars.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// Says when a periodic log line is due: one `every` after the previous (or the start).
struct Throttle {
    every: Duration,
    last: Instant,
}

impl Throttle {
    fn new(every: Duration, now: Instant) -> Self {
        Throttle { every, last: now }
    }

    fn due(&mut self, now: Instant) -> bool {
        let due = now.saturating_duration_since(self.last) >= self.every;
        if due {
            self.last = now;
        }
        due
    }
}

/// `done` of `total` in `unit`, bytes made readable: "3/10 layers", "1.2 MiB of 4.0 MiB".
fn amount(done: u64, total: Option<u64>, unit: &str) -> String {
    let bytes = unit == "bytes";
    let n = |v: u64| if bytes { HumanBytes(v).to_string() } else { v.to_string() };
    let unit = if bytes { String::new() } else { format!(" {unit}") };
    match total {
        Some(1) if done == 1 && unit == " steps" => "done".into(),
        Some(t) if t == done => format!("{}{unit}", n(done)),
        Some(t) if bytes => format!("{} of {}", n(done), n(t)),
        Some(t) => format!("{done}/{t}{unit}"),
        None => format!("{}{unit}", n(done)),
    }
}

fn style(unit: &str, counted: bool) -> ProgressStyle {
    let tpl = match (unit == "bytes", counted) {
        (true, true) => "{prefix:.bold} [{wide_bar}] {bytes}/{total_bytes} {msg} ({binary_bytes_per_sec}, eta {eta})",
        (true, false) => "{spinner} {prefix:.bold} {bytes} {msg} ({binary_bytes_per_sec})",
        (false, true) => "{prefix:.bold} [{wide_bar}] {pos}/{len} UNIT {msg} ({rate}, eta {eta})",
        (false, false) => "{spinner} {prefix:.bold} {pos} UNIT {msg} ({elapsed})",
    };
    ProgressStyle::with_template(&tpl.replace("UNIT", unit))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key("rate", |s: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let r = s.per_sec();
            let _ = if r < 100.0 { write!(w, "{r:.1}/s") } else { write!(w, "{r:.0}/s") };
        })
        .progress_chars("=> ")
}

/// One counted activity: a bar (a spinner while the total is unknown) on a terminal; a log line
/// every few seconds and one at the end otherwise.
pub struct Meter {
    label: String,
    /// The bar's shorter name (terminals are narrower than log files).
    prefix: String,
    unit: &'static str,
    bar: Option<ProgressBar>,
    throttle: Throttle,
    started: Instant,
    done: u64,
    total: Option<u64>,
    msg: String,
}

impl Meter {
    pub fn new(label: impl Into<String>, unit: &'static str) -> Self {
        let now = Instant::now();
        let label = label.into();
        Meter {
            prefix: label.clone(),
            label,
            unit,
            bar: None,
            throttle: Throttle::new(LOG_EVERY, now),
            started: now,
            done: 0,
            total: None,
            msg: String::new(),
        }
    }

    /// Sets the count. A bar starts at its first count (a resumed download's at the offset it
    /// resumes from), and its rate counts from there.
    pub fn set(&mut self, done: u64, total: Option<u64>) {
        (self.done, self.total) = (done, total);
        match mode() {
            Mode::Off => {}
            Mode::Lines => {
                if self.throttle.due(Instant::now()) {
                    let pct = total.filter(|&t| t > 0).map(|t| format!(" ({:.0}%)", 100.0 * done as f64 / t as f64));
                    tracing::info!(
                        "{}: {}{}{}",
                        self.label,
                        amount(done, total, self.unit),
                        pct.unwrap_or_default(),
                        self.msg_text()
                    );
                }
            }
            Mode::Bars => match &self.bar {
                Some(b) => {
                    if b.length() != total {
                        b.set_style(style(self.unit, total.is_some()));
                        total.map_or_else(|| b.unset_length(), |t| b.set_length(t));
                    }
                    b.set_position(done);
                }
                None => {
                    let b = BARS.add(total.map_or_else(ProgressBar::no_length, ProgressBar::new));
                    b.set_style(style(self.unit, total.is_some()));
                    b.set_prefix(self.prefix.clone());
                    b.set_message(self.msg.clone());
                    b.set_position(done);
                    b.reset_eta();
                    b.enable_steady_tick(Duration::from_millis(100));
                    self.bar = Some(b);
                }
            },
        }
    }

    /// A shorter name for the bar than for the log.
    pub fn short(mut self, prefix: String) -> Self {
        self.prefix = prefix;
        self
    }

    /// Times the meter from `t` (a phase's start) rather than from its first count.
    pub fn since(mut self, t: Instant) -> Self {
        self.started = t;
        self
    }

    /// Text after the count (loss, accuracy, a resume offset).
    pub fn message(&mut self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg.clone());
        }
        self.msg = msg;
    }

    /// A one-off remark: on the bar's line, or logged at once.
    pub fn note(&mut self, text: String) {
        if mode() == Mode::Lines {
            tracing::info!("{}: {text}", self.label);
        }
        self.message(text);
    }

    fn msg_text(&self) -> String {
        if self.msg.is_empty() {
            String::new()
        } else {
            format!(", {}", self.msg)
        }
    }

    /// Ends the meter: the bar goes, and the closing log line says what was done in what time.
    pub fn finish(mut self) {
        self.clear();
        if mode() != Mode::Off {
            let (secs, msg) = (self.started.elapsed().as_secs_f64(), self.msg_text());
            tracing::info!("{}: {}{msg} in {secs:.1}s", self.label, amount(self.done, self.total, self.unit));
        }
    }

    fn clear(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
            BARS.remove(&b);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_is_due_once_per_period_counted_from_the_last_line() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(5), t0);
        assert!(!t.due(t0));
        assert!(!t.due(t0 + Duration::from_millis(4999)));
        assert!(t.due(t0 + Duration::from_secs(5)));
        assert!(!t.due(t0 + Duration::from_secs(6)), "the period restarts at the line just logged");
        assert!(t.due(t0 + Duration::from_secs(10)));
        assert!(t.due(t0 + Duration::from_secs(60)), "a long silence gives one line, not a burst");
        assert!(!t.due(t0 + Duration::from_secs(61)));
    }

    #[test]
    fn amounts_read_naturally() {
        assert_eq!(amount(3, Some(10), "layers"), "3/10 layers");
        assert_eq!(amount(10, Some(10), "layers"), "10 layers");
        assert_eq!(amount(7, None, "images"), "7 images");
        assert_eq!(amount(1, Some(1), "steps"), "done");
        assert_eq!(amount(1024, Some(4096), "bytes"), "1.00 KiB of 4.00 KiB");
        assert_eq!(amount(2048, None, "bytes"), "2.00 KiB");
    }
}

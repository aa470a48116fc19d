//! One download: `.part` file, Range resume, bounded retries with backoff, SHA-256 check, atomic
//! rename into the cache. Redirects are followed here (not by reqwest) so that the hub's
//! `X-Linked-Etag` on the redirect is seen and the token never follows to another host.
use super::source::{check_scheme, redact};
use super::{FetchOptions, Progress, Secret};
use crate::error::{Error, Result};
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_RANGE, ETAG, IF_RANGE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAX_REDIRECTS: usize = 10;

pub(crate) struct Session<'a> {
    opts: &'a FetchOptions,
    client: Client,
}

/// Why one try failed: worth another try, or not.
enum Failure {
    Retry(String),
    Fatal(Error),
}

/// The expected digest and where it came from (for the message when it does not match).
struct Expect {
    sha256: Option<(String, &'static str)>,
    /// Strong ETag of the first response, sent as `If-Range` so a changed file restarts.
    validator: Option<HeaderValue>,
}

impl<'a> Session<'a> {
    pub fn new(opts: &'a FetchOptions) -> Result<Self> {
        // reqwest is built without a default crypto provider; ring needs no C toolchain beyond cc.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = Client::builder()
            .connect_timeout(opts.connect_timeout)
            // The blocking client applies this to the wait for the head and to each body read:
            // an idle timeout, not a limit on the whole download.
            .timeout(opts.read_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("semu/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::msg(format!("cannot start the HTTP client: {}", describe(e))))?;
        Ok(Session { opts, client })
    }

    /// Makes `dest` hold the verified content of `url`, downloading only when it is not cached.
    pub fn get(&self, url: &Url, dest: &Path, sha256: Option<String>, progress: Progress) -> Result<()> {
        if self.cached(url, dest, sha256.as_deref())? {
            return Ok(());
        }
        if self.opts.offline {
            return Err(Error::msg(format!(
                "{url}: not cached (looked for {}); offline mode (--offline or SEMU_OFFLINE) uses the cache only: \
                 run `semu fetch {url}` while online",
                dest.display(),
                url = redact(url),
            )));
        }
        let dir = dest.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        // One downloader per file across processes; whoever waited finds the file done.
        let lock_path = with_suffix(dest, ".lock");
        let lock = File::create(&lock_path).map_err(|e| Error::io(&lock_path, e))?;
        lock.lock().map_err(|e| Error::io(&lock_path, e))?;
        if self.cached(url, dest, sha256.as_deref())? {
            return Ok(());
        }
        let mut expect = Expect { sha256: sha256.map(|h| (h, "--sha256")), validator: None };
        let attempts = self.opts.attempts.max(1);
        let deadline = Instant::now() + self.opts.deadline;
        let mut last = String::new();
        for attempt in 1..=attempts {
            match self.attempt(url, dest, &mut expect, progress, deadline) {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(why)) => {
                    if Instant::now() >= deadline {
                        return Err(self.past_deadline(url, &why));
                    }
                    if attempt < attempts {
                        let wait =
                            self.opts.backoff.saturating_mul(1 << (attempt - 1).min(16)).min(Duration::from_secs(30));
                        tracing::warn!("{}: {why}; retrying in {:.1}s", redact(url), wait.as_secs_f64());
                        std::thread::sleep(wait);
                    }
                    last = why;
                }
            }
        }
        Err(Error::msg(format!("{}: giving up after {attempts} attempts: {last}", redact(url))))
    }

    fn past_deadline(&self, url: &Url, why: &str) -> Error {
        Error::msg(format!(
            "{}: not done within {:.0}s (the download deadline, SEMU_FETCH_DEADLINE): {why}; the partial file \
             is kept as .part for a later resume",
            redact(url),
            secs(self.opts.deadline)
        ))
    }

    /// The error for a file larger than `max_download`; its `.part` file is deleted.
    fn too_large(&self, url: &Url, part: &Path, size: String) -> Failure {
        let _ = std::fs::remove_file(part);
        Failure::Fatal(Error::msg(format!(
            "{}: {size}, over the download limit of {} bytes (--max-download / SEMU_MAX_DOWNLOAD); nothing was kept",
            redact(url),
            self.opts.max_download
        )))
    }

    /// Whether `dest` is there and matches `sha256`; a cached file that does not match is removed.
    fn cached(&self, url: &Url, dest: &Path, sha256: Option<&str>) -> Result<bool> {
        if !dest.is_file() {
            return Ok(false);
        }
        let Some(want) = sha256 else { return Ok(true) };
        let got = crate::report::sha256_file(dest)?;
        if got == want {
            return Ok(true);
        }
        std::fs::remove_file(dest).map_err(|e| Error::io(dest, e))?;
        if self.opts.offline {
            return Err(Error::msg(format!(
                "{}: the cached file had SHA-256 {got}, not the expected {want}; it was removed and offline mode \
                 cannot fetch it again",
                redact(url)
            )));
        }
        Ok(false)
    }

    /// One try: resume the `.part` file, stream the rest, verify, rename into place.
    fn attempt(
        &self,
        url: &Url,
        dest: &Path,
        expect: &mut Expect,
        progress: Progress,
        deadline: Instant,
    ) -> Result<(), Failure> {
        let part = with_suffix(dest, ".part");
        let io = |e| Failure::Fatal(Error::io(&part, e));
        let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
        let (mut resp, linked) = self.send(url, have, expect)?;
        // Created only once the server answers, so a 404 leaves nothing behind.
        let mut file =
            OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&part).map_err(io)?;
        let headers = resp.headers().clone();
        let total_of = |h: &HeaderMap| h.get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(content_range);
        let (start, total) = match resp.status() {
            StatusCode::PARTIAL_CONTENT => match total_of(&headers) {
                Some((s, t)) if s == have => (s, t),
                other => {
                    file.set_len(0).map_err(io)?;
                    return Err(Failure::Retry(format!(
                        "the server resumed at {other:?}, not at byte {have}; restarting"
                    )));
                }
            },
            StatusCode::RANGE_NOT_SATISFIABLE => {
                let complete =
                    headers.get(CONTENT_RANGE).and_then(|v| v.to_str().ok()) == Some(&format!("bytes */{have}"));
                if complete {
                    progress(have, Some(have));
                    return self.finish(url, &part, dest, file, expect, None);
                }
                file.set_len(0).map_err(io)?;
                return Err(Failure::Retry("the server refused to resume; restarting".into()));
            }
            _ => (0, resp.content_length()),
        };
        if expect.sha256.is_none() {
            expect.sha256 = linked
                .map(|h| (h, "the hub's X-Linked-Etag"))
                .or_else(|| headers.get(ETAG).and_then(etag_sha256).map(|h| (h, "the server's ETag")));
        }
        if expect.validator.is_none() {
            expect.validator = headers.get(ETAG).filter(|v| !v.as_bytes().starts_with(b"W/")).cloned();
        }
        let total = total.map(|t| if resp.status() == StatusCode::OK { t } else { t.max(start) });
        if let Some(t) = total.filter(|&t| t > self.opts.max_download) {
            return Err(self.too_large(url, &part, format!("the server announces {t} bytes")));
        }
        file.set_len(start).map_err(io)?;
        let mut hasher = Sha256::new();
        if start > 0 {
            file.seek(SeekFrom::Start(0)).map_err(io)?;
            std::io::copy(&mut (&mut file).take(start), &mut hasher).map_err(io)?;
        }
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        let mut done = start;
        progress(done, total);
        let mut buf = vec![0u8; 1 << 16];
        // The speed check: bytes since `window.0`, judged once a read_timeout has passed.
        let mut window = (Instant::now(), 0u64);
        loop {
            let n = match resp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    file.flush().map_err(io)?;
                    return Err(Failure::Retry(if is_timeout(&e) {
                        format!(
                            "the download stalled at byte {done}: no data for {:.1}s (read timeout)",
                            secs(self.opts.read_timeout)
                        )
                    } else {
                        format!("the connection broke at byte {done}: {}", chain(&e))
                    }));
                }
            };
            if done + n as u64 > self.opts.max_download {
                return Err(self.too_large(url, &part, format!("the body runs past {} bytes", done + n as u64)));
            }
            file.write_all(&buf[..n]).map_err(io)?;
            hasher.update(&buf[..n]);
            done += n as u64;
            progress(done, total);
            window.1 += n as u64;
            let now = Instant::now();
            if now >= deadline {
                file.flush().map_err(io)?;
                return Err(Failure::Fatal(self.past_deadline(url, &format!("stopped at byte {done}"))));
            }
            let span = now - window.0;
            if span >= self.opts.read_timeout {
                if (window.1 as f64) < self.opts.min_rate as f64 * span.as_secs_f64() {
                    file.flush().map_err(io)?;
                    return Err(Failure::Retry(format!(
                        "the download crawled at byte {done}: {} bytes in {:.1}s, under the minimum of {} bytes/s \
                         (SEMU_MIN_RATE)",
                        window.1,
                        span.as_secs_f64(),
                        self.opts.min_rate
                    )));
                }
                window = (now, 0);
            }
        }
        if let Some(t) = total.filter(|&t| t != done) {
            return Err(Failure::Retry(format!("the connection closed at byte {done} of {t}")));
        }
        self.finish(url, &part, dest, file, expect, Some(hex(&hasher.finalize())))
    }

    /// Checks the digest (a mismatching file is deleted and never used), then renames atomically.
    fn finish(
        &self,
        url: &Url,
        part: &Path,
        dest: &Path,
        file: File,
        expect: &Expect,
        got: Option<String>,
    ) -> Result<(), Failure> {
        let io = |e| Failure::Fatal(Error::io(part, e));
        file.sync_all().map_err(io)?;
        drop(file);
        if let Some((want, from)) = &expect.sha256 {
            let got = match got {
                Some(g) => g,
                None => crate::report::sha256_file(part).map_err(Failure::Fatal)?,
            };
            if &got != want {
                let _ = std::fs::remove_file(part);
                return Err(Failure::Fatal(Error::msg(format!(
                    "{}: SHA-256 mismatch: expected {want} ({from}), got {got}; the download was deleted",
                    redact(url)
                ))));
            }
        }
        std::fs::rename(part, dest).map_err(|e| Failure::Fatal(Error::io(dest, e)))
    }

    /// GET `url` (Range from `have`), following redirects; returns the final response and the
    /// SHA-256 of any `X-Linked-Etag` seen on the way.
    fn send(&self, url: &Url, have: u64, expect: &Expect) -> Result<(Response, Option<String>), Failure> {
        let mut cur = url.clone();
        let mut linked = None;
        for _ in 0..=MAX_REDIRECTS {
            check_scheme(&cur, self.opts).map_err(Failure::Fatal)?;
            let mut req = self.client.get(cur.clone());
            if have > 0 {
                req = req.header(RANGE, format!("bytes={have}-"));
                if let Some(v) = &expect.validator {
                    req = req.header(IF_RANGE, v.clone());
                }
            }
            if let Some(tok) = self.token_for(url, &cur) {
                let mut v = HeaderValue::from_str(&format!("Bearer {}", tok.expose())).map_err(|_| {
                    Failure::Fatal(Error::msg(
                        "the token (SEMU_TOKEN / HF_TOKEN) has characters not allowed in an HTTP header",
                    ))
                })?;
                v.set_sensitive(true);
                req = req.header(AUTHORIZATION, v);
            }
            let resp = req.send().map_err(|e| self.classify(url, e))?;
            if let Some(h) = resp.headers().get("x-linked-etag").and_then(etag_sha256) {
                linked = Some(h);
            }
            let status = resp.status();
            let here = if &cur == url { String::new() } else { format!(" (redirected to {})", redact(&cur)) };
            match status.as_u16() {
                301 | 302 | 303 | 307 | 308 => {
                    let loc = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).ok_or_else(|| {
                        Failure::Fatal(Error::msg(format!("{}{here}: HTTP {status} without a Location", redact(url))))
                    })?;
                    cur = cur.join(loc).map_err(|e| {
                        Failure::Fatal(Error::msg(format!("{}{here}: bad redirect Location '{loc}': {e}", redact(url))))
                    })?;
                }
                200..=299 | 416 => return Ok((resp, linked)),
                408 | 429 | 500..=599 => return Err(Failure::Retry(format!("HTTP {status}{here}"))),
                401 | 403 => {
                    let hint = if self.token_for(url, &cur).is_some() {
                        "the token given (SEMU_TOKEN / HF_TOKEN) was refused"
                    } else {
                        "set HF_TOKEN (for the hub) or SEMU_TOKEN to send a bearer token"
                    };
                    return Err(Failure::Fatal(Error::msg(format!("{}{here}: HTTP {status}: {hint}", redact(url)))));
                }
                _ => return Err(Failure::Fatal(Error::msg(format!("{}{here}: HTTP {status}", redact(url))))),
            }
        }
        Err(Failure::Fatal(Error::msg(format!("{}: more than {MAX_REDIRECTS} redirects", redact(url)))))
    }

    /// `SEMU_TOKEN` goes to the host asked for, `HF_TOKEN` to the hub's; neither follows a
    /// redirect to another host (a CDN's signed URL needs none).
    fn token_for(&self, asked: &Url, cur: &Url) -> Option<&Secret> {
        let to_hub = Url::parse(&self.opts.hf_endpoint).is_ok_and(|h| h.origin() == cur.origin());
        let hf = self.opts.hf_token.as_ref().filter(|_| to_hub);
        hf.or(self.opts.token.as_ref().filter(|_| asked.origin() == cur.origin()))
    }

    fn classify(&self, url: &Url, e: reqwest::Error) -> Failure {
        let u = redact(url);
        if e.is_builder() || tls_error(&e) {
            return Failure::Fatal(Error::msg(format!("{u}: {}", describe(e))));
        }
        if e.is_connect() && e.is_timeout() {
            return Failure::Retry(format!(
                "could not connect within {:.1}s (connect timeout)",
                secs(self.opts.connect_timeout)
            ));
        }
        if e.is_timeout() {
            return Failure::Retry(format!("no response within {:.1}s (read timeout)", secs(self.opts.read_timeout)));
        }
        Failure::Retry(describe(e))
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `bytes START-END/TOTAL` → (START, TOTAL if known).
fn content_range(v: &str) -> Option<(u64, Option<u64>)> {
    let (range, total) = v.strip_prefix("bytes ")?.split_once('/')?;
    let start = range.split_once('-')?.0.trim().parse().ok()?;
    Some((start, total.trim().parse().ok()))
}

/// A strong ETag that is a SHA-256 (64 hex digits), as the hub sends for LFS files.
fn etag_sha256(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?.trim();
    if s.starts_with("W/") {
        return None;
    }
    let s = s.trim_matches('"').to_ascii_lowercase();
    (s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit())).then_some(s)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The error and its causes on one line, without the URL (messages add a redacted one).
fn describe(e: reqwest::Error) -> String {
    chain(&e.without_url())
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    parts.join(": ")
}

fn is_timeout(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::TimedOut
        || e.get_ref().and_then(|r| r.downcast_ref::<reqwest::Error>()).is_some_and(|r| r.is_timeout())
}

/// Certificate and handshake failures do not get better by retrying.
fn tls_error(e: &reqwest::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if s.is::<rustls::Error>()
            || s.downcast_ref::<std::io::Error>().and_then(|i| i.get_ref()).is_some_and(|i| i.is::<rustls::Error>())
        {
            return true;
        }
        src = s.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_and_etags_parse() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
        let h = "a".repeat(64);
        assert_eq!(etag_sha256(&HeaderValue::from_str(&format!("\"{}\"", h.to_uppercase())).unwrap()), Some(h.clone()));
        assert_eq!(etag_sha256(&HeaderValue::from_str(&format!("W/\"{h}\"")).unwrap()), None);
        assert_eq!(etag_sha256(&HeaderValue::from_static("\"0123abcd\"")), None);
    }
}

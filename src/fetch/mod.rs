//! Remote models and data: a path-or-URL argument becomes a local file.
//!
//! `https://…`, `http://…` (only with `allow_http`) and `hf://OWNER/REPO[@REVISION]/PATH` are
//! downloaded once into a cache (`$SEMU_CACHE`, default `~/.cache/semu`), through a `.part` file
//! that is resumed by HTTP Range after an interruption, verified by SHA-256 (given, or the hub's
//! ETag when it is one) and renamed into place only when complete and correct. Plain paths are
//! returned as they are.
mod download;
mod external;
mod source;

pub use external::{external_locations, fetch_external_data};
pub use source::{cache_path, parse, redact, Source};

use crate::error::{Error, Result};
use std::path::PathBuf;
use std::time::Duration;

/// A bearer token. It is sent in the `Authorization` header and nowhere else: `Debug` hides it
/// and it has no `Display`, so it cannot end up in a message, a log or a report.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How remote arguments are fetched. [`FetchOptions::from_env`] reads the environment; tests
/// build one directly (short timeouts, a temporary cache) so they never depend on it.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub cache_dir: PathBuf,
    /// Allow `http://` URLs (and redirects to them).
    pub allow_http: bool,
    /// Use the cache only; a missing file is an error.
    pub offline: bool,
    /// Base URL for `hf://` paths.
    pub hf_endpoint: String,
    /// `SEMU_TOKEN`: sent to the host of the URL asked for (not to hosts it redirects to).
    pub token: Option<Secret>,
    /// `HF_TOKEN`: sent only to the hub endpoint's host, so it never leaks to other servers.
    pub hf_token: Option<Secret>,
    pub connect_timeout: Duration,
    /// Longest wait for the response head or for the next bytes of the body.
    pub read_timeout: Duration,
    /// Tries per file (1 = no retry) on 5xx, 408, 429, timeouts and dropped connections.
    pub attempts: u32,
    /// First wait between tries; doubled after each, at most 30 s.
    pub backoff: Duration,
    /// Largest file a download may bring, in bytes: one that says it is larger is not started,
    /// one whose body runs past it is stopped and its `.part` file deleted.
    pub max_download: u64,
    /// Slowest sustained speed accepted, in bytes per second, judged over each `read_timeout`
    /// of the body: a server that trickles (one byte every half second) is dropped like a stalled one.
    pub min_rate: u64,
    /// Longest time one file may take, every try and wait included.
    pub deadline: Duration,
}

/// 64 GiB: above the largest single files of the models semu handles.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 64 << 30;

pub const DEFAULT_HF_ENDPOINT: &str = "https://huggingface.co";

impl FetchOptions {
    /// `SEMU_CACHE`, `SEMU_OFFLINE`, `SEMU_HF_ENDPOINT`, `SEMU_TOKEN`, `HF_TOKEN`,
    /// `SEMU_CONNECT_TIMEOUT`, `SEMU_READ_TIMEOUT` and `SEMU_FETCH_DEADLINE` (seconds),
    /// `SEMU_MAX_DOWNLOAD` (bytes, K/M/G/T suffixes allowed) and `SEMU_MIN_RATE` (bytes/s, 0 = none).
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let cache_dir = match var("SEMU_CACHE") {
            Some(d) => PathBuf::from(d),
            None => dirs::cache_dir()
                .map(|d| d.join("semu"))
                .ok_or_else(|| Error::msg("no cache folder: set SEMU_CACHE (or HOME / XDG_CACHE_HOME)"))?,
        };
        let secs = |k: &str, default: u64| -> Result<Duration> {
            match var(k) {
                None => Ok(Duration::from_secs(default)),
                Some(v) => v
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| Error::msg(format!("{k}='{v}': expected a positive number of seconds"))),
            }
        };
        Ok(FetchOptions {
            cache_dir,
            allow_http: false,
            offline: var("SEMU_OFFLINE")
                .is_some_and(|v| !matches!(v.to_ascii_lowercase().as_str(), "0" | "false" | "no")),
            hf_endpoint: var("SEMU_HF_ENDPOINT").unwrap_or_else(|| DEFAULT_HF_ENDPOINT.to_string()),
            token: var("SEMU_TOKEN").map(Secret),
            hf_token: var("HF_TOKEN").map(Secret),
            connect_timeout: secs("SEMU_CONNECT_TIMEOUT", 10)?,
            read_timeout: secs("SEMU_READ_TIMEOUT", 60)?,
            attempts: 5,
            backoff: Duration::from_millis(500),
            max_download: match var("SEMU_MAX_DOWNLOAD") {
                None => DEFAULT_MAX_DOWNLOAD,
                Some(v) => crate::limits::parse_count(&v).ok_or_else(|| {
                    Error::msg(format!("SEMU_MAX_DOWNLOAD='{v}': expected a positive size in bytes (e.g. 64G)"))
                })?,
            },
            min_rate: match var("SEMU_MIN_RATE") {
                None => 1024,
                Some(v) => v
                    .parse()
                    .map_err(|_| Error::msg(format!("SEMU_MIN_RATE='{v}': expected bytes per second (0 = none)")))?,
            },
            deadline: secs("SEMU_FETCH_DEADLINE", 24 * 3600)?,
        })
    }

    /// No environment, no token, the given cache, short timeouts: for tests.
    pub fn for_tests(cache_dir: impl Into<PathBuf>) -> Self {
        FetchOptions {
            cache_dir: cache_dir.into(),
            allow_http: true,
            offline: false,
            hf_endpoint: DEFAULT_HF_ENDPOINT.to_string(),
            token: None,
            hf_token: None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(2),
            attempts: 3,
            backoff: Duration::from_millis(20),
            max_download: 1 << 30,
            min_rate: 1024,
            deadline: Duration::from_secs(60),
        }
    }
}

/// Progress of one file: bytes done, total when the server said.
pub type Progress<'a> = &'a mut dyn FnMut(u64, Option<u64>);

/// A plain path as it is; a URL downloaded (or found in the cache) and its cached path.
pub fn resolve(arg: &str, opts: &FetchOptions) -> Result<PathBuf> {
    fetch(arg, opts, None, &mut |_, _| {})
}

/// [`resolve`] for an ONNX model: a remote model's external-data files are fetched beside it.
pub fn resolve_model(arg: &str, opts: &FetchOptions) -> Result<PathBuf> {
    Ok(fetch_model(arg, opts, None, &mut |_, _| {})?.0)
}

/// Fetches `arg` (a plain path is returned unchecked). `sha256` is the expected hex digest.
pub fn fetch(arg: &str, opts: &FetchOptions, sha256: Option<&str>, progress: Progress) -> Result<PathBuf> {
    match parse(arg, opts)? {
        Source::Local(p) => Ok(p),
        Source::Remote(url) => {
            let dest = cache_path(&opts.cache_dir, &url);
            download::Session::new(opts)?.get(&url, &dest, parse_sha256(sha256)?, progress)?;
            Ok(dest)
        }
    }
}

/// [`fetch`] for a model; returns its path and the paths of the external-data files fetched
/// beside it. A file that does not parse as ONNX is returned as it is, for the caller's loader
/// to report.
pub fn fetch_model(
    arg: &str,
    opts: &FetchOptions,
    sha256: Option<&str>,
    progress: Progress,
) -> Result<(PathBuf, Vec<PathBuf>)> {
    let path = fetch(arg, opts, sha256, progress)?;
    let Source::Remote(url) = parse(arg, opts)? else { return Ok((path, vec![])) };
    let Ok(model) = crate::onnx::OnnxModel::load_unchecked(&path) else { return Ok((path, vec![])) };
    let siblings = fetch_external_data(&url, &external_locations(&model), opts, progress)?;
    Ok((path, siblings))
}

/// Lower-case hex, exactly 64 digits.
pub fn parse_sha256(s: Option<&str>) -> Result<Option<String>> {
    let Some(s) = s else { return Ok(None) };
    let h = s.trim().to_ascii_lowercase();
    if h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(Some(h))
    } else {
        Err(Error::msg(format!("--sha256 '{s}': expected 64 hexadecimal digits")))
    }
}

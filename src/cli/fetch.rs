//! `semu fetch URL… [--sha256 HEX]… [--allow-http] [--offline]`, and the flags every command
//! takes so that a model or data argument may be a URL.
use super::progress::Download;
use super::{CmdResult, Exit};
use anyhow::anyhow;
use semu::fetch::{self, FetchOptions, Source};
use std::path::{Path, PathBuf};

/// Download models or data into the cache without running anything; print each cached path.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  semu fetch hf://OWNER/REPO/model.onnx\n  \
semu fetch hf://OWNER/REPO@v1.0/onnx/model.onnx --sha256 3f2a…\n  \
semu fetch http://store.internal/models/digits.onnx --allow-http\n\n\
A model (.onnx) also brings its external-data files into the same cache folder.\n\
Environment: SEMU_CACHE (cache folder, default ~/.cache/semu), SEMU_OFFLINE=1, SEMU_HF_ENDPOINT\n\
(hub or mirror for hf://, default https://huggingface.co), HF_TOKEN (sent to the hub only),\n\
SEMU_TOKEN (sent to the host of the URL), SEMU_CONNECT_TIMEOUT / SEMU_READ_TIMEOUT (seconds).")]
pub struct Args {
    /// https://…, http://… (with --allow-http) or hf://OWNER/REPO[@REVISION]/PATH.
    #[arg(required = true, value_name = "URL")]
    urls: Vec<String>,
    /// Expected SHA-256 (64 hex digits): none, or one per URL in the same order.
    #[arg(long = "sha256", value_name = "HEX")]
    sha256: Vec<String>,
    #[command(flatten)]
    remote: RemoteArgs,
}

/// Flags shared by every command that reads a model or data file.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct RemoteArgs {
    /// Allow http:// URLs (unencrypted: the download could be altered in transit).
    #[arg(long)]
    pub allow_http: bool,
    /// Use the download cache only (also SEMU_OFFLINE=1); a file not cached is an error.
    #[arg(long)]
    pub offline: bool,
    /// Largest file to download, in bytes (K/M/G/T suffixes; default 64G, also SEMU_MAX_DOWNLOAD).
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_download: Option<u64>,
}

/// A positive size or count: digits with an optional K/M/G/T suffix (powers of 1024), or 2^K.
pub fn parse_size(s: &str) -> Result<u64, String> {
    semu::limits::parse_count(s).ok_or_else(|| format!("'{s}': expected a positive number, e.g. 4096, 64G or 2^33"))
}

impl RemoteArgs {
    pub fn options(&self) -> anyhow::Result<FetchOptions> {
        let mut o = FetchOptions::from_env()?;
        o.allow_http |= self.allow_http;
        o.offline |= self.offline;
        if let Some(m) = self.max_download {
            o.max_download = m;
        }
        Ok(o)
    }

    /// A model path or URL as a local path; a remote model's external data comes along.
    pub fn model(&self, arg: &Path) -> anyhow::Result<PathBuf> {
        let Some(s) = remote_arg(arg) else { return Ok(arg.to_path_buf()) };
        let mut d = Download::new(s);
        let path = fetch::fetch_model(s, &self.options()?, None, &mut |n, t| d.show(n, t))?.0;
        d.finish();
        Ok(path)
    }

    /// A data (or any other) path or URL as a local path.
    pub fn file(&self, arg: &Path) -> anyhow::Result<PathBuf> {
        let Some(s) = remote_arg(arg) else { return Ok(arg.to_path_buf()) };
        let mut d = Download::new(s);
        let path = fetch::fetch(s, &self.options()?, None, &mut |n, t| d.show(n, t))?;
        d.finish();
        Ok(path)
    }
}

/// Only arguments that look like URLs go through the fetcher (no environment read otherwise).
fn remote_arg(arg: &Path) -> Option<&str> {
    arg.to_str().filter(|s| s.contains("://"))
}

pub fn run(a: Args) -> CmdResult {
    let usage = |m: String| Exit { code: 2, err: anyhow!(m) };
    if !a.sha256.is_empty() && a.sha256.len() != a.urls.len() {
        return Err(usage(format!("{} --sha256 for {} URLs: give none, or one per URL", a.sha256.len(), a.urls.len())));
    }
    let opts = a.remote.options()?;
    for (i, url) in a.urls.iter().enumerate() {
        let sha = a.sha256.get(i).map(String::as_str);
        fetch::parse_sha256(sha).map_err(|e| usage(e.to_string()))?;
        match fetch::parse(url, &opts).map_err(|e| usage(e.to_string()))? {
            Source::Local(_) => return Err(usage(format!("'{url}' is not a URL (https://, http:// or hf://)"))),
            Source::Remote(u) => {
                let mut d = Download::new(url);
                let mut progress = |n, t| d.show(n, t);
                let (path, siblings) = if u.path().ends_with(".onnx") {
                    fetch::fetch_model(url, &opts, sha, &mut progress)?
                } else {
                    (fetch::fetch(url, &opts, sha, &mut progress)?, vec![])
                };
                d.finish();
                for s in siblings {
                    eprintln!("[semu] external data {}", s.display());
                }
                println!("{}", path.display());
            }
        }
    }
    Ok(())
}

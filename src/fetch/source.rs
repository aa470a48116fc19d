//! What a path-or-URL argument names, and where its download lives in the cache.
use super::FetchOptions;
use crate::error::{Error, Result};
use reqwest::Url;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A model or data argument: a local file, or a URL to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local(PathBuf),
    Remote(Url),
}

/// Parses `arg`: `https://…`, `http://…` (only with `allow_http`), `hf://OWNER/REPO[@REV]/PATH`
/// or a plain path. Any other `scheme://` is refused rather than read as a file name.
pub fn parse(arg: &str, opts: &FetchOptions) -> Result<Source> {
    let Some((scheme, rest)) = arg.split_once("://") else {
        return Ok(Source::Local(PathBuf::from(arg)));
    };
    if scheme.is_empty() || !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c)) {
        return Ok(Source::Local(PathBuf::from(arg)));
    }
    let url = match scheme.to_ascii_lowercase().as_str() {
        "hf" => hf_url(rest, &opts.hf_endpoint)?,
        "https" | "http" => Url::parse(arg).map_err(|e| Error::msg(format!("'{arg}': not a valid URL: {e}")))?,
        other => {
            return Err(Error::msg(format!(
                "'{}': unsupported scheme '{other}://' (use a local path, https://, http:// with --allow-http, \
                 or hf://OWNER/REPO[@REVISION]/PATH)",
                redact_str(arg)
            )))
        }
    };
    check_scheme(&url, opts)?;
    Ok(Source::Remote(url))
}

/// Refuses plain HTTP unless the user allowed it (a mirror endpoint or a redirect may be http too).
pub fn check_scheme(url: &Url, opts: &FetchOptions) -> Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if opts.allow_http => Ok(()),
        "http" => Err(Error::msg(format!(
            "{}: plain http:// is refused because the download could be altered in transit; \
             pass --allow-http to allow it (or use https://)",
            redact(url)
        ))),
        s => Err(Error::msg(format!("{}: unsupported scheme '{s}'", redact(url)))),
    }
}

/// `OWNER/REPO[@REVISION]/PATH` → `{endpoint}/OWNER/REPO/resolve/REVISION/PATH`.
fn hf_url(rest: &str, endpoint: &str) -> Result<Url> {
    let bad = |why: &str| Error::msg(format!("'hf://{rest}': {why} (expected hf://OWNER/REPO[@REVISION]/PATH)"));
    let mut parts = rest.splitn(3, '/');
    let (owner, repo_rev, path) = match (parts.next(), parts.next(), parts.next()) {
        (Some(o), Some(r), Some(p)) if !o.is_empty() && !r.is_empty() && !p.is_empty() => (o, r, p),
        _ => return Err(bad("missing owner, repository or file path")),
    };
    let (repo, rev) = match repo_rev.split_once('@') {
        Some((r, v)) if !r.is_empty() && !v.is_empty() => (r, v),
        Some(_) => return Err(bad("empty repository or revision around '@'")),
        None => (repo_rev, "main"),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if [owner, repo, rev].iter().chain(&segments).any(|s| s.is_empty() || *s == "." || *s == "..") {
        return Err(bad("empty, '.' or '..' path segment"));
    }
    let mut url = Url::parse(endpoint)
        .map_err(|e| Error::msg(format!("hub endpoint '{endpoint}' (SEMU_HF_ENDPOINT) is not a valid URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| Error::msg(format!("hub endpoint '{endpoint}' cannot take a path")))?
        .pop_if_empty()
        .extend([owner, repo, "resolve", rev])
        .extend(segments);
    Ok(url)
}

/// The cache file of `url`: `{cache}/{host}[_{port}]/{key}/{file name}`, where `key` hashes
/// the URL without its last segment (revision and query included), so a model and its
/// external-data siblings share one folder and the same URL maps to the same file every time.
pub fn cache_path(cache: &Path, url: &Url) -> PathBuf {
    let mut dir_url = url.clone();
    dir_url.set_fragment(None);
    let _ = dir_url.set_username("");
    let _ = dir_url.set_password(None);
    let name = url.path_segments().and_then(|mut s| s.next_back()).map(sanitize).unwrap_or_default();
    if let Ok(mut s) = dir_url.path_segments_mut() {
        s.pop().push("");
    }
    let key: String = Sha256::digest(dir_url.as_str().as_bytes())[..8].iter().map(|b| format!("{b:02x}")).collect();
    let host = match url.port() {
        Some(p) => format!("{}_{p}", url.host_str().unwrap_or("host")),
        None => url.host_str().unwrap_or("host").to_string(),
    };
    let name = if name.is_empty() || name.chars().all(|c| c == '.') { "download".to_string() } else { name };
    cache.join(sanitize(&host)).join(key).join(name)
}

/// Keeps a URL segment usable as a file name on any system (the extension survives).
fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._-+@=,%".contains(c) { c } else { '_' }).collect()
}

/// The URL for messages: no user name or password.
pub fn redact(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

fn redact_str(arg: &str) -> String {
    Url::parse(arg).map(|u| redact(&u)).unwrap_or_else(|_| arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FetchOptions {
        FetchOptions { allow_http: false, ..FetchOptions::for_tests("/c") }
    }

    #[test]
    fn plain_paths_stay_paths() {
        assert_eq!(parse("a/b.onnx", &opts()).unwrap(), Source::Local("a/b.onnx".into()));
        assert_eq!(parse("C:\\m.onnx", &opts()).unwrap(), Source::Local("C:\\m.onnx".into()));
    }

    #[test]
    fn hf_paths_resolve_to_the_hub() {
        let Source::Remote(u) = parse("hf://acme/digits/onnx/model.onnx", &opts()).unwrap() else { panic!() };
        assert_eq!(u.as_str(), "https://huggingface.co/acme/digits/resolve/main/onnx/model.onnx");
        let o = FetchOptions { hf_endpoint: "https://mirror.example/hf/".into(), ..opts() };
        let Source::Remote(u) = parse("hf://acme/digits@v1.0/model.onnx", &o).unwrap() else { panic!() };
        assert_eq!(u.as_str(), "https://mirror.example/hf/acme/digits/resolve/v1.0/model.onnx");
        for bad in ["hf://acme/digits", "hf://acme/digits@/m.onnx", "hf://acme/../x/m.onnx", "hf:///d/m"] {
            assert!(parse(bad, &opts()).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_needs_the_flag_and_other_schemes_are_refused() {
        let e = parse("http://h/m.onnx", &opts()).unwrap_err().to_string();
        assert!(e.contains("--allow-http"), "{e}");
        assert!(parse("http://h/m.onnx", &FetchOptions { allow_http: true, ..opts() }).is_ok());
        let e = parse("s3://b/m.onnx", &opts()).unwrap_err().to_string();
        assert!(e.contains("unsupported scheme"), "{e}");
    }

    #[test]
    fn siblings_share_a_cache_folder_and_revisions_do_not() {
        let c = Path::new("/c");
        let p = |s: &str| cache_path(c, &Url::parse(s).unwrap());
        let m = p("https://h.io:8443/o/r/resolve/main/model.onnx");
        assert_eq!(m.parent(), p("https://h.io:8443/o/r/resolve/main/model.onnx.data").parent());
        assert_ne!(m.parent(), p("https://h.io:8443/o/r/resolve/v2/model.onnx").parent());
        assert!(m.starts_with("/c/h.io_8443") && m.ends_with("model.onnx"), "{}", m.display());
        let odd = p("https://h/x/..%2F..%2Fetc");
        assert_eq!(odd.file_name().unwrap(), "..%2F..%2Fetc");
        assert_eq!(odd.parent(), p("https://h/x/y").parent());
        assert_eq!(p("https://h/").file_name().unwrap(), "download");
    }

    #[test]
    fn messages_hide_credentials_in_urls() {
        assert_eq!(redact(&Url::parse("https://u:secret@h/m").unwrap()), "https://h/m");
    }
}

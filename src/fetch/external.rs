//! ONNX external data next to a remote model: each file named by a `location` is fetched from
//! beside the model's URL into the model's cache folder, where the loader looks for it.
use super::download::Session;
use super::source::{cache_path, check_scheme, redact};
use super::{FetchOptions, Progress};
use crate::error::{Error, Result};
use crate::onnx::tensor::{external_path, external_ref, is_external};
use crate::onnx::OnnxModel;
use reqwest::Url;
use std::path::PathBuf;

/// The distinct external-data locations of a model's initializers, in order of first use.
pub fn external_locations(model: &OnnxModel) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in model.graph().initializer.iter().filter(|t| is_external(t)) {
        // A tensor without a location is reported by the loader, with its name.
        if let Ok(r) = external_ref(t) {
            if !out.contains(&r.location) {
                out.push(r.location);
            }
        }
    }
    out
}

/// Fetches `locations` (relative to `model_url`) into the folder where the model is cached, and
/// returns their paths. Locations that would leave the model's folder are refused.
pub fn fetch_external_data(
    model_url: &Url,
    locations: &[String],
    opts: &FetchOptions,
    progress: Progress,
) -> Result<Vec<PathBuf>> {
    if locations.is_empty() {
        return Ok(vec![]);
    }
    let model_dir = cache_path(&opts.cache_dir, model_url).parent().map(PathBuf::from).unwrap_or_default();
    let session = Session::new(opts)?;
    let mut out = Vec::new();
    for loc in locations {
        let dest = external_path(&model_dir, loc)?;
        let url = sibling_url(model_url, loc)?;
        check_scheme(&url, opts)?;
        session
            .get(&url, &dest, None, progress)
            .map_err(|e| Error::msg(format!("external data '{loc}' of {}: {e}", redact(model_url))))?;
        out.push(dest);
    }
    Ok(out)
}

/// The model URL with its file name replaced by `location`'s segments (each percent-encoded).
fn sibling_url(model_url: &Url, location: &str) -> Result<Url> {
    let mut url = model_url.clone();
    let segments: Vec<&str> = location.split('/').filter(|s| !s.is_empty() && *s != ".").collect();
    if segments.is_empty() || segments.contains(&"..") || location.contains('\\') {
        return Err(Error::msg(format!(
            "external data location '{location}' must be a relative path inside the model's folder"
        )));
    }
    url.path_segments_mut()
        .map_err(|_| Error::msg(format!("{}: cannot hold a path", redact(model_url))))?
        .pop()
        .extend(segments);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn siblings_sit_beside_the_model_url() {
        let m = Url::parse("https://h/o/r/resolve/main/onnx/model.onnx?x=1").unwrap();
        assert_eq!(
            sibling_url(&m, "model.onnx.data").unwrap().as_str(),
            "https://h/o/r/resolve/main/onnx/model.onnx.data?x=1"
        );
        assert_eq!(sibling_url(&m, "w/a b#1").unwrap().as_str(), "https://h/o/r/resolve/main/onnx/w/a%20b%231?x=1");
        for bad in ["../x", "a/../../x", "", "a\\b"] {
            assert!(sibling_url(&m, bad).is_err(), "{bad}");
        }
    }
}

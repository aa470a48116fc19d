//! Remote models and data (src/fetch) against a real HTTP server on 127.0.0.1 that fails on
//! demand: 404, 5xx then success, a connection dropped mid-body then resumed by Range, wrong
//! hashes (given or from the ETag), a stalled body past the read timeout, a hub redirect to a
//! CDN, bearer tokens, offline mode, external data beside a remote model; then `semu` itself.
#[path = "fetch/server.rs"]
mod server;

use semu::fetch::{self, FetchOptions, Secret, Source};
use semu::onnx::OnnxModel;
use server::{Reply, Server};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

fn opts(cache: &Path) -> FetchOptions {
    FetchOptions { attempts: 3, backoff: Duration::from_millis(10), ..FetchOptions::for_tests(cache) }
}

/// 200 kB that are not all alike, so a wrong offset or a lost chunk shows.
fn body() -> Vec<u8> {
    (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

fn get(url: &str, o: &FetchOptions) -> semu::Result<PathBuf> {
    fetch::fetch(url, o, None, &mut |_, _| {})
}

fn cached(url: &str, o: &FetchOptions) -> PathBuf {
    let Source::Remote(u) = fetch::parse(url, o).unwrap() else { panic!("{url} is not remote") };
    fetch::cache_path(&o.cache_dir, &u)
}

/// Files in the cache other than lock files (downloads and `.part` files).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if p.extension().is_none_or(|x| x != "lock") {
            out.push(p);
        }
    }
    out
}

#[test]
fn not_found_is_one_clear_error_and_leaves_nothing() {
    let s = Server::start(|_, _| Reply::status(404));
    let dir = tempfile::tempdir().unwrap();
    let e = get(&s.url("/nope.onnx"), &opts(dir.path())).unwrap_err().to_string();
    assert!(e.contains(&s.url("/nope.onnx")) && e.contains("HTTP 404"), "{e}");
    assert_eq!(s.requests().len(), 1, "a 404 is not retried");
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[test]
fn server_errors_are_retried_then_succeed_or_give_up() {
    let b = body();
    let s = Server::start(move |req, n| match (req.path.as_str(), n) {
        ("/flaky.bin", 0) => Reply::status(500),
        ("/flaky.bin", 1) => Reply::status(503),
        ("/flaky.bin", _) => Reply::file(req, &b),
        _ => Reply::status(502),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let p = get(&s.url("/flaky.bin"), &o).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body());
    let e = get(&s.url("/down.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("giving up after 3 attempts") && e.contains("HTTP 502"), "{e}");
    let reqs = s.requests();
    assert_eq!(reqs.iter().filter(|r| r.path == "/flaky.bin").count(), 3);
    assert_eq!(reqs.iter().filter(|r| r.path == "/down.bin").count(), 3, "attempts are bounded");
}

#[test]
fn a_dropped_connection_resumes_with_a_range_request() {
    let b = body();
    let s = Server::start(move |req, n| {
        let r = Reply::file(req, &b).header("etag", "\"v1\"");
        if n == 0 {
            Reply { cut_after: Some(70_000), ..r }
        } else {
            r
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut seen = vec![];
    let p = fetch::fetch(&s.url("/model.onnx"), &opts(dir.path()), None, &mut |d, t| seen.push((d, t))).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body());
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("range"), None);
    assert_eq!(reqs[1].header("range"), Some("bytes=70000-"), "resumed where the first body broke");
    assert_eq!(reqs[1].header("if-range"), Some("\"v1\""), "a changed file would restart, not splice");
    assert_eq!(seen.last(), Some(&(200_000, Some(200_000))));
    assert!(seen.contains(&(70_000, Some(200_000))), "the second try starts at the resumed offset");
    assert!(files(dir.path()).iter().all(|f| !f.to_string_lossy().ends_with(".part")));
}

#[test]
fn a_leftover_part_file_is_resumed_or_restarted() {
    let b = body();
    let s = Server::start(move |req, _| match req.path.as_str() {
        "/ranged.bin" => Reply::file(req, &b),
        _ => Reply::ok(&b), // ignores Range
    });
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    for (path, prefix) in [("/ranged.bin", body()[..50_000].to_vec()), ("/plain.bin", vec![7u8; 1000])] {
        let part = PathBuf::from(format!("{}.part", cached(&s.url(path), &o).display()));
        std::fs::create_dir_all(part.parent().unwrap()).unwrap();
        std::fs::write(&part, prefix).unwrap();
        let p = get(&s.url(path), &o).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), body(), "{path}");
        assert!(!part.exists());
    }
    let reqs = s.requests();
    assert_eq!(reqs[0].header("range"), Some("bytes=50000-"));
    assert_eq!(reqs[1].header("range"), Some("bytes=1000-"));
}

#[test]
fn a_wrong_hash_is_rejected_and_not_left_in_the_cache() {
    let b = body();
    let (good, bad) = (sha(&b), sha(b"something else"));
    let (g, w) = (good.clone(), bad.clone());
    let s = Server::start(move |req, _| match req.path.as_str() {
        "/etag-good.bin" => Reply::file(req, &b).header("etag", &format!("\"{g}\"")),
        "/etag-bad.bin" => Reply::file(req, &b).header("etag", &format!("\"{w}\"")),
        _ => Reply::file(req, &b),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let e = fetch::fetch(&s.url("/given.bin"), &o, Some(&bad), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch") && e.contains("--sha256") && e.contains(&good), "{e}");
    let e = get(&s.url("/etag-bad.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch") && e.contains("ETag"), "{e}");
    assert!(files(dir.path()).is_empty(), "rejected files are deleted: {:?}", files(dir.path()));
    // A matching ETag verifies; a matching --sha256 on a cached file costs no request.
    let p = get(&s.url("/etag-good.bin"), &o).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body());
    let n = s.requests().len();
    assert_eq!(fetch::fetch(&s.url("/etag-good.bin"), &o, Some(&good), &mut |_, _| {}).unwrap(), p);
    assert_eq!(s.requests().len(), n);
    // A cached file that does not match the digest asked for is dropped, not used.
    assert!(fetch::fetch(&s.url("/etag-good.bin"), &o, Some(&bad), &mut |_, _| {}).is_err());
    assert!(!p.exists());
    let e = fetch::fetch(&s.url("/x"), &o, Some("abc"), &mut |_, _| {}).unwrap_err().to_string();
    assert!(e.contains("64 hexadecimal digits"), "{e}");
}

#[test]
fn a_stalled_server_hits_the_read_timeout_in_bounded_time() {
    let b = body();
    let s = Server::start(move |req, _| {
        if req.path == "/no-head.bin" {
            std::thread::sleep(Duration::from_secs(3));
        }
        Reply { cut_after: Some(1000), stall: Some(Duration::from_secs(3)), ..Reply::file(req, &b) }
    });
    let dir = tempfile::tempdir().unwrap();
    let o = FetchOptions { read_timeout: Duration::from_millis(300), attempts: 2, ..opts(dir.path()) };
    let t = Instant::now();
    let e = get(&s.url("/slow-body.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("giving up after 2 attempts") && e.contains("read timeout") && e.contains("stalled"), "{e}");
    let e = get(&s.url("/no-head.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("no response within 0.3s (read timeout)"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "took {:?}", t.elapsed());
    let reqs = s.requests();
    assert_eq!(
        reqs.iter().filter(|r| r.path == "/slow-body.bin").nth(1).and_then(|r| r.header("range")),
        Some("bytes=1000-")
    );
}

/// Issue 15: an endless body filled the cache (5.35 GB in 30 s). It stops at --max-download, and
/// the partial file is deleted; a file that announces more is not started.
#[test]
fn an_endless_or_oversized_body_stops_at_the_size_cap_and_leaves_nothing() {
    let s = Server::start(|req, _| match req.path.as_str() {
        "/endless.bin" => Reply { no_length: true, endless: true, ..Reply::ok(&[7u8; 65536]) },
        _ => Reply::ok(&[1u8; 5000]),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = FetchOptions { max_download: 1 << 20, ..opts(dir.path()) };
    let t = Instant::now();
    let e = get(&s.url("/endless.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("the body runs past") && e.contains("over the download limit of 1048576 bytes"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let e = get(&s.url("/big.bin"), &FetchOptions { max_download: 4000, ..o.clone() }).unwrap_err().to_string();
    assert!(e.contains("the server announces 5000 bytes, over the download limit of 4000 bytes"), "{e}");
    assert!(files(dir.path()).is_empty(), "nothing is left: {:?}", files(dir.path()));
    assert_eq!(s.requests().len(), 2, "a file over the cap is not retried");
}

/// Issue 15: a body dripping one byte per 0.5 s never finished (the read timeout only covers
/// idle gaps). It is dropped for its speed, and the deadline bounds the whole download.
#[test]
fn a_dripping_body_is_stopped_by_the_minimum_rate_or_the_deadline() {
    let s = Server::start(|_, _| Reply { drip: Some(Duration::from_millis(500)), ..Reply::ok(&[3u8; 1000]) });
    let dir = tempfile::tempdir().unwrap();
    let o = FetchOptions { read_timeout: Duration::from_secs(1), attempts: 2, ..opts(dir.path()) };
    let t = Instant::now();
    let e = get(&s.url("/drip.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("giving up after 2 attempts") && e.contains("under the minimum of 1024 bytes/s"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
    let part = files(dir.path());
    assert!(part.iter().all(|f| f.to_string_lossy().ends_with(".part")), "never as if complete: {part:?}");

    let o = FetchOptions { min_rate: 0, deadline: Duration::from_secs(2), attempts: 5, ..o };
    let t = Instant::now();
    let e = get(&s.url("/drip2.bin"), &o).unwrap_err().to_string();
    assert!(e.contains("not done within 2s (the download deadline"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    assert!(!cached(&s.url("/drip2.bin"), &o).exists(), "the partial download is not in the cache as a file");
}

#[test]
fn a_hub_redirect_to_a_cdn_is_followed_and_checked_against_the_linked_etag() {
    let b = body();
    let digest = sha(&b);
    let port = Arc::new(OnceLock::<u16>::new());
    let p2 = port.clone();
    let s = Server::start(move |req, _| {
        // The CDN is "localhost": another origin than the hub at 127.0.0.1, as in real life.
        let cdn = format!("http://localhost:{}/cdn/blob?sig=abc", p2.get().unwrap());
        match req.path.as_str() {
            "/acme/digits/resolve/main/onnx/model.onnx" => {
                Reply::redirect(&cdn).header("x-linked-etag", &format!("\"{digest}\""))
            }
            "/acme/digits/resolve/v2/onnx/model.onnx" => {
                Reply::redirect(&cdn).header("x-linked-etag", &format!("\"{}\"", "0".repeat(64)))
            }
            p if p.starts_with("/cdn/blob") => Reply::file(req, &b).header("etag", "\"d41d8cd98f00b204\""),
            _ => Reply::status(404),
        }
    });
    port.set(s.port).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = FetchOptions { hf_endpoint: s.url(""), hf_token: Some(Secret::new("hf_hubtoken")), ..opts(dir.path()) };
    let p = get("hf://acme/digits/onnx/model.onnx", &o).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), body());
    assert!(p.ends_with("model.onnx"));
    let reqs = s.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("authorization"), Some("Bearer hf_hubtoken"), "the hub gets HF_TOKEN");
    assert_eq!(reqs[1].path, "/cdn/blob?sig=abc");
    assert_eq!(reqs[1].header("authorization"), None, "the token does not follow to the CDN");
    let e = get("hf://acme/digits@v2/onnx/model.onnx", &o).unwrap_err().to_string();
    assert!(e.contains("SHA-256 mismatch") && e.contains("X-Linked-Etag"), "{e}");
    assert!(!cached("hf://acme/digits@v2/onnx/model.onnx", &o).exists());
}

#[test]
fn a_bearer_token_reaches_the_server_and_never_an_error_message() {
    let secret = "s3cr3t-T0KEN-42";
    let s = Server::start(|req, _| match req.path.as_str() {
        "/denied.onnx" => Reply::status(401),
        _ => Reply::status(500),
    });
    let dir = tempfile::tempdir().unwrap();
    let o = FetchOptions {
        token: Some(Secret::new(secret)),
        hf_token: Some(Secret::new("hf-not-for-you")),
        ..opts(dir.path())
    };
    let errors = [get(&s.url("/denied.onnx"), &o).unwrap_err(), get(&s.url("/broken.onnx"), &o).unwrap_err()];
    assert!(errors[0].to_string().contains("HTTP 401") && errors[0].to_string().contains("refused"), "{}", errors[0]);
    for e in &errors {
        for text in [e.to_string(), format!("{e:?}"), format!("{o:?}")] {
            assert!(!text.contains(secret) && !text.contains("hf-not-for-you"), "{text}");
        }
    }
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1 + 3);
    assert!(reqs.iter().all(|r| r.header("authorization") == Some(&format!("Bearer {secret}"))), "{reqs:?}");
}

#[test]
fn offline_mode_uses_the_cache_only_and_names_what_is_missing() {
    let b = body();
    let s = Server::start(move |req, _| Reply::file(req, &b));
    let dir = tempfile::tempdir().unwrap();
    let online = opts(dir.path());
    let offline = FetchOptions { offline: true, ..online.clone() };
    let url = s.url("/data/forget.npz");
    let e = get(&url, &offline).unwrap_err().to_string();
    assert!(e.contains(&url) && e.contains("not cached") && e.contains("semu fetch"), "{e}");
    assert_eq!(s.requests().len(), 0);
    let p = get(&url, &online).unwrap();
    assert_eq!(get(&url, &online).unwrap(), p, "the same URL is downloaded once");
    assert_eq!(get(&url, &offline).unwrap(), p);
    assert_eq!(s.requests().len(), 1);
    let e = get(&url, &FetchOptions { allow_http: false, ..online }).unwrap_err().to_string();
    assert!(e.contains("--allow-http"), "{e}");
}

/// Serves a fixtures folder under `/m/`.
fn serve_dir(dir: PathBuf) -> Server {
    Server::start(move |req, _| match req.path.strip_prefix("/m/").map(|n| dir.join(n)) {
        Some(p) if p.is_file() => Reply::file(req, &std::fs::read(p).unwrap()),
        _ => Reply::status(404),
    })
}

fn fixtures(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p)
}

#[test]
fn external_data_files_come_with_a_remote_model() {
    let s = serve_dir(fixtures("external/per_tensor"));
    let dir = tempfile::tempdir().unwrap();
    let o = opts(dir.path());
    let (path, siblings) = fetch::fetch_model(&s.url("/m/model.onnx"), &o, None, &mut |_, _| {}).unwrap();
    assert_eq!(siblings.len(), 10);
    assert!(siblings.iter().all(|p| p.parent() == path.parent()));
    let (remote, local) =
        (OnnxModel::load(&path).unwrap(), OnnxModel::load(fixtures("external/per_tensor/model.onnx")).unwrap());
    for (a, b) in remote.graph().initializer.iter().zip(&local.graph().initializer) {
        assert_eq!(remote.tensor(a).unwrap().bytes, local.tensor(b).unwrap().bytes, "{}", a.name());
    }
    let n = s.requests().len();
    let offline = FetchOptions { offline: true, ..o };
    assert_eq!(fetch::resolve_model(&s.url("/m/model.onnx"), &offline).unwrap(), path);
    assert_eq!(s.requests().len(), n);
}

fn semu(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(args)
        .env("SEMU_CACHE", cache)
        .env("SEMU_READ_TIMEOUT", "10")
        .env("SEMU_CONNECT_TIMEOUT", "5")
        .env_remove("SEMU_OFFLINE")
        .env_remove("HF_TOKEN")
        .env_remove("SEMU_TOKEN")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn semu_inspects_and_runs_models_given_by_url() {
    let digits = serve_dir(fixtures("digits"));
    let external = serve_dir(fixtures("external/single"));
    let dir = tempfile::tempdir().unwrap();
    let url = digits.url("/m/model.onnx");
    let o = semu(&["inspect", &url], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--allow-http"), "{}", text(&o));
    let o = semu(&["inspect", &url, "--allow-http"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("adaptable  5 weights"), "{}", text(&o));
    let o = semu(&["inspect", &external.url("/m/model.onnx"), "--allow-http"], dir.path());
    assert!(o.status.success() && text(&o).contains("(external data)"), "{}", text(&o));
    assert!(external.requests().iter().any(|r| r.path == "/m/model.onnx.data"));
    // `run` takes its inputs by URL too.
    let x = tch::Tensor::read_npz(fixtures("digits/test.npz")).unwrap().into_iter().find(|(n, _)| n == "x").unwrap().1;
    let data = tempfile::tempdir().unwrap();
    x.narrow(0, 0, 4).write_npy(data.path().join("x.npy")).unwrap();
    let inputs = serve_dir(data.path().to_path_buf());
    let input = format!("input={}", inputs.url("/m/x.npy"));
    let out = dir.path().join("out");
    let o = semu(
        &["run", &url, "--input", &input, "--output-dir", out.to_str().unwrap(), "--device", "cpu", "--allow-http"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(tch::Tensor::read_npy(out.join("logits.npy")).unwrap().size(), vec![4, 10]);
}

#[test]
fn semu_fetch_prints_the_cached_path_and_checks_the_hash() {
    let s = serve_dir(fixtures("digits"));
    let dir = tempfile::tempdir().unwrap();
    let url = s.url("/m/forget_class3.npz");
    let bytes = std::fs::read(fixtures("digits/forget_class3.npz")).unwrap();
    let o = semu(&["fetch", &url, "--allow-http", "--sha256", &sha(b"not it")], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("SHA-256 mismatch"), "{}", text(&o));
    let o = semu(&["fetch", &url, "--allow-http", "--sha256", &sha(&bytes)], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    assert!(path.starts_with(dir.path()) && path.ends_with("forget_class3.npz"), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let n = s.requests().len();
    let o = semu(&["fetch", &url, "--offline", "--allow-http"], dir.path());
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == path.to_str().unwrap(), "{}", text(&o));
    assert_eq!(s.requests().len(), n);
    let o = semu(&["fetch", "local/file.onnx"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = semu(&["fetch", &url, &url, "--allow-http", "--sha256", &sha(&bytes)], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

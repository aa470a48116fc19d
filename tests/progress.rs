//! Progress when stderr is not a terminal: `semu` logs a line for every phase (downloads, data
//! reading, accuracy, gradient, SVD, each epoch, fold, export, verify) and draws no bar; `-q` prints none
//! of it; `--log-format json` gets the same lines as JSON; stdout keeps only the summary.
#[allow(dead_code)] // the fetch tests' server; these tests use part of it
#[path = "fetch/server.rs"]
mod server;

use semu::fetch::{self, FetchOptions, Source};
use server::{Reply, Server};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p)
}

/// Serves `fixtures/<dir>/NAME` at `/m/NAME`, with Range support.
fn serve_dir(dir: PathBuf) -> Server {
    Server::start(move |req, _| match req.path.strip_prefix("/m/").map(|n| dir.join(n)) {
        Some(p) if p.is_file() => Reply::file(req, &std::fs::read(p).unwrap()),
        _ => Reply::status(404),
    })
}

fn semu(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(args)
        .env("SEMU_CACHE", cache)
        .env_remove("SEMU_OFFLINE")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Unlearning class 3 with the model fetched by URL and the data read from an ImageFolder.
fn unlearn(extra: &[&str], cache: &Path) -> Output {
    let s = serve_dir(fx("digits"));
    let out = cache.join("out.onnx");
    let mut args = vec!["unlearn", "--allow-http", "--epochs", "1", "--device", "cpu", "--forget-class", "3"];
    let (url, train, test) = (s.url("/m/model.onnx"), fx("digits_png/train"), fx("digits/test.npz"));
    args.extend(["--model", &url, "--train", train.to_str().unwrap(), "--test", test.to_str().unwrap()]);
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    let o = semu(&args, cache);
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    o
}

/// What each phase logs when it ends.
const PHASE_LINES: [&str; 10] = [
    "download model.onnx: ",
    "digits_png/train: 1437 images in ",
    "digits/test.npz: ",
    "gradient: 146 samples in ",
    "svd: 5 layers in ",
    "epoch  1: loss ",
    "fold: 5 tensors in ",
    "export: done in ",
    "verify: 4 steps in ",
    "accuracy after (t+",
];

#[test]
fn piped_stderr_gets_a_line_per_phase_and_no_bar() {
    let dir = tempfile::tempdir().unwrap();
    let o = unlearn(&[], dir.path());
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    for line in PHASE_LINES {
        assert!(err.contains(line), "no '{line}' in:\n{err}");
    }
    // The forget accuracy before comes from the gradient pass's own forwards: with no remaining
    // data there is no pass of its own, and the summary still has the number.
    assert!(!err.contains("accuracy before"), "a pass of its own for the accuracy before:\n{err}");
    assert!(out.contains("forget data       100.00%"), "{out}");
    // The forget accuracy after is the last epoch's, scored with the same weights: no pass of its own.
    assert!(!err.contains("accuracy after: 146 samples"), "a pass of its own for the accuracy after:\n{err}");
    let last = err.lines().rev().find_map(|l| l.split("forget acc ").nth(1)).expect("an epoch line");
    let last = last.split(['%', ',']).next().unwrap();
    let row = out.lines().find(|l| l.trim_start().starts_with("forget data")).expect("a forget data row");
    assert_eq!(row.split_whitespace().nth(3), Some(format!("{last}%").as_str()), "{row}\n{err}");
    // Downloads log their size; the forget set read from --train has its count.
    assert!(err.contains(&format!("download model.onnx: {} in ", human(&fx("digits/model.onnx")))), "{err}");
    assert!(!err.contains('\r') && !err.contains('\x1b'), "a bar or colour reached a pipe:\n{err:?}");
    assert!(out.starts_with("semu unlearn: ") && !out.contains("INFO"), "stdout holds only the summary:\n{out}");
}

#[test]
fn quiet_prints_no_progress_and_json_logs_carry_it() {
    let dir = tempfile::tempdir().unwrap();
    let quiet = unlearn(&["-q"], dir.path());
    assert_eq!(text(&quiet.stderr), "", "-q prints no progress");
    assert!(text(&quiet.stdout).contains("verified    passed"));

    let dir = tempfile::tempdir().unwrap();
    let json = unlearn(&["--log-format", "json"], dir.path());
    let messages: Vec<String> = text(&json.stderr)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}"));
            v["fields"]["message"].as_str().unwrap().to_string()
        })
        .collect();
    for line in PHASE_LINES {
        assert!(messages.iter().any(|m| m.contains(line)), "no '{line}' in {messages:#?}");
    }
}

/// indicatif's rendering of a file's size ("350.50 KiB").
fn human(p: &Path) -> String {
    indicatif::HumanBytes(std::fs::metadata(p).unwrap().len()).to_string()
}

#[test]
fn downloads_log_their_size_a_resume_offset_and_unknown_lengths() {
    let body: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let b = body.clone();
    let s = Server::start(move |req, _| match req.path.as_str() {
        "/unsized.bin" => Reply { no_length: true, ..Reply::ok(&b) },
        _ => Reply::file(req, &b),
    });
    let dir = tempfile::tempdir().unwrap();
    // A leftover .part file from an interrupted run: the download resumes at its end.
    let resumed = s.url("/resumed.bin");
    let Source::Remote(u) = fetch::parse(&resumed, &FetchOptions::for_tests(dir.path())).unwrap() else { panic!() };
    let part = PathBuf::from(format!("{}.part", fetch::cache_path(dir.path(), &u).display()));
    std::fs::create_dir_all(part.parent().unwrap()).unwrap();
    std::fs::write(&part, &body[..50_000]).unwrap();

    let urls = [s.url("/plain.bin"), resumed, s.url("/unsized.bin")];
    let mut args = vec!["fetch", "--allow-http"];
    args.extend(urls.iter().map(String::as_str));
    let o = semu(&args, dir.path());
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("download plain.bin: 195.31 KiB in "), "{err}");
    assert!(err.contains("download resumed.bin: resumed at 48.83 KiB"), "{err}");
    assert!(err.contains("download resumed.bin: 195.31 KiB, resumed at 48.83 KiB in "), "{err}");
    assert!(err.contains("download unsized.bin: 195.31 KiB in "), "no total is known, the count is:\n{err}");
    assert_eq!(text(&o.stdout).lines().count(), 3, "stdout lists the cached paths only");

    let again = tempfile::tempdir().unwrap();
    let o = semu(&["fetch", "--allow-http", "-q", &s.url("/plain.bin")], again.path());
    assert!(o.status.success() && text(&o.stderr).is_empty(), "{}", text(&o.stderr));
}

/// Every reader reports while it opens a set, and its last report is the whole of it.
#[test]
fn data_readers_report_until_the_whole_set_is_read() {
    use semu::data::{self, DataSpec, ReadProgress, Reading};
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("t.csv");
    let rows: String = (0..10_000).map(|i| format!("{}.5,{}\n", i, i % 3)).collect();
    std::fs::write(&csv, format!("f,label\n{rows}")).unwrap();
    let cifar = dir.path().join("data_batch_1.bin");
    std::fs::write(&cifar, vec![1u8; 2 * 3073]).unwrap();
    let npz = fx("digits/test.npz");
    let images = fx("digits_png/train");
    for (path, unit, whole) in [
        (&csv, "bytes", std::fs::metadata(&csv).unwrap().len()),
        (&cifar, "bytes", 2 * 3073),
        (&npz, "bytes", std::fs::metadata(&npz).unwrap().len()),
        (&images, "images", 1437),
    ] {
        let seen = Arc::new(Mutex::new(Vec::<(u64, Option<u64>)>::new()));
        let s = seen.clone();
        let progress = ReadProgress::new(move |r: &Reading| {
            assert_eq!(r.unit, unit);
            s.lock().unwrap().push((r.done, r.total));
        });
        let ds = data::open_with(path, &DataSpec { progress: Some(progress), ..Default::default() }).unwrap();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.last(), Some(&(whole, Some(whole))), "{}: {seen:?}", path.display());
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{}: counts only grow: {seen:?}", path.display());
        assert!(!ds.is_empty());
        if path == &csv {
            assert_eq!(seen.len(), 4, "a CSV reports every 4096 rows: {seen:?}");
        }
    }
}

//! Hostile input (issue 15): NaN/Inf cannot pass the gate or `verify`, settings are checked up
//! front, npz payloads are checked against their headers, symlinks and non-regular files are
//! refused, output paths are checked before any work, and interrupts leave no staging folder.
mod common;

use common::npz;
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn fx(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// `semu unlearn` of class 3 of the digits model, quick settings (each unless `extra` gives it),
/// then `extra`.
fn unlearn(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["unlearn", "--model", &fx("digits/model.onnx"), "--forget", &fx("digits/forget_class3.npz")]
            .map(String::from)
            .to_vec();
    v.extend(["--out", out.to_str().unwrap()].map(String::from));
    for (flag, value) in [("--lr", "0.001"), ("--gamma", "0.6"), ("--epochs", "2"), ("--device", "cpu")] {
        if !extra.iter().any(|e| e.split('=').next() == Some(flag)) {
            v.extend([flag, value].map(String::from));
        }
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn run(args: &[String]) -> Output {
    semu(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    v.sort();
    v
}

/// Waits for `child` at most `secs`; kills it (and fails) past that: a hang is a failure, not a stuck test.
fn wait_for(mut child: Child, secs: u64) -> Output {
    let t = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t.elapsed() > Duration::from_secs(secs) {
            child.kill().unwrap();
            panic!("still running after {secs}s: {}", text(&child.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
}

// Item 1: NaN/Inf cannot pass.

#[test]
fn diverged_training_fails_the_gate_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    // The paper's recipe diverges into NaN weights: caught at the fold, before anything is staged.
    let rep = dir.path().join("r");
    let o = run(&unlearn(
        &out,
        &["--objective", "rl", "--lr", "1e30", "--epochs", "3", "--report-dir", rep.to_str().unwrap()],
    ));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("nothing written") && t.contains("classifier.1.weight") && t.contains("NaN/Inf"), "{t}");
    assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
    // The defaults stop at the first epoch that forgets: finite weights whose outputs overflow.
    // The gate fails on the NaN/Inf outputs; only the report (recording the failure) is written.
    let o = run(&unlearn(&out, &["--lr", "1e30", "--epochs", "3", "--report-dir", rep.to_str().unwrap()]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains("nothing written") && t.contains("NaN/Inf"), "{t}");
    assert_eq!(names_in(dir.path()), ["r"], "no model beside the report");
    let md = std::fs::read_to_string(rep.join("report.md")).unwrap();
    assert!(md.contains("FAILED verification"), "{md}");
}

#[test]
fn non_finite_and_out_of_range_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    for (flag, value) in [
        ("--weight-decay", "nan"),
        ("--weight-decay", "=-1"),
        ("--momentum", "5"),
        ("--momentum", "1"),
        ("--momentum", "nan"),
        ("--alpha", "nan"),
        ("--alpha", "=-1"),
        ("--lr", "inf"),
        ("--lr", "nan"),
        ("--mask-ratio", "nan"),
        ("--l1", "=-1"),
        ("--device", "tpu"),
    ] {
        let arg = format!("{flag}{value}");
        let given: Vec<&str> = if value.starts_with('=') { vec![&arg] } else { vec![flag, value] };
        let o = run(&unlearn(&out, &given));
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", text(&o));
        assert!(text(&o).contains(flag), "{flag} {value}: {}", text(&o));
    }
    for fraction in ["0", "1.5", "NaN"] {
        let o = semu(&[
            "unlearn",
            "--model",
            &fx("digits/model.onnx"),
            "--train",
            &fx("digits/train.npz"),
            "--forget-fraction",
            fraction,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(2), "--forget-fraction {fraction}: {}", text(&o));
        assert!(text(&o).contains("--forget-fraction"), "{}", text(&o));
    }
    let (m, data) = (fx("digits/model.onnx"), fx("digits/test.npz"));
    for extra in [["--tolerance=-1", ""], ["--tolerance", "nan"], ["--limit", "0"], ["--device", "tpu"]] {
        let extra: Vec<&str> = extra.into_iter().filter(|s| !s.is_empty()).collect();
        let o = semu(&[&["verify", &m, &m, "--data", &data][..], &extra[..]].concat());
        assert_eq!(o.status.code(), Some(2), "verify {extra:?}: {}", text(&o));
        assert!(text(&o).contains(extra[0].split('=').next().unwrap()), "{}", text(&o));
    }
    assert!(!out.exists());
}

/// The digits model with one weight replaced by `value` everywhere, written to `out`.
fn digits_with(out: &Path, weight: &str, value: f32) {
    let m = OnnxModel::load(fx("digits/model.onnx")).unwrap();
    let w = m.tensor(m.initializer(weight).unwrap()).unwrap();
    let bad = w.with_f32_values(&vec![value; w.numel()]).unwrap();
    m.save(out, &HashMap::from([(weight.to_string(), bad)])).unwrap();
}

#[test]
fn verify_fails_when_a_model_outputs_nan() {
    let dir = tempfile::tempdir().unwrap();
    let b = dir.path().join("nan.onnx");
    digits_with(&b, "classifier.3.bias", f32::NAN);
    let (a, data) = (fx("digits/model.onnx"), fx("digits/test.npz"));
    for extra in [&[][..], &["--tolerance", "1e-3"][..]] {
        let o = semu(&[&["verify", &a, b.to_str().unwrap(), "--data", &data, "--limit", "8"][..], extra].concat());
        let t = text(&o);
        assert_eq!(o.status.code(), Some(3), "{t}");
        let last = t.lines().last().unwrap_or_default();
        assert!(last.contains("nan.onnx") && last.contains("'logits'") && last.contains("NaN/Inf"), "{t}");
    }
}

#[test]
fn patch_apply_refuses_a_patch_whose_r_holds_nan() {
    let dir = tempfile::tempdir().unwrap();
    let patch = dir.path().join("p.safetensors");
    let o = run(&unlearn(&dir.path().join("o.onnx"), &["--out-patch", patch.to_str().unwrap()]));
    assert!(o.status.success(), "{}", text(&o));
    let mut p = semu::patch::Patch::read(&patch).unwrap();
    p.layers[0].r = p.layers[0].r.full_like(f64::NAN);
    let bad = dir.path().join("nan.safetensors");
    p.write(&bad).unwrap();
    let out = dir.path().join("applied.onnx");
    let o = semu(&["patch", "apply", &fx("digits/model.onnx"), bad.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(3), "{t}");
    assert!(t.contains(&p.layers[0].info.name) && t.contains("not finite") && t.contains("nothing written"), "{t}");
    assert!(!out.exists());
}

// Item 2: --mean / --std.

#[test]
fn mean_and_std_flags_are_usable() {
    let m = fx("digits/model.onnx");
    let o =
        semu(&["verify", &m, &m, "--data", &fx("digits_png/test"), "--mean", "0.5", "--std", "0.25", "--limit", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    let dir = tempfile::tempdir().unwrap();
    let o =
        run(&unlearn(&dir.path().join("o.onnx"), &["--epochs", "1", "--no-verify", "--mean", "0.5", "--std", "0.25"]));
    assert!(o.status.success(), "{}", text(&o));
}

// Item 3: npz payloads against their headers.

/// An `.npy` image of float32 values, its header claiming `shape`.
fn npy(shape: &str, values: &[f32]) -> Vec<u8> {
    common::npy("<f4", shape, &values.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
}

fn labels(n: usize) -> Vec<u8> {
    common::npy("<i8", &format!("({n},)"), &(0..n).flat_map(|_| 3i64.to_le_bytes()).collect::<Vec<_>>())
}

#[test]
fn npz_arrays_whose_header_promises_more_than_the_payload_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.npz");
    // 100 samples promised, 10 held.
    npz(&short, &[("x.npy", npy("(100, 1, 8, 8)", &vec![0.5; 640])), ("y.npy", labels(100))]);
    let huge = dir.path().join("huge.npz");
    npz(&huge, &[("x.npy", npy("(2000000000, 1, 8, 8)", &[0.5; 64])), ("y.npy", labels(1))]);
    for (file, needs) in [(&short, "25600 bytes"), (&huge, "512000000000 bytes")] {
        let e = semu::data::npy::read_npz(file).expect_err("refused").to_string();
        assert!(e.contains(file.to_str().unwrap()) && e.contains("array `x`") && e.contains(needs), "{e}");
        let mut args = unlearn(&dir.path().join("o.onnx"), &[]);
        args[4] = file.display().to_string();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        // The element bound (header alone) or the payload check (header against the bytes).
        let t = text(&o);
        assert!(t.contains("array `x`") || t.contains("array 'x.npy'"), "{t}");
    }
    assert!(!dir.path().join("o.onnx").exists());
}

// Item 4: symlinks leaving the folder, non-regular files.

/// A copy of the per-tensor external-data model in a fresh folder.
fn external_copy(dir: &Path) -> PathBuf {
    let m = dir.join("model");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(fx("external/per_tensor")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    m
}

#[test]
fn external_data_links_leaving_the_model_folder_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let m = external_copy(dir.path());
    // The very bytes the model expects, but outside its folder, reached through a link.
    std::fs::rename(m.join("classifier.3.bias"), dir.path().join("bias")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("bias"), m.join("classifier.3.bias")).unwrap();
    let out = dir.path().join("out/o.onnx");
    let mut args = unlearn(&out, &[]);
    args[2] = m.join("model.onnx").display().to_string();
    let o = run(&args);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("classifier.3.bias") && t.contains("outside"), "{t}");
    assert!(!out.exists());
    // A linked folder is the same escape: the location `sub/classifier.3.bias`, `sub` a link out.
    let mut model = OnnxModel::load(m.join("model.onnx")).unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::fs::rename(dir.path().join("bias"), dir.path().join("elsewhere/classifier.3.bias")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), m.join("sub")).unwrap();
    let graph = model.proto.graph.as_mut().unwrap();
    let t = graph.initializer.iter_mut().find(|t| t.name() == "classifier.3.bias").unwrap();
    for kv in t.external_data.iter_mut().filter(|kv| kv.key() == "location") {
        kv.value = Some("sub/classifier.3.bias".into());
    }
    let e = model.tensor(model.initializer("classifier.3.bias").unwrap()).unwrap_err().to_string();
    assert!(e.contains("classifier.3.bias") && e.contains("outside"), "{e}");
}

#[test]
fn external_data_that_is_a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let m = external_copy(dir.path());
    std::fs::remove_file(m.join("classifier.3.bias")).unwrap();
    mkfifo(&m.join("classifier.3.bias"));
    let mut args = unlearn(&dir.path().join("o.onnx"), &[]);
    args[2] = m.join("model.onnx").display().to_string();
    let child = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_for(child, 120);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    // Refused at load (not a regular file) or, past that, by the reader (FIFO): never opened.
    assert!(t.contains("classifier.3.bias") && (t.contains("FIFO") || t.contains("not a regular file")), "{t}");
}

#[test]
fn safetensors_shards_named_by_an_index_stay_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = vec![0u8; 8];
    let view = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::F32, vec![2], &data).unwrap();
    let bytes = safetensors::serialize([("w", view)], &None).unwrap();
    std::fs::create_dir(dir.path().join("ck")).unwrap();
    std::fs::write(dir.path().join("outside.safetensors"), &bytes).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.safetensors"), dir.path().join("ck/shard.safetensors"))
        .unwrap();
    let index = dir.path().join("ck/model.safetensors.index.json");
    std::fs::write(&index, r#"{"weight_map": {"w": "shard.safetensors"}}"#).unwrap();
    let e = semu::weights::Checkpoint::open(std::slice::from_ref(&index)).err().expect("refused").to_string();
    assert!(e.contains("shard.safetensors") && e.contains("outside"), "{e}");
    std::fs::remove_file(dir.path().join("ck/shard.safetensors")).unwrap();
    mkfifo(&dir.path().join("ck/shard.safetensors"));
    let e = semu::weights::Checkpoint::open(&[index]).err().expect("refused").to_string();
    assert!(e.contains("FIFO"), "{e}");
}

#[test]
fn image_folder_links_leaving_the_root_or_looping_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("images");
    for class in ["a", "b"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        image::GrayImage::new(8, 8).save(root.join(class).join("1.png")).unwrap();
    }
    let pre = semu::data::Preprocess::default();
    semu::data::ImageFolder::open(&root, &pre).unwrap();
    // A loop: a link in a class folder back to the root (today it reads every class into `a`).
    std::os::unix::fs::symlink(&root, root.join("a/loop")).unwrap();
    let e = semu::data::ImageFolder::open(&root, &pre).err().expect("refused").to_string();
    assert!(e.contains("loop") && e.contains("a/loop"), "{e}");
    std::fs::remove_file(root.join("a/loop")).unwrap();
    // An image outside the root, reached through a link.
    image::GrayImage::new(8, 8).save(dir.path().join("outside.png")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside.png"), root.join("b/2.png")).unwrap();
    let e = semu::data::ImageFolder::open(&root, &pre).err().expect("refused").to_string();
    assert!(e.contains("b/2.png") && e.contains("outside"), "{e}");
    std::fs::remove_file(root.join("b/2.png")).unwrap();
    mkfifo(&root.join("b/3.png"));
    let e = semu::data::ImageFolder::open(&root, &pre).err().expect("refused").to_string();
    assert!(e.contains("3.png") && e.contains("FIFO"), "{e}");
}

// Item 5: outputs checked before any work; no staging left behind.

#[test]
fn output_paths_are_checked_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    // --report-dir naming a file: refused before --out is written.
    let file = dir.path().join("taken");
    std::fs::write(&file, b"x").unwrap();
    let o = run(&unlearn(&out, &["--report-dir", file.to_str().unwrap()]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains("--report-dir") && !t.contains("gradient"), "{t}");
    assert!(!out.exists());
    // --out equal to --model (through another path to it).
    let model = dir.path().join("model.onnx");
    std::fs::copy(fx("digits/model.onnx"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let mut args = unlearn(&dir.path().join(".").join("model.onnx"), &[]);
    args[2] = model.display().to_string();
    let o = run(&args);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("is the input"), "{}", text(&o));
    assert_eq!(std::fs::read(&model).unwrap(), before);
    // --out naming a FIFO or a folder: never replaced.
    let fifo = dir.path().join("fifo.onnx");
    mkfifo(&fifo);
    std::fs::create_dir(dir.path().join("folder.onnx")).unwrap();
    for (name, kind) in [("fifo.onnx", "a FIFO"), ("folder.onnx", "a folder")] {
        let o = run(&unlearn(&dir.path().join(name), &[]));
        let t = text(&o);
        assert_eq!(o.status.code(), Some(2), "{t}");
        assert!(t.contains(kind) && !t.contains("gradient"), "{t}");
    }
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
}

/// Starts `semu unlearn` holding its staged export for a minute; returns once the staged model is
/// there (the run's claim on `--out`, a staging folder holding only its owner file, comes first).
fn start_and_wait_for_staging(out: &Path) -> Child {
    let child = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(unlearn(out, &[]))
        .env("SEMU_FAULT_PAUSE_STAGED_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let dir = out.parent().unwrap();
    let staged = |n: &String| n.starts_with(".semu-staging-") && names_in(&dir.join(n)).len() > 1;
    while !names_in(dir).iter().any(staged) {
        assert!(t.elapsed() < Duration::from_secs(120), "no staging folder appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn sigint_and_sigterm_remove_the_staging_folder() {
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.onnx");
        let child = start_and_wait_for_staging(&out);
        // SAFETY: signals our own child.
        assert_eq!(unsafe { libc::kill(child.id() as i32, sig) }, 0);
        let o = wait_for(child, 60);
        assert_eq!(o.status.code(), Some(code), "{}", text(&o));
        assert!(text(&o).contains("removed the staging folder"), "{}", text(&o));
        assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
    }
}

#[test]
fn a_staging_folder_left_by_a_killed_run_is_removed_by_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let mut child = start_and_wait_for_staging(&out);
    child.kill().unwrap(); // SIGKILL: nothing can clean up
    child.wait().unwrap();
    // The run's claim on o.onnx and its staged export.
    let stale = names_in(dir.path());
    assert_eq!(stale.len(), 2, "{stale:?}");
    let o = run(&unlearn(&out, &[]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    for s in &stale {
        assert!(t.contains(s.as_str()) && t.contains("interrupted run"), "{t}");
    }
    assert_eq!(names_in(dir.path()), vec!["o.onnx"]);
}

/// Issue 15: two runs on one `--out` raced, and one report recorded the SHA-256 of a file the
/// other had replaced. The second run is refused while the first holds the output.
#[test]
fn a_second_run_on_the_same_out_is_refused_while_the_first_works() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.onnx");
    let first = start_and_wait_for_staging(&out);
    let o = run(&unlearn(&out, &[]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(2), "{t}");
    assert!(t.contains(&format!("another semu (pid {})", first.id())) && !t.contains("gradient"), "{t}");
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(first.id() as i32, libc::SIGTERM) }, 0);
    assert_eq!(wait_for(first, 60).status.code(), Some(143));
    assert!(names_in(dir.path()).is_empty(), "{:?}", names_in(dir.path()));
    // Once it is gone the output is free again.
    let o = run(&unlearn(&out, &[]));
    assert!(o.status.success(), "{}", text(&o));
}

/// Issue 15: outputs named `a/b` and `a_b` were both written to `a_b.npy`, the second over the first.
#[test]
fn run_writes_outputs_whose_names_map_to_one_file_name_to_two_files() {
    use semu::onnx::build::{node, value, write};
    use semu::onnx::DType;
    let (_tmp, path) = write(
        vec![node("Identity", &["x"], &["a/b"]), node("Neg", &["x"], &["a_b"])],
        vec![],
        vec![value("x", DType::F32, &[2])],
        vec![value("a/b", DType::F32, &[2]), value("a_b", DType::F32, &[2])],
        13,
    );
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    tch::Tensor::from_slice(&[1.0f32, 2.0]).write_npy(&x).unwrap();
    let out = dir.path().join("out");
    let o = semu(&[
        "run",
        path.to_str().unwrap(),
        "--input",
        &format!("x={}", x.display()),
        "--output-dir",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(names_in(&out), ["a_b.npy", "a_b_1.npy"], "{}", text(&o));
    let second = tch::Tensor::read_npy(out.join("a_b_1.npy")).unwrap();
    assert_eq!(Vec::<f32>::try_from(&second).unwrap(), [-1.0, -2.0]);
    assert!(text(&o).contains("a_b: Float [2] -> ") && text(&o).contains("a_b_1.npy"), "{}", text(&o));
}

/// Issue 15: without `--out` the export is staged in a scratch folder under TMPDIR, which an
/// interrupt left behind.
#[test]
fn sigterm_without_out_removes_the_scratch_folder() {
    let (tmp, outs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let patch = outs.path().join("p.safetensors");
    let mut args = unlearn(Path::new("unused.onnx"), &["--out-patch", patch.to_str().unwrap()]);
    let at = args.iter().position(|a| a == "--out").unwrap();
    args.drain(at..at + 2);
    let mut child = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(&args)
        .env("TMPDIR", tmp.path())
        .env("SEMU_FAULT_PAUSE_STAGED_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let staged = |root: &Path| {
        std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .any(|e| names_in(&e.path()).iter().any(|n| n.starts_with(".semu-staging-")))
    };
    while !staged(tmp.path()) {
        assert!(child.try_wait().unwrap().is_none(), "{}", text(&child.wait_with_output().unwrap()));
        assert!(t.elapsed() < Duration::from_secs(120), "no staging folder appeared: {:?}", names_in(tmp.path()));
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signals our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let o = wait_for(child, 60);
    assert_eq!(o.status.code(), Some(143), "{}", text(&o));
    assert!(names_in(tmp.path()).is_empty(), "{:?}", names_in(tmp.path()));
    assert!(names_in(outs.path()).is_empty(), "{:?}", names_in(outs.path()));
}

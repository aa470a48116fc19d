//! Issue 15 (hostile input), second half, through the `semu` binary: models that onnxruntime
//! refuses are refused at load by every command; libtorch's C++ stack frames and Rust panics
//! never reach the user; shapes, npy headers and images that imply huge allocations are refused
//! before any is made. (Downloads: tests/fetch.rs; rule by rule: src/onnx/check/tests.rs.)
mod common;

use prost::Message;
use semu::onnx::build::{node, value, write};
use semu::onnx::proto::{ModelProto, StringStringEntryProto};
use semu::onnx::DType;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn fx(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    semu_env(args, &[])
}

fn semu_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semu"));
    c.args(args).current_dir(std::env::temp_dir()).env_remove("RUST_BACKTRACE").env_remove("SEMU_MAX_ELEMENTS");
    c.envs(env.iter().copied()).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The error lines of a failed run (log lines start with a level).
fn error_lines(o: &Output) -> Vec<String> {
    stderr(o).lines().filter(|l| !l.trim_start().starts_with("INFO")).map(String::from).collect()
}

/// An error a user can read: exit 1, one line, no C++ frames, no Rust panic report.
fn assert_clean_error(o: &Output, wants: &[&str]) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for bad in ["Exception raised from", "frame #", "panicked", "RUST_BACKTRACE"] {
        assert!(!err.contains(bad), "'{bad}' reached the user:\n{err}");
    }
    let lines = error_lines(o);
    assert_eq!(lines.len(), 1, "one line:\n{err}");
    for w in wants {
        assert!(lines[0].contains(w), "no '{w}' in:\n{err}");
    }
}

fn digits() -> ModelProto {
    ModelProto::decode(std::fs::read(fx("digits/model.onnx")).unwrap().as_slice()).unwrap()
}

/// Writes `m` into `dir` as `name`, returning its path.
fn save(dir: &Path, name: &str, m: &ModelProto) -> String {
    let p = dir.join(name);
    std::fs::write(&p, m.encode_to_vec()).unwrap();
    p.display().to_string()
}

/// Issue 15: `run` executed mutants that onnxruntime refuses; `inspect` said "every op is
/// supported" for a cycle, an undefined value, dtype 999 and missing external data.
#[test]
fn models_onnxruntime_refuses_are_refused_at_load_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = fn(&mut ModelProto);
    let cases: [(&str, Edit, &[&str]); 9] = [
        (
            "two nodes produce one value",
            |m| {
                let g = m.graph.as_mut().unwrap();
                let first = g.node[0].output[0].clone();
                g.node[1].output[0] = first;
            },
            &["is already produced by node '/features/features.0/Conv'", "each value is defined once"],
        ),
        (
            "an undefined value",
            |m| m.graph.as_mut().unwrap().node[2].input[0] = "ghost".into(),
            &["input 'ghost' is neither a graph input"],
        ),
        (
            "a cycle",
            |m| {
                let g = m.graph.as_mut().unwrap();
                let last = g.node.last().unwrap().output[0].clone();
                g.node[1].input[0] = last;
            },
            &["cycle"],
        ),
        (
            "element type 999",
            |m| m.graph.as_mut().unwrap().initializer[0].data_type = Some(999),
            &["unknown element type 999"],
        ),
        (
            "missing external data",
            |m| {
                let t = &mut m.graph.as_mut().unwrap().initializer[0];
                t.raw_data = None;
                t.data_location = Some(1);
                t.external_data =
                    vec![StringStringEntryProto { key: Some("location".into()), value: Some("gone.bin".into()) }];
            },
            &["external data file", "gone.bin"],
        ),
        (
            "a duplicate attribute",
            |m| {
                let n = &mut m.graph.as_mut().unwrap().node[0];
                let a = n.attribute[0].clone();
                n.attribute.push(a);
            },
            &["appears more than once"],
        ),
        ("opset 99", |m| m.opset_import[0].version = Some(99), &["version 99 is outside the known range"]),
        ("IR version 99", |m| m.ir_version = Some(99), &["IR version 99 is newer"]),
        (
            "value_info contradicting the graph",
            |m| {
                let g = m.graph.as_mut().unwrap();
                let out = g.node[0].output[0].clone();
                g.value_info.push(value(&out, DType::I64, &[]));
            },
            &["produces '/features/features.0/Conv_output_0' as f32 but its value_info declares i64"],
        ),
    ];
    for (what, edit, wants) in cases {
        let mut m = digits();
        edit(&mut m);
        let path = save(dir.path(), "bad.onnx", &m);
        let o = semu(&["inspect", &path]);
        assert_clean_error(&o, wants);
        assert!(stderr(&o).contains("not a valid ONNX model"), "{what}: {}", stderr(&o));
        let o = semu(&["run", &path, "--input", "input=", "--device", "cpu"]);
        assert_clean_error(&o, wants);
    }
}

fn npy(dir: &Path, name: &str, t: &tch::Tensor) -> String {
    let p = dir.join(name);
    t.write_npy(&p).unwrap();
    p.display().to_string()
}

/// Issue 15: data that does not match the model (channels, size, dtype) printed ~50 lines of
/// libtorch C++ frames. Now: one line naming the node, its op and its inputs' shapes.
#[test]
fn mismatched_data_names_the_node_without_cpp_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            tch::Tensor::zeros([2, 3, 8, 8], tch::kind::FLOAT_CPU),
            "/features/features.0/Conv",
            "'input' Float [2, 3, 8, 8]",
        ),
        (tch::Tensor::zeros([2, 1, 5, 5], tch::kind::FLOAT_CPU), "/classifier/classifier.1/Gemm", "Float [2, 256]"),
        (tch::Tensor::zeros([2, 1, 8, 8], tch::kind::INT64_CPU), "(Conv)", "'input' Int64 [2, 1, 8, 8]"),
    ];
    for (i, (x, node, input)) in cases.iter().enumerate() {
        let x = npy(dir.path(), &format!("x{i}.npy"), x);
        let out = dir.path().join("out").display().to_string();
        let o = semu(&["run", &fx("digits/model.onnx"), "--input", &format!("input={x}"), "--output-dir", &out]);
        assert_clean_error(&o, &[node, input]);
    }
    // The same through unlearn: the forget set has 3 channels.
    let f = dir.path().join("f.npz");
    let xs = tch::Tensor::zeros([4, 3, 8, 8], tch::kind::FLOAT_CPU);
    let ys = tch::Tensor::full([4], 3, tch::kind::INT64_CPU);
    tch::Tensor::write_npz(&[("x", xs), ("y", ys)], &f).unwrap();
    let out = dir.path().join("o.onnx").display().to_string();
    let o = semu(&["unlearn", "--model", &fx("digits/model.onnx"), "--forget", f.to_str().unwrap(), "--out", &out]);
    assert_clean_error(&o, &["/features/features.0/Conv", "to have 1 channels, but got 3"]);
    assert!(!Path::new(&out).exists());
}

/// Any panic that slips through is one line that says how to report it, exit 101.
#[test]
fn a_panic_is_one_line_asking_for_a_report() {
    let o = semu_env(&["inspect", &fx("digits/model.onnx")], &[("SEMU_TEST_PANIC", "1")]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(101), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("internal error: SEMU_TEST_PANIC is set") && err.contains("please report it"), "{err}");
    assert!(!err.contains("frame #") && !err.contains("panicked at"), "{err}");
}

/// y = ConstantOfShape(shape) (fill 0.0), and z = Tile(x, reps): shapes from data.
fn data_shaped_model(dir: &Path) -> String {
    let (tmp, path) = write(
        vec![node("ConstantOfShape", &["shape"], &["y"]), node("Tile", &["x", "reps"], &["z"])],
        vec![],
        vec![value("shape", DType::I64, &[2]), value("x", DType::F32, &[2, 2]), value("reps", DType::I64, &[2])],
        vec![value("y", DType::F32, &[-1, -1]), value("z", DType::F32, &[-1, -1])],
        13,
    );
    let dst = dir.join("shaped.onnx");
    std::fs::copy(&path, &dst).unwrap();
    drop(tmp);
    dst.display().to_string()
}

/// Issue 15: ConstantOfShape and npy headers claiming 10^12 elements made libtorch try to
/// allocate terabytes. They are refused at once, naming the node or file and the size.
#[test]
fn shapes_past_the_element_bound_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let model = data_shaped_model(dir.path());
    let ints = |v: &[i64]| tch::Tensor::from_slice(v);
    let x = npy(dir.path(), "x.npy", &tch::Tensor::ones([2, 2], tch::kind::FLOAT_CPU));
    let run = |shape: &[i64], reps: &[i64], extra: &[&str], env: &[(&str, &str)]| {
        let s = npy(dir.path(), "s.npy", &ints(shape));
        let r = npy(dir.path(), "r.npy", &ints(reps));
        let out = dir.path().join("out").display().to_string();
        let mut args = vec!["run", &model, "--output-dir", &out];
        let (si, xi, ri) = (format!("shape={s}"), format!("x={x}"), format!("reps={r}"));
        args.extend(["--input", &si, "--input", &xi, "--input", &ri]);
        args.extend(extra);
        let t = Instant::now();
        let o = semu_env(&args, env);
        assert!(t.elapsed() < Duration::from_secs(20), "took {:?}", t.elapsed());
        o
    };
    let o = run(&[1_000_000, 1_000_000], &[1, 1], &[], &[]);
    assert_clean_error(
        &o,
        &["ConstantOfShape", "1000000000000 elements, over the limit of 8589934592", "--max-elements"],
    );
    let o = run(&[2, 3], &[1_000_000, 1_000_000], &[], &[]);
    assert_clean_error(&o, &["(Tile)", "shape [2000000, 2000000]"]);
    // The bound is the user's: a flag or the environment.
    assert!(run(&[20, 20], &[1, 1], &[], &[]).status.success());
    let o = run(&[20, 20], &[1, 1], &["--max-elements", "100"], &[]);
    assert_clean_error(&o, &["400 elements, over the limit of 100"]);
    let o = run(&[20, 20], &[1, 1], &[], &[("SEMU_MAX_ELEMENTS", "100")]);
    assert_clean_error(&o, &["over the limit of 100"]);

    // A 128-byte .npy whose header claims 10^12 float32s.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1, 1000, 1000), }";
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend((dict.len() as u16).to_le_bytes());
    b.extend(dict.bytes());
    b.extend([0u8; 16]);
    let big = dir.path().join("big.npy");
    std::fs::write(&big, &b).unwrap();
    let out = dir.path().join("out").display().to_string();
    let o =
        semu(&["run", &fx("digits/model.onnx"), "--input", &format!("input={}", big.display()), "--output-dir", &out]);
    assert_clean_error(&o, &["--input input", "big.npy", "1000000000000 elements"]);
    // The same array as `x` of an .npz forget set.
    let npz = dir.path().join("big.npz");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&npz).unwrap());
    z.start_file("x.npy", zip::write::FileOptions::default()).unwrap();
    std::io::Write::write_all(&mut z, &b).unwrap();
    z.finish().unwrap();
    let out = dir.path().join("o.onnx").display().to_string();
    let o = semu(&["unlearn", "--model", &fx("digits/model.onnx"), "--forget", npz.to_str().unwrap(), "--out", &out]);
    assert_clean_error(&o, &["big.npz", "array 'x.npy'", "1000000000000 elements"]);
}

/// A real 20000 × 20000 grayscale PNG (about 390 KB: every row is zeros).
fn huge_png(path: &Path) {
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;
    let (w, h) = (20_000u32, 20_000u32);
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    let row = vec![0u8; w as usize + 1]; // filter byte 0, then the pixels
    for _ in 0..h {
        z.write_all(&row).unwrap();
    }
    let idat = z.finish().unwrap();
    std::fs::write(path, common::png(w, h, &idat)).unwrap();
}

/// Issue 15: a 389 KB PNG of 20000 × 20000 was decoded (57 s, 754 MB). It is refused from its
/// header.
#[test]
fn a_huge_image_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train");
    for class in ["0", "1"] {
        std::fs::create_dir_all(train.join(class)).unwrap();
        huge_png(&train.join(class).join("big.png"));
    }
    let out = dir.path().join("o.onnx").display().to_string();
    let t = Instant::now();
    let o = semu(&[
        "unlearn",
        "--model",
        &fx("digits/model.onnx"),
        "--train",
        train.to_str().unwrap(),
        "--forget-class",
        "1",
        "--out",
        &out,
    ]);
    assert_clean_error(&o, &["big.png", "too large", "20000×20000 = 400000000 pixels, over the limit of 268435456"]);
    assert!(t.elapsed() < Duration::from_secs(15), "took {:?}", t.elapsed());
}

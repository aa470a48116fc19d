//! Issue 15, item 8: every class of bad input semu is known to meet, run through the binary, with
//! what it gets (exit code, the first error line). The same rows are README's "Bad input: what
//! each gets" table: the test renders them and fails when README differs, so the table cannot
//! drift (`make bad-input-table`, i.e. SEMU_UPDATE_README=1, rewrites it).
//!
//! Each run must end within [`LIMIT`], with the expected exit code and message fragments, no C++
//! frames or Rust panic report on stderr, and nothing written at an output path when it fails.
mod common;

use common::{npy, npy_dict, npz};
use prost::Message;
use semu::onnx::proto::{GraphProto, ModelProto, StringStringEntryProto};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A run past this is a hang: killed, and the case fails.
const LIMIT: Duration = Duration::from_secs(60);
/// semu runs side by side (each also uses libtorch's threads).
const WORKERS: usize = 3;
/// What stderr must never show.
const NEVER: [&str; 4] = ["frame #", "Exception raised from", "panicked", "RUST_BACKTRACE"];
/// Flags naming paths semu writes: none may be created or changed by a failed run.
const OUTPUT_FLAGS: [&str; 7] =
    ["--out", "--out-weights", "--out-patch", "--output-dir", "--report", "--report-dir", "--json"];
const BEGIN: &str = "<!-- bad-input:begin -->";
const END: &str = "<!-- bad-input:end -->";

/// One class of bad input: `setup` writes what it needs into a fresh folder and returns semu's
/// arguments; the run must exit `code` with every fragment of `says` in its first error line
/// (paths shown as in the table: `<dir>/…`, `fixtures/…`).
struct Case {
    class: &'static str,
    code: i32,
    says: &'static [&'static str],
    setup: fn(&Path) -> Vec<String>,
}

fn case(class: &'static str, code: i32, says: &'static [&'static str], setup: fn(&Path) -> Vec<String>) -> Case {
    Case { class, code, says, setup }
}

// ---- inputs -----------------------------------------------------------------------------------

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fx(p: &str) -> String {
    root().join("fixtures").join(p).display().to_string()
}

fn at(d: &Path, name: &str) -> String {
    d.join(name).display().to_string()
}

fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn digits() -> ModelProto {
    ModelProto::decode(std::fs::read(fx("digits/model.onnx")).unwrap().as_slice()).unwrap()
}

fn graph(m: &mut ModelProto) -> &mut GraphProto {
    m.graph.as_mut().unwrap()
}

/// The digits model after `edit`, saved as `<d>/bad.onnx`.
fn digits_edited(d: &Path, edit: impl FnOnce(&mut ModelProto)) -> String {
    let mut m = digits();
    edit(&mut m);
    std::fs::write(d.join("bad.onnx"), m.encode_to_vec()).unwrap();
    at(d, "bad.onnx")
}

/// The digits model with every element of one weight set to `value`, saved as `<d>/<name>`.
fn digits_with(d: &Path, name: &str, weight: &str, value: f32) -> String {
    let m = semu::onnx::OnnxModel::load(fx("digits/model.onnx")).unwrap();
    let w = m.tensor(m.initializer(weight).unwrap()).unwrap();
    let bad = w.with_f32_values(&vec![value; w.numel()]).unwrap();
    m.save(&d.join(name), &HashMap::from([(weight.to_string(), bad)])).unwrap();
    at(d, name)
}

/// A copy of the per-tensor external-data digits model in `<d>/model`.
fn external_copy(d: &Path) -> PathBuf {
    let m = d.join("model");
    std::fs::create_dir(&m).unwrap();
    for e in std::fs::read_dir(fx("external/per_tensor")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), m.join(e.file_name())).unwrap();
    }
    m
}

fn f32s(n: usize, x: f32) -> Vec<u8> {
    (0..n).flat_map(|_| x.to_le_bytes()).collect()
}

fn i64s(v: &[i64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// `<d>/<name>.npz` holding digits-shaped `x` (n × 1 × 8 × 8, all `value`) and `y`.
fn digits_npz(d: &Path, name: &str, value: f32, y: &[i64]) -> String {
    let n = y.len();
    let x = npy("<f4", &format!("({n}, 1, 8, 8)"), &f32s(n * 64, value));
    npz(&d.join(name), &[("x.npy", x), ("y.npy", npy("<i8", &format!("({n},)"), &i64s(y)))]);
    at(d, name)
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0, "mkfifo {}", p.display());
}

/// A PNG whose header says `w` × `h` (8-bit grey) followed by a few rows of zeros: enough for a
/// reader that trusts the header to try allocating the whole image.
fn png_claiming(path: &Path, w: u32, h: u32) {
    use flate2::{write::ZlibEncoder, Compression};
    use std::io::Write;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::fast());
    z.write_all(&vec![0u8; 4 * (w as usize + 1)]).unwrap();
    let idat = z.finish().unwrap();
    std::fs::write(path, common::png(w, h, &idat)).unwrap();
}

/// An ImageFolder `<d>/images` with classes 0 and 1, one real 8 × 8 image each.
fn image_folder(d: &Path) -> PathBuf {
    let root = d.join("images");
    for class in ["0", "1"] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        image::GrayImage::new(8, 8).save(root.join(class).join("a.png")).unwrap();
    }
    root
}

/// `semu unlearn` of the digits model forgetting `forget`, writing `<d>/o.onnx`, then `extra`.
fn unlearn(d: &Path, forget: &str, extra: &[&str]) -> Vec<String> {
    let mut v = args(&["unlearn", "--model", &fx("digits/model.onnx"), "--forget", forget, "--out", &at(d, "o.onnx")]);
    v.extend(args(extra));
    v
}

/// `semu unlearn` of the text classifier forgetting the text file `<d>/<name>` holding `body`.
fn unlearn_text(d: &Path, name: &str, body: &[u8]) -> Vec<String> {
    std::fs::write(d.join(name), body).unwrap();
    args(&["unlearn", "--model", &fx("text_cls/model.onnx"), "--forget", &at(d, name), "--out", &at(d, "o.onnx")])
}

/// `semu unlearn` of the digits model choosing the forget set from `--train <train>` by `how`.
fn unlearn_train(d: &Path, train: &str, how: &[&str]) -> Vec<String> {
    let mut v = args(&["unlearn", "--model", &fx("digits/model.onnx"), "--train", train]);
    v.extend(args(how));
    v.extend(args(&["--out", &at(d, "o.onnx")]));
    v
}

/// A digits CSV (64 feature columns, then `label`) with `rows` appended after the header.
fn digits_csv(d: &Path, rows: &[&str]) -> String {
    let mut s: Vec<String> = (0..64).map(|i| format!("p{i}")).collect();
    s.push("label".into());
    let mut text = s.join(",") + "\n";
    for r in rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(d.join("data.csv"), text).unwrap();
    at(d, "data.csv")
}

fn csv_row(value: &str, label: &str) -> String {
    let mut v = vec![value; 64];
    v.push(label);
    v.join(",")
}

/// A patch of one SEMU run on the digits model (made once per test run, under cargo's scratch
/// folder for tests, shared by the patch cases).
fn digits_patch() -> &'static Path {
    static PATCH: OnceLock<PathBuf> = OnceLock::new();
    PATCH.get_or_init(|| {
        let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bad_input");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_semu"))
            .args(unlearn(&d, &fx("digits/forget_class3.npz"), &["--epochs", "1", "--lr", "0.001", "--device", "cpu"]))
            .args(["--no-verify", "--out-patch", &at(&d, "p.safetensors")])
            .current_dir(std::env::temp_dir())
            .output()
            .unwrap();
        assert!(o.status.success(), "making the patch: {}", String::from_utf8_lossy(&o.stderr));
        d.join("p.safetensors")
    })
}

// ---- the classes --------------------------------------------------------------------------------

fn cases() -> Vec<Case> {
    vec![
        // The model file.
        case("model file missing", 1, &["<dir>/none.onnx"], |d| args(&["inspect", &at(d, "none.onnx")])),
        case("a weight of the input model all NaN", 1, &["<dir>/nan.onnx", "'classifier.3.weight' holds NaN"], |d| {
            let m = digits_with(d, "nan.onnx", "classifier.3.weight", f32::NAN);
            let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &["--epochs", "1", "--lr", "0.001"]);
            v[2] = m;
            v
        }),
        case("a bias of the input model all NaN", 1, &["<dir>/nan.onnx", "gradient", "not finite"], |d| {
            let m = digits_with(d, "nan.onnx", "classifier.3.bias", f32::NAN);
            let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &["--epochs", "1", "--lr", "0.001"]);
            v[2] = m;
            v
        }),
        case("model path is a folder", 1, &["<dir>"], |d| args(&["inspect", &d.display().to_string()])),
        case("model file empty (0 bytes)", 1, &["<dir>/empty.onnx"], |d| {
            std::fs::write(d.join("empty.onnx"), b"").unwrap();
            args(&["inspect", &at(d, "empty.onnx")])
        }),
        case("model file truncated to half", 1, &["<dir>/half.onnx"], |d| {
            let b = std::fs::read(fx("digits/model.onnx")).unwrap();
            std::fs::write(d.join("half.onnx"), &b[..b.len() / 2]).unwrap();
            args(&["inspect", &at(d, "half.onnx")])
        }),
        case("model file that is not protobuf (text)", 1, &["<dir>/text.onnx"], |d| {
            std::fs::write(d.join("text.onnx"), "this is not an ONNX model\n".repeat(20)).unwrap();
            args(&["inspect", &at(d, "text.onnx")])
        }),
        // The graph: rules onnxruntime enforces.
        case("graph with a cycle", 1, &["<dir>/bad.onnx", "cycle"], |d| {
            let m = digits_edited(d, |m| {
                let g = graph(m);
                let last = g.node.last().unwrap().output[0].clone();
                g.node[1].input[0] = last;
            });
            let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &[]);
            v[2] = m;
            v
        }),
        case("node input never defined", 1, &["<dir>/bad.onnx", "'ghost'"], |d| {
            let m = digits_edited(d, |m| graph(m).node[2].input[0] = "ghost".into());
            args(&["inspect", &m])
        }),
        case("two nodes produce one value", 1, &["<dir>/bad.onnx", "already produced"], |d| {
            let m = digits_edited(d, |m| {
                let g = graph(m);
                let first = g.node[0].output[0].clone();
                g.node[1].output[0] = first;
            });
            args(&["verify", &fx("digits/model.onnx"), &m, "--data", &fx("digits/test.npz")])
        }),
        case("initializer of element type 999", 1, &["<dir>/bad.onnx", "999"], |d| {
            let m = digits_edited(d, |m| graph(m).initializer[0].data_type = Some(999));
            args(&["inspect", &m])
        }),
        case("opset 99", 1, &["<dir>/bad.onnx", "99"], |d| {
            let m = digits_edited(d, |m| m.opset_import[0].version = Some(99));
            args(&["inspect", &m])
        }),
        case("IR version 99", 1, &["<dir>/bad.onnx", "IR version 99"], |d| {
            let m = digits_edited(d, |m| m.ir_version = Some(99));
            args(&["inspect", &m])
        }),
        case("attribute given twice on one node", 1, &["<dir>/bad.onnx", "more than once"], |d| {
            let m = digits_edited(d, |m| {
                let n = &mut graph(m).node[0];
                let a = n.attribute[0].clone();
                n.attribute.push(a);
            });
            args(&["inspect", &m])
        }),
        case("value_info contradicting the graph", 1, &["<dir>/bad.onnx", "value_info"], |d| {
            let m = digits_edited(d, |m| {
                let g = graph(m);
                let out = g.node[0].output[0].clone();
                g.value_info.push(semu::onnx::build::value(&out, semu::onnx::DType::I64, &[]));
            });
            args(&["inspect", &m])
        }),
        case("ConstantOfShape of 10^12 elements", 1, &["ConstantOfShape", "1000000000000 elements"], |d| {
            use semu::onnx::build::{node, value, write};
            use semu::onnx::DType;
            let (tmp, path) = write(
                vec![node("ConstantOfShape", &["shape"], &["y"])],
                vec![],
                vec![value("shape", DType::I64, &[2])],
                vec![value("y", DType::F32, &[-1, -1])],
                13,
            );
            std::fs::copy(&path, d.join("shaped.onnx")).unwrap();
            drop(tmp);
            std::fs::write(d.join("s.npy"), npy("<i8", "(2,)", &i64s(&[1_000_000, 1_000_000]))).unwrap();
            let input = format!("shape={}", at(d, "s.npy"));
            args(&["run", &at(d, "shaped.onnx"), "--input", &input, "--output-dir", &at(d, "out"), "--device", "cpu"])
        }),
        case("op the engine does not support", 1, &["FooOp", "'/features/features.2/Relu'"], |d| {
            let m = digits_edited(d, |m| graph(m).node[1].op_type = Some("FooOp".into()));
            let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &[]);
            v[2] = m;
            v
        }),
        case(
            "initializer whose bytes are fewer than its shape needs",
            1,
            &["classifier.1.weight", "262140 bytes"],
            |d| {
                let m = digits_edited(d, |m| {
                    let t = graph(m).initializer.iter_mut().find(|t| t.name() == "classifier.1.weight").unwrap();
                    t.raw_data.as_mut().unwrap().truncate(262_140);
                });
                args(&["inspect", &m])
            },
        ),
        case(
            "weight whose shape disagrees with its layer's input",
            1,
            &["/classifier/classifier.3/Gemm", "[10, 63]"],
            |d| {
                let m = digits_edited(d, |m| {
                    let t = graph(m).initializer.iter_mut().find(|t| t.name() == "classifier.3.weight").unwrap();
                    t.dims = vec![10, 63];
                    t.raw_data = Some(vec![0; 10 * 63 * 4]);
                });
                let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &["--device", "cpu"]);
                v[2] = m;
                v
            },
        ),
        case("model URL that is not a hub path", 1, &["hf://owner"], |_| args(&["inspect", "hf://owner"])),
        case("--weights tensor of the wrong shape", 1, &["<dir>/w.safetensors", "[3]", "needs [10]"], |d| {
            weights_file(d, safetensors::tensor::Dtype::F32, &[3]);
            args(&["inspect", &fx("digits/model.onnx"), "--weights", &at(d, "w.safetensors"), "--allow-partial"])
        }),
        case(
            "--weights tensor of an integer type for a float weight",
            1,
            &["<dir>/w.safetensors", "i64", "needs f32"],
            |d| {
                weights_file(d, safetensors::tensor::Dtype::I64, &[10]);
                args(&["inspect", &fx("digits/model.onnx"), "--weights", &at(d, "w.safetensors"), "--allow-partial"])
            },
        ),
        // External data.
        case("external data file missing", 1, &["classifier.3.bias"], |d| {
            let m = external_copy(d);
            std::fs::remove_file(m.join("classifier.3.bias")).unwrap();
            unlearn_external(d, &m)
        }),
        case("external data: a link out of the model's folder", 1, &["classifier.3.bias", "outside"], |d| {
            let m = external_copy(d);
            std::fs::rename(m.join("classifier.3.bias"), d.join("bias")).unwrap();
            std::os::unix::fs::symlink(d.join("bias"), m.join("classifier.3.bias")).unwrap();
            unlearn_external(d, &m)
        }),
        case(
            "external data location `../…` out of the folder",
            1,
            &["<dir>/model/model.onnx", "inside the folder"],
            |d| {
                let m = external_copy(d);
                std::fs::rename(m.join("classifier.3.bias"), d.join("classifier.3.bias")).unwrap();
                set_location(&m, "classifier.3.bias", "../classifier.3.bias");
                args(&["inspect", &m.join("model.onnx").display().to_string()])
            },
        ),
        case("external data that is a FIFO", 1, &["classifier.3.bias"], |d| {
            let m = external_copy(d);
            std::fs::remove_file(m.join("classifier.3.bias")).unwrap();
            mkfifo(&m.join("classifier.3.bias"));
            unlearn_external(d, &m)
        }),
        case("external data shorter than its tensor", 1, &["classifier.3.bias"], |d| {
            let m = external_copy(d);
            std::fs::write(m.join("classifier.3.bias"), [0u8; 8]).unwrap();
            unlearn_external(d, &m)
        }),
        // Array data.
        case("npz array whose header promises more rows than its payload", 1, &["<dir>/short.npz", "`x`"], |d| {
            let x = npy("<f4", "(100, 1, 8, 8)", &f32s(640, 0.5));
            npz(&d.join("short.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(100,)", &i64s(&[3; 100])))]);
            unlearn(d, &at(d, "short.npz"), &[])
        }),
        case("npy header claiming 10^12 elements", 1, &["<dir>/big.npy", "1000000000000 elements"], |d| {
            std::fs::write(d.join("big.npy"), npy("<f4", "(1000000, 1, 1000, 1000)", &[0; 16])).unwrap();
            let input = format!("input={}", at(d, "big.npy"));
            args(&[
                "run",
                &fx("digits/model.onnx"),
                "--input",
                &input,
                "--output-dir",
                &at(d, "out"),
                "--device",
                "cpu",
            ])
        }),
        case("npz that is not a zip archive", 1, &["<dir>/junk.npz"], |d| {
            std::fs::write(d.join("junk.npz"), b"PK but not really a zip archive").unwrap();
            unlearn(d, &at(d, "junk.npz"), &[])
        }),
        case("npz without labels `y`", 1, &["<dir>/nolabels.npz"], |d| {
            npz(&d.join("nolabels.npz"), &[("x.npy", npy("<f4", "(2, 1, 8, 8)", &f32s(128, 0.5)))]);
            unlearn(d, &at(d, "nolabels.npz"), &[])
        }),
        case("npz inputs of complex numbers", 1, &["<dir>/complex.npz", "`x`", "complex"], |d| {
            let x = npy("<c8", "(2, 1, 8, 8)", &f32s(256, 0.5));
            npz(&d.join("complex.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2,)", &i64s(&[3, 3])))]);
            unlearn(d, &at(d, "complex.npz"), &[])
        }),
        case("npz labels that are floats", 1, &["<dir>/floaty.npz", "integer class ids"], |d| {
            let x = npy("<f4", "(2, 1, 8, 8)", &f32s(128, 0.5));
            npz(&d.join("floaty.npz"), &[("x.npy", x), ("y.npy", npy("<f4", "(2,)", &f32s(2, 3.0)))]);
            unlearn(d, &at(d, "floaty.npz"), &[])
        }),
        case("npz array of strings", 1, &["<dir>/strings.npz", "'<U1' is not supported"], |d| {
            let x = npy("<U1", "(2, 2)", &[b'a', 0, 0, 0].repeat(4));
            npz(&d.join("strings.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2,)", &i64s(&[3, 3])))]);
            unlearn(d, &at(d, "strings.npz"), &[])
        }),
        case("npz array in Fortran order", 1, &["<dir>/fortran.npz", "Fortran"], |d| {
            let dict = "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 1, 8, 8), }";
            let x = npy_dict(dict, &f32s(128, 0.5));
            npz(&d.join("fortran.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2,)", &i64s(&[3, 3])))]);
            unlearn(d, &at(d, "fortran.npz"), &[])
        }),
        case("npz array of big-endian floats", 1, &["<dir>/big_endian.npz", "'>f4' is not supported"], |d| {
            let x = npy(">f4", "(2, 1, 8, 8)", &f32s(128, 0.5));
            npz(&d.join("big_endian.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2,)", &i64s(&[3, 3])))]);
            unlearn(d, &at(d, "big_endian.npz"), &[])
        }),
        case("labels `y` of two dimensions", 1, &["<dir>/y2d.npz", "need N×… and N"], |d| {
            let x = npy("<f4", "(2, 1, 8, 8)", &f32s(128, 0.5));
            npz(&d.join("y2d.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2, 2)", &i64s(&[3, 3, 3, 3])))]);
            unlearn(d, &at(d, "y2d.npz"), &[])
        }),
        case(".npy inputs without a labels file", 1, &["<dir>/solo.npy", "labels"], |d| {
            std::fs::write(d.join("solo.npy"), npy("<f4", "(2, 1, 8, 8)", &f32s(128, 0.5))).unwrap();
            unlearn(d, &at(d, "solo.npy"), &[])
        }),
        case("run --input naming only a name the graph lacks", 2, &["--input nope", "its inputs: input"], |d| {
            std::fs::write(d.join("x.npy"), npy("<f4", "(2, 1, 8, 8)", &f32s(128, 0.5))).unwrap();
            let input = format!("nope={}", at(d, "x.npy"));
            args(&[
                "run",
                &fx("digits/model.onnx"),
                "--input",
                &input,
                "--output-dir",
                &at(d, "out"),
                "--device",
                "cpu",
            ])
        }),
        case("x and y of different lengths", 1, &["<dir>/ragged.npz"], |d| {
            let x = npy("<f4", "(4, 1, 8, 8)", &f32s(256, 0.5));
            npz(&d.join("ragged.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(3,)", &i64s(&[3, 3, 3])))]);
            unlearn(d, &at(d, "ragged.npz"), &[])
        }),
        case(
            "samples of the wrong shape for the model (3 channels)",
            1,
            &["/features/features.0/Conv", "got 3 channels"],
            |d| {
                let x = npy("<f4", "(2, 3, 8, 8)", &f32s(384, 0.5));
                npz(&d.join("rgb.npz"), &[("x.npy", x), ("y.npy", npy("<i8", "(2,)", &i64s(&[3, 3])))]);
                unlearn(d, &at(d, "rgb.npz"), &["--device", "cpu"])
            },
        ),
        case("label outside the model's classes", 1, &["<dir>/label12.npz", "12"], |d| {
            unlearn(d, &digits_npz(d, "label12.npz", 0.5, &[3, 12]), &[])
        }),
        case("negative label", 1, &["<dir>/negative.npz", "-1"], |d| {
            unlearn(d, &digits_npz(d, "negative.npz", 0.5, &[3, -1]), &[])
        }),
        case("empty forget set (0 samples)", 1, &["<dir>/empty.npz", "no samples"], |d| {
            unlearn(d, &digits_npz(d, "empty.npz", 0.5, &[]), &[])
        }),
        case("NaN in the input samples", 1, &["<dir>/nan.npz", "NaN"], |d| {
            unlearn(d, &digits_npz(d, "nan.npz", f32::NAN, &[3, 3]), &[])
        }),
        case("safetensors data that is not safetensors", 1, &["<dir>/junk.safetensors"], |d| {
            std::fs::write(d.join("junk.safetensors"), b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk").unwrap();
            unlearn(d, &at(d, "junk.safetensors"), &[])
        }),
        case("data file of an unknown kind", 1, &["<dir>/data.txt"], |d| {
            std::fs::write(d.join("data.txt"), "1 2 3\n").unwrap();
            unlearn(d, &at(d, "data.txt"), &[])
        }),
        case("data file missing", 1, &["<dir>/gone.npz"], |d| unlearn(d, &at(d, "gone.npz"), &[])),
        // Choosing the forget set from --train.
        case("--forget-class the model does not have", 1, &["12"], |d| {
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-class", "12"])
        }),
        case("--forget-indices past the end of --train", 1, &["<dir>/idx.txt"], |d| {
            std::fs::write(d.join("idx.txt"), "0\n99999999\n").unwrap();
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-indices", &at(d, "idx.txt")])
        }),
        case("--forget-indices line that is not an index", 1, &["<dir>/idx.txt:2", "`seven`"], |d| {
            std::fs::write(d.join("idx.txt"), "0\nseven\n").unwrap();
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-indices", &at(d, "idx.txt")])
        }),
        // CSV tables.
        case("CSV without the label column named", 1, &["<dir>/data.csv", "`target`"], |d| {
            let csv = digits_csv(d, &[&csv_row("0.5", "3")]);
            unlearn(d, &csv, &["--label-column", "target"])
        }),
        case("CSV cell that is not a number", 1, &["<dir>/data.csv", "line 2"], |d| {
            let csv = digits_csv(d, &[&csv_row("0.5", "3").replacen("0.5", "dark", 1)]);
            unlearn(d, &csv, &[])
        }),
        case("CSV with only a header", 1, &["<dir>/data.csv", "no samples"], |d| unlearn(d, &digits_csv(d, &[]), &[])),
        // Text.
        case("JSONL line without the text column", 1, &["<dir>/f.jsonl:1", "`text`"], |d| {
            unlearn_text(d, "f.jsonl", b"{\"body\": \"some words\", \"label\": 1}\n")
        }),
        case("JSONL line that is not JSON", 1, &["<dir>/f.jsonl:2", "not valid JSON"], |d| {
            unlearn_text(d, "f.jsonl", b"{\"text\": \"fine\", \"label\": 1}\n{\"text\": \"cut\n")
        }),
        case("JSONL with invalid UTF-8", 1, &["<dir>/f.jsonl"], |d| {
            unlearn_text(d, "f.jsonl", b"{\"text\": \"caf\xe9 \xff\", \"label\": 1}\n")
        }),
        case("JSONL label not among the model's labels", 1, &["<dir>/f.jsonl:1", "WTFPL"], |d| {
            unlearn_text(d, "f.jsonl", b"{\"text\": \"do what you want\", \"label\": \"WTFPL\"}\n")
        }),
        case("text CSV without the --text-column", 1, &["<dir>/f.csv", "`text`"], |d| {
            let mut v = unlearn_text(d, "f.csv", b"body,label\nsome words,1\n");
            v.extend(args(&["--text-column", "text"]));
            v
        }),
        case("JSONL label id outside the model's classes", 1, &["<dir>/f.jsonl", "label 9"], |d| {
            unlearn_text(d, "f.jsonl", b"{\"text\": \"some words\", \"label\": 9}\n")
        }),
        case("--tokenizer that is not a tokenizer.json", 1, &["<dir>/tok.json"], |d| {
            std::fs::write(d.join("tok.json"), "garbage\n").unwrap();
            let mut v = unlearn_text(d, "f.jsonl", b"{\"text\": \"some words\", \"label\": 1}\n");
            v.extend(args(&["--tokenizer", &at(d, "tok.json")]));
            v
        }),
        case("--max-length 0 (no room for the special tokens)", 1, &["--max-length"], |d| {
            let mut v = unlearn_text(d, "f.jsonl", b"{\"text\": \"some words\", \"label\": 1}\n");
            v.extend(args(&["--max-length", "0"]));
            v
        }),
        case("--task causal-lm for a classifier", 1, &["model.onnx", "causal-lm"], |d| {
            let mut v = unlearn_text(d, "f.jsonl", b"{\"text\": \"some words\", \"label\": 1}\n");
            v.extend(args(&["--task", "causal-lm"]));
            v
        }),
        // Images.
        case("PNG whose header claims 20000 × 20000 pixels", 1, &["big.png", "400000000 pixels"], |d| {
            let root = image_folder(d);
            png_claiming(&root.join("1/big.png"), 20_000, 20_000);
            unlearn_train(d, &root.display().to_string(), &["--forget-class", "1"])
        }),
        case("ImageFolder with a link looping back to its root", 1, &["loop"], |d| {
            let root = image_folder(d);
            std::os::unix::fs::symlink(&root, root.join("0/loop")).unwrap();
            unlearn_train(d, &root.display().to_string(), &["--forget-class", "1"])
        }),
        case("ImageFolder image that is a FIFO", 1, &["b.png", "FIFO"], |d| {
            let root = image_folder(d);
            mkfifo(&root.join("1/b.png"));
            unlearn_train(d, &root.display().to_string(), &["--forget-class", "1"])
        }),
        case("ImageFolder image that is a link out of the root", 1, &["b.png", "outside"], |d| {
            let root = image_folder(d);
            image::GrayImage::new(8, 8).save(d.join("outside.png")).unwrap();
            std::os::unix::fs::symlink(d.join("outside.png"), root.join("1/b.png")).unwrap();
            unlearn_train(d, &root.display().to_string(), &["--forget-class", "1"])
        }),
        case("image file that is not an image", 1, &["b.png"], |d| {
            let root = image_folder(d);
            std::fs::write(root.join("1/b.png"), b"not a png at all").unwrap();
            unlearn_train(d, &root.display().to_string(), &["--forget-class", "1"])
        }),
        // Settings.
        case("--lr nan", 2, &["--lr"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--lr", "nan"])),
        case("--lr negative", 2, &["--lr"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--lr=-1"])),
        case("--gamma 0", 2, &["gamma"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--gamma", "0"])),
        case("--gamma 1.5", 2, &["gamma"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--gamma", "1.5"])),
        case("--max-trained 0", 2, &["--max-trained"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--max-trained", "0"])
        }),
        case("--max-trained with --gamma", 2, &["--max-trained", "--gamma"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--max-trained", "1", "--gamma", "0.9"])
        }),
        case("--max-trained below rank 1 per layer", 1, &["rank 1", "--max-trained"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--max-trained", "0.001"])
        }),
        case("--epochs 0", 2, &["epochs"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--epochs", "0"])),
        case("--batch-size 0", 2, &["batch size"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--batch-size", "0"])
        }),
        case("--momentum 5", 2, &["--momentum"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--momentum", "5"])),
        case("--device tpu", 2, &["tpu"], |d| unlearn(d, &fx("digits/forget_class3.npz"), &["--device", "tpu"])),
        case("--forget-fraction 0", 2, &["--forget-fraction"], |d| {
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-fraction", "0"])
        }),
        case("--forget-fraction 1.5", 2, &["--forget-fraction"], |d| {
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-fraction", "1.5"])
        }),
        case("--forget-fraction nan", 2, &["--forget-fraction"], |d| {
            unlearn_train(d, &fx("digits/train.npz"), &["--forget-fraction", "nan"])
        }),
        case("--method ft without --retain", 2, &["--retain"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--method", "ft"])
        }),
        case("--out-patch with a method other than SEMU", 2, &["--method semu"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--method", "rl", "--out-patch", &at(d, "p.safetensors")])
        }),
        case("--layers matching no weight", 2, &["--layers nomatch"], |d| {
            unlearn(d, &fx("digits/forget_class3.npz"), &["--layers", "nomatch"])
        }),
        case("--resize 0,0", 2, &["--resize"], |_| {
            let m = fx("digits/model.onnx");
            args(&["verify", &m, &m, "--data", &fx("digits_png/test"), "--resize", "0,0"])
        }),
        case("sweep --gamma 2", 2, &["gamma"], |d| {
            let f = |p: &str| fx(&format!("digits/{p}"));
            let (m, fg, r, t) = (f("model.onnx"), f("forget_class3.npz"), f("retain_class3.npz"), f("test.npz"));
            let out = at(d, "sweep");
            args(&[
                "sweep",
                "--model",
                &m,
                "--forget",
                &fg,
                "--retain",
                &r,
                "--test",
                &t,
                "--out",
                &out,
                "--gamma",
                "2",
                "--methods",
                "semu",
            ])
        }),
        case("sweep file that is not TOML", 2, &["<dir>/sweep.toml, line 1", "unclosed array"], |d| {
            std::fs::write(d.join("sweep.toml"), "methods = [\n").unwrap();
            args(&["sweep", "--config", &at(d, "sweep.toml")])
        }),
        case("config file with an unknown setting", 2, &["<dir>/c.toml, line 1", "learning_rate"], |d| {
            std::fs::write(d.join("c.toml"), "learning_rate = 0.1\n").unwrap();
            unlearn(d, &fx("digits/forget_class3.npz"), &["--config", &at(d, "c.toml")])
        }),
        case("--max-elements 0", 2, &["--max-elements"], |_| {
            args(&["inspect", &fx("digits/model.onnx"), "--max-elements", "0"])
        }),
        case("verify --tolerance -1", 2, &["--tolerance"], |_| {
            let m = fx("digits/model.onnx");
            args(&["verify", &m, &m, "--data", &fx("digits/test.npz"), "--tolerance=-1"])
        }),
        case("verify --limit 0", 2, &["--limit"], |_| {
            let m = fx("digits/model.onnx");
            args(&["verify", &m, &m, "--data", &fx("digits/test.npz"), "--limit", "0"])
        }),
        // Outputs.
        case("--out is the model itself", 2, &["is the input"], |d| {
            std::fs::copy(fx("digits/model.onnx"), d.join("model.onnx")).unwrap();
            let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &[]);
            v[2] = at(d, "model.onnx");
            v[6] = at(d, "./model.onnx");
            v
        }),
        case("--out is a folder", 2, &["a folder"], |d| {
            std::fs::create_dir(d.join("o.onnx")).unwrap();
            unlearn(d, &fx("digits/forget_class3.npz"), &[])
        }),
        case("--out is a FIFO", 2, &["a FIFO"], |d| {
            mkfifo(&d.join("o.onnx"));
            unlearn(d, &fx("digits/forget_class3.npz"), &[])
        }),
        case("--report-dir is an existing file", 2, &["--report-dir"], |d| {
            std::fs::write(d.join("taken"), b"x").unwrap();
            unlearn(d, &fx("digits/forget_class3.npz"), &["--report-dir", &at(d, "taken")])
        }),
        case("run --input: one right name, one the graph lacks", 2, &["--input nope", "its inputs: input"], |d| {
            std::fs::write(d.join("x.npy"), npy("<f4", "(1, 1, 8, 8)", &f32s(64, 0.0))).unwrap();
            let x = at(d, "x.npy");
            args(&["run", &fx("digits/model.onnx"), "--input", &format!("input={x}"), "--input", &format!("nope={x}")])
        }),
        case("eval --json naming a folder", 2, &["--json", "a folder"], |d| {
            std::fs::create_dir(d.join("j")).unwrap();
            let f = |p: &str| fx(&format!("digits/{p}"));
            let (m, fg, r, t) = (f("model.onnx"), f("forget_class3.npz"), f("retain_class3.npz"), f("test.npz"));
            args(&["eval", "--model", &m, "--forget", &fg, "--retain", &r, "--test", &t, "--json", &at(d, "j")])
        }),
        // Verification and patches.
        case("verify: a model that outputs NaN", 3, &["<dir>/nan.onnx", "NaN/Inf"], |d| {
            let b = digits_with(d, "nan.onnx", "classifier.3.bias", f32::NAN);
            args(&[
                "verify",
                &fx("digits/model.onnx"),
                &b,
                "--data",
                &fx("digits/test.npz"),
                "--limit",
                "8",
                "--device",
                "cpu",
            ])
        }),
        case("patch apply: a patch whose R holds NaN", 3, &["not finite", "nothing written"], |d| {
            let mut p = semu::patch::Patch::read(digits_patch()).unwrap();
            p.layers[0].r = p.layers[0].r.full_like(f64::NAN);
            p.write(&d.join("nan.safetensors")).unwrap();
            args(&["patch", "apply", &fx("digits/model.onnx"), &at(d, "nan.safetensors"), "--out", &at(d, "o.onnx")])
        }),
        case(
            "patch apply to a model it was not made from",
            1,
            &["retrain_class3.onnx", "not the ones the patch was made from"],
            |d| {
                std::fs::copy(digits_patch(), d.join("p.safetensors")).unwrap();
                args(&[
                    "patch",
                    "apply",
                    &fx("digits/retrain_class3.onnx"),
                    &at(d, "p.safetensors"),
                    "--out",
                    &at(d, "o.onnx"),
                ])
            },
        ),
        case("patch file that is not safetensors", 1, &["<dir>/p.safetensors"], |d| {
            std::fs::write(d.join("p.safetensors"), b"not a patch").unwrap();
            args(&["patch", "apply", &fx("digits/model.onnx"), &at(d, "p.safetensors"), "--out", &at(d, "o.onnx")])
        }),
        // Downloads (nothing leaves the machine).
        case("fetch of an http:// URL without --allow-http", 2, &["--allow-http"], |_| {
            args(&["fetch", "http://127.0.0.1:9/model.onnx"])
        }),
        case("fetch --offline of a file not in the cache", 1, &["offline"], |_| {
            args(&["fetch", "--offline", "https://127.0.0.1:9/model.onnx"])
        }),
        case("fetch with a malformed --sha256", 2, &["sha256"], |_| {
            args(&["fetch", "https://127.0.0.1:9/model.onnx", "--sha256", "xyz"])
        }),
        case("fetch of a local path", 2, &["not a URL"], |d| args(&["fetch", &at(d, "model.onnx")])),
        case("fetch from a loopback port nobody listens on", 1, &["127.0.0.1:9"], |_| {
            args(&["fetch", "--allow-http", "http://127.0.0.1:9/model.onnx"])
        }),
    ]
}

/// `<d>/w.safetensors` holding `classifier.3.bias` as `dtype` of `shape` (zeros).
fn weights_file(d: &Path, dtype: safetensors::tensor::Dtype, shape: &[usize]) {
    let size = if dtype == safetensors::tensor::Dtype::I64 { 8 } else { 4 };
    let data = vec![0u8; shape.iter().product::<usize>() * size];
    let view = safetensors::tensor::TensorView::new(dtype, shape.to_vec(), &data).unwrap();
    let bytes = safetensors::serialize([("classifier.3.bias", view)], &None).unwrap();
    std::fs::write(d.join("w.safetensors"), bytes).unwrap();
}

/// `semu unlearn` of the external-data model copy in `m`.
fn unlearn_external(d: &Path, m: &Path) -> Vec<String> {
    let mut v = unlearn(d, &fx("digits/forget_class3.npz"), &[]);
    v[2] = m.join("model.onnx").display().to_string();
    v
}

/// Points the external data of initializer `name` in `<m>/model.onnx` at `location`.
fn set_location(m: &Path, name: &str, location: &str) {
    let path = m.join("model.onnx");
    let mut model = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let t = graph(&mut model).initializer.iter_mut().find(|t| t.name() == name).unwrap();
    t.external_data.retain(|kv| kv.key() != "location");
    t.external_data.push(StringStringEntryProto { key: Some("location".into()), value: Some(location.into()) });
    std::fs::write(&path, model.encode_to_vec()).unwrap();
}

// ---- running them -------------------------------------------------------------------------------

/// What an output path was before the run: absent, a regular file's bytes, or another kind.
#[derive(PartialEq, Debug)]
enum Before {
    Absent,
    File(Vec<u8>),
    Folder(Vec<String>),
    Other(String),
}

fn before(p: &Path) -> Before {
    match std::fs::symlink_metadata(p) {
        Err(_) => Before::Absent,
        Ok(m) if m.is_file() => Before::File(std::fs::read(p).unwrap()),
        Ok(m) if m.is_dir() => {
            let mut v: Vec<String> =
                std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
            v.sort();
            Before::Folder(v)
        }
        Ok(m) => Before::Other(format!("{:?}", m.file_type())),
    }
}

fn outputs_of(argv: &[String]) -> Vec<PathBuf> {
    argv.windows(2).filter(|w| OUTPUT_FLAGS.contains(&w[0].as_str())).map(|w| PathBuf::from(&w[1])).collect()
}

/// Paths as the table shows them: the case's folder as `<dir>`, the download cache as `<cache>`,
/// the fixtures as `fixtures/…`.
fn mask(s: &str, dir: &Path, cache: &Path) -> String {
    let mut s = s.to_string();
    let real = dir.canonicalize().unwrap();
    for (from, to) in [
        (cache.display().to_string(), "<cache>".to_string()),
        (real.display().to_string(), "<dir>".to_string()),
        (dir.display().to_string(), "<dir>".to_string()),
        (root().join("fixtures").display().to_string(), "fixtures".to_string()),
    ] {
        s = s.replace(&from, &to);
    }
    let staging = regex::Regex::new(r"\.semu-staging-[A-Za-z0-9_]+").unwrap();
    staging.replace_all(&s, ".semu-staging-<id>").into_owned()
}

/// The line a user reads first: the first `error:` line (else the last line on stderr); when it
/// ends with a colon, the indented list it introduces follows, up to its first item.
fn first_error(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let Some(i) = lines.iter().position(|l| l.starts_with("error:")).or(lines.len().checked_sub(1)) else {
        return String::new();
    };
    let mut line = lines[i].to_string();
    for next in &lines[i + 1..] {
        if !(line.ends_with(':') && next.starts_with(' ')) {
            break;
        }
        line = format!("{line} {}", next.trim());
    }
    line
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn shell_word(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:<>,@+".contains(c)) {
        a.to_string()
    } else {
        format!("'{a}'")
    }
}

/// Runs one case; its table row, or what went wrong.
fn run_case(c: &Case) -> Result<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let argv = (c.setup)(dir.path());
    let outputs: Vec<(PathBuf, Before)> = outputs_of(&argv)
        .into_iter()
        .map(|p| {
            let b = before(&p);
            (p, b)
        })
        .collect();
    let (err, cache) = (logs.path().join("stderr"), logs.path().join("cache"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(&argv)
        .current_dir(std::env::temp_dir())
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LOG")
        .env_remove("SEMU_MAX_ELEMENTS")
        .env_remove("SEMU_OFFLINE")
        .env("SEMU_CACHE", &cache)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(format!("still running after {LIMIT:?} (killed)"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = String::from_utf8_lossy(&std::fs::read(&err).unwrap()).into_owned();
    let line = mask(&first_error(&stderr), dir.path(), &cache);
    let cmd = std::iter::once("semu".to_string())
        .chain(argv.iter().map(|a| shell_word(&mask(a, dir.path(), &cache))))
        .collect::<Vec<_>>()
        .join(" ");
    let mut wrong = Vec::new();
    if status.code() != Some(c.code) {
        wrong.push(format!("exit {:?}, expected {}", status.code(), c.code));
    }
    for bad in NEVER {
        if stderr.contains(bad) {
            wrong.push(format!("stderr shows '{bad}'"));
        }
    }
    for s in c.says {
        if !line.contains(s) {
            wrong.push(format!("no '{s}' in the first error line"));
        }
    }
    if !status.success() {
        for (p, was) in &outputs {
            let now = before(p);
            if now != *was {
                wrong.push(format!("{} changed although the run failed: {was:?} -> {now:?}", p.display()));
            }
        }
    }
    if !wrong.is_empty() {
        return Err(format!("{}\n  $ {cmd}\n  stderr:\n{stderr}", wrong.join("; ")));
    }
    Ok(format!("| {} | `{}` | {} | {} |", cell(c.class), cell(&cmd), c.code, cell(&line)))
}

fn table(rows: &[String]) -> String {
    let mut t = String::from("| bad input | command | exit | what semu says |\n|---|---|---|---|\n");
    for r in rows {
        t.push_str(r);
        t.push('\n');
    }
    t
}

/// README with the section between the markers replaced by `table`.
fn with_table(readme: &str, table: &str) -> String {
    let b = readme.find(BEGIN).unwrap_or_else(|| panic!("README.md has no {BEGIN} marker"));
    let e = readme.find(END).unwrap_or_else(|| panic!("README.md has no {END} marker"));
    assert!(b < e, "README.md: {END} before {BEGIN}");
    format!("{}{BEGIN}\n{table}{}", &readme[..b], &readme[e..])
}

#[test]
fn bad_input_table() {
    let cases = cases();
    assert!(cases.len() >= 45, "{} classes", cases.len());
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<String, String>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(c) = cases.get(i) else { break done };
                        done.push((i, run_case(c)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let failures: Vec<String> =
        results.iter().filter_map(|(i, r)| r.as_ref().err().map(|e| format!("{}: {e}", cases[*i].class))).collect();
    assert!(failures.is_empty(), "{} of {} classes failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
    let rows: Vec<String> = results.into_iter().map(|(_, r)| r.unwrap()).collect();
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let want = with_table(&readme, &table(&rows));
    if want == readme {
        return;
    }
    if std::env::var_os("SEMU_UPDATE_README").is_some_and(|v| v == "1") {
        let tmp = root().join(".README.md.bad-input.tmp");
        std::fs::write(&tmp, &want).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        eprintln!("README.md: bad-input table rewritten ({} rows)", rows.len());
        return;
    }
    let (old, new): (Vec<&str>, Vec<&str>) = (readme.lines().collect(), want.lines().collect());
    let gone = old.iter().filter(|l| !new.contains(l)).map(|l| format!("- {l}"));
    let diff: Vec<String> =
        gone.chain(new.iter().filter(|l| !old.contains(l)).map(|l| format!("+ {l}"))).take(20).collect();
    panic!(
        "README.md's bad-input table differs from what semu does now: run `make bad-input-table` \
         (SEMU_UPDATE_README=1 cargo test --release --test bad_input) and commit README.md.\n{}",
        diff.join("\n")
    );
}

//! Sharded forget-set gradients (`semu gradient --shard/--shards`, `reduce`, `unlearn
//! --gradient`) on the digits fixture: three processes with a scheduler's index variable add up
//! to the single-process gradient, SEMU continues from the sum to the same export, and parts or
//! gradients that do not belong together are refused naming the file.
use semu::onnx::OnnxModel;
use semu::semu::gradient_file::Opened;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

fn fx(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p).display().to_string()
}

/// The binary, with no scheduler variable inherited from the environment the tests run in.
fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_semu"));
    c.args(args).env_remove("JOB_COMPLETION_INDEX").env_remove("SLURM_ARRAY_TASK_ID");
    c
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}", text(&o));
    o
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Batches of 32: the forget set's 146 samples make 5 batches, split 1 + 2 + 2 over 3 shards.
const DATA: [&str; 6] = ["--forget", "", "--batch-size", "32", "--device", "cpu"];

fn data_args(model: &str) -> Vec<String> {
    let mut v: Vec<String> = DATA.iter().map(|a| a.to_string()).collect();
    v[1] = fx("digits/forget_class3.npz");
    [vec!["--model".to_string(), fx(model)], v].concat()
}

struct Parts {
    dir: tempfile::TempDir,
    whole: PathBuf,
    parts: Vec<PathBuf>,
}

/// The single-process gradient and three parts, computed by three processes at once: shards 0
/// and 1 from JOB_COMPLETION_INDEX (Kubernetes), shard 2 from SLURM_ARRAY_TASK_ID.
fn parts() -> &'static Parts {
    static P: OnceLock<Parts> = OnceLock::new();
    P.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let args = data_args("digits/model.onnx");
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        let parts: Vec<PathBuf> = (0..3).map(|i| dir.path().join(format!("part-{i}.safetensors"))).collect();
        let children: Vec<_> = parts
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let var = if i < 2 { "JOB_COMPLETION_INDEX" } else { "SLURM_ARRAY_TASK_ID" };
                let mut c = cmd(&[&["gradient", "--shards", "3", "--out", &s(p)], &a[..]].concat());
                c.env(var, i.to_string()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
            })
            .collect();
        let whole = dir.path().join("whole.safetensors");
        ok(cmd(&[&["gradient", "--out", &s(&whole)], &a[..]].concat()).output().unwrap());
        for c in children {
            ok(c.wait_with_output().unwrap());
        }
        Parts { dir, whole, parts }
    })
}

fn reduce(parts: &[&Path], out: &Path) -> Output {
    let mut args = vec!["gradient".to_string(), "reduce".to_string()];
    args.extend(parts.iter().map(|p| s(p)));
    args.extend(["--out".to_string(), s(out)]);
    cmd(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap()
}

/// Runs `semu unlearn` (fixed rate and epochs, seed 0, no gate) and returns its report.
fn unlearn(out: &Path, extra: &[&str]) -> serde_json::Value {
    let args = data_args("digits/model.onnx");
    let report = out.with_extension("json");
    let mut all: Vec<&str> = vec!["unlearn", "--out", out.to_str().unwrap(), "--report", report.to_str().unwrap()];
    all.extend(args.iter().map(String::as_str));
    all.extend(["--epochs", "2", "--lr", "0.001", "--gamma", "0.6", "--seed", "0", "--no-verify"]);
    all.extend(extra);
    ok(cmd(&all).output().unwrap());
    serde_json::from_str(&std::fs::read_to_string(report).unwrap()).unwrap()
}

fn max_abs_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (OnnxModel::load(a).unwrap(), OnnxModel::load(b).unwrap());
    let floats = |m: &OnnxModel, t| -> Vec<f32> {
        m.tensor(t).unwrap().bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
    };
    let mut worst = 0f64;
    for ta in &a.graph().initializer {
        let tb = b.graph().initializer.iter().find(|t| t.name() == ta.name()).unwrap();
        for (x, y) in floats(&a, ta).iter().zip(floats(&b, tb)) {
            worst = worst.max((*x as f64 - y as f64).abs());
        }
    }
    worst
}

#[test]
fn three_shards_add_up_to_the_single_process_gradient_and_unlearn_continues_from_it() {
    let p = parts();
    let g = p.dir.path().join("G.safetensors");
    // Given in reverse: the sum is taken in shard order anyway.
    let rev: Vec<&Path> = p.parts.iter().rev().map(PathBuf::as_path).collect();
    let o = ok(reduce(&rev, &g));
    assert!(text(&o).contains("3 part(s) = 3 shard(s)"), "{}", text(&o));
    let from: Vec<String> = p.parts.iter().map(|f| Opened::open(f).unwrap().meta.index_from).collect();
    assert_eq!(from, ["JOB_COMPLETION_INDEX", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"]);
    let counts: Vec<usize> = p.parts.iter().map(|f| Opened::open(f).unwrap().meta.samples).collect();
    assert!(counts.iter().all(|&c| c > 0), "every shard has batches: {counts:?}");
    let (sum, whole) = (Opened::open(&g).unwrap(), Opened::open(&p.whole).unwrap());
    assert!(sum.meta.is_complete() && whole.meta.is_complete());
    assert_eq!(sum.meta.samples, counts.iter().sum::<usize>());
    for l in &whole.meta.origin.layers {
        let (a, b) = (sum.tensor(&l.name).unwrap(), whole.tensor(&l.name).unwrap());
        let scale = b.abs().max().double_value(&[]);
        let diff = (&a - &b).abs().max().double_value(&[]);
        eprintln!("{}: reduced vs single-process gradient: max diff {diff:.1e} of max {scale:.1e}", l.name);
        assert!(scale > 0.0 && diff <= 1e-9 * scale, "{}: max diff {diff:e} of max {scale:e}", l.name);
    }

    // SEMU from the reduced gradient: the same k per layer and the same export as computing it.
    let (plain, given) = (p.dir.path().join("plain.onnx"), p.dir.path().join("given.onnx"));
    let r1 = unlearn(&plain, &[]);
    let r2 = unlearn(&given, &["--gradient", &s(&g)]);
    let ks = |r: &serde_json::Value| -> Vec<(String, u64)> {
        r["layers"].as_array().unwrap().iter().map(|l| (l["name"].to_string(), l["k"].as_u64().unwrap())).collect()
    };
    assert_eq!(ks(&r1), ks(&r2));
    assert!(!ks(&r1).is_empty());
    assert_eq!(r2["sha256"]["gradient"]["path"], s(&g));
    assert!(r1["sha256"].get("gradient").is_none());
    let d = max_abs_diff(&plain, &given);
    eprintln!("export from the reduced gradient vs plain unlearn: max abs diff {d:.1e}");
    assert!(d <= 1e-6, "exports differ by {d:e}");
    assert!(max_abs_diff(&plain, Path::new(&fx("digits/model.onnx"))) > 1e-4, "the run changed weights");
}

#[test]
fn parts_and_gradients_that_do_not_belong_together_are_refused_naming_the_file() {
    let p = parts();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("G.safetensors");
    let (p0, p1, p2) = (p.parts[0].as_path(), p.parts[1].as_path(), p.parts[2].as_path());
    // Shard 2 of the f16 model: another model.
    let other = dir.path().join("other-model-2.safetensors");
    let args = data_args("digits_f16/model.onnx");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(cmd(&[&["gradient", "--shard", "2/3", "--out", &s(&other)], &a[..]].concat()).output().unwrap());
    let cases: [(Vec<&Path>, &str, String); 3] = [
        (vec![p0, p1, &other], "another model", s(&other)),
        (vec![p0, p1], "[2] of 3 missing", "none of the 2 part(s)".into()),
        (vec![p0, p1, p2, p1], "shard 1 of 3 is also in", s(p1)),
    ];
    for (files, why, names) in cases {
        let o = reduce(&files, &out);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let t = text(&o);
        assert!(t.contains(why) && t.contains(&names), "{why}: {t}");
        assert!(!out.exists());
    }
    // --shards without a scheduler's variable: a usage error.
    let o = cmd(&[&["gradient", "--shards", "3", "--out", &s(&out)], &a[..]].concat()).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("JOB_COMPLETION_INDEX") && text(&o).contains("SLURM_ARRAY_TASK_ID"), "{}", text(&o));

    // unlearn --gradient: an unreduced part, and a gradient lacking adapted layers, are refused.
    let layers = dir.path().join("first-layer.safetensors");
    let first = Opened::open(p0).unwrap().meta.origin.layers[0].name.clone();
    let args = data_args("digits/model.onnx");
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(cmd(&[&["gradient", "--layers", &first, "--out", &s(&layers)], &a[..]].concat()).output().unwrap());
    for (g, why) in [(p0, "holds shard(s) [0] of 3 only"), (layers.as_path(), "no gradient for weight")] {
        let o = cmd(&[&["unlearn", "--out", &s(&dir.path().join("x.onnx")), "--gradient", &s(g)], &a[..]].concat())
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(text(&o).contains(why) && text(&o).contains(&s(g)), "{why}: {}", text(&o));
    }
}

#[test]
fn layer_groups_give_the_gradient_of_one_pass_in_several() {
    // --gradient-groups 3: three passes, each for a third of the layers, decomposed and freed in
    // turn. Each layer's gradient is the one a single pass computes, so the same k everywhere
    // and the same export; the report names the setting.
    let dir = tempfile::tempdir().unwrap();
    let (one, three) = (dir.path().join("one.onnx"), dir.path().join("three.onnx"));
    let r1 = unlearn(&one, &[]);
    let r3 = unlearn(&three, &["--gradient-groups", "3"]);
    let ks = |r: &serde_json::Value| -> Vec<(String, u64)> {
        r["layers"].as_array().unwrap().iter().map(|l| (l["name"].to_string(), l["k"].as_u64().unwrap())).collect()
    };
    assert!(ks(&r1).len() >= 3, "the fixture has a layer per group: {:?}", ks(&r1));
    assert_eq!(ks(&r1), ks(&r3));
    assert_eq!(r3["settings"]["gradient_groups"], 3);
    let d = max_abs_diff(&one, &three);
    eprintln!("export with 3 layer groups vs 1: max abs diff {d:.1e}");
    assert!(d <= 1e-6, "exports differ by {d:e}");
    let o = cmd(&["unlearn", "--model", &fx("digits/model.onnx"), "--forget", &fx("digits/forget_class3.npz")])
        .args(["--gradient-groups", "0", "--no-verify", "--out", &s(&dir.path().join("zero.onnx"))])
        .output()
        .unwrap();
    assert!(!o.status.success() && text(&o).contains("--gradient-groups must be at least 1"), "{}", text(&o));
}

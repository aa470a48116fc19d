//! safetensors weights bound to the digits graph: exact, state-dict and name-map names; one error
//! listing every problem; --allow-partial; float conversions both ways; shards and an index;
//! skeleton models; `semu run/inspect --weights` end to end.
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use semu::onnx::{DType, OnnxModel, TensorData};
use semu::weights::{bind, BindReport, MatchKind, WeightsOptions};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(p)
}

fn digits() -> OnnxModel {
    OnnxModel::load(fx("digits/model.onnx")).unwrap()
}

/// Every initializer of `m`, decoded, by name.
fn values(m: &OnnxModel) -> BTreeMap<String, TensorData> {
    m.graph().initializer.iter().map(|t| (t.name().to_string(), m.tensor(t).unwrap())).collect()
}

fn st_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F16 => Dtype::F16,
        DType::I64 => Dtype::I64,
        d => panic!("{d}"),
    }
}

/// Writes `tensors` (key → data) as a safetensors file with the crate itself.
fn write_st(path: &Path, tensors: &[(String, TensorData)], meta: &[(&str, &str)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(k, d)| {
            let shape = d.dims.iter().map(|&x| x as usize).collect();
            (k.clone(), TensorView::new(st_dtype(d.dtype), shape, &d.bytes).unwrap())
        })
        .collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize_to_file(views, &Some(meta), path).unwrap();
}

fn scaled(d: &TensorData, s: f32) -> TensorData {
    let v: Vec<f32> = d.to_f32_vec().unwrap().iter().map(|x| x * s).collect();
    d.with_f32_values(&v).unwrap()
}

fn to_f16(d: &TensorData) -> TensorData {
    let bytes = d.to_f32_vec().unwrap().iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
    TensorData { dtype: DType::F16, dims: d.dims.clone(), bytes }
}

/// State-dict keys of the digits CNN: its convs were exported as `onnx::Conv_*` (BatchNorm folded).
const CONV_KEYS: [(&str, &str); 6] = [
    ("onnx::Conv_41", "features.0.weight"),
    ("onnx::Conv_42", "features.0.bias"),
    ("onnx::Conv_44", "features.3.weight"),
    ("onnx::Conv_45", "features.3.bias"),
    ("onnx::Conv_47", "features.7.weight"),
    ("onnx::Conv_48", "features.7.bias"),
];

/// The digits weights under state-dict names (classifier ones with a `model.` prefix) and the
/// name map for the convs.
fn state_dict_checkpoint(dir: &Path, f: impl Fn(&str, &TensorData) -> TensorData) -> (PathBuf, PathBuf) {
    let v = values(&digits());
    let conv: HashMap<&str, &str> = CONV_KEYS.into_iter().collect();
    let tensors: Vec<(String, TensorData)> = v
        .iter()
        .map(|(n, d)| (conv.get(n.as_str()).map_or_else(|| format!("model.{n}"), |k| k.to_string()), f(n, d)))
        .collect();
    let (st, map) = (dir.join("ckpt.safetensors"), dir.join("map.json"));
    write_st(&st, &tensors, &[("format", "pt")]);
    std::fs::write(&map, serde_json::to_string(&conv).unwrap()).unwrap();
    (st, map)
}

fn opts(files: &[&Path], map: Option<&Path>, allow_partial: bool) -> WeightsOptions {
    WeightsOptions {
        files: files.iter().map(|p| p.to_path_buf()).collect(),
        name_map: map.map(Path::to_path_buf),
        allow_partial,
    }
}

fn by(r: &BindReport, k: MatchKind) -> usize {
    r.bound.iter().filter(|b| b.by == k).count()
}

#[test]
fn exact_names_replace_every_initializer() {
    let dir = tempfile::tempdir().unwrap();
    let orig = values(&digits());
    let halves: Vec<(String, TensorData)> = orig.iter().map(|(n, d)| (n.clone(), scaled(d, 0.5))).collect();
    let st = dir.path().join("w.safetensors");
    write_st(&st, &halves, &[]);
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&st], None, false)).unwrap();
    assert_eq!((r.bound.len(), by(&r, MatchKind::Exact), r.constants_kept), (10, 10, 0));
    assert!(r.conversions().is_empty() && r.warnings().is_empty());
    let now = values(&m);
    for (n, d) in &halves {
        assert!(&now[n] == d, "{n} holds the file's values");
    }
    // Inline in the model now: it saves and reloads with the new values.
    let saved = m.save(&dir.path().join("m.onnx"), &HashMap::new()).unwrap();
    let reloaded = values(&OnnxModel::load(&saved.model).unwrap());
    assert!(halves.iter().all(|(n, d)| &reloaded[n] == d));
}

#[test]
fn state_dict_names_with_a_prefix_and_a_name_map() {
    let dir = tempfile::tempdir().unwrap();
    let (st, map) = state_dict_checkpoint(dir.path(), |_, d| d.clone());
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&st], Some(&map), false)).unwrap();
    assert_eq!((by(&r, MatchKind::StateDict), by(&r, MatchKind::NameMap)), (4, 6));
    let b = r.bound.iter().find(|b| b.initializer == "classifier.1.weight").unwrap();
    assert_eq!(b.key, "model.classifier.1.weight");
    assert_eq!(r.metadata.get("format").map(String::as_str), Some("pt"));
    assert!(values(&m) == values(&digits()), "values differ");

    // torch.export-style initializer names (`p_` + dots made underscores) find the same key.
    let mut m = digits();
    let g = m.proto.graph.as_mut().unwrap();
    g.initializer.iter_mut().find(|t| t.name() == "classifier.3.bias").unwrap().name =
        Some("p_classifier_3_bias".into());
    for n in g.node.iter_mut() {
        for i in n.input.iter_mut().filter(|i| *i == "classifier.3.bias") {
            *i = "p_classifier_3_bias".into();
        }
    }
    let r = bind(&mut m, &opts(&[&st], Some(&map), false)).unwrap();
    let b = r.bound.iter().find(|b| b.initializer == "p_classifier_3_bias").unwrap();
    assert_eq!((b.key.as_str(), b.by), ("model.classifier.3.bias", MatchKind::StateDict));
}

#[test]
fn every_problem_is_listed_in_one_error_and_nothing_is_changed() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(&digits());
    let mut bad_shape = v["classifier.1.weight"].clone();
    bad_shape.dims = vec![64, 1000];
    bad_shape.bytes.truncate(64 * 1000 * 4);
    let int_bias = TensorData { dtype: DType::I64, dims: vec![64], bytes: vec![0; 64 * 8] };
    let tensors = vec![
        ("classifier.1.weight".to_string(), bad_shape),
        ("classifier.1.bias".to_string(), int_bias),
        ("classifier.3.weight".to_string(), v["classifier.3.weight"].clone()),
        ("classifier.3.bias".to_string(), v["classifier.3.bias"].clone()),
        ("features.0.weight".to_string(), v["onnx::Conv_41"].clone()),
        ("features.1.running_mean".to_string(), v["onnx::Conv_42"].clone()),
    ];
    let st = dir.path().join("w.safetensors");
    write_st(&st, &tensors, &[]);
    let map = dir.path().join("map.json");
    std::fs::write(&map, r#"{"ghost": "classifier.3.weight"}"#).unwrap();
    let mut m = digits();
    let e = bind(&mut m, &opts(&[&st], Some(&map), false)).unwrap_err().to_string();
    for want in [
        "\"ghost\": the model has no initializer",
        "shape mismatch (1)",
        "classifier.1.weight ← classifier.1.weight: [64, 1000]",
        "the graph needs [64, 1024]",
        "type mismatch",
        "classifier.1.bias ← classifier.1.bias: i64",
        "missing: float initializers the weights do not cover (6)",
        "onnx::Conv_41 f32 [16, 1, 3, 3] (used by /features/features.0/Conv; the weights have `features.0.weight`",
        "onnx::Conv_48",
        "unused: tensors in the weights that match no initializer (2)",
        "features.1.running_mean f32 [16]",
        "--allow-partial",
        "--name-map",
    ] {
        assert!(e.contains(want), "missing «{want}» in:\n{e}");
    }
    assert!(values(&m) == values(&digits()), "a failed bind leaves the model as it was");

    // --allow-partial forgives missing/unused tensors, never mismatches.
    let e = bind(&mut m, &opts(&[&st], None, true)).unwrap_err().to_string();
    assert!(e.contains("shape mismatch") && !e.contains("missing:") && !e.contains("unused:"), "{e}");
}

#[test]
fn allow_partial_keeps_the_models_own_values_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(&digits());
    let mut tensors: Vec<(String, TensorData)> =
        v.iter().filter(|(n, _)| n.starts_with("classifier")).map(|(n, d)| (n.clone(), scaled(d, 2.0))).collect();
    tensors.push(("num_batches_tracked".into(), TensorData { dtype: DType::I64, dims: vec![], bytes: vec![0; 8] }));
    let st = dir.path().join("w.safetensors");
    write_st(&st, &tensors, &[]);
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&st], None, true)).unwrap();
    assert_eq!(r.bound.len(), 4);
    let missing: Vec<&str> = CONV_KEYS.iter().map(|(n, _)| *n).collect();
    assert_eq!(r.missing, missing);
    assert_eq!(r.unused, vec!["num_batches_tracked".to_string()]);
    let w = r.warnings().join("\n");
    assert!(w.contains("6 initializer(s) not in the weights") && w.contains("num_batches_tracked"), "{w}");
    let now = values(&m);
    assert!(now["onnx::Conv_41"] == v["onnx::Conv_41"], "missing ones keep the model's values");
    assert!(now["classifier.3.bias"] == scaled(&v["classifier.3.bias"], 2.0), "values differ");
}

#[test]
fn float_types_convert_both_ways_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(&digits());
    // f16 in the file, f32 in the graph.
    let halfs: Vec<(String, TensorData)> = v.iter().map(|(n, d)| (n.clone(), to_f16(d))).collect();
    let st = dir.path().join("h.safetensors");
    write_st(&st, &halfs, &[]);
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&st], None, false)).unwrap();
    let c = r.conversions();
    assert_eq!(c.len(), 10);
    assert!(c.contains(&"classifier.1.weight: f16 in the weights → f32 in the graph".to_string()), "{c:?}");
    let got = &values(&m)["classifier.1.weight"];
    assert_eq!(got.dtype, DType::F32);
    let want = to_f16(&v["classifier.1.weight"]).to_f32_vec().unwrap();
    assert!(got.to_f32_vec().unwrap() == want, "f16 → f32 is exact");

    // f32 in the file, f16 in the graph (digits_f16 stores `<name>_f16` initializers).
    let mut m = OnnxModel::load(fx("digits_f16/model.onnx")).unwrap();
    let f32s: Vec<(String, TensorData)> = v.iter().map(|(n, d)| (format!("{n}_f16"), d.clone())).collect();
    let st = dir.path().join("f.safetensors");
    write_st(&st, &f32s, &[]);
    let r = bind(&mut m, &opts(&[&st], None, false)).unwrap();
    assert!(r.conversions().iter().all(|c| c.ends_with("f32 in the weights → f16 in the graph")));
    let got = &values(&m)["classifier.1.weight_f16"];
    assert!(got.dtype == DType::F16 && got.bytes == to_f16(&v["classifier.1.weight"]).bytes);
}

#[test]
fn shards_and_an_index_make_one_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let v: Vec<(String, TensorData)> = values(&digits()).into_iter().collect();
    let (a, b) = v.split_at(5);
    write_st(&dir.path().join("m-00001.safetensors"), a, &[]);
    write_st(&dir.path().join("m-00002.safetensors"), b, &[]);
    let weight_map: BTreeMap<&str, String> = v
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), format!("m-0000{}.safetensors", 1 + usize::from(i >= 5))))
        .collect();
    let index = dir.path().join("m.safetensors.index.json");
    std::fs::write(&index, serde_json::json!({"metadata": {}, "weight_map": weight_map}).to_string()).unwrap();
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&index], None, false)).unwrap();
    assert_eq!((r.bound.len(), r.files.len()), (10, 2));
    // The shards given one by one work too; a key in two files does not.
    let shard = |i: u8| dir.path().join(format!("m-0000{i}.safetensors"));
    assert_eq!(bind(&mut digits(), &opts(&[&shard(1), &shard(2)], None, false)).unwrap().bound.len(), 10);
    write_st(&dir.path().join("dup.safetensors"), &a[..1], &[]);
    let e = bind(&mut digits(), &opts(&[&shard(1), &shard(2), &dir.path().join("dup.safetensors")], None, false))
        .unwrap_err()
        .to_string();
    assert!(e.contains(&format!("tensor `{}` is also in", a[0].0)) && e.contains("m-00001.safetensors"), "{e}");
}

/// The digits model with every initializer's data stripped, as a weights-free export.
fn skeleton(path: &Path) {
    let mut m = digits();
    for t in m.proto.graph.as_mut().unwrap().initializer.iter_mut() {
        t.raw_data = None;
    }
    std::fs::write(path, prost::Message::encode_to_vec(&m.proto)).unwrap();
}

#[test]
fn skeleton_models_need_every_weight_even_with_allow_partial() {
    let dir = tempfile::tempdir().unwrap();
    let skel = dir.path().join("skel.onnx");
    skeleton(&skel);
    let (st, map) = state_dict_checkpoint(dir.path(), |_, d| d.clone());
    let mut m = OnnxModel::load(&skel).unwrap();
    bind(&mut m, &opts(&[&st], Some(&map), false)).unwrap();
    assert!(values(&m) == values(&digits()), "values differ");
    let mut m = OnnxModel::load(&skel).unwrap();
    let e = bind(&mut m, &opts(&[&st], None, true)).unwrap_err().to_string();
    assert!(e.contains("initializers with no data, neither in the model nor in the weights (6)"), "{e}");
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn cli_run_and_inspect_on_a_skeleton_with_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    skeleton(&dir.path().join("skel.onnx"));
    let (st, map) = state_dict_checkpoint(dir.path(), |_, d| d.clone());
    let (st, map) = (st.display().to_string(), map.display().to_string());
    let x = tch::Tensor::read_npz(fx("digits/test.npz")).unwrap().into_iter().find(|(n, _)| n == "x").unwrap().1;
    x.narrow(0, 0, 16).write_npy(d("x.npy")).unwrap();
    let input = format!("input={}", d("x.npy"));
    let run = |model: &str, out: &str, extra: &[&str]| {
        let mut args = vec!["run", model, "--input", &input, "--output-dir", out, "--device", "cpu"];
        args.extend(extra);
        let o = semu(&args);
        assert!(o.status.success(), "{}", text(&o));
        tch::Tensor::read_npy(Path::new(out).join("logits.npy")).unwrap()
    };
    let bound = ["--weights", &st, "--name-map", &map, "--compare-ort"];
    let ours = run(&d("skel.onnx"), &d("ours"), &bound);
    let reference = run(&fx("digits/model.onnx").display().to_string(), &d("ref"), &[]);
    assert_eq!(ours, reference, "skeleton + weights = the original model (and onnxruntime agrees)");

    let o = semu(&["inspect", &d("skel.onnx"), "--weights", &st, "--name-map", &map, "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["weights"]["bound"].as_array().unwrap().len(), 10);
    let o = semu(&["inspect", &d("skel.onnx"), "--weights", &st]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("onnx::Conv_41") && text(&o).contains("--name-map"), "{}", text(&o));
}

/// Key → (type, shape), and the `__metadata__`.
type Header = (BTreeMap<String, (Dtype, Vec<usize>)>, BTreeMap<String, String>);

/// Keys, types and `__metadata__` of a safetensors file.
fn header(p: &Path) -> Header {
    let bytes = std::fs::read(p).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let keys = meta.tensors().into_iter().map(|(k, i)| (k, (i.dtype, i.shape.clone()))).collect();
    (keys, meta.metadata().clone().unwrap_or_default().into_iter().collect())
}

fn st_bytes(p: &Path, key: &str) -> Vec<u8> {
    let bytes = std::fs::read(p).unwrap();
    SafeTensors::deserialize(&bytes).unwrap().tensor(key).unwrap().data().to_vec()
}

#[test]
fn out_weights_keep_keys_types_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let d = |p: &str| dir.path().join(p).display().to_string();
    skeleton(&dir.path().join("skel.onnx"));
    // Classifier weights stored as f16, plus an unused buffer kept with --allow-partial.
    let (st, map) =
        state_dict_checkpoint(dir.path(), |n, d| if n.starts_with("classifier") { to_f16(d) } else { d.clone() });
    let (st, map) = (st.display().to_string(), map.display().to_string());
    let forget = fx("digits/forget_class3.npz").display().to_string();
    let common = ["--forget", &forget, "--epochs", "1", "--lr", "0.001", "--gamma", "0.6", "--device", "cpu"];
    let (skel, out, ow, rep) = (d("skel.onnx"), d("o.onnx"), d("w.safetensors"), d("r.json"));
    let mut args = vec!["unlearn", "--model", &skel, "--weights", &st, "--name-map", &map];
    args.extend(common);
    args.extend(["--out", &out, "--out-weights", &ow, "--report", &rep]);
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    let (keys_in, meta_in) = header(Path::new(&st));
    let (keys_out, meta_out) = header(Path::new(&ow));
    assert_eq!(keys_out, keys_in, "same keys, types and shapes");
    assert_eq!(meta_out["format"], meta_in["format"]);
    for k in ["semu.version", "semu.git_commit", "semu.method", "semu.model_sha256", "semu.forget_sha256"] {
        assert!(meta_out.contains_key(k), "{k} in {meta_out:?}");
    }
    // Changed weights: the exported values in the stored type; untouched ones: the input's bytes.
    let exported = values(&OnnxModel::load(&out).unwrap());
    assert!(st_bytes(Path::new(&ow), "features.0.weight") == exported["onnx::Conv_41"].bytes, "values differ");
    assert!(
        st_bytes(Path::new(&ow), "model.classifier.1.weight") == to_f16(&exported["classifier.1.weight"]).bytes,
        "values differ"
    );
    assert!(st_bytes(Path::new(&ow), "features.0.weight") != st_bytes(Path::new(&st), "features.0.weight"));
    assert!(
        st_bytes(Path::new(&ow), "features.0.bias") == st_bytes(Path::new(&st), "features.0.bias"),
        "values differ"
    );
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["weights"]["bound"].as_array().unwrap().len(), 10);
    let conv = r["weights"]["bound"].as_array().unwrap().iter().filter(|b| b["stored"] != b["graph"]).count();
    assert_eq!(conv, 4, "the f16 → f32 conversions are in the report");
    assert_eq!(r["sha256"]["weights"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(r["sha256"]["out_weights"], r["sha256"]["outputs"][1]["sha256"]);

    // From an ONNX model alone, and without --out: keys are the initializer names.
    let ow2 = d("w2.safetensors");
    let mut args = vec!["unlearn", "--model"];
    let model = fx("digits/model.onnx").display().to_string();
    args.push(&model);
    args.extend(common);
    args.extend(["--out-weights", &ow2]);
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    let (keys, _) = header(Path::new(&ow2));
    assert_eq!(keys.keys().cloned().collect::<Vec<_>>(), values(&digits()).keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys["onnx::Conv_41"], (Dtype::F32, vec![16, 1, 3, 3]));
}

#[test]
fn out_weights_keep_changes_to_weights_the_checkpoint_lacked() {
    let dir = tempfile::tempdir().unwrap();
    let v = values(&digits());
    let classifier: Vec<(String, TensorData)> =
        v.iter().filter(|(n, _)| n.starts_with("classifier")).map(|(n, d)| (format!("model.{n}"), to_f16(d))).collect();
    let st = dir.path().join("w.safetensors");
    write_st(&st, &classifier, &[("format", "pt")]);
    let mut m = digits();
    let r = bind(&mut m, &opts(&[&st], None, true)).unwrap();
    let changed = HashMap::from([
        ("classifier.3.bias".to_string(), scaled(&v["classifier.3.bias"], 3.0)),
        ("onnx::Conv_42".to_string(), scaled(&v["onnx::Conv_42"], 3.0)),
    ]);
    let prov = BTreeMap::from([("semu.method".to_string(), "test".to_string())]);
    let out = dir.path().join("out.safetensors");
    let w = semu::weights::write_weights(&out, &m, Some(&r), &changed, &prov).unwrap();
    assert_eq!((w.tensors, w.changed, w.added.clone()), (5, 2, vec!["onnx::Conv_42".to_string()]));
    let (keys, meta) = header(&out);
    assert_eq!(keys["model.classifier.3.bias"].0, Dtype::F16, "the stored type is kept");
    assert_eq!(keys["onnx::Conv_42"].0, Dtype::F32);
    assert_eq!((meta["format"].as_str(), meta["semu.method"].as_str()), ("pt", "test"));
    assert!(st_bytes(&out, "model.classifier.3.bias") == to_f16(&changed["classifier.3.bias"]).bytes);
    assert!(st_bytes(&out, "model.classifier.1.weight") == st_bytes(&st, "model.classifier.1.weight"));
    assert!(st_bytes(&out, "onnx::Conv_42") == changed["onnx::Conv_42"].bytes);
}

//! The task layer: image classifiers unchanged to the byte, text classifiers with several int64
//! inputs, fixed-shape exports, causal language models, and the errors a user meets first.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fx(p: &str) -> String {
    root().join("fixtures").join(p).display().to_string()
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn sha256(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(p).unwrap();
    Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The image-classifier runs whose exports were hashed with the binary built just before the
/// task layer (commit b08015b, this machine): name, then the arguments after `--out`. SEMU's
/// runs name `--objective rl`, the paper's recipe, which was the default then.
fn image_runs() -> Vec<(&'static str, Vec<String>)> {
    let d = |f: &str| fx(&format!("digits/{f}"));
    let common = ["--seed", "0", "--device", "cpu", "--no-verify", "-q"];
    let mut runs = vec![
        (
            "semu",
            vec![
                "--objective".into(),
                "rl".into(),
                "--forget".into(),
                d("forget_class3.npz"),
                "--lr".into(),
                "1e-3".into(),
                "--gamma".into(),
                "0.6".into(),
                "--epochs".into(),
                "3".into(),
            ],
        ),
        (
            "semu_retain",
            vec![
                "--objective".into(),
                "rl".into(),
                "--forget".into(),
                d("forget_class3.npz"),
                "--retain".into(),
                d("retain_class3.npz"),
                "--lr".into(),
                "5e-4".into(),
                "--gamma".into(),
                "0.6".into(),
                "--epochs".into(),
                "2".into(),
            ],
        ),
        (
            "rl",
            vec![
                "--method".into(),
                "rl".into(),
                "--forget".into(),
                d("forget_random10.npz"),
                "--retain".into(),
                d("retain_random10.npz"),
                "--lr".into(),
                "1e-3".into(),
                "--epochs".into(),
                "2".into(),
            ],
        ),
        (
            "ga",
            vec![
                "--method".into(),
                "ga".into(),
                "--forget".into(),
                d("forget_class3.npz"),
                "--lr".into(),
                "1e-4".into(),
                "--epochs".into(),
                "1".into(),
            ],
        ),
    ];
    for (_, r) in &mut runs {
        r.extend(common.iter().map(|s| s.to_string()));
    }
    runs
}

#[test]
fn image_classifiers_give_the_same_bytes_as_before_the_task_layer() {
    // The pre-task-layer code's bytes, one set per CPU it was run on (libtorch's float kernels
    // differ between CPUs; each set was made by that code on its machine). The third set (an AMD
    // EPYC with AVX-512 bf16) was made by the code at dd22601, which gave the first two sets'
    // bytes on their CPUs.
    let mut want: HashMap<String, Vec<String>> = HashMap::new();
    for l in std::fs::read_to_string(root().join("tests/tasks_data/pre_task_layer.sha256")).unwrap().lines() {
        if let Some((h, n)) = l.split_once("  ") {
            want.entry(n.to_string()).or_default().push(h.to_string());
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in image_runs() {
        let out = dir.path().join(format!("{name}.onnx"));
        let mut all = vec![
            "unlearn".to_string(),
            "--model".into(),
            fx("digits/model.onnx"),
            "--out".into(),
            out.display().to_string(),
        ];
        all.extend(args);
        let o = semu(&all.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(o.status.success(), "{name}: {}", text(&o));
        let got = sha256(&out);
        let known = &want[&format!("{name}.onnx")];
        assert!(known.contains(&got), "{name}: the export's bytes changed: {got} is none of {known:?}");
    }
}

#[test]
fn two_nc_outputs_without_output_name_is_an_error_naming_both() {
    use semu::onnx::{build, DType, OnnxModel};
    let mut m = OnnxModel::load(fx("digits/model.onnx")).unwrap();
    let g = m.proto.graph.as_mut().unwrap();
    let first = g.output[0].name().to_string();
    g.node.push(build::node("Identity", &[&first], &["scores_copy"]));
    g.output.push(build::value("scores_copy", DType::F32, &[-1, 10]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two.onnx");
    m.save(&path, &HashMap::new()).unwrap();
    let out = dir.path().join("out.onnx");
    let args = ["unlearn", "--model", path.to_str().unwrap(), "--forget", &fx("digits/forget_class3.npz")];
    let o = semu(&[&args[..], &["--out", out.to_str().unwrap(), "--epochs", "1"]].concat());
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains(&first) && t.contains("scores_copy") && t.contains("--output-name"), "{t}");
    assert!(!out.exists());
    // Naming one of them works.
    let o =
        semu(&[&args[..], &["--out", out.to_str().unwrap(), "--epochs", "1", "--output-name", "scores_copy"]].concat());
    assert!(o.status.success(), "{}", text(&o));
}

fn report(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Runs `semu unlearn` with `args` plus an output and a report; returns (output, report).
fn unlearn(dir: &Path, args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let (out, rep) = (dir.join("out.onnx"), dir.join("report.json"));
    let mut all = vec!["unlearn", "--out", out.to_str().unwrap(), "--report", rep.to_str().unwrap()];
    all.extend_from_slice(args);
    let o = semu(&all);
    let r = rep.exists().then(|| report(&rep));
    (o, r)
}

#[test]
fn a_three_input_bert_export_unlearns_and_passes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (model, train, test) = (fx("text_cls/model.onnx"), fx("text_cls/train.jsonl"), fx("text_cls/test.jsonl"));
    let args = ["--model", &model, "--train", &train, "--forget-class", "4", "--test", &test, "--epochs", "2"];
    let (o, r) = unlearn(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("task: classify ("), "{}", text(&o));
    let r = r.unwrap();
    assert_eq!(r["task"], "classify");
    assert_eq!(r["verified"], true);
    let rows = r["verification"]["rows"].as_array().unwrap();
    assert!(rows.iter().any(|x| x["runtime"] == "onnxruntime") && rows.iter().any(|x| x["runtime"] == "tract"));
    assert!(!r["layers"].as_array().unwrap().is_empty());
    let want = std::fs::read_to_string(&train).unwrap().lines().filter(|l| l.contains("\"label\": 4")).count();
    assert_eq!(r["forget_selection"]["count"].as_u64().unwrap() as usize, want);
}

#[test]
fn a_fixed_batch_export_runs_at_its_declared_batch() {
    // model_fixed.onnx declares input_ids 4×48: batches of 7 are split and padded to 4 rows,
    // texts padded to 48 tokens; the gate feeds onnxruntime exactly 4 rows.
    let dir = tempfile::tempdir().unwrap();
    let (model, train) = (fx("text_cls/model_fixed.onnx"), fx("text_cls/train.jsonl"));
    let args = ["--model", &model, "--train", &train, "--forget-class", "4", "--epochs", "1", "--batch-size", "7"];
    let (o, r) = unlearn(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(r.unwrap()["verified"], true);
}

/// The LM fixture's texts, tokenized with its tokenizer.json (no labels: a language model's
/// targets are its inputs).
fn lm_texts(file: &str) -> Box<dyn semu::data::Dataset> {
    let mut spec = semu::data::DataSpec::default();
    spec.text.tokenizer = Some(PathBuf::from(fx("text_lm/tokenizer.json")));
    spec.text.labels_required = false;
    semu::data::open_with(Path::new(&fx(&format!("text_lm/{file}"))), &spec).unwrap()
}

#[test]
fn causal_lm_loss_equals_pytorchs() {
    use semu::task::{Model, Targets, TaskKind};
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx("text_lm/loss_ref.json")).unwrap()).unwrap();
    let m = semu::onnx::OnnxModel::load(fx("text_lm/model.onnx")).unwrap();
    let net = Model::new(&m, tch::Device::Cpu, Default::default(), &Default::default()).unwrap();
    assert_eq!(net.task, TaskKind::CausalLm, "inferred from int64 input_ids and B×T×V logits");
    let ds = lm_texts("forget.jsonl");
    let n = want["texts_count"].as_u64().unwrap() as usize;
    let b = ds.records(&(0..n).collect::<Vec<_>>()).unwrap();
    let _g = tch::no_grad_guard();
    let out = net.forward(&b, &HashMap::new()).unwrap();
    let loss = net.loss(&out, &b, &Targets::True).unwrap().double_value(&[]);
    let reference = want["loss"].as_f64().unwrap();
    assert!((loss - reference).abs() < 1e-4 * reference, "engine {loss} vs PyTorch {reference}");
    // Per text: −log-likelihood / tokens.
    let ll = Vec::<f32>::try_from(net.log_likelihood(&out, &b).unwrap()).unwrap();
    let mask = Vec::<i64>::try_from(net.mask(&b).unwrap().narrow(1, 1, out.size()[1] - 1).sum_dim_intlist(
        1,
        false,
        tch::Kind::Int64,
    ))
    .unwrap();
    for (i, w) in want["per_text_loss"].as_array().unwrap().iter().enumerate() {
        let got = -(ll[i] as f64) / mask[i] as f64;
        assert!((got - w.as_f64().unwrap()).abs() < 1e-4, "text {i}: {got} vs {w}");
    }
}

#[test]
fn a_causal_lm_unlearns_with_its_task_printed_and_passes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (model, forget, holdout) = (fx("text_lm/model.onnx"), fx("text_lm/forget.jsonl"), fx("text_lm/holdout.jsonl"));
    let args = ["--model", &model, "--forget", &forget, "--test", &holdout, "--epochs", "1", "--batch-size", "16"];
    let (o, r) = unlearn(dir.path(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("task: causal-lm (integer input 'input_ids'"), "{}", text(&o));
    let r = r.unwrap();
    assert_eq!((r["task"].as_str(), r["verified"].as_bool()), (Some("causal-lm"), Some(true)));
    let lm = &r["language_model"];
    for when in ["before", "after"] {
        assert!(lm[when]["forget"]["perplexity"].as_f64().unwrap() > 1.0);
        assert!(lm[when]["min_k_auc"].as_f64().is_some());
    }
    assert_eq!(r["classes"], 1500, "a language model's width is its vocabulary");
    // A causal LM's defaults: ranks from a 1.5% budget, redistribute; --epochs replaces its steps.
    let s = &r["settings"];
    assert_eq!((s["max_trained"].as_f64(), s["objective"].as_str()), (Some(1.5), Some("redistribute")));
    assert!(s["iterations"].is_null(), "--epochs 1 given: {}", s["iterations"]);
    let share = r["trainable_share"].as_f64().unwrap();
    assert!(share <= 0.015 && share > 0.014 && r["gamma_chosen"].as_f64().is_some(), "share {share}");
}

#[test]
fn verify_feeds_a_fixed_batch_graph_its_declared_batch() {
    let (m, data) = (fx("text_cls/model_fixed.onnx"), fx("text_cls/test.jsonl"));
    let o = semu(&["verify", &m, &m, "--data", &data]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("4 samples of"), "{}", text(&o));
}

#[test]
fn max_trained_picks_the_largest_gamma_within_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (model, forget) = (fx("text_lm/model.onnx"), fx("text_lm/forget.jsonl"));
    let base = ["--model", &model, "--forget", &forget, "--epochs", "1", "--no-verify"];
    let (o, r) = unlearn(dir.path(), &[&base[..], &["--max-trained", "1%"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let r = r.unwrap();
    let (share, gamma) = (r["trainable_share"].as_f64().unwrap(), r["gamma_chosen"].as_f64().unwrap());
    assert!(share <= 0.01 && share > 0.009, "share {share} at γ {gamma}");
    assert!(text(&o).contains("the largest whose adapters train ≤ 1% (--max-trained)"), "{}", text(&o));
    // A hair more γ takes a layer past the budget: the choice is the largest that fits.
    let more = format!("{}", gamma + 1e-5);
    let (o, r) = unlearn(dir.path(), &[&base[..], &["--gamma", &more]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let r = r.unwrap();
    assert!(r["trainable_share"].as_f64().unwrap() > 0.01, "γ {more}: {}", r["trainable_share"]);
    assert!(r.get("gamma_chosen").is_none(), "an explicit γ replaces the budget");
    // Both at once, or a budget too small for rank 1 per layer, is a clear error and no file.
    let (o, _) = unlearn(dir.path(), &[&base[..], &["--max-trained", "1", "--gamma", "0.8"]].concat());
    assert!(!o.status.success() && text(&o).contains("give --max-trained or --gamma"), "{}", text(&o));
    let fresh = tempfile::tempdir().unwrap();
    let (o, _) = unlearn(fresh.path(), &[&base[..], &["--max-trained", "0.001"]].concat());
    assert!(!o.status.success() && text(&o).contains("rank 1 in each of the 9 adapted layers"), "{}", text(&o));
    assert!(!fresh.path().join("out.onnx").exists());
}

#[test]
fn a_causal_lms_full_model_baselines_keep_their_own_rate() {
    // SEMU's 1e-2 trains a few R entries; a baseline moves every weight and keeps 1e-3.
    let dir = tempfile::tempdir().unwrap();
    let (model, forget) = (fx("text_lm/model.onnx"), fx("text_lm/forget.jsonl"));
    let base = ["--model", &model, "--forget", &forget, "--epochs", "1", "--no-verify"];
    for (extra, want) in
        [(vec!["--method", "ga"], 1e-3), (vec!["--method", "ga", "--lr", "5e-4"], 5e-4), (vec![], 1e-2)]
    {
        let (o, r) = unlearn(dir.path(), &[&base[..], &extra[..]].concat());
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(r.unwrap()["settings"]["lr"].as_f64(), Some(want), "{extra:?}");
    }
}

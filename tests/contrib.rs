//! onnxruntime's com.microsoft contrib ops (what its transformer optimizer emits for BERT, GPT-2,
//! ViT and a diffusers UNet, plus MatMulNBits/QGemm): every one-node case of `fixtures/contrib`
//! (tools/make_contrib_cases.py: fixed-seed inputs and onnxruntime's outputs) run on the engine
//! and compared; finite-difference gradient checks for the differentiable ops; and the text
//! classifier and a tiny ViT as the optimizer rewrites them (EmbedLayerNormalization, Attention,
//! SkipLayerNormalization, BiasGelu) through `semu run --compare-ort` and `semu unlearn`.
mod common;
#[allow(dead_code)]
#[path = "gradients/harness.rs"]
mod harness;

use harness::Case;
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Kind, Tensor};

const MS: &str = "com.microsoft";

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures` (tools/make_contrib_cases.py)", p.display());
    p
}

/// Runs one case; returns (output name, max |engine − reference|, passed) per reference output.
fn run_case(onnx: &Path) -> Result<Vec<(String, f64, bool)>, String> {
    let npz = onnx.with_extension("npz");
    let arrays = semu::data::npy::read_npz(&npz).map_err(|e| e.to_string())?;
    let model = OnnxModel::load(onnx).map_err(|e| e.to_string())?;
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions::default()).map_err(|e| e.to_string())?;
    let feeds: HashMap<String, Tensor> =
        arrays.iter().filter_map(|(k, t)| k.strip_prefix("in.").map(|n| (n.to_string(), t.shallow_clone()))).collect();
    let outs = plan.run(&feeds).map_err(|e| e.to_string())?;
    let names: Vec<&str> = model.graph().output.iter().map(|o| o.name()).collect();
    let mut rows = vec![];
    let source = arrays.iter().find(|(k, _)| k == "source").ok_or("no `source` array")?;
    let source = String::from_utf8(Vec::<u8>::try_from(&source.1).map_err(|e| e.to_string())?).unwrap_or_default();
    for (k, want) in &arrays {
        let Some(name) = k.strip_prefix("out.") else { continue };
        let i = names.iter().position(|n| *n == name).ok_or(format!("no graph output {name}"))?;
        let got = &outs[i];
        if got.size() != want.size() || got.kind() != want.kind() {
            return Err(format!(
                "{name}: engine {:?} {:?}, reference {:?} {:?}",
                got.kind(),
                got.size(),
                want.kind(),
                want.size()
            ));
        }
        let (g, w) = (got.to_kind(Kind::Double), want.to_kind(Kind::Double));
        let diff = (&g - &w).abs();
        let max = if diff.numel() == 0 { 0.0 } else { diff.max().double_value(&[]) };
        // Elementwise: |a − b| ≤ 1e-4·|b| + 1e-5.
        let bound = w.abs() * 1e-4 + 1e-5;
        let ok = diff.numel() == 0 || bool::try_from(diff.le_tensor(&bound).all()).unwrap();
        rows.push((format!("{name} ({source})"), max, ok));
    }
    Ok(rows)
}

#[test]
fn every_contrib_case_matches_onnxruntime() {
    let dir = fx("contrib");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "npz"))
        .map(|p| p.with_extension("onnx"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 35, "only {} cases in {}", cases.len(), dir.display());
    let mut failed = vec![];
    for c in &cases {
        let stem = c.file_stem().unwrap().to_string_lossy().into_owned();
        match run_case(c) {
            Ok(rows) if !rows.is_empty() => {
                for (name, max, ok) in rows {
                    eprintln!("{stem:28} {name:50} max |diff| {max:.3e}");
                    if !ok {
                        failed.push(format!("{stem}/{name}: max |diff| {max:e}"));
                    }
                }
            }
            Ok(_) => failed.push(format!("{stem}: no reference outputs")),
            Err(e) => failed.push(format!("{stem}: {e}")),
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

// ---- gradients (f64, central differences; see gradients/harness.rs) ----

fn check(c: &mut Case) {
    if let Err(e) = c.check_in(&Registry::standard()) {
        panic!("{}\n{e}", c.describe());
    }
}

fn ms(op: &str, seed: u64) -> Case {
    let mut c = Case::new(op, 17, seed);
    c.domain(MS);
    c
}

#[test]
fn gradients_of_the_norms() {
    for seed in 0..3 {
        let mut c = ms("EmbedLayerNormalization", seed);
        let ids = c.g.ints(6, 0, 5);
        let seg = c.g.ints(6, 0, 2);
        c.ints_shaped(&[2, 3], &ids).ints_shaped(&[2, 3], &seg);
        let (w, p, s, g, b) = (c.g.val(&[5, 4]), c.g.val(&[3, 4]), c.g.val(&[2, 4]), c.g.val(&[4]), c.g.val(&[4]));
        c.param(w).param(p).param(s).param(g).param(b).f("epsilon", 1e-5);
        check(&mut c);

        let mut c = ms("SkipLayerNormalization", seed);
        let (x, s, g, b, bias) =
            (c.g.val(&[2, 3, 4]), c.g.val(&[2, 3, 4]), c.g.val(&[4]), c.g.val(&[4]), c.g.val(&[4]));
        c.input(x).input(s).param(g).param(b).param(bias).outputs(1);
        check(&mut c);

        let mut c = ms("SkipSimplifiedLayerNormalization", seed);
        let (x, s, g) = (c.g.val(&[2, 3, 4]), c.g.val(&[2, 3, 4]), c.g.val(&[4]));
        c.input(x).input(s).param(g);
        check(&mut c);

        let mut c = Case::new("SimplifiedLayerNormalization", 17, seed);
        let (x, g) = (c.g.val(&[2, 3, 4]), c.g.val(&[4]));
        c.input(x).param(g).f("epsilon", 1e-6);
        check(&mut c);

        let mut c = ms("GroupNorm", seed);
        let (x, g, b) = (c.g.val(&[2, 2, 3, 4]), c.g.val(&[4]), c.g.val(&[4]));
        c.input(x).param(g).param(b).i("groups", 2).i("activation", 1);
        check(&mut c);
    }
}

#[test]
fn gradients_of_the_activations_and_fused_matmul() {
    for seed in 0..3 {
        for op in ["Gelu", "QuickGelu", "FastGelu"] {
            let mut c = ms(op, seed);
            let x = c.g.val(&[2, 3, 4]);
            c.input(x);
            check(&mut c);
        }
        for op in ["BiasGelu", "FastGelu", "BiasSplitGelu"] {
            let mut c = ms(op, seed);
            let (x, b) = (c.g.val(&[2, 3, 4]), c.g.val(&[4]));
            c.input(x).param(b);
            check(&mut c);
        }
        let mut c = ms("BiasAdd", seed);
        let (x, b, s) = (c.g.val(&[2, 3, 4]), c.g.val(&[4]), c.g.val(&[2, 3, 4]));
        c.input(x).param(b).input(s);
        check(&mut c);

        let mut c = ms("FusedMatMul", seed);
        let (a, b) = (c.g.val(&[3, 2, 4]), c.g.val(&[2, 5, 4]));
        c.input(a).param(b).i("transBatchA", 1).i("transB", 1).f("alpha", 0.7);
        check(&mut c);
    }
}

#[test]
fn gradients_of_the_attentions() {
    for seed in 0..3 {
        // Attention with a 1-D key-length mask, then a causal one with past/present.
        let mut c = ms("Attention", seed);
        let (x, w, b) = (c.g.val(&[2, 3, 4]), c.g.val(&[4, 12]), c.g.val(&[12]));
        c.input(x).param(w).param(b).ints(&[3, 2]).i("num_heads", 2);
        check(&mut c);

        let mut c = ms("Attention", seed);
        let (x, w, b, past) = (c.g.val(&[2, 3, 4]), c.g.val(&[4, 12]), c.g.val(&[12]), c.g.val(&[2, 2, 2, 2, 2]));
        c.input(x).param(w).param(b).absent().param(past).i("num_heads", 2).i("unidirectional", 1).outputs(2);
        check(&mut c);

        let mut c = ms("MultiHeadAttention", seed);
        let (q, k, v, b) = (c.g.val(&[2, 3, 4]), c.g.val(&[2, 2, 4]), c.g.val(&[2, 2, 6]), c.g.val(&[14]));
        c.input(q).input(k).input(v).param(b).ints_shaped(&[2, 2], &[1, 1, 1, 0]).i("num_heads", 2);
        check(&mut c);

        let mut c = ms("RotaryEmbedding", seed);
        let x = c.g.val(&[2, 3, 8]);
        let pos = c.g.ints(6, 0, 5);
        let (cos, sin) = (c.g.val(&[5, 2]), c.g.val(&[5, 2]));
        c.input(x).ints_shaped(&[2, 3], &pos).param(cos).param(sin);
        check(&mut c);
    }
}

#[test]
fn gradients_of_the_unet_fusions() {
    for seed in 0..3 {
        let mut c = ms("NhwcConv", seed);
        let (x, w, b) = (c.g.val(&[2, 4, 3, 2]), c.g.val(&[3, 3, 2, 2]), c.g.val(&[3]));
        c.input(x).param(w).param(b).ints_attr("pads", &[1, 0, 1, 1]).ints_attr("strides", &[2, 1]);
        check(&mut c);

        let mut c = ms("SkipGroupNorm", seed);
        let (x, g, b, skip, bias) =
            (c.g.val(&[2, 3, 2, 4]), c.g.val(&[4]), c.g.val(&[4]), c.g.val(&[2, 1, 1, 4]), c.g.val(&[4]));
        c.input(x).param(g).param(b).input(skip).param(bias).i("groups", 2).i("activation", 1).outputs(2);
        check(&mut c);

        // Packed QKV [B, S, N, 3, H] (self-attention), then a query with packed KV [B, L, N, 2, H].
        let mut c = ms("MultiHeadAttention", seed);
        let qkv = c.g.val(&[2, 3, 2, 3, 2]);
        c.input(qkv).i("num_heads", 2);
        check(&mut c);

        let mut c = ms("MultiHeadAttention", seed);
        let (q, kv) = (c.g.val(&[2, 3, 4]), c.g.val(&[2, 2, 2, 2, 2]));
        c.input(q).input(kv).i("num_heads", 2);
        check(&mut c);
    }
}

#[test]
fn gradients_of_group_query_attention() {
    for seed in 0..3 {
        // A right-padded prompt (row 1 holds 2 tokens) with rotary and softcap, 4 over 2 heads.
        let mut c = ms("GroupQueryAttention", seed);
        let (q, k, v) = (c.g.val(&[2, 3, 16]), c.g.val(&[2, 3, 8]), c.g.val(&[2, 3, 8]));
        let (cos, sin) = (c.g.val(&[6, 2]), c.g.val(&[6, 2]));
        c.input(q).input(k).input(v).absent().absent().ints(&[2, 1]).ints_shaped(&[], &[3]);
        c.param(cos).param(sin).i("num_heads", 4).i("kv_num_heads", 2).i("do_rotary", 1).f("softcap", 2.0);
        check(c.outputs(3));

        // One decoded token, packed QKV, over a past of 3 with a window of 2.
        let mut c = ms("GroupQueryAttention", seed);
        let (qkv, pk, pv) = (c.g.val(&[2, 1, 32]), c.g.val(&[2, 2, 3, 4]), c.g.val(&[2, 2, 3, 4]));
        c.input(qkv).absent().absent().param(pk).param(pv).ints(&[3, 3]).ints_shaped(&[], &[4]);
        c.i("num_heads", 4).i("kv_num_heads", 2).i("local_window_size", 2).outputs(3);
        check(&mut c);
    }
}

// ---- end to end: the optimizer's BERT ----

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).current_dir(std::env::temp_dir()).output().unwrap()
}

fn text(o: &Output) -> String {
    let t = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(!t.contains("frame #"), "a libtorch backtrace reached the output:\n{t}");
    t
}

/// The first `rows` rows of an int64 [N, T] array as an `.npy` file.
fn write_rows(path: &Path, t: &Tensor, rows: i64) {
    let part = t.narrow(0, 0, rows).to_kind(Kind::Int64).contiguous();
    let vals = Vec::<i64>::try_from(part.view([-1])).unwrap();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(path, common::npy("<i8", &format!("({rows}, {})", part.size()[1]), &bytes)).unwrap();
}

#[test]
fn the_optimized_bert_matches_onnxruntime_through_semu_run() {
    let model = fx("contrib/text_cls_opt.onnx");
    let ops = OnnxModel::load(&model).unwrap().graph().node.iter().map(|n| n.op_type().to_string()).collect::<Vec<_>>();
    for op in ["EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu"] {
        assert!(ops.iter().any(|o| o == op), "the optimizer's output lacks {op}: {ops:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let refs = semu::data::npy::read_npz(&fx("text_cls/tokenized_ref.npz")).unwrap();
    let mut args = vec!["run".to_string(), model.display().to_string(), "--compare-ort".into()];
    for name in ["input_ids", "attention_mask", "token_type_ids"] {
        let t = &refs.iter().find(|(k, _)| k == name).unwrap().1;
        let p = dir.path().join(format!("{name}.npy"));
        write_rows(&p, t, 6);
        args.push("--input".into());
        args.push(format!("{name}={}", p.display()));
    }
    args.extend(["--output-dir".into(), dir.path().display().to_string()]);
    let o = semu(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("engine vs onnxruntime") && t.contains(" 0 outside"), "no comparison with onnxruntime: {t}");
    // The padded rows must mask: the mask differs between rows, so a wrong mask shows.
    let mask = &refs.iter().find(|(k, _)| k == "attention_mask").unwrap().1;
    let lens = Vec::<i64>::try_from(mask.narrow(0, 0, 6).sum_dim_intlist(&[1i64][..], false, Kind::Int64)).unwrap();
    assert!(lens.iter().any(|&l| l != lens[0]), "rows of one length do not test the mask: {lens:?}");
    eprintln!("{t}");
}

#[test]
fn the_optimized_gpt2_matches_onnxruntime_through_semu_run() {
    // The GPT-2 rewrite fuses SkipLayerNormalization and FastGelu (its attention stays unfused).
    let model = fx("contrib/text_lm_opt.onnx");
    let ops = OnnxModel::load(&model).unwrap().graph().node.iter().map(|n| n.op_type().to_string()).collect::<Vec<_>>();
    for op in ["SkipLayerNormalization", "FastGelu"] {
        assert!(ops.iter().any(|o| o == op), "the optimizer's output lacks {op}: {ops:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let ids = Tensor::arange_start_step(3, 3 + 2 * 9 * 37, 37, (Kind::Int64, tch::Device::Cpu)).remainder(1500);
    let mask = Tensor::ones([2, 9], (Kind::Int64, tch::Device::Cpu));
    let _ = mask.narrow(1, 6, 3).get(1).fill_(0);
    let (pi, pm) = (dir.path().join("ids.npy"), dir.path().join("mask.npy"));
    write_rows(&pi, &ids.view([2, 9]), 2);
    write_rows(&pm, &mask, 2);
    let o = semu(&[
        "run",
        model.to_str().unwrap(),
        "--compare-ort",
        "--input",
        &format!("input_ids={}", pi.display()),
        "--input",
        &format!("attention_mask={}", pm.display()),
        "--output-dir",
        dir.path().to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("engine vs onnxruntime") && t.contains(" 0 outside"), "no comparison with onnxruntime: {t}");
    eprintln!("{t}");
}

#[test]
fn the_optimized_bert_unlearns_and_passes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.onnx");
    std::fs::copy(fx("contrib/text_cls_opt.onnx"), &model).unwrap();
    for f in ["tokenizer.json", "config.json"] {
        std::fs::copy(fx(&format!("text_cls/{f}")), dir.path().join(f)).unwrap();
    }
    let (out, rep) = (dir.path().join("out.onnx"), dir.path().join("report.json"));
    let train = fx("text_cls/train.jsonl");
    let o = semu(&[
        "unlearn",
        "--model",
        model.to_str().unwrap(),
        "--train",
        train.to_str().unwrap(),
        "--forget-class",
        "4",
        "--epochs",
        "1",
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "{t}");
    let layers = r["layers"].as_array().unwrap();
    let names: Vec<&str> = layers.iter().filter_map(|l| l["name"].as_str()).collect();
    assert!(names.iter().any(|n| n.contains("qkv_weight")), "no packed QKV weight adapted: {names:?}");
}

// ---- end to end: the optimizer's ViT ----

/// The first `rows` images of `fixtures/contrib/vit/test.npz` as an f32 `.npy` file.
fn vit_images(path: &Path, rows: i64) {
    let arrays = semu::data::npy::read_npz(&fx("contrib/vit/test.npz")).unwrap();
    let x = arrays.iter().find(|(k, _)| k == "x").unwrap().1.narrow(0, 0, rows).contiguous();
    let vals = Vec::<f32>::try_from(x.view([-1])).unwrap();
    let bytes: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let shape = format!("({rows}, {})", x.size()[1..].iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "));
    std::fs::write(path, common::npy("<f4", &shape, &bytes)).unwrap();
}

#[test]
fn the_optimized_vit_matches_onnxruntime_through_semu_run() {
    // transformers' ViTForImageClassification through optimize_model(model_type="vit").
    let model = fx("contrib/vit_opt.onnx");
    let m = OnnxModel::load(&model).unwrap();
    let ops = m.graph().node.iter().map(|n| format!("{}:{}", n.domain(), n.op_type())).collect::<Vec<_>>();
    for op in ["Attention", "SkipLayerNormalization", "BiasGelu"] {
        assert!(ops.iter().any(|o| *o == format!("{MS}:{op}")), "the optimizer's output lacks {op}: {ops:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x.npy");
    vit_images(&x, 8);
    let input = format!("pixel_values={}", x.display());
    let o = semu(&[
        "run",
        model.to_str().unwrap(),
        "--compare-ort",
        "--input",
        &input,
        "--output-dir",
        dir.path().to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("engine vs onnxruntime") && t.contains(" 0 outside"), "no comparison with onnxruntime: {t}");
}

#[test]
fn the_optimized_vit_unlearns_and_passes_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (out, rep) = (dir.path().join("out.onnx"), dir.path().join("report.json"));
    let (model, forget, test) = (fx("contrib/vit_opt.onnx"), fx("contrib/vit/forget.npz"), fx("contrib/vit/test.npz"));
    let o = semu(&[
        "unlearn",
        "--model",
        model.to_str().unwrap(),
        "--forget",
        forget.to_str().unwrap(),
        "--test",
        test.to_str().unwrap(),
        "--lr",
        "3e-3",
        "--out",
        out.to_str().unwrap(),
        "--report",
        rep.to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let r: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "{t}");
    let fa = &r["forget_accuracy"];
    assert!(fa["before"].as_f64().unwrap() > 0.9 && fa["after"].as_f64().unwrap() < 0.1, "{fa}");
    let rows = r["verification"]["rows"].as_array().unwrap();
    assert!(rows.iter().any(|x| x["runtime"] == "onnxruntime" && x["passed"] == true), "{rows:?}");
    let names: Vec<&str> = r["layers"].as_array().unwrap().iter().filter_map(|l| l["name"].as_str()).collect();
    assert!(names.iter().filter(|n| n.contains("qkv_weight")).count() == 2, "the packed QKV weights: {names:?}");
    // The export keeps the optimizer's fused ops.
    let ops = |p: &Path| {
        let mut v: Vec<String> =
            OnnxModel::load(p).unwrap().graph().node.iter().map(|n| n.op_type().to_string()).collect();
        v.sort();
        v
    };
    assert_eq!(ops(&model), ops(&out));
}

#[test]
fn bad_attributes_and_inputs_are_errors_naming_the_node() {
    let mut c = ms("Attention", 0);
    let (x, w) = (c.g.val(&[1, 2, 4]), c.g.val(&[4, 12]));
    c.input(x).param(w).i("num_heads", 0);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("'node'") && e.contains("num_heads") && e.contains("must be positive"), "{e}");

    let mut c = ms("Attention", 0);
    let (x, w) = (c.g.val(&[1, 2, 4]), c.g.val(&[4, 12]));
    c.input(x).param(w).absent().ints(&[1, 1, 1]).i("num_heads", 2);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("'node'") && e.contains("mask [3] is not one of"), "{e}");

    let mut c = ms("MatMulNBits", 0);
    let a = c.g.val(&[1, 16]);
    c.input(a).i("K", 16).i("N", 2).i("block_size", 16).i("bits", 3);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("bits") && e.contains("must be 2, 4 or 8"), "{e}");

    let mut c = ms("EmbedLayerNormalization", 0);
    let (w, p, g, b) = (c.g.val(&[5, 4]), c.g.val(&[3, 4]), c.g.val(&[4]), c.g.val(&[4]));
    c.ints_shaped(&[1, 2], &[1, 9]).absent().param(w).param(p).absent().param(g).param(b);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("input_ids must lie in [0, 5)") && !e.contains("frame #"), "{e}");

    // GroupQueryAttention: an input it does not implement is refused by name, never ignored.
    let mut c = ms("GroupQueryAttention", 0);
    let (q, k, v, bias) = (c.g.val(&[1, 2, 8]), c.g.val(&[1, 2, 4]), c.g.val(&[1, 2, 4]), c.g.val(&[1, 1, 2, 2]));
    c.input(q).input(k).input(v).absent().absent().ints(&[1]).ints_shaped(&[], &[2]).absent().absent().absent();
    c.param(bias).i("num_heads", 2).i("kv_num_heads", 1);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("'node'") && e.contains("input 10 (attention_bias) is not supported"), "{e}");

    let mut c = ms("GroupQueryAttention", 0);
    let (q, k, v) = (c.g.val(&[1, 2, 8]), c.g.val(&[1, 2, 4]), c.g.val(&[1, 2, 4]));
    c.input(q).input(k).input(v).absent().absent().ints(&[1]).ints_shaped(&[], &[2]);
    c.i("num_heads", 2).i("kv_num_heads", 1).i("qk_output", 1);
    let e = c.check_in(&Registry::standard()).unwrap_err();
    assert!(e.contains("qk_output") && e.contains("is not supported"), "{e}");
}

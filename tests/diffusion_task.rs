//! The diffusion task on the class-conditional DDPM fixture (tools/make_ddpm.py): q_sample and the
//! guided gradient against PyTorch (tools/ddpm_grad_reference.py), `semu unlearn` end to end
//! (an export that differs only in adapted weights and passes the gate), a fold at R = 0 that
//! samples bit-identically, `t` fed as the graph declares it, and a model without its settings.
use semu::data::npy::read_npz;
use semu::onnx::OnnxModel;
use semu::task::{Model, Spec, TaskKind};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

fn fx(rel: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(rel);
    assert!(p.exists(), "{} is missing: run `make fixtures`", p.display());
    p
}

fn semu(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_semu")).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn diffusion_spec() -> Spec {
    Spec { task: Some(TaskKind::Diffusion), ..Default::default() }
}

#[test]
fn q_sample_and_the_guided_gradient_match_pytorch() {
    let refs: HashMap<String, Tensor> = read_npz(&fx("ddpm/ref/guided.npz")).unwrap().into_iter().collect();
    let model = OnnxModel::load(fx("ddpm/model.onnx")).unwrap();
    let weights: Vec<String> =
        refs.keys().filter_map(|k| k.strip_prefix("grad/")).map(str::to_string).collect::<Vec<_>>();
    assert!(weights.len() >= 5, "the reference holds {} gradients", weights.len());
    let net = Model::new(&model, Device::Cpu, weights.iter().cloned().collect(), &diffusion_spec()).unwrap();
    let d = net.diffusion.as_ref().expect("a diffusion model");
    let (x0, t, e, y) = (&refs["x0"], &refs["t"], &refs["e"], &refs["y"]);
    let x_t = d.q_sample(x0, t, e).unwrap();
    assert!(max_abs(&x_t, &refs["x_t"]) < 1e-5, "q_sample differs by {}", max_abs(&x_t, &refs["x_t"]));

    let b = d.batch(x0, t, e, y.shallow_clone(), y, y.shallow_clone()).unwrap();
    let leaves: Vec<Tensor> =
        weights.iter().map(|n| net.plan.param(n).unwrap().detach().set_requires_grad(true)).collect();
    let over: HashMap<String, Tensor> = weights.iter().cloned().zip(leaves.iter().map(|l| l.shallow_clone())).collect();
    let loss = net.gradient_loss(&b, &over).unwrap();
    let want = refs["loss"].double_value(&[]);
    assert!((loss.double_value(&[]) - want).abs() < 1e-4 * want.abs(), "loss {} vs {want}", loss.double_value(&[]));
    let grads = Tensor::run_backward(&[&loss], &leaves, false, false);
    for (n, g) in weights.iter().zip(grads) {
        let r = &refs[&format!("grad/{n}")];
        let rel = max_abs(&g, r) / r.abs().max().double_value(&[]).max(1e-12);
        assert!(rel < 1e-4, "{n}: the guided gradient differs from PyTorch's by {rel:.2e} (relative)");
    }
    // Without guidance the gradient is another one: the check above sees w.
    let mut plain = Model::new(&model, Device::Cpu, weights.iter().cloned().collect(), &diffusion_spec()).unwrap();
    plain.diffusion.as_mut().unwrap().guidance = 0.0;
    let l0 = plain.gradient_loss(&b, &over).unwrap().double_value(&[]);
    assert!((l0 - want).abs() > 1e-3 * want.abs(), "w = 0 gives the guided loss {l0}");
}

/// `semu unlearn` on the fixture for `steps` steps; extra flags after.
fn unlearn(model: &Path, dir: &Path, steps: &str, extra: &[&str]) -> (Output, PathBuf, PathBuf) {
    let (out, report) = (dir.join("u.onnx"), dir.join("r.json"));
    let mut args = vec![
        "unlearn",
        "--model",
        model.to_str().unwrap(),
        "--train",
        fx("digits/train.npz").to_str().unwrap().to_string().leak(),
        "--forget-class",
        "3",
        "--iterations",
        steps,
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    args.extend(extra);
    (semu(&args), out, report)
}

#[test]
fn unlearning_redirects_the_class_and_the_export_differs_only_in_adapted_weights() {
    let dir = tempfile::tempdir().unwrap();
    let input = fx("ddpm/model.onnx");
    let (o, out, report) = unlearn(&input, dir.path(), "50", &[]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("task diffusion"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "{}", text(&o));
    let (before, after) =
        (r["forget_accuracy"]["before"].as_f64().unwrap(), r["forget_accuracy"]["after"].as_f64().unwrap());
    assert_eq!(before, 1.0, "the input model's own-class noise share");
    assert!(after < 0.5, "after 50 steps the forget class still points at itself for {after:.2} of its images");
    // Per-channel ranks: fewer trainable entries than one k for all channels would give.
    let trainable = r["trainable_parameters"].as_i64().unwrap();
    assert!(trainable > 0 && r["trainable_share"].as_f64().unwrap() < 0.2, "{trainable} trainable");

    let (a, b) = (OnnxModel::load(&input).unwrap(), OnnxModel::load(&out).unwrap());
    let nodes = |m: &OnnxModel| -> Vec<(String, Vec<String>, Vec<String>)> {
        m.graph().node.iter().map(|n| (n.op_type().to_string(), n.input.clone(), n.output.clone())).collect()
    };
    assert_eq!(nodes(&a), nodes(&b), "the export's graph is not the input's");
    assert_eq!(a.proto.metadata_props, b.proto.metadata_props, "the diffusion metadata must travel with the model");
    let adapted: HashSet<&str> = r["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    let mut changed = 0;
    for t in &a.graph().initializer {
        let u = b.initializer(t.name()).expect("same initializers");
        let same = a.tensor(t).unwrap().bytes == b.tensor(u).unwrap().bytes;
        assert!(same || adapted.contains(t.name()), "{} changed but was not adapted", t.name());
        changed += usize::from(!same);
    }
    assert!(changed > 0, "no weight changed");
}

#[test]
fn a_fold_at_r_zero_samples_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    let model = OnnxModel::load(fx("ddpm/model.onnx")).unwrap();
    let forget = semu::data::open(&fx("digits/forget_class3.npz")).unwrap();
    let cfg =
        semu::semu::SemuConfig { iterations: Some(2), ..semu::semu::SemuConfig::for_task(TaskKind::Diffusion, false) };
    let mut u = semu::semu::unlearn(
        &model,
        forget.as_ref(),
        None,
        None,
        &cfg,
        Device::Cpu,
        &diffusion_spec(),
        &mut semu::semu::unlearn::Quiet,
    )
    .unwrap();
    let moved = semu::export::folded_weights(&model, &u.adapters).unwrap();
    for a in &mut u.adapters {
        let _ = a.r.detach().zero_();
    }
    let folded = semu::export::folded_weights(&model, &u.adapters).unwrap();
    let (zero, trained) = (dir.path().join("zero.onnx"), dir.path().join("trained.onnx"));
    model.save(&zero, &folded).unwrap();
    model.save(&trained, &moved).unwrap();
    let sample = |m: &Path, out: &str| {
        let out = dir.path().join(out);
        let o = semu(&[
            "sample",
            "--model",
            m.to_str().unwrap(),
            "--classes",
            "3,5",
            "--n",
            "4",
            "--steps",
            "10",
            "--seed",
            "4",
            "--device",
            "cpu",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read(out).unwrap()
    };
    let original = sample(&fx("ddpm/model.onnx"), "a.npz");
    assert_eq!(original, sample(&zero, "b.npz"), "R = 0 changed the samples");
    assert_ne!(original, sample(&trained, "c.npz"), "two steps of training left the samples as they were");
}

/// The fixture with its metadata dropped, or its `t` input declared as float.
fn variant(dir: &Path, name: &str, edit: impl FnOnce(&mut OnnxModel)) -> PathBuf {
    let mut m = OnnxModel::load(fx("ddpm/model.onnx")).unwrap();
    edit(&mut m);
    let p = dir.join(name);
    m.save(&p, &HashMap::new()).unwrap();
    p
}

#[test]
fn t_is_fed_as_the_graph_declares_it() {
    let dir = tempfile::tempdir().unwrap();
    let float_t = variant(dir.path(), "float_t.onnx", |m| {
        let g = m.proto.graph.as_mut().unwrap();
        let t = g.input.iter_mut().find(|i| i.name() == "t").unwrap();
        if let Some(semu::onnx::proto::type_proto::Value::TensorType(tt)) = t.r#type.as_mut().unwrap().value.as_mut() {
            tt.elem_type = Some(1); // FLOAT: the graph's own Cast turns it into the sinusoid's float
        }
    });
    let (o, _, report) = unlearn(&float_t, dir.path(), "2", &[]);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "onnxruntime must get t as float: {}", text(&o));
}

#[test]
fn a_model_without_its_diffusion_settings_is_told_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bare = variant(dir.path(), "bare.onnx", |m| m.proto.metadata_props.clear());
    let (o, out, _) = unlearn(&bare, dir.path(), "2", &["--task", "diffusion"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = text(&o);
    for want in
        ["bare.onnx", "semu.diffusion.schedule (or --beta-schedule", "--beta-start", "--null-class", "--inputs X,T,Y"]
    {
        assert!(e.contains(want), "'{want}' not in: {e}");
    }
    assert!(!e.contains("panicked") && !out.exists(), "{e}");
    // The flags alone are enough.
    let flags = [
        "--task",
        "diffusion",
        "--prediction",
        "eps",
        "--beta-schedule",
        "linear",
        "--beta-start",
        "1e-4",
        "--beta-end",
        "0.02",
        "--timesteps",
        "1000",
        "--null-class",
        "10",
        "--num-classes",
        "10",
        "--data-range",
        "-1,1",
        "--inputs",
        "x_t,t,y",
        "--no-verify",
    ];
    let (o, out, _) = unlearn(&bare, dir.path(), "2", &flags);
    assert!(o.status.success() && out.exists(), "{}", text(&o));
    let _ = Kind::Float;
}

#[test]
fn a_text_conditioned_model_forgets_a_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let unet = fx("text_ddpm/unet.onnx");
    // Without the concept it is a usage error that says what to give.
    let (o, out, _) = unlearn(&unet, dir.path(), "2", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--forget-prompt") && !out.exists(), "{}", text(&o));

    let prompts = ["--forget-prompt", "a handwritten three", "--target-prompt", "a handwritten four"];
    let keep = ["--keep-prompt", "a handwritten five", "--keep-prompt", "a handwritten eight"];
    let (o, _, report) = unlearn(&unet, dir.path(), "25", &[&prompts[..], &keep].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("no --keep-prompt"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "{}", text(&o));
    assert_eq!(r["forget_accuracy"]["before"].as_f64(), Some(1.0));
    let after = r["forget_accuracy"]["after"].as_f64().unwrap();
    assert!(after < 0.5, "the prompt's noise still points at itself for {after:.2} of its images");

    // Only the cross-attention projections, found by their nodes' names (the weights are `onnx::…`).
    let (o, _, report) =
        unlearn(&unet, dir.path(), "2", &[&prompts[..], &["--train-layers", "cross-attention"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    // Nothing held the other prompts: the user is told to name them.
    assert!(text(&o).contains("no --keep-prompt and no remaining data"), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let layers = r["layers"].as_array().unwrap();
    let all = OnnxModel::load(&unet).map(|m| semu::semu::find_layers(&m).len()).unwrap();
    assert!(!layers.is_empty() && layers.len() < all / 3, "{} of {all} layers trained", layers.len());

    // Sampling the prompts: the judge reads what was asked for.
    let s = dir.path().join("s.npz");
    let o = semu(&[
        "sample",
        "--model",
        unet.to_str().unwrap(),
        "--prompt",
        "a handwritten three",
        "--prompt",
        "a handwritten seven",
        "--n",
        "6",
        "--steps",
        "10",
        "--device",
        "cpu",
        "--out",
        s.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let arrays: HashMap<String, Tensor> = read_npz(&s).unwrap().into_iter().collect();
    let judge = OnnxModel::load(fx("ddpm/judge.onnx")).unwrap();
    let plan = semu::engine::Plan::new(&judge, &semu::engine::Registry::standard(), &Default::default()).unwrap();
    let feeds = HashMap::from([("input".to_string(), semu::engine::Value::Tensor((&arrays["x"] + 1.0) / 2.0))]);
    let pred = plan.run_values(&feeds).unwrap()[0].as_tensor().unwrap().argmax(1, false);
    let want = Tensor::from_slice(&[3i64, 3, 3, 3, 3, 3, 7, 7, 7, 7, 7, 7]);
    let agree = pred.eq_tensor(&want).to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!(agree >= 0.8, "the judge agrees with the prompts on {agree:.2} of the samples");
}

/// The UNet as onnxruntime's optimizer leaves it (NhwcConv, packed attention, fused norms)
/// unlearns; onnxruntime's CPU provider has no kernels for those ops, so the gate says it could
/// not verify and writes nothing unless told to.
#[test]
fn the_optimized_unet_unlearns_and_the_gate_says_it_cannot_verify_it() {
    let dir = tempfile::tempdir().unwrap();
    let unet = fx("text_ddpm/unet_optimized.onnx");
    let prompts = ["--forget-prompt", "a handwritten three", "--target-prompt", "a handwritten four"];
    let (o, out, _) = unlearn(&unet, dir.path(), "3", &prompts);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(
        text(&o).contains("verified    NO") && text(&o).contains("no kernel for com.microsoft::NhwcConv"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "an unverified export was written");
    let (o, out, report) = unlearn(&unet, dir.path(), "3", &[&prompts[..], &["--no-verify"]].concat());
    assert!(o.status.success() && out.exists(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    let kinds: Vec<&str> = r["layers"].as_array().unwrap().iter().map(|l| l["name"].as_str().unwrap()).collect();
    assert!(kinds.iter().any(|n| n.contains("NhwcConv")), "no channels-last conv weight trained: {kinds:?}");
}

/// No forget images: the model samples them from the prompt itself.
#[test]
fn a_prompt_is_forgotten_from_images_the_model_generates() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("g.onnx"), dir.path().join("g.json"));
    let unet = fx("text_ddpm/unet.onnx");
    let args = [
        "unlearn",
        "--model",
        unet.to_str().unwrap(),
        "--generate-forget",
        "16",
        "--forget-prompt",
        "a handwritten three",
        "--target-prompt",
        "a handwritten four",
        "--iterations",
        "3",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ];
    let o = semu(&args);
    assert!(o.status.success(), "{}", text(&o));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["verified"], true, "{}", text(&o));
    assert!(text(&o).contains("generating the forget images"), "{}", text(&o));
    // On a class-conditioned model it is a usage error.
    let ddpm = fx("ddpm/model.onnx");
    let mut bad = args.to_vec();
    bad[2] = ddpm.to_str().unwrap();
    let o = semu(&bad);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--generate-forget"), "{}", text(&o));
}

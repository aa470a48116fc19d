//! The baselines on the digits fixture move what they should (GA forgets, FT keeps, retrain never
//! predicts the forgotten class, SalUn stays inside its mask), every method's export passes the
//! verification gate, and a sweep writes its tables and reuses its cache when restarted.
use semu::baselines::spec::{Grid, Settings, SweepSpec};
use semu::baselines::sweep::{run_sweep, Progress};
use semu::baselines::{run, table, BaselineSettings, Method, Outcome};
use semu::data::{self, Dataset, NpzDataset, Subset};
use semu::export::{changed_elements, weight_replacements};
use semu::onnx::OnnxModel;
use semu::semu::unlearn::Quiet;
use semu::semu::SemuConfig;
use semu::verify::gate;
use std::path::{Path, PathBuf};
use tch::Device;

fn fx(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits").join(p)
}

fn open(p: &str) -> NpzDataset {
    NpzDataset::open(&fx(p)).unwrap()
}

fn digits() -> OnnxModel {
    OnnxModel::load(fx("model.onnx")).unwrap()
}

fn cfg(epochs: usize, lr: f64) -> SemuConfig {
    SemuConfig { epochs, lr: semu::semu::Lr::Fixed(lr), ..Default::default() }
}

/// Runs `method` on class-3 forgetting (with the retain split when `retain`).
fn class3(m: &OnnxModel, method: Method, retain: bool, c: &SemuConfig, b: &BaselineSettings) -> Outcome {
    let (f, r) = (open("forget_class3.npz"), open("retain_class3.npz"));
    let r: Option<&dyn Dataset> = if retain { Some(&r) } else { None };
    run(m, &f, r, None, method, c, b, Device::Cpu, &Default::default(), &mut Quiet).unwrap()
}

/// Test accuracy on class 3 and on the other classes.
fn test_split(o: &Outcome) -> (f64, f64) {
    let t = open("test.npz");
    let y = data::labels(&t).unwrap();
    let part = |on: bool| Subset { inner: &t, idx: (0..y.len()).filter(|&i| (y[i] == 3) == on).collect() };
    (o.accuracy(&part(true), 256).unwrap(), o.accuracy(&part(false), 256).unwrap())
}

/// Folds, stages and runs the verification gate on the export; returns the changed elements.
fn export_and_verify(m: &OnnxModel, o: &Outcome) -> i64 {
    let repl = weight_replacements(m, o.overrides()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let staged = m.stage(&dir.path().join("out.onnx"), &repl).unwrap();
    let (f, t) = (open("forget_class3.npz"), open("test.npz"));
    let probes = gate::probes(&o.net, o.overrides(), &[("forget", &f), ("test", &t)]).unwrap();
    let tol = gate::tolerance_for(&probes[0].expected);
    let report = gate::check(&staged.model_path(), &o.net.output, &probes, tol).unwrap();
    assert!(report.passed, "{:?}: {:?}", o.method, report.failure());
    changed_elements(m, &repl).unwrap().0
}

#[test]
fn ga_lowers_forget_accuracy() {
    let m = digits();
    // Gradient ascent from a confident model starts slowly (tiny gradients), then escapes.
    let o = class3(&m, Method::Ga, false, &SemuConfig { batch_size: 32, ..cfg(6, 2e-2) }, &Default::default());
    let after = o.accuracy(&open("forget_class3.npz"), 256).unwrap();
    // The shipped weights stay untouched in the plan: "before" is still the input model.
    let f = open("forget_class3.npz");
    assert_eq!(o.net.accuracy(&f, 256, &std::collections::HashMap::new()).unwrap(), o.forget_acc_before);
    assert!(o.forget_acc_before > 0.95, "the shipped model knows class 3");
    assert!(after < o.forget_acc_before - 0.3, "GA: forget acc {} → {after}", o.forget_acc_before);
    assert!(!o.used_retain_data);
    export_and_verify(&m, &o);
}

#[test]
fn ft_keeps_retain_accuracy_and_changes_every_weight() {
    let m = digits();
    let o = class3(&m, Method::Ft, true, &cfg(2, 1e-3), &Default::default());
    let before = o.retain_acc_before.unwrap();
    let after = o.accuracy(&open("retain_class3.npz"), 256).unwrap();
    assert!(after >= before - 0.01, "FT: retain acc {before} → {after}");
    let changed = export_and_verify(&m, &o);
    assert!(changed as f64 > 0.95 * o.total_parameters as f64, "FT changed {changed} of {}", o.total_parameters);
}

#[test]
fn retrain_never_predicts_the_forgotten_class() {
    let m = digits();
    let c = SemuConfig { batch_size: 64, ..cfg(6, 0.1) };
    let o = class3(&m, Method::Retrain, true, &c, &Default::default());
    let (class3_acc, others) = test_split(&o);
    assert!(class3_acc <= 0.03, "retrain: class-3 test accuracy {class3_acc}");
    assert!(others >= 0.85, "retrain: other classes' test accuracy {others}");
    // Fresh weights, not the shipped ones: nearly every value differs.
    let changed = export_and_verify(&m, &o);
    assert!(changed as f64 > 0.99 * o.total_parameters as f64);
    // Re-initialisation is seeded: the same run gives the same model.
    let again = class3(&m, Method::Retrain, true, &SemuConfig { epochs: 1, ..c.clone() }, &Default::default());
    let once = class3(&m, Method::Retrain, true, &SemuConfig { epochs: 1, ..c }, &Default::default());
    for (n, t) in &again.overrides().full {
        assert_eq!((t - &once.overrides().full[n]).abs().max().double_value(&[]), 0.0, "{n}");
    }
}

#[test]
fn salun_changes_no_more_than_its_mask() {
    let m = digits();
    let b = BaselineSettings { mask_ratio: 0.2, ..Default::default() };
    let o = class3(&m, Method::Salun, false, &cfg(2, 1e-2), &b);
    let trainable: i64 = semu::baselines::find_params(&m).iter().map(|p| p.numel()).sum();
    assert!((o.trainable as f64 - 0.2 * trainable as f64).abs() <= 1.0, "mask of {} of {trainable}", o.trainable);
    let changed = export_and_verify(&m, &o);
    assert!(changed > 0 && changed <= o.trainable, "SalUn changed {changed}, mask {}", o.trainable);
    let after = o.accuracy(&open("forget_class3.npz"), 256).unwrap();
    assert!(after < o.forget_acc_before, "SalUn: forget acc {} → {after}", o.forget_acc_before);
}

#[test]
fn every_other_method_exports_through_the_gate() {
    let m = digits();
    for (method, retain) in [(Method::Rl, true), (Method::L1, true), (Method::Semu, false)] {
        let o = class3(&m, method, retain, &SemuConfig { gamma: 0.6, ..cfg(1, 1e-3) }, &Default::default());
        assert_eq!(o.method, method);
        assert_eq!(o.used_retain_data, retain);
        assert!(export_and_verify(&m, &o) > 0, "{method:?} changed nothing");
    }
    // ft without remaining data is a usage error naming the flag.
    let f = open("forget_class3.npz");
    let e = run(
        &m,
        &f,
        None,
        None,
        Method::Ft,
        &cfg(1, 1e-3),
        &Default::default(),
        Device::Cpu,
        &Default::default(),
        &mut Quiet,
    );
    assert!(e.err().unwrap().to_string().contains("--retain"));
}

fn tiny_sweep(out: &Path) -> SweepSpec {
    let settings = Settings { epochs: Some(1), batch_size: Some(128), ..Default::default() };
    SweepSpec {
        model: fx("model.onnx"),
        forget: fx("forget_class3.npz"),
        retain: fx("retain_class3.npz"),
        test: fx("test.npz"),
        out: out.to_path_buf(),
        retrained: None,
        forget_class: vec![],
        device: "cpu".into(),
        seed: 0,
        input_name: None,
        output_name: None,
        defaults: settings,
        reference: Settings { epochs: Some(2), lr: Some(semu::semu::Lr::Fixed(0.05)), ..Default::default() },
        grid: vec![Grid {
            methods: vec![Method::Ga, Method::Ft],
            lr: vec![semu::semu::Lr::Fixed(1e-3)],
            ..Default::default()
        }],
    }
}

#[test]
fn sweep_writes_the_tables_and_reuses_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    let spec = tiny_sweep(dir.path());
    let mut log = Vec::new();
    let mut record = |p: Progress| {
        if let Progress::Done { index, result, cached, .. } = p {
            log.push((index, result.key.clone(), cached));
        }
    };
    let res = run_sweep(&spec, &mut record).unwrap();
    assert_eq!(res.runs.len(), 2);
    assert!(log.iter().all(|(_, _, cached)| !cached), "first pass computes: {log:?}");
    let written = table::write_all(dir.path(), &res).unwrap();
    let md = std::fs::read_to_string(&written.markdown).unwrap();
    assert!(md.contains("| GA |") && md.contains("| FT |") && md.contains("Avg. Gap"), "{md}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&written.json).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    assert!(json["runs"][0]["avg_gap"].as_f64().unwrap() >= 0.0);
    assert_eq!(&std::fs::read(&written.scatter).unwrap()[1..4], b"PNG");
    for r in &res.runs {
        assert!(r.verified);
        assert!(dir.path().join(r.model.as_ref().unwrap()).is_file());
    }
    let stamp =
        |k: &str| std::fs::metadata(dir.path().join("runs").join(k).join("result.json")).unwrap().modified().unwrap();
    let stamps: Vec<_> = log.iter().map(|(_, k, _)| stamp(k)).collect();

    // Restarted: every run (the reference included) comes from the cache, untouched.
    let mut again = Vec::new();
    let res2 = run_sweep(&spec, &mut |p: Progress| {
        if let Progress::Done { result, cached, .. } = p {
            again.push((result.key.clone(), cached));
        }
    })
    .unwrap();
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|(_, cached)| *cached), "{again:?}");
    assert_eq!(log.iter().map(|(_, k, _)| stamp(k)).collect::<Vec<_>>(), stamps);
    assert_eq!(res2.runs[0].scores.ua, res.runs[0].scores.ua);
}

#[test]
fn cli_unlearn_dispatches_on_method_and_reports_the_changed_share() {
    let dir = tempfile::tempdir().unwrap();
    let (out, report) = (dir.path().join("salun.onnx"), dir.path().join("salun.json"));
    let semu = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_semu"))
            .args(["unlearn", "--device", "cpu", "--model"])
            .arg(fx("model.onnx"))
            .arg("--forget")
            .arg(fx("forget_class3.npz"))
            .args(args)
            .output()
            .unwrap()
    };
    let ft = semu(&["--method", "ft", "--out", out.to_str().unwrap()]);
    assert_eq!(ft.status.code(), Some(2), "ft without --retain is a usage error");
    assert!(String::from_utf8_lossy(&ft.stderr).contains("--retain"));
    assert!(!out.exists());
    let s = semu(&[
        "--method",
        "salun",
        "--mask-ratio",
        "0.3",
        "--epochs",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(s.status.success(), "{}", String::from_utf8_lossy(&s.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["method"], "salun");
    assert_eq!(r["verified"], true);
    let (changed, mask) = (r["changed_parameters"].as_i64().unwrap(), r["trainable_parameters"].as_i64().unwrap());
    assert!(changed > 0 && changed <= mask, "changed {changed}, mask {mask}");
    assert!((r["changed_share"].as_f64().unwrap() - changed as f64 / 89546.0).abs() < 1e-12);
    assert_eq!(r["baseline_settings"]["mask_ratio"], 0.3);
    assert!(out.is_file());
}

/// A sweep of a quantized (QDQ) model trains the float working copy, as `semu unlearn` does,
/// and writes exports that keep the file's format: the same ops and initializer types, the
/// weights still integers. Before, every run failed with "no Conv/Gemm/MatMul weight to adapt".
#[test]
fn a_sweep_of_a_quantized_model_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let qdq = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/deployed/digits_qdq.onnx");
    let spec = SweepSpec {
        model: qdq.clone(),
        retrained: Some(fx("retrain_class3.onnx")),
        // At 1e-2 on a VNNI CPU, onnxruntime matches the engine on the input but differs by 0.128
        // on one sample of the export's test probe (a quantized activation rounded the other
        // way): the gate's rounding-flip rule passes it (see `verify::gate`).
        grid: vec![Grid { methods: vec![Method::Semu], lr: vec![semu::semu::Lr::Fixed(1e-2)], ..Default::default() }],
        ..tiny_sweep(dir.path())
    };
    let res = run_sweep(&spec, &mut |_| {}).unwrap();
    assert!(res.failed.is_empty(), "{:?}", res.failed.iter().map(|f| &f.error).collect::<Vec<_>>());
    let input = OnnxModel::load(&qdq).unwrap();
    let types = |m: &OnnxModel| {
        let mut t: Vec<(String, i32)> =
            m.graph().initializer.iter().map(|i| (i.name().to_string(), i.data_type())).collect();
        t.sort();
        t
    };
    let ops = |m: &OnnxModel| m.graph().node.iter().map(|n| n.op_type().to_string()).collect::<Vec<_>>();
    assert!(!res.runs.is_empty());
    for r in &res.runs {
        assert!(r.verified, "{:?}", r.verification_failure);
        let out = OnnxModel::load(dir.path().join(r.model.as_ref().unwrap())).unwrap();
        assert_eq!(ops(&out), ops(&input), "the export keeps the QDQ graph");
        assert_eq!(types(&out), types(&input), "every initializer keeps its type");
        assert!(r.changed_parameters > 0, "the run changed some integers");
        assert!(r.scores.ua > 50.0, "class 3 is forgotten: UA {}", r.scores.ua);
    }
}

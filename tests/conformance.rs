//! Runs the ONNX backend test data through the engine on CPU — the node tests and the `light`
//! models of the onnx 1.22 wheel, plus the `pytorch-converted`, `pytorch-operator` and `simple`
//! suites — prints passed/failed/unsupported per op and per suite, and fails if any case listed
//! in `tests/conformance/pass.txt` no longer passes.
//! `SEMU_CONFORMANCE_UPDATE=1` rewrites that list; `SEMU_CONFORMANCE_FILTER=substr` narrows the run.
use semu::conformance::{
    case_dirs, data_root, model_suites_root, node_cases, run_light_case, run_node_case, Outcome, MODEL_SUITES,
};
use semu::engine::Registry;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// (suite, case name, how to run it)
enum Case {
    Dir(PathBuf),
    Light(PathBuf),
}

fn all_cases() -> Vec<(String, String, Case)> {
    let root = data_root().expect("onnx test data not found: run `make setup` (it installs onnx==1.22.0 into .venv)");
    let mut v = Vec::new();
    for d in node_cases(&root) {
        v.push(("node".into(), name_of(&d), Case::Dir(d)));
    }
    let suites = model_suites_root();
    assert!(
        suites.join(".complete").exists(),
        "{}: missing; run `make setup` (tools/fetch_onnx_suites.py)",
        suites.display()
    );
    for s in MODEL_SUITES {
        for d in case_dirs(&suites.join(s)) {
            v.push((s.to_string(), name_of(&d), Case::Dir(d)));
        }
    }
    let mut light: Vec<PathBuf> = std::fs::read_dir(root.join("light"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    light.sort();
    for p in light {
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        v.push(("light".into(), name, Case::Light(p)));
    }
    v
}

fn name_of(d: &Path) -> String {
    d.file_name().unwrap().to_string_lossy().to_string()
}

fn first_op(model: &Path, name: &str) -> String {
    let op = semu::onnx::OnnxModel::load(model)
        .ok()
        .and_then(|m| m.graph().node.first().map(|n| n.op_type().to_string()))
        .unwrap_or_else(|| "?".into());
    if name.contains("_expanded") {
        format!("{op} (expanded)")
    } else {
        op
    }
}

#[test]
fn onnx_backend_suites() {
    let reg = Registry::standard();
    let filter = std::env::var("SEMU_CONFORMANCE_FILTER").unwrap_or_default();
    let list_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/pass.txt");
    let listed: Vec<String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut per_suite: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut passed = Vec::new();
    let mut details = Vec::new();
    for (suite, name, case) in all_cases() {
        let id = format!("{suite}/{name}");
        if !id.contains(&filter) {
            continue;
        }
        let outcome = match &case {
            Case::Dir(d) => run_node_case(d, &reg),
            Case::Light(p) => run_light_case(p, &reg),
        };
        let col = match &outcome {
            Outcome::Pass => 0,
            Outcome::Fail(_) | Outcome::Error(_) => 1,
            Outcome::Unsupported(_) => 2,
        };
        if suite == "node" {
            let Case::Dir(d) = &case else { unreachable!() };
            per_op.entry(first_op(&d.join("model.onnx"), &name)).or_default()[col] += 1;
        }
        per_suite.entry(suite).or_default()[col] += 1;
        match outcome {
            Outcome::Pass => passed.push(id),
            o => details.push(format!("{id}: {o:?}")),
        }
    }
    let table = |rows: &BTreeMap<String, [usize; 3]>, head: &str| {
        let mut t = format!("| {head} | passed | failed | unsupported |\n|---|---|---|---|\n");
        let mut tot = [0; 3];
        for (k, c) in rows {
            t += &format!("| {k} | {} | {} | {} |\n", c[0], c[1], c[2]);
            (0..3).for_each(|i| tot[i] += c[i]);
        }
        t += &format!("| **total** | {} | {} | {} |\n", tot[0], tot[1], tot[2]);
        t
    };
    let text = format!("{}\n{}", table(&per_op, "node op"), table(&per_suite, "suite"));
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/conformance");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("table.md"), &text).unwrap();
    std::fs::write(out.join("failures.txt"), details.join("\n")).unwrap();
    println!("{text}");
    for (s, c) in &per_suite {
        println!("{s}: {} passed, {} failed, {} unsupported", c[0], c[1], c[2]);
    }
    println!("details: target/conformance/failures.txt");

    if std::env::var("SEMU_CONFORMANCE_UPDATE").is_ok() && filter.is_empty() {
        let body = passed.join("\n");
        std::fs::write(
            &list_path,
            format!("# cases the engine passes (regenerate: make conformance-update)\n{body}\n"),
        )
        .unwrap();
        return;
    }
    let regressions: Vec<&String> = listed.iter().filter(|c| c.contains(&filter) && !passed.contains(c)).collect();
    let new = passed.iter().filter(|c| !listed.contains(c)).count();
    if new > 0 {
        println!("{new} cases pass but are not in tests/conformance/pass.txt (make conformance-update)");
    }
    assert!(regressions.is_empty(), "regressions in listed cases: {regressions:?}");
}

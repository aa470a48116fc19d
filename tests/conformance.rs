//! Runs the ONNX backend node tests through the engine, prints passed/failed/unsupported per op,
//! and fails if any case listed in `tests/conformance/node-pass.txt` no longer passes.
//! `SEMU_CONFORMANCE_UPDATE=1` rewrites that list; `SEMU_CONFORMANCE_FILTER=substr` narrows the run.
use semu::conformance::{data_root, node_cases, run_node_case, Outcome};
use semu::engine::Registry;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn onnx_node_tests() {
    let Some(root) = data_root() else {
        panic!("onnx test data not found: run `make setup` (it installs onnx==1.22.0 into .venv)");
    };
    let reg = Registry::standard();
    let filter = std::env::var("SEMU_CONFORMANCE_FILTER").unwrap_or_default();
    let list_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/node-pass.txt");
    let listed: Vec<String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let mut per_op: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    let mut passed = Vec::new();
    let mut details = Vec::new();
    for dir in node_cases(&root) {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        if !name.contains(&filter) {
            continue;
        }
        let op = semu::onnx::OnnxModel::load(dir.join("model.onnx"))
            .ok()
            .and_then(|m| m.graph().node.first().map(|n| n.op_type().to_string()))
            .unwrap_or_else(|| "?".into());
        let op = if name.contains("_expanded") { format!("{op} (expanded)") } else { op };
        let outcome = run_node_case(&dir, &reg);
        let col = match &outcome {
            Outcome::Pass => 0,
            Outcome::Fail(_) | Outcome::Error(_) => 1,
            Outcome::Unsupported(_) => 2,
        };
        per_op.entry(op).or_default()[col] += 1;
        match outcome {
            Outcome::Pass => passed.push(name),
            o => details.push(format!("{name}: {o:?}")),
        }
    }
    let mut table = String::from("| op | passed | failed | unsupported |\n|---|---|---|---|\n");
    let mut tot = [0; 3];
    for (op, c) in &per_op {
        table += &format!("| {op} | {} | {} | {} |\n", c[0], c[1], c[2]);
        (0..3).for_each(|i| tot[i] += c[i]);
    }
    table += &format!("| **total** | {} | {} | {} |\n", tot[0], tot[1], tot[2]);
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/conformance");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("table.md"), &table).unwrap();
    std::fs::write(out.join("failures.txt"), details.join("\n")).unwrap();
    println!("{table}");
    println!("node cases: {} passed, {} failed, {} unsupported (details: target/conformance/failures.txt)", tot[0], tot[1], tot[2]);

    if std::env::var("SEMU_CONFORMANCE_UPDATE").is_ok() && filter.is_empty() {
        std::fs::write(&list_path, format!("# ONNX node-test cases the engine passes (regenerate: make conformance-update)\n{}\n", passed.join("\n"))).unwrap();
        return;
    }
    let regressions: Vec<&String> =
        listed.iter().filter(|c| c.contains(&filter) && !passed.contains(c)).collect();
    let new: Vec<&String> = passed.iter().filter(|c| !listed.contains(c)).collect();
    if !new.is_empty() {
        println!("{} cases pass but are not in node-pass.txt (make conformance-update)", new.len());
    }
    assert!(regressions.is_empty(), "regressions in listed cases: {regressions:?}");
}

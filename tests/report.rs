//! `semu unlearn --report-dir`: report.json, report.md and the plots (PNG + SVG), written into
//! a folder that may already exist.
use std::path::{Path, PathBuf};
use std::process::Command;

fn fx(p: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/digits").join(p).display().to_string()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn report_dir_has_json_markdown_and_legible_plots() {
    let dir = tempfile::tempdir().unwrap();
    let rep = dir.path().join("report");
    std::fs::create_dir_all(&rep).unwrap();
    std::fs::write(rep.join("report.md"), "stale").unwrap();
    let out = dir.path().join("out.onnx");
    let o = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(["unlearn", "--model", &fx("model.onnx"), "--forget", &fx("forget_class3.npz")])
        .args(["--retain", &fx("retain_class3.npz"), "--test", &fx("test.npz")])
        .args(["--lr", "0.001", "--gamma", "0.6", "--epochs", "3", "--device", "cpu"])
        .args(["--out", out.to_str().unwrap(), "--report-dir", rep.to_str().unwrap()])
        .output()
        .unwrap();
    let log = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{log}");

    let json: serde_json::Value = serde_json::from_str(&read(&rep.join("report.json"))).unwrap();
    let layers = json["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 5);
    let diags = json["diagnostics"].as_array().unwrap();
    assert_eq!(diags.len(), layers.len());
    for (l, d) in layers.iter().zip(diags) {
        assert_eq!(l["name"], d["name"]);
        // Every weight of the layer falls in exactly one |ΔW| bin.
        let n: i64 = l["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).product();
        let counted: i64 = d["delta_abs"]["counts"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).sum();
        assert_eq!(counted, n, "{}", l["name"]);
        let cum = d["spectrum"]["cumulative"].as_array().unwrap();
        assert!((cum.last().unwrap().as_f64().unwrap() - 1.0).abs() < 1e-3, "{}", l["name"]);
    }

    let md = read(&rep.join("report.md"));
    for l in layers {
        assert!(md.contains(l["name"].as_str().unwrap()), "{md}");
    }
    for want in
        ["## Accuracy before and after", "| forget data |", "| test, class 3 |", "| onnxruntime |", "## Timings"]
    {
        assert!(md.contains(want), "report.md lacks {want:?}:\n{md}");
    }

    let titles: [(&str, &[&str]); 3] = [
        ("spectra", &["index of singular value", "σ (log scale)", "cumulative share", "γ = 0.6"]),
        ("training", &["epoch", "accuracy (%)", "mean loss over batches", "retain accuracy"]),
        ("delta_hist", &["|ΔW|", "weights (log scale)", "classifier.3.weight"]),
    ];
    for (stem, axis) in titles {
        let png = std::fs::read(rep.join(format!("{stem}.png"))).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{stem}.png");
        let img = image::load_from_memory(&png).unwrap();
        assert!(img.width() >= 800 && img.height() >= 400, "{stem}.png is {}×{}", img.width(), img.height());
        let svg = read(&rep.join(format!("{stem}.svg")));
        assert!(svg.contains("<svg"), "{stem}.svg");
        for t in axis {
            assert!(svg.contains(t), "{stem}.svg lacks {t:?}");
        }
        assert!(md.contains(&format!("]({stem}.png)")), "report.md does not link {stem}.png");
    }
}

//! report.md: the run at a glance — settings, per-layer ranks, accuracy before/after,
//! verification, timings — with links to the plots and to report.json for everything else.
use super::plots::Figure;
use super::{Accuracy, UnlearnReport};
use std::fmt::Write;

/// A table cell: pipes escaped, newlines flattened.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn code(s: &str) -> String {
    format!("`{}`", cell(s).replace('`', "'"))
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn table(out: &mut String, head: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", head.iter().map(|_| "---|").collect::<String>());
    for r in rows {
        let _ = writeln!(out, "| {} |", r.join(" | "));
    }
    out.push('\n');
}

fn acc_row(what: &str, a: &Accuracy) -> Vec<String> {
    let change = 100.0 * (a.after - a.before);
    vec![what.into(), pct(a.before), pct(a.after), format!("{change:+.2} pp")]
}

/// A setting's value as a reader would write it: strings unquoted, no layer filter as "all".
fn setting(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "default".into(),
        serde_json::Value::Array(a) if a.is_empty() => "all".into(),
        serde_json::Value::Array(a) => a.iter().map(setting).collect::<Vec<_>>().join(", "),
        v => v.to_string(),
    }
}

/// The Markdown summary; `figures` are linked by their file names in the same folder.
pub fn markdown(r: &UnlearnReport, figures: &[Figure]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# Unlearning report: {}\n", if r.method == "semu" { "SEMU" } else { r.method });
    let verdict = match &r.verification {
        None => "not verified (--no-verify)",
        Some(v) if v.passed => "verified by ONNX Runtime",
        Some(v) if v.unverified.is_some() => "not verified: ONNX Runtime cannot run it (nothing written)",
        Some(_) => "FAILED verification (nothing written)",
    };
    let _ = writeln!(
        o,
        "Model {} → {}: {verdict}. semu {}, method `{}`, task `{}` ({}), device `{}`. Full data: [report.json](report.json).\n",
        code(&r.model),
        r.output.as_deref().map(code).unwrap_or_else(|| "no output".into()),
        r.semu_version,
        r.method,
        r.task,
        cell(&r.task_reason),
        r.device
    );

    let _ = writeln!(o, "## Settings\n");
    let mut rows = vec![
        vec![
            "remaining data".into(),
            if r.used_retain_data { "used, its loss weighted by α" } else { "none (α = 0)" }.into(),
        ],
        vec!["classes".into(), r.classes.to_string()],
    ];
    if let Some(t) = &r.forget_target {
        rows.push(vec!["forget target".into(), cell(&t.reason)]);
    }
    if let Some(c) = &r.lr_choice {
        rows.push(vec!["lr auto".into(), cell(&format!("{:e}: {}{}", c.lr, c.reason, tried(c)))]);
    }
    let baseline = r.baseline_settings.as_ref().map(serde_json::to_value);
    for v in [Some(serde_json::to_value(&r.settings)), baseline].into_iter().flatten() {
        if let Ok(serde_json::Value::Object(m)) = v {
            rows.extend(m.iter().map(|(k, v)| vec![k.clone(), cell(&setting(v))]));
        }
    }
    table(&mut o, &["setting", "value"], &rows);

    let _ = writeln!(o, "## Parameters\n");
    let _ = writeln!(
        o,
        "{} trainable parameters = {:.4}% of {}; {} changed in the export ({:.4}%).\n",
        r.trainable_parameters,
        100.0 * r.trainable_share,
        r.total_parameters,
        r.changed_parameters,
        100.0 * r.changed_share
    );
    if let (Some(g), Some(p)) = (r.gamma_chosen, r.settings.max_trained) {
        let _ =
            writeln!(o, "Ranks: γ {g:.4} in every layer, the largest whose adapters train ≤ {p}% (`--max-trained`).\n");
    }
    if !r.layers.is_empty() {
        let _ = writeln!(o, "### Adapted layers\n");
        let _ =
            writeln!(o, "{} layer(s) adapted; {} weights touched when folded.\n", r.layers.len(), r.weights_touched);
    }
    let rows: Vec<Vec<String>> = r
        .layers
        .iter()
        .map(|l| {
            vec![
                code(&l.name),
                l.kind.clone(),
                format!("{:?}", l.shape),
                l.k.to_string(),
                l.trainable.to_string(),
                format!("{:.4}%", 100.0 * l.share_of_parameters),
                format!("{:.3}", l.explained_variance),
                format!("{:.3e}", l.max_abs_change),
            ]
        })
        .collect();
    if !rows.is_empty() {
        let head = ["layer", "kind", "shape", "k", "trainable", "share", "explained variance", "max \\|ΔW\\|"];
        table(&mut o, &head, &rows);
    }
    if !r.skipped_zero_gradient.is_empty() {
        let names: Vec<String> = r.skipped_zero_gradient.iter().map(|n| code(n)).collect();
        let _ = writeln!(o, "Not adapted (zero forget gradient): {}.\n", names.join(", "));
    }

    if let Some(lm) = &r.language_model {
        let _ = writeln!(o, "## Language model before and after\n");
        let (b, a) = (&lm.before, &lm.after);
        let mut rows = Vec::new();
        for (name, x, y) in [
            ("forget", Some(b.forget), Some(a.forget)),
            ("retain", b.retain, a.retain),
            ("holdout", b.holdout, a.holdout),
        ] {
            if let (Some(x), Some(y)) = (x, y) {
                rows.push(vec![
                    format!("{name} perplexity"),
                    format!("{:.3}", x.perplexity),
                    format!("{:.3}", y.perplexity),
                ]);
                rows.push(vec![
                    format!("{name} memorisation"),
                    format!("{:.2}%", x.memorisation),
                    format!("{:.2}%", y.memorisation),
                ]);
            }
        }
        rows.push(vec![
            "forget extraction strength".into(),
            format!("{:.2}%", b.forget.extraction_strength),
            format!("{:.2}%", a.forget.extraction_strength),
        ]);
        if let (Some(x), Some(y)) = (b.min_k_auc, a.min_k_auc) {
            rows.push(vec![
                "Min-K% AUC, forget vs holdout (0.5 = unseen)".into(),
                format!("{x:.3}"),
                format!("{y:.3}"),
            ]);
        }
        table(&mut o, &["measure", "before", "after"], &rows);
    }
    let _ = writeln!(o, "## Accuracy before and after\n");
    if r.task != "classify" {
        let _ = writeln!(o, "Accuracy here is greedy next-token accuracy over the texts' tokens.\n");
    }
    let mut rows = vec![acc_row("forget data", &r.forget_accuracy)];
    if let Some(a) = &r.retain_accuracy {
        rows.push(acc_row("retain data", a));
    }
    if let Some(t) = &r.test_accuracy {
        if let (Some(c), Some(a)) = (t.forget_class, &t.on_forget_class) {
            rows.push(acc_row(&format!("test, class {c}"), a));
        }
        if let Some(a) = &t.on_other_classes {
            rows.push(acc_row("test, other classes", a));
        }
        rows.push(acc_row("test, all", &t.all));
    }
    table(&mut o, &["data", "before", "after", "change"], &rows);

    if !r.epochs.is_empty() {
        let _ = writeln!(o, "## Epochs\n");
        let rows: Vec<Vec<String>> = r
            .epochs
            .iter()
            .map(|e| {
                let ra = e.retain_acc.map(pct).unwrap_or_else(|| "–".into());
                vec![e.epoch.to_string(), format!("{:.4}", e.loss), pct(e.forget_acc), ra, format!("{:.2}", e.seconds)]
            })
            .collect();
        table(&mut o, &["epoch", "loss", "forget acc", "retain acc", "seconds"], &rows);
    }

    let _ = writeln!(o, "## Verification\n");
    match &r.verification {
        None => {
            let _ = writeln!(o, "Skipped (--no-verify): the output was not checked.\n");
        }
        Some(v) => {
            let (verdict, why) = match &v.unverified {
                Some(why) => ("NOT VERIFIED", format!(" ({})", cell(why))),
                None => (if v.passed { "passed" } else { "FAILED" }, String::new()),
            };
            let _ = writeln!(o, "Tolerance `{}`. Result: **{verdict}**{why}.\n", v.tolerance);
            if v.rows.iter().any(|g| g.allowance > 0.0) {
                let _ = writeln!(
                    o,
                    "A runtime differed from the engine on the input model itself beyond the tolerance: its rows \
on the export are allowed {} × that difference more (\"input max abs\", \"allowance\").\n",
                    v.allowance_factor
                );
            }
            let rows: Vec<Vec<String>> = v
                .rows
                .iter()
                .map(|g| {
                    vec![
                        cell(&g.probe),
                        cell(&g.runtime),
                        cell(&g.reference),
                        format!("{:.2e}", g.max_abs),
                        format!("{:.2e}", g.max_rel),
                        g.input_max_abs.map_or("—".into(), |d| format!("{d:.2e}")),
                        if g.allowance > 0.0 { format!("{:.2e}", g.allowance) } else { "—".into() },
                        if g.passed {
                            "ok"
                        } else if g.excused {
                            "rounding flips (warning below)"
                        } else {
                            "**FAIL**"
                        }
                        .into(),
                    ]
                })
                .collect();
            let head = ["probe", "runtime", "reference", "max abs", "max rel", "input max abs", "allowance", "ok"];
            table(&mut o, &head, &rows);
            for w in &v.warnings {
                let _ = writeln!(o, "- warning: {}", cell(w));
            }
            if !v.warnings.is_empty() {
                o.push('\n');
            }
        }
    }

    let _ = writeln!(o, "## Timings\n");
    let t = &r.timings;
    let phases = [
        ("gradient", t.gradient),
        ("SVD", t.svd),
        ("training", t.training),
        ("fold", t.fold),
        ("export", t.export),
        ("verify", t.verify),
    ];
    let total: f64 = phases.iter().map(|p| p.1).sum();
    let mut rows: Vec<Vec<String>> = phases.iter().map(|(n, s)| vec![n.to_string(), format!("{s:.3}")]).collect();
    rows.push(vec!["**total**".into(), format!("**{total:.3}**")]);
    table(&mut o, &["phase", "seconds"], &rows);

    if !figures.is_empty() {
        let _ = writeln!(o, "## Plots\n");
        for f in figures {
            let _ = writeln!(o, "### {}\n\n![{0}]({1}.png)\n\n[SVG]({1}.svg)\n", f.title, f.stem);
        }
    }
    let _ = writeln!(o, "## Files (SHA-256)\n");
    let mut rows =
        vec![vec!["model".into(), code(&r.sha256.model)], vec!["forget data".into(), code(&r.sha256.forget)]];
    if let Some(h) = &r.sha256.retain {
        rows.push(vec!["retain data".into(), code(h)]);
    }
    if let Some(h) = &r.sha256.output {
        rows.push(vec!["output".into(), code(h)]);
    }
    table(&mut o, &["file", "sha256"], &rows);
    o
}

/// The rates `--lr auto` tried, for a line of text: ` (tried 1e-4: 80.00% in 10 epochs; …)`.
pub fn tried(c: &crate::semu::auto::LrChoice) -> String {
    let t: Vec<String> = c
        .tried
        .iter()
        .map(|t| {
            let loss = t.forget_loss.map(|l| format!(", loss {l:.4}")).unwrap_or_default();
            format!("{:e}: forget accuracy {:.2}%{loss} after {} epoch(s)", t.lr, 100.0 * t.forget_acc, t.epochs)
        })
        .collect();
    if t.is_empty() {
        String::new()
    } else {
        format!(" (tried {})", t.join("; "))
    }
}

//! The sweep's paper-style outputs: `table.md` (every run, then the best run of each method by
//! Avg. Gap), `sweep.json` (the same, with every run's full record) and `scatter.png`.
use super::spec::RunConfig;
use super::sweep::{write_atomic, FailedRun, Reference, RunResult, SweepResult};
use super::Method;
use crate::error::{Error, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A method as the paper's tables name it, with "+ D_r" when it used the remaining data. SEMU
/// also names its objective when it is not the paper's random labels, and `lr auto`.
pub fn display_name(c: &RunConfig) -> String {
    let m = match c.method {
        Method::Semu => "SEMU",
        Method::Rl => "RL",
        Method::Salun => "SalUn",
        Method::Ft => "FT",
        Method::Ga => "GA",
        Method::L1 => "l1-sparse",
        Method::Retrain => "Retrain",
        Method::GradDiff => "GradDiff",
        Method::Npo => "NPO",
    };
    let mut m = m.to_string();
    if c.method == Method::Semu {
        if c.semu.objective != crate::task::Objective::Rl {
            m = format!("{m} {}", c.semu.objective.name());
        }
        if c.semu.lr == crate::semu::Lr::Auto {
            m.push_str(" (lr auto)");
        }
    }
    // Methods that cannot run otherwise do not need the mark.
    if c.remaining && c.method.retain_modes().len() > 1 {
        format!("{m} + D_r")
    } else {
        m
    }
}

#[derive(Serialize)]
struct RunRow<'a> {
    name: String,
    avg_gap: f64,
    #[serde(flatten)]
    run: &'a RunResult,
}

#[derive(Serialize)]
struct Json<'a> {
    semu_version: &'static str,
    reference: &'a Reference,
    runs: Vec<RunRow<'a>>,
    /// Index into `runs` of the best run (lowest Avg. Gap) of each method.
    best: Vec<usize>,
    failed: &'a [FailedRun],
}

/// Index of the best run (lowest Avg. Gap; verified runs first) of each method and data mode,
/// in method order.
pub fn best_per_method(res: &SweepResult) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::new();
    for (i, r) in res.runs.iter().enumerate() {
        let name = display_name(&r.config);
        let score = |r: &RunResult| (!r.verified, r.scores.gap(&res.reference.scores));
        match best.iter_mut().find(|b| display_name(&res.runs[**b].config) == name) {
            Some(b) if score(r) < score(&res.runs[*b]) => *b = i,
            Some(_) => {}
            None => best.push(i),
        }
    }
    best.sort_by_key(|&i| (res.runs[i].config.method, res.runs[i].config.remaining));
    best
}

fn header(class_col: bool) -> String {
    let extra = if class_col { " TA forgot. class |" } else { "" };
    format!(
        "| method | γ | lr | epochs | UA | RA | TA | MIA | Avg. Gap |{extra} trained % | changed % | time (s) | verified | key |\n\
         |---|---|---|---|---|---|---|---|---|{}---|---|---|---|---|\n",
        if class_col { "---|" } else { "" }
    )
}

fn row(r: &RunResult, gap: Option<f64>, class_col: bool, name: &str) -> String {
    let c = &r.config;
    let s = &r.scores;
    let gamma = if c.method == Method::Semu { format!("{:.2}", c.semu.gamma) } else { "–".into() };
    let gap = gap.map_or_else(|| "–".into(), |g| format!("{g:.2}"));
    let class = match (class_col, s.forget_class_test_accuracy) {
        (true, Some(a)) => format!(" {a:.2} |"),
        (true, None) => " – |".into(),
        _ => String::new(),
    };
    let lr = match &r.lr_choice {
        Some(l) => format!("auto ({:e})", l.lr),
        None => c.semu.lr.to_string(),
    };
    format!(
        "| {name} | {gamma} | {lr} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {gap} |{class} {:.3} | {:.3} | {:.1} | {} | `{}` |\n",
        r.epochs_run,
        s.ua,
        s.ra,
        s.ta,
        s.mia,
        100.0 * r.trained_share,
        100.0 * r.changed_share,
        r.wall_seconds,
        if r.verified { "yes" } else { "FAILED" },
        r.key
    )
}

/// The Markdown report: the reference, the best run of each method, then every run.
pub fn markdown(res: &SweepResult) -> String {
    let rs = &res.reference.scores;
    let class_col = rs.forget_class_test_accuracy.is_some();
    let mut md = String::from("# semu sweep\n\n");
    let _ = writeln!(
        md,
        "Reference ({}): UA {:.2}, RA {:.2}, TA {:.2}, MIA {:.2}{}. All numbers in percent; \
         Avg. Gap = mean |Δ| to the reference over UA, RA, TA, MIA; trained % = share of all \
         parameters the method trains (SEMU: Σk² of its R matrices; SalUn: its mask), the paper's \
         measure; changed % = share whose value differs in the exported model (SEMU's low-rank \
         update is dense in each adapted weight); time = the method's wall time.\n",
        res.reference.source,
        rs.ua,
        rs.ra,
        rs.ta,
        rs.mia,
        rs.forget_class_test_accuracy.map(|a| format!(", forgotten-class test acc {a:.2}")).unwrap_or_default()
    );
    let gap = |r: &RunResult| r.scores.gap(rs);
    md.push_str("## Best run per method (lowest Avg. Gap)\n\n");
    md.push_str(&header(class_col));
    for i in best_per_method(res) {
        let r = &res.runs[i];
        md.push_str(&row(r, Some(gap(r)), class_col, &display_name(&r.config)));
    }
    md.push_str("\n## Every run\n\n");
    md.push_str(&header(class_col));
    for r in &res.runs {
        md.push_str(&row(r, Some(gap(r)), class_col, &display_name(&r.config)));
    }
    if !res.failed.is_empty() {
        md.push_str(
            "\n## Failed runs (not cached: a restart tries them again)\n\n| run | error | key |\n|---|---|---|\n",
        );
        for f in &res.failed {
            let error = f.error.replace('|', "\\|").replace('\n', " ");
            let _ = writeln!(md, "| {} | {error} | `{}` |", f.config.label(), f.key);
        }
    }
    md
}

/// Where [`write_all`] put each file.
#[derive(Debug, Clone)]
pub struct Written {
    pub markdown: PathBuf,
    pub json: PathBuf,
    pub scatter: PathBuf,
}

/// Writes `table.md`, `sweep.json` and `scatter.png` into `out` (each atomically).
pub fn write_all(out: &Path, res: &SweepResult) -> Result<Written> {
    let w = Written { markdown: out.join("table.md"), json: out.join("sweep.json"), scatter: out.join("scatter.png") };
    write_atomic(&w.markdown, markdown(res).as_bytes())?;
    let json = Json {
        semu_version: env!("CARGO_PKG_VERSION"),
        reference: &res.reference,
        runs: res
            .runs
            .iter()
            .map(|r| RunRow { name: display_name(&r.config), avg_gap: r.scores.gap(&res.reference.scores), run: r })
            .collect(),
        best: best_per_method(res),
        failed: &res.failed,
    };
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::msg(e.to_string()))?;
    write_atomic(&w.json, text.as_bytes())?;
    write_atomic(&w.scatter, &super::plot::scatter_png(res)?)?;
    Ok(w)
}

//! `semu sweep`: SEMU and the standard baselines over a grid, on the same splits, each run
//! exported and verified like `semu unlearn`, evaluated (UA, RA, TA, MIA, Avg. Gap to retrain)
//! and tabulated paper-style. Finished runs are cached in the output folder.
use super::{CmdResult, Exit};
use anyhow::anyhow;
use semu::baselines::spec::{Grid, Settings, SweepSpec};
use semu::baselines::sweep::{run_sweep, Progress, Scores};
use semu::baselines::table::{self, best_per_method, display_name};
use semu::baselines::{Method, Schedule};
use semu::semu::optim::OptimizerKind;
use std::path::PathBuf;

/// Compare SEMU with the standard unlearning baselines over a grid of settings.
#[derive(clap::Args)]
#[command(after_help = "Example (class 3 of the shipped digits model; the grid in a TOML file):\n  \
semu sweep --config tools/sweeps/digits_class3.toml\n\n\
Or from flags alone:\n  \
semu sweep --model fixtures/digits/model.onnx --forget fixtures/digits/forget_class3.npz \\\n    \
--retain fixtures/digits/retain_class3.npz --test fixtures/digits/test.npz --out sweep-class3 \\\n    \
--methods semu,rl,salun,ft,ga --gamma 0.6,0.9 --lr 1e-3,1e-2 --epochs 5\n\n\
Writes OUT/table.md, OUT/sweep.json and OUT/scatter.png; each run's verified model and result\n\
are cached in OUT/runs/<key>/ so a restarted sweep skips finished runs. Without --retrained the\n\
reference is trained by `retrain` (settings under [reference] in the file, or --reference-*).\n\
Exit codes: 0 ok, 1 failure, 2 usage error, 3 some export failed verification.")]
pub struct Args {
    /// The sweep as TOML (data, output, [defaults], [reference], [[grid]]); flags override it.
    #[arg(long, value_name = "SWEEP.toml")]
    config: Option<PathBuf>,
    #[arg(long)]
    model: Option<PathBuf>,
    /// The data to forget, D_f.
    #[arg(long)]
    forget: Option<PathBuf>,
    /// The remaining data, D_r (evaluation always uses it; a method only in "with" mode).
    #[arg(long)]
    retain: Option<PathBuf>,
    /// The test data, D_t.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Output folder (tables, plot, cached runs).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A model retrained without D_f: the Avg. Gap reference (else the sweep trains one).
    #[arg(long)]
    retrained: Option<PathBuf>,
    /// Methods of a grid that replaces the file's.
    #[arg(long, value_enum, value_delimiter = ',')]
    methods: Vec<Method>,
    /// SEMU's γ values (with --methods).
    #[arg(long, value_delimiter = ',')]
    gamma: Vec<f64>,
    /// Learning rates, numbers or `auto` (with --methods).
    #[arg(long, value_delimiter = ',')]
    lr: Vec<semu::semu::Lr>,
    /// SEMU's forget objectives (with --methods).
    #[arg(long, value_enum, value_delimiter = ',')]
    objective: Vec<semu::task::Objective>,
    /// Remaining-data modes (with --methods) [default: every mode each method supports].
    #[arg(long, value_enum, value_delimiter = ',')]
    remaining: Vec<Remaining>,
    /// Epochs of every run.
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// SalUn's mask ratio.
    #[arg(long)]
    mask_ratio: Option<f64>,
    /// l1-sparse's penalty weight.
    #[arg(long)]
    l1: Option<f64>,
    /// Learning-rate schedule of the grid's runs [default: constant; cosine for retrain].
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Epochs of the retrain reference.
    #[arg(long)]
    reference_epochs: Option<usize>,
    /// Learning rate of the retrain reference.
    #[arg(long)]
    reference_lr: Option<f64>,
    /// The forgotten class(es), for class forgetting [default: D_f's class when D_r lacks it].
    #[arg(long = "forget-class", value_name = "C", num_args = 1..)]
    forget_class: Vec<i64>,
    /// auto | cpu | cuda | cuda:N
    #[arg(long)]
    device: Option<String>,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Remaining {
    With,
    Without,
}

fn usage(msg: impl Into<String>) -> Exit {
    Exit { code: 2, err: anyhow!(msg.into()) }
}

fn spec(a: &Args) -> Result<SweepSpec, Exit> {
    let mut s = match &a.config {
        Some(p) => SweepSpec::from_toml_file(p).map_err(|e| usage(e.to_string()))?,
        None => {
            let need = |v: &Option<PathBuf>, flag: &str| {
                v.clone().ok_or_else(|| usage(format!("{flag} is required without --config")))
            };
            SweepSpec {
                model: need(&a.model, "--model")?,
                forget: need(&a.forget, "--forget")?,
                retain: need(&a.retain, "--retain")?,
                test: need(&a.test, "--test")?,
                out: need(&a.out, "--out")?,
                retrained: None,
                forget_class: vec![],
                device: "auto".into(),
                seed: 0,
                input_name: None,
                output_name: None,
                defaults: Settings::default(),
                reference: Settings::default(),
                grid: vec![],
            }
        }
    };
    for (dst, src) in [(&mut s.model, &a.model), (&mut s.forget, &a.forget), (&mut s.retain, &a.retain)] {
        if let Some(v) = src {
            *dst = v.clone();
        }
    }
    for (dst, src) in [(&mut s.test, &a.test), (&mut s.out, &a.out)] {
        if let Some(v) = src {
            *dst = v.clone();
        }
    }
    if a.retrained.is_some() {
        s.retrained = a.retrained.clone();
    }
    if let Some(d) = &a.device {
        s.device = d.clone();
    }
    if !a.forget_class.is_empty() {
        s.forget_class = a.forget_class.clone();
    }
    let d = &mut s.defaults;
    d.epochs = a.epochs.or(d.epochs);
    d.batch_size = a.batch_size.or(d.batch_size);
    d.optimizer = a.optimizer.or(d.optimizer);
    d.mask_ratio = a.mask_ratio.or(d.mask_ratio);
    d.l1 = a.l1.or(d.l1);
    d.schedule = a.schedule.or(d.schedule);
    s.reference.epochs = a.reference_epochs.or(s.reference.epochs);
    s.reference.lr = a.reference_lr.map(semu::semu::Lr::Fixed).or(s.reference.lr);
    if !a.methods.is_empty() {
        s.grid = vec![Grid {
            methods: a.methods.clone(),
            gamma: a.gamma.clone(),
            lr: a.lr.clone(),
            objective: a.objective.clone(),
            remaining: a.remaining.iter().map(|r| *r == Remaining::With).collect(),
            set: Settings::default(),
        }];
    } else if !(a.gamma.is_empty() && a.lr.is_empty() && a.remaining.is_empty() && a.objective.is_empty()) {
        return Err(usage("--gamma, --lr, --objective and --remaining shape a grid: give its --methods too"));
    }
    if s.grid.is_empty() {
        return Err(usage("nothing to run: give --methods, or a --config with [[grid]] blocks"));
    }
    s.runs().map_err(|e| usage(e.to_string()))?;
    Ok(s)
}

fn scores_line(s: &Scores) -> String {
    format!("UA {:6.2}  RA {:6.2}  TA {:6.2}  MIA {:6.2}", s.ua, s.ra, s.ta, s.mia)
}

pub fn run(a: Args) -> CmdResult {
    let spec = spec(&a)?;
    let mut reference: Option<Scores> = None;
    let mut on_progress = |p: Progress| match p {
        Progress::Start { .. } => {}
        Progress::Failed { index, total, failure: f } => {
            tracing::warn!("[{index}/{total}] {:<28} FAILED: {}", f.config.label(), f.error);
        }
        Progress::Reference(r) => {
            tracing::info!("reference: {} — {}", r.source, scores_line(&r.scores));
            reference = Some(r.scores.clone());
        }
        Progress::Done { index, total, result: r, cached } => {
            let gap = reference.as_ref().map(|s| format!("  gap {:5.2}", r.scores.gap(s))).unwrap_or_default();
            let at = if index == 0 { "[ref]".to_string() } else { format!("[{index}/{total}]") };
            tracing::info!(
                "{at} {:<28} {}{gap}  trained {:7.3}%  {:6.1}s{}{}",
                r.config.label(),
                scores_line(&r.scores),
                100.0 * r.trained_share,
                r.wall_seconds,
                if cached { "  (cached)" } else { "" },
                if r.verified { "" } else { "  VERIFICATION FAILED" }
            );
        }
    };
    let res = run_sweep(&spec, &mut on_progress)?;
    let written = table::write_all(&spec.out, &res)?;
    println!("semu sweep: {} runs, reference {}", res.runs.len(), res.reference.source);
    println!(
        "{:<16} {:>7} {:>7} {:>7} {:>7} {:>9} {:>10} {:>10} {:>8}",
        "best per method", "UA", "RA", "TA", "MIA", "Avg. Gap", "trained %", "changed %", "time s"
    );
    for i in best_per_method(&res) {
        let r = &res.runs[i];
        let s = &r.scores;
        println!(
            "{:<16} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>9.2} {:>10.3} {:>10.3} {:>8.1}   {}",
            display_name(&r.config),
            s.ua,
            s.ra,
            s.ta,
            s.mia,
            s.gap(&res.reference.scores),
            100.0 * r.trained_share,
            100.0 * r.changed_share,
            r.wall_seconds,
            r.config.label()
        );
    }
    println!("table       {}", written.markdown.display());
    println!("json        {}", written.json.display());
    println!("scatter     {}", written.scatter.display());
    if !res.failed.is_empty() {
        let which: Vec<String> = res.failed.iter().map(|f| f.config.label()).collect();
        tracing::warn!(
            "{} run(s) failed (listed in the table; a restart retries them): {}",
            which.len(),
            which.join("; ")
        );
    }
    let unverified: Vec<String> = res.runs.iter().filter(|r| !r.verified).map(|r| r.config.label()).collect();
    if !unverified.is_empty() {
        return Err(Exit { code: 3, err: anyhow!("verification failed for: {}", unverified.join("; ")) });
    }
    Ok(())
}

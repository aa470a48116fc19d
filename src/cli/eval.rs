//! `semu eval`: did it forget? UA, RA, TA and MIA-efficacy (SalUn / SEMU protocol), and the
//! Avg. Gap to a model retrained without the forget data; for a causal language model, the
//! LLM-unlearning measures (perplexity, memorisation, extraction strength, Min-K% AUC).
use super::unlearn::write_atomic;
use super::{CmdResult, Exit};
use anyhow::{anyhow, Context};
use semu::data;
use semu::engine::device_name;
use semu::eval::lm::LmEvaluation;
use semu::eval::{self, EvalData, EvalOptions, Evaluation, Feature};
use semu::onnx::OnnxModel;
use semu::task::{Model, Spec, TaskKind};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

mod diffusion;

/// Measure forgetting: UA, RA, TA, MIA-efficacy, and the Avg. Gap to a retrained model.
#[derive(clap::Args)]
#[command(after_help = "Example (the shipped digits model against one retrained without class 3):\n  \
semu eval --model fixtures/digits/model.onnx --forget fixtures/digits/forget_class3.npz \\\n    \
--retain fixtures/digits/retain_class3.npz --test fixtures/digits/test.npz \\\n    \
--retrained fixtures/digits/retrain_class3.onnx --json eval.json\n\n\
All numbers are percentages. UA = 100 − accuracy on the forget data, RA = accuracy on the retain\n\
data, TA = accuracy on the test data (its samples of the other classes when a class is forgotten),\n\
MIA = share of the forget data that an RBF SVM, trained to tell retain from test samples by the\n\
model's confidence in the true label, calls unseen. Avg. Gap = mean |Δ| of the four to --retrained.\n\
\n\
Causal language models (--task causal-lm, inferred from the graph): --test holds texts never\n\
trained on (the holdout); reported are perplexity and exact memorisation (greedy next-token\n\
accuracy) on each set, the forget set's extraction strength, and the AUC of a Min-K% probability\n\
attack telling forget from holdout texts (0.5 = it cannot).\n\
\n\
Diffusion ε-networks (--task diffusion, inferred from semu.diffusion.* metadata): no data sets;\n\
--n samples of every class from the same seeded noise for --model, --original and --retrained,\n\
labelled by --judge. Reported as shares: the forget rate (class-C samples judged C), the other\n\
classes' accuracy, where class C went, and FD-other, the Fréchet distance between the judge's\n\
features of the other classes' samples and of --test's real images of those classes:\n  \
semu eval --model fixtures/ddpm/model.onnx --judge fixtures/ddpm/judge.onnx --forget-class 3 \\\n    \
--test fixtures/ddpm/test.npz --retrained fixtures/ddpm/retrain_class3.onnx --report-dir report\n\
Exit codes: 0 ok, 1 failure, 2 usage error.")]
pub struct Args {
    /// The model to evaluate (ONNX).
    #[arg(long)]
    model: PathBuf,
    /// The forgotten data, D_f (not for --task diffusion).
    #[arg(long)]
    forget: Option<PathBuf>,
    /// The remaining training data, D_r (not for --task diffusion).
    #[arg(long)]
    retain: Option<PathBuf>,
    /// The test data, D_t; for --task diffusion, real images in [0, 1] with labels (optional).
    #[arg(long)]
    test: Option<PathBuf>,
    /// A model trained from scratch on D_r only: the reference for the Avg. Gap.
    #[arg(long)]
    retrained: Option<PathBuf>,
    /// The forgotten class(es) for class forgetting [default: D_f's class when it is a single
    /// class that D_r lacks].
    #[arg(long = "forget-class", value_name = "C", num_args = 1..)]
    forget_class: Vec<i64>,
    /// Write the results (JSON) here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// Seeds the choice of retain samples that serve as MIA members.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What the model is for [default: inferred from the graph].
    #[arg(long, value_enum)]
    task: Option<TaskKind>,
    /// The graph input that image / array data (`x`) feeds, when the model has several.
    #[arg(long)]
    input_name: Option<String>,
    /// The N×C logits output, when the model has several outputs.
    #[arg(long)]
    output_name: Option<String>,
    #[command(flatten)]
    diffusion: diffusion::ProtocolArgs,
    #[command(flatten)]
    overrides: super::diffusion_args::DiffusionArgs,
    #[command(flatten)]
    decode: super::data_args::DecodeArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

#[derive(Serialize)]
struct Scored<'a> {
    model: String,
    #[serde(flatten)]
    eval: &'a Evaluation,
}

#[derive(Serialize)]
struct Output<'a> {
    semu_version: &'static str,
    #[serde(flatten)]
    scored: Scored<'a>,
    forget: String,
    retain: String,
    test: String,
    device: String,
    seed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    retrained: Option<Scored<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avg_gap: Option<f64>,
}

/// A data path for the JSON (present on the classify and LM paths: checked in [`run`]).
fn shown(p: &Option<PathBuf>) -> String {
    p.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
}

/// `path` planned for `task` (with --weights when it is --model).
fn load(path: &Path, a: &Args, device: tch::Device, task: TaskKind) -> anyhow::Result<Model> {
    let mut model = OnnxModel::load(path)?;
    if path == a.model.as_path() {
        a.weights.bind(&mut model, &Default::default())?; // --weights are --model's, not --retrained's
    }
    let spec =
        Spec { task: Some(task), input: a.input_name.clone(), output: a.output_name.clone(), ..Default::default() };
    Ok(Model::new(&model, device, HashSet::new(), &spec)?)
}

fn score(path: &Path, a: &Args, device: tch::Device, sets: EvalData, opts: &EvalOptions) -> anyhow::Result<Evaluation> {
    let net = load(path, a, device, TaskKind::Classify)?;
    eval::evaluate(&net, &HashMap::new(), sets, opts).with_context(|| format!("evaluating {}", path.display()))
}

fn score_lm(path: &Path, a: &Args, device: tch::Device, sets: EvalData) -> anyhow::Result<LmEvaluation> {
    let net = load(path, a, device, TaskKind::CausalLm)?;
    semu::eval::lm::evaluate(&net, &HashMap::new(), sets.forget, Some(sets.retain), Some(sets.test), a.batch_size)
        .with_context(|| format!("evaluating {}", path.display()))
}

pub fn run(a: Args) -> CmdResult {
    if a.batch_size == 0 {
        return Err(Exit { code: 2, err: anyhow!("--batch-size must be at least 1") });
    }
    let device = super::device(&a.device)?;
    let model = OnnxModel::load(&a.model)?;
    let (task, why) = match a.task {
        Some(t) => (t, "given with --task".to_string()),
        None => semu::task::infer(&model, a.output_name.as_deref()),
    };
    if task == TaskKind::Diffusion {
        return diffusion::run(&a, model, device, &why);
    }
    a.diffusion.refuse_for(task.name())?;
    let (Some(forget), Some(retain), Some(test)) = (&a.forget, &a.retain, &a.test) else {
        let missing: Vec<&str> = [("--forget", &a.forget), ("--retain", &a.retain), ("--test", &a.test)]
            .into_iter()
            .filter_map(|(flag, p)| p.is_none().then_some(flag))
            .collect();
        return Err(super::usage(anyhow!("--task {} ({why}) needs {}", task.name(), missing.join(", "))));
    };
    if let Some(j) = &a.json {
        let inputs = [&a.model, forget, retain, test];
        semu::paths::check_output(j, "--json", &inputs.map(PathBuf::as_path)).map_err(super::usage)?;
    }
    let mut spec = a.decode.spec(&model, a.input_name.as_deref(), &Default::default())?;
    spec.text.labels_required = task == TaskKind::Classify;
    let open = |p: &Path| data::open_with(p, &spec);
    let (forget, retain, test) = (open(forget)?, open(retain)?, open(test)?);
    let sets = EvalData { forget: forget.as_ref(), retain: retain.as_ref(), test: test.as_ref() };
    if task == TaskKind::CausalLm {
        return run_lm(&a, device, sets, &why);
    }
    let forget_classes = (!a.forget_class.is_empty()).then(|| a.forget_class.clone());
    let opts = EvalOptions { forget_classes, seed: a.seed, batch_size: a.batch_size };
    let mine = score(&a.model, &a, device, sets, &opts)?;
    let reference = a.retrained.as_deref().map(|p| score(p, &a, device, sets, &opts)).transpose()?;
    let gap = reference.as_ref().map(|r| eval::avg_gap(&mine.metrics, &r.metrics));
    print_table(&a, &mine, reference.as_ref(), gap);
    if let Some(p) = &a.json {
        let out = Output {
            semu_version: env!("CARGO_PKG_VERSION"),
            scored: Scored { model: a.model.display().to_string(), eval: &mine },
            forget: shown(&a.forget),
            retain: shown(&a.retain),
            test: shown(&a.test),
            device: device_name(device),
            seed: a.seed,
            retrained: a
                .retrained
                .as_ref()
                .zip(reference.as_ref())
                .map(|(p, e)| Scored { model: p.display().to_string(), eval: e }),
            avg_gap: gap,
        };
        let json = serde_json::to_string_pretty(&out)?;
        write_atomic(p, json.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        println!("json        {}", p.display());
    }
    Ok(())
}

#[derive(Serialize)]
struct LmOutput<'a> {
    semu_version: &'static str,
    task: &'static str,
    model: String,
    #[serde(flatten)]
    eval: &'a LmEvaluation,
    forget: String,
    retain: String,
    holdout: String,
    device: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retrained: Option<(String, &'a LmEvaluation)>,
}

/// A causal LM: the LLM-unlearning measures for --model and --retrained, side by side.
fn run_lm(a: &Args, device: tch::Device, sets: EvalData, why: &str) -> CmdResult {
    let mine = score_lm(&a.model, a, device, sets)?;
    let reference = a.retrained.as_deref().map(|p| score_lm(p, a, device, sets)).transpose()?;
    println!("semu eval: {} (task causal-lm: {why})", a.model.display());
    println!(
        "texts       forget {}, retain {}, holdout (--test) {}",
        mine.forget.texts,
        mine.retain.map_or(0, |r| r.texts),
        mine.holdout.map_or(0, |h| h.texts)
    );
    let r = reference.as_ref();
    let head = if r.is_some() {
        format!("{:>12}{:>12}{:>10}", "model", "retrained", "|Δ|")
    } else {
        format!("{:>12}", "model")
    };
    println!("  {:<28}{head}", "measure");
    let line = |name: &str, f: &dyn Fn(&LmEvaluation) -> Option<f64>| {
        let Some(m) = f(&mine) else { return };
        match r.and_then(f) {
            Some(x) => println!("  {name:<28}{m:>12.3}{x:>12.3}{:>10.3}", (m - x).abs()),
            None => println!("  {name:<28}{m:>12.3}"),
        }
    };
    line("forget perplexity", &|e| Some(e.forget.perplexity));
    line("retain perplexity", &|e| e.retain.map(|x| x.perplexity));
    line("holdout perplexity", &|e| e.holdout.map(|x| x.perplexity));
    line("forget memorisation (%)", &|e| Some(e.forget.memorisation));
    line("retain memorisation (%)", &|e| e.retain.map(|x| x.memorisation));
    line("holdout memorisation (%)", &|e| e.holdout.map(|x| x.memorisation));
    line("forget extraction strength (%)", &|e| Some(e.forget.extraction_strength));
    line("Min-K% AUC forget vs holdout", &|e| e.min_k_auc);
    println!("  (Min-K% AUC 0.5: the attack cannot tell the forget texts from unseen ones; K = {})", mine.min_k);
    if let Some(p) = &a.json {
        let out = LmOutput {
            semu_version: env!("CARGO_PKG_VERSION"),
            task: "causal-lm",
            model: a.model.display().to_string(),
            eval: &mine,
            forget: shown(&a.forget),
            retain: shown(&a.retain),
            holdout: shown(&a.test),
            device: device_name(device),
            retrained: a.retrained.as_ref().zip(reference.as_ref()).map(|(p, e)| (p.display().to_string(), e)),
        };
        let json = serde_json::to_string_pretty(&out)?;
        write_atomic(p, json.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        println!("json        {}", p.display());
    }
    Ok(())
}

fn print_table(a: &Args, m: &Evaluation, r: Option<&Evaluation>, gap: Option<f64>) {
    let s = &m.samples;
    println!("semu eval: {}", a.model.display());
    match &m.forget_classes {
        Some(c) => println!(
            "mode        class forgetting {c:?}: TA and MIA non-members use the test samples of the other classes"
        ),
        None => println!("mode        random-sample forgetting"),
    }
    println!(
        "samples     forget {}, retain {}, test {} (MIA: {} retain members vs {} test non-members, seed {})",
        s.forget, s.retain, s.test, s.mia_members, s.test, a.seed
    );
    let cell = |v: Option<f64>| v.map_or_else(|| format!("{:>11}", "—"), |v| format!("{v:>10.2}%"));
    let line = |name: &str, mine: Option<f64>, theirs: Option<f64>, diff: bool| {
        let d = match (mine, theirs) {
            (Some(x), Some(y)) if diff => format!("{:>9.2}", (x - y).abs()),
            _ => String::new(),
        };
        println!("  {name:<26}{}{}{d}", cell(mine), if r.is_some() { cell(theirs) } else { String::new() });
    };
    let head = if r.is_some() {
        format!("{:>11}{:>11}{:>9}", "model", "retrained", "|Δ|")
    } else {
        format!("{:>11}", "model")
    };
    println!("  {:<26}{head}", "metric (%)");
    let (mm, rm) = (&m.metrics, r.map(|r| r.metrics));
    line("UA (100 − forget acc)", Some(mm.ua), rm.map(|x| x.ua), true);
    line("RA (retain acc)", Some(mm.ra), rm.map(|x| x.ra), true);
    line("TA (test acc)", Some(mm.ta), rm.map(|x| x.ta), true);
    line("MIA-efficacy", Some(mm.mia), rm.map(|x| x.mia), true);
    if let Some(g) = gap {
        println!("  {:<26}{:>31.2}", "Avg. Gap", g);
    }
    if m.forget_classes.is_some() {
        line(
            "test acc, forgotten class",
            m.forget_class_test_accuracy,
            r.and_then(|r| r.forget_class_test_accuracy),
            false,
        );
    }
    line("test acc, all classes", Some(m.test_accuracy_all), r.map(|r| r.test_accuracy_all), false);
    // Attack accuracy: how well the SVM tells its own members from non-members (50 = blind).
    println!("  MIA-efficacy by feature, with the attack's accuracy on its training set (50 = blind)");
    for f in Feature::ALL {
        let acc = |e: &Evaluation| format!("{:.1}", e.mia_attack_accuracy.get(f));
        let attack = match r {
            Some(r) => format!("   attack {} / {}", acc(m), acc(r)),
            None => format!("   attack {}", acc(m)),
        };
        let theirs = r.map(|r| cell(Some(r.mia_features.get(f)))).unwrap_or_default();
        println!("    {:<24}{}{theirs}{attack}", f.name(), cell(Some(m.mia_features.get(f))));
    }
}

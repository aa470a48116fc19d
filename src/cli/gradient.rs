//! `semu gradient`: SEMU's forget-set gradient (SEMU.md step 2) on its own, whole or one shard of
//! it, for machines of an existing cluster engine (Kubernetes Indexed Jobs, Slurm job arrays);
//! `semu gradient reduce` adds the parts; `semu unlearn --gradient` continues from the sum.
use super::data_args::Loaded;
use super::CmdResult;
use anyhow::anyhow;
use semu::onnx::OnnxModel;
use semu::report::sha256_file;
use semu::semu::gradient::{forget_gradient_part, Shard};
use semu::semu::gradient_file::{self, GivenGradient, GradientFile, GradientMeta, LayerShape, Opened, Origin};
use semu::semu::Layer;
use semu::task::{Model, Spec, TaskKind};
use semu::weights::BindReport;
use std::path::{Path, PathBuf};

/// The environment variables that carry a shard index, in the order they are read.
pub const INDEX_VARS: [&str; 2] = ["JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID"];

/// Compute the forget-set gradient of the weights `semu unlearn` would adapt (f64, safetensors),
/// for the whole forget set or one shard of it; `reduce` adds shards.
#[derive(clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples (deploy/README.md has a Kubernetes Indexed Job and a Slurm array):
  semu gradient --model m.onnx --forget f.npz --shard 0/3 --out part-0.safetensors   # … 1/3, 2/3
  semu gradient --model m.onnx --forget f.npz --shards 3 --out part-$JOB_COMPLETION_INDEX.safetensors
  semu gradient reduce part-*.safetensors --out G.safetensors
  semu unlearn --model m.onnx --forget f.npz --gradient G.safetensors --out forgot.onnx

Shard I of N holds whole batches of --batch-size, in sample order: batches ⌊I·B/N⌋ to
⌊(I+1)·B/N⌋ − 1 of the forget set's B batches, so the parts add up to the gradient one process
computes. Give every part the same model, data, selection, --batch-size and --layers as the
unlearn run: its command line works here, with --out naming the part (of the SEMU settings only
--batch-size, --layers, --seed and --device matter)."
)]
pub struct Args {
    #[command(subcommand)]
    cmd: Option<Sub>,
    /// The deployed ONNX model.
    #[arg(long, required = true)]
    model: Option<PathBuf>,
    /// The data to forget (or choose it from --train, as for `semu unlearn`).
    #[arg(long)]
    forget: Option<PathBuf>,
    #[command(flatten)]
    data: super::data_args::DataArgs,
    /// Where to write the gradient (safetensors, written atomically).
    #[arg(long, required = true, value_name = "OUT.safetensors")]
    out: Option<PathBuf>,
    /// Compute shard I of N (0 ≤ I < N) only.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    shard: Option<String>,
    /// Compute one shard of N, its index read from JOB_COMPLETION_INDEX (Kubernetes Indexed Job)
    /// or SLURM_ARRAY_TASK_ID (Slurm job array, --array=0-(N-1)).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// What the model is for [default: inferred from the graph, as for `semu unlearn`].
    #[arg(long, value_enum)]
    task: Option<TaskKind>,
    /// The graph input that image / array data (`x`) feeds, when the model has several.
    #[arg(long)]
    input_name: Option<String>,
    /// The output the task reads, when the model has several outputs.
    #[arg(long)]
    output_name: Option<String>,
    #[command(flatten)]
    hp: super::config::SemuFlags,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Add the parts of one gradient (f64, in shard order), refusing parts that do not belong
    /// together.
    Reduce {
        /// The parts (`semu gradient --shard …` outputs), every shard exactly once.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        /// Where to write the sum.
        #[arg(long, value_name = "G.safetensors")]
        out: PathBuf,
    },
}

pub fn run(mut a: Args, quiet: bool) -> CmdResult {
    match a.cmd.take() {
        Some(Sub::Reduce { parts, out }) => reduce(&parts, &out),
        None => gradient(a, quiet),
    }
}

/// The shard asked for and where its index came from; None for the whole forget set.
/// `env` reads a variable (the process environment, or a test's).
pub fn shard_of(
    shard: Option<&str>,
    shards: Option<usize>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(Shard, String)>> {
    if let Some(s) = shard {
        let parsed = s.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        let (i, n) = parsed.ok_or_else(|| anyhow!("--shard {s}: expected I/N, e.g. --shard 0/4"))?;
        return Ok(Some((Shard::new(i, n).map_err(|e| anyhow!("--shard {s}: {e}"))?, "--shard".into())));
    }
    let Some(n) = shards else { return Ok(None) };
    let found: Vec<(&str, String)> = INDEX_VARS.iter().filter_map(|v| env(v).map(|x| (*v, x))).collect();
    let (var, value) = match found.as_slice() {
        [] => {
            return Err(anyhow!(
                "--shards {n}: neither JOB_COMPLETION_INDEX (Kubernetes Indexed Job) nor SLURM_ARRAY_TASK_ID \
                 (Slurm job array) is set: run it as one of those, or give --shard I/{n}"
            ))
        }
        [(v1, x1), (v2, x2)] if x1.trim() != x2.trim() => {
            return Err(anyhow!("--shards {n}: {v1}={x1} and {v2}={x2} disagree: unset one"))
        }
        [(v, x), ..] => (*v, x.clone()),
    };
    let i: usize =
        value.trim().parse().map_err(|_| anyhow!("--shards {n}: {var}={value} is not a shard index (0, 1, …)"))?;
    let shard = Shard::new(i, n).map_err(|e| {
        let hint = if var == "SLURM_ARRAY_TASK_ID" {
            format!(" (submit with --array=0-{})", n.max(1) - 1)
        } else {
            String::new()
        };
        anyhow!("--shards {n}: {var}={value}: {e}{hint}")
    })?;
    Ok(Some((shard, var.to_string())))
}

fn gradient(mut a: Args, quiet: bool) -> CmdResult {
    let shard = shard_of(a.shard.as_deref(), a.shards, |v| std::env::var(v).ok()).map_err(super::usage)?;
    let (model_arg, out) = (a.model.clone().expect("required"), a.out.clone().expect("required"));
    let (cfg, device) = a.hp.resolve(a.data.has_retain(None)).map_err(super::usage)?;
    a.data.check_usage(a.forget.as_deref(), None).map_err(super::usage)?;
    let device = super::device(&device)?;
    let model_path = a.remote.model(&model_arg)?;
    a.forget = a.forget.as_deref().map(|p| a.remote.file(p)).transpose()?;
    a.data.train = a.data.train.as_deref().map(|p| a.remote.file(p)).transpose()?;
    let inputs: Vec<&Path> = [Some(&model_path), a.forget.as_ref(), a.data.train.as_ref()]
        .into_iter()
        .flatten()
        .map(PathBuf::as_path)
        .collect();
    semu::paths::check_output(&out, "--out", &inputs).map_err(super::usage)?;
    tch::manual_seed(cfg.seed as i64);
    let mut model = OnnxModel::load(&model_path)?;
    let bound = a.weights.bind(&mut model, &a.remote)?;
    // The same weights `semu unlearn` adapts: a quantized model's float working copy.
    let lifted = semu::semu::quantized::lift(&model)?;
    let work = lifted.as_ref().map_or(&model, |l| &l.model);
    let (task, why) = match a.task {
        Some(t) => (t, "given with --task".to_string()),
        None => semu::task::infer(&model, a.output_name.as_deref()),
    };
    tracing::info!("task: {} ({why})", task.name());
    let (cfg, _) = a.hp.resolve_for(a.data.has_retain(None), task).map_err(super::usage)?;
    let layers =
        semu::semu::unlearn::select_layers(semu::semu::find_layers(work), &cfg.layers).map_err(super::usage)?;
    let mut spec = a.data.spec(&model, a.input_name.as_deref(), &a.remote)?;
    spec.text.labels_required = task == TaskKind::Classify;
    let loaded = a.data.load(&spec, a.forget.as_deref(), None, None, cfg.seed)?;
    let forget = loaded.forget.as_ref();
    if forget.is_empty() {
        return Err(anyhow!("{}: the forget set is empty", forget.source()).into());
    }
    let task_spec =
        Spec { task: Some(task), input: a.input_name.clone(), output: a.output_name.clone(), ..Default::default() };
    let mut net = Model::new(work, device, layers.iter().map(|l| l.name.clone()).collect(), &task_spec)?;
    let classes = net.width(forget)?;
    net.check_labels(forget, classes)?;
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let whole = Shard::new(0, 1)?;
    let (sh, from) = shard.clone().unwrap_or((whole, "whole".into()));
    let range = sh.samples(forget.len(), cfg.batch_size);
    if range.is_empty() {
        tracing::warn!(
            "shard {} of {}: no batch to compute ({} batches of {} in all): its gradient is zero",
            sh.index,
            sh.count,
            forget.len().div_ceil(cfg.batch_size),
            cfg.batch_size
        );
    }
    use semu::semu::Observer;
    let mut progress = super::progress::Progress::new(quiet);
    progress.phase("gradient");
    let total = range.len();
    let mut g =
        forget_gradient_part(&mut net, &names, forget, cfg.batch_size, Some(sh), tch::Kind::Double, None, |d| {
            progress.gradient_progress(d, total)
        })?;
    let mut tensors = Vec::new();
    for l in &layers {
        let t = g.remove(&l.name).expect("a gradient per layer");
        if t.f_isfinite()?.f_all()?.int64_value(&[]) != 1 {
            return Err(anyhow!(
                "{}: the forget-set gradient of weight '{}' is NaN or Inf: the model's outputs on {} are not finite",
                model_path.display(),
                l.name,
                forget.source()
            )
            .into());
        }
        tensors.push(t);
    }
    let origin = origin(&sha256_file(&model_path)?, bound.as_ref(), &loaded, task, cfg.batch_size, &layers)?;
    let meta = GradientMeta {
        origin,
        selection: loaded.selection.as_ref().map(|s| s.selection.clone()),
        shards: sh.count,
        parts: vec![sh.index],
        samples: range.len(),
        index_from: from.clone(),
        semu_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    GradientFile { meta, tensors }.write(&out)?;
    let which = match &shard {
        Some((s, from)) => format!("shard {} of {} (index from {from})", s.index, s.count),
        None => "the whole forget set".to_string(),
    };
    println!(
        "gradient    {which}: samples {}..{} of {}, batch size {}, {} layer(s), f64",
        range.start,
        range.end,
        forget.len(),
        cfg.batch_size,
        layers.len()
    );
    println!("written     {}", out.display());
    Ok(())
}

/// What a gradient of this run is of (`model_sha256`: the model file's).
pub fn origin(
    model_sha256: &str,
    bound: Option<&BindReport>,
    loaded: &Loaded,
    task: TaskKind,
    batch_size: usize,
    layers: &[Layer],
) -> anyhow::Result<Origin> {
    let weights_sha256 = match bound {
        Some(b) => b.files.iter().map(|f| sha256_file(f)).collect::<semu::Result<_>>()?,
        None => Vec::new(),
    };
    Ok(Origin {
        model_sha256: model_sha256.to_string(),
        weights_sha256,
        forget_sha256: loaded.forget_sha256.clone(),
        forget_samples: loaded.forget.len(),
        task: task.name().to_string(),
        batch_size,
        layers: layers.iter().map(|l| LayerShape { name: l.name.clone(), shape: l.dims.clone() }).collect(),
    })
}

/// `semu unlearn --gradient`: the file's gradients of `want.layers`, once checked against `want`.
pub fn given(path: &Path, want: &Origin) -> anyhow::Result<GivenGradient> {
    let g = Opened::open(path)?;
    for w in g.check_for(want)? {
        tracing::warn!("{w}");
    }
    let names: Vec<String> = want.layers.iter().map(|l| l.name.clone()).collect();
    let m = &g.meta;
    tracing::info!("gradient: {} ({} shard(s), {} samples)", path.display(), m.shards, m.samples);
    Ok(g.given(&names)?)
}

fn reduce(parts: &[PathBuf], out: &Path) -> CmdResult {
    let inputs: Vec<&Path> = parts.iter().map(PathBuf::as_path).collect();
    semu::paths::check_output(out, "--out", &inputs).map_err(super::usage)?;
    let sum = gradient_file::reduce(parts)?;
    sum.write(out)?;
    let m = &sum.meta;
    println!(
        "reduced     {} part(s) = {} shard(s): {} samples, batch size {}, {} layer(s)",
        parts.len(),
        m.shards,
        m.samples,
        m.origin.batch_size,
        m.origin.layers.len()
    );
    println!("written     {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shard_of;

    #[test]
    fn the_shard_index_comes_from_the_flag_or_a_schedulers_variable() {
        let none = |_: &str| None;
        assert!(shard_of(None, None, none).unwrap().is_none());
        let (s, from) = shard_of(Some("2/3"), None, none).unwrap().unwrap();
        assert_eq!((s.index, s.count, from.as_str()), (2, 3, "--shard"));
        assert!(shard_of(Some("3/3"), None, none).unwrap_err().to_string().contains("out of range"));
        assert!(shard_of(Some("x"), None, none).unwrap_err().to_string().contains("expected I/N"));
        let k8s = |v: &str| (v == "JOB_COMPLETION_INDEX").then(|| "1".to_string());
        let (s, from) = shard_of(None, Some(4), k8s).unwrap().unwrap();
        assert_eq!((s.index, from.as_str()), (1, "JOB_COMPLETION_INDEX"));
        let slurm = |v: &str| (v == "SLURM_ARRAY_TASK_ID").then(|| "5".to_string());
        let e = shard_of(None, Some(4), slurm).unwrap_err().to_string();
        assert!(e.contains("SLURM_ARRAY_TASK_ID=5") && e.contains("--array=0-3"), "{e}");
        let e = shard_of(None, Some(4), none).unwrap_err().to_string();
        assert!(e.contains("JOB_COMPLETION_INDEX") && e.contains("SLURM_ARRAY_TASK_ID"), "{e}");
        let both = |v: &str| Some(if v == "JOB_COMPLETION_INDEX" { "0" } else { "1" }.to_string());
        assert!(shard_of(None, Some(4), both).unwrap_err().to_string().contains("disagree"));
    }
}

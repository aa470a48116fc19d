//! `semu eval --task diffusion`: SEMU-diffusion.md §4.4 for --model, --original and --retrained
//! side by side (forget rate, other-class accuracy, where the class went, FD-other, time).
//! The schedule and input names come from each model's `semu.diffusion.*` metadata, overridden
//! for all of them by the shared diffusion flags (--schedule, --timesteps, --inputs …).
use super::super::unlearn::write_atomic;
use super::super::{usage, CmdResult, Exit};
use super::Args;
use anyhow::{anyhow, Context};
use report::{table, write_report};
use semu::diffusion::{self, Network, SampleOptions, Settings, Vae};
use semu::engine::{device_name, Plan, PlanOptions, Registry};
use semu::eval::diffusion::{evaluate, real_features, ClassEvaluation, Judge, NetworkInputs, Protocol};
use semu::onnx::OnnxModel;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::Tensor;

mod report;

/// The diffusion evaluation's flags (SEMU-diffusion.md §4.4 defaults).
#[derive(clap::Args)]
#[command(next_help_heading = "Diffusion (--task diffusion)")]
pub(super) struct ProtocolArgs {
    /// The classifier that labels the samples (ONNX: images in [0, 1] → [batch, K] logits first).
    #[arg(long, value_name = "J.onnx")]
    judge: Option<PathBuf>,
    /// The judge's value read as features for the Fréchet distance [default: its 2nd output,
    /// else the input of the Gemm/MatMul that makes the logits].
    #[arg(long, value_name = "NAME")]
    judge_features: Option<String>,
    /// The model before unlearning, scored beside --model.
    #[arg(long, value_name = "O.onnx")]
    original: Option<PathBuf>,
    /// Samples per class.
    #[arg(long, default_value_t = 100)]
    n: usize,
    /// DDIM steps S.
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// 0 = deterministic DDIM, 1 = DDPM's posterior variance.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Classifier-free guidance w (authors' convention, scale 1 + w).
    #[arg(long, default_value_t = 2.0)]
    guidance: f64,
    /// Text-conditioned models: the prompt of class k, repeated for every class in the judge's
    /// class order (class k's samples are generated from it; --forget-class indexes them).
    #[arg(long = "class-prompt", value_name = "TEXT")]
    class_prompts: Vec<String>,
    /// Text-conditioned models: the forgotten concept, one of the --class-prompt texts (instead
    /// of --forget-class).
    #[arg(long = "forget-prompt", value_name = "TEXT")]
    forget_prompt: Option<String>,
    /// Write sample grids (PNG, the first 16 of each class per row), the samples (.npz) and
    /// report.md here.
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
}

impl ProtocolArgs {
    /// Flags that only a diffusion evaluation reads are a usage error elsewhere.
    pub(super) fn refuse_for(&self, task: &str) -> Result<(), Exit> {
        let given = [
            ("--judge", self.judge.is_some()),
            ("--judge-features", self.judge_features.is_some()),
            ("--original", self.original.is_some()),
            ("--report-dir", self.report_dir.is_some()),
            ("--class-prompt", !self.class_prompts.is_empty()),
            ("--forget-prompt", self.forget_prompt.is_some()),
        ];
        match given.iter().find(|g| g.1) {
            Some((flag, _)) => Err(usage(anyhow!("{flag} is for --task diffusion; this model's task is {task}"))),
            None => Ok(()),
        }
    }
}

/// A model to score, ready to sample.
struct Scored {
    role: &'static str,
    path: PathBuf,
    model: OnnxModel,
    settings: Settings,
    inputs: NetworkInputs,
    /// A text-conditioned model's states of the class prompts, the null prompt last.
    context: Option<Tensor>,
    /// A latent model's VAE (its decoder makes the images the judge sees).
    vae: Option<Vae>,
}

#[derive(Serialize)]
struct ModelOut<'a> {
    path: String,
    #[serde(flatten)]
    eval: &'a ClassEvaluation,
}

#[derive(Serialize)]
struct Output<'a> {
    semu_version: &'static str,
    task: &'static str,
    forget_class: i64,
    /// A text-conditioned model's class prompts (class k = prompt k).
    #[serde(skip_serializing_if = "Option::is_none")]
    class_prompts: Option<&'a [String]>,
    judge: String,
    judge_features: Option<&'a str>,
    test: Option<String>,
    real_images_other: Option<i64>,
    per_class: usize,
    steps: usize,
    steps_taken: usize,
    eta: f64,
    guidance: f64,
    seed: i64,
    device: String,
    wall_seconds: f64,
    model: ModelOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<ModelOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retrained: Option<ModelOut<'a>>,
}

fn prepare(
    role: &'static str,
    path: &Path,
    model: Option<OnnxModel>,
    a: &Args,
    device: tch::Device,
) -> Result<Scored, Exit> {
    let mut model = match model {
        Some(m) => m,
        None => OnnxModel::load(path)?,
    };
    if role == "model" {
        a.weights.bind(&mut model, &Default::default())?; // --weights are --model's
    }
    let name = path.display().to_string();
    let props = model.proto.metadata_props.iter().map(|p| (p.key(), p.value()));
    let mut overrides = a.overrides.overrides().map_err(usage)?;
    overrides.tokenizer = a.decode.tokenizer.clone();
    let mut settings = Settings::resolve(&name, props, &overrides).map_err(usage)?;
    let d = &a.diffusion;
    // A text model's "classes" are the --class-prompt texts, in the judge's order.
    let context = match (&settings.text, d.class_prompts.is_empty()) {
        (Some(text), false) => {
            let mut rows: Vec<&str> = d.class_prompts.iter().map(String::as_str).collect();
            rows.push(&text.null_prompt);
            settings.num_classes = d.class_prompts.len() as i64;
            Some(semu::diffusion::prompts::encode(text, &rows, device)?)
        }
        (Some(_), true) => {
            return Err(usage(anyhow!(
                "{name} is conditioned on text: give --class-prompt \"…\" for every class, in the judge's class order"
            )))
        }
        (None, false) => return Err(usage(anyhow!("--class-prompt: {name} is conditioned on classes"))),
        (None, true) => None,
    };
    let inputs = NetworkInputs::of(&model, &settings).map_err(usage)?;
    let vae = match &settings.latent {
        Some(l) if l.decoder.is_none() => {
            return Err(usage(anyhow!(
                "{name} is a latent model: its samples are latents; give its VAE decoder with --vae-decoder FILE \
                 (or the metadata semu.diffusion.vae_decoder) so that the judge sees images"
            )))
        }
        Some(l) => Some(Vae::load_decoder(l, device)?),
        None => None,
    };
    Ok(Scored { role, path: path.to_path_buf(), model, settings, inputs, context, vae })
}

impl Scored {
    /// The shape of the images the judge sees: x's, or a latent model's decoded blank latents.
    fn judged_image(&self) -> anyhow::Result<Vec<i64>> {
        match &self.vae {
            Some(v) => {
                let z = Tensor::zeros([&[1][..], &self.inputs.image].concat(), (tch::Kind::Float, tch::Device::Cpu));
                let size = v.decode(&z).with_context(|| format!("decoding {}'s latents", self.path.display()))?.size();
                Ok(size[1..].to_vec())
            }
            None => Ok(self.inputs.image.clone()),
        }
    }
}

/// The real images of --test (x in [0, 1], N×C×H×W; y) on the CPU.
fn real_images(path: &Path, image: &[i64]) -> anyhow::Result<(Tensor, Vec<i64>)> {
    let ds = semu::data::open(path)?;
    let all: Vec<usize> = (0..ds.len()).collect();
    let (x, y) = ds.batch(&all).with_context(|| format!("--test {}", path.display()))?;
    let x = x.to_kind(tch::Kind::Float);
    if x.size()[1..] != *image {
        return Err(anyhow!("--test {}: images of {:?}, the model makes {image:?}", path.display(), &x.size()[1..]));
    }
    let (lo, hi) = (x.min().double_value(&[]), x.max().double_value(&[]));
    if !(lo >= -1e-3 && hi <= 1.0 + 1e-3) {
        return Err(anyhow!(
            "--test {}: pixel values span [{lo}, {hi}]; the judge takes images in [0, 1]",
            path.display()
        ));
    }
    Ok((x, Vec::<i64>::try_from(y.to_kind(tch::Kind::Int64))?))
}

pub(super) fn run(a: &Args, model: OnnxModel, device: tch::Device, why: &str) -> CmdResult {
    let started = Instant::now();
    let d = &a.diffusion;
    let judge_path = d.judge.as_ref().ok_or_else(|| usage(anyhow!("--task diffusion ({why}) needs --judge J.onnx")))?;
    let c = match (&a.forget_class[..], &d.forget_prompt) {
        ([c], None) => *c,
        ([], Some(p)) => d.class_prompts.iter().position(|q| q == p).ok_or_else(|| {
            usage(anyhow!("--forget-prompt \"{p}\" is none of the --class-prompt texts; give it as one of them"))
        })? as i64,
        _ => return Err(usage(anyhow!("--task diffusion needs one --forget-class C (or --forget-prompt TEXT)"))),
    };
    for (flag, p) in [("--forget", &a.forget), ("--retain", &a.retain)] {
        if p.is_some() {
            return Err(usage(anyhow!("{flag} is not read by --task diffusion (the samples are generated)")));
        }
    }
    if d.n == 0 {
        return Err(usage(anyhow!("--n 0: sample at least one image per class")));
    }
    if !(0.0..=1.0).contains(&d.eta) {
        return Err(usage(anyhow!("--eta {}: must lie in [0, 1]", d.eta)));
    }
    let seed = i64::try_from(a.seed).map_err(|_| usage(anyhow!("--seed {}: at most {}", a.seed, i64::MAX)))?;
    let mut inputs: Vec<&Path> = vec![&a.model, judge_path];
    inputs.extend([&d.original, &a.retrained, &a.test].into_iter().flatten().map(PathBuf::as_path));
    if let Some(j) = &a.json {
        semu::paths::check_output(j, "--json", &inputs).map_err(usage)?;
    }
    if let Some(r) = &d.report_dir {
        semu::paths::check_output_dir(r, "--report-dir").map_err(usage)?;
    }

    let mut models = vec![prepare("model", &a.model, Some(model), a, device)?];
    for (role, p) in [("original", &d.original), ("retrained", &a.retrained)] {
        if let Some(p) = p {
            models.push(prepare(role, p, None, a, device)?);
        }
    }
    let first = &models[0];
    let (k, image) = (first.settings.num_classes, first.inputs.image.clone());
    let judged_image = first.judged_image()?;
    for m in &models[1..] {
        if m.settings.num_classes != k || m.inputs.image != image || m.judged_image()? != judged_image {
            return Err(usage(anyhow!(
                "--{} {}: {} classes of {:?} images; --model has {k} of {image:?}",
                m.role,
                m.path.display(),
                m.settings.num_classes,
                m.inputs.image
            )));
        }
    }
    if !(0..k).contains(&c) {
        return Err(usage(anyhow!("--forget-class {c}: {} has classes 0..{}", a.model.display(), k - 1)));
    }
    if k < 2 {
        return Err(usage(anyhow!("{}: one class; nothing to compare the forgotten class with", a.model.display())));
    }
    let steps_taken = diffusion::step_sequence(first.settings.timesteps, d.steps).map_err(usage)?.len();

    let judge = Judge::load(judge_path, d.judge_features.as_deref(), device)?;
    let sampler = SampleOptions { steps: d.steps, eta: d.eta, guidance: d.guidance, batch: a.batch_size };
    let protocol = Protocol { forget_class: c, per_class: d.n, sampler, seed };
    // Probe the judge on one blank image before minutes of sampling.
    let blank = Tensor::zeros([&[1][..], &judged_image].concat(), (tch::Kind::Float, tch::Device::Cpu));
    judge.judge(&blank, k, 1).with_context(|| match first.context {
        Some(_) => format!("{k} --class-prompt given: give one per class of the judge, in its class order"),
        None => format!("{} has {k} classes", a.model.display()),
    })?;
    let real = match &a.test {
        Some(p) => {
            let (x, y) = real_images(p, &judged_image)?;
            Some(real_features(&judge, &x, &y, &protocol, k).with_context(|| format!("--test {}", p.display()))?)
        }
        None => None,
    };

    let mut results = Vec::new();
    for m in &models {
        let plan = Plan::new(&m.model, &Registry::standard(), &PlanOptions { device, ..Default::default() })?;
        let net = Network {
            plan: &plan,
            settings: &m.settings,
            t_kind: m.inputs.t_kind,
            y_kind: m.inputs.y_kind,
            device,
            context: m.context.as_ref(),
        };
        let decode = m.vae.as_ref().map(|v| move |z: &Tensor| v.decode(z));
        let decode = decode.as_ref().map(|f| f as semu::eval::diffusion::Decode);
        let mut meter = super::super::progress::Meter::new(format!("sampling {}", m.role), "steps");
        let (eval, x) = evaluate(&net, &image, decode, &judge, real.as_ref(), &protocol, &mut |done, total| {
            meter.set(done as u64, Some(total as u64))
        })
        .with_context(|| format!("evaluating {}", m.path.display()))?;
        meter.finish();
        if eval.non_finite_samples > 0 {
            eprintln!("warning: {}: {} samples hold NaN/Inf (no FD)", m.path.display(), eval.non_finite_samples);
        }
        results.push((eval, x));
    }

    let table = table(&models, &results, c, k);
    let wall_seconds = started.elapsed().as_secs_f64();
    println!("semu eval: {} (task diffusion: {why})", a.model.display());
    println!(
        "protocol    {} samples per class × {k} classes, DDIM {steps_taken} steps, η {}, w {}, seed {seed}; judge {} \
         (features: {}); real images: {}",
        d.n,
        d.eta,
        d.guidance,
        judge_path.display(),
        judge.features.as_deref().unwrap_or("none"),
        match (&a.test, &real) {
            (Some(p), Some(r)) => format!("{} ({} of classes other than {c})", p.display(), r.size()[0]),
            _ => "none (no FD; pass --test)".into(),
        }
    );
    if first.context.is_some() {
        let legend: Vec<String> = d.class_prompts.iter().enumerate().map(|(i, p)| format!("{i} \"{p}\"")).collect();
        println!("prompts     {}", legend.join(", "));
    }
    print!("{table}");
    println!("wall time   {wall_seconds:.1} s on {}", device_name(device));

    let out_of = |i: usize| ModelOut { path: models[i].path.display().to_string(), eval: &results[i].0 };
    let role = |r: &str| models.iter().position(|m| m.role == r).map(out_of);
    let out = Output {
        semu_version: env!("CARGO_PKG_VERSION"),
        task: "diffusion",
        forget_class: c,
        class_prompts: models[0].context.is_some().then_some(&d.class_prompts[..]),
        judge: judge_path.display().to_string(),
        judge_features: judge.features.as_deref(),
        test: a.test.as_ref().map(|p| p.display().to_string()),
        real_images_other: real.as_ref().map(|r| r.size()[0]),
        per_class: d.n,
        steps: d.steps,
        steps_taken,
        eta: d.eta,
        guidance: d.guidance,
        seed,
        device: device_name(device),
        wall_seconds,
        model: out_of(0),
        original: role("original"),
        retrained: role("retrained"),
    };
    if let Some(p) = &a.json {
        let json = serde_json::to_string_pretty(&out)?;
        write_atomic(p, json.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        println!("json        {}", p.display());
    }
    if let Some(dir) = &d.report_dir {
        write_report(dir, &models, &results, &table, &out, k as usize)?;
        println!("report      {}", dir.join("report.md").display());
    }
    Ok(())
}

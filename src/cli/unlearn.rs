//! `semu unlearn`: SEMU on a deployed ONNX model (classifier or causal LM), exported as a
//! verified drop-in ONNX.
use super::{CmdResult, Exit};
use anyhow::{anyhow, Context};
use semu::audit::FileHash;
use semu::baselines::{self, BaselineSettings, Method, Outcome, Schedule};
use semu::data::{self, Dataset, Subset};
use semu::engine::device_name;
use semu::export::{changed_elements, weight_replacements_with};
use semu::onnx::OnnxModel;
use semu::report::{sha256_file, Accuracy, Hashes, LmBeforeAfter, TestAccuracy, UnlearnReport};
use semu::semu::Observer;
use semu::task::{Spec, TaskKind};
use semu::verify::gate;
use std::path::PathBuf;
use std::time::Instant;

/// Make a deployed ONNX model (classifier, text classifier, causal language model) forget data
/// with SEMU and write a verified drop-in ONNX.
#[derive(clap::Args)]
#[command(after_help = "Example (forget class 3 of the shipped digits model, no remaining data):\n  \
semu unlearn --model fixtures/digits/model.onnx --forget fixtures/digits/forget_class3.npz \\\n    \
--test fixtures/digits/test.npz --out digits-forgot3.onnx --report report.json\n\n\
Data: .npz files with `x` (float32, N×…, preprocessed as the model expects) and `y` (int64).\n\
Exit codes: 0 ok, 1 failure, 2 usage error, 3 the export failed verification (nothing written).")]
pub struct Args {
    /// The deployed ONNX model.
    #[arg(long)]
    model: PathBuf,
    /// The data to forget (or choose it from --train with --forget-class / --forget-fraction /
    /// --forget-indices).
    #[arg(long)]
    forget: Option<PathBuf>,
    #[command(flatten)]
    data: super::data_args::DataArgs,
    /// Where to write the unlearned model (external data, if any, is written beside it).
    #[arg(long, required_unless_present_any = ["out_weights", "out_patch"])]
    out: Option<PathBuf>,
    /// Also write the unlearned weights as safetensors: the --weights keys, types and
    /// `__metadata__` (or the initializer names), plus semu's provenance keys.
    #[arg(long, value_name = "OUT.safetensors")]
    out_weights: Option<PathBuf>,
    /// Write the unlearning patch: U, R, V per adapted weight (`semu patch apply|revert`).
    #[arg(long, value_name = "PATCH.safetensors")]
    out_patch: Option<PathBuf>,
    /// Quantized models: re-quantize the trained weights with the file's own scales and zero
    /// points (`keep`), or with new ones fitted to each trained weight's range (`recompute`:
    /// nothing saturates; the weights' scale initializers change too).
    #[arg(long, value_enum, default_value_t = Requantize::Keep)]
    requantize: Requantize,
    /// Remaining data; without it SEMU runs with no remaining data at all (α = 0).
    #[arg(long)]
    retain: Option<PathBuf>,
    /// Test data: accuracy before/after is reported (per forgotten class when it is one class).
    #[arg(long)]
    test: Option<PathBuf>,
    #[command(flatten)]
    hp: super::config::SemuFlags,
    /// SEMU, or a baseline on the same engine: rl (random labels on the forget data, + the
    /// remaining data when given), salun (rl on the weights of top forget-gradient magnitude),
    /// ft (fine-tune on the remaining data), ga (gradient ascent on the forget data), l1 (ft with
    /// an l1 penalty), retrain (PyTorch's default initialisation, then train on the remaining data).
    #[arg(long, value_enum, default_value_t = Method::Semu)]
    method: Method,
    /// salun: share of the weights (top forget-gradient magnitude) that may change.
    #[arg(long, default_value_t = 0.5)]
    mask_ratio: f64,
    /// l1: weight of the l1 penalty Σ|w| at the first epoch (it decays linearly to 0).
    #[arg(long, default_value_t = 5e-4)]
    l1: f64,
    /// Learning-rate schedule of the baselines [default: cosine for retrain, constant otherwise].
    #[arg(long, value_enum)]
    schedule: Option<Schedule>,
    /// Write the full report (JSON) here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write a report folder: report.json, report.md and plots (PNG + SVG) of the spectra,
    /// training curves and |ΔW| (files of the same names in it are replaced).
    #[arg(long, value_name = "DIR")]
    report_dir: Option<PathBuf>,
    /// What the model is for [default: inferred from the graph: integer token ids in and
    /// B×T×V logits out is a causal LM, anything else a classifier].
    #[arg(long, value_enum)]
    task: Option<TaskKind>,
    /// The graph input that image / array data (`x`) feeds, when the model has several.
    #[arg(long)]
    input_name: Option<String>,
    /// The output the task reads (N×C or B×T×V logits), when the model has several outputs.
    #[arg(long)]
    output_name: Option<String>,
    /// Start from this forget-set gradient (`semu gradient`, or `semu gradient reduce` of its
    /// shards) instead of computing it; it must be of this model, forget set and layers.
    #[arg(long, value_name = "G.safetensors")]
    gradient: Option<PathBuf>,
    /// Skip the ONNX Runtime / tract verification (the report says so).
    #[arg(long)]
    no_verify: bool,
    #[command(flatten)]
    diffusion: super::diffusion_args::DiffusionArgs,
    /// Diffusion, text-conditioned: the concept to forget, as a prompt (the forget images are
    /// its images).
    #[arg(long, value_name = "TEXT")]
    forget_prompt: Option<String>,
    /// Diffusion, text-conditioned: the prompt the concept's noise is pointed at [default: the
    /// null prompt, with --target-class null].
    #[arg(long, value_name = "TEXT")]
    target_prompt: Option<String>,
    /// Diffusion, text-conditioned, without forget images: sample this many from --forget-prompt
    /// with the input model itself (DDIM 25 steps, w 2, --seed) and forget those.
    #[arg(long, value_name = "N", conflicts_with_all = ["forget", "train", "test"])]
    generate_forget: Option<usize>,
    /// Diffusion, text-conditioned: a prompt whose images must not change (repeatable): each
    /// step also holds the model's prediction under one of them to the input model's.
    #[arg(long, value_name = "TEXT")]
    keep_prompt: Vec<String>,
    /// Diffusion: which weights train: all adaptable ones, or only the cross-attention
    /// projections (`attn2` in the consuming node's name: the authors' `xattn`).
    #[arg(long, value_enum, default_value_t = TrainLayers::All)]
    train_layers: TrainLayers,
    /// Diffusion, parity checks: take the batches, t, e and null masks from the `.npy` files in
    /// DIR (as tools/ddpm_parity_reference.py writes them) instead of drawing them.
    #[arg(long, value_name = "DIR", hide = true)]
    replay_draws: Option<PathBuf>,
    /// Parity checks: write DIR/semu.npz with each weight's projected gradient (g/…), ranks
    /// (k/…, per input channel for a conv) and trained R (r/…).
    #[arg(long, value_name = "DIR", hide = true)]
    dump_dir: Option<PathBuf>,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TrainLayers {
    All,
    CrossAttention,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Requantize {
    Keep,
    Recompute,
}

pub fn run(mut a: Args, quiet: bool) -> CmdResult {
    let started_at = semu::audit::now_rfc3339();
    let (cfg, device) = a.hp.resolve(a.data.has_retain(a.retain.as_deref())).map_err(super::usage)?;
    cfg.validate().map_err(super::usage)?;
    let extra = BaselineSettings { mask_ratio: a.mask_ratio, l1: a.l1, schedule: a.schedule };
    extra.validate().map_err(super::usage)?;
    if a.generate_forget.is_none() {
        a.data.check_usage(a.forget.as_deref(), a.retain.as_deref()).map_err(super::usage)?;
    }
    let device = super::device(&device)?;
    check_outputs(&a).map_err(super::usage)?;
    tch::manual_seed(cfg.seed as i64);
    let model_arg = a.model.display().to_string();
    a.model = a.remote.model(&a.model)?;
    a.forget = a.forget.as_deref().map(|p| a.remote.file(p)).transpose()?;
    a.data.train = a.data.train.as_deref().map(|p| a.remote.file(p)).transpose()?;
    a.retain = a.retain.as_deref().map(|p| a.remote.file(p)).transpose()?;
    a.test = a.test.as_deref().map(|p| a.remote.file(p)).transpose()?;
    a.gradient = a.gradient.as_deref().map(|p| a.remote.file(p)).transpose()?;
    check_outputs(&a).map_err(super::usage)?; // again, against the fetched inputs' local paths
    let _claim = a.out.as_deref().map(semu::onnx::staging::claim).transpose().map_err(super::usage)?;
    let mut model = OnnxModel::load(&a.model)?;
    let bound = a.weights.bind(&mut model, &a.remote)?;
    // A quantized model trains on its float working copy; the fold re-quantizes.
    let mut lifted = semu::semu::quantized::lift(&model)?;
    if lifted.is_none() && a.requantize == Requantize::Recompute {
        return Err(Exit {
            code: 2,
            err: anyhow!("--requantize recompute: {} has no quantized weights", a.model.display()),
        });
    }
    if let Some(l) = lifted.as_ref().filter(|_| a.requantize == Requantize::Recompute) {
        let fixed = l.not_rescalable();
        if !fixed.is_empty() {
            return Err(Exit {
                code: 2,
                err: anyhow!(
                    "--requantize recompute needs a per-tensor or per-channel scale that only its weight uses \
                     (and, in a QOperator model, no int32 bias made with it); these have none: {} (use \
                     --requantize keep)",
                    fixed.join(", ")
                ),
            });
        }
    }
    let work = lifted.as_ref().map_or(&model, |l| &l.model);
    let (task, why) = match a.task {
        Some(t) => (t, "given with --task".to_string()),
        None => semu::task::infer(&model, a.output_name.as_deref()),
    };
    tracing::info!("task: {} ({why})", task.name());
    let mut diffusion_flags = a.diffusion.overrides().map_err(super::usage)?;
    diffusion_flags.tokenizer = a.data.decode.tokenizer.clone();
    // Missing schedule settings are a usage error, found before any data is read.
    let diffusion_settings = match task {
        TaskKind::Diffusion => {
            let props = model.proto.metadata_props.iter().map(|p| (p.key(), p.value()));
            Some(
                semu::diffusion::Settings::resolve(&a.model.display().to_string(), props, &diffusion_flags)
                    .map_err(super::usage)?,
            )
        }
        _ => None,
    };
    if let Some(s) = &diffusion_settings {
        if s.text.is_some() && a.forget_prompt.is_none() {
            return Err(super::usage(anyhow!(
                "{} is conditioned on text: give the concept to forget with --forget-prompt \"…\" (and its \
                 images as the forget data) and where to send it with --target-prompt \"…\"",
                a.model.display()
            )));
        }
        if a.generate_forget.is_some() && (s.text.is_none() || a.forget_prompt.is_none()) {
            return Err(super::usage(anyhow!(
                "--generate-forget samples the images of --forget-prompt: it needs a text-conditioned model"
            )));
        }
        if s.text.is_some() && a.data.has_retain(a.retain.as_deref()) {
            return Err(super::usage(anyhow!(
                "remaining data for a text-conditioned model needs a prompt per image, which semu does not read \
                 yet: leave out --retain / --use-retain"
            )));
        }
    }
    if a.train_layers == TrainLayers::CrossAttention {
        a.hp.layers.push("*attn2*".into());
    }
    // The task's defaults for every setting not given (the file or flags still override).
    let (mut cfg, _) =
        a.hp.resolve_for(a.data.has_retain(a.retain.as_deref()), task).map_err(|e| Exit { code: 2, err: e })?;
    cfg.forget_classes = a.data.forget_class.clone();
    // A causal LM's rate 1e-2 is for SEMU's few R entries; the full-model baselines move every
    // weight and keep 1e-3, the rate their README rows were measured at (a file or flag overrides).
    if task == TaskKind::CausalLm && a.method != Method::Semu && a.hp.lr.is_none() && a.hp.config.is_none() {
        cfg.lr = semu::semu::Lr::Fixed(1e-3);
    }
    (cfg.replay_draws, cfg.dump_dir) = (a.replay_draws.clone(), a.dump_dir.clone());
    cfg.validate().map_err(|e| Exit { code: 2, err: e.into() })?;
    if cfg.precision == semu::engine::precision::Precision::F16 && device == tch::Device::Cpu {
        tracing::warn!(
            "--precision f16 on a CPU: most CPUs have no f16 units, so this is slower than f32; bf16 is the CPU's"
        );
    }
    // A --layers pattern that matches nothing is a usage error, found before any data is read.
    let layers =
        semu::semu::unlearn::select_layers(semu::semu::find_layers(work), &cfg.layers).map_err(super::usage)?;
    let mut progress = super::progress::Progress::new(quiet);
    progress.phase("reading data");
    let mut spec = a.data.spec(&model, a.input_name.as_deref(), &a.remote)?;
    spec.text.labels_required = task == TaskKind::Classify;
    let loaded = match (&diffusion_settings, a.generate_forget, a.forget_prompt.as_deref()) {
        (Some(s), Some(n), Some(prompt)) => {
            generated_forget(work, &a.model, s, prompt, n, cfg.seed, device, &mut progress)?
        }
        _ => a.data.load(&spec, a.forget.as_deref(), a.retain.as_deref(), a.test.as_deref(), cfg.seed)?,
    };
    // A latent model's images become its latents once, here, before the task noises them.
    let loaded = match (&diffusion_settings, a.generate_forget) {
        (Some(s), None) => in_model_space(&model, s, loaded, device).map_err(super::usage)?,
        _ => loaded,
    };
    let (forget, retain, test) = (loaded.forget.clone(), loaded.retain.clone(), loaded.test.clone());
    if a.method != Method::Semu && a.out_patch.is_some() {
        return Err(Exit { code: 2, err: anyhow!("--out-patch holds SEMU's U, R, V: it needs --method semu") });
    }
    if lifted.is_some() && a.out_patch.is_some() {
        return Err(Exit {
            code: 2,
            err: anyhow!(
                "{}: --out-patch adds float U R Vᵀ to the weights, but this model's weights are quantized \
                 integers: use --out (the re-quantized model) instead",
                a.model.display()
            ),
        });
    }
    if a.method.retain_modes() == [true] && retain.is_none() {
        return Err(Exit {
            code: 2,
            err: anyhow!("--method {} trains on the remaining data: give --retain", a.method.name()),
        });
    }
    let mut model_sha = None;
    if let Some(p) = &a.gradient {
        if a.method != Method::Semu {
            return Err(Exit {
                code: 2,
                err: anyhow!("--gradient is SEMU's forget-set gradient: it needs --method semu"),
            });
        }
        let sha = sha256_file(&a.model)?;
        let want = super::gradient::origin(&sha, bound.as_ref(), &loaded, task, cfg.batch_size, &layers)?;
        cfg.gradient = Some(super::gradient::given(p, &want)?);
        model_sha = Some(sha);
    }
    if task == TaskKind::Diffusion && a.method != Method::Semu {
        return Err(Exit {
            code: 2,
            err: anyhow!("--method {}: a diffusion model is unlearned with SEMU only (--method semu)", a.method.name()),
        });
    }
    if a.forget_prompt.is_some() && a.keep_prompt.is_empty() && retain.is_none() {
        // Measured on fixtures/text_ddpm (README "Forgetting a prompt"): 0.991 → 0.629 without.
        tracing::warn!(
            "no --keep-prompt and no remaining data: the concepts that share the forgotten prompt's \
             cross-attention are not held and may degrade; name the prompts to keep with --keep-prompt"
        );
    }
    let task_spec = Spec {
        task: Some(task),
        input: a.input_name.clone(),
        output: a.output_name.clone(),
        diffusion: diffusion_flags,
        prompts: a.forget_prompt.clone().map(|forget| semu::task::diffusion::Prompts {
            forget,
            target: a.target_prompt.clone(),
            keep: a.keep_prompt.clone(),
        }),
    };
    let mut u = baselines::run(
        work,
        forget.as_ref(),
        retain.as_deref(),
        test.as_deref(),
        a.method,
        &cfg,
        &extra,
        device,
        &task_spec,
        &mut progress,
    )?;
    let mut timings = u.timings.clone();
    progress.phase("fold");
    let t = Instant::now();
    // The input model's engine, when `u.net` no longer is (scales recomputed).
    let mut input_net = None;
    let (requantized, quantization) = match &mut lifted {
        Some(l) => {
            let formed = u.weights.formed_all()?;
            let recompute = a.requantize == Requantize::Recompute;
            let scales = if recompute { l.recompute(&formed)? } else { Default::default() };
            if recompute {
                // The engine's reference (gate, accuracy after) is the model with the new scales.
                let names = formed.keys().cloned().collect();
                let rescaled = semu::task::Model::new(&l.with_values(&scales)?, device, names, &task_spec)?;
                input_net = Some(std::mem::replace(&mut u.net, rescaled));
            }
            let (mut ints, mut q) = l.requantize(&formed)?;
            q.scales_recomputed = recompute;
            ints.extend(scales);
            (Some(ints), Some(q))
        }
        None => (None, None),
    };
    // SEMU's 2-D weights are formed here one at a time, each dropped once it is bytes.
    let trained: &dyn semu::engine::Overrides = requantized.as_ref().map_or(u.overrides(), |r| r);
    let weights = weight_replacements_with(&model, trained, &mut |d, n| progress.step("fold", d, n))?;
    drop(requantized);
    // Checked even with --no-verify: NaN weights are never a model worth writing.
    gate::check_finite_weights(&weights).map_err(|e| Exit {
        code: 3,
        err: anyhow!(
            "verification failed, nothing written at {}: {e} (the training diverged: try a lower --lr)",
            outputs_text(&a)
        ),
    })?;
    let (changed, total) = changed_elements(&model, &weights)?;
    timings.fold = t.elapsed().as_secs_f64();
    progress.phase("export");
    let t = Instant::now();
    // Without --out the ONNX is still staged, for the gate, in a scratch folder.
    let scratch = semu::onnx::staging::Scratch::new("semu-scratch-")?;
    if let Some(out) = &a.out {
        // A diffusion model's text encoder, tokenizer and VAE stay reachable from the export.
        let (from, to) = (semu::paths::folder_of(&a.model), semu::paths::folder_of(out));
        for key in semu::diffusion::files::relocate(&mut model.proto.metadata_props, from, to) {
            tracing::info!("{key}: rewritten to the path from {}'s folder", out.display());
        }
    }
    progress.step("export", 0, 1);
    let staged = model.stage(a.out.as_deref().unwrap_or(&scratch.path().join("model.onnx")), &weights)?;
    // The folded weights' bytes are written; only --out-weights and --out-patch read them again.
    let weights = (a.out_weights.is_some() || a.out_patch.is_some()).then_some(weights);
    semu::engine::memory::release_freed();
    progress.step("export", 1, 1);
    timings.export = t.elapsed().as_secs_f64();
    if std::env::var_os("SEMU_FAULT_TAMPER_EXPORT").is_some() {
        tamper(&staged.model_path())?;
    }
    // For tests of interrupts: hold the staged export this many milliseconds.
    if let Some(ms) = std::env::var("SEMU_FAULT_PAUSE_STAGED_MS").ok().and_then(|v| v.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    progress.phase("accuracy after");
    let test_accuracy = test
        .as_deref()
        .map(|t| test_accuracy(&u, t, forget.as_ref(), semu::semu::train::eval_batch(cfg.batch_size)))
        .transpose()?;
    let mut step = |d, n| progress.step("accuracy after", d, n);
    // SEMU's last epoch scored the forget set with the weights being exported: one pass fewer.
    // Not after early exit (it may restore an earlier epoch), for re-quantized weights (they
    // differ from W + U R Vᵀ) or a diffusion model (its score draws noise).
    let scored = (a.method == Method::Semu && lifted.is_none() && !cfg.early_exit && task != TaskKind::Diffusion)
        .then(|| u.epochs.last().map(|e| e.forget_acc))
        .flatten();
    let forget_after = match scored {
        Some(acc) => acc,
        None => u.net.accuracy_with(
            forget.as_ref(),
            semu::semu::train::eval_batch(cfg.batch_size),
            u.overrides(),
            &mut step,
        )?,
    };
    let retain_after = match &retain {
        Some(r) => Some(u.net.accuracy_with(
            r.as_ref(),
            semu::semu::train::eval_batch(cfg.batch_size),
            u.overrides(),
            &mut step,
        )?),
        None => None,
    };
    let language_model = match task {
        TaskKind::CausalLm => {
            let lm = |w: &dyn semu::engine::Overrides| {
                semu::eval::lm::evaluate(
                    &u.net,
                    w,
                    forget.as_ref(),
                    retain.as_deref(),
                    test.as_deref(),
                    semu::semu::train::eval_batch(cfg.batch_size),
                )
            };
            Some(LmBeforeAfter { before: lm(&std::collections::HashMap::new())?, after: lm(u.overrides())? })
        }
        TaskKind::Classify | TaskKind::Diffusion => None,
    };
    let weights_touched = u.weights_touched();
    let verification = if a.no_verify {
        tracing::warn!("verification skipped (--no-verify)");
        None
    } else {
        progress.phase("verify");
        let t = Instant::now();
        let mut sets: Vec<(&str, &dyn Dataset)> = vec![("forget", forget.as_ref())];
        if let Some(other) = retain.as_deref().or(test.as_deref()) {
            sets.push(("retain/test", other));
        }
        let probes = gate::probes_with(&u.net, input_net.as_ref().unwrap_or(&u.net), u.overrides(), &sets)?;
        // Neither the trained weights nor the engine's own are read past this point: free them
        // for the runtimes' copies of the export.
        u.weights = Default::default();
        u.net.plan.release_weights();
        drop(input_net.take());
        for a in &mut u.adapters {
            a.release_weight();
        }
        semu::engine::memory::release_freed();
        let tol = gate::tolerance_for(&probes[0].expected);
        // The differential rule runs the input model too: bound weights are written out for it.
        let input = match bound {
            Some(_) => Some(model.stage(&scratch.path().join("input.onnx"), &Default::default())?),
            None => None,
        };
        let input_path = input.as_ref().map_or_else(|| model.path.clone(), |s| s.model_path());
        let on_step = &mut |d, n| progress.step("verify", d, n);
        let report = gate::check_with(&staged.model_path(), Some(&input_path), &u.net.output, &probes, tol, on_step)?;
        timings.verify = t.elapsed().as_secs_f64();
        for w in &report.warnings {
            tracing::warn!("{w}");
        }
        Some(report)
    };
    let verified = verification.as_ref().is_some_and(|v| v.passed);
    let ok = a.no_verify || verified;
    let saved = if ok && a.out.is_some() { Some(staged.commit()?) } else { None };
    let model_sha = match model_sha {
        Some(s) => s,
        None => sha256_file(&a.model)?,
    };
    let forget_sha = loaded.forget_sha256.clone();
    let mut outputs: Vec<PathBuf> = saved.iter().flat_map(|s| s.files.clone()).collect();
    let provenance = semu::audit::provenance("semu", &model_sha, &forget_sha);
    if let Some(p) = a.out_weights.as_deref().filter(|_| ok) {
        let weights = weights.as_ref().expect("kept for --out-weights");
        let w = semu::weights::write_weights(p, &model, bound.as_ref(), weights, &provenance)?;
        if !w.skipped.is_empty() {
            tracing::warn!("{}: left out (no safetensors type): {}", p.display(), w.skipped.join(", "));
        }
        if !w.added.is_empty() {
            tracing::warn!("{}: changed weights not in --weights, added as: {}", p.display(), w.added.join(", "));
        }
        outputs.push(p.to_path_buf());
    }
    if let Some(p) = a.out_patch.as_deref().filter(|_| ok) {
        let weights = weights.as_ref().expect("kept for --out-patch");
        semu::patch::Patch::from_adapters(&model, &u.adapters, weights, provenance.clone())?.write(p)?;
        outputs.push(p.to_path_buf());
    }
    let hash_of = |p: &Option<PathBuf>| p.as_deref().filter(|_| ok).map(sha256_file).transpose();

    let report = UnlearnReport {
        semu_version: env!("CARGO_PKG_VERSION"),
        method: a.method.name(),
        task: task.name(),
        task_reason: why.clone(),
        model: model_arg,
        output: saved.as_ref().map(|s| s.model.display().to_string()),
        forget_selection: loaded.selection.clone(),
        device: device_name(device),
        settings: cfg.clone(),
        lr_choice: u.lr_choice.clone(),
        forget_target: u.target.clone(),
        gamma_chosen: u.gamma_chosen,
        used_retain_data: u.used_retain_data,
        classes: u.classes,
        layers: u.layers.clone(),
        skipped_zero_gradient: u.skipped_zero_gradient.clone(),
        diagnostics: semu::report::diagnostics(&u.adapters)?,
        total_parameters: u.total_parameters,
        trainable_parameters: u.trainable,
        trainable_share: u.trainable as f64 / u.total_parameters.max(1) as f64,
        weights_touched,
        changed_parameters: changed,
        changed_share: changed as f64 / total.max(1) as f64,
        quantization,
        wall_seconds: u.wall_seconds,
        baseline_settings: (a.method != Method::Semu).then_some(extra),
        epochs: u.epochs.clone(),
        forget_accuracy: Accuracy { before: u.forget_acc_before, after: forget_after },
        retain_accuracy: match (retain_after, u.retain_acc_before) {
            (Some(after), Some(before)) => Some(Accuracy { before, after }),
            _ => None,
        },
        test_accuracy,
        language_model,
        timings,
        verification: verification.clone(),
        verified,
        sha256: Hashes {
            model: model_sha,
            forget: forget_sha,
            retain: a.retain.as_deref().map(sha256_file).transpose()?,
            output: saved.as_ref().map(|s| sha256_file(&s.model)).transpose()?,
            weights: bound.iter().flat_map(|b| &b.files).map(|f| FileHash::of(f)).collect::<semu::Result<_>>()?,
            patch: hash_of(&a.out_patch)?,
            out_weights: hash_of(&a.out_weights)?,
            gradient: a.gradient.as_deref().map(FileHash::of).transpose()?,
            outputs: outputs.iter().map(|f| FileHash::of(f)).collect::<semu::Result<_>>()?,
        },
        git_commit: semu::audit::git_commit(),
        started_at,
        finished_at: semu::audit::now_rfc3339(),
        weights: bound.clone(),
    };
    print_summary(&report);
    for (what, p) in [("weights", &a.out_weights), ("patch", &a.out_patch)] {
        if let Some(p) = p.as_deref().filter(|_| ok) {
            println!("{what:<11} {} ({} bytes)", p.display(), std::fs::metadata(p).map(|m| m.len()).unwrap_or(0));
        }
    }
    if let Some(p) = &a.report {
        let json = serde_json::to_string_pretty(&report)?;
        write_atomic(p, json.as_bytes()).with_context(|| format!("writing the report {}", p.display()))?;
        println!("report      {}", p.display());
    }
    if let Some(d) = &a.report_dir {
        semu::report::write_dir(&report, d).with_context(|| format!("writing the report folder {}", d.display()))?;
        println!("report dir  {}", d.display());
    }
    if let Some(v) = verification.filter(|v| !v.passed) {
        let why = v.failure().unwrap_or_default();
        return Err(Exit {
            code: 3,
            err: anyhow!("verification failed, nothing written at {}: {why}", outputs_text(&a)),
        });
    }
    Ok(())
}

/// The forget images of a text-conditioned model drawn from the model itself: `n` DDIM samples
/// of `prompt` (25 steps, w 2, seeded), mapped from its data range to [0, 1] as data files hold
/// them. Their digest is that of the prompt, the count and the seed.
#[allow(clippy::too_many_arguments)]
fn generated_forget(
    model: &OnnxModel,
    path: &std::path::Path,
    s: &semu::diffusion::Settings,
    prompt: &str,
    n: usize,
    seed: u64,
    device: tch::Device,
    progress: &mut super::progress::Progress,
) -> anyhow::Result<super::data_args::Loaded> {
    use semu::diffusion::{self, Network, SampleOptions};
    if n == 0 {
        return Err(super::usage(anyhow!("--generate-forget 0: nothing to forget")).err);
    }
    let text = s.text.as_ref().ok_or_else(|| anyhow!("{}: not text-conditioned", path.display()))?;
    // x's fixed C, H, W and t in the dtype the graph declares (diffusers exports a float timestep).
    let inputs = semu::eval::diffusion::NetworkInputs::of(model, s).context("--generate-forget")?;
    let states = diffusion::prompts::encode(text, &[prompt, &text.null_prompt], device)?;
    let plan = semu::engine::Plan::new(
        model,
        &semu::engine::Registry::standard(),
        &semu::engine::PlanOptions { device, ..Default::default() },
    )?;
    let net = Network {
        plan: &plan,
        settings: s,
        t_kind: inputs.t_kind,
        y_kind: inputs.y_kind,
        device,
        context: Some(&states),
    };
    tch::manual_seed(seed as i64);
    let x_t = tch::Tensor::randn([&[n as i64][..], &inputs.image].concat(), (tch::Kind::Float, tch::Device::Cpu));
    let opts = SampleOptions { steps: 25, eta: 0.0, guidance: 2.0, batch: 256 };
    progress.phase("generating the forget images");
    let x = diffusion::sample(&net, &vec![0; n], &x_t, &opts, &mut |d, t| {
        progress.step("generating the forget images", d, t)
    })?;
    let (lo, hi) = s.data_range;
    let x = (x - lo) / (hi - lo);
    let source = format!("{n} images sampled from \"{prompt}\" by {}", path.display());
    let ds = semu::data::NpzDataset::from_tensors(
        source,
        x,
        tch::Tensor::zeros([n as i64], (tch::Kind::Int64, tch::Device::Cpu)),
    )?;
    let digest: String = sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        format!("generated:{prompt}:{n}:{seed}"),
    ))
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect();
    Ok(super::data_args::Loaded {
        forget: std::rc::Rc::new(ds),
        retain: None,
        test: None,
        forget_sha256: digest,
        selection: None,
    })
}

/// The loaded images as a diffusion model's records: a latent model's encoded by its VAE encoder
/// ([`semu::diffusion::vae::model_space`]); the rest as they are.
fn in_model_space(
    model: &OnnxModel,
    s: &semu::diffusion::Settings,
    mut l: super::data_args::Loaded,
    device: tch::Device,
) -> anyhow::Result<super::data_args::Loaded> {
    let to = |ds: &std::rc::Rc<dyn Dataset>| -> anyhow::Result<std::rc::Rc<dyn Dataset>> {
        Ok(match semu::diffusion::vae::model_space(model, s, ds.as_ref(), device)? {
            Some(encoded) => std::rc::Rc::new(encoded),
            None => ds.clone(),
        })
    };
    l.forget = to(&l.forget)?;
    l.retain = l.retain.as_ref().map(to).transpose()?;
    l.test = l.test.as_ref().map(to).transpose()?;
    Ok(l)
}

/// Fault injection for tests of the gate (`SEMU_FAULT_TAMPER_EXPORT=1` or `=zero`): changes one
/// weight of the staged file after folding, as a corrupted write or a bad fold would.
fn tamper(path: &std::path::Path) -> anyhow::Result<()> {
    let m = OnnxModel::load(path)?;
    let t = m.graph().initializer.iter().find(|t| t.dims.len() >= 2).ok_or_else(|| anyhow!("no weight to tamper"))?;
    let d = m.tensor(t)?;
    // Any dtype (a quantized weight is integers): through a tensor and back.
    let mut v = semu::engine::convert::to_tensor(&d)?.f_to_kind(tch::Kind::Double)?.f_reshape([-1])?;
    // `zero`: the whole tensor zeroed (a truncated write); otherwise one value moved by 1.
    if std::env::var("SEMU_FAULT_TAMPER_EXPORT").is_ok_and(|m| m == "zero") {
        let _ = v.f_zero_()?;
    } else {
        let _ = v.f_get(0)?.f_add_scalar_(1.0)?;
    }
    let changed = semu::engine::convert::from_tensor(&v.f_reshape(&d.dims)?, d.dtype)?;
    m.save(path, &std::collections::HashMap::from([(t.name().to_string(), changed)]))?;
    Ok(())
}

fn test_accuracy(u: &Outcome, test: &dyn Dataset, forget: &dyn Dataset, batch: usize) -> anyhow::Result<TestAccuracy> {
    let w = u.overrides();
    let acc = |ds: &dyn Dataset| -> anyhow::Result<Accuracy> {
        Ok(Accuracy {
            before: u.net.accuracy(ds, batch, &std::collections::HashMap::new())?,
            after: u.net.accuracy(ds, batch, w)?,
        })
    };
    let fl = data::labels(forget)?;
    let classify = u.net.task == TaskKind::Classify;
    let single = fl.iter().all(|&y| y == fl[0]).then_some(fl[0]).filter(|_| classify);
    let (mut on, mut off) = (None, None);
    if let Some(c) = single {
        let tl = data::labels(test)?;
        let split = |want: bool| Subset { inner: test, idx: (0..tl.len()).filter(|&i| (tl[i] == c) == want).collect() };
        let (s_on, s_off) = (split(true), split(false));
        if !s_on.is_empty() {
            on = Some(acc(&s_on)?);
        }
        if !s_off.is_empty() {
            off = Some(acc(&s_off)?);
        }
    }
    Ok(TestAccuracy { all: acc(test)?, forget_class: single, on_forget_class: on, on_other_classes: off })
}

fn pct(x: f64) -> String {
    format!("{:6.2}%", 100.0 * x)
}

fn print_summary(r: &UnlearnReport) {
    println!("semu unlearn: {} (method {}, task {})", r.model, r.method, r.task);
    println!(
        "changed     {} of {} parameters = {:.3}% in {:.1}s",
        r.changed_parameters,
        r.total_parameters,
        100.0 * r.changed_share,
        r.wall_seconds
    );
    if let Some(q) = &r.quantization {
        println!(
            "quantized   {} weight(s) re-quantized with {} ({}): {} integers changed; fold rounding max {:.3e} \
             ({:.2} steps), {} saturated",
            q.weights,
            if q.scales_recomputed {
                "scales fitted to the trained weights"
            } else {
                "their own scales and zero points"
            },
            q.formats.join(", "),
            q.changed_integers,
            q.rounding_max_abs,
            q.rounding_max_steps,
            q.saturated
        );
    }
    println!(
        "layers      {} adapted, {} trainable parameters = {:.3}% of {} ({})",
        r.layers.len(),
        r.trainable_parameters,
        100.0 * r.trainable_share,
        r.total_parameters,
        if r.used_retain_data { "with remaining data" } else { "no remaining data" }
    );
    if r.method == "semu" {
        let stopped = match (&r.forget_target, r.epochs.last()) {
            (Some(t), Some(e)) if t.reached(e) => ", stopped at the retrained level",
            (Some(_), _) if r.settings.iterations.is_some() => {
                ", the retrained level NOT reached (give more --iterations)"
            }
            (Some(_), _) => ", the retrained level NOT reached (give more --epochs)",
            _ => "",
        };
        let lr = if r.lr_choice.is_some() { " (auto)" } else { "" };
        let lr = format!("{}{lr}", r.lr_choice.as_ref().map_or(r.settings.lr, |c| semu::semu::Lr::Fixed(c.lr)));
        let length = match r.settings.iterations {
            Some(n) => format!("{n} steps of {}", r.settings.batch_size),
            None => format!("{} epoch(s)", r.epochs.len()),
        };
        let objective = match r.task {
            "diffusion" => {
                format!("forget class → {:?} class, teacher {:?}", r.settings.target, r.settings.teacher).to_lowercase()
            }
            _ => r.settings.objective.name().to_string(),
        };
        let precision = match r.settings.precision.lowered() {
            Some(_) => format!(", {:?} products", r.settings.precision).to_lowercase(),
            None => String::new(),
        };
        println!("training    objective {objective}, lr {lr}, {length}{precision}{stopped}");
        if let Some(t) = &r.forget_target {
            println!("target      {}", t.reason);
        }
        if let (Some(g), Some(p)) = (r.gamma_chosen, r.settings.max_trained) {
            println!("ranks       γ {g:.4} in every layer: the largest whose adapters train ≤ {p}% (--max-trained)");
        }
        if let Some(c) = &r.lr_choice {
            println!("lr auto     {}{}", c.reason, semu::report::md::tried(c));
        }
    }
    for l in &r.layers {
        println!(
            "    {:<32} {:<6} {:>14} k={:<3} trainable {:>6}  explained {:.3}",
            l.name,
            l.kind,
            format!("{:?}", l.shape),
            l.k,
            l.trainable,
            l.explained_variance
        );
    }
    if let Some(lm) = &r.language_model {
        print_lm(lm);
    }
    let measure = match r.task {
        "classify" => "accuracy",
        "diffusion" => "own-class noise",
        _ => "next-token accuracy",
    };
    println!("{measure:<21}before    after");
    println!("  forget data       {}  {}", pct(r.forget_accuracy.before), pct(r.forget_accuracy.after));
    if let Some(a) = &r.retain_accuracy {
        println!("  retain data       {}  {}", pct(a.before), pct(a.after));
    }
    if let Some(t) = &r.test_accuracy {
        if let (Some(c), Some(on)) = (t.forget_class, &t.on_forget_class) {
            println!("  test, class {c:<5} {}  {}", pct(on.before), pct(on.after));
        }
        if let Some(off) = &t.on_other_classes {
            println!("  test, other       {}  {}", pct(off.before), pct(off.after));
        }
        println!("  test, all         {}  {}", pct(t.all.before), pct(t.all.after));
    }
    let tm = &r.timings;
    println!(
        "time        gradient {:.2}s, svd {:.2}s, training {:.2}s, fold {:.2}s, export {:.2}s, verify {:.2}s",
        tm.gradient, tm.svd, tm.training, tm.fold, tm.export, tm.verify
    );
    match &r.verification {
        None => println!("verified    NO (--no-verify)"),
        Some(v) => {
            for row in &v.rows {
                // The runtime's own difference on the input model, and what it allowed (if anything).
                let input = match (row.input_max_abs, row.allowance > 0.0) {
                    (Some(d), false) => format!("  input {d:.2e}"),
                    (Some(d), true) => format!("  input {d:.2e} (+{:.2e} allowed)", row.allowance),
                    (None, _) => String::new(),
                };
                println!(
                    "    {:<11} {:<20} vs {:<20} max abs {:.2e}  max rel {:.2e}{input}  {}",
                    row.probe,
                    row.runtime,
                    row.reference,
                    row.max_abs,
                    row.max_rel,
                    if row.passed {
                        "ok"
                    } else if row.excused {
                        "rounding flips (warning)"
                    } else {
                        "FAIL"
                    }
                );
            }
            match &v.unverified {
                Some(why) => println!("verified    NO: {why}"),
                None => println!(
                    "verified    {}",
                    if v.passed { "passed (onnxruntime" } else { "FAILED (onnxruntime" }.to_string()
                        + if v.rows.iter().any(|r| r.runtime == "tract") { " + tract)" } else { ")" }
                ),
            }
        }
    }
    if let Some(o) = &r.output {
        println!("output      {o}");
    }
}

/// The language-model measures, before and after.
fn print_lm(lm: &LmBeforeAfter) {
    println!("language model           before      after");
    let (b, a) = (&lm.before, &lm.after);
    let sets =
        [("forget", Some(b.forget), Some(a.forget)), ("retain", b.retain, a.retain), ("holdout", b.holdout, a.holdout)];
    for (name, b, a) in sets {
        let (Some(b), Some(a)) = (b, a) else { continue };
        println!("  {:<21}{:>10.3} {:>10.3}", format!("{name} perplexity"), b.perplexity, a.perplexity);
        println!("  {:<21}{:>9.2}% {:>9.2}%", format!("{name} memorisation"), b.memorisation, a.memorisation);
    }
    println!(
        "  {:<21}{:>9.2}% {:>9.2}%",
        "forget extraction", b.forget.extraction_strength, a.forget.extraction_strength
    );
    if let (Some(x), Some(y)) = (b.min_k_auc, a.min_k_auc) {
        println!("  {:<21}{x:>10.3} {y:>10.3}   (0.5: the forget texts look unseen)", "Min-K% AUC");
    }
}

/// Writes a file via a temporary file in the same folder, then renames it.
pub fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = semu::paths::folder_of(path);
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Every output path, before any work: only regular files are replaced, a report folder is a
/// folder, and no output is one of the inputs.
fn check_outputs(a: &Args) -> semu::Result<()> {
    let inputs: Vec<&std::path::Path> = [
        Some(&a.model),
        a.forget.as_ref(),
        a.retain.as_ref(),
        a.test.as_ref(),
        a.data.train.as_ref(),
        a.gradient.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(PathBuf::as_path)
    .collect();
    let files =
        [("--out", &a.out), ("--out-weights", &a.out_weights), ("--out-patch", &a.out_patch), ("--report", &a.report)];
    for (flag, p) in files {
        if let Some(p) = p {
            semu::paths::check_output(p, flag, &inputs)?;
        }
    }
    if let Some(d) = &a.report_dir {
        semu::paths::check_output_dir(d, "--report-dir")?;
    }
    Ok(())
}

/// The outputs asked for, for messages.
fn outputs_text(a: &Args) -> String {
    let all: Vec<String> = [&a.out, &a.out_weights, &a.out_patch]
        .iter()
        .filter_map(|p| p.as_ref())
        .map(|p| p.display().to_string())
        .collect();
    all.join(", ")
}

//! SEMU end to end on a model of any task: gradient → SVD → adapters → training. Export and
//! verification of the result live in `crate::export` and `crate::verify`.
use super::adapter::{Adapter, RankRule, Spectrum};
use super::auto::{self, Lr, LrChoice};
use super::gradient::{forget_gradient, forget_gradient_scored};
use super::gradient_file::GivenGradient;
use super::layers::{find_layers, Layer};
use super::optim::OptimizerKind;
use super::svd::{project, Parity};
use super::train::{eval_batch, overrides, train, EpochProgress, EpochStats, TrainSettings};
use crate::data::Dataset;
use crate::engine::precision::Precision;
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;
use crate::task::{Model, Objective, Spec};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;
use tch::{Device, Tensor};

/// Every setting of a SEMU run (the report embeds it so a run can be repeated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SemuConfig {
    pub alpha: f64,
    pub gamma: f64,
    /// A budget instead of γ: the largest γ (one for every layer) whose adapters together
    /// train at most this per cent of the model's parameters.
    pub max_trained: Option<f64>,
    /// The unlearning objective on the forget set (SEMU trains it inside its subspace).
    pub objective: Objective,
    /// NPO's inverse temperature β.
    pub npo_beta: f64,
    /// λ of `redistribute` / `nearest`: weight of the KL term that keeps the frozen model's odds
    /// between the classes not forgotten.
    pub kl_weight: f64,
    pub epochs: usize,
    /// A rate, or `auto`: the smallest rate that forgets to the target (`semu::auto`).
    pub lr: Lr,
    /// Stop once the forget set is forgotten to the level a retrained model would show.
    pub stop_at_target: bool,
    pub batch_size: usize,
    /// Remaining-data records drawn beside each forget batch (default: as many as it holds).
    pub retain_batch_size: Option<usize>,
    /// What a training step's products and convolutions compute in (R and gradients stay f32).
    pub precision: Precision,
    pub optimizer: OptimizerKind,
    pub momentum: f64,
    pub weight_decay: f64,
    pub projection: bool,
    pub parity: Parity,
    /// Glob patterns on weight names or op kinds ("conv", "gemm", "matmul"); empty = all.
    pub layers: Vec<String>,
    /// The gradient pass in this many passes over the forget set, each for a consecutive group
    /// of the adapted layers, decomposed and freed before the next: the gradients in memory are
    /// one group's, for models whose gradients do not fit beside their weights.
    pub gradient_groups: usize,
    pub early_exit: bool,
    pub seed: u64,
    /// Classes forgotten as a whole, when the forget set is whole classes (from the selection).
    #[serde(skip)]
    pub forget_classes: Vec<i64>,
    /// Keep each epoch's batches in the result (for parity checks; not a CLI setting).
    #[serde(skip)]
    pub record_batches: bool,
    /// The forget-set gradient, computed beforehand (`semu gradient`, `unlearn --gradient`):
    /// the gradient pass is skipped.
    #[serde(skip)]
    pub gradient: Option<GivenGradient>,
    /// Train this many steps (batches drawn from the forget set over and over) instead of
    /// `epochs` passes; the diffusion task's measure.
    pub iterations: Option<usize>,
    /// Clip the R gradients' global norm to this before each step.
    pub clip: Option<f64>,
    /// γ of the weights whose name contains `attention_pattern` (default: `gamma`).
    pub gamma_attention: Option<f64>,
    pub attention_pattern: String,
    /// Convs: a rank per input channel (`per-channel`, may be 0 under `--parity reference`) or
    /// one for all channels (`max`).
    pub conv_rank: ConvRank,
    /// diffusion: w of the guided gradient loss (authors' convention: the usual scale is 1 + w).
    pub guidance: f64,
    /// diffusion: probability of the null class in each branch of the unlearning loss.
    pub p_uncond: f64,
    /// diffusion: the class the forgotten class's noise is pointed at.
    pub target: crate::task::diffusion::TargetClass,
    /// diffusion: the frozen input model or the model being trained gives the target.
    pub teacher: crate::task::diffusion::Teacher,
    /// diffusion: batches, t, e and null masks from the `.npy` files in this folder
    /// (`task::diffusion::Replay`) instead of drawn; for parity checks.
    #[serde(skip)]
    pub replay_draws: Option<std::path::PathBuf>,
    /// Write `semu.npz` here: per weight the projected gradient `g/…`, the ranks `k/…` (per
    /// input channel for a conv), and per adapter R after training `r/…` (on the bases U_k `u/…`)
    /// and U R Vᵀ `d/…`; for parity checks.
    #[serde(skip)]
    pub dump_dir: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConvRank {
    /// One k for all input channels (the largest), at least 1.
    #[default]
    Max,
    /// k_i per input channel.
    PerChannel,
}

impl Default for SemuConfig {
    fn default() -> Self {
        SemuConfig {
            alpha: 1.0,
            gamma: 0.9,
            max_trained: None,
            objective: Objective::Rl,
            npo_beta: 0.1,
            kl_weight: 1.0,
            epochs: 10,
            lr: Lr::Fixed(0.01),
            stop_at_target: false,
            batch_size: 256,
            retain_batch_size: None,
            precision: Precision::F32,
            optimizer: OptimizerKind::Sgd,
            momentum: 0.9,
            weight_decay: 5e-4,
            projection: true,
            parity: Parity::Paper,
            layers: Vec::new(),
            gradient_groups: 1,
            early_exit: false,
            seed: 0,
            forget_classes: Vec::new(),
            record_batches: false,
            gradient: None,
            iterations: None,
            clip: None,
            gamma_attention: None,
            attention_pattern: "attn".into(),
            conv_rank: ConvRank::Max,
            guidance: 2.0,
            p_uncond: 0.1,
            target: Default::default(),
            teacher: Default::default(),
            replay_draws: None,
            dump_dir: None,
        }
    }
}

impl SemuConfig {
    /// The defaults for a task. `Default` is the paper's recipe (random labels, lr 0.01, every
    /// epoch: `--objective rl`). A classifier's defaults instead move each forget sample across
    /// its nearest boundary while keeping the other classes' odds (`nearest`), stop once the
    /// forget set is forgotten to the retrained level, and pick the rate that gets there
    /// (`--lr auto`); γ 0.85 keeps the trained share ≤ 1.5% on every digits case (README).
    /// A causal LM has few, long forget records that it has memorised: 1 000 Adam steps of 8
    /// forget texts (beside 32 remaining ones when given) at 1e-2, each true next token pushed
    /// down with the frozen model's odds kept between the others (`redistribute`), and ranks
    /// from a budget of 1.5% of the parameters rather than a γ (a wide model's γ 0.8 trains
    /// 0.1%, too little to forget); measured on a 256-wide GPT-2 (README "Language models").
    pub fn for_task(task: crate::task::TaskKind, has_retain: bool) -> Self {
        match task {
            crate::task::TaskKind::Classify => SemuConfig {
                objective: Objective::Nearest,
                lr: Lr::Auto,
                stop_at_target: true,
                gamma: 0.85,
                ..SemuConfig::default()
            },
            crate::task::TaskKind::CausalLm => SemuConfig {
                objective: Objective::Redistribute,
                optimizer: OptimizerKind::Adam,
                lr: Lr::Fixed(1e-2),
                weight_decay: 0.0,
                stop_at_target: true,
                batch_size: 8,
                retain_batch_size: Some(32),
                iterations: Some(1000),
                max_trained: Some(1.5),
                ..SemuConfig::default()
            },
            // SEMU-diffusion.md §5.3 and §6: a frozen teacher, Adam at 3e-4 for 200 steps of
            // 64, per-channel conv ranks, the R gradients clipped to norm 1; measured on
            // fixtures/ddpm (README "Diffusion").
            crate::task::TaskKind::Diffusion => SemuConfig {
                optimizer: OptimizerKind::Adam,
                lr: Lr::Fixed(3e-4),
                weight_decay: 0.0,
                batch_size: 64,
                iterations: Some(200),
                clip: Some(1.0),
                gamma: 0.95,
                conv_rank: ConvRank::PerChannel,
                alpha: if has_retain { 0.01 } else { 1.0 },
                ..SemuConfig::default()
            },
        }
    }

    /// The authors' DDPM code (`--parity reference` on a diffusion model): the model being
    /// trained as its own teacher, γ 1.0 for attention weights, ranks that may be 0, each
    /// gradient batch clipped, Adam at 1e-3 for 1 000 steps.
    pub fn diffusion_reference(has_retain: bool) -> Self {
        SemuConfig {
            parity: Parity::Reference,
            teacher: crate::task::diffusion::Teacher::Current,
            gamma_attention: Some(1.0),
            lr: Lr::Fixed(1e-3),
            iterations: Some(1000),
            ..Self::for_task(crate::task::TaskKind::Diffusion, has_retain)
        }
    }

    /// The rank rule of `layer` (γ of attention weights, by weight or node name; per-channel conv ranks, the
    /// floor dropped only by the reference diffusion code).
    /// The reference diffusion code also keeps R full r×r in every layer, masked after the clip.
    pub fn rank_rule(&self, layer: &Layer, task: crate::task::TaskKind) -> RankRule {
        let reference_diffusion = self.parity == Parity::Reference && task == crate::task::TaskKind::Diffusion;
        let pat = self.attention_pattern.to_lowercase();
        let attention = !pat.is_empty()
            && std::iter::once(&layer.name).chain(&layer.nodes).any(|n| n.to_lowercase().contains(&pat));
        RankRule {
            gamma: if attention { self.gamma_attention.unwrap_or(self.gamma) } else { self.gamma },
            parity: self.parity,
            per_channel: self.conv_rank == ConvRank::PerChannel,
            floor: !reference_diffusion,
            full: reference_diffusion,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.gradient_groups == 0 {
            return Err(Error::msg("--gradient-groups must be at least 1"));
        }
        let bad = |m: String| Err(Error::msg(m));
        if !(self.gamma > 0.0 && self.gamma <= 1.0) {
            return bad(format!("gamma must be in (0, 1], got {}", self.gamma));
        }
        if self.batch_size == 0 || self.epochs == 0 {
            return bad("batch size and epochs must be at least 1".into());
        }
        if self.retain_batch_size == Some(0) {
            return bad("--retain-batch-size must be at least 1".into());
        }
        if let Lr::Fixed(v) = self.lr {
            if !(v > 0.0 && v.is_finite()) {
                return bad(format!("--lr must be a finite number > 0 or `auto`, got {v}"));
            }
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return bad(format!("--alpha must be a finite number ≥ 0, got {}", self.alpha));
        }
        if !(self.kl_weight >= 0.0 && self.kl_weight.is_finite()) {
            return bad(format!("--kl-weight must be a finite number ≥ 0, got {}", self.kl_weight));
        }
        if !(self.npo_beta > 0.0 && self.npo_beta.is_finite()) {
            return bad(format!("the NPO beta must be > 0, got {}", self.npo_beta));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("--weight-decay must be a finite number ≥ 0, got {}", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.momentum) {
            return bad(format!("--momentum must be in [0, 1), got {}", self.momentum));
        }
        if let Some(g) = self.gamma_attention.filter(|g| !(*g > 0.0 && *g <= 1.0)) {
            return bad(format!("--gamma-attention must be in (0, 1], got {g}"));
        }
        if let Some(p) = self.max_trained {
            if !(p > 0.0 && p <= 100.0) {
                return bad(format!("--max-trained is a per cent of the parameters in (0, 100], got {p}"));
            }
            if self.parity == Parity::Reference {
                return bad(
                    "--max-trained with --parity reference: the authors' code picks ranks by γ; drop one".into()
                );
            }
            if self.gamma_attention.is_some() {
                return bad("--max-trained picks one γ for every layer: drop --gamma-attention".into());
            }
        }
        if self.iterations == Some(0) {
            return bad("--iterations must be at least 1".into());
        }
        if let Some(c) = self.clip.filter(|c| !(*c > 0.0 && c.is_finite())) {
            return bad(format!("the gradient clip must be a finite number > 0, got {c}"));
        }
        if !(0.0..=1.0).contains(&self.p_uncond) {
            return bad(format!("--p-uncond must be in [0, 1], got {}", self.p_uncond));
        }
        if !self.guidance.is_finite() {
            return bad(format!("--guidance must be a finite number, got {}", self.guidance));
        }
        Ok(())
    }
}

/// Keeps the layers matching any pattern (by weight or consuming node name glob, or by op kind).
pub fn select_layers(all: Vec<Layer>, patterns: &[String]) -> Result<Vec<Layer>> {
    if patterns.is_empty() {
        return Ok(all);
    }
    let pats: Vec<glob::Pattern> = patterns
        .iter()
        .map(|p| glob::Pattern::new(p).map_err(|e| Error::msg(format!("--layers '{p}': {e}"))))
        .collect::<Result<_>>()?;
    let kept: Vec<Layer> = all
        .into_iter()
        .filter(|l| {
            let kind = format!("{:?}", l.kind).to_lowercase();
            // A weight's own name, a node that uses it (exporters name weights `onnx::MatMul_12`
            // but keep module paths in node names), or its op kind.
            pats.iter().zip(patterns).any(|(p, raw)| {
                p.matches(&l.name) || l.nodes.iter().any(|n| p.matches(n)) || raw.to_lowercase() == kind
            })
        })
        .collect();
    if kept.is_empty() {
        return Err(Error::msg(format!("--layers {}: no adaptable weight matches", patterns.join(", "))));
    }
    Ok(kept)
}

/// Per-layer outcome, for the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub name: String,
    pub kind: String,
    pub shape: Vec<i64>,
    pub k: usize,
    pub trainable: i64,
    pub share_of_parameters: f64,
    pub explained_variance: f64,
    /// Max |ΔW| after training.
    pub max_abs_change: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub gradient: f64,
    pub svd: f64,
    pub training: f64,
    pub fold: f64,
    pub export: f64,
    pub verify: f64,
}

/// Callbacks for progress display; all optional.
pub trait Observer {
    fn phase(&mut self, _name: &str) {}
    fn gradient_progress(&mut self, _done: usize, _total: usize) {}
    fn svd_progress(&mut self, _done: usize, _total: usize) {}
    /// Inside a SEMU epoch: after each batch, and once the forget accuracy is measured.
    fn epoch_progress(&mut self, _p: &EpochProgress) {}
    fn epoch(&mut self, _e: &EpochStats) {}
    /// A counted step of a phase the caller drives (fold, export, verify): `done` of `total`.
    fn step(&mut self, _name: &str, _done: usize, _total: usize) {}
}

pub struct Quiet;
impl Observer for Quiet {}

pub struct Unlearned {
    pub net: Model,
    pub adapters: Vec<Adapter>,
    pub layers: Vec<LayerReport>,
    pub skipped_zero_gradient: Vec<String>,
    pub total_parameters: i64,
    pub trainable: i64,
    pub classes: i64,
    pub epochs: Vec<EpochStats>,
    pub timings: Timings,
    /// Accuracy of the input model on the forget (and retain) data, before any change.
    pub forget_acc_before: f64,
    pub retain_acc_before: Option<f64>,
    /// What `--lr auto` chose and why.
    pub lr_choice: Option<LrChoice>,
    /// The forget accuracy training stopped at (the retrained level), when known.
    pub target: Option<auto::Target>,
    /// The γ `--max-trained` chose.
    pub gamma_chosen: Option<f64>,
}

/// Zeroes every adapter's R: the input model again, for a fresh run.
fn reset(adapters: &mut [Adapter]) -> Result<()> {
    let _g = tch::no_grad_guard();
    for a in adapters {
        let _ = a.r.f_zero_()?;
    }
    Ok(())
}

fn all_finite(t: &tch::Tensor) -> Result<bool> {
    Ok(t.f_isfinite()?.f_all()?.int64_value(&[]) == 1)
}

/// The layers' gradients from `given`, as the gradient pass would leave them (f32 on `device`).
fn given_gradient(given: &GivenGradient, layers: &[Layer], device: Device) -> Result<HashMap<String, Tensor>> {
    tracing::info!("gradient: from {} (no gradient pass)", given.source);
    let mut out = HashMap::new();
    for l in layers {
        let g = given
            .tensors
            .get(&l.name)
            .ok_or_else(|| Error::msg(format!("{}: no gradient for weight '{}'", given.source, l.name)))?;
        if g.size() != l.dims {
            return Err(Error::msg(format!(
                "{}: the gradient of weight '{}' is {:?}, the weight {:?}",
                given.source,
                l.name,
                g.size(),
                l.dims
            )));
        }
        out.insert(l.name.clone(), g.f_to_kind(tch::Kind::Float)?.f_to_device(device)?);
    }
    Ok(out)
}

/// Runs SEMU on `model` for `forget` (and `retain` when given, weighted by α). `test` (held
/// out) sets the target of sample forgetting (`semu::auto`).
#[allow(clippy::too_many_arguments)]
pub fn unlearn(
    model: &OnnxModel,
    forget: &dyn Dataset,
    retain: Option<&dyn Dataset>,
    test: Option<&dyn Dataset>,
    cfg: &SemuConfig,
    device: Device,
    spec: &Spec,
    obs: &mut dyn Observer,
) -> Result<Unlearned> {
    cfg.validate()?;
    if forget.is_empty() {
        return Err(Error::msg(format!("{}: the forget set is empty", forget.source())));
    }
    let layers = select_layers(find_layers(model), &cfg.layers)?;
    if layers.is_empty() {
        return Err(Error::msg(format!("{}: no Conv/Gemm/MatMul weight to adapt", model.path.display())));
    }
    let names_set = layers.iter().map(|l| l.name.clone()).collect();
    let mut net = Model::new(model, device, names_set, spec)?;
    if let Some(d) = net.diffusion.as_mut() {
        d.guidance = cfg.guidance;
        d.p_uncond = cfg.p_uncond;
        d.target = cfg.target;
        d.teacher = cfg.teacher;
        d.clip_batch = cfg.parity == Parity::Reference;
        d.seed = cfg.seed;
    }
    if let Some(dir) = &cfg.replay_draws {
        let retain = retain.filter(|_| cfg.objective.uses_retain() && cfg.alpha != 0.0);
        let why = match (&net.diffusion, cfg.iterations) {
            (None, _) => Some("is for the diffusion task"),
            (Some(_), None) => Some("needs --iterations"),
            _ if retain.is_some() => Some("replays the forget term only: drop the remaining data"),
            _ if cfg.target == crate::task::diffusion::TargetClass::Random => {
                Some("replays no target draws: use --target-class next or null")
            }
            _ => None,
        };
        if let Some(why) = why {
            return Err(Error::msg(format!("--replay-draws {} {why}", dir.display())));
        }
        let r = crate::task::diffusion::Replay::load(dir, forget.len(), cfg.batch_size)?;
        let steps = cfg.iterations.unwrap_or(0);
        if r.train.len() < steps {
            return Err(Error::msg(format!(
                "{}: {} training steps replayed, --iterations is {steps}",
                dir.join("train_idx.npy").display(),
                r.train.len()
            )));
        }
        net.diffusion.as_mut().expect("checked").replay = Some(r);
    }
    for l in &layers {
        if !all_finite(net.plan.param(&l.name).expect("dynamic"))? {
            return Err(Error::msg(format!(
                "{}: weight '{}' holds NaN or Inf: the input model is broken, nothing to unlearn from",
                model.path.display(),
                l.name
            )));
        }
    }
    let retain_all = retain;
    let retain = retain.filter(|_| cfg.objective.uses_retain());
    if cfg.objective.needs_retain() && retain.is_none() {
        return Err(Error::msg(format!("--objective {} needs remaining data: give --retain", cfg.objective.name())));
    }
    // Classes, or the vocabulary of a language model: the output's last axis.
    let classes = net.width(forget)?;
    for ds in std::iter::once(forget).chain(retain) {
        net.check_labels(ds, classes)?;
    }
    let mut timings = Timings::default();
    let unchanged: HashMap<String, Tensor> = HashMap::new();
    // A classifier's or language model's forget accuracy comes from the gradient pass's own
    // forwards (one pass over the forget set fewer); a diffusion model or a given gradient
    // measures it here.
    let scored_by_gradient = cfg.gradient.is_none() && net.diffusion.is_none();
    if !scored_by_gradient || retain.is_some() {
        obs.phase("accuracy before");
    }
    let mut step = |d, n| obs.step("accuracy before", d, n);
    let mut forget_acc_before = match scored_by_gradient {
        true => None,
        false => Some(net.accuracy_with(forget, eval_batch(cfg.batch_size), &unchanged, &mut step)?),
    };
    let retain_acc_before =
        retain.map(|r| net.accuracy_with(r, eval_batch(cfg.batch_size), &unchanged, &mut step)).transpose()?;

    let total_parameters: i64 = model.graph().initializer.iter().map(|t| t.dims.iter().product::<i64>()).sum();
    let budget = cfg.max_trained.map(|p| (p / 100.0 * total_parameters as f64).floor() as i64);
    let mut adapters = Vec::new();
    let mut skipped = Vec::new();
    let mut dump: Vec<(String, Tensor)> = Vec::new();
    // Under a budget every layer's spectrum is needed before any rank: decompositions wait here.
    let mut pending: Vec<(&Layer, super::svd::Decomposition)> = Vec::new();
    // A given gradient is in memory whole already: one group.
    let groups = if cfg.gradient.is_some() { 1 } else { cfg.gradient_groups.min(layers.len()) };
    if groups > 1 && net.diffusion.as_ref().is_some_and(|d| d.clip_batch) {
        return Err(Error::msg(
            "--gradient-groups with --parity reference: the authors' code clips each batch's gradient \
             over all layers at once, which a pass over some of them cannot; drop --gradient-groups",
        ));
    }
    for gi in 0..groups {
        let first = gi * layers.len() / groups;
        let group = &layers[first..(gi + 1) * layers.len() / groups];
        let suffix = if groups > 1 { format!(" (layer group {} of {groups})", gi + 1) } else { String::new() };
        obs.phase(&format!("gradient{suffix}"));
        let t = Instant::now();
        let weight_names: Vec<String> = group.iter().map(|l| l.name.clone()).collect();
        let total = forget.len();
        let progress = |d| obs.gradient_progress(d, total);
        let grads = match &cfg.gradient {
            Some(given) => given_gradient(given, &layers, device)?,
            None if forget_acc_before.is_none() => {
                let (g, acc) = forget_gradient_scored(&mut net, &weight_names, forget, cfg.batch_size, progress)?;
                forget_acc_before = acc;
                g
            }
            None => forget_gradient(&mut net, &weight_names, forget, cfg.batch_size, progress)?,
        };
        timings.gradient += t.elapsed().as_secs_f64();

        obs.phase(&format!("svd{suffix}"));
        let t = Instant::now();
        for (i, l) in group.iter().enumerate() {
            let d = decomposition_of(&net, model, cfg, forget, l, &grads[&l.name], budget, &mut dump)?;
            match budget {
                Some(_) => pending.push((l, d)),
                None => match adapter_of(&net, l, &d, &cfg.rank_rule(l, net.task), cfg, &mut dump)? {
                    Some(a) => adapters.push(a),
                    None => skipped.push(l.name.clone()),
                },
            }
            obs.svd_progress(first + i + 1, layers.len());
        }
        drop(grads);
        crate::engine::memory::release_freed();
        timings.svd += t.elapsed().as_secs_f64();
    }
    let gamma_chosen = match budget {
        Some(budget) => {
            let rules: Vec<_> = pending.iter().map(|(l, _)| cfg.rank_rule(l, net.task)).collect();
            let spectra = pending.iter().map(|(_, d)| Spectrum::of(d)).collect::<Result<Vec<_>>>()?;
            let gamma = gamma_for_budget(&spectra, &rules, budget, cfg.max_trained.unwrap_or(0.0))?;
            tracing::info!("--max-trained {}%: γ {gamma:.5} for every layer", cfg.max_trained.unwrap_or(0.0));
            for ((l, d), rule) in pending.drain(..).zip(rules) {
                match adapter_of(&net, l, &d, &RankRule { gamma, ..rule }, cfg, &mut dump)? {
                    Some(a) => adapters.push(a),
                    None => skipped.push(l.name.clone()),
                }
            }
            Some(gamma)
        }
        None => None,
    };
    if adapters.iter().all(|a| a.trainable() == 0) {
        return Err(Error::msg("the forget-set gradient is zero for every layer: nothing to unlearn"));
    }

    // Class forgetting: the classes given, or a forget set of one class the remaining data
    // lacks (as `semu eval` decides).
    let forget_classes = match (net.task, cfg.forget_classes.is_empty()) {
        (crate::task::TaskKind::Classify, true) => {
            let kept = retain_all.map(|r| r.labels()).transpose()?.unwrap_or_default();
            crate::eval::forget_classes(None, &forget.labels()?, &kept).unwrap_or_default()
        }
        // A diffusion model forgets the classes of its forget images.
        (crate::task::TaskKind::Diffusion, _) if net.diffusion.as_ref().is_some_and(|d| d.settings.text.is_some()) => {
            Vec::new()
        }
        (crate::task::TaskKind::Diffusion, true) => {
            let mut c = forget.labels()?;
            c.sort_unstable();
            c.dedup();
            c
        }
        _ => cfg.forget_classes.clone(),
    };
    if forget_classes.len() as i64 >= classes {
        return Err(Error::msg(format!("cannot forget every class (forget classes {forget_classes:?})")));
    }
    let diffusion = net.task == crate::task::TaskKind::Diffusion;
    if diffusion && cfg.lr == Lr::Auto {
        return Err(Error::msg(
            "--lr auto probes forget accuracy against a retrained level: give a rate for a diffusion model",
        ));
    }
    let target = if !diffusion && (cfg.stop_at_target || cfg.lr == Lr::Auto) {
        auto::forget_target(&net, &forget_classes, test, eval_batch(cfg.batch_size))?
    } else {
        None
    };
    if let Some(t) = &target {
        tracing::info!("forget target: {}", t.reason);
    }

    obs.phase("training");
    let t = Instant::now();
    let mut settings = TrainSettings {
        epochs: cfg.epochs,
        lr: cfg.lr.or(auto::fallback(cfg.optimizer)),
        batch_size: cfg.batch_size,
        retain_batch_size: cfg.retain_batch_size,
        precision: cfg.precision,
        optimizer: cfg.optimizer,
        momentum: cfg.momentum,
        weight_decay: cfg.weight_decay,
        alpha: cfg.alpha,
        objective: cfg.objective,
        npo_beta: cfg.npo_beta,
        kl_weight: cfg.kl_weight,
        forget_classes,
        early_exit: cfg.early_exit,
        stop_at: target.clone(),
        seed: cfg.seed,
        record_batches: cfg.record_batches,
        iterations: cfg.iterations,
        clip: cfg.clip,
    };
    let (epochs, lr_choice) = match (cfg.lr, &target) {
        (Lr::Auto, Some(target)) => {
            let (choice, epochs, rs) = auto::choose(&auto::candidates(cfg.optimizer), target, |lr| {
                obs.phase(&format!("training (lr {lr:e})"));
                reset(&mut adapters)?;
                settings.lr = lr;
                let epochs = train(&net, &mut adapters, forget, retain, classes, &settings, obs)?;
                let rs = adapters.iter().map(|a| a.r.f_detach_copy()).collect::<Result<Vec<_>, _>>()?;
                Ok((epochs, rs))
            })?;
            let _g = tch::no_grad_guard();
            for (a, r) in adapters.iter_mut().zip(rs) {
                a.r.f_copy_(&r)?;
            }
            (epochs, Some(choice))
        }
        (Lr::Auto, None) => {
            let reason = format!(
                "no target to probe for (sample forgetting without --test): the {:?} default rate",
                cfg.optimizer
            );
            tracing::info!("lr auto: {:e}: {reason}", settings.lr);
            let choice = LrChoice { lr: settings.lr, reason, target: None, tried: Vec::new() };
            (train(&net, &mut adapters, forget, retain, classes, &settings, obs)?, Some(choice))
        }
        (Lr::Fixed(_), _) => (train(&net, &mut adapters, forget, retain, classes, &settings, obs)?, None),
    };
    if let Some(c) = &lr_choice {
        tracing::info!("lr auto chose {:e}: {}", c.lr, c.reason);
    }
    timings.training = t.elapsed().as_secs_f64();
    crate::engine::memory::release_freed();
    if let Some(dir) = &cfg.dump_dir {
        for a in &adapters {
            let cpu = |t: Tensor| t.f_detach()?.f_to_device(Device::Cpu);
            dump.push((format!("r/{}", a.name), cpu(a.r_effective()?)?));
            dump.push((format!("u/{}", a.name), cpu(a.bases().0.shallow_clone())?));
            dump.push((format!("d/{}", a.name), cpu(a.delta()?)?));
        }
        write_dump(dir, &dump)?;
    }
    // Full adapters of rank 0 only took part in the clip: they change nothing.
    let (kept, frozen): (Vec<Adapter>, Vec<Adapter>) = adapters.into_iter().partition(|a| a.trainable() > 0);
    let adapters = kept;
    skipped.extend(frozen.into_iter().map(|a| a.name));
    skipped.sort_by_key(|n| layers.iter().position(|l| &l.name == n));

    let trainable: i64 = adapters.iter().map(|a| a.trainable()).sum();
    let mut reports = Vec::new();
    let _g = tch::no_grad_guard();
    for a in &adapters {
        let l = layers.iter().find(|l| l.name == a.name).expect("adapter of a layer");
        let change = a.delta()?.f_abs()?.f_max()?.f_double_value(&[])?;
        reports.push(LayerReport {
            name: a.name.clone(),
            kind: format!("{:?}", l.kind),
            shape: a.dims.clone(),
            k: a.k,
            trainable: a.trainable(),
            share_of_parameters: a.trainable() as f64 / total_parameters.max(1) as f64,
            explained_variance: a.explained,
            max_abs_change: change,
        });
    }
    Ok(Unlearned {
        net,
        adapters,
        layers: reports,
        skipped_zero_gradient: skipped,
        total_parameters,
        trainable,
        classes,
        epochs,
        timings,
        forget_acc_before: forget_acc_before.expect("measured before or by the gradient pass"),
        retain_acc_before,
        lr_choice,
        target,
        gamma_chosen,
    })
}

/// Step 3–4 for one layer: its forget gradient `g` checked, projected and decomposed; with
/// `--dump-dir` the projected gradient goes into `dump`. Under a parameter `budget` every
/// component is kept up to the largest rank the budget could hold (k² ≤ budget).
#[allow(clippy::too_many_arguments)]
fn decomposition_of(
    net: &Model,
    model: &OnnxModel,
    cfg: &SemuConfig,
    forget: &dyn Dataset,
    l: &Layer,
    g: &Tensor,
    budget: Option<i64>,
    dump: &mut Vec<(String, Tensor)>,
) -> Result<super::svd::Decomposition> {
    let w = net.plan.param(&l.name).expect("dynamic");
    // NaN in the data or another weight would otherwise surface as an SVD that fails to converge.
    if !all_finite(g)? {
        return Err(Error::msg(format!(
            "{}: the forget-set gradient of weight '{}' is NaN or Inf: the model's outputs on {} are not \
             finite (NaN/Inf in another of its weights, or in the data)",
            model.path.display(),
            l.name,
            forget.source()
        )));
    }
    let g = if cfg.projection { project(g, w, cfg.parity)? } else { g.shallow_clone() };
    if cfg.dump_dir.is_some() {
        dump.push((format!("g/{}", l.name), g.f_to_device(Device::Cpu)?));
    }
    // The fast rank solver for large 2-D gradients, the exact SVD for the rest, in the conv view
    // of a channels-last weight (`svd::decompose_layer`). Under a budget γ is not known yet: the
    // head that decides every k up to BUDGET_GAMMA_MAX.
    let rule = cfg.rank_rule(l, net.task);
    match budget {
        Some(b) => {
            let mut d = super::svd::decompose_layer(&g, l, BUDGET_GAMMA_MAX, cfg.parity)?;
            let cap = ((b.max(1) as f64).sqrt().floor() as i64).min(d.u.size().last().copied().unwrap_or(0));
            // Copies, so that the components beyond the cap are freed now.
            (d.u, d.v) = (d.u.f_narrow(-1, 0, cap)?.f_contiguous()?, d.v.f_narrow(-1, 0, cap)?.f_contiguous()?);
            Ok(d)
        }
        // Every component: the full R's gradient norm needs them all.
        None if rule.full => super::svd::decompose_layer_exact(&g, l),
        None => super::svd::decompose_layer(&g, l, cfg.gamma, cfg.parity),
    }
}

/// Step 5 for one layer: the adapter of decomposition `d` under `rule` (None for a zero
/// gradient); with `--dump-dir` the ranks go into `dump`.
fn adapter_of(
    net: &Model,
    l: &Layer,
    d: &super::svd::Decomposition,
    rule: &RankRule,
    cfg: &SemuConfig,
    dump: &mut Vec<(String, Tensor)>,
) -> Result<Option<Adapter>> {
    let w = net.plan.param(&l.name).expect("dynamic");
    let a = Adapter::with_rule(l, w, d, rule)?;
    if cfg.dump_dir.is_some() {
        let rows = if d.conv { l.view_dims()[1] as usize } else { 1 };
        let ks: Vec<i64> = match &a {
            Some(a) if !a.channel_ranks.is_empty() => a.channel_ranks.iter().map(|&k| k as i64).collect(),
            Some(a) => vec![a.k as i64; rows],
            None => vec![0; rows],
        };
        dump.push((format!("k/{}", l.name), Tensor::f_from_slice(&ks)?));
    }
    Ok(a)
}

/// The largest γ `--max-trained` picks: the layers are decomposed as far as this γ decides k
/// (the fast solver's head for a large gradient, not its whole spectrum).
pub const BUDGET_GAMMA_MAX: f64 = 0.99;

/// The largest γ ≤ [`BUDGET_GAMMA_MAX`] (to 1e-6) whose adapters together train at most
/// `budget` parameters: each layer's count rises with γ, so a bisection finds it. Refused when
/// even the smallest adapters (rank 1 per layer) exceed the budget.
pub fn gamma_for_budget(spectra: &[Spectrum], rules: &[RankRule], budget: i64, percent: f64) -> Result<f64> {
    let count =
        |gamma: f64| -> i64 { spectra.iter().zip(rules).map(|(s, r)| s.trainable(&RankRule { gamma, ..*r })).sum() };
    if count(BUDGET_GAMMA_MAX) <= budget {
        return Ok(BUDGET_GAMMA_MAX);
    }
    let least = count(1e-9);
    if least > budget {
        return Err(Error::msg(format!(
            "--max-trained {percent}%: {budget} parameters, but rank 1 in each of the {} adapted layers already \
             trains {least}: raise --max-trained or adapt fewer layers with --layers",
            spectra.len()
        )));
    }
    let (mut lo, mut hi) = (1e-9, BUDGET_GAMMA_MAX);
    while hi - lo > 1e-6 {
        let mid = (lo + hi) / 2.0;
        if count(mid) <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

/// `dir/semu.npz` (written atomically): what a parity check compares (`SemuConfig::dump_dir`).
fn write_dump(dir: &std::path::Path, arrays: &[(String, Tensor)]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (path, tmp) = (dir.join("semu.npz"), dir.join(".semu.npz.tmp"));
    let named: Vec<(&str, &Tensor)> = arrays.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_npz(&named, &tmp)?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))
}

impl Unlearned {
    /// Accuracy with the current adapters.
    pub fn accuracy(&self, ds: &dyn Dataset, batch: usize) -> Result<f64> {
        self.net.accuracy(ds, batch, &overrides(&self.adapters)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semu::svd::decompose;
    use tch::Kind;

    #[test]
    fn the_budget_gets_the_largest_gamma_that_fits_and_refuses_one_too_small() {
        tch::manual_seed(11);
        let spectra: Vec<Spectrum> = [[30i64, 20], [16, 40], [24, 24]]
            .iter()
            .map(|d| Spectrum::of(&decompose(&Tensor::randn(d, (Kind::Float, Device::Cpu)), false).unwrap()).unwrap())
            .collect();
        let rules = vec![RankRule::layer(0.9, Parity::Paper); 3];
        let count = |g: f64| -> i64 {
            spectra.iter().zip(&rules).map(|(s, r)| s.trainable(&RankRule { gamma: g, ..*r })).sum()
        };
        for budget in [3, 50, 300, 900] {
            let g = gamma_for_budget(&spectra, &rules, budget, 1.0).unwrap();
            assert!(count(g) <= budget, "budget {budget}: γ {g} trains {}", count(g));
            if g < BUDGET_GAMMA_MAX {
                assert!(count(g + 2e-6) > budget, "budget {budget}: γ {g} is not the largest");
            }
        }
        let all = gamma_for_budget(&spectra, &rules, 10_000, 1.0).unwrap();
        assert_eq!(all, BUDGET_GAMMA_MAX, "every component fits: the largest γ the decomposition decides");
        let e = gamma_for_budget(&spectra, &rules, 2, 0.001).unwrap_err().to_string();
        assert!(e.contains("rank 1 in each of the 3") && e.contains("--max-trained 0.001%"), "{e}");
    }
}

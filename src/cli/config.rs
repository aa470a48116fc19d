//! SEMU settings from `--config FILE.toml` and flags: defaults, then the file, then the flags
//! given on the command line (each flag overrides). The report embeds the effective result.
use anyhow::Context;
use semu::semu::optim::OptimizerKind;
use semu::semu::{Parity, SemuConfig};
use std::path::PathBuf;

#[derive(clap::Args, Debug, Default)]
pub struct SemuFlags {
    /// Every setting below (and `device`) from a TOML file; flags given here override it.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Weight of the retain loss [default: 1.0; 0 without --retain].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// The unlearning objective on the forget data, trained inside SEMU's subspace: nearest
    /// (each sample to the input model's nearest other class, keeping its odds between the
    /// others), redistribute (the true class's probability handed to the others), rl (the
    /// paper's recipe: random labels / random tokens, lr 0.01, every epoch), ga (gradient
    /// ascent), graddiff (ascent on the forget data + α × descent on --retain), npo (Negative
    /// Preference Optimization) [default: nearest; redistribute for a causal LM].
    #[arg(long, value_enum)]
    pub objective: Option<semu::task::Objective>,
    /// NPO's inverse temperature β [default: 0.1].
    #[arg(long)]
    pub npo_beta: Option<f64>,
    /// redistribute / nearest: weight λ of the KL term that keeps the input model's odds between
    /// the classes not forgotten [default: 1].
    #[arg(long)]
    pub kl_weight: Option<f64>,
    /// Explained-variance threshold that picks each layer's rank [default: 0.85 for a
    /// classifier, 0.95 for a diffusion model; a causal LM uses --max-trained 1.5].
    #[arg(long)]
    pub gamma: Option<f64>,
    /// A budget instead of --gamma: the largest γ ≤ 0.99 (one for every layer) whose adapters
    /// together train at most PERCENT of the model's parameters, e.g. 1.5 [default: 1.5 for a
    /// causal LM].
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub max_trained: Option<f64>,
    /// Passes over the forget data [default: 10; a causal LM and a diffusion model train by
    /// --iterations instead, unless --epochs is given].
    #[arg(long)]
    pub epochs: Option<usize>,
    /// A learning rate, or `auto`: the smallest rate that forgets the forget set to the level a
    /// retrained model would show within the epochs (the report says which and why)
    /// [default: auto; 0.01 with --objective rl; 1e-2 for a causal LM, 1e-3 for its --method
    /// baselines].
    #[arg(long)]
    pub lr: Option<semu::semu::Lr>,
    /// [default: 256; 8 for a causal LM]
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Records of --retain drawn beside each forget batch [default: as many as the forget
    /// batch; 32 for a causal LM].
    #[arg(long, value_name = "N")]
    pub retain_batch_size: Option<usize>,
    /// What a training step's matrix products and convolutions compute in: bf16 or f16 halve
    /// their cost on a GPU (bf16 also on CPUs with bf16 units); the weights, R, the gradients,
    /// the scores and the export stay f32 [default: f32].
    #[arg(long, value_enum)]
    pub precision: Option<semu::engine::precision::Precision>,
    /// [default: sgd; adam for a causal LM or a diffusion model]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// [default: 0.9]
    #[arg(long)]
    pub momentum: Option<f64>,
    /// [default: 5e-4; 0 for a causal LM]
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// Do not project the gradient orthogonally to the weight.
    #[arg(long)]
    pub no_projection: bool,
    /// `reference` reproduces the authors' code where it differs from the paper (SEMU.md) [default: paper].
    #[arg(long, value_enum)]
    pub parity: Option<Parity>,
    /// Adapt only weights whose name matches (glob) or of this kind (conv, gemm, matmul).
    #[arg(long = "layers", value_name = "GLOB")]
    pub layers: Vec<String>,
    /// Compute the forget-set gradient in N passes, each for one group of the adapted layers
    /// (decomposed and freed before the next): N passes over the forget set for 1/N of the
    /// gradients' memory, for models whose gradients do not fit beside their weights [default: 1].
    #[arg(long, value_name = "N")]
    pub gradient_groups: Option<usize>,
    /// Stop when (UA+RA)/2 (UA alone without remaining data) stops improving.
    #[arg(long)]
    pub early_exit: bool,
    /// [default: 0]
    #[arg(long)]
    pub seed: Option<u64>,
    /// auto | cpu | cuda | cuda:N [default: auto]
    #[arg(long)]
    pub device: Option<String>,
    /// Train this many steps (batches of the forget data, reshuffled as it runs out) instead of
    /// --epochs passes [default: 1 000 for a causal LM; 200 for a diffusion model; 1 000 with
    /// --parity reference].
    #[arg(long)]
    pub iterations: Option<usize>,
    /// γ of the weights whose name contains `attn` [default: --gamma; 1.0 with --parity
    /// reference on a diffusion model].
    #[arg(long)]
    pub gamma_attention: Option<f64>,
    /// Convs: one rank for all input channels (max) or one per input channel (per-channel)
    /// [default: per-channel for a diffusion model, max otherwise].
    #[arg(long, value_enum)]
    pub conv_rank: Option<semu::semu::unlearn::ConvRank>,
    /// Diffusion: guidance w of the gradient's prediction (1+w)·ε(c) − w·ε(∅), the authors'
    /// convention (the usual scale is 1 + w) [default: 2].
    #[arg(long)]
    pub guidance: Option<f64>,
    /// Diffusion: probability of the null class in each branch of the unlearning loss [default: 0.1].
    #[arg(long)]
    pub p_uncond: Option<f64>,
    /// Diffusion: where the forgotten class's noise is pointed: next ((c+1) mod K), random (one
    /// other class per batch), null (the unconditional prediction) [default: next].
    #[arg(long, value_enum)]
    pub target_class: Option<semu::task::diffusion::TargetClass>,
    /// Diffusion: who gives the target noise: the frozen input model (original) or the model
    /// being trained (current, the authors' code) [default: original; current with --parity reference].
    #[arg(long, value_enum)]
    pub teacher: Option<semu::task::diffusion::Teacher>,
}

/// The file's shape: SemuConfig's fields plus `device`.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(flatten)]
    semu: SemuConfig,
    device: Option<String>,
}

impl SemuFlags {
    /// The effective settings and device string. `has_retain` decides α's default (0 without
    /// remaining data: SEMU then runs on the forget set alone).
    pub fn resolve(&self, has_retain: bool) -> anyhow::Result<(SemuConfig, String)> {
        self.resolve_for(has_retain, semu::task::TaskKind::Classify)
    }

    /// [`Self::resolve`] from the task's defaults (`SemuConfig::for_task`).
    pub fn resolve_for(&self, has_retain: bool, task: semu::task::TaskKind) -> anyhow::Result<(SemuConfig, String)> {
        let (mut c, mut device) = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                let f: FileConfig =
                    toml::from_str(&text).map_err(|e| anyhow::anyhow!(semu::error::toml_problem(p, &text, &e)))?;
                (f.semu, f.device)
            }
            // `--objective rl` alone is the paper's recipe, as before the other objectives.
            None if task == semu::task::TaskKind::Classify && self.objective == Some(semu::task::Objective::Rl) => {
                (SemuConfig::default(), None)
            }
            // The authors' diffusion recipe as a whole, under --parity reference.
            None if task == semu::task::TaskKind::Diffusion && self.parity == Some(Parity::Reference) => {
                (SemuConfig::diffusion_reference(has_retain), None)
            }
            None => (SemuConfig::for_task(task, has_retain), None),
        };
        macro_rules! over {
            ($($f:ident),*) => { $( if let Some(v) = self.$f.clone() { c.$f = v; } )* };
        }
        over!(
            objective,
            npo_beta,
            kl_weight,
            alpha,
            gamma,
            epochs,
            lr,
            batch_size,
            precision,
            optimizer,
            momentum,
            weight_decay,
            parity,
            seed,
            guidance,
            p_uncond,
            teacher
        );
        // An explicit γ replaces the task's default budget; both at once say two different things.
        match (self.max_trained, self.gamma.is_some() || self.gamma_attention.is_some()) {
            (Some(_), true) => anyhow::bail!("give --max-trained or --gamma/--gamma-attention, not both"),
            (Some(p), false) => c.max_trained = Some(p),
            (None, true) => c.max_trained = None,
            (None, false) => {}
        }
        if let Some(v) = self.iterations {
            c.iterations = Some(v);
        } else if self.epochs.is_some() {
            // Epochs asked for: the task's default step count (a diffusion model's, a causal LM's) gives way.
            c.iterations = None;
        }
        if let Some(v) = self.retain_batch_size {
            c.retain_batch_size = Some(v);
        }
        if let Some(v) = self.gamma_attention {
            c.gamma_attention = Some(v);
        }
        if let Some(v) = self.conv_rank {
            c.conv_rank = v;
        }
        if let Some(v) = self.target_class {
            c.target = v;
        }
        if self.no_projection {
            c.projection = false;
        }
        if self.early_exit {
            c.early_exit = true;
        }
        if let Some(n) = self.gradient_groups {
            c.gradient_groups = n;
        }
        if !self.layers.is_empty() {
            c.layers = self.layers.clone();
        }
        if self.device.is_some() {
            device = self.device.clone();
        }
        // Checked before α is zeroed for a run without remaining data, so `--alpha nan` is refused too.
        c.validate()?;
        if !has_retain {
            c.alpha = 0.0;
        }
        Ok((c, device.unwrap_or_else(|| "auto".into())))
    }
}

/// `1.5` or `1.5%`: a per cent.
fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 =
        s.trim().trim_end_matches('%').trim().parse().map_err(|_| format!("'{s}' is not a per cent (e.g. 1.5)"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("{v} is not a per cent in (0, 100]"))
    }
}

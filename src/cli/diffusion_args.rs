//! Flags over a diffusion model's `semu.diffusion.*` metadata, shared by the commands that run
//! one (`sample`, `unlearn`, `eval`).
use anyhow::anyhow;
use semu::diffusion::Overrides;

#[derive(clap::Args, Debug, Default, Clone)]
pub struct DiffusionArgs {
    /// Diffusion: eps | sample | v (key semu.diffusion.prediction)
    #[arg(long)]
    pub prediction: Option<String>,
    /// Diffusion: linear | scaled_linear | cosine (key semu.diffusion.schedule; `--schedule` is
    /// the baselines' learning-rate schedule)
    #[arg(long)]
    pub beta_schedule: Option<String>,
    /// Diffusion: first β (key semu.diffusion.beta_start)
    #[arg(long)]
    pub beta_start: Option<f64>,
    /// Diffusion: last β (key semu.diffusion.beta_end)
    #[arg(long)]
    pub beta_end: Option<f64>,
    /// Diffusion: T (key semu.diffusion.timesteps)
    #[arg(long)]
    pub timesteps: Option<usize>,
    /// Diffusion: the class value of the unconditional pass (key semu.diffusion.null_label).
    #[arg(long)]
    pub null_class: Option<i64>,
    /// Diffusion: number of classes (key semu.diffusion.num_classes)
    #[arg(long)]
    pub num_classes: Option<i64>,
    /// Diffusion: the model's image range LO,HI; data in [0, 1] is mapped to it (key
    /// semu.diffusion.data_range)
    #[arg(long, value_name = "LO,HI", allow_hyphen_values = true)]
    pub data_range: Option<String>,
    /// Diffusion: the graph inputs of x_t, t and y (keys semu.diffusion.input.{x,t,y}).
    #[arg(long, value_name = "X,T,Y")]
    pub inputs: Option<String>,
    /// Diffusion, text-conditioned: the graph input of the text states (key
    /// semu.diffusion.input.context); its tokenizer.json is --tokenizer where the command has it.
    #[arg(long)]
    pub context_input: Option<String>,
    /// Diffusion, text-conditioned: the text encoder ONNX (key semu.diffusion.text_encoder,
    /// relative to the model's folder).
    #[arg(long, value_name = "ONNX")]
    pub text_encoder: Option<std::path::PathBuf>,
    /// Diffusion, latent model: the VAE encoder ONNX, images → latents (key
    /// semu.diffusion.vae_encoder, relative to the model's folder).
    #[arg(long, value_name = "ONNX")]
    pub vae_encoder: Option<std::path::PathBuf>,
    /// Diffusion, latent model: the VAE decoder ONNX, latents → images (key
    /// semu.diffusion.vae_decoder, relative to the model's folder).
    #[arg(long, value_name = "ONNX")]
    pub vae_decoder: Option<std::path::PathBuf>,
    /// Diffusion, latent model: the ε-network's latents = the VAE's × this (SD 1.x: 0.18215; key
    /// semu.diffusion.latent_scale).
    #[arg(long)]
    pub latent_scale: Option<f64>,
}

impl DiffusionArgs {
    pub fn overrides(&self) -> anyhow::Result<Overrides> {
        let inputs = match self.inputs.as_deref().map(|s| s.split(',').map(str::to_string).collect::<Vec<_>>()) {
            None => None,
            Some(v) => Some(<[String; 3]>::try_from(v).map_err(|_| anyhow!("--inputs: expected X,T,Y"))?),
        };
        Ok(Overrides {
            prediction: self.prediction.clone(),
            schedule: self.beta_schedule.clone(),
            beta_start: self.beta_start,
            beta_end: self.beta_end,
            timesteps: self.timesteps,
            null_label: self.null_class,
            num_classes: self.num_classes,
            data_range: self.data_range.clone(),
            inputs,
            context: self.context_input.clone(),
            text_encoder: self.text_encoder.clone(),
            tokenizer: None,
            vae_encoder: self.vae_encoder.clone(),
            vae_decoder: self.vae_decoder.clone(),
            latent_scale: self.latent_scale,
        })
    }
}

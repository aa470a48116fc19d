//! A latent model's VAE (Stable Diffusion's layout): the ε-network works on latents, images reach
//! it through the VAE encoder and leave through the decoder, both ONNX files run on the engine.
//!
//! - `encode`: images in [0, 1] → [−1, 1] (diffusers' range) → encoder → the diagonal Gaussian's
//!   **mean** when the output has 2 × the latent channels (diffusers' moments, optimum's
//!   `latent_parameters`: mean first, log-variance second), else the output itself → × scale.
//!   Taking the mean, not a draw, makes the latents of an image set deterministic (a draw would
//!   add noise of the VAE's variance to every forget image).
//! - `decode`: latents ÷ scale → decoder → clamp to [−1, 1] → [0, 1].
use super::schedule::{LatentSettings, Settings};
use crate::data::{batches, Dataset, NpzDataset};
use crate::engine::{Plan, PlanOptions, Registry};
use crate::error::{Error, Result};
use crate::onnx::OnnxModel;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Rows per forward pass of the encoder and decoder.
const BATCH: usize = 64;

/// One half of the VAE: its plan, its one input and that input's declared channels.
struct Part {
    plan: Plan,
    path: PathBuf,
    input: String,
    channels: Option<i64>,
}

impl Part {
    fn load(path: &Path, what: &str, flag: &str, device: Device) -> Result<Self> {
        let fail = |e: String| {
            Error::msg(format!("the VAE {what} {}: {e} (semu.diffusion.vae_{what} or {flag})", path.display()))
        };
        let model = OnnxModel::load(path).map_err(|e| fail(e.to_string()))?;
        let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { device, ..Default::default() })
            .map_err(|e| fail(e.to_string()))?;
        let input = match plan.inputs() {
            [one] => one.name.clone(),
            more => {
                let names: Vec<&str> = more.iter().map(|i| i.name.as_str()).collect();
                return Err(fail(format!("needs one input, has {}: {}", names.len(), names.join(", "))));
            }
        };
        let declared = model.graph().input.iter().find(|v| v.name() == input);
        let channels = declared.and_then(|v| crate::onnx::summary::value_summary(v).shape.get(1)?.parse().ok());
        Ok(Part { plan, path: path.to_path_buf(), input, channels })
    }

    /// The first output for `x` (N×…, CPU), run `BATCH` rows at a time; the result on the CPU.
    fn run(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(c) = self.channels.filter(|&c| x.dim() != 4 || x.size()[1] != c) {
            return Err(Error::msg(format!(
                "{}: its input '{}' takes N×{c}×H×W, given {:?}",
                self.path.display(),
                self.input,
                x.size()
            )));
        }
        let _g = tch::no_grad_guard();
        let n = x.size()[0] as usize;
        let device = self.plan.device();
        let mut outs = Vec::with_capacity(n.div_ceil(BATCH));
        for start in (0..n).step_by(BATCH) {
            let rows = x.f_narrow(0, start as i64, BATCH.min(n - start) as i64)?.f_to_device(device)?;
            let feeds = HashMap::from([(self.input.clone(), rows)]);
            let out = self
                .plan
                .run(&feeds)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::msg(format!("{}: the graph has no output", self.path.display())))?;
            outs.push(out.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?);
        }
        Ok(Tensor::f_cat(&outs, 0)?)
    }
}

/// A latent model's encoder and/or decoder and its latent scale.
pub struct Vae {
    encoder: Option<Part>,
    decoder: Option<Part>,
    scale: f64,
    /// Latent channels: given, or the decoder's declared input channels.
    channels: Option<i64>,
}

impl Vae {
    /// Loads the files `l` names (either may be absent). `latent_channels` (the ε-network's x
    /// channels, where known) tells a mean-and-log-variance output from latents; without it the
    /// decoder's declared input channels do.
    pub fn load(l: &LatentSettings, latent_channels: Option<i64>, device: Device) -> Result<Self> {
        Self::load_parts(l, true, latent_channels, device)
    }

    /// Only the decoder `l` names (sampling and evaluation make images, never encode them).
    pub fn load_decoder(l: &LatentSettings, device: Device) -> Result<Self> {
        Self::load_parts(l, false, None, device)
    }

    fn load_parts(l: &LatentSettings, encoder: bool, latent_channels: Option<i64>, device: Device) -> Result<Self> {
        let encoder = l.encoder.as_deref().filter(|_| encoder);
        let encoder = encoder.map(|p| Part::load(p, "encoder", "--vae-encoder", device)).transpose()?;
        let decoder = l.decoder.as_deref().map(|p| Part::load(p, "decoder", "--vae-decoder", device)).transpose()?;
        let declared = decoder.as_ref().and_then(|d| d.channels);
        Ok(Vae { encoder, decoder, scale: l.scale, channels: latent_channels.or(declared) })
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    pub fn has_decoder(&self) -> bool {
        self.decoder.is_some()
    }

    /// Latents (× scale) of `images` (N×C×H×W in [0, 1]), on the CPU.
    pub fn encode(&self, images: &Tensor) -> Result<Tensor> {
        let enc = self.encoder.as_ref().ok_or_else(|| {
            Error::msg(
                "no VAE encoder to take images to latents: give --vae-encoder FILE (or the model's metadata \
                        semu.diffusion.vae_encoder)",
            )
        })?;
        let x = images.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_mul_scalar(2.0)?.f_add_scalar(-1.0)?;
        let out = enc.run(&x)?;
        let c = out.size().get(1).copied().unwrap_or(0);
        let mean = match self.channels {
            Some(k) if c == 2 * k => out.f_narrow(1, 0, k)?,
            Some(k) if c == k => out,
            k => {
                return Err(Error::msg(format!(
                    "{}: its output has {c} channels, which is neither the latent channels ({}) nor twice them \
                     (mean and log-variance)",
                    enc.path.display(),
                    k.map_or("unknown: give --vae-decoder or a model with a fixed channel count".into(), |k| k
                        .to_string())
                )))
            }
        };
        Ok(mean.f_mul_scalar(self.scale)?)
    }

    /// Images in [0, 1] of `latents` (N×C×h×w, × scale, as the ε-network samples them), on the CPU.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let dec = self.decoder.as_ref().ok_or_else(|| {
            Error::msg(
                "no VAE decoder to take latents to images: give --vae-decoder FILE (or the model's metadata \
                        semu.diffusion.vae_decoder)",
            )
        })?;
        let z = latents.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?.f_div_scalar(self.scale)?;
        Ok(dec.run(&z)?.f_clamp(-1.0, 1.0)?.f_add_scalar(1.0)?.f_mul_scalar(0.5)?)
    }
}

/// The records of `ds` (images in [0, 1]) in the space of the ε-network `model`, as its records
/// are held: a latent model's images encoded once to latents and mapped from its data range to
/// [0, 1] (the task maps them back before noising). `None`: they are already in it. A shape the
/// network cannot take is an error naming both shapes and, without an encoder, `--vae-encoder`.
pub fn model_space(model: &OnnxModel, s: &Settings, ds: &dyn Dataset, device: Device) -> Result<Option<NpzDataset>> {
    let path = model.path.display();
    let want: Option<Vec<i64>> = model.graph().input.iter().find(|v| v.name() == s.input_x).and_then(|v| {
        crate::onnx::summary::value_summary(v).shape.iter().skip(1).map(|d| d.parse::<i64>().ok()).collect()
    });
    let have = ds.sample_shape()?;
    let encoder = s.latent.as_ref().filter(|l| l.encoder.is_some());
    let Some(l) = encoder else {
        if want.as_ref().is_some_and(|w| *w != have) {
            return Err(Error::msg(format!(
                "{}: its images are {have:?} but {path}'s input '{}' takes {:?}: a latent model needs its VAE \
                 encoder to take images to latents: give --vae-encoder FILE (and --latent-scale, or the metadata \
                 semu.diffusion.vae_encoder and semu.diffusion.latent_scale)",
                ds.source(),
                s.input_x,
                want.unwrap_or_default()
            )));
        }
        return Ok(None);
    };
    let vae = Vae::load(l, want.as_ref().and_then(|w| w.first().copied()), device)?;
    let order: Vec<usize> = (0..ds.len()).collect();
    let (mut zs, mut ys) = (Vec::new(), Vec::new());
    for idx in batches(&order, 1024) {
        let (x, y) = ds.batch(idx)?;
        zs.push(vae.encode(&x)?);
        ys.push(y);
    }
    let z = Tensor::f_cat(&zs, 0)?;
    if let Some(w) = want.filter(|w| *w != z.size()[1..]) {
        return Err(Error::msg(format!(
            "{}: its images {have:?} encode to latents {:?} but {path}'s input '{}' takes {w:?}: is {} this \
             model's VAE encoder?",
            ds.source(),
            &z.size()[1..],
            s.input_x,
            l.encoder.as_deref().unwrap_or(Path::new("")).display()
        )));
    }
    let (lo, hi) = s.data_range;
    let records = z.f_sub_scalar(lo)?.f_div_scalar(hi - lo)?;
    let source = format!("{} encoded by {}", ds.source(), l.encoder.as_deref().unwrap_or(Path::new("")).display());
    Ok(Some(NpzDataset::from_tensors(source, records, Tensor::f_cat(&ys, 0)?)?))
}

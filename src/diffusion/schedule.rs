//! The settings a diffusion ε-network needs outside its graph, from the model's `semu.diffusion.*`
//! metadata properties (as tools/make_ddpm.py writes them), each overridable by a flag.
use crate::error::{Error, Result};

/// How β runs over t = 0..T−1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BetaSchedule {
    /// β evenly spaced from `beta_start` to `beta_end` (DDPM).
    Linear,
    /// √β evenly spaced, squared (Stable Diffusion's `scaled_linear`).
    ScaledLinear,
    /// ᾱ from a squared cosine, β capped at 0.999 (improved DDPM); no β range.
    Cosine,
}

impl BetaSchedule {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "linear" => Some(Self::Linear),
            "scaled_linear" | "scaled-linear" => Some(Self::ScaledLinear),
            "cosine" | "squaredcos_cap_v2" => Some(Self::Cosine),
            _ => None,
        }
    }
}

/// What the network's output is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prediction {
    Eps,
    /// The clean image x̂₀.
    Sample,
    /// v = √ᾱ·ε − √(1−ᾱ)·x₀.
    V,
}

impl Prediction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "eps" | "epsilon" => Some(Self::Eps),
            "sample" | "x0" => Some(Self::Sample),
            "v" | "v_prediction" => Some(Self::V),
            _ => None,
        }
    }
}

/// Flag values that replace the metadata's; `None` keeps the model's.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub prediction: Option<String>,
    pub schedule: Option<String>,
    pub beta_start: Option<f64>,
    pub beta_end: Option<f64>,
    pub timesteps: Option<usize>,
    pub null_label: Option<i64>,
    pub num_classes: Option<i64>,
    pub data_range: Option<String>,
    /// The graph's inputs for x_t, t and y.
    pub inputs: Option<[String; 3]>,
    /// A prompt-conditioned model: the graph input of the text encoder's states.
    pub context: Option<String>,
    /// Its text encoder ONNX and tokenizer.json (default: the metadata's, beside the model).
    pub text_encoder: Option<std::path::PathBuf>,
    pub tokenizer: Option<std::path::PathBuf>,
    /// A latent model's VAE encoder and decoder ONNX and its latent scale.
    pub vae_encoder: Option<std::path::PathBuf>,
    pub vae_decoder: Option<std::path::PathBuf>,
    pub latent_scale: Option<f64>,
}

/// How a prompt-conditioned network gets its conditioning: prompts → tokenizer → text encoder →
/// the states fed to `Settings::input_y` (the context input).
#[derive(Debug, Clone, PartialEq)]
pub struct TextSettings {
    /// The text encoder ONNX and the tokenizer.json (resolved against the model's folder).
    pub encoder: std::path::PathBuf,
    pub tokenizer: std::path::PathBuf,
    pub encoder_input: String,
    pub encoder_output: String,
    /// Token ids per prompt (padded or cut to it).
    pub context_length: usize,
    /// The unconditional pass's prompt.
    pub null_prompt: String,
}

/// A latent model (Stable Diffusion's layout): the ε-network's x is the VAE's latents × `scale`;
/// images reach it through the encoder and leave through the decoder ([`super::vae`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LatentSettings {
    /// The VAE encoder and decoder ONNX (resolved against the model's folder); either may be
    /// absent where the command does not need it.
    pub encoder: Option<std::path::PathBuf>,
    pub decoder: Option<std::path::PathBuf>,
    /// Latents fed to the ε-network = the VAE's latents × scale (SD 1.x: 0.18215).
    pub scale: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub prediction: Prediction,
    pub schedule: BetaSchedule,
    /// Unused by the cosine schedule (0).
    pub beta_start: f64,
    pub beta_end: f64,
    pub timesteps: usize,
    /// The class value that means "no class" (classifier-free guidance's unconditional pass).
    pub null_label: i64,
    pub num_classes: i64,
    /// The model's image space (x₀ lies in it; samples are clamped to it).
    pub data_range: (f64, f64),
    /// Graph input names of x_t, t and y (y: the class, or the text states of a prompt model).
    pub input_x: String,
    pub input_t: String,
    pub input_y: String,
    /// A prompt-conditioned model (`semu.diffusion.input.context`): no classes, `num_classes`
    /// and `null_label` unused (0).
    pub text: Option<TextSettings>,
    /// A latent model (`semu.diffusion.vae_encoder`, `vae_decoder` or `latent_scale` set): x and
    /// `data_range` are the latents'.
    pub latent: Option<LatentSettings>,
}

pub(crate) const PREFIX: &str = "semu.diffusion.";

impl Settings {
    /// Reads the settings of `model` (named in errors) from its metadata `props`, flags first.
    /// Everything missing or unreadable is reported at once, with the key and flag that give it.
    pub fn resolve<'a>(
        model: &str,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
        o: &Overrides,
    ) -> Result<Self> {
        let props: Vec<(&str, &str)> = props.into_iter().collect();
        let meta = |k: &str| props.iter().find(|(key, _)| key.strip_prefix(PREFIX) == Some(k)).map(|(_, v)| *v);
        let mut problems: Vec<String> = Vec::new();
        let missing = |problems: &mut Vec<String>, key: &str, flag: &str| {
            problems.push(format!("{PREFIX}{key} (or {flag})"));
        };
        let bad = |problems: &mut Vec<String>, key: &str, v: &str, want: &str| {
            problems.push(format!("{PREFIX}{key} = '{v}' is not {want}"));
        };

        let prediction = match o.prediction.as_deref().or(meta("prediction")) {
            None => {
                missing(&mut problems, "prediction", "--prediction eps|sample|v");
                None
            }
            Some(v) => Prediction::parse(v).or_else(|| {
                bad(&mut problems, "prediction", v, "one of eps, sample, v");
                None
            }),
        };
        let schedule = match o.schedule.as_deref().or(meta("schedule")) {
            None => {
                missing(&mut problems, "schedule", "--beta-schedule linear|scaled_linear|cosine");
                None
            }
            Some(v) => BetaSchedule::parse(v).or_else(|| {
                bad(&mut problems, "schedule", v, "one of linear, scaled_linear, cosine");
                None
            }),
        };
        let context = o.context.as_deref().or(meta("input.context")).map(str::to_string);
        let num = |problems: &mut Vec<String>, key: &str, flag: &str, given: Option<f64>| -> Option<f64> {
            if given.is_some() {
                return given;
            }
            match meta(key) {
                None => {
                    missing(problems, key, flag);
                    None
                }
                Some(v) => v.trim().parse::<f64>().ok().filter(|x| x.is_finite()).or_else(|| {
                    bad(problems, key, v, "a number");
                    None
                }),
            }
        };
        let (beta_start, beta_end) = if schedule == Some(BetaSchedule::Cosine) {
            (Some(0.0), Some(0.0))
        } else {
            (
                num(&mut problems, "beta_start", "--beta-start", o.beta_start),
                num(&mut problems, "beta_end", "--beta-end", o.beta_end),
            )
        };
        let timesteps = num(&mut problems, "timesteps", "--timesteps", o.timesteps.map(|t| t as f64));
        let (null_label, num_classes) = if context.is_some() {
            (Some(0.0), Some(1.0))
        } else {
            (
                num(&mut problems, "null_label", "--null-class", o.null_label.map(|t| t as f64)),
                num(&mut problems, "num_classes", "--num-classes", o.num_classes.map(|t| t as f64)),
            )
        };
        let data_range = match o.data_range.as_deref().or(meta("data_range")) {
            None => {
                missing(&mut problems, "data_range", "--data-range LO,HI");
                None
            }
            Some(v) => parse_range(v).or_else(|| {
                bad(&mut problems, "data_range", v, "LO,HI with LO < HI");
                None
            }),
        };
        let mut names = Vec::new();
        for (i, key) in ["input.x", "input.t", "input.y"].into_iter().enumerate() {
            let given = o.inputs.as_ref().map(|n| n[i].as_str()).or(meta(key));
            match (given, &context) {
                (_, Some(c)) if i == 2 => names.push(c.clone()),
                (Some(v), _) => names.push(v.to_string()),
                (None, _) => missing(&mut problems, key, "--inputs X,T,Y"),
            }
        }
        let dir = std::path::Path::new(model).parent().unwrap_or(std::path::Path::new("."));
        let text = match &context {
            None => None,
            Some(_) => {
                let mut file = |key: &str, flag: &str, given: &Option<std::path::PathBuf>| match (given, meta(key)) {
                    (Some(p), _) => Some(p.clone()),
                    (None, Some(v)) => Some(dir.join(v)),
                    (None, None) => {
                        missing(&mut problems, key, flag);
                        None
                    }
                };
                let encoder = file("text_encoder", "--text-encoder", &o.text_encoder);
                let tokenizer = file("tokenizer", "--tokenizer", &o.tokenizer);
                let length = num(&mut problems, "context_length", "--context-length", None);
                Some(TextSettings {
                    encoder: encoder.unwrap_or_default(),
                    tokenizer: tokenizer.unwrap_or_default(),
                    encoder_input: meta("text_encoder.input").unwrap_or("input_ids").to_string(),
                    encoder_output: meta("text_encoder.output").unwrap_or("last_hidden_state").to_string(),
                    context_length: length.unwrap_or(0.0).max(1.0) as usize,
                    null_prompt: meta("null_prompt").unwrap_or("").to_string(),
                })
            }
        };
        let latent = match (&o.vae_encoder, &o.vae_decoder, o.latent_scale) {
            (None, None, None) if ["vae_encoder", "vae_decoder", "latent_scale"].iter().all(|k| meta(k).is_none()) => {
                None
            }
            _ => {
                let file = |key: &str, given: &Option<std::path::PathBuf>| match (given, meta(key)) {
                    (Some(p), _) => Some(p.clone()),
                    (None, v) => v.filter(|v| !v.is_empty()).map(|v| dir.join(v)),
                };
                let scale = num(&mut problems, "latent_scale", "--latent-scale", o.latent_scale);
                if scale.is_some_and(|s| s <= 0.0) {
                    problems.push(format!("{PREFIX}latent_scale = {} is not positive", scale.unwrap()));
                }
                Some(LatentSettings {
                    encoder: file("vae_encoder", &o.vae_encoder),
                    decoder: file("vae_decoder", &o.vae_decoder),
                    scale: scale.unwrap_or(1.0),
                })
            }
        };
        for (name, v) in [("timesteps", timesteps), ("null_label", null_label), ("num_classes", num_classes)] {
            if v.is_some_and(|v| v.fract() != 0.0 || v < 0.0 || (name != "null_label" && v < 1.0)) {
                problems.push(format!("{PREFIX}{name} = {} is not a positive whole number", v.unwrap()));
            }
        }
        if let (Some(b0), Some(b1)) = (beta_start, beta_end) {
            if schedule != Some(BetaSchedule::Cosine) && !(0.0 < b0 && b0 <= b1 && b1 < 1.0) {
                problems.push(format!("the β range {b0}..{b1} must satisfy 0 < beta_start ≤ beta_end < 1"));
            }
        }
        if !problems.is_empty() {
            return Err(Error::msg(format!(
                "{model}: the diffusion settings are incomplete: {}; set them as the model's metadata \
                 properties or pass the flags",
                problems.join("; ")
            )));
        }
        let [input_x, input_t, input_y]: [String; 3] = names.try_into().expect("three names, or a problem above");
        Ok(Settings {
            prediction: prediction.expect("checked"),
            schedule: schedule.expect("checked"),
            beta_start: beta_start.expect("checked"),
            beta_end: beta_end.expect("checked"),
            timesteps: timesteps.expect("checked") as usize,
            null_label: null_label.expect("checked") as i64,
            num_classes: num_classes.expect("checked") as i64,
            data_range: data_range.expect("checked"),
            input_x,
            input_t,
            input_y,
            text,
            latent,
        })
    }

    /// ᾱ_t = Π_{s≤t} (1 − β_s) for t = 0..T−1, in f64 (as numpy's cumprod of the β linspace).
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let t = self.timesteps;
        let betas: Vec<f64> = match self.schedule {
            BetaSchedule::Linear => linspace(self.beta_start, self.beta_end, t),
            BetaSchedule::ScaledLinear => {
                linspace(self.beta_start.sqrt(), self.beta_end.sqrt(), t).into_iter().map(|b| b * b).collect()
            }
            BetaSchedule::Cosine => {
                let f = |i: usize| ((i as f64 / t as f64 + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..t).map(|i| (1.0 - f(i + 1) / f(i)).min(0.999)).collect()
            }
        };
        let mut acc = 1.0;
        betas
            .into_iter()
            .map(|b| {
                acc *= 1.0 - b;
                acc
            })
            .collect()
    }
}

/// numpy's `linspace(a, b, n)`: a + i·step, the last point exactly b.
fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    if n == 1 {
        return vec![a];
    }
    let step = (b - a) / (n - 1) as f64;
    (0..n).map(|i| if i == n - 1 { b } else { a + i as f64 * step }).collect()
}

fn parse_range(s: &str) -> Option<(f64, f64)> {
    let (lo, hi) = s.split_once(',')?;
    let (lo, hi) = (lo.trim().parse::<f64>().ok()?, hi.trim().parse::<f64>().ok()?);
    (lo < hi).then_some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_props() -> Vec<(&'static str, &'static str)> {
        vec![
            ("semu.diffusion.prediction", "eps"),
            ("semu.diffusion.schedule", "linear"),
            ("semu.diffusion.beta_start", "1e-4"),
            ("semu.diffusion.beta_end", "0.02"),
            ("semu.diffusion.timesteps", "1000"),
            ("semu.diffusion.null_label", "10"),
            ("semu.diffusion.num_classes", "10"),
            ("semu.diffusion.data_range", "-1,1"),
            ("semu.diffusion.input.x", "x_t"),
            ("semu.diffusion.input.t", "t"),
            ("semu.diffusion.input.y", "y"),
        ]
    }

    #[test]
    fn linear_schedule_matches_numpy_cumprod() {
        let s = Settings::resolve("m", fixture_props(), &Overrides::default()).unwrap();
        let a = s.alphas_cumprod();
        assert_eq!(a.len(), 1000);
        assert!((a[0] - 0.9999).abs() < 1e-15);
        assert!((a[1] - 0.9999 * (1.0 - (1e-4 + (0.02 - 1e-4) / 999.0))).abs() < 1e-15);
        // np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))[-1]
        assert!((a[999] - 4.035829e-5).abs() < 1e-9, "{}", a[999]);
    }

    #[test]
    fn flags_override_metadata_and_cosine_needs_no_betas() {
        let o = Overrides { schedule: Some("cosine".into()), timesteps: Some(50), ..Default::default() };
        let s = Settings::resolve("m", fixture_props(), &o).unwrap();
        assert_eq!((s.schedule, s.timesteps), (BetaSchedule::Cosine, 50));
        let a = s.alphas_cumprod();
        assert!(a.windows(2).all(|w| w[1] < w[0]) && a[0] < 1.0 && a[49] > 0.0);
    }

    #[test]
    fn a_latent_model_resolves_its_vae_beside_it_and_needs_its_scale() {
        let mut props = fixture_props();
        props.push(("semu.diffusion.vae_decoder", "vae_decoder.onnx"));
        let e = Settings::resolve("dir/unet.onnx", props.clone(), &Overrides::default()).unwrap_err().to_string();
        assert!(e.contains("latent_scale (or --latent-scale)"), "{e}");
        props.push(("semu.diffusion.latent_scale", "0.18215"));
        let s = Settings::resolve("dir/unet.onnx", props.clone(), &Overrides::default()).unwrap();
        let l = s.latent.unwrap();
        assert_eq!((l.encoder, l.decoder, l.scale), (None, Some("dir/vae_decoder.onnx".into()), 0.18215));
        let o = Overrides { vae_encoder: Some("e.onnx".into()), latent_scale: Some(0.5), ..Default::default() };
        let l = Settings::resolve("dir/unet.onnx", props, &o).unwrap().latent.unwrap();
        assert_eq!((l.encoder, l.scale), (Some("e.onnx".into()), 0.5));
        assert!(Settings::resolve("m", fixture_props(), &Overrides::default()).unwrap().latent.is_none());
    }

    #[test]
    fn everything_missing_is_reported_at_once() {
        let e = Settings::resolve("m.onnx", [("semu.diffusion.schedule", "linear")], &Overrides::default())
            .unwrap_err()
            .to_string();
        for want in [
            "m.onnx",
            "prediction (or --prediction",
            "beta_start (or --beta-start)",
            "timesteps",
            "null_label (or --null-class)",
            "input.t",
        ] {
            assert!(e.contains(want), "'{want}' not in: {e}");
        }
        assert!(!e.contains("schedule (or"), "{e}");
    }
}

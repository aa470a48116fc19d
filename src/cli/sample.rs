//! `semu sample`: images from a class-conditional diffusion ε-network (DDIM/DDPM with
//! classifier-free guidance), as `.npz` (x, y) and optionally a PNG grid.
use super::unlearn::write_atomic;
use super::{usage, CmdResult};
use anyhow::{anyhow, Context};
use semu::diffusion::{self, Network, SampleOptions, Settings};
use semu::engine::convert::kind_of;
use semu::engine::{device_name, Plan, PlanOptions, Registry};
use semu::onnx::proto::type_proto;
use semu::onnx::{DType, OnnxModel};
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

/// Sample images of given classes from a diffusion ε-network (DDIM; η = 1 is DDPM-like).
#[derive(clap::Args)]
#[command(after_help = "Example (the diffusion fixture, 16 samples each of classes 0, 3 and 7):\n  \
semu sample --model fixtures/ddpm/model.onnx --classes 0,3,7 --n 16 --steps 25 --eta 0 \\\n    \
--guidance 2 --seed 0 --out samples.npz --grid grid.png\n\n\
The schedule, the null class, the data range and the input names come from the model's\n\
`semu.diffusion.*` metadata properties; each flag below overrides its key. Guidance w follows the\n\
authors' convention ε̂ = (1+w)·ε(x,t,y) − w·ε(x,t,null), i.e. the usual scale s = 1 + w.\n\
The output x (N×C×H×W f32, in the data range) and y (int64) are in sample order: --n per class.
A latent model (semu.diffusion.latent_scale) needs its VAE decoder (semu.diffusion.vae_decoder or
--vae-decoder): x holds the decoded images in [0, 1], `latents` the sampled latents.")]
pub struct Args {
    /// The ONNX ε-network.
    #[arg(long)]
    model: PathBuf,
    /// One class to sample.
    #[arg(long, conflicts_with_all = ["classes", "prompt"], required_unless_present_any = ["classes", "prompt"])]
    class: Option<i64>,
    /// A text-conditioned model: a prompt to sample (repeat for several; each is one row).
    #[arg(long, conflicts_with = "classes")]
    prompt: Vec<String>,
    /// A text-conditioned model: its tokenizer.json (default: the metadata's, beside the model).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Several classes, comma-separated.
    #[arg(long, value_delimiter = ',')]
    classes: Vec<i64>,
    /// Samples per class.
    #[arg(long, default_value_t = 16)]
    n: usize,
    /// DDIM steps S (timesteps visited: 0, T/S, 2T/S, … below T).
    #[arg(long, default_value_t = 25)]
    steps: usize,
    /// 0 = deterministic DDIM, 1 = DDPM's posterior variance.
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    /// Classifier-free guidance w (authors' convention; 0 = conditional only).
    #[arg(long, default_value_t = 2.0)]
    guidance: f64,
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Starting noise x_T (f32 .npy, N×C×H×W, N = all samples) instead of drawing it from --seed.
    #[arg(long, value_name = "FILE.npy")]
    noise: Option<PathBuf>,
    /// Output .npz with x and y.
    #[arg(long)]
    out: PathBuf,
    /// Also write the samples as a PNG grid (one row of up to 16 per class).
    #[arg(long, value_name = "FILE.png")]
    grid: Option<PathBuf>,
    /// Rows per forward pass (guidance doubles them).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    diffusion: super::diffusion_args::DiffusionArgs,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

pub fn run(mut a: Args) -> CmdResult {
    let device = super::device(&a.device)?;
    a.model = a.remote.model(&a.model)?;
    let mut model = OnnxModel::load(&a.model)?;
    a.weights.bind(&mut model, &a.remote)?;
    let name = a.model.display().to_string();
    let mut o = a.diffusion.overrides().map_err(usage)?;
    o.tokenizer = a.tokenizer.clone();
    let props = model.proto.metadata_props.iter().map(|p| (p.key(), p.value()));
    let s = Settings::resolve(&name, props, &o).map_err(usage)?;
    // A latent model's samples are latents: written as images through its decoder, or refused
    // (latents alone are no images to look at or judge).
    let vae = match &s.latent {
        None => None,
        Some(l) if l.decoder.is_none() => {
            return Err(usage(anyhow!(
                "{name} is a latent model (semu.diffusion.latent_scale): its samples are latents; give its VAE \
                 decoder with --vae-decoder FILE (or the metadata semu.diffusion.vae_decoder) to write images"
            )))
        }
        Some(l) => Some(semu::diffusion::Vae::load_decoder(l, device).map_err(usage)?),
    };

    // A text model samples its prompts: row i of the states (the null prompt last) is "class" i.
    let context = match (&s.text, a.prompt.is_empty()) {
        (Some(text), false) => {
            let mut rows: Vec<&str> = a.prompt.iter().map(String::as_str).collect();
            rows.push(&text.null_prompt);
            Some(semu::diffusion::prompts::encode(text, &rows, device)?)
        }
        (Some(_), true) => return Err(usage(anyhow!("{name} is conditioned on text: give --prompt \"…\""))),
        (None, false) => return Err(usage(anyhow!("--prompt: {name} is conditioned on classes: give --class"))),
        (None, true) => None,
    };
    let classes: Vec<i64> = match &context {
        Some(_) => (0..a.prompt.len() as i64).collect(),
        None => a.class.map(|c| vec![c]).unwrap_or_else(|| a.classes.clone()),
    };
    if classes.is_empty() || a.n == 0 {
        return Err(usage(anyhow!("nothing to sample: give --class C or --classes A,B,… and --n ≥ 1")));
    }
    if let Some(c) = classes.iter().find(|&&c| context.is_none() && (c < 0 || c >= s.num_classes)) {
        return Err(usage(anyhow!("class {c} is out of range: {name} has classes 0..{}", s.num_classes - 1)));
    }
    if !(0.0..=1.0).contains(&a.eta) {
        return Err(usage(anyhow!("--eta {}: must lie in [0, 1]", a.eta)));
    }
    diffusion::step_sequence(s.timesteps, a.steps).map_err(usage)?;
    let y: Vec<i64> = classes.iter().flat_map(|&c| std::iter::repeat_n(c, a.n)).collect();

    // The graph's declared inputs: the three named, their dtypes, and x's image shape.
    let graph_inputs = &model.graph().input;
    let declared = |input: &str| graph_inputs.iter().find(|v| v.name() == input);
    let have: Vec<&str> = graph_inputs.iter().map(|v| v.name()).collect();
    let mut kinds = Vec::new();
    for (key, input) in [("x", &s.input_x), ("t", &s.input_t), ("y", &s.input_y)] {
        let v = declared(input).ok_or_else(|| {
            usage(anyhow!(
                "{name} has no input '{input}' (semu.diffusion.input.{key}; its inputs: {}); pass --inputs X,T,Y",
                have.join(", ")
            ))
        })?;
        let code = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t.elem_type(),
            _ => return Err(usage(anyhow!("{name}: input '{input}' is not a tensor"))),
        };
        kinds.push(DType::from_onnx(code).and_then(kind_of).with_context(|| format!("{name}: input '{input}'"))?);
    }
    let shape = semu::onnx::summary::value_summary(declared(&s.input_x).expect("checked")).shape;
    let chw: Option<Vec<i64>> = shape.iter().skip(1).map(|d| d.parse::<i64>().ok()).collect();

    tch::manual_seed(a.seed);
    let x_t = match &a.noise {
        Some(f) => {
            semu::data::npy_header::check_npy(f).with_context(|| format!("--noise {}", f.display()))?;
            let t = semu::data::npy::read_npy(f).with_context(|| format!("--noise: reading {}", f.display()))?;
            let want = chw.as_ref().map(|c| [&[y.len() as i64][..], c].concat());
            if t.dim() != 4 || t.size()[0] != y.len() as i64 || want.as_ref().is_some_and(|w| *w != t.size()) {
                return Err(usage(anyhow!(
                    "--noise {}: shape {:?}, want [{}, C, H, W] ({} classes × --n {}{})",
                    f.display(),
                    t.size(),
                    y.len(),
                    classes.len(),
                    a.n,
                    chw.as_ref().map(|c| format!("; the model's x is {c:?}")).unwrap_or_default()
                )));
            }
            t.to_kind(tch::Kind::Float)
        }
        None => {
            let c = chw.ok_or_else(|| {
                usage(anyhow!(
                    "{name}: input '{}' has shape {shape:?}, not [batch, C, H, W] with fixed C, H, W; \
                     pass --noise FILE.npy",
                    s.input_x
                ))
            })?;
            tch::Tensor::randn([&[y.len() as i64][..], &c].concat(), (tch::Kind::Float, tch::Device::Cpu))
        }
    };

    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { device, ..Default::default() })?;
    let net =
        Network { plan: &plan, settings: &s, t_kind: kinds[1], y_kind: kinds[2], device, context: context.as_ref() };
    let opts = SampleOptions { steps: a.steps, eta: a.eta, guidance: a.guidance, batch: a.batch };
    let started = Instant::now();
    let mut meter = super::progress::Meter::new("sampling", "steps");
    let x = diffusion::sample(&net, &y, &x_t, &opts, &mut |done, total| meter.set(done as u64, Some(total as u64)))?;
    meter.finish();
    let secs = started.elapsed().as_secs_f64();

    let flat = |t: &tch::Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).context("reading the samples");
    let (images, range, latents) = match &vae {
        Some(v) => (v.decode(&x)?, (0.0, 1.0), Some((flat(&x)?, x.size()))),
        None => (x, s.data_range, None),
    };
    let xs = flat(&images)?;
    let mut arrays = vec![("x", Npy::F32(&xs, images.size())), ("y", Npy::I64(&y, vec![y.len() as i64]))];
    if let Some((z, size)) = &latents {
        arrays.push(("latents", Npy::F32(z, size.clone())));
    }
    let npz = npz_bytes(&arrays)?;
    write_atomic(&a.out, &npz).with_context(|| format!("writing {}", a.out.display()))?;
    if let Some(g) = &a.grid {
        let png = grid_png(&xs, &images.size(), classes.len(), a.n, range)?;
        write_atomic(g, &png).with_context(|| format!("writing {}", g.display()))?;
    }
    let taken = diffusion::step_sequence(s.timesteps, a.steps)?.len();
    println!(
        "{} samples ({} classes × {}), {taken} DDIM steps, η {}, w {}, on {} in {secs:.2} s -> {}",
        y.len(),
        classes.len(),
        a.n,
        a.eta,
        a.guidance,
        device_name(device),
        a.out.display()
    );
    Ok(())
}

pub(super) enum Npy<'a> {
    F32(&'a [f32], Vec<i64>),
    I64(&'a [i64], Vec<i64>),
}

/// An `.npz` (stored zip of `.npy`) with a fixed timestamp, so a seed gives the same bytes.
pub(super) fn npz_bytes(arrays: &[(&str, Npy)]) -> anyhow::Result<Vec<u8>> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::FileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default());
    for (name, arr) in arrays {
        let (descr, shape, data): (&str, &Vec<i64>, Vec<u8>) = match arr {
            Npy::F32(v, s) => ("<f4", s, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            Npy::I64(v, s) => ("<i8", s, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        let dims: String = shape.iter().map(|d| format!("{d}, ")).collect();
        let dims = if shape.len() == 1 { dims.trim_end().to_string() } else { dims.trim_end_matches(", ").to_string() };
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        zip.start_file(format!("{name}.npy"), opts)?;
        zip.write_all(b"\x93NUMPY\x01\x00")?;
        zip.write_all(&(header.len() as u16).to_le_bytes())?;
        zip.write_all(header.as_bytes())?;
        zip.write_all(&data)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// The samples as a grid: a row of up to 16 per class (more wrap), each image scaled up to at
/// least 32 px, 2 px gaps; the data range maps to black..white, the first 3 channels as RGB.
pub(super) fn grid_png(
    xs: &[f32],
    size: &[i64],
    classes: usize,
    n: usize,
    range: (f64, f64),
) -> anyhow::Result<Vec<u8>> {
    let (c, h, w) = (size[1] as usize, size[2] as usize, size[3] as usize);
    let cols = n.min(16);
    let rows_per_class = n.div_ceil(cols);
    let scale = 32usize.div_ceil(h.max(w)).max(1);
    let (cell_h, cell_w) = (h * scale + 2, w * scale + 2);
    let (gw, gh) = (cols * cell_w + 2, classes * rows_per_class * cell_h + 2);
    if gw * gh > 64 << 20 {
        return Err(anyhow!("--grid: {gw}×{gh} pixels is too large; sample fewer images"));
    }
    let mut buf = vec![255u8; gw * gh * 3];
    let level = |v: f32| (((v as f64 - range.0) / (range.1 - range.0)).clamp(0.0, 1.0) * 255.0).round() as u8;
    for (i, img) in xs.chunks(c * h * w).enumerate() {
        let (class, k) = (i / n, i % n);
        let (r, col) = (class * rows_per_class + k / cols, k % cols);
        let (y0, x0) = (2 + r * cell_h, 2 + col * cell_w);
        for py in 0..h * scale {
            for px in 0..w * scale {
                let at = |ch: usize| img[ch.min(c - 1) * h * w + (py / scale) * w + px / scale];
                let rgb = if c >= 3 { [at(0), at(1), at(2)] } else { [at(0); 3] };
                let o = ((y0 + py) * gw + x0 + px) * 3;
                for (j, v) in rgb.into_iter().enumerate() {
                    buf[o + j] = level(v);
                }
            }
        }
    }
    semu::report::plots::encode_png(&buf, gw as u32, gh as u32).map_err(|e| anyhow!("encoding the grid PNG: {e}"))
}

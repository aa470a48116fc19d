//! `semu run MODEL.onnx --input NAME=FILE.npy … [--output-dir D] [--compare-ort]`.
use super::{CmdResult, Exit};
use anyhow::{anyhow, Context};
use semu::engine::convert::{dtype_of, from_tensor};
use semu::engine::{device_name, Plan, PlanOptions, Registry, Value};
use semu::onnx::OnnxModel;
use semu::verify::{compare, OrtSession, Tolerance};
use std::collections::HashMap;
use std::path::PathBuf;

/// Run a model on the engine (libtorch) and write each output as `<output name>.npy`.
#[derive(clap::Args)]
#[command(after_help = "Example:\n  semu run model.onnx --input input=x.npy --output-dir out/ --compare-ort\n\n\
Inputs are named by the graph's input names; an input given as `NAME=` (empty file) is skipped.")]
pub struct Args {
    /// The ONNX model (a path, https://…, or hf://OWNER/REPO[@REVISION]/PATH).
    model: PathBuf,
    /// NAME=FILE.npy, once per graph input.
    #[arg(long = "input", value_name = "NAME=FILE.npy")]
    inputs: Vec<String>,
    /// Where to write `<output>.npy` files.
    #[arg(long, default_value = ".")]
    output_dir: PathBuf,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    /// Also run ONNX Runtime and print the max absolute/relative difference per output;
    /// exit 3 past tolerance.
    #[arg(long)]
    compare_ort: bool,
    /// Relative tolerance for --compare-ort (absolute tolerance is rtol/10).
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    #[command(flatten)]
    remote: super::fetch::RemoteArgs,
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
}

/// Characters outside `[A-Za-z0-9._-]` become `_`, so any output name is a safe file name.
pub fn file_name_for(output: &str) -> String {
    output.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

pub fn run(mut a: Args) -> CmdResult {
    a.model = a.remote.model(&a.model)?;
    let device = super::device(&a.device)?;
    let mut model = OnnxModel::load(&a.model)?;
    // ONNX Runtime reads files: a model with bound weights is written out for it.
    let _bound = match a.weights.bind(&mut model, &a.remote)? {
        Some(_) if a.compare_ort => Some(super::weights::materialize(&mut model)?),
        _ => None,
    };
    a.model = model.path.clone();
    let mut feeds = HashMap::new();
    for spec in &a.inputs {
        let (name, file) = spec.split_once('=').ok_or_else(|| anyhow!("--input '{spec}': expected NAME=FILE.npy"))?;
        if file.is_empty() {
            continue;
        }
        let file = a.remote.file(std::path::Path::new(file))?;
        semu::data::npy_header::check_npy(&file).with_context(|| format!("--input {name}"))?;
        let t =
            semu::data::npy::read_npy(&file).with_context(|| format!("--input {name}: reading {}", file.display()))?;
        feeds.insert(name.to_string(), t);
    }
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { device, ..Default::default() })?;
    let wanted: Vec<&str> = plan.inputs().iter().map(|i| i.name.as_str()).collect();
    if let Some(extra) = feeds.keys().find(|k| !wanted.contains(&k.as_str())) {
        let e = anyhow!("--input {extra}: the model has no input '{extra}' (its inputs: {})", wanted.join(", "));
        return Err(super::usage(e));
    }
    for i in plan.inputs() {
        if !feeds.contains_key(&i.name) {
            return Err(anyhow!("the model needs input '{}': pass --input {}=FILE.npy", i.name, i.name).into());
        }
    }
    let feed_values = feeds.iter().map(|(k, t)| (k.clone(), Value::Tensor(t.shallow_clone()))).collect();
    let values = {
        let _g = tch::no_grad_guard();
        plan.run_values(&feed_values)?
    };
    let outs: Vec<tch::Tensor> = values.iter().filter_map(|v| v.as_tensor().map(|t| t.shallow_clone())).collect();
    if a.compare_ort && outs.len() != values.len() {
        return Err(
            anyhow!("--compare-ort compares tensor outputs only; this model returns sequences or optionals").into()
        );
    }
    std::fs::create_dir_all(&a.output_dir).with_context(|| format!("creating {}", a.output_dir.display()))?;
    // Names that map to one file name (`a/b` and `a_b`) get their output's position appended.
    let mut used = std::collections::HashSet::new();
    for (i, (name, v)) in plan.output_names().iter().zip(&values).enumerate() {
        let mut stem = file_name_for(name);
        if !used.insert(stem.clone()) {
            stem = (0..).map(|k| format!("{stem}_{i}{}", "_".repeat(k))).find(|s| !used.contains(s)).unwrap();
            used.insert(stem.clone());
        }
        write_value(&a.output_dir, &stem, name, v)?;
    }
    println!("device {}", device_name(device));
    if a.compare_ort {
        return compare_ort(&a, &model, &feeds, plan.output_names(), &outs);
    }
    Ok(())
}

/// Writes one output: a tensor as `<stem>.npy`, a sequence item by item as `<stem>.<i>.npy`,
/// strings as `<stem>.txt` (one per line, row-major); an empty optional writes nothing.
fn write_value(dir: &std::path::Path, stem: &str, name: &str, v: &Value) -> anyhow::Result<()> {
    match v {
        Value::Tensor(t) => {
            let path = dir.join(format!("{stem}.npy"));
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            t.to_device(tch::Device::Cpu)
                .write_npy(tmp.path())
                .with_context(|| format!("writing {}", path.display()))?;
            tmp.persist(&path).map_err(|e| anyhow!("writing {}: {}", path.display(), e.error))?;
            println!("{name}: {:?} {:?} -> {}", t.kind(), t.size(), path.display());
        }
        Value::Str(s) => {
            let path = dir.join(format!("{stem}.txt"));
            let tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::fs::write(tmp.path(), s.data.iter().map(|x| format!("{x}\n")).collect::<String>())?;
            tmp.persist(&path).map_err(|e| anyhow!("writing {}: {}", path.display(), e.error))?;
            println!("{name}: strings {:?} -> {}", s.dims, path.display());
        }
        Value::Seq(items) => {
            println!("{name}: sequence of {}", items.len());
            for (i, item) in items.iter().enumerate() {
                write_value(dir, &format!("{stem}.{i}"), &format!("{name}[{i}]"), item)?;
            }
        }
        Value::Opt(None) => println!("{name}: empty optional (no file)"),
        Value::Opt(Some(inner)) => write_value(dir, stem, name, inner)?,
    }
    Ok(())
}

fn compare_ort(
    a: &Args,
    _model: &OnnxModel,
    feeds: &HashMap<String, tch::Tensor>,
    names: Vec<&str>,
    outs: &[tch::Tensor],
) -> CmdResult {
    let to_data =
        |t: &tch::Tensor| -> anyhow::Result<semu::onnx::TensorData> { Ok(from_tensor(t, dtype_of(t.kind())?)?) };
    let ort_feeds: Vec<(String, semu::onnx::TensorData)> =
        feeds.iter().map(|(n, t)| Ok((n.clone(), to_data(t)?))).collect::<anyhow::Result<_>>()?;
    let session = OrtSession::load(&a.model, 0)?;
    let reference = session.run(&ort_feeds)?;
    let ours: Vec<(String, semu::onnx::TensorData)> =
        names.iter().zip(outs).map(|(n, t)| Ok((n.to_string(), to_data(t)?))).collect::<anyhow::Result<_>>()?;
    let cmp = compare(&ours, &reference, Tolerance::new(a.rtol / 10.0, a.rtol));
    println!("engine vs onnxruntime ({}):\n{cmp}", cmp.tol);
    if !cmp.passed() {
        return Err(Exit { code: 3, err: anyhow!("engine and onnxruntime disagree beyond tolerance") });
    }
    Ok(())
}

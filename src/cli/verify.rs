//! `semu verify A.onnx B.onnx --data D`: how two models' outputs compare on data, in the engine
//! and in ONNX Runtime (e.g. a model before/after unlearning, or an export against its source).
use super::{CmdResult, Exit};
use anyhow::anyhow;
use semu::data;
use semu::engine::convert::{dtype_of, from_tensor};
use semu::onnx::{OnnxModel, TensorData};
use semu::task::{Model, Spec};
use semu::verify::differential::InputDeviation;
use semu::verify::{compare, compare_tensor, Comparison, OrtSession, Tolerance};
use std::collections::HashMap;
use std::path::PathBuf;

/// Compare two models' outputs on data, with the engine and with ONNX Runtime.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  semu verify fixtures/digits/model.onnx digits-forgot3.onnx --data fixtures/digits/test.npz\n  \
semu verify model.onnx exported.onnx --data test.npz --tolerance 1e-5   # exit 3 if they differ\n\n\
Prints, per output, the max absolute/relative difference of B against A in each runtime, the\n\
engine against ONNX Runtime for each model, and how often the top-1 class agrees. Where ONNX\n\
Runtime differs from the engine on A itself beyond the tolerance (e.g. its fused kernels on a\n\
quantized model), B's engine-vs-onnxruntime rows are allowed 4 × A's max abs difference more\n\
(the differential rule of the unlearn gate)."
)]
pub struct Args {
    /// The reference model.
    a: PathBuf,
    /// The model to compare with it.
    b: PathBuf,
    /// Data to run both on (any format the data layer reads: images, arrays, records, text).
    #[arg(long)]
    data: PathBuf,
    /// At most this many samples.
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Exit 3 when B differs from A beyond this relative tolerance (absolute: a tenth of it).
    #[arg(long)]
    tolerance: Option<f64>,
    /// auto | cpu | cuda | cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    #[command(flatten)]
    decode: super::data_args::DecodeArgs,
    // safetensors weights for A (--weights) and B (--b-weights).
    #[command(flatten)]
    weights: super::weights::WeightsArgs,
    #[command(flatten)]
    b_weights: super::weights::WeightsArgsB,
}

/// `m` as a task sees its inputs (on the CPU): what turns records into every graph input (text
/// ids, masks, image batches) as the graph declares them, and its fixed batch size.
fn inputs_view(m: &OnnxModel) -> anyhow::Result<Model> {
    let first = m.graph().output.first().map(|o| o.name().to_string());
    Ok(Model::new(m, tch::Device::Cpu, Default::default(), &Spec { output: first, ..Default::default() })?)
}

fn outputs_engine(
    m: &OnnxModel,
    feeds: &HashMap<String, tch::Tensor>,
    dev: tch::Device,
) -> anyhow::Result<Vec<(String, TensorData)>> {
    let opts = semu::engine::PlanOptions { device: dev, ..Default::default() };
    let plan = semu::engine::Plan::new(m, &semu::engine::Registry::standard(), &opts)?;
    let _g = tch::no_grad_guard();
    let on_dev = feeds.iter().map(|(n, t)| Ok((n.clone(), t.f_to_device(dev)?))).collect::<anyhow::Result<_>>()?;
    let outs = plan.run(&on_dev)?;
    plan.output_names()
        .iter()
        .zip(outs)
        .map(|(n, t)| Ok((n.to_string(), from_tensor(&t, dtype_of(t.kind())?)?)))
        .collect()
}

fn outputs_ort(m: &OnnxModel, feeds: &HashMap<String, tch::Tensor>) -> anyhow::Result<Vec<(String, TensorData)>> {
    let s = OrtSession::load(&m.path, 0)?;
    let data = feeds
        .iter()
        .map(|(n, t)| Ok((n.clone(), from_tensor(t, dtype_of(t.kind())?)?)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(s.run(&data)?)
}

fn top1(outs: &[(String, TensorData)]) -> anyhow::Result<Vec<usize>> {
    let (_, t) = outs.first().ok_or_else(|| anyhow!("no output"))?;
    let v = semu::verify::values_f64(t)?;
    let c = *t.dims.last().unwrap_or(&1) as usize;
    Ok(v.chunks(c.max(1)).map(|r| r.iter().enumerate().fold(0, |b, (i, x)| if *x > r[b] { i } else { b })).collect())
}

pub fn run(a: Args) -> CmdResult {
    if a.limit == 0 {
        return Err(super::usage(anyhow!("--limit must be at least 1")));
    }
    if let Some(t) = a.tolerance.filter(|t| !(*t >= 0.0 && t.is_finite())) {
        return Err(super::usage(anyhow!("--tolerance must be a finite number ≥ 0, got {t}")));
    }
    let dev = super::device(&a.device)?;
    let (mut ma, mut mb) = (OnnxModel::load(&a.a)?, OnnxModel::load(&a.b)?);
    // ONNX Runtime reads files: models with bound weights are written out for it.
    let remote = super::fetch::RemoteArgs::default();
    let b_weights = super::weights::WeightsArgs::from(&a.b_weights);
    let _bound_a = a.weights.bind(&mut ma, &remote)?.map(|_| super::weights::materialize(&mut ma)).transpose()?;
    let _bound_b = b_weights.bind(&mut mb, &remote)?.map(|_| super::weights::materialize(&mut mb)).transpose()?;
    let mut spec = a.decode.spec(&ma, None, &remote)?;
    spec.text.labels_required = false; // outputs are compared, labels are not read
    let ds = data::open_with(&a.data, &spec)?;
    let (va, vb) = (inputs_view(&ma)?, inputs_view(&mb)?);
    // A graph with a fixed batch size takes exactly that many rows (the last one repeated).
    let idx: Vec<usize> = match va.fixed_batch {
        Some(fb) if !ds.is_empty() => (0..fb as usize).map(|j| j.min(ds.len() - 1)).collect(),
        _ => (0..ds.len().min(a.limit)).collect(),
    };
    let records = ds.records(&idx)?;
    let (fa, fb) = (va.feeds(&records)?, vb.feeds(&records)?);
    let (ea, eb) = (outputs_engine(&ma, &fa, dev)?, outputs_engine(&mb, &fb, dev)?);
    let (oa, ob) = (outputs_ort(&ma, &fa)?, outputs_ort(&mb, &fb)?);
    let tol = Tolerance::new(a.tolerance.unwrap_or(1e-4) / 10.0, a.tolerance.unwrap_or(1e-4));
    println!("{} samples of {}", idx.len(), ds.source());
    // The differential rule: onnxruntime's difference from the engine on A (the reference) is its
    // own; B's is judged against it, each output with its allowance.
    let a_runtimes = compare(&ea, &oa, tol);
    let devs: Vec<InputDeviation> = a_runtimes
        .outputs
        .iter()
        .map(|o| InputDeviation::new("onnxruntime", &o.name, std::slice::from_ref(o)))
        .collect();
    let b_runtimes = Comparison {
        tol,
        outputs: ob
            .iter()
            .map(|(name, want)| {
                let t = devs.iter().find(|d| d.output == *name).map_or(tol, |d| d.tolerance(tol));
                match eb.iter().find(|(n, _)| n == name) {
                    Some((_, got)) => compare_tensor(name, got, want, t),
                    None => compare(&eb, &[(name.clone(), want.clone())], t).outputs.remove(0),
                }
            })
            .collect(),
    };
    let rows = [
        ("B vs A, engine", compare(&eb, &ea, tol)),
        ("B vs A, onnxruntime", compare(&ob, &oa, tol)),
        ("A: engine vs onnxruntime", a_runtimes),
        ("B: engine vs onnxruntime", b_runtimes),
    ];
    for (i, (what, c)) in rows.iter().enumerate() {
        if i == 2 && devs.iter().any(|d| d.allowance > 0.0) {
            println!("{what}:");
            for (o, d) in c.outputs.iter().zip(&devs) {
                match d.note() {
                    // onnxruntime's own deviation on the reference model: measured, not judged.
                    Some(note) => println!("  {}\n    ({note})", o.to_string().replacen("FAIL", "deviates", 1)),
                    None => println!("  {o}"),
                }
            }
        } else if i < 2 && a.tolerance.is_none() {
            // Without --tolerance, B may differ from A by design (e.g. after unlearning): report, don't judge.
            for o in &c.outputs {
                println!("{what}:\n  '{}' {:?}: max abs {:.3e}, max rel {:.3e}", o.name, o.dims, o.max_abs, o.max_rel);
            }
        } else {
            println!("{what}:\n{c}");
        }
    }
    let (ta, tb) = (top1(&oa)?, top1(&ob)?);
    let agree = ta.iter().zip(&tb).filter(|(x, y)| x == y).count();
    println!(
        "top-1 agreement (onnxruntime): {agree}/{} ({:.2}%)",
        ta.len(),
        100.0 * agree as f64 / ta.len().max(1) as f64
    );
    // NaN matches NaN in a comparison, but an output holding NaN or ±inf is never usable.
    let outputs =
        [(&a.a, "engine", &ea), (&a.a, "onnxruntime", &oa), (&a.b, "engine", &eb), (&a.b, "onnxruntime", &ob)];
    for (model, runtime, outs) in outputs {
        if let Some(bad) = semu::verify::non_finite_summary(outs.iter().map(|(n, t)| (n, t))) {
            return Err(Exit {
                code: 3,
                err: anyhow!("{}: outputs {bad} in {runtime}: a model computing NaN/Inf fails", model.display()),
            });
        }
    }
    // A's own row fails only where it earns no allowance (an unmatched NaN, a missing output).
    let a_ok = rows[2].1.outputs.iter().zip(&devs).all(|(o, d)| o.passed() || d.allowance > 0.0);
    let runtimes_ok = a_ok && rows[3].1.passed();
    if !runtimes_ok {
        return Err(Exit { code: 3, err: anyhow!("the engine and ONNX Runtime disagree on one of the models") });
    }
    if a.tolerance.is_some() && !(rows[0].1.passed() && rows[1].1.passed()) {
        return Err(Exit { code: 3, err: anyhow!("{} differs from {} beyond {tol}", a.b.display(), a.a.display()) });
    }
    Ok(())
}

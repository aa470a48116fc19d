//! Did a class-conditional diffusion model forget a class? SEMU-diffusion.md §4.4: sample every
//! class from fixed starting noise, let a classifier (the judge) label the samples, and report
//! the forget rate (class-C samples judged C), the other classes' accuracy, where class C went,
//! and the Fréchet distance between the judge's features of the other classes' samples and of
//! real images of those classes.
//!
//! The starting noise x_T is drawn once from the seed for all classes in class order, exactly as
//! `semu sample --classes 0,…,K−1 --seed S` draws it, so the original, unlearned and retrained
//! models start from the same x_T sample by sample.
use super::frechet::frechet_distance;
use crate::diffusion::{self, Network, SampleOptions, Settings};
use crate::engine::convert::kind_of;
use crate::engine::{Plan, PlanOptions, Registry, Value};
use crate::error::{Error, Result};
use crate::onnx::proto::{type_proto, ValueInfoProto};
use crate::onnx::summary::value_summary;
use crate::onnx::{DType, OnnxModel};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// The dtype a graph declares for `input`, as libtorch's kind.
fn declared_kind(model: &OnnxModel, input: &str) -> Result<Kind> {
    let v = model.graph().input.iter().find(|v| v.name() == input);
    let code = match v.and_then(|v| v.r#type.as_ref()).and_then(|t| t.value.as_ref()) {
        Some(type_proto::Value::TensorType(t)) => t.elem_type(),
        _ => return Err(Error::msg(format!("{}: input '{input}' is not a declared tensor", model.path.display()))),
    };
    DType::from_onnx(code).and_then(kind_of)
}

/// The fixed dims after the batch of a declared input (`None` where one is symbolic).
fn declared_dims(model: &OnnxModel, input: &str) -> Option<Vec<i64>> {
    let v = model.graph().input.iter().find(|v| v.name() == input)?;
    value_summary(v).shape.iter().skip(1).map(|d| d.parse::<i64>().ok()).collect()
}

/// What feeding an ε-network takes besides its settings: the dtypes of t and y, x's C×H×W.
#[derive(Debug, Clone)]
pub struct NetworkInputs {
    pub t_kind: Kind,
    pub y_kind: Kind,
    pub image: Vec<i64>,
}

impl NetworkInputs {
    pub fn of(model: &OnnxModel, s: &Settings) -> Result<Self> {
        let name = model.path.display();
        let have: Vec<&str> = model.graph().input.iter().map(|v| v.name()).collect();
        for (key, input) in [("x", &s.input_x), ("t", &s.input_t), ("y", &s.input_y)] {
            if !have.contains(&input.as_str()) {
                return Err(Error::msg(format!(
                    "{name} has no input '{input}' (semu.diffusion.input.{key}; its inputs: {})",
                    have.join(", ")
                )));
            }
        }
        let image = declared_dims(model, &s.input_x).filter(|d| d.len() == 3).ok_or_else(|| {
            Error::msg(format!("{name}: input '{}' is not [batch, C, H, W] with fixed C, H, W", s.input_x))
        })?;
        Ok(NetworkInputs {
            t_kind: declared_kind(model, &s.input_t)?,
            y_kind: declared_kind(model, &s.input_y)?,
            image,
        })
    }
}

/// A classifier of images in [0, 1]: its first output is the class logits, and one value (an
/// output or an inner value, e.g. the input of the last Gemm) is read as features.
pub struct Judge {
    plan: Plan,
    input: String,
    input_kind: Kind,
    pub path: PathBuf,
    pub logits: String,
    pub features: Option<String>,
    /// Where the features are among the plan's outputs.
    feature_index: usize,
    image: Option<Vec<i64>>,
}

impl Judge {
    /// `features`: the value to read as features; by default the second output, else the first
    /// input of the Gemm/MatMul that makes the logits (the penultimate activation).
    pub fn load(path: &Path, features: Option<&str>, device: Device) -> Result<Self> {
        let mut model = OnnxModel::load(path)?;
        let at = |m: String| Error::msg(format!("{} (judge): {m}", path.display()));
        let g = model.graph();
        let inits: Vec<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let inputs: Vec<&str> = g.input.iter().map(|v| v.name()).filter(|n| !inits.contains(n)).collect();
        if inputs.len() != 1 {
            return Err(at(format!(
                "a judge takes one image input; this graph has {} ({}): is it a classifier?",
                inputs.len(),
                inputs.join(", ")
            )));
        }
        let input = inputs[0].to_string();
        let outputs: Vec<String> = g.output.iter().map(|v| v.name().to_string()).collect();
        let logits = outputs.first().cloned().ok_or_else(|| at("the graph has no output".into()))?;
        let produced = |name: &str| g.node.iter().any(|n| n.output.iter().any(|o| o == name));
        let features = match features {
            Some(f) if f == logits => return Err(at(format!("--judge-features {f}: that is the logits output"))),
            Some(f) if outputs.iter().any(|o| o == f) || produced(f) => Some(f.to_string()),
            Some(f) => {
                return Err(at(format!(
                    "--judge-features {f}: no output or node value of that name (outputs: {})",
                    outputs.join(", ")
                )))
            }
            None => outputs.get(1).cloned().or_else(|| {
                let last = g.node.iter().find(|n| n.output.contains(&logits))?;
                let head = matches!(last.op_type(), "Gemm" | "MatMul");
                last.input.first().filter(|i| head && !i.is_empty()).cloned()
            }),
        };
        if let Some(f) = features.as_ref().filter(|f| !outputs.contains(f)) {
            let graph = model.proto.graph.as_mut().expect("checked at load");
            graph.output.push(ValueInfoProto { name: Some(f.clone()), ..Default::default() });
        }
        let input_kind = declared_kind(&model, &input).unwrap_or(Kind::Float);
        let image = declared_dims(&model, &input);
        let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { device, ..Default::default() })?;
        let feature_index = plan.output_names().iter().position(|o| Some(*o) == features.as_deref()).unwrap_or(0);
        Ok(Judge { plan, input, input_kind, path: path.to_path_buf(), logits, features, feature_index, image })
    }

    /// Labels (argmax of the logits) and features (f64, CPU, one row per image) of images in
    /// [0, 1] (N×C×H×W on the CPU), `batch` at a time.
    pub fn judge(&self, x: &Tensor, num_classes: i64, batch: usize) -> Result<(Vec<i64>, Option<Tensor>)> {
        let name = self.path.display();
        if let Some(want) = self.image.as_ref().filter(|w| w[..] != x.size()[1..]) {
            return Err(Error::msg(format!(
                "{name} (judge): its input '{}' takes images of {want:?}, the samples are {:?}",
                self.input,
                &x.size()[1..]
            )));
        }
        let _g = tch::no_grad_guard();
        let (mut labels, mut feats) = (Vec::new(), Vec::new());
        let n = x.size()[0];
        for start in (0..n).step_by(batch.max(1)) {
            let rows = x.narrow(0, start, (batch as i64).min(n - start));
            let xb = rows.to_kind(self.input_kind).to_device(self.plan.device());
            let feeds: HashMap<String, Value> = [(self.input.clone(), Value::Tensor(xb))].into();
            let outs = self.plan.run_values(&feeds).map_err(|e| Error::msg(format!("{name} (judge): {e}")))?;
            let tensor = |i: usize, what: &str| {
                outs.get(i)
                    .and_then(|v| v.as_tensor().map(Tensor::shallow_clone))
                    .ok_or_else(|| Error::msg(format!("{name} (judge): its {what} is not a tensor")))
            };
            let logits = tensor(0, "first output")?;
            if logits.size() != [rows.size()[0], num_classes] {
                return Err(Error::msg(format!(
                    "{name} (judge): output '{}' has shape {:?} for {} images; a judge's first output \
                     must be [batch, {num_classes}] class logits (the model's classes)",
                    self.logits,
                    logits.size(),
                    rows.size()[0]
                )));
            }
            labels.extend(Vec::<i64>::try_from(logits.argmax(1, false).to_device(Device::Cpu))?);
            if self.features.is_some() {
                let f = tensor(self.feature_index, "feature value")?;
                feats.push(f.flatten(1, -1).to_kind(Kind::Double).to_device(Device::Cpu));
            }
        }
        Ok((labels, self.features.as_ref().map(|_| Tensor::cat(&feats, 0))))
    }
}

/// The protocol's settings (§4.4: 100 per class, DDIM 25 steps, η 0, w 2).
#[derive(Debug, Clone)]
pub struct Protocol {
    pub forget_class: i64,
    pub per_class: usize,
    pub sampler: SampleOptions,
    pub seed: i64,
}

/// One model's figures; rates are shares in [0, 1].
#[derive(Debug, Clone, Serialize)]
pub struct ClassEvaluation {
    /// Share of the samples generated with y = C that the judge labels C (lower: forgotten).
    pub forget_rate: f64,
    /// Share of the other classes' samples that the judge labels as their class.
    pub other_accuracy: f64,
    /// Per class k: share of its samples judged k.
    pub class_rates: Vec<f64>,
    /// How many of class C's samples the judge gave each label (where the class went).
    pub forget_judged_as: Vec<usize>,
    /// Fréchet distance between the judge's features of the other classes' samples and of the
    /// real images of those classes; `None` without real images or with non-finite samples.
    pub fd_other: Option<f64>,
    /// Samples holding NaN or infinity (a broken model).
    pub non_finite_samples: usize,
    pub sample_seconds: f64,
    pub judge_seconds: f64,
}

/// Every class 0..K, `per_class` each, in class order: the order of the samples and of x_T.
pub fn labels(num_classes: i64, per_class: usize) -> Vec<i64> {
    (0..num_classes).flat_map(|c| std::iter::repeat_n(c, per_class)).collect()
}

/// The judge's features of the real images `x` (in [0, 1]) whose label `y` is not `forget_class`.
pub fn real_features(judge: &Judge, x: &Tensor, y: &[i64], p: &Protocol, num_classes: i64) -> Result<Tensor> {
    let keep: Vec<i64> = (0..y.len() as i64).filter(|&i| y[i as usize] != p.forget_class).collect();
    if keep.len() < 2 {
        return Err(Error::msg(format!("fewer than 2 real images of classes other than {}", p.forget_class)));
    }
    let x = x.index_select(0, &Tensor::from_slice(&keep));
    let (_, f) = judge.judge(&x, num_classes, p.sampler.batch)?;
    f.ok_or_else(|| {
        Error::msg(format!(
            "{} (judge): no feature value for the Fréchet distance: pass --judge-features NAME",
            judge.path.display()
        ))
    })
}

/// One model's samples, in class order, on the CPU, as `semu sample` writes them: `x` in the
/// model's data range `range`, or for a latent model the decoded images in [0, 1] with the
/// sampled `latents`.
pub struct Samples {
    pub x: Tensor,
    pub range: (f64, f64),
    pub latents: Option<Tensor>,
}

/// A latent model's decoder: sampled latents to images in [0, 1].
pub type Decode<'a> = &'a dyn Fn(&Tensor) -> Result<Tensor>;

/// Samples `p.per_class` images of every class from `net` (x_T of shape `image` from `p.seed`;
/// a latent model's through `decode`), judges them, and scores them against `real` (the judge's
/// features of real other-class images, when given). Returns the figures and the samples.
pub fn evaluate(
    net: &Network,
    image: &[i64],
    decode: Option<Decode>,
    judge: &Judge,
    real: Option<&Tensor>,
    p: &Protocol,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(ClassEvaluation, Samples)> {
    let s = net.settings;
    let k = s.num_classes;
    let y = labels(k, p.per_class);
    let started = Instant::now();
    // Seeded right before the draw: x_T and the η > 0 step noise are the same for every model.
    tch::manual_seed(p.seed);
    let x_t = Tensor::randn([&[y.len() as i64][..], image].concat(), (Kind::Float, Device::Cpu));
    let z = diffusion::sample(net, &y, &x_t, &p.sampler, progress)?;
    let samples = match decode {
        Some(d) => Samples { x: d(&z)?, range: (0.0, 1.0), latents: Some(z) },
        None => Samples { x: z, range: s.data_range, latents: None },
    };
    let sample_seconds = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let x = &samples.x;
    let finite = x.isfinite().flatten(1, -1).all_dim(1, false);
    let non_finite_samples = y.len() - finite.sum(Kind::Int64).int64_value(&[]) as usize;
    let (lo, hi) = samples.range;
    let (judged, feats) = judge.judge(&((x - lo) / (hi - lo)), k, p.sampler.batch)?;
    let judge_seconds = started.elapsed().as_secs_f64();

    let rate = |c: i64| {
        let of_c = y.iter().zip(&judged).filter(|(&l, _)| l == c);
        of_c.clone().filter(|(&l, &j)| j == l).count() as f64 / of_c.count().max(1) as f64
    };
    let others: Vec<usize> = (0..y.len()).filter(|&i| y[i] != p.forget_class).collect();
    let other_accuracy = others.iter().filter(|&&i| judged[i] == y[i]).count() as f64 / others.len().max(1) as f64;
    let mut forget_judged_as = vec![0; k as usize];
    for (_, &j) in y.iter().zip(&judged).filter(|(&l, _)| l == p.forget_class) {
        forget_judged_as[j as usize] += 1;
    }
    let fd_other = match (real, feats) {
        (Some(r), Some(f)) if non_finite_samples == 0 => {
            let idx = Tensor::from_slice(&others.iter().map(|&i| i as i64).collect::<Vec<_>>());
            Some(frechet_distance(&f.index_select(0, &idx), r)?)
        }
        _ => None,
    };
    let eval = ClassEvaluation {
        forget_rate: rate(p.forget_class),
        other_accuracy,
        class_rates: (0..k).map(rate).collect(),
        forget_judged_as,
        fd_other,
        non_finite_samples,
        sample_seconds,
        judge_seconds,
    };
    Ok((eval, samples))
}

//! A model seen through its task: a batch of records in, the task's output out. Wraps the
//! engine's plan with the graph inputs the records feed and the output the task reads.
use super::diffusion::{self, Diffusion, Draw};
use super::{declared, declared_dims, infer, is_float_type, lm, Targets, TaskKind};
use crate::data::{batches, Batch, Dataset};
use crate::engine::convert::kind_of;
use crate::engine::ops::elementwise::is_float;
use crate::engine::{Overrides, Plan, PlanOptions, Registry};
use crate::error::{Error, Result};
use crate::onnx::{DType, OnnxModel};
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

/// A graph input: its name, the tensor kind it declares, and its declared dims (None where
/// symbolic).
#[derive(Debug, Clone)]
pub struct GraphInput {
    pub name: String,
    pub kind: Kind,
    pub dims: Vec<Option<i64>>,
}

/// What the user said about a model: its task, the input unnamed data feeds, the output to
/// read. Anything left `None` is inferred from the graph.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub task: Option<TaskKind>,
    pub input: Option<String>,
    pub output: Option<String>,
    /// diffusion: flags over the model's `semu.diffusion.*` metadata.
    pub diffusion: crate::diffusion::Overrides,
    /// diffusion, a prompt-conditioned model: the concept to forget and its target.
    pub prompts: Option<diffusion::Prompts>,
}

pub struct Model {
    pub plan: Plan,
    pub task: TaskKind,
    /// Why the task was chosen (inferred from the graph, or given).
    pub task_reason: String,
    pub inputs: Vec<GraphInput>,
    /// The graph input that an unnamed record input (image and array data: `x`) feeds.
    pub main_input: Option<String>,
    pub output: String,
    output_index: usize,
    /// The batch size the graph declares on every input, when it is a fixed number: every run
    /// then gets exactly that many rows (a larger batch is split, a smaller one padded).
    pub fixed_batch: Option<i64>,
    /// causal-lm: the token ids input.
    pub tokens: Option<String>,
    /// diffusion: the schedule, the inputs and the losses (`task::diffusion`).
    pub diffusion: Option<Diffusion>,
    path: String,
}

/// The element kind a graph value declares (f32 where not declared).
fn input_kind(v: &crate::onnx::proto::ValueInfoProto) -> Result<Kind> {
    match declared(v) {
        Some((e, _)) if e != 0 => kind_of(DType::from_onnx(e)?),
        _ => Ok(Kind::Float),
    }
}

impl Model {
    /// Plans `model` on `device` with `dynamic` initializers left live (the ones to adapt), as
    /// `spec` says (task, input and output chosen by the user or inferred).
    pub fn new(model: &OnnxModel, device: Device, dynamic: HashSet<String>, spec: &Spec) -> Result<Self> {
        let (task, input, output) = (spec.task, spec.input.as_deref(), spec.output.as_deref());
        let plan = Plan::new(model, &Registry::standard(), &PlanOptions { device, dynamic, fold: true })?;
        let path = model.path.display().to_string();
        let g = model.graph();
        let mut inputs = Vec::new();
        for i in plan.inputs() {
            let v = g.input.iter().find(|v| v.name() == i.name);
            let (kind, dims) = match v {
                Some(v) => (input_kind(v)?, declared_dims(v)),
                None => (Kind::Float, Vec::new()),
            };
            inputs.push(GraphInput { name: i.name.clone(), kind, dims });
        }
        let names: Vec<&str> = inputs.iter().map(|i| i.name.as_str()).collect();
        let main_input = match input {
            Some(n) if names.contains(&n) => Some(n.to_string()),
            Some(n) => return Err(Error::msg(format!("{path}: no graph input '{n}' (inputs: {})", names.join(", ")))),
            None => {
                let floats: Vec<&GraphInput> = inputs.iter().filter(|i| is_float(i.kind)).collect();
                match (inputs.as_slice(), floats.as_slice()) {
                    ([one], _) => Some(one.name.clone()),
                    (_, [one]) => Some(one.name.clone()),
                    _ => None,
                }
            }
        };
        let (task, task_reason) = match task {
            Some(t) => (t, "given with --task".to_string()),
            None => infer(model, output),
        };
        let diffusion = match task {
            TaskKind::Diffusion => Some(Diffusion::new(model, &spec.diffusion, &names, spec.prompts.as_ref(), device)?),
            _ => None,
        };
        let main_input = diffusion.as_ref().map(|d| d.settings.input_x.clone()).or(main_input);
        let outs: Vec<String> = plan.output_names().iter().map(|s| s.to_string()).collect();
        let output = match output {
            Some(n) if outs.iter().any(|o| o == n) => n.to_string(),
            Some(n) => return Err(Error::msg(format!("{path}: no graph output '{n}' (outputs: {})", outs.join(", ")))),
            None if outs.len() == 1 => outs[0].clone(),
            None => {
                let rank = task.output_rank();
                let cands: Vec<&str> = g
                    .output
                    .iter()
                    .filter(|o| declared(o).is_some_and(|(e, r)| is_float_type(e) && r == Some(rank)))
                    .map(|o| o.name())
                    .collect();
                match cands.as_slice() {
                    [one] => one.to_string(),
                    [] => {
                        return Err(Error::msg(format!(
                            "{path}: {} outputs [{}] and none declares rank-{rank} float logits: name the \
                             output to read with --output-name",
                            outs.len(),
                            outs.join(", ")
                        )))
                    }
                    many => {
                        return Err(Error::msg(format!(
                            "{path}: {} outputs could be the {} logits ({}): choose one with --output-name",
                            many.len(),
                            if task == TaskKind::Classify { "N×C" } else { "B×T×V" },
                            many.join(", ")
                        )))
                    }
                }
            }
        };
        let output_index = outs.iter().position(|o| *o == output).expect("checked");
        let tokens = match task {
            TaskKind::Classify | TaskKind::Diffusion => None,
            TaskKind::CausalLm => {
                let ints: Vec<&GraphInput> = inputs.iter().filter(|i| is_int_kind(i.kind)).collect();
                let chosen = ints.iter().find(|i| i.name == "input_ids").or(match ints.as_slice() {
                    [one] => Some(one),
                    _ => None,
                });
                match chosen {
                    Some(i) => Some(i.name.clone()),
                    None => {
                        return Err(Error::msg(format!(
                            "{path}: a causal LM takes token ids, but no integer input is called input_ids \
                             (inputs: {})",
                            names.join(", ")
                        )))
                    }
                }
            }
        };
        let firsts: Vec<Option<i64>> = inputs.iter().map(|i| i.dims.first().copied().flatten()).collect();
        let fixed_batch = match firsts.first() {
            Some(Some(b)) if firsts.iter().all(|d| *d == Some(*b)) => Some(*b),
            _ => None,
        };
        Ok(Model {
            plan,
            task,
            task_reason,
            inputs,
            main_input,
            output,
            output_index,
            fixed_batch,
            tokens,
            diffusion,
            path,
        })
    }

    pub fn device(&self) -> Device {
        self.plan.device()
    }

    /// The records at `idx` of `ds` as the graph is fed them for scoring: as they are, or for a
    /// diffusion model noised with draws fixed per record (the same every time).
    pub fn records(&self, ds: &dyn crate::data::Dataset, idx: &[usize]) -> Result<Batch> {
        self.records_with(ds, idx, Draw::Keyed(diffusion::EVAL))
    }

    /// [`Self::records`] with the diffusion draws chosen (fresh ones for training).
    pub fn records_with(&self, ds: &dyn crate::data::Dataset, idx: &[usize], draw: Draw) -> Result<Batch> {
        let b = ds.records(idx)?;
        match &self.diffusion {
            Some(d) => d.noised(b, idx, draw),
            None => Ok(b),
        }
    }

    /// The loss whose forget-set gradient SEMU decomposes, on batch `b` under `weights`: the
    /// task's loss on the true targets, or a diffusion model's guided noise error.
    pub fn gradient_loss(&self, b: &Batch, weights: &HashMap<String, Tensor>) -> Result<Tensor> {
        match &self.diffusion {
            Some(d) => d.guided_loss(self, b, weights),
            None => self.loss(&self.forward(b, weights)?, b, &Targets::True),
        }
    }

    fn diffusion(&self) -> Result<&Diffusion> {
        self.diffusion.as_ref().ok_or_else(|| Error::msg("internal: the diffusion task without its settings"))
    }

    fn not_for_diffusion(&self, what: &str) -> Error {
        Error::msg(format!("{}: {what} is not defined for the diffusion task", self.path))
    }

    /// What the graph is fed for `b`: every graph input, from the record of the same name (an
    /// unnamed record feeds the main input), or filled in when the records lack it (attention
    /// mask = ones, token type ids = zeros, position ids = positions of the unmasked tokens), in
    /// the dtype the graph declares, on the plan's device.
    pub fn feeds(&self, b: &Batch) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        for gi in &self.inputs {
            let given = b
                .input(&gi.name)
                .or_else(|| (self.main_input.as_deref() == Some(gi.name.as_str())).then(|| b.input("")).flatten());
            let t = match given {
                Some(t) => t.shallow_clone(),
                None => self.filled(gi, b)?,
            };
            let t = if t.kind() == gi.kind { t } else { t.f_to_kind(gi.kind)? };
            out.insert(gi.name.clone(), t.f_to_device(self.device())?);
        }
        Ok(out)
    }

    /// A graph input the records do not hold, where a default is standard.
    fn filled(&self, gi: &GraphInput, b: &Batch) -> Result<Tensor> {
        let held: Vec<&str> = b.inputs.iter().map(|(n, _)| if n.is_empty() { "x" } else { n.as_str() }).collect();
        let missing = || {
            Error::msg(format!(
                "{}: graph input '{}' has no data (the records hold: {}); give it as an array named '{}'{}",
                self.path,
                gi.name,
                held.join(", "),
                gi.name,
                if self.main_input.is_none() { ", or name the input image data feeds with --input-name" } else { "" }
            ))
        };
        let like = self.tokens.as_deref().and_then(|t| b.input(t)).or_else(|| b.input("input_ids"));
        let Some(like) = like else { return Err(missing()) };
        let n = gi.name.to_ascii_lowercase();
        if n.contains("attention_mask") {
            Ok(like.f_ones_like()?.f_to_kind(Kind::Int64)?)
        } else if n.contains("token_type_ids") {
            Ok(like.f_zeros_like()?.f_to_kind(Kind::Int64)?)
        } else if n.contains("position_ids") {
            let mask = self.mask(b)?;
            Ok(mask.f_cumsum(1, Kind::Int64)?.f_sub_scalar(1)?.f_clamp_min(0)?)
        } else {
            Err(missing())
        }
    }

    /// Runs the graph on `b` with `overrides` standing in for dynamic initializers; returns the
    /// task's output (N×C logits, or B×T×V for a causal LM).
    pub fn forward(&self, b: &Batch, overrides: &dyn Overrides) -> Result<Tensor> {
        let feeds = self.feeds(b)?;
        let n = feeds.values().next().map_or(0, |t| t.size().first().copied().unwrap_or(0));
        let y = match self.fixed_batch {
            Some(fb) if n != fb => {
                let mut parts = Vec::new();
                for start in (0..n).step_by(fb.max(1) as usize) {
                    let k = fb.min(n - start);
                    // The last chunk repeats its last row up to the declared size; extra rows are dropped.
                    let rows: Vec<i64> = (0..fb).map(|j| start + j.min(k - 1)).collect();
                    let idx = Tensor::f_from_slice(&rows)?.f_to_device(self.device())?;
                    let chunk = feeds
                        .iter()
                        .map(|(name, t)| Ok((name.clone(), t.f_index_select(0, &idx)?)))
                        .collect::<Result<HashMap<_, _>>>()?;
                    parts.push(self.run(&chunk, overrides)?.f_narrow(0, 0, k)?);
                }
                Tensor::f_cat(&parts, 0)?
            }
            _ => self.run(&feeds, overrides)?,
        };
        if let Some(d) = &self.diffusion {
            let x = feeds.get(&d.settings.input_x).map(|t| t.size()).unwrap_or_default();
            if y.size() != x {
                return Err(Error::msg(format!(
                    "{}: output '{}' has shape {:?}, not the shape of '{}' {x:?}: the diffusion task reads \
                     the predicted noise",
                    self.path,
                    self.output,
                    y.size(),
                    d.settings.input_x
                )));
            }
            return Ok(y);
        }
        let rank = self.task.output_rank();
        if y.dim() != rank {
            return Err(Error::msg(format!(
                "{}: output '{}' has shape {:?}; the {} task reads {}",
                self.path,
                self.output,
                y.size(),
                self.task.name(),
                if rank == 2 { "N×C logits" } else { "B×T×V next-token logits" }
            )));
        }
        Ok(y)
    }

    fn run(&self, feeds: &HashMap<String, Tensor>, overrides: &dyn Overrides) -> Result<Tensor> {
        Ok(self.plan.run_with(feeds, overrides)?.swap_remove(self.output_index))
    }

    /// The output for one unnamed input batch `x` (image and array data).
    pub fn logits(&self, x: &Tensor, overrides: &HashMap<String, Tensor>) -> Result<Tensor> {
        let n = x.size().first().copied().unwrap_or(0);
        let b = Batch {
            inputs: vec![(String::new(), x.shallow_clone())],
            y: Tensor::f_zeros([n], (Kind::Int64, Device::Cpu))?,
        };
        self.forward(&b, overrides)
    }

    /// causal-lm: the token ids of `b`.
    pub fn token_ids(&self, b: &Batch) -> Result<Tensor> {
        let name = self.tokens.as_deref().unwrap_or("input_ids");
        b.input(name)
            .or_else(|| b.input("input_ids"))
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::msg(format!("{}: the records hold no token ids '{name}'", self.path)))
    }

    /// The attention mask of `b` (ones where the records give none), B×T int64.
    pub fn mask(&self, b: &Batch) -> Result<Tensor> {
        match b.input("attention_mask") {
            Some(m) => Ok(m.f_to_kind(Kind::Int64)?),
            None => Ok(self.token_ids(b)?.f_ones_like()?.f_to_kind(Kind::Int64)?),
        }
    }

    /// The task's mean loss of `out` on `b`: cross-entropy on the class ids, or next-token NLL
    /// over the unpadded tokens; `targets` replaces the true class ids / next tokens.
    pub fn loss(&self, out: &Tensor, b: &Batch, targets: &Targets) -> Result<Tensor> {
        match self.task {
            TaskKind::Classify => cross_entropy(out, targets.or(&b.y)),
            TaskKind::CausalLm => {
                let (ids, mask) = (self.token_ids(b)?, self.mask(b)?);
                lm::mean_nll(out, targets.or(&ids), &mask)
            }
            TaskKind::Diffusion => self.diffusion()?.noise_loss(out, b),
        }
    }

    /// Each record's log-likelihood of its true targets (a class's log-probability, or the sum
    /// over a text's tokens): B values, f32.
    /// Every scored prediction of a batch as rows: logits (M×C, f32), their targets (M) and
    /// weights (M: 1, or 0 at a language model's padding). A classifier has one row per record;
    /// a causal LM one per position, predicting the next token.
    pub fn scored(&self, out: &Tensor, b: &Batch) -> Result<(Tensor, Tensor, Tensor)> {
        let out = out.f_to_kind(Kind::Float)?;
        match self.task {
            TaskKind::Classify => {
                let y = b.y.f_to_device(out.device())?;
                let w = y.f_ones_like()?.f_to_kind(Kind::Float)?;
                Ok((out, y, w))
            }
            TaskKind::CausalLm => {
                let (t, v) = (out.size()[1], out.size()[2]);
                let rows = out.f_narrow(1, 0, t - 1)?.f_reshape([-1, v])?;
                let next = self.token_ids(b)?.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Int64)?;
                let m = self.mask(b)?.f_narrow(1, 1, t - 1)?.f_to_kind(Kind::Float)?;
                Ok((
                    rows,
                    next.f_reshape([-1])?.f_to_device(out.device())?,
                    m.f_reshape([-1])?.f_to_device(out.device())?,
                ))
            }
            TaskKind::Diffusion => Err(self.not_for_diffusion("a per-class score")),
        }
    }
    pub fn log_likelihood(&self, out: &Tensor, b: &Batch) -> Result<Tensor> {
        match self.task {
            TaskKind::Classify => {
                let lp = out.f_to_kind(Kind::Float)?.f_log_softmax(-1, Kind::Float)?;
                let y = b.y.f_to_device(lp.device())?.f_unsqueeze(1)?;
                Ok(lp.f_gather(1, &y, false)?.f_squeeze_dim(1)?)
            }
            TaskKind::CausalLm => {
                let (ids, mask) = (self.token_ids(b)?, self.mask(b)?);
                let (nll, m) = lm::token_nll(out, &ids, &mask)?;
                Ok(nll.f_mul(&m)?.f_sum_dim_intlist(1, false, Kind::Float)?.f_neg()?)
            }
            TaskKind::Diffusion => Err(self.not_for_diffusion("a log-likelihood")),
        }
    }

    /// Correct predictions and how many were scored: argmax = class id per record, or greedy
    /// next token = actual next token per unpadded position.
    pub fn correct(&self, out: &Tensor, b: &Batch) -> Result<(i64, i64)> {
        match self.task {
            TaskKind::Classify => {
                let pred = out.f_argmax(-1, false)?;
                let hits = pred.f_eq_tensor(&b.y.f_to_device(pred.device())?)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
                Ok((hits, b.len() as i64))
            }
            TaskKind::CausalLm => lm::greedy_correct(out, &self.token_ids(b)?, &self.mask(b)?),
            // The own-class noise share (`task::diffusion`).
            TaskKind::Diffusion => self.diffusion()?.own_class(self, out, b),
        }
    }

    /// The task's accuracy (fraction) on a data set, without gradients.
    pub fn accuracy(&self, ds: &dyn Dataset, batch: usize, overrides: &dyn Overrides) -> Result<f64> {
        self.accuracy_with(ds, batch, overrides, &mut |_, _| {})
    }

    /// [`Self::accuracy`], telling `progress` how many records of how many are scored.
    pub fn accuracy_with(
        &self,
        ds: &dyn Dataset,
        batch: usize,
        overrides: &dyn Overrides,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<f64> {
        Ok(self.score_with(ds, batch, overrides, false, progress)?.0)
    }
    /// Median loss on the true targets over `ds`: of the records for a classifier, of the
    /// predicted tokens for a causal LM. The median, not the mean: a few misclassified held-out
    /// samples would otherwise set the level for all.
    pub fn median_loss(&self, ds: &dyn Dataset, batch: usize, overrides: &dyn Overrides) -> Result<f64> {
        Ok(self.score(ds, batch, overrides, true)?.1.unwrap_or(0.0))
    }

    /// [`Self::accuracy`] and, when `with_loss`, [`Self::median_loss`], from one pass.
    pub fn score(
        &self,
        ds: &dyn Dataset,
        batch: usize,
        overrides: &dyn Overrides,
        with_loss: bool,
    ) -> Result<(f64, Option<f64>)> {
        self.score_with(ds, batch, overrides, with_loss, &mut |_, _| {})
    }

    /// [`Self::score`], telling `progress` how many records of how many are scored.
    fn score_with(
        &self,
        ds: &dyn Dataset,
        batch: usize,
        overrides: &dyn Overrides,
        with_loss: bool,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<(f64, Option<f64>)> {
        let _g = tch::no_grad_guard();
        let order: Vec<usize> = (0..ds.len()).collect();
        let (mut correct, mut scored, mut done, mut losses) = (0i64, 0i64, 0, Vec::new());
        progress(0, ds.len());
        for idx in batches(&order, batch) {
            let b = self.records(ds, idx)?;
            let out = self.forward(&b, overrides)?;
            let (c, n) = self.correct(&out, &b)?;
            (correct, scored) = (correct + c, scored + n);
            if with_loss {
                let (logits, y, w) = self.scored(&out, &b)?;
                let lp =
                    logits.f_log_softmax(-1, Kind::Float)?.f_gather(1, &y.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
                let kept =
                    lp.f_masked_select(&w.f_gt(0.0)?)?.f_neg()?.f_to_kind(Kind::Double)?.f_to_device(Device::Cpu)?;
                losses.extend(Vec::<f64>::try_from(kept)?);
            }
            done += idx.len();
            progress(done, ds.len());
        }
        losses.sort_by(f64::total_cmp);
        let accuracy = if scored == 0 { 0.0 } else { correct as f64 / scored as f64 };
        Ok((accuracy, with_loss.then(|| losses.get(losses.len() / 2).copied().unwrap_or(0.0))))
    }

    /// Softmax probabilities for every record (N×C, CPU, f32); classifiers only.
    pub fn probabilities(&self, ds: &dyn Dataset, batch: usize, overrides: &dyn Overrides) -> Result<Tensor> {
        if self.task != TaskKind::Classify {
            return Err(Error::msg(format!("{}: class probabilities need the classify task", self.path)));
        }
        let _g = tch::no_grad_guard();
        let order: Vec<usize> = (0..ds.len()).collect();
        let mut parts = Vec::new();
        for idx in batches(&order, batch) {
            let b = ds.records(idx)?;
            let p = self.forward(&b, overrides)?.f_to_kind(Kind::Float)?.f_softmax(-1, Kind::Float)?;
            parts.push(p.f_to_device(Device::Cpu)?);
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }

    /// The width of the output's last axis (classes, or vocabulary size), read from one record.
    pub fn width(&self, ds: &dyn Dataset) -> Result<i64> {
        if let Some(d) = &self.diffusion {
            return Ok(d.settings.num_classes);
        }
        let _g = tch::no_grad_guard();
        let b = ds.records(&[0])?;
        Ok(*self.forward(&b, &HashMap::new())?.size().last().unwrap_or(&0))
    }

    /// Class ids must be valid for the model (classifiers; a language model's targets are its
    /// inputs).
    pub fn check_labels(&self, ds: &dyn Dataset, classes: i64) -> Result<()> {
        // A language model's targets are its inputs; a prompt-conditioned model has no classes.
        if self.task == TaskKind::CausalLm || self.diffusion.as_ref().is_some_and(|d| d.settings.text.is_some()) {
            return Ok(());
        }
        let ys = ds.labels()?;
        if let Some((i, &bad)) = ys.iter().enumerate().find(|(_, &v)| v < 0 || v >= classes) {
            return Err(Error::msg(format!(
                "{}: {} has label {bad}, outside the model's {classes} classes",
                ds.source(),
                ds.sample_name(i)
            )));
        }
        Ok(())
    }
}

fn is_int_kind(k: Kind) -> bool {
    matches!(k, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8)
}

/// Mean cross-entropy of logits against class ids (computed in f32 for half models).
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let lp = logits.f_to_kind(Kind::Float)?.f_log_softmax(-1, Kind::Float)?;
    Ok(lp.f_nll_loss::<Tensor>(&y.f_to_device(lp.device())?, None, tch::Reduction::Mean, -100)?)
}

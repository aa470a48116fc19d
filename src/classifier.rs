//! A model seen as a classifier: one float input batch in, N×C logits out. Wraps the engine's
//! plan with the names found in the graph (or given by the user).
use crate::data::Dataset;
use crate::engine::{Plan, PlanOptions, Registry};
use crate::error::{Error, Result};
use crate::onnx::proto::type_proto;
use crate::onnx::OnnxModel;
use std::collections::{HashMap, HashSet};
use tch::{Device, Kind, Tensor};

pub struct Classifier {
    pub plan: Plan,
    pub input: String,
    pub output: String,
    output_index: usize,
}

/// Names of the graph's float inputs and rank-2 float outputs, from its declared types.
fn float_values(vs: &[crate::onnx::proto::ValueInfoProto], rank: Option<usize>) -> Vec<String> {
    vs.iter()
        .filter(|v| match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => {
                matches!(t.elem_type(), 1 | 10 | 11 | 16)
                    && rank.is_none_or(|r| t.shape.as_ref().is_none_or(|s| s.dim.len() == r))
            }
            _ => false,
        })
        .map(|v| v.name().to_string())
        .collect()
}

impl Classifier {
    /// Plans `model` on `device` with `dynamic` initializers left live (the ones to adapt).
    pub fn new(
        model: &OnnxModel,
        device: Device,
        dynamic: HashSet<String>,
        input: Option<&str>,
        output: Option<&str>,
    ) -> Result<Self> {
        let plan = Plan::new(model, &Registry::standard(), &PlanOptions { device, dynamic, fold: true })?;
        let path = model.path.display();
        let ins: Vec<String> = plan.inputs().iter().map(|i| i.name.clone()).collect();
        let input = match input {
            Some(n) if ins.iter().any(|i| i == n) => n.to_string(),
            Some(n) => return Err(Error::msg(format!("{path}: no graph input '{n}' (inputs: {})", ins.join(", ")))),
            None => {
                let floats: Vec<String> =
                    float_values(&model.graph().input, None).into_iter().filter(|n| ins.contains(n)).collect();
                match (ins.len(), floats.as_slice()) {
                    (1, [one]) => one.clone(),
                    _ => {
                        return Err(Error::msg(format!(
                            "{path}: expected one float input, found [{}]; name it with --input-name",
                            ins.join(", ")
                        )))
                    }
                }
            }
        };
        let outs: Vec<String> = plan.output_names().iter().map(|s| s.to_string()).collect();
        let output = match output {
            Some(n) if outs.iter().any(|o| o == n) => n.to_string(),
            Some(n) => return Err(Error::msg(format!("{path}: no graph output '{n}' (outputs: {})", outs.join(", ")))),
            None => {
                let cands = float_values(&model.graph().output, Some(2));
                match (outs.len(), cands.as_slice()) {
                    (1, _) => outs[0].clone(),
                    (_, [one]) => one.clone(),
                    _ => {
                        return Err(Error::msg(format!(
                            "{path}: several outputs [{}]; name the N×C logits with --output-name",
                            outs.join(", ")
                        )))
                    }
                }
            }
        };
        let output_index = outs.iter().position(|o| *o == output).expect("checked");
        Ok(Classifier { plan, input, output, output_index })
    }

    pub fn device(&self) -> Device {
        self.plan.device()
    }

    /// N×C logits for a batch, with `overrides` standing in for dynamic initializers.
    pub fn logits(&self, x: &Tensor, overrides: &HashMap<String, Tensor>) -> Result<Tensor> {
        let feeds = HashMap::from([(self.input.clone(), x.shallow_clone())]);
        let mut outs = self.plan.run_with(&feeds, overrides)?;
        let y = outs.swap_remove(self.output_index);
        if y.dim() != 2 {
            return Err(Error::msg(format!("output '{}' has shape {:?}; expected N×C logits", self.output, y.size())));
        }
        Ok(y)
    }

    /// Accuracy (fraction) on a data set, without gradients.
    pub fn accuracy(&self, ds: &dyn Dataset, batch: usize, overrides: &HashMap<String, Tensor>) -> Result<f64> {
        self.accuracy_with(ds, batch, overrides, &mut |_, _| {})
    }

    /// [`Self::accuracy`], telling `progress` how many samples of how many are scored.
    pub fn accuracy_with(
        &self,
        ds: &dyn Dataset,
        batch: usize,
        overrides: &HashMap<String, Tensor>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let order: Vec<usize> = (0..ds.len()).collect();
        let (mut correct, mut done) = (0i64, 0);
        progress(0, ds.len());
        for idx in crate::data::batches(&order, batch) {
            let (x, y) = ds.batch(idx)?;
            let pred = self.logits(&x, overrides)?.f_argmax(-1, false)?;
            correct += pred.f_eq_tensor(&y.f_to_device(self.device())?)?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            done += idx.len();
            progress(done, ds.len());
        }
        Ok(if ds.is_empty() { 0.0 } else { correct as f64 / ds.len() as f64 })
    }

    /// Softmax probabilities for every sample (N×C, CPU, f32).
    pub fn probabilities(&self, ds: &dyn Dataset, batch: usize, overrides: &HashMap<String, Tensor>) -> Result<Tensor> {
        let _g = tch::no_grad_guard();
        let order: Vec<usize> = (0..ds.len()).collect();
        let mut parts = Vec::new();
        for idx in crate::data::batches(&order, batch) {
            let (x, _) = ds.batch(idx)?;
            let p = self.logits(&x, overrides)?.f_to_kind(Kind::Float)?.f_softmax(-1, Kind::Float)?;
            parts.push(p.f_to_device(Device::Cpu)?);
        }
        Ok(Tensor::f_cat(&parts, 0)?)
    }
}

/// Mean cross-entropy of logits against class ids (computed in f32 for half models).
pub fn cross_entropy(logits: &Tensor, y: &Tensor) -> Result<Tensor> {
    let lp = logits.f_to_kind(Kind::Float)?.f_log_softmax(-1, Kind::Float)?;
    Ok(lp.f_nll_loss::<Tensor>(&y.f_to_device(lp.device())?, None, tch::Reduction::Mean, -100)?)
}

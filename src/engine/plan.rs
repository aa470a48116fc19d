//! Planning: order the graph once, fold what does not depend on runtime values, give every
//! remaining value a slot and free each slot right after its last consumer.
use super::convert::to_tensor;
use super::registry::{norm_domain, BoxOp, OpCtx, Registry};
use super::Inputs;
use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, NodeProto};
use crate::onnx::{NodeExt, OnnxModel};
use std::collections::{BTreeMap, HashMap, HashSet};
use tch::{Device, Tensor};

/// Ops whose output must not be computed once and reused.
const NONDETERMINISTIC: &[&str] =
    &["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"];

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub device: Device,
    /// Initializers that stay live values (trainable, or substituted per run); never folded.
    pub dynamic: HashSet<String>,
    /// Evaluate static sub-graphs once at plan time.
    pub fold: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { device: Device::Cpu, dynamic: HashSet::new(), fold: true }
    }
}

struct Step {
    node: usize,
    op: BoxOp,
    inputs: Vec<Option<usize>>,
    outputs: Vec<Option<usize>>,
    free: Vec<usize>,
}

/// A graph input the caller must feed.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub name: String,
    pub slot: usize,
}

pub struct Plan {
    nodes: Vec<NodeProto>,
    steps: Vec<Step>,
    n_slots: usize,
    consts: Vec<(usize, Tensor)>,
    params: BTreeMap<String, (usize, Tensor)>,
    inputs: Vec<InputSpec>,
    outputs: Vec<(String, usize)>,
    device: Device,
    folded: usize,
    peak_live: usize,
}

/// Every node whose op the registry lacks, as one message: `op_type (domain, opset N): first node`.
pub fn unsupported_ops(model: &OnnxModel, reg: &Registry) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for n in &model.graph().node {
        let opset = model.opset(n.domain()).unwrap_or(0);
        if reg.find(n.domain(), n.op_type(), opset).is_none() {
            let dom = if norm_domain(n.domain()).is_empty() { "ai.onnx" } else { n.domain() };
            seen.entry(format!("{} (domain {dom}, opset {opset})", n.op_type())).or_insert_with(|| n.label());
        }
    }
    seen.into_iter().map(|(op, node)| format!("{op}: first at node '{node}'")).collect()
}

/// Kahn's order over the nodes; errors name an input nothing produces.
fn topo_order(g: &GraphProto, known: &HashSet<&str>) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, i);
        }
    }
    let mut indeg = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        for inp in n.input.iter().filter(|s| !s.is_empty()) {
            match producer.get(inp.as_str()) {
                Some(&p) => {
                    indeg[i] += 1;
                    users[p].push(i);
                }
                None if known.contains(inp.as_str()) => {}
                None => {
                    return Err(n.node_err(format!(
                        "input '{inp}' is neither a graph input, an initializer nor any node's output"
                    )))
                }
            }
        }
    }
    // Keep the file's order among ready nodes, so already-sorted graphs run as written.
    let mut ready: std::collections::BTreeSet<usize> = (0..g.node.len()).filter(|&i| indeg[i] == 0).collect();
    let mut order = Vec::with_capacity(g.node.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indeg[u] -= 1;
            if indeg[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != g.node.len() {
        let stuck = (0..g.node.len()).find(|i| indeg[*i] > 0).unwrap();
        return Err(g.node[stuck].node_err("the graph has a cycle through this node"));
    }
    Ok(order)
}

impl Plan {
    pub fn new(model: &OnnxModel, reg: &Registry, opts: &PlanOptions) -> Result<Self> {
        let missing = unsupported_ops(model, reg);
        if !missing.is_empty() {
            return Err(Error::Unsupported(format!("  {}", missing.join("\n  "))));
        }
        let g = model.graph();
        let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        for d in &opts.dynamic {
            if !init_names.contains(d.as_str()) {
                return Err(Error::Tensor { tensor: d.clone(), reason: "is not an initializer of the model".into() });
            }
        }
        let real_inputs: Vec<&str> = g.input.iter().map(|v| v.name()).filter(|n| !init_names.contains(n)).collect();
        let mut known: HashSet<&str> = init_names.clone();
        known.extend(real_inputs.iter().copied());
        let order = topo_order(g, &known)?;

        let _guard = tch::no_grad_guard();
        let dev = opts.device;
        // Constant values (initializers and folded outputs), and the set of runtime values.
        let mut consts: HashMap<String, Tensor> = HashMap::new();
        let mut params: BTreeMap<String, Tensor> = BTreeMap::new();
        for t in &g.initializer {
            let v = to_tensor(&model.tensor(t)?)?.f_to_device(dev)?;
            if opts.dynamic.contains(t.name()) {
                params.insert(t.name().to_string(), v);
            } else {
                consts.insert(t.name().to_string(), v);
            }
        }
        let mut built: Vec<(usize, BoxOp)> = Vec::new();
        let mut folded = 0;
        for &i in &order {
            let n = &g.node[i];
            let opset = model.opset(n.domain()).unwrap_or(0);
            let build = reg.find(n.domain(), n.op_type(), opset).expect("checked above");
            let op = build(&OpCtx { node: n, opset })?;
            let is_const = |s: &String| s.is_empty() || consts.contains_key(s);
            let foldable = opts.fold && !NONDETERMINISTIC.contains(&n.op_type()) && n.input.iter().all(is_const);
            if foldable {
                let vals = n.input.iter().map(|s| consts.get(s)).collect();
                let outs = run_op(n, op.as_ref(), Inputs { node: n, vals })?;
                for (name, t) in n.output.iter().zip(outs) {
                    if !name.is_empty() {
                        // Ops without inputs (Constant) create CPU tensors: move them to the plan's device.
                        consts.insert(name.clone(), t.f_to_device(dev)?);
                    }
                }
                folded += 1;
            } else {
                built.push((i, op));
            }
        }

        // Slots for every value a step or a graph output touches.
        let mut slot_of: HashMap<String, usize> = HashMap::new();
        let slot = |name: &str, slot_of: &mut HashMap<String, usize>| -> usize {
            let n = slot_of.len();
            *slot_of.entry(name.to_string()).or_insert(n)
        };
        let inputs: Vec<InputSpec> =
            real_inputs.iter().map(|n| InputSpec { name: n.to_string(), slot: slot(n, &mut slot_of) }).collect();
        let mut steps = Vec::new();
        for (i, op) in built {
            let n = &g.node[i];
            let ins = n.input.iter().map(|s| (!s.is_empty()).then(|| slot(s, &mut slot_of))).collect();
            let outs = n.output.iter().map(|s| (!s.is_empty()).then(|| slot(s, &mut slot_of))).collect();
            steps.push(Step { node: i, op, inputs: ins, outputs: outs, free: Vec::new() });
        }
        let mut outputs = Vec::new();
        for o in &g.output {
            if !slot_of.contains_key(o.name()) && !consts.contains_key(o.name()) {
                return Err(Error::Model {
                    path: model.path.clone(),
                    reason: format!("graph output '{}' is produced by no node", o.name()),
                });
            }
            outputs.push((o.name().to_string(), slot(o.name(), &mut slot_of)));
        }
        let const_slots: Vec<(usize, Tensor)> =
            slot_of.iter().filter_map(|(name, &s)| consts.remove(name).map(|t| (s, t))).collect();
        let param_slots: BTreeMap<String, (usize, Tensor)> =
            params.into_iter().filter_map(|(n, t)| slot_of.get(&n).map(|&s| (n, (s, t)))).collect();

        // Free each slot after its last reader; outputs are kept; unread values die at once.
        let keep: HashSet<usize> = outputs.iter().map(|o| o.1).collect();
        let mut last: HashMap<usize, usize> = HashMap::new();
        for (si, st) in steps.iter().enumerate() {
            for s in st.inputs.iter().chain(st.outputs.iter()).flatten() {
                last.insert(*s, si);
            }
        }
        for (s, si) in last {
            if !keep.contains(&s) {
                steps[si].free.push(s);
            }
        }
        // Peak number of runtime values alive at once (constants excluded): what the frees buy.
        let peak_live = {
            let mut live: HashSet<usize> = inputs.iter().map(|i| i.slot).collect();
            let mut peak = live.len();
            for st in &steps {
                live.extend(st.outputs.iter().flatten().copied());
                peak = peak.max(live.len());
                for s in &st.free {
                    live.remove(s);
                }
            }
            peak
        };
        Ok(Plan {
            nodes: g.node.clone(),
            steps,
            n_slots: slot_of.len(),
            consts: const_slots,
            params: param_slots,
            inputs,
            outputs,
            device: dev,
            folded,
            peak_live,
        })
    }

    pub fn device(&self) -> Device {
        self.device
    }
    pub fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }
    pub fn output_names(&self) -> Vec<&str> {
        self.outputs.iter().map(|o| o.0.as_str()).collect()
    }
    /// Number of nodes evaluated at plan time, and number left to run.
    pub fn stats(&self) -> (usize, usize) {
        (self.folded, self.steps.len())
    }
    /// The most runtime values (not constants) alive at once during a run.
    pub fn peak_live_values(&self) -> usize {
        self.peak_live
    }
    /// The current value of a dynamic initializer (the one used when not overridden).
    pub fn param(&self, name: &str) -> Option<&Tensor> {
        self.params.get(name).map(|p| &p.1)
    }
    /// Replaces the default value of a dynamic initializer (e.g. with a requires-grad copy).
    pub fn set_param(&mut self, name: &str, t: Tensor) -> Result<()> {
        let p = self.params.get_mut(name).ok_or_else(|| Error::Tensor {
            tensor: name.into(),
            reason: "is not a dynamic initializer of this plan".into(),
        })?;
        p.1 = t;
        Ok(())
    }
    pub fn param_names(&self) -> Vec<String> {
        self.params.keys().cloned().collect()
    }

    /// Runs the graph; returns the outputs in graph order.
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
        self.run_with(feeds, &HashMap::new())
    }

    /// Runs with `overrides` standing in for dynamic initializers (e.g. `W + U R Vᵀ`).
    pub fn run_with(
        &self,
        feeds: &HashMap<String, Tensor>,
        overrides: &HashMap<String, Tensor>,
    ) -> Result<Vec<Tensor>> {
        let mut slots: Vec<Option<Tensor>> = (0..self.n_slots).map(|_| None).collect();
        for (s, t) in &self.consts {
            slots[*s] = Some(t.shallow_clone());
        }
        for (name, (s, t)) in &self.params {
            slots[*s] = Some(overrides.get(name).unwrap_or(t).shallow_clone());
        }
        for name in overrides.keys() {
            if !self.params.contains_key(name) {
                return Err(Error::Tensor {
                    tensor: name.clone(),
                    reason: "overridden but not planned as dynamic".into(),
                });
            }
        }
        for inp in &self.inputs {
            let t = feeds.get(&inp.name).ok_or_else(|| {
                Error::msg(format!(
                    "the model needs input '{}'; given: [{}]",
                    inp.name,
                    feeds.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })?;
            slots[inp.slot] = Some(t.f_to_device(self.device)?);
        }
        for st in &self.steps {
            let n = &self.nodes[st.node];
            let vals = st.inputs.iter().map(|s| s.and_then(|s| slots[s].as_ref())).collect();
            let outs = run_op(n, st.op.as_ref(), Inputs { node: n, vals })?;
            for (s, t) in st.outputs.iter().zip(outs) {
                if let Some(s) = s {
                    let t = if t.device() == self.device { t } else { t.f_to_device(self.device)? };
                    slots[*s] = Some(t);
                }
            }
            for s in &st.free {
                slots[*s] = None;
            }
        }
        self.outputs
            .iter()
            .map(|(name, s)| {
                slots[*s]
                    .as_ref()
                    .map(|t| t.shallow_clone())
                    .ok_or_else(|| Error::msg(format!("output '{name}' was not computed")))
            })
            .collect()
    }
}

/// Runs one op, naming the node in any error and checking it produced every named output.
fn run_op(n: &NodeProto, op: &dyn super::registry::Op, x: Inputs) -> Result<Vec<Tensor>> {
    let outs = op.run(&x).map_err(|e| match e {
        Error::Torch(t) => n.node_err(format!("libtorch: {t}")),
        Error::Msg(m) => n.node_err(m),
        other => other,
    })?;
    let wanted = n.output.iter().rposition(|o| !o.is_empty()).map_or(0, |p| p + 1);
    if outs.len() < wanted {
        return Err(n.node_err(format!("produced {} outputs, the graph uses {}", outs.len(), wanted)));
    }
    Ok(outs)
}

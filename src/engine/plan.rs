//! Planning: order the graph once, fold what does not depend on runtime values, give every
//! remaining value a slot and free each slot right after its last consumer.
use super::registry::{norm_domain, BoxOp, OpCtx, Registry, Scope};
use super::{LowRank, Overrides, Value, ValueInputs};
use crate::error::{Error, Result};
use crate::onnx::proto::{GraphProto, NodeProto, TensorProto};
use crate::onnx::tensor::numel;
use crate::onnx::{DType, NodeExt, OnnxModel};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use tch::{Device, Tensor};

/// Ops whose output must not be computed once and reused.
const NONDETERMINISTIC: &[&str] =
    &["RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"];

thread_local! {
    static IN_OP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Whether this thread is running an op (for a panic hook that leaves reporting to the engine).
pub fn inside_op() -> bool {
    IN_OP.with(|d| d.get() > 0)
}

/// The preview-training op that differentiates a graph value with respect to others.
const GRADIENT: (&str, &str) = ("ai.onnx.preview.training", "Gradient");

fn is_gradient(n: &NodeProto) -> bool {
    n.domain() == GRADIENT.0 && n.op_type() == GRADIENT.1
}

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
    /// The node's inputs, then the outer values its subgraphs read.
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
    consts: Vec<(usize, Value)>,
    params: BTreeMap<String, (usize, Tensor)>,
    inputs: Vec<InputSpec>,
    outputs: Vec<(String, usize)>,
    device: Device,
    folded: usize,
    peak_live: usize,
    /// Slots that must require grad when set (the `xs` of Gradient nodes).
    grad_roots: HashSet<usize>,
    /// [`Self::release_weights`] was called: the plan no longer runs.
    released: bool,
}

/// Every node whose op the registry lacks, as one message: `op_type (domain, opset N): first node`.
/// Subgraphs (If branches, Loop/Scan bodies) are searched too.
pub fn unsupported_ops(model: &OnnxModel, reg: &Registry) -> Vec<String> {
    fn walk(g: &GraphProto, model: &OnnxModel, reg: &Registry, seen: &mut BTreeMap<String, String>) {
        for n in &g.node {
            let opset = model.opset(n.domain()).unwrap_or(0);
            if reg.find(n.domain(), n.op_type(), opset).is_none() {
                let dom = if norm_domain(n.domain()).is_empty() { "ai.onnx" } else { n.domain() };
                seen.entry(format!("{} (domain {dom}, opset {opset})", n.op_type())).or_insert_with(|| n.label());
            }
            for sub in subgraphs(n) {
                walk(sub, model, reg, seen);
            }
        }
    }
    let mut seen = BTreeMap::new();
    walk(model.graph(), model, reg, &mut seen);
    seen.into_iter().map(|(op, node)| format!("{op}: first at node '{node}'")).collect()
}

/// The graphs held in a node's attributes.
pub fn subgraphs(n: &NodeProto) -> impl Iterator<Item = &GraphProto> {
    n.attribute.iter().flat_map(|a| a.g.iter().chain(a.graphs.iter()))
}

/// Names a graph reads from its enclosing scope: used by its nodes (or their subgraphs) or
/// returned as outputs, and defined by none of its inputs, initializers or nodes. Sorted.
pub fn free_values(g: &GraphProto) -> Vec<String> {
    let mut defined: HashSet<&str> = g.input.iter().map(|v| v.name()).collect();
    defined.extend(g.initializer.iter().map(|t| t.name()));
    defined.extend(g.node.iter().flat_map(|n| n.output.iter().map(String::as_str)));
    let mut free = BTreeSet::new();
    for n in &g.node {
        for name in n.input.iter().cloned().chain(implicit_inputs(n)) {
            if !name.is_empty() && !defined.contains(name.as_str()) {
                free.insert(name);
            }
        }
    }
    for o in &g.output {
        if !defined.contains(o.name()) {
            free.insert(o.name().to_string());
        }
    }
    free.into_iter().collect()
}

/// Element types the graph states for its values: inputs, outputs, value_info, initializers.
fn declared_types(g: &GraphProto) -> HashMap<&str, DType> {
    use crate::onnx::proto::type_proto::Value as T;
    let mut m = HashMap::new();
    for v in g.input.iter().chain(&g.output).chain(&g.value_info) {
        if let Some(T::TensorType(t)) = v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            if let Ok(d) = DType::from_onnx(t.elem_type()) {
                m.insert(v.name(), d);
            }
        }
    }
    for t in &g.initializer {
        if let Ok(d) = DType::from_onnx(t.data_type()) {
            m.insert(t.name(), d);
        }
    }
    m
}

/// Values a node reads besides its inputs: what its subgraphs take from the enclosing scope, and
/// for `Gradient` the differentiated value `y`. Sorted, without duplicates.
pub fn implicit_inputs(n: &NodeProto) -> Vec<String> {
    let mut v: BTreeSet<String> = subgraphs(n).flat_map(free_values).collect();
    if is_gradient(n) {
        if let Ok(Some(y)) = n.get_s("y") {
            v.insert(y);
        }
    }
    v.into_iter().collect()
}

/// Kahn's order over the nodes; errors name an input nothing produces.
/// `implicit[i]` is node i's [`implicit_inputs`] (computed once by the caller).
fn topo_order(g: &GraphProto, known: &HashSet<&str>, implicit: &[Vec<String>]) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for o in n.output.iter().filter(|o| !o.is_empty()) {
            producer.insert(o, i);
        }
    }
    let mut indeg = vec![0usize; g.node.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.node.len()];
    for (i, n) in g.node.iter().enumerate() {
        let reads: BTreeSet<&String> = n.input.iter().chain(&implicit[i]).collect();
        for inp in reads.iter().filter(|s| !s.is_empty()) {
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
    crate::onnx::check::kahn(indeg, &users)
        .map_err(|stuck| g.node[stuck].node_err("the graph has a cycle through this node"))
}

impl Plan {
    pub fn new(model: &OnnxModel, reg: &Registry, opts: &PlanOptions) -> Result<Self> {
        let missing = unsupported_ops(model, reg);
        if !missing.is_empty() {
            return Err(Error::Unsupported(format!("  {}", missing.join("\n  "))));
        }
        let g = model.graph();
        crate::engine::memory::fit_to_weights(weight_bytes(g));
        let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        for d in &opts.dynamic {
            if !init_names.contains(d.as_str()) {
                return Err(Error::Tensor { tensor: d.clone(), reason: "is not an initializer of the model".into() });
            }
        }
        let opsets =
            model.proto.opset_import.iter().map(|o| (norm_domain(o.domain()).to_string(), o.version())).collect();
        let scope = Scope { reg, opsets, dir: &model.dir, opts };
        let inputs: Vec<String> =
            g.input.iter().map(|v| v.name().to_string()).filter(|n| !init_names.contains(n.as_str())).collect();
        Self::build(g, &scope, inputs, &opts.dynamic).map_err(|e| match e {
            Error::Msg(m) => Error::Model { path: model.path.clone(), reason: m },
            other => other,
        })
    }

    /// Plans a subgraph (an If branch, a Loop/Scan body) in its parent's scope. Its inputs are
    /// the graph's formal inputs followed by [`free_values`] (the outer values it reads).
    pub fn subgraph(g: &GraphProto, scope: &Scope) -> Result<Self> {
        let inputs = g.input.iter().map(|v| v.name().to_string()).chain(free_values(g)).collect();
        Self::build(g, scope, inputs, &HashSet::new())
    }

    fn build(g: &GraphProto, scope: &Scope, real_inputs: Vec<String>, dynamic: &HashSet<String>) -> Result<Self> {
        let opts = scope.opts;
        let init_names: HashSet<&str> = g.initializer.iter().map(|t| t.name()).collect();
        let mut known: HashSet<&str> = init_names.clone();
        known.extend(real_inputs.iter().map(String::as_str));
        let implicit: Vec<Vec<String>> = g.node.iter().map(implicit_inputs).collect();
        let order = topo_order(g, &known, &implicit)?;
        // Values a Gradient node differentiates with respect to stay live so autograd sees them.
        let grad_xs: HashSet<String> = g
            .node
            .iter()
            .filter(|n| is_gradient(n))
            .flat_map(|n| n.get_strings("xs").ok().flatten().unwrap_or_default())
            .collect();

        let declared = declared_types(g);
        let _guard = tch::no_grad_guard();
        let dev = opts.device;
        // Constant values (initializers and folded outputs), and the set of runtime values.
        let mut consts: HashMap<String, Value> = HashMap::new();
        let mut params: BTreeMap<String, Tensor> = BTreeMap::new();
        for t in &g.initializer {
            let v = Value::from_tensor_proto(t, scope.dir)?.to_device(dev)?;
            if dynamic.contains(t.name()) {
                params.insert(t.name().to_string(), v.into_tensor()?);
            } else {
                consts.insert(t.name().to_string(), v);
            }
        }
        let mut built: Vec<(usize, BoxOp)> = Vec::new();
        let mut folded = 0;
        for &i in &order {
            let n = &g.node[i];
            let opset = scope.opset(n.domain());
            let build = scope.reg.find(n.domain(), n.op_type(), opset).ok_or_else(|| {
                Error::Unsupported(format!("  {} (opset {opset}): first at node '{}'", n.op_type(), n.label()))
            })?;
            let implicit = &implicit[i];
            let input_types: Vec<Option<DType>> = n.input.iter().map(|s| declared.get(s.as_str()).copied()).collect();
            let op = build(&OpCtx { node: n, opset, scope: Some(scope), implicit, input_types: &input_types })?;
            let is_const = |s: &String| s.is_empty() || (consts.contains_key(s) && !grad_xs.contains(s));
            let foldable = opts.fold
                && !NONDETERMINISTIC.contains(&n.op_type())
                && !is_gradient(n)
                && n.input.iter().chain(implicit).all(is_const);
            if foldable {
                let vals = n.input.iter().chain(implicit).map(|s| consts.get(s)).collect();
                let outs = run_op(n, ValueInputs { node: n, vals }, |x| op.run_values(x))?;
                for (name, v) in n.output.iter().zip(outs) {
                    if !name.is_empty() {
                        // Ops without inputs (Constant) create CPU tensors: move them to the plan's device.
                        consts.insert(name.clone(), v.to_device(dev)?);
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
            real_inputs.iter().map(|n| InputSpec { name: n.clone(), slot: slot(n, &mut slot_of) }).collect();
        let mut steps = Vec::new();
        for (i, op) in built {
            let n = &g.node[i];
            let ins =
                n.input.iter().chain(&implicit[i]).map(|s| (!s.is_empty()).then(|| slot(s, &mut slot_of))).collect();
            let outs = n.output.iter().map(|s| (!s.is_empty()).then(|| slot(s, &mut slot_of))).collect();
            steps.push(Step { node: i, op, inputs: ins, outputs: outs, free: Vec::new() });
        }
        let mut outputs = Vec::new();
        for o in &g.output {
            if !slot_of.contains_key(o.name()) && !consts.contains_key(o.name()) {
                return Err(Error::msg(format!("graph output '{}' is produced by no node", o.name())));
            }
            outputs.push((o.name().to_string(), slot(o.name(), &mut slot_of)));
        }
        let grad_roots = grad_xs.iter().filter_map(|n| slot_of.get(n).copied()).collect();
        let const_slots: Vec<(usize, Value)> =
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
            grad_roots,
            released: false,
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

    /// Drops the plan's weights and what was computed from them, for a caller done with the
    /// engine whose memory the next step needs (the gate loading other runtimes). The plan
    /// refuses to run afterwards.
    pub fn release_weights(&mut self) {
        self.consts.clear();
        self.params.clear();
        self.released = true;
    }

    /// Runs the graph; returns the outputs in graph order (all must be tensors).
    pub fn run(&self, feeds: &HashMap<String, Tensor>) -> Result<Vec<Tensor>> {
        self.run_with(feeds, &HashMap::new())
    }

    /// Runs with `overrides` standing in for dynamic initializers (e.g. `W + U R Vᵀ`).
    pub fn run_with(&self, feeds: &HashMap<String, Tensor>, overrides: &dyn Overrides) -> Result<Vec<Tensor>> {
        let feed = |name: &str| feeds.get(name).map(|t| Value::Tensor(t.shallow_clone()));
        let outs = self.execute(&feed, overrides, || feeds.keys().cloned().collect())?;
        self.outputs
            .iter()
            .zip(outs)
            .map(|((name, _), v)| {
                v.into_tensor()
                    .map_err(|e| Error::msg(format!("output '{name}': {e} (Plan::run_values returns any value)")))
            })
            .collect()
    }

    /// Runs on any values (sequences, optionals, strings) fed by name.
    pub fn run_values(&self, feeds: &HashMap<String, Value>) -> Result<Vec<Value>> {
        let feed = |name: &str| feeds.get(name).map(Value::shallow_clone);
        self.execute(&feed, &HashMap::new(), || feeds.keys().cloned().collect())
    }

    /// Runs with the inputs given in [`Self::inputs`] order (how subgraphs are called).
    pub fn run_positional(&self, vals: Vec<Value>) -> Result<Vec<Value>> {
        if vals.len() != self.inputs.len() {
            return Err(Error::msg(format!("{} values for a graph of {} inputs", vals.len(), self.inputs.len())));
        }
        let by_name: HashMap<&str, Value> = self.inputs.iter().map(|i| i.name.as_str()).zip(vals).collect();
        let feed = |name: &str| by_name.get(name).map(Value::shallow_clone);
        self.execute(&feed, &HashMap::new(), Vec::new)
    }

    fn execute(
        &self,
        feed: &dyn Fn(&str) -> Option<Value>,
        overrides: &dyn Overrides,
        given: impl Fn() -> Vec<String>,
    ) -> Result<Vec<Value>> {
        if self.released {
            return Err(Error::msg("internal: the plan's weights were released"));
        }
        let mut slots: Vec<Option<Value>> = (0..self.n_slots).map(|_| None).collect();
        for (s, v) in &self.consts {
            slots[*s] = Some(v.shallow_clone());
        }
        // Slots holding the base of a low-rank weight, until an op needs it formed.
        let mut low_rank: HashMap<usize, &LowRank> = HashMap::new();
        for (name, (s, t)) in &self.params {
            let lr = overrides.low_rank(name);
            if let Some(w) = lr {
                low_rank.insert(*s, w);
            }
            let t = overrides.tensor(name).or(lr.map(|w| &w.base)).unwrap_or(t);
            slots[*s] = Some(Value::Tensor(t.shallow_clone()));
        }
        for name in overrides.names() {
            if !self.params.contains_key(name) {
                return Err(Error::Tensor {
                    tensor: name.to_string(),
                    reason: "overridden but not planned as dynamic".into(),
                });
            }
        }
        for inp in &self.inputs {
            let v = feed(&inp.name).ok_or_else(|| {
                Error::msg(format!("the model needs input '{}'; given: [{}]", inp.name, given().join(", ")))
            })?;
            slots[inp.slot] = Some(v.to_device(self.device)?);
        }
        for &s in &self.grad_roots {
            if let Some(Value::Tensor(t)) = &slots[s] {
                slots[s] = Some(Value::Tensor(t.f_detach()?.f_set_requires_grad(true)?));
            }
        }
        for st in &self.steps {
            let n = &self.nodes[st.node];
            // (Most runs have no low-rank weight: no lookups then.)
            let low: Vec<(usize, usize)> = if low_rank.is_empty() {
                Vec::new()
            } else {
                (st.inputs.iter().enumerate())
                    .filter_map(|(i, s)| s.filter(|s| low_rank.contains_key(s)).map(|s| (i, s)))
                    .collect()
            };
            let factored = match low[..] {
                [(i, s)] if st.op.takes_low_rank(i) && low_rank[&s].factored() => Some((i, low_rank[&s])),
                _ => None,
            };
            if factored.is_none() {
                // The op needs the weights themselves: formed once, kept in the slot.
                // (A weight read twice by the node is listed twice.)
                for &(_, s) in &low {
                    if let Some(w) = low_rank.remove(&s) {
                        slots[s] = Some(Value::Tensor(w.formed().map_err(|e| n.node_err(e.to_string()))?));
                    }
                }
            }
            let vals = st.inputs.iter().map(|s| s.and_then(|s| slots[s].as_ref())).collect();
            let outs = run_op(n, ValueInputs { node: n, vals }, |x| match factored {
                Some((i, w)) => {
                    Ok(st.op.run_low_rank(&x.as_tensors()?, i, w)?.into_iter().map(Value::Tensor).collect())
                }
                None => st.op.run_values(x),
            })?;
            for (s, v) in st.outputs.iter().zip(outs) {
                if let Some(s) = s {
                    slots[*s] = Some(v.to_device(self.device)?);
                }
            }
            for s in &st.free {
                slots[*s] = None;
            }
        }
        self.outputs
            .iter()
            .map(|(name, s)| match low_rank.get(s) {
                // A weight that is itself an output: the weight, not its base.
                Some(w) => Ok(Value::Tensor(w.formed()?)),
                None => slots[*s]
                    .as_ref()
                    .map(Value::shallow_clone)
                    .ok_or_else(|| Error::msg(format!("output '{name}' was not computed"))),
            })
            .collect()
    }
}

/// The shapes and types of a node's inputs, for an error libtorch raised: " (inputs: 'x' Float
/// [1, 3, 28, 28], 'w' Float [8, 1, 3, 3])".
fn shapes(x: &ValueInputs) -> String {
    let parts: Vec<String> = x
        .node
        .input
        .iter()
        .zip(&x.vals)
        .filter_map(|(name, v)| match v {
            Some(Value::Tensor(t)) => Some(format!("'{name}' {:?} {:?}", t.kind(), t.size())),
            _ => None,
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" (inputs: {})", parts.join(", "))
    }
}

/// Runs one op, naming the node in any error and checking it produced every named output.
/// A bug in an op (an index past a shape it did not check) must not take the process down: the
/// panic becomes this node's error, and [`inside_op`] lets the binary's panic hook stay quiet.
fn run_op(n: &NodeProto, x: ValueInputs, run: impl FnOnce(&ValueInputs) -> Result<Vec<Value>>) -> Result<Vec<Value>> {
    IN_OP.with(|d| d.set(d.get() + 1));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&x)));
    IN_OP.with(|d| d.set(d.get() - 1));
    let result = caught.unwrap_or_else(|p| {
        let what = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let what = crate::error::torch_summary(&what);
        Err(Error::msg(format!("internal error on these inputs ({what}); please report it with the model")))
    });
    let outs = result.map_err(|e| match e {
        Error::Torch(t) => n.node_err(format!("{}{}", crate::error::torch_summary(&t.to_string()), shapes(&x))),
        Error::Msg(m) => n.node_err(m),
        other => other,
    })?;
    let wanted = n.output.iter().rposition(|o| !o.is_empty()).map_or(0, |p| p + 1);
    if outs.len() < wanted {
        return Err(n.node_err(format!("produced {} outputs, the graph uses {}", outs.len(), wanted)));
    }
    Ok(outs)
}

/// The bytes of a graph's initializers as stored (its sub-graphs' not counted).
fn weight_bytes(g: &GraphProto) -> u64 {
    let bytes = |t: &TensorProto| {
        DType::from_onnx(t.data_type()).ok().and_then(|d| d.byte_len(numel(&t.dims))).unwrap_or(0) as u64
    };
    g.initializer.iter().map(bytes).sum()
}

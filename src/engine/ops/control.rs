//! Control flow: If, Loop, Scan and SequenceMap run their subgraphs as nested plans (autograd
//! flows through them like through any op), and the preview `Gradient` op.
use crate::engine::registry::{vop, BoxOp, OpCtx, Registry};
use crate::engine::{to_ints, Inputs, Plan, Value, ValueInputs};
use crate::error::{Error, Result};
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

pub fn register(r: &mut Registry) {
    r.add("If", 1, if_op);
    r.add("Loop", 1, loop_op);
    r.add_range("", "Scan", 8, 8, scan8);
    r.add("Scan", 9, scan);
    r.add("SequenceMap", 17, sequence_map);
    r.add_range("ai.onnx.preview.training", "Gradient", 1, i64::MAX, gradient);
}

/// A subgraph attribute planned in the node's scope, with where its outer values sit among the
/// node's implicit inputs. Also used by FlexAttention's modifier subgraphs.
pub(crate) struct Body {
    plan: Plan,
    outer: Vec<usize>,
    pub(crate) inputs: usize,
    pub(crate) outputs: usize,
}

impl Body {
    pub(crate) fn new(ctx: &OpCtx, attr: &str) -> Result<Body> {
        Body::optional(ctx, attr)?.ok_or_else(|| ctx.node.attr_err(attr, "is required"))
    }

    /// The body of graph attribute `attr`, None when the node lacks it.
    pub(crate) fn optional(ctx: &OpCtx, attr: &str) -> Result<Option<Body>> {
        let Some(g) = ctx.node.attr(attr).and_then(|a| a.g.as_ref()) else { return Ok(None) };
        let scope = ctx.scope.ok_or_else(|| ctx.node.node_err("subgraphs need a planning scope"))?;
        let plan = Plan::subgraph(g, scope).map_err(|e| ctx.node.attr_err(attr, e.to_string()))?;
        // The plan's inputs after the formal ones are the outer values it reads.
        let outer = plan.inputs()[g.input.len()..]
            .iter()
            .map(|i| ctx.implicit.iter().position(|m| *m == i.name).expect("implicit inputs include every free value"))
            .collect();
        Ok(Some(Body { plan, outer, inputs: g.input.len(), outputs: g.output.len() }))
    }

    /// Runs the body on its formal inputs; outer values come from the node's implicit inputs.
    pub(crate) fn run(&self, x: &ValueInputs, formal: Vec<Value>) -> Result<Vec<Value>> {
        self.call(formal, x.node.input.len(), |i| x.get(i).map(Value::shallow_clone), |m| x.err(m))
    }

    /// [`Self::run`] for ops on tensors.
    pub(crate) fn run_tensors(&self, x: &Inputs, formal: Vec<Value>) -> Result<Vec<Value>> {
        self.call(formal, x.node.input.len(), |i| x.get(i).map(|t| Value::Tensor(t.shallow_clone())), |m| x.err(m))
    }

    fn call(
        &self,
        formal: Vec<Value>,
        base: usize,
        input: impl Fn(usize) -> Option<Value>,
        err: impl Fn(String) -> Error,
    ) -> Result<Vec<Value>> {
        if formal.len() != self.inputs {
            return Err(err(format!("the body takes {} inputs, given {}", self.inputs, formal.len())));
        }
        // Implicit inputs follow the node's own (`base` of them); `outer` indexes them.
        let mut vals = formal;
        for &p in &self.outer {
            vals.push(input(base + p).ok_or_else(|| err("an outer value of the body is missing".into()))?);
        }
        self.plan.run_positional(vals).map_err(|e| err(format!("in its body: {e}")))
    }
}

/// An int64 scalar on `dev` (the loop counter).
fn int_scalar(v: i64, dev: tch::Device) -> Result<Tensor> {
    Ok(Tensor::from(v).f_to_kind(Kind::Int64)?.f_to_device(dev)?)
}

fn truthy(x: &ValueInputs, t: &Tensor) -> Result<bool> {
    if t.numel() != 1 {
        return Err(x.err(format!("the condition must hold one element, found shape {:?}", t.size())));
    }
    Ok(t.f_to_kind(Kind::Double)?.f_reshape([-1])?.f_double_value(&[0])? != 0.0)
}

fn if_op(ctx: &OpCtx) -> Result<BoxOp> {
    let (then_b, else_b) = (Body::new(ctx, "then_branch")?, Body::new(ctx, "else_branch")?);
    vop(move |x| {
        let c = x.req_tensor(0)?.f_reshape([-1])?;
        let branch = if truthy(x, &c)? { &then_b } else { &else_b };
        branch.run(x, Vec::new())
    })
}

/// Stacks per-iteration scan outputs along a new axis 0 (or returns them as a sequence when the
/// body yields sequences).
fn stack(x: &ValueInputs, items: Vec<Value>) -> Result<Value> {
    if items.iter().all(|v| matches!(v, Value::Tensor(_))) && !items.is_empty() {
        let ts: Vec<Tensor> = items.into_iter().map(Value::into_tensor).collect::<Result<_>>()?;
        return Ok(Value::Tensor(Tensor::f_stack(&ts, 0)?));
    }
    if items.is_empty() {
        return Err(x.err("a scan output of zero iterations has no known shape"));
    }
    Ok(Value::Seq(items))
}

fn loop_op(ctx: &OpCtx) -> Result<BoxOp> {
    let body = Body::new(ctx, "body")?;
    vop(move |x| {
        let max = x.tensor(0)?.map(to_ints).transpose()?.and_then(|v| v.first().copied());
        let mut cond = match x.tensor(1)? {
            Some(c) => truthy(x, c)?,
            None => true,
        };
        let n_carried = x.node.input.len().saturating_sub(2);
        let mut carried: Vec<Value> =
            (0..n_carried).map(|i| x.req(2 + i).map(Value::shallow_clone)).collect::<Result<_>>()?;
        let n_scan = x.node.output.len().saturating_sub(n_carried);
        let mut scans: Vec<Vec<Value>> = (0..n_scan).map(|_| Vec::new()).collect();
        let dev = x.vals.iter().flatten().find_map(|v| v.as_tensor()).map_or(tch::Device::Cpu, |t| t.device());
        let mut i = 0i64;
        while cond && max.is_none_or(|m| i < m) {
            let mut formal =
                vec![Value::Tensor(int_scalar(i, dev)?), Value::Tensor(Tensor::from(cond).f_to_device(dev)?)];
            formal.append(&mut carried);
            let mut outs = body.run(x, formal)?.into_iter();
            let c = outs.next().ok_or_else(|| x.err("the body returned no condition"))?;
            cond = truthy(x, c.as_tensor().ok_or_else(|| x.err("the body's condition is not a tensor"))?)?;
            carried = outs.by_ref().take(n_carried).collect();
            for (s, v) in scans.iter_mut().zip(outs) {
                s.push(v);
            }
            i += 1;
        }
        let mut result = carried;
        for s in scans {
            result.push(stack(x, s)?);
        }
        Ok(result)
    })
}

/// Scan's per-input axis/direction attributes, defaulting to axis 0 forward.
fn axes(ctx: &OpCtx, name: &str, n: usize) -> Result<Vec<i64>> {
    let v = ctx.node.get_ints(name)?.unwrap_or_else(|| vec![0; n]);
    if v.len() != n {
        return Err(ctx.node.attr_err(name, format!("has {} entries for {n} values", v.len())));
    }
    Ok(v)
}

struct ScanSpec {
    body: Body,
    n_scan: usize,
    in_axes: Vec<i64>,
    in_dirs: Vec<i64>,
    out_axes: Vec<i64>,
    out_dirs: Vec<i64>,
}

impl ScanSpec {
    fn new(ctx: &OpCtx, batch: bool) -> Result<Self> {
        let body = Body::new(ctx, "body")?;
        let n_scan = ctx.node.req_i("num_scan_inputs")? as usize;
        let n_states = ctx.node.input.len().saturating_sub(n_scan + batch as usize);
        let n_out = ctx.node.output.len().saturating_sub(n_states);
        let dirs_name = if batch { "directions" } else { "scan_input_directions" };
        Ok(ScanSpec {
            body,
            n_scan,
            in_axes: if batch { vec![0; n_scan] } else { axes(ctx, "scan_input_axes", n_scan)? },
            in_dirs: axes(ctx, dirs_name, n_scan)?,
            out_axes: if batch { vec![0; n_out] } else { axes(ctx, "scan_output_axes", n_out)? },
            out_dirs: if batch { vec![0; n_out] } else { axes(ctx, "scan_output_directions", n_out)? },
        })
    }

    /// One scan over `states` and `inputs` (already un-batched).
    fn run(&self, x: &ValueInputs, states: Vec<Value>, inputs: &[Tensor]) -> Result<Vec<Value>> {
        let norm = |a: i64, r: i64| if a < 0 { a + r } else { a };
        let in_axes: Vec<i64> = self.in_axes.iter().zip(inputs).map(|(&a, t)| norm(a, t.dim() as i64)).collect();
        for (k, (&a, t)) in in_axes.iter().zip(inputs).enumerate() {
            if a < 0 || a >= t.dim() as i64 {
                return Err(x.err(format!("scan input {k} has rank {}, no axis {}", t.dim(), self.in_axes[k])));
            }
        }
        let len = match inputs.first() {
            Some(t) => t.size()[in_axes[0] as usize],
            None => return Err(x.err("Scan needs at least one scan input")),
        };
        let n_states = states.len();
        let mut states = states;
        let mut outs: Vec<Vec<Tensor>> = Vec::new();
        for step in 0..len {
            let mut formal = std::mem::take(&mut states);
            for (k, t) in inputs.iter().enumerate() {
                let at = if self.in_dirs[k] == 1 { len - 1 - step } else { step };
                formal.push(Value::Tensor(t.f_select(in_axes[k], at)?));
            }
            let mut res = self.body.run(x, formal)?.into_iter();
            states = res.by_ref().take(n_states).collect();
            let scan: Vec<Tensor> = res.map(Value::into_tensor).collect::<Result<_>>()?;
            if outs.is_empty() {
                outs = (0..scan.len()).map(|_| Vec::new()).collect();
            }
            for (o, t) in outs.iter_mut().zip(scan) {
                o.push(t);
            }
        }
        let mut result = states;
        for (k, mut parts) in outs.into_iter().enumerate() {
            if self.out_dirs.get(k) == Some(&1) {
                parts.reverse();
            }
            let rank = parts[0].dim() as i64 + 1;
            let a = norm(self.out_axes.get(k).copied().unwrap_or(0), rank);
            result.push(Value::Tensor(Tensor::f_stack(&parts, a)?));
        }
        Ok(result)
    }
}

fn scan(ctx: &OpCtx) -> Result<BoxOp> {
    let spec = ScanSpec::new(ctx, false)?;
    vop(move |x| {
        let n_states = x.node.input.len() - spec.n_scan;
        let states = (0..n_states).map(|i| x.req(i).map(Value::shallow_clone)).collect::<Result<_>>()?;
        let inputs: Vec<Tensor> = (n_states..x.node.input.len())
            .map(|i| x.req_tensor(i).map(Tensor::shallow_clone))
            .collect::<Result<_>>()?;
        spec.run(x, states, &inputs)
    })
}

/// Opset 8: every input carries a leading batch axis and the scan runs per batch item.
fn scan8(ctx: &OpCtx) -> Result<BoxOp> {
    let spec = ScanSpec::new(ctx, true)?;
    vop(move |x| {
        if x.get(0).is_some() {
            return Err(x.err("sequence_lens is not supported; scan the full length"));
        }
        let n = x.node.input.len();
        let n_states = n - 1 - spec.n_scan;
        let all: Vec<Tensor> = (1..n).map(|i| x.req_tensor(i).map(Tensor::shallow_clone)).collect::<Result<_>>()?;
        let batch = all[0].size()[0];
        let mut per_item: Vec<Vec<Tensor>> = Vec::new();
        for b in 0..batch {
            let states = all[..n_states]
                .iter()
                .map(|t| t.f_select(0, b).map(Value::Tensor))
                .collect::<std::result::Result<_, _>>()?;
            let inputs: Vec<Tensor> =
                all[n_states..].iter().map(|t| t.f_select(0, b)).collect::<std::result::Result<_, _>>()?;
            let outs = spec.run(x, states, &inputs)?.into_iter().map(Value::into_tensor).collect::<Result<Vec<_>>>()?;
            if per_item.is_empty() {
                per_item = (0..outs.len()).map(|_| Vec::new()).collect();
            }
            for (p, t) in per_item.iter_mut().zip(outs) {
                p.push(t);
            }
        }
        per_item.into_iter().map(|p| Ok(Value::Tensor(Tensor::f_stack(&p, 0)?))).collect()
    })
}

fn sequence_map(ctx: &OpCtx) -> Result<BoxOp> {
    let body = Body::new(ctx, "body")?;
    vop(move |x| {
        let n = x.node.input.len();
        let len = match x.req(0)? {
            Value::Seq(v) => v.len(),
            v => return Err(x.err(format!("input 0 must be a sequence, found {}", v.describe()))),
        };
        let mut outs: Vec<Vec<Value>> = (0..x.node.output.len()).map(|_| Vec::new()).collect();
        for i in 0..len {
            let formal = (0..n)
                .map(|k| match x.req(k)? {
                    Value::Seq(v) if v.len() == len => Ok(v[i].shallow_clone()),
                    Value::Seq(v) => Err(x.err(format!("input {k} has {} items, input 0 has {len}", v.len()))),
                    other => Ok(other.shallow_clone()),
                })
                .collect::<Result<_>>()?;
            for (o, v) in outs.iter_mut().zip(body.run(x, formal)?) {
                o.push(v);
            }
        }
        Ok(outs.into_iter().map(Value::Seq).collect())
    })
}

/// `Gradient(xs…)` with attribute `y`: dy/dx for each x, by autograd. The plan keeps the xs live
/// with requires_grad and passes y as the node's implicit input (after its inputs).
fn gradient(ctx: &OpCtx) -> Result<BoxOp> {
    let xs = ctx.node.get_strings("xs")?.ok_or_else(|| ctx.node.attr_err("xs", "is required"))?;
    if xs.len() != ctx.node.input.len() {
        return Err(ctx.node.attr_err("xs", "must name the node's inputs, in order"));
    }
    ctx.node.get_s("y")?.ok_or_else(|| ctx.node.attr_err("y", "is required"))?;
    vop(move |x| {
        let y = x.req_tensor(x.node.input.len())?;
        let inputs: Vec<Tensor> =
            (0..xs.len()).map(|i| x.req_tensor(i).map(Tensor::shallow_clone)).collect::<Result<_>>()?;
        if !y.requires_grad() {
            return Err(Error::msg("y does not depend on xs through differentiable ops (or grad mode is off)"));
        }
        let grads = Tensor::f_run_backward(&[y], &inputs, true, false)?;
        Ok(grads.into_iter().map(Value::Tensor).collect())
    })
}

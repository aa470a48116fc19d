//! Sequences and optionals: SequenceEmpty/Construct/Insert/At/Erase/Length, SplitToSequence,
//! ConcatFromSequence, Optional, OptionalHasElement, OptionalGetElement.
use crate::engine::registry::{vop, BoxOp, OpCtx, Registry};
use crate::engine::{to_ints, Value, ValueInputs};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::Tensor;

pub fn register(r: &mut Registry) {
    r.add("SequenceEmpty", 11, |_| vop(|_| Ok(vec![Value::Seq(Vec::new())])));
    r.add("SequenceConstruct", 11, |_| {
        vop(|x| {
            Ok(vec![Value::Seq(
                (0..x.node.input.len()).map(|i| x.req(i).map(Value::shallow_clone)).collect::<Result<_>>()?,
            )])
        })
    });
    r.add("SequenceInsert", 11, sequence_insert);
    r.add("SequenceAt", 11, sequence_at);
    r.add("SequenceErase", 11, sequence_erase);
    r.add("SequenceLength", 11, |_| vop(|x| Ok(vec![Value::Tensor(Tensor::from(seq(x, 0)?.len() as i64))])));
    r.add("SplitToSequence", 11, split_to_sequence);
    r.add("ConcatFromSequence", 11, concat_from_sequence);
    r.add("Optional", 15, |_| vop(|x| Ok(vec![Value::Opt(x.get(0).map(|v| Box::new(v.shallow_clone())))])));
    r.add("OptionalHasElement", 15, |_| {
        vop(|x| {
            let has = match x.get(0) {
                None | Some(Value::Opt(None)) => false,
                Some(_) => true,
            };
            Ok(vec![Value::Tensor(Tensor::from(has))])
        })
    });
    r.add("OptionalGetElement", 15, |_| {
        vop(|x| match x.req(0)? {
            Value::Opt(None) => Err(x.err("the optional input is empty")),
            Value::Opt(Some(v)) => Ok(vec![v.shallow_clone()]),
            // Opset 18 accepts a plain tensor or sequence and returns it.
            v => Ok(vec![v.shallow_clone()]),
        })
    });
}

/// Input `i` as a sequence.
fn seq<'a>(x: &ValueInputs<'a>, i: usize) -> Result<&'a [Value]> {
    match x.req(i)? {
        Value::Seq(v) => Ok(v),
        v => Err(x.err(format!("input {i} must be a sequence, found {}", v.describe()))),
    }
}

/// The position input `i` (a scalar), checked against `[-len, len + extra)`; None when absent.
fn position(x: &ValueInputs, i: usize, len: usize, extra: usize) -> Result<Option<usize>> {
    let Some(t) = x.tensor(i)? else { return Ok(None) };
    let p = to_ints(t)?.first().copied().ok_or_else(|| x.err("the position is empty"))?;
    let n = len as i64;
    if p < -n || p >= n + extra as i64 {
        return Err(x.err(format!("position {p} is out of range for a sequence of {len}")));
    }
    Ok(Some(if p < 0 { (p + n) as usize } else { p as usize }))
}

fn sequence_insert(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| {
        let mut items: Vec<Value> = seq(x, 0)?.iter().map(Value::shallow_clone).collect();
        let at = position(x, 2, items.len(), 1)?.unwrap_or(items.len());
        items.insert(at, x.req(1)?.shallow_clone());
        Ok(vec![Value::Seq(items)])
    })
}

fn sequence_at(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| {
        let items = seq(x, 0)?;
        let at = position(x, 1, items.len(), 0)?.ok_or_else(|| x.err("input 1 (position) is required"))?;
        Ok(vec![items[at].shallow_clone()])
    })
}

fn sequence_erase(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| {
        let mut items: Vec<Value> = seq(x, 0)?.iter().map(Value::shallow_clone).collect();
        if items.is_empty() {
            return Err(x.err("cannot erase from an empty sequence"));
        }
        let at = position(x, 1, items.len(), 0)?.unwrap_or(items.len() - 1);
        items.remove(at);
        Ok(vec![Value::Seq(items)])
    })
}

fn split_to_sequence(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.get_i("axis")?.unwrap_or(0);
    let keepdims = ctx.node.get_i("keepdims")?.unwrap_or(1) != 0;
    vop(move |x| {
        let t = x.req_tensor(0)?;
        let a = crate::engine::ops::util::norm_axis_of_shape(&x.as_tensors()?, axis, t.dim())?;
        let len = t.size()[a as usize];
        let parts = match x.tensor(1)? {
            // No split: pieces of 1, the axis dropped unless keepdims.
            None => {
                let v = t.f_split(1, a)?;
                if keepdims {
                    v
                } else {
                    v.iter().map(|p| p.f_squeeze_dim(a)).collect::<std::result::Result<_, _>>()?
                }
            }
            Some(s) if s.dim() == 0 => {
                let n = to_ints(s)?[0];
                if n <= 0 {
                    return Err(x.err(format!("split size {n} must be positive")));
                }
                t.f_split(n, a)?
            }
            Some(s) => {
                let sizes = to_ints(s)?;
                if sizes.iter().sum::<i64>() != len || sizes.iter().any(|&s| s < 0) {
                    return Err(x.err(format!("split sizes {sizes:?} do not add up to {len}")));
                }
                t.f_split_with_sizes(&sizes, a)?
            }
        };
        Ok(vec![Value::Seq(parts.into_iter().map(Value::Tensor).collect())])
    })
}

fn concat_from_sequence(ctx: &OpCtx) -> Result<BoxOp> {
    let axis = ctx.node.req_i("axis")?;
    let new_axis = ctx.node.get_i("new_axis")?.unwrap_or(0) != 0;
    vop(move |x| {
        let items = seq(x, 0)?;
        let ts: Vec<&Tensor> = items
            .iter()
            .map(|v| {
                v.as_tensor().ok_or_else(|| x.err(format!("sequence items must be tensors, found {}", v.describe())))
            })
            .collect::<Result<_>>()?;
        let Some(first) = ts.first() else {
            return Err(x.err("cannot concatenate an empty sequence"));
        };
        // Stacking adds an axis, so one more position is valid.
        let rank = first.dim() as i64 + new_axis as i64;
        let a = if axis < 0 { axis + rank } else { axis };
        if a < 0 || a >= rank {
            return Err(x.err(format!("axis {axis} is out of range for rank {rank}")));
        }
        let out = if new_axis { Tensor::f_stack(&ts, a)? } else { Tensor::f_cat(&ts, a)? };
        Ok(vec![Value::Tensor(out)])
    })
}

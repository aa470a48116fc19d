//! TreeEnsembleRegressor and TreeEnsembleClassifier (ai.onnx.ml 1–5): nodes are keyed by
//! (tree id, node id), leaves are the nodes of mode LEAF, and votes (`target_*` / `class_*`)
//! name their leaf by the same key. Parsed into the shared [`Ensemble`].
use super::{index, post_from_str, same_len, tensor_attr, Agg, Ensemble, Mode, Next, Post, Split};
use crate::engine::{op, vop, BoxOp, OpCtx, Strings, Value};
use crate::error::Result;
use crate::onnx::NodeExt;
use std::collections::{BTreeMap, HashMap, HashSet};
use tch::{Kind, Tensor};

/// A float list attribute, or its `_as_tensor` (double) twin.
fn floats(ctx: &OpCtx, name: &str) -> Result<Option<Vec<f64>>> {
    match ctx.node.get_floats(name)? {
        Some(v) => Ok(Some(v.into_iter().map(f64::from).collect())),
        None => tensor_attr(ctx, &format!("{name}_as_tensor")),
    }
}

fn mode(ctx: &OpCtx, s: &str) -> Result<Option<Mode>> {
    Ok(Some(match s {
        "BRANCH_LEQ" => Mode::Leq,
        "BRANCH_LT" => Mode::Lt,
        "BRANCH_GTE" => Mode::Gte,
        "BRANCH_GT" => Mode::Gt,
        "BRANCH_EQ" => Mode::Eq,
        "BRANCH_NEQ" => Mode::Neq,
        "LEAF" => return Ok(None),
        _ => return Err(ctx.node.attr_err("nodes_modes", format!("unknown mode '{s}'"))),
    }))
}

/// Parses the node lists and the votes (`votes` is "target" or "class") into an ensemble.
fn parse(ctx: &OpCtx, votes: &str, targets: usize, agg: Agg, post: Post) -> Result<Ensemble> {
    let n = ctx.node;
    let trees = n.req_ints("nodes_treeids")?;
    let len = trees.len();
    let ints = |a: &str| -> Result<Vec<i64>> { same_len(ctx, a, n.get_ints(a)?, len) };
    let (ids, features) = (ints("nodes_nodeids")?, ints("nodes_featureids")?);
    let (tids, fids) = (ints("nodes_truenodeids")?, ints("nodes_falsenodeids")?);
    let modes = same_len(ctx, "nodes_modes", n.get_strings("nodes_modes")?, len)?;
    let modes = modes.iter().map(|m| mode(ctx, m)).collect::<Result<Vec<_>>>()?;
    let values = match floats(ctx, "nodes_values")? {
        Some(v) => same_len(ctx, "nodes_values", Some(v), len)?,
        None => vec![0.0; len],
    };
    let nan_true = match n.get_ints("nodes_missing_value_tracks_true")? {
        Some(v) => same_len(ctx, "nodes_missing_value_tracks_true", Some(v), len)?,
        None => vec![0; len],
    };
    // Each node's slot among the splits or the leaves.
    let mut at = HashMap::new();
    let (mut n_splits, mut n_leaves) = (0, 0);
    for i in 0..len {
        let slot = if modes[i].is_some() {
            n_splits += 1;
            Next::Split(n_splits - 1)
        } else {
            n_leaves += 1;
            Next::Leaf(n_leaves - 1)
        };
        if at.insert((trees[i], ids[i]), slot).is_some() {
            return Err(n.attr_err("nodes_nodeids", format!("tree {} lists node {} twice", trees[i], ids[i])));
        }
    }
    let child = |i: usize, id: i64, attr: &str| {
        at.get(&(trees[i], id)).copied().ok_or_else(|| n.attr_err(attr, format!("tree {} has no node {id}", trees[i])))
    };
    let mut splits = Vec::with_capacity(n_splits);
    let mut referenced = HashSet::new();
    for i in 0..len {
        let Some(mode) = modes[i] else { continue };
        referenced.extend([(trees[i], tids[i]), (trees[i], fids[i])]);
        splits.push(Split {
            mode,
            feature: index(ctx, "nodes_featureids", features[i])?,
            value: values[i],
            members: vec![],
            nan_true: nan_true[i] != 0,
            t: child(i, tids[i], "nodes_truenodeids")?,
            f: child(i, fids[i], "nodes_falsenodeids")?,
        });
    }
    // A tree's root is its one node no branch points to; trees run in id order.
    let mut roots = BTreeMap::new();
    for i in (0..len).filter(|&i| !referenced.contains(&(trees[i], ids[i]))) {
        if roots.insert(trees[i], at[&(trees[i], ids[i])]).is_some() {
            return Err(n.attr_err("nodes_treeids", format!("tree {} has more than one root", trees[i])));
        }
    }
    let vt = n.req_ints(&format!("{votes}_treeids"))?;
    let vn = same_len(ctx, &format!("{votes}_nodeids"), n.get_ints(&format!("{votes}_nodeids"))?, vt.len())?;
    let vi = same_len(ctx, &format!("{votes}_ids"), n.get_ints(&format!("{votes}_ids"))?, vt.len())?;
    let vw = same_len(ctx, &format!("{votes}_weights"), floats(ctx, &format!("{votes}_weights"))?, vt.len())?;
    let mut leaves = vec![Vec::new(); n_leaves];
    for k in 0..vt.len() {
        match at.get(&(vt[k], vn[k])) {
            Some(Next::Leaf(l)) => leaves[*l].push((index(ctx, &format!("{votes}_ids"), vi[k])?, vw[k])),
            _ => {
                let why = format!("tree {} has no leaf {}", vt[k], vn[k]);
                return Err(n.attr_err(&format!("{votes}_nodeids"), why));
            }
        }
    }
    let base = floats(ctx, "base_values")?.unwrap_or_default();
    let roots = roots.into_values().collect();
    Ensemble { splits, leaves, roots, targets, agg, base, post }.check(ctx)
}

pub(super) fn regressor(ctx: &OpCtx) -> Result<BoxOp> {
    let agg = match ctx.node.get_s("aggregate_function")?.as_deref().unwrap_or("SUM") {
        "AVERAGE" => Agg::Average,
        "SUM" => Agg::Sum,
        "MIN" => Agg::Min,
        "MAX" => Agg::Max,
        v => return Err(ctx.node.attr_err("aggregate_function", format!("unknown value '{v}'"))),
    };
    let targets = index(ctx, "n_targets", ctx.node.get_i("n_targets")?.unwrap_or(1))?;
    let e = parse(ctx, "target", targets, agg, post_from_str(ctx)?)?;
    op(move |x| {
        let t = x.req(0)?;
        let (y, _, _) = e.run(t, |m| x.err(m))?;
        Ok(vec![y.f_to_kind(Kind::Float)?.f_to_device(t.device())?])
    })
}

enum Labels {
    Ints(Vec<i64>),
    Strs(Vec<String>),
}

/// Classes with at least three labels: scores are summed votes plus base values, the label is
/// the best-scoring class that got a vote (before post_transform, as ONNX Runtime picks it).
/// Two-class models are refused: ONNX Runtime scores them with conventions of its own (one
/// voted class mirrored into two scores, thresholds depending on the signs of all weights).
pub(super) fn classifier(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let (labels, attr) = match (n.get_ints("classlabels_int64s")?, n.get_strings("classlabels_strings")?) {
        (Some(v), None) => (Labels::Ints(v), "classlabels_int64s"),
        (None, Some(v)) => (Labels::Strs(v), "classlabels_strings"),
        _ => return Err(n.attr_err("classlabels_int64s", "exactly one of classlabels_int64s/strings must be set")),
    };
    let classes = match &labels {
        Labels::Ints(v) => v.len(),
        Labels::Strs(v) => v.len(),
    };
    if classes < 3 {
        return Err(n.attr_err(attr, format!("{classes} classes: binary tree classifiers are not supported")));
    }
    let e = parse(ctx, "class", classes, Agg::Sum, post_from_str(ctx)?)?;
    vop(move |x| {
        let t = x.req_tensor(0)?;
        let (z, score, has) = e.run(t, |m| x.err(m))?;
        let best: Vec<usize> = score.chunks(classes).zip(has.chunks(classes)).map(|(s, h)| best_class(s, h)).collect();
        let y = match &labels {
            Labels::Ints(v) => {
                let ys: Vec<i64> = best.iter().map(|&b| v[b]).collect();
                Value::Tensor(Tensor::f_from_slice(&ys)?.f_to_device(t.device())?)
            }
            Labels::Strs(v) => {
                Value::Str(Strings::new(vec![best.len() as i64], best.iter().map(|&b| v[b].clone()).collect())?)
            }
        };
        Ok(vec![y, Value::Tensor(z.f_to_kind(Kind::Float)?.f_to_device(t.device())?)])
    })
}

/// The first class with the highest score among those that got one (class 0 when none did).
fn best_class(score: &[f64], has: &[bool]) -> usize {
    let mut best: Option<usize> = None;
    for (i, (&s, &h)) in score.iter().zip(has).enumerate() {
        if h && best.is_none_or(|b| s > score[b]) {
            best = Some(i);
        }
    }
    best.unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::engine::{OpCtx, Value};
    use crate::engine::{Registry, ValueInputs};
    use crate::onnx::build::{attr_int, attr_ints, attr_string, node};
    use crate::onnx::proto::{AttributeProto, NodeProto};
    use crate::onnx::NodeExt;
    use tch::Tensor;

    fn floats(name: &str, v: &[f32]) -> AttributeProto {
        AttributeProto { name: Some(name.into()), r#type: Some(6), floats: v.to_vec(), ..Default::default() }
    }

    fn strings(name: &str, v: &[&str]) -> AttributeProto {
        let strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
        AttributeProto { name: Some(name.into()), r#type: Some(8), strings, ..Default::default() }
    }

    /// Tree 0: x0 <= 1 ? leaf 1 : (x1 < 0 ? leaf 3 : leaf 4), a NaN x1 going to leaf 3.
    /// Tree 1 (root listed second): x1 > 2 ? leaf 1 : leaf 2.
    /// Votes (target, weight): t0 leaf 1 (0, 1); leaf 3 (0, 2), (1, 0.5); leaf 4 (1, -1);
    /// t1 leaf 1 (0, 10); leaf 2 (`last`, 20).
    fn trees(op: &str, votes: &str, last: i64) -> NodeProto {
        let outputs: &[&str] = if votes == "class" { &["y", "z"] } else { &["y"] };
        let mut n = node(op, &["x"], outputs);
        let leaf = "LEAF";
        n.attribute = vec![
            attr_ints("nodes_treeids", &[0, 0, 0, 0, 0, 1, 1, 1]),
            attr_ints("nodes_nodeids", &[0, 1, 2, 3, 4, 1, 0, 2]),
            attr_ints("nodes_featureids", &[0, 0, 1, 0, 0, 0, 1, 0]),
            strings("nodes_modes", &["BRANCH_LEQ", leaf, "BRANCH_LT", leaf, leaf, leaf, "BRANCH_GT", leaf]),
            floats("nodes_values", &[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]),
            attr_ints("nodes_truenodeids", &[1, 0, 3, 0, 0, 0, 1, 0]),
            attr_ints("nodes_falsenodeids", &[2, 0, 4, 0, 0, 0, 2, 0]),
            attr_ints("nodes_missing_value_tracks_true", &[0, 0, 1, 0, 0, 0, 0, 0]),
            attr_ints(&format!("{votes}_treeids"), &[0, 0, 0, 0, 1, 1]),
            attr_ints(&format!("{votes}_nodeids"), &[1, 3, 3, 4, 1, 2]),
            attr_ints(&format!("{votes}_ids"), &[0, 0, 1, 1, 0, last]),
            floats(&format!("{votes}_weights"), &[1.0, 2.0, 0.5, -1.0, 10.0, 20.0]),
        ];
        n
    }

    fn run(n: &NodeProto, x: &[f32]) -> Vec<Value> {
        let build = Registry::standard().find("ai.onnx.ml", n.op_type(), 3).expect("registered");
        let op = build(&OpCtx::new(n, 3)).expect("builds");
        let x = Value::Tensor(Tensor::from_slice(x).reshape([-1, 2]));
        op.run_values(&ValueInputs { node: n, vals: vec![Some(&x)] }).expect("runs")
    }

    fn floats_of(v: &Value) -> Vec<f32> {
        Vec::<f32>::try_from(&v.as_tensor().expect("tensor").reshape([-1])).unwrap()
    }

    const X: [f32; 6] = [0.0, 5.0, 3.0, -1.0, 3.0, f32::NAN];

    #[test]
    fn regressor_by_hand() {
        let mut n = trees("TreeEnsembleRegressor", "target", 1);
        n.attribute.extend([attr_int("n_targets", 2), floats("base_values", &[100.0, 200.0])]);
        // Row 0: t0 leaf 1, t1 leaf 1 → [1 + 10, 0]; row 1: t0 leaf 3, t1 leaf 2 → [2, 0.5 + 20];
        // row 2: NaN x1 takes leaf 3 in tree 0, and NaN > 2 is false in tree 1 → as row 1.
        assert_eq!(floats_of(&run(&n, &X)[0]), [111.0, 200.0, 102.0, 220.5, 102.0, 220.5]);
        n.attribute.push(attr_string("aggregate_function", "AVERAGE"));
        assert_eq!(floats_of(&run(&n, &X)[0]), [105.5, 200.0, 101.0, 210.25, 101.0, 210.25]);
        n.attribute.pop();
        n.attribute.push(attr_string("aggregate_function", "MIN"));
        assert_eq!(floats_of(&run(&n, &X)[0]), [101.0, 200.0, 102.0, 200.5, 102.0, 200.5]);
    }

    #[test]
    fn classifier_by_hand() {
        let mut n = trees("TreeEnsembleClassifier", "class", 2);
        n.attribute.push(attr_ints("classlabels_int64s", &[7, 8, 9]));
        let y = run(&n, &X);
        // Row 0 scores [11, 0, 0] (only class 0 voted); rows 1-2 [2, 0.5, 20].
        assert_eq!(Vec::<i64>::try_from(y[0].as_tensor().unwrap()).unwrap(), [7, 9, 9]);
        assert_eq!(floats_of(&y[1]), [11.0, 0.0, 0.0, 2.0, 0.5, 20.0, 2.0, 0.5, 20.0]);
        n.attribute.push(attr_string("post_transform", "SOFTMAX"));
        let z = floats_of(&run(&n, &X)[1]);
        assert!((z[0] + z[1] + z[2] - 1.0).abs() < 1e-6 && z[0] > 0.99);
        // Two classes: ONNX Runtime's binary conventions are not implemented.
        let labels = n.attribute.len() - 2;
        n.attribute[labels] = attr_ints("classlabels_int64s", &[0, 1]);
        let build = Registry::standard().find("ai.onnx.ml", n.op_type(), 3).expect("registered");
        let err = build(&OpCtx::new(&n, 3)).err().expect("refused").to_string();
        assert!(err.contains("binary") && err.contains(&n.label()), "{err}");
    }
}

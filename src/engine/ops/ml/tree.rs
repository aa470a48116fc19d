//! Tree ensembles of ai.onnx.ml: TreeEnsemble (opset 5) and the older TreeEnsembleRegressor and
//! TreeEnsembleClassifier, all parsed into one [`Ensemble`] and evaluated on the CPU in f64
//! (f32 and f64 thresholds compare exactly there).
//!
//! Scoring: each tree's leaf votes are aggregated per target (SUM, AVERAGE over the trees, MIN,
//! MAX; a target no leaf voted for scores 0), base values are added, then post_transform runs.
//! Checked against ONNX Runtime 1.31, which agrees except where it departs from the spec: for
//! TreeEnsemble it swaps post_transform 1 (SOFTMAX) and 2 (LOGISTIC); with several targets it
//! drops the base value of a target no leaf voted for; with one target it applies only PROBIT
//! and reads only a leaf's first vote; and its PROBIT uses an approximate erfinv (here: exact).
use super::tensor_attr;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::{Error, Result};
use crate::onnx::NodeExt;
use tch::{Device, Kind, Tensor};

mod legacy;

const ML: &str = "ai.onnx.ml";

pub fn register(r: &mut Registry) {
    r.add_range(ML, "TreeEnsemble", 5, i64::MAX, tree_ensemble);
    r.add_range(ML, "TreeEnsembleRegressor", 1, i64::MAX, legacy::regressor);
    r.add_range(ML, "TreeEnsembleClassifier", 1, i64::MAX, legacy::classifier);
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Next {
    Split(usize),
    Leaf(usize),
}

#[derive(Debug)]
struct Split {
    mode: Mode,
    feature: usize,
    value: f64,
    /// The set of a BRANCH_MEMBER node.
    members: Vec<f64>,
    /// A NaN feature takes the true branch (otherwise NaN compares as IEEE says).
    nan_true: bool,
    t: Next,
    f: Next,
}

impl Split {
    fn goes_true(&self, v: f64) -> bool {
        (self.nan_true && v.is_nan())
            || match self.mode {
                Mode::Leq => v <= self.value,
                Mode::Lt => v < self.value,
                Mode::Gte => v >= self.value,
                Mode::Gt => v > self.value,
                Mode::Eq => v == self.value,
                Mode::Neq => v != self.value,
                Mode::Member => self.members.contains(&v),
            }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Agg {
    Average,
    Sum,
    Min,
    Max,
}

#[derive(Clone, Copy, Debug)]
enum Post {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

#[derive(Debug)]
struct Ensemble {
    splits: Vec<Split>,
    /// Each leaf's votes: (target, weight).
    leaves: Vec<Vec<(usize, f64)>>,
    roots: Vec<Next>,
    targets: usize,
    agg: Agg,
    /// Added to every row's scores: empty or one value per target.
    base: Vec<f64>,
    post: Post,
}

/// A list attribute index as usize, with a clear error for negative values.
fn index(ctx: &OpCtx, attr: &str, v: i64) -> Result<usize> {
    usize::try_from(v).map_err(|_| ctx.node.attr_err(attr, format!("has a negative index {v}")))
}

/// Required list attributes of one length (`len`, or that of the first one read when None).
fn same_len<T>(ctx: &OpCtx, attr: &str, v: Option<Vec<T>>, len: usize) -> Result<Vec<T>> {
    let v = v.ok_or_else(|| ctx.node.attr_err(attr, "required attribute is missing"))?;
    if v.len() != len {
        return Err(ctx.node.attr_err(attr, format!("has {} entries, expected {len}", v.len())));
    }
    Ok(v)
}

impl Ensemble {
    /// Checks every index once at build time, so evaluation cannot go out of bounds.
    fn check(self, ctx: &OpCtx) -> Result<Self> {
        let bad = |attr: &str, what: String| Err(ctx.node.attr_err(attr, what));
        let ok = |n: Next| match n {
            Next::Split(i) => i < self.splits.len(),
            Next::Leaf(i) => i < self.leaves.len(),
        };
        if let Some(s) = self.splits.iter().find(|s| !ok(s.t) || !ok(s.f)) {
            return bad(
                "nodes_truenodeids",
                format!("a branch points past the nodes or leaves: {:?} / {:?}", s.t, s.f),
            );
        }
        if let Some(r) = self.roots.iter().find(|&&r| !ok(r)) {
            return bad("tree_roots", format!("root {r:?} is out of range"));
        }
        if let Some((t, _)) = self.leaves.iter().flatten().find(|(t, _)| *t >= self.targets) {
            return bad("n_targets", format!("a leaf votes for target {t} of {}", self.targets));
        }
        if !self.base.is_empty() && self.base.len() != self.targets {
            return bad("base_values", format!("{} values for {} targets", self.base.len(), self.targets));
        }
        Ok(self)
    }

    fn features(&self) -> usize {
        self.splits.iter().map(|s| s.feature + 1).max().unwrap_or(0)
    }

    fn walk(&self, mut at: Next, row: &[f64]) -> std::result::Result<usize, String> {
        // A well-formed tree reaches a leaf in fewer steps than it has nodes.
        for _ in 0..=self.splits.len() {
            match at {
                Next::Leaf(l) => return Ok(l),
                Next::Split(i) => {
                    let s = &self.splits[i];
                    at = if s.goes_true(row[s.feature]) { s.t } else { s.f };
                }
            }
        }
        Err("a tree has a cycle".into())
    }

    /// Scores [rows × targets] of X (row-major, `cols` features) after aggregation and base
    /// values, and whether each score got a vote or a base value.
    fn scores(&self, x: &[f64], cols: usize) -> std::result::Result<(Vec<f64>, Vec<bool>), String> {
        if cols < self.features() {
            return Err(format!("X has {cols} features, the trees read feature {}", self.features() - 1));
        }
        let rows = x.len().checked_div(cols).unwrap_or(0);
        let t = self.targets;
        let (mut score, mut has) = (vec![0.0; rows * t], vec![false; rows * t]);
        for r in 0..rows {
            let row = &x[r * cols..(r + 1) * cols];
            for &root in &self.roots {
                for &(k, w) in &self.leaves[self.walk(root, row)?] {
                    let (s, h) = (&mut score[r * t + k], &mut has[r * t + k]);
                    *s = match self.agg {
                        Agg::Sum | Agg::Average => *s + w,
                        Agg::Min if *h && *s <= w => *s,
                        Agg::Max if *h && *s >= w => *s,
                        Agg::Min | Agg::Max => w,
                    };
                    *h = true;
                }
            }
        }
        for (i, s) in score.iter_mut().enumerate() {
            if self.agg == Agg::Average {
                *s /= self.roots.len().max(1) as f64;
            }
            if let Some(b) = self.base.get(i % t) {
                *s += b;
                has[i] = true;
            }
        }
        Ok((score, has))
    }

    /// Runs X (`[N, F]`, or `[F]` as one row) to post-transformed scores `[N, targets]` (f64, CPU)
    /// and the raw scores' has-vote flags.
    /// `err` names the node in errors about X.
    fn run(&self, x: &Tensor, err: impl Fn(String) -> Error) -> Result<(Tensor, Vec<f64>, Vec<bool>)> {
        let size = x.size();
        let cols = match size.as_slice() {
            [f] | [_, f] => *f as usize,
            _ => return Err(err(format!("X must be [N, F], got {size:?}"))),
        };
        let flat = x.f_to_device(Device::Cpu)?.f_to_kind(Kind::Double)?.f_reshape([-1])?;
        let data = Vec::<f64>::try_from(&flat)?;
        let (score, has) = self.scores(&data, cols).map_err(err)?;
        let rows = data.len().checked_div(cols).unwrap_or(0) as i64;
        let y = post_transform(Tensor::f_from_slice(&score)?.f_reshape([rows, self.targets as i64])?, self.post)?;
        Ok((y, score, has))
    }
}

fn post_transform(y: Tensor, post: Post) -> Result<Tensor> {
    Ok(match post {
        Post::None => y,
        Post::Logistic => y.f_sigmoid()?,
        Post::Softmax => y.f_softmax(-1, Kind::Double)?,
        // Softmax over the non-zero scores; (near-)zero scores stay (near) zero.
        Post::SoftmaxZero => {
            let max = y.f_amax([-1i64], true)?;
            let keep = y.f_abs()?.f_gt(1e-7)?;
            let e = y.f_sub(&max)?.f_exp()?.f_where_self(&keep, &y.f_mul(&max.f_neg()?.f_exp()?)?)?;
            let sum = e.f_mul(&keep)?.f_sum_dim_intlist(&[-1i64][..], true, Kind::Double)?;
            e.f_div(&sum)?
        }
        Post::Probit => y.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_erfinv()?.f_mul_scalar(std::f64::consts::SQRT_2)?,
    })
}

fn post_from_int(ctx: &OpCtx) -> Result<Post> {
    Ok(match ctx.node.get_i("post_transform")?.unwrap_or(0) {
        0 => Post::None,
        1 => Post::Softmax,
        2 => Post::Logistic,
        3 => Post::SoftmaxZero,
        4 => Post::Probit,
        v => return Err(ctx.node.attr_err("post_transform", format!("unknown value {v}"))),
    })
}

fn post_from_str(ctx: &OpCtx) -> Result<Post> {
    Ok(match ctx.node.get_s("post_transform")?.as_deref().unwrap_or("NONE") {
        "NONE" => Post::None,
        "SOFTMAX" => Post::Softmax,
        "LOGISTIC" => Post::Logistic,
        "SOFTMAX_ZERO" => Post::SoftmaxZero,
        "PROBIT" => Post::Probit,
        v => return Err(ctx.node.attr_err("post_transform", format!("unknown value '{v}'"))),
    })
}

/// TreeEnsemble (ai.onnx.ml 5): interior nodes in `nodes_*`, leaves in `leaf_*`; a branch
/// points to either, as `nodes_trueleafs`/`nodes_falseleafs` say.
fn tree_ensemble(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    let features = n.req_ints("nodes_featureids")?;
    let len = features.len();
    let ints = |a: &str| -> Result<Vec<i64>> { same_len(ctx, a, n.get_ints(a)?, len) };
    let (tids, fids, tleaf, fleaf) =
        (ints("nodes_truenodeids")?, ints("nodes_falsenodeids")?, ints("nodes_trueleafs")?, ints("nodes_falseleafs")?);
    let modes = same_len(ctx, "nodes_modes", tensor_attr(ctx, "nodes_modes")?, len)?;
    let values = same_len(ctx, "nodes_splits", tensor_attr(ctx, "nodes_splits")?, len)?;
    let nan_true = match n.get_ints("nodes_missing_value_tracks_true")? {
        Some(v) => same_len(ctx, "nodes_missing_value_tracks_true", Some(v), len)?,
        None => vec![0; len],
    };
    // The sets of the BRANCH_MEMBER nodes, in node order, each ended by a NaN.
    let mut members = tensor_attr(ctx, "membership_values")?.unwrap_or_default().into_iter();
    let next = |leaf: i64, id: i64, attr: &str| -> Result<Next> {
        let i = index(ctx, attr, id)?;
        Ok(if leaf != 0 { Next::Leaf(i) } else { Next::Split(i) })
    };
    let mut splits = Vec::with_capacity(len);
    for i in 0..len {
        let mode = match modes[i] as i64 {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            m => return Err(n.attr_err("nodes_modes", format!("unknown mode {m}"))),
        };
        let set = match mode {
            Mode::Member => members.by_ref().take_while(|v| !v.is_nan()).collect(),
            _ => vec![],
        };
        splits.push(Split {
            mode,
            feature: index(ctx, "nodes_featureids", features[i])?,
            value: values[i],
            members: set,
            nan_true: nan_true[i] != 0,
            t: next(tleaf[i], tids[i], "nodes_truenodeids")?,
            f: next(fleaf[i], fids[i], "nodes_falsenodeids")?,
        });
    }
    if members.next().is_some() {
        return Err(n.attr_err("membership_values", "holds more sets than there are BRANCH_MEMBER nodes"));
    }
    let targets = n.req_ints("leaf_targetids")?;
    let weights = same_len(ctx, "leaf_weights", tensor_attr(ctx, "leaf_weights")?, targets.len())?;
    let leaves = targets
        .iter()
        .zip(&weights)
        .map(|(&t, &w)| Ok(vec![(index(ctx, "leaf_targetids", t)?, w)]))
        .collect::<Result<_>>()?;
    let roots = n
        .req_ints("tree_roots")?
        .iter()
        .map(|&r| Ok(Next::Split(index(ctx, "tree_roots", r)?)))
        .collect::<Result<_>>()?;
    let agg = match n.get_i("aggregate_function")?.unwrap_or(1) {
        0 => Agg::Average,
        1 => Agg::Sum,
        2 => Agg::Min,
        3 => Agg::Max,
        v => return Err(n.attr_err("aggregate_function", format!("unknown value {v}"))),
    };
    let targets = index(ctx, "n_targets", n.req_i("n_targets")?)?;
    let e = Ensemble { splits, leaves, roots, targets, agg, base: vec![], post: post_from_int(ctx)? }.check(ctx)?;
    op(move |x| {
        let t = x.req(0)?;
        if !matches!(t.kind(), Kind::Float | Kind::Double | Kind::Half) {
            return Err(x.err(format!("X must be float, double or float16, got {:?}", t.kind())));
        }
        let (y, _, _) = e.run(t, |m| x.err(m))?;
        Ok(vec![y.f_to_kind(t.kind())?.f_to_device(t.device())?])
    })
}

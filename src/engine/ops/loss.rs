//! Training losses: NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss, with class weights,
//! `ignore_index` and the none/sum/mean reductions. Both stay differentiable in their float
//! inputs (scores/log-probabilities and weights).
use crate::engine::{op, BoxOp, Inputs, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

#[derive(Clone, Copy)]
enum Reduction {
    None,
    Sum,
    Mean,
}

#[derive(Clone, Copy)]
struct LossAttrs {
    reduction: Reduction,
    ignore: Option<i64>,
}

impl LossAttrs {
    fn parse(ctx: &OpCtx) -> Result<Self> {
        let reduction = match ctx.node.get_s("reduction")?.as_deref().unwrap_or("mean") {
            "none" => Reduction::None,
            "sum" => Reduction::Sum,
            "mean" => Reduction::Mean,
            r => return Err(ctx.node.attr_err("reduction", format!("must be none, sum or mean, got '{r}'"))),
        };
        Ok(LossAttrs { reduction, ignore: ctx.node.get_i("ignore_index")? })
    }

    /// The loss of log-probabilities `logp` (N, C, d…) at class labels `target` (N, d…): the
    /// per-sample `-logp[n, target, d…] · weight[target]`, zero where the label is `ignore_index`;
    /// "mean" divides the sum by the total weight of the samples kept (their count if unweighted).
    fn nll(&self, x: &Inputs, logp: &Tensor, target: &Tensor, weight: Option<&Tensor>) -> Result<Tensor> {
        let (ls, ts) = (logp.size(), target.size());
        if ls.len() < 2 || ts.len() + 1 != ls.len() || ts[0] != ls[0] || ts[1..] != ls[2..] {
            return Err(x.err(format!("input {ls:?} (N, C, d…) does not fit target {ts:?} (N, d…)")));
        }
        let target = target.f_to_kind(Kind::Int64)?;
        let keep = match self.ignore {
            Some(i) => target.f_ne(i)?,
            None => target.f_ones_like()?.f_to_kind(Kind::Bool)?,
        };
        // Ignored labels may lie outside [0, C): gather class 0 for them, then mask.
        let idx = target.f_where_scalarother(&keep, 0)?;
        // Checked here: an out-of-range gather index is a fatal device-side assert on CUDA.
        let bad = idx.f_lt(0)?.f_logical_or(&idx.f_ge(ls[1])?)?.f_any()?;
        if bad.f_int64_value(&[])? != 0 {
            return Err(x.err(format!("a label is outside [0, {}) and is not ignore_index", ls[1])));
        }
        let picked = logp.f_gather(1, &idx.f_unsqueeze(1)?, false)?.f_squeeze_dim(1)?;
        let w = match weight {
            Some(w) => w.f_take(&idx)?.f_to_kind(logp.kind())?,
            None => picked.f_ones_like()?.f_detach()?,
        };
        let w = w.f_where_scalarother(&keep, 0.0)?;
        // `where`, not a product, so that a -inf at an ignored position cannot make a NaN.
        let loss = picked.f_neg()?.f_mul(&w)?.f_where_scalarother(&keep, 0.0)?;
        let kind = Some(loss.kind());
        Ok(match self.reduction {
            Reduction::None => loss,
            Reduction::Sum => loss.f_sum(kind)?,
            Reduction::Mean => loss.f_sum(kind)?.f_div(&w.f_sum(kind)?)?,
        })
    }
}

fn nll_loss(ctx: &OpCtx) -> Result<BoxOp> {
    let a = LossAttrs::parse(ctx)?;
    op(move |x| Ok(vec![a.nll(x, x.req(0)?, x.req(1)?, x.get(2))?]))
}

/// NLL of the log-softmax over the class axis (1); the optional second output is that log_prob.
fn softmax_cross_entropy(ctx: &OpCtx) -> Result<BoxOp> {
    let a = LossAttrs::parse(ctx)?;
    op(move |x| {
        let scores = x.req(0)?;
        if scores.dim() < 2 {
            return Err(x.err(format!("scores must be (N, C, d…), got {:?}", scores.size())));
        }
        let logp = scores.f_log_softmax(1, None::<Kind>)?;
        let loss = a.nll(x, &logp, x.req(1)?, x.get(2))?;
        let mut outs = vec![loss];
        if x.node.output.get(1).is_some_and(|o| !o.is_empty()) {
            outs.push(logp);
        }
        Ok(outs)
    })
}

pub fn register(r: &mut Registry) {
    r.add("NegativeLogLikelihoodLoss", 12, nll_loss);
    r.add("SoftmaxCrossEntropyLoss", 12, softmax_cross_entropy);
}

//! NonMaxSuppression (opset 10/11): greedy per batch and class, on host copies of the boxes and
//! scores (the output is int64 indices, nothing to differentiate).
use super::sample::host_f64;
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// A box as (x_min, x_max, y_min, y_max).
type Span = (f64, f64, f64, f64);

/// Corners `[y1, x1, y2, x2]` in any diagonal order, or `[x_c, y_c, w, h]` with center_point_box.
fn span(b: &[f64], center: bool) -> Span {
    if center {
        (b[0] - b[2] / 2.0, b[0] + b[2] / 2.0, b[1] - b[3] / 2.0, b[1] + b[3] / 2.0)
    } else {
        (b[1].min(b[3]), b[1].max(b[3]), b[0].min(b[2]), b[0].max(b[2]))
    }
}

/// True when the boxes overlap with IoU strictly above the threshold; degenerate boxes never do.
fn suppresses(a: Span, b: Span, iou: f64) -> bool {
    let (w, h) = (a.1.min(b.1) - a.0.max(b.0), a.3.min(b.3) - a.2.max(b.2));
    if w <= 0.0 || h <= 0.0 {
        return false;
    }
    let inter = w * h;
    let (area_a, area_b) = ((a.1 - a.0) * (a.3 - a.2), (b.1 - b.0) * (b.3 - b.2));
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > iou
}

fn nms(ctx: &OpCtx) -> Result<BoxOp> {
    let center = match ctx.node.get_i("center_point_box")?.unwrap_or(0) {
        0 => false,
        1 => true,
        v => return Err(ctx.node.attr_err("center_point_box", format!("must be 0 or 1, got {v}"))),
    };
    op(move |x| {
        let (boxes, scores) = (x.req(0)?, x.req(1)?);
        let (bs, ss) = (boxes.size(), scores.size());
        if bs.len() != 3 || bs[2] != 4 || ss.len() != 3 || ss[0] != bs[0] || ss[2] != bs[1] {
            return Err(x.err(format!("want boxes [B, N, 4] and scores [B, C, N], got {bs:?} and {ss:?}")));
        }
        // Absent max_output_boxes_per_class means 0: nothing is selected.
        let max_out = x.ints(2)?.and_then(|v| v.first().copied()).unwrap_or(0).max(0) as usize;
        let iou = x.scalar(3)?.unwrap_or(0.0);
        let min_score = x.scalar(4)?;
        let (nb, nc, n) = (bs[0] as usize, ss[1] as usize, bs[1] as usize);
        let (bx, sc) = (host_f64(boxes)?, host_f64(scores)?);
        let mut sel: Vec<i64> = Vec::new();
        for b in 0..nb {
            let spans: Vec<Span> = (0..n).map(|i| span(&bx[(b * n + i) * 4..][..4], center)).collect();
            for c in 0..nc {
                let s = &sc[(b * nc + c) * n..][..n];
                let mut order: Vec<usize> = (0..n).filter(|&i| min_score.is_none_or(|t| s[i] > t)).collect();
                // Highest score first; the stable sort keeps ties in index order.
                order.sort_by(|&i, &j| s[j].total_cmp(&s[i]));
                let mut kept: Vec<usize> = Vec::new();
                for i in order {
                    if kept.len() >= max_out {
                        break;
                    }
                    if !kept.iter().any(|&k| suppresses(spans[i], spans[k], iou)) {
                        kept.push(i);
                        sel.extend([b as i64, c as i64, i as i64]);
                    }
                }
            }
        }
        let t = Tensor::f_from_slice(&sel)?.f_reshape([-1, 3])?.f_to_kind(Kind::Int64)?;
        Ok(vec![t.f_to_device(boxes.device())?])
    })
}

pub fn register(r: &mut Registry) {
    r.add("NonMaxSuppression", 10, nms);
}

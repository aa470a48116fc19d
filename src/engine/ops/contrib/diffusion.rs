//! What onnxruntime's unet fusion (`optimize_model(model_type="unet")`) writes around a diffusers
//! UNet besides GroupNorm, BiasAdd and BiasSplitGelu: NhwcConv (every Conv, channels last, with
//! Transposes around the chain) and SkipGroupNorm (the resnet's `h + temb` Add fused into the next
//! GroupNorm). onnxruntime runs both only on CUDA; its kernels define the semantics used here.
use super::{add, attr_f, flag, positive};
use crate::engine::ops::conv::{torch_pads, Window};
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;

/// Conv on X [N, D…, C] with W [M, k…, C/group] (the weight's channels last too); Y [N, D'…, M].
fn nhwc_conv(ctx: &OpCtx) -> Result<BoxOp> {
    let win = Window::parse(ctx.node)?;
    let group = match ctx.node.get_i("group")?.unwrap_or(1) {
        g if g >= 1 => g,
        g => return Err(ctx.node.attr_err("group", format!("must be >= 1, got {g}"))),
    };
    let kshape = ctx.node.get_ints("kernel_shape")?;
    op(move |x| {
        let (input, w) = (x.req(0)?, x.req(1)?);
        if input.dim() < 3 || w.dim() != input.dim() {
            return Err(x.err(format!(
                "expected X [N, D…, C] and W [M, k…, C/group] of the same rank, got {:?} and {:?}",
                input.size(),
                w.size()
            )));
        }
        // libtorch convolves channels first: move C (and the weight's C/group) to dim 1.
        let (input, w) = (input.f_movedim(-1, 1)?, w.f_movedim(-1, 1)?);
        let kernel = w.size()[2..].to_vec();
        if kshape.as_ref().is_some_and(|k| *k != kernel) {
            return Err(x.err(format!("kernel_shape {kshape:?} does not match the weight's kernel {kernel:?}")));
        }
        let g = win.geom(x, &input.size()[2..], &kernel)?;
        let zeros = vec![0; kernel.len()];
        let (input, pad) = if g.begin == g.end {
            (input, g.begin.clone())
        } else {
            (input.f_constant_pad_nd(torch_pads(&g.begin, &g.end))?, zeros.clone())
        };
        let y = input.f_convolution(&w, x.get(2), &g.strides, &pad, &g.dilations, false, &zeros, group)?;
        Ok(vec![y.f_movedim(1, -1)?])
    })
}

/// S = X + skip (+ bias), Y = GroupNorm(S) (then SiLU if `activation` = 1), both [N, H, W, C];
/// skip is [N, H, W, C], [N, 1, 1, C] or [N, C]. Outputs Y and, when asked, S.
fn skip_group_norm(ctx: &OpCtx) -> Result<BoxOp> {
    let groups = positive(ctx, "groups")?;
    let eps = attr_f(ctx, "epsilon", 1e-5)?;
    if !flag(ctx, "channels_last", true)? {
        return Err(ctx.node.attr_err("channels_last", "must be 1 (onnxruntime's SkipGroupNorm is NHWC only)"));
    }
    let silu = match ctx.node.req_i("activation")? {
        0 => false,
        1 => true,
        v => return Err(ctx.node.attr_err("activation", format!("must be 0 (none) or 1 (SiLU), got {v}"))),
    };
    op(move |x| {
        let t = x.req(0)?;
        let size = t.size();
        if size.len() != 4 {
            return Err(x.err(format!("X {size:?} must be [N, H, W, C]")));
        }
        let (n, c) = (size[0], size[3]);
        let skip = x.req(3)?;
        let skip = match skip.size().as_slice() {
            s if *s == size[..] || *s == [n, 1, 1, c] => skip.shallow_clone(),
            [a, b] if *a == n && *b == c => skip.f_reshape([n, 1, 1, c])?,
            s => return Err(x.err(format!("skip {s:?} must be {size:?}, [{n}, 1, 1, {c}] or [{n}, {c}]"))),
        };
        let mut sum = t.f_add(&skip)?;
        if let Some(b) = x.get(4) {
            if b.size() != [c] {
                return Err(x.err(format!("bias {:?} must be [{c}]", b.size())));
            }
            sum = sum.f_add(b)?;
        }
        let y = super::norm::group_norm_of(x, &sum, groups, eps, silu, true)?;
        Ok(vec![y, sum])
    })
}

pub fn register(r: &mut Registry) {
    add(r, "NhwcConv", nhwc_conv);
    add(r, "SkipGroupNorm", skip_group_norm);
}

//! Type conversion and pass-through ops: Cast, CastLike, Identity, Dropout (inference).
use crate::engine::convert::kind_of;
use crate::engine::{op, vop, BoxOp, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::{DType, NodeExt};
use tch::{Kind, Tensor};

/// Converts to the libtorch kind holding `to`. Unsigned types libtorch lacks live widened
/// (u16 in i32, u32 in i64), so casts into them wrap to the narrow range like a real cast would.
fn cast_to(x: &Tensor, to: DType) -> Result<Tensor> {
    let kind = kind_of(to)?;
    let y = if x.kind() == kind { x.shallow_clone() } else { x.f_to_kind(kind)? };
    Ok(match to {
        DType::U16 => y.f_bitwise_and(0xFFFF_i64)?,
        DType::U32 => y.f_bitwise_and(0xFFFF_FFFF_i64)?,
        _ => y,
    })
}

/// The `to` attribute: a `DataType` code, or (opsets < 6) the type's name.
fn target(ctx: &OpCtx) -> Result<DType> {
    let code = if ctx.opset < 6 {
        let name = ctx.node.get_s("to")?.ok_or_else(|| ctx.node.attr_err("to", "required attribute is missing"))?;
        let names = ["FLOAT", "UINT8", "INT8", "UINT16", "INT16", "INT32", "INT64", "STRING", "BOOL", "FLOAT16"];
        let more = ["DOUBLE", "UINT32", "UINT64", "COMPLEX64", "COMPLEX128", "BFLOAT16"];
        let pos = names.iter().chain(&more).position(|n| n.eq_ignore_ascii_case(&name));
        pos.map(|p| p as i64 + 1).ok_or_else(|| ctx.node.attr_err("to", format!("unknown type name '{name}'")))?
    } else {
        ctx.node.req_i("to")?
    };
    i32::try_from(code)
        .ok()
        .and_then(|c| DType::from_onnx(c).ok())
        .ok_or_else(|| ctx.node.attr_err("to", format!("unknown ONNX data type {code}")))
}

fn cast(ctx: &OpCtx) -> Result<BoxOp> {
    let to = target(ctx)?;
    if kind_of(to).is_err() || matches!(to, DType::C64 | DType::C128) {
        return Err(ctx.node.attr_err("to", format!("casting to {to} is not supported")));
    }
    op(move |x| Ok(vec![cast_to(x.req(0)?, to)?]))
}

/// CastLike(input, target_type): the target's element type, its values unused.
fn cast_like(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let (t, like) = (x.req(0)?, x.req(1)?);
        Ok(vec![if t.kind() == like.kind() { t.shallow_clone() } else { t.f_to_kind(like.kind())? }])
    })
}

/// Identity passes any value through: tensors, sequences, optionals, strings.
fn identity(_: &OpCtx) -> Result<BoxOp> {
    vop(|x| Ok(vec![x.req(0)?.shallow_clone()]))
}

/// Inference-mode Dropout: the output is the input, the optional mask all true (bool from
/// opset 10, the input's type before). Training mode (with a non-zero ratio) would need randomness
/// the engine does not model, so it is refused: `is_test=0` (opsets < 7) or a true `training_mode`.
fn dropout(ctx: &OpCtx) -> Result<BoxOp> {
    if ctx.opset < 7 && ctx.node.get_i("is_test")?.unwrap_or(0) == 0 {
        return Err(ctx.node.attr_err("is_test", "training-mode Dropout (is_test=0) is unsupported"));
    }
    let bool_mask = ctx.opset >= 10;
    op(move |x| {
        let data = x.req(0)?;
        // Training with ratio 0 drops nothing, so it is the identity too.
        let training = x.scalar(2)?.is_some_and(|t| t != 0.0);
        if training && x.scalar(1)?.unwrap_or(0.5) != 0.0 {
            return Err(x.err("training-mode Dropout (training_mode=true) is unsupported"));
        }
        let mut outs = vec![data.shallow_clone()];
        if x.node.output.len() > 1 {
            let kind = if bool_mask { Kind::Bool } else { data.kind() };
            outs.push(data.f_ones_like()?.f_to_kind(kind)?);
        }
        Ok(outs)
    })
}

pub fn register(r: &mut Registry) {
    r.add("Cast", 1, cast);
    r.add("CastLike", 15, cast_like);
    r.add("Identity", 1, identity);
    r.add("Dropout", 1, dropout);
}

//! Element-wise unary and binary math (numpy broadcasting, as libtorch does it).
use crate::engine::{op, BoxOp, OpCtx, Registry};
use crate::error::Result;
use tch::Tensor;

type Unary = fn(&Tensor) -> Result<Tensor, tch::TchError>;
type Binary = fn(&Tensor, &Tensor) -> Result<Tensor, tch::TchError>;

fn unary(f: Unary) -> Result<BoxOp> {
    op(move |x| Ok(vec![f(x.req(0)?)?]))
}

fn binary(f: Binary) -> Result<BoxOp> {
    op(move |x| Ok(vec![f(x.req(0)?, x.req(1)?)?]))
}

pub fn register(r: &mut Registry) {
    r.add("Relu", 1, |_| unary(Tensor::f_relu));
    r.add("Abs", 1, |_| unary(Tensor::f_abs));
    r.add("Neg", 1, |_| unary(Tensor::f_neg));
    r.add("Exp", 1, |_| unary(Tensor::f_exp));
    r.add("Add", 1, |_| binary(Tensor::f_add));
    r.add("Sub", 1, |_| binary(Tensor::f_sub));
    r.add("Mul", 1, |_| binary(Tensor::f_mul));
}

#[allow(dead_code)]
fn _ctx_unused(_: &OpCtx) {}

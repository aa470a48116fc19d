//! Matrix products: Gemm, MatMul (numpy semantics, batched, 1-D operands), MatMulInteger and
//! Einsum.
use crate::engine::{op, precision, BoxOp, Inputs, LowRank, Op, OpCtx, Registry};
use crate::error::Result;
use crate::onnx::NodeExt;
use tch::{Kind, Tensor};

/// Y = alpha · op(A) · op(B) + beta · C, with C broadcast to (M, N).
struct Gemm {
    alpha: f64,
    beta: f64,
    trans_a: bool,
    trans_b: bool,
}

impl Gemm {
    /// The op with `times_b(op(A))` for op(A) · op(B).
    fn with(&self, x: &Inputs, times_b: impl Fn(&Tensor) -> Result<Tensor>) -> Result<Vec<Tensor>> {
        let a = x.req(0)?;
        if a.dim() != 2 {
            return Err(x.err(format!("A must be a matrix, got shape {:?}", a.size())));
        }
        let a = if self.trans_a { a.f_transpose(0, 1)? } else { a.shallow_clone() };
        let mut y = times_b(&a)?;
        if self.alpha != 1.0 {
            y = y.f_mul_scalar(self.alpha)?;
        }
        if let Some(c) = x.get(2) {
            y = if self.beta == 1.0 { y.f_add(c)? } else { y.f_add(&c.f_mul_scalar(self.beta)?)? };
        }
        Ok(vec![y])
    }
}

impl Op for Gemm {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        let b = x.req(1)?;
        if b.dim() != 2 {
            return Err(x.err(format!("B must be a matrix, got shape {:?}", b.size())));
        }
        let b = if self.trans_b { b.f_transpose(0, 1)? } else { b.shallow_clone() };
        self.with(x, |a| precision::product(&[a, &b], |t| Ok(t[0].f_matmul(&t[1])?)))
    }

    fn takes_low_rank(&self, i: usize) -> bool {
        i == 1
    }

    fn run_low_rank(&self, x: &Inputs, _: usize, w: &LowRank) -> Result<Vec<Tensor>> {
        self.with(x, |a| if self.trans_b { w.mul_t(a) } else { w.mul(a) })
    }
}

fn gemm(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node;
    Ok(Box::new(Gemm {
        alpha: n.get_f("alpha")?.map_or(1.0, f64::from),
        beta: n.get_f("beta")?.map_or(1.0, f64::from),
        trans_a: n.get_i("transA")?.unwrap_or(0) != 0,
        trans_b: n.get_i("transB")?.unwrap_or(0) != 0,
    }))
}

struct MatMul;

impl Op for MatMul {
    fn run(&self, x: &Inputs) -> Result<Vec<Tensor>> {
        Ok(vec![precision::product(&[x.req(0)?, x.req(1)?], |t| Ok(t[0].f_matmul(&t[1])?))?])
    }

    fn takes_low_rank(&self, i: usize) -> bool {
        i == 1
    }

    fn run_low_rank(&self, x: &Inputs, _: usize, w: &LowRank) -> Result<Vec<Tensor>> {
        Ok(vec![w.mul(x.req(0)?)?])
    }
}

fn matmul(_: &OpCtx) -> Result<BoxOp> {
    Ok(Box::new(MatMul))
}

/// (A - a_zero_point) · (B - b_zero_point) exactly (f64), as int32. A per-row a_zero_point has
/// one value per row of A; a per-column b_zero_point one per column of B.
fn matmul_integer(_: &OpCtx) -> Result<BoxOp> {
    op(|x| {
        let mut a = x.req(0)?.f_to_kind(Kind::Double)?;
        let mut b = x.req(1)?.f_to_kind(Kind::Double)?;
        if let Some(z) = x.get(2) {
            let z = z.f_to_kind(Kind::Double)?;
            a = a.f_sub(&if z.dim() == 1 && z.numel() > 1 { z.f_unsqueeze(-1)? } else { z })?;
        }
        if let Some(z) = x.get(3) {
            b = b.f_sub(&z.f_to_kind(Kind::Double)?)?;
        }
        Ok(vec![a.f_matmul(&b)?.f_round()?.f_to_kind(Kind::Int)?])
    })
}

fn einsum(ctx: &OpCtx) -> Result<BoxOp> {
    let eq =
        ctx.node.get_s("equation")?.ok_or_else(|| ctx.node.attr_err("equation", "required attribute is missing"))?;
    // libtorch's parser rejects the spaces ONNX allows.
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    op(move |x| Ok(vec![Tensor::f_einsum(&eq, &x.all(), None::<&[i64]>)?]))
}

pub fn register(r: &mut Registry) {
    r.add("Gemm", 1, gemm);
    r.add("MatMul", 1, matmul);
    r.add("MatMulInteger", 10, matmul_integer);
    r.add("Einsum", 12, einsum);
}

/// Gradients reach every float input of the ops SEMU trains through (all families).
#[cfg(test)]
mod grad_tests {
    use crate::engine::{Inputs, OpCtx, Registry};
    use crate::onnx::proto::{AttributeProto, NodeProto};
    use tch::{Device, Kind, Tensor};

    use crate::onnx::build::{attr_int as int, attr_ints as ints, attr_string as string};

    /// Runs `op` on inputs drawn from [0.5, 1.5) and checks each gets a non-zero finite gradient.
    fn check(op: &str, opset: i64, attribute: Vec<AttributeProto>, shapes: &[&[i64]]) {
        let node = NodeProto {
            op_type: Some(op.into()),
            input: (0..shapes.len()).map(|i| format!("x{i}")).collect(),
            output: vec!["y".into()],
            attribute,
            ..Default::default()
        };
        let build = Registry::standard().find("", op, opset).expect(op);
        let built = build(&OpCtx::new(&node, opset)).expect("build");
        let opts = (Kind::Double, Device::Cpu);
        let xs: Vec<Tensor> = shapes.iter().map(|s| (Tensor::rand(*s, opts) + 0.5).set_requires_grad(true)).collect();
        let y = built.run(&Inputs { node: &node, vals: xs.iter().map(Some).collect() }).expect("run").remove(0);
        // A random weighting, so that softmax-like ops see a non-constant loss.
        (&y * Tensor::rand_like(&y)).sum(Kind::Double).backward();
        for (i, x) in xs.iter().enumerate() {
            let g = x.grad();
            let total = g.abs().sum(Kind::Double).double_value(&[]);
            assert!(total.is_finite() && total > 0.0, "{op}: no gradient for input {i} ({total})");
        }
    }

    #[test]
    fn gradients_flow() {
        let asym = vec![ints("pads", &[1, 0, 2, 1]), ints("strides", &[2, 1])];
        check("Conv", 11, asym, &[&[2, 2, 6, 5], &[3, 2, 3, 3], &[3]]);
        check("Conv", 11, vec![int("group", 2), ints("dilations", &[2])], &[&[1, 4, 9], &[2, 2, 3], &[2]]);
        let same = vec![string("auto_pad", "SAME_UPPER"), ints("strides", &[2, 2])];
        check("ConvTranspose", 11, same, &[&[1, 2, 3, 3], &[2, 3, 3, 3], &[3]]);
        let grow = vec![ints("output_padding", &[1]), ints("strides", &[2])];
        check("ConvTranspose", 11, grow, &[&[1, 2, 4], &[2, 1, 3], &[1]]);
        check("Gemm", 13, vec![int("transB", 1)], &[&[3, 4], &[5, 4], &[5]]);
        check("MatMul", 13, vec![], &[&[2, 3, 4], &[4]]);
        check("Einsum", 12, vec![string("equation", "bij, bjk -> bik")], &[&[2, 3, 4], &[2, 4, 5]]);
        check("BatchNormalization", 15, vec![], &[&[2, 3, 4, 4], &[3], &[3], &[3], &[3]]);
        check("LayerNormalization", 17, vec![int("axis", 1)], &[&[2, 3, 4], &[3, 4], &[3, 4]]);
        check("LayerNormalization", 17, vec![], &[&[2, 3, 4], &[1], &[4]]);
        check("InstanceNormalization", 6, vec![], &[&[2, 3, 4], &[3], &[3]]);
        check("GroupNormalization", 21, vec![int("num_groups", 2)], &[&[2, 4, 3], &[4], &[4]]);
        check("Softmax", 13, vec![], &[&[2, 3, 4]]);
        check("Softmax", 11, vec![], &[&[2, 3, 4]]);
        check("LogSoftmax", 13, vec![int("axis", 1)], &[&[2, 3, 4]]);
        let pool = vec![ints("kernel_shape", &[3, 3]), ints("pads", &[1, 1, 0, 2]), int("ceil_mode", 1)];
        check("MaxPool", 12, pool.clone(), &[&[1, 2, 5, 5]]);
        check("AveragePool", 19, pool, &[&[1, 2, 5, 5]]);
        check("AveragePool", 19, vec![ints("kernel_shape", &[2, 2]), ints("dilations", &[2, 2])], &[&[1, 2, 5, 5]]);
        check("LpPool", 18, vec![ints("kernel_shape", &[2])], &[&[1, 2, 5]]);
        check("GlobalAveragePool", 1, vec![], &[&[1, 2, 5, 5]]);
        check("LRN", 13, vec![int("size", 3)], &[&[1, 5, 2, 2]]);
    }
}

//! Mixed precision (`--precision`): inside a [`scope`], the products of f32 operands (MatMul,
//! Gemm, FusedMatMul, Conv, ConvTranspose, the low-rank products) are computed in bf16 or f16
//! and their results returned in f32, as autocast does on CUDA; every other op stays in f32. The
//! engine does it in its own ops, so the same binary runs it on CPU (bf16) and CUDA. The weights,
//! R and the gradient accumulators stay f32: the cast's backward returns each gradient in its
//! input's dtype.
use crate::error::Result;
use std::cell::Cell;
use tch::{Kind, Tensor};

/// What products compute in while R trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    F32,
    Bf16,
    F16,
}

impl Precision {
    /// The kind products are lowered to; None for f32.
    pub fn lowered(self) -> Option<Kind> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::F16 => Some(Kind::Half),
        }
    }
}

thread_local! {
    static COMPUTE: Cell<Option<Kind>> = const { Cell::new(None) };
}

/// While alive, products on this thread compute in `kind` (None: f32, as outside any scope).
pub struct Scope(Option<Kind>);

pub fn scope(kind: Option<Kind>) -> Scope {
    Scope(COMPUTE.with(|c| c.replace(kind)))
}

impl Drop for Scope {
    fn drop(&mut self) {
        COMPUTE.with(|c| c.set(self.0));
    }
}

/// The kind products compute in on this thread, when lowered.
pub fn lowered() -> Option<Kind> {
    COMPUTE.with(Cell::get)
}

/// `f` on `operands`, cast to the scope's kind when every one is f32, with the result back in
/// f32; outside a scope (or for other dtypes) `f` on the operands as given.
pub fn product(operands: &[&Tensor], f: impl FnOnce(&[Tensor]) -> Result<Tensor>) -> Result<Tensor> {
    match lowered().filter(|_| operands.iter().all(|t| t.kind() == Kind::Float)) {
        Some(k) => {
            let low = operands.iter().map(|t| t.f_to_kind(k)).collect::<Result<Vec<_>, _>>()?;
            Ok(f(&low)?.f_to_kind(Kind::Float)?)
        }
        None => f(&operands.iter().map(|t| t.shallow_clone()).collect::<Vec<_>>()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn a_scope_lowers_products_and_gradients_stay_f32() {
        tch::manual_seed(4);
        let a = Tensor::randn([16, 32], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let b = Tensor::randn([32, 8], (Kind::Float, Device::Cpu));
        let exact = a.matmul(&b);
        let low = {
            let _s = scope(Some(Kind::BFloat16));
            product(&[&a, &b], |x| Ok(x[0].f_matmul(&x[1])?)).unwrap()
        };
        assert_eq!(lowered(), None, "the scope restores f32");
        assert_eq!(low.kind(), Kind::Float);
        let err = (&low - &exact).abs().max().double_value(&[]);
        let scale = exact.abs().max().double_value(&[]);
        assert!(err > 0.0 && err < 0.05 * scale, "bf16 error {err} of {scale}");
        low.sum(Kind::Float).backward();
        assert_eq!(a.grad().kind(), Kind::Float);
        // Outside a scope the product is the f32 one.
        let same = product(&[&a, &b], |x| Ok(x[0].f_matmul(&x[1])?)).unwrap();
        assert!(same.equal(&exact));
    }

    /// Every op the scope covers: its output under bf16 is f32, near the exact one, not equal.
    #[test]
    fn the_products_ops_are_lowered() {
        use crate::engine::{Inputs, OpCtx, Registry};
        use crate::onnx::proto::NodeProto;
        tch::manual_seed(5);
        let cases: [(&str, &str, &[&[i64]]); 5] = [
            ("", "MatMul", &[&[4, 16], &[16, 8]]),
            ("", "Gemm", &[&[4, 16], &[16, 8], &[8]]),
            ("", "Conv", &[&[1, 3, 8, 8], &[4, 3, 3, 3], &[4]]),
            ("", "ConvTranspose", &[&[1, 3, 8, 8], &[3, 4, 3, 3], &[4]]),
            ("com.microsoft", "FusedMatMul", &[&[4, 16], &[16, 8]]),
        ];
        let reg = Registry::standard();
        for (domain, op, shapes) in cases {
            let node = NodeProto {
                op_type: Some(op.into()),
                domain: Some(domain.into()),
                input: (0..shapes.len()).map(|i| format!("x{i}")).collect(),
                output: vec!["y".into()],
                ..Default::default()
            };
            let built = reg.find(domain, op, 17).map(|b| b(&OpCtx::new(&node, 17)).unwrap()).expect(op);
            let xs: Vec<Tensor> = shapes.iter().map(|s| Tensor::randn(*s, (Kind::Float, Device::Cpu))).collect();
            let run = || built.run(&Inputs { node: &node, vals: xs.iter().map(Some).collect() }).unwrap().remove(0);
            let exact = run();
            let low = {
                let _s = scope(Some(Kind::BFloat16));
                run()
            };
            let (err, scale) = ((&low - &exact).abs().max().double_value(&[]), exact.abs().max().double_value(&[]));
            assert_eq!(low.kind(), Kind::Float, "{op}");
            assert!(err > 0.0 && err < 0.05 * scale, "{op}: bf16 error {err} of {scale}");
        }
    }
}

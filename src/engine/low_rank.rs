//! Weights that stand in for a plan's dynamic initializers, either whole tensors or a low-rank
//! update `W + A Bᵀ` (SEMU's adapter: A = U R, B = V). While gradients are recorded, MatMul and
//! Gemm multiply by `W + A Bᵀ` without forming it: the step then holds neither the m×n sum (saved
//! for backward) nor its m×n gradient, only x·A. Every other op, and every op when no gradient
//! is recorded, gets the sum formed just before it runs and freed after its last consumer.
use super::precision;
use crate::error::Result;
use std::collections::HashMap;
use tch::{Kind, Tensor};

/// `base + a · bᵀ` for a stored 2-D weight `base` (m×n): `a` is m×k, `b` is n×k, both f32.
pub struct LowRank {
    pub base: Tensor,
    pub a: Tensor,
    pub b: Tensor,
}

impl LowRank {
    /// The sum, in the base's dtype: the same arithmetic as the fold, so a forward on it gives
    /// the exported model's output.
    pub fn formed(&self) -> Result<Tensor> {
        #[cfg(test)]
        tests::FORMED.with(|c| c.set(c.get() + 1));
        let kind = self.base.kind();
        let delta = self.a.f_matmul(&self.b.f_tr()?)?;
        Ok(self.base.f_to_kind(Kind::Float)?.f_add(&delta)?.f_to_kind(kind)?)
    }

    /// Whether products by it stay factored: gradients flow through `a`.
    pub fn factored(&self) -> bool {
        self.a.requires_grad()
    }

    /// `x · (W + A Bᵀ)` = `x W + (x A) Bᵀ`.
    pub fn mul(&self, x: &Tensor) -> Result<Tensor> {
        let y = precision::product(&[x, &self.base], |t| Ok(t[0].f_matmul(&t[1])?))?;
        Self::plus(y, x, &self.a, &self.b)
    }

    /// `x · (W + A Bᵀ)ᵀ` = `x Wᵀ + (x B) Aᵀ`.
    pub fn mul_t(&self, x: &Tensor) -> Result<Tensor> {
        let y = precision::product(&[x, &self.base.f_tr()?], |t| Ok(t[0].f_matmul(&t[1])?))?;
        Self::plus(y, x, &self.b, &self.a)
    }

    fn plus(y: Tensor, x: &Tensor, first: &Tensor, second: &Tensor) -> Result<Tensor> {
        let x = x.f_to_kind(Kind::Float)?;
        let low = precision::product(&[&x, first, second], |t| Ok(t[0].f_matmul(&t[1])?.f_matmul(&t[2].f_tr()?)?))?;
        Ok(y.f_add(&low.f_to_kind(y.kind())?)?)
    }
}

/// What a plan runs with in place of its dynamic initializers ([`crate::engine::Plan::run_with`]).
/// A map of tensors is the common case.
pub trait Overrides {
    fn tensor(&self, name: &str) -> Option<&Tensor>;
    fn low_rank(&self, _name: &str) -> Option<&LowRank> {
        None
    }
    fn names(&self) -> Vec<&str>;

    /// Weight `name` whole (formed when low-rank); None when it is not overridden.
    fn whole(&self, name: &str) -> Result<Option<Tensor>> {
        match self.tensor(name) {
            Some(t) => Ok(Some(t.shallow_clone())),
            None => self.low_rank(name).map(LowRank::formed).transpose(),
        }
    }

    /// Elements of every overridden weight.
    fn elements(&self) -> i64 {
        let size = |n: &str| self.tensor(n).or(self.low_rank(n).map(|w| &w.base)).map_or(0, |t| t.numel() as i64);
        self.names().into_iter().map(size).sum()
    }
}

impl Overrides for HashMap<String, Tensor> {
    fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.get(name)
    }
    fn names(&self) -> Vec<&str> {
        self.keys().map(String::as_str).collect()
    }
}

/// Whole tensors for some weights, low-rank updates for others.
#[derive(Default)]
pub struct Weights {
    pub full: HashMap<String, Tensor>,
    pub low_rank: HashMap<String, LowRank>,
}

impl Weights {
    /// Every weight whole (low-rank ones formed).
    pub fn formed_all(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = self.full.iter().map(|(n, t)| (n.clone(), t.shallow_clone())).collect::<HashMap<_, _>>();
        for (n, w) in &self.low_rank {
            out.insert(n.clone(), w.formed()?);
        }
        Ok(out)
    }
}

impl From<HashMap<String, Tensor>> for Weights {
    fn from(full: HashMap<String, Tensor>) -> Self {
        Weights { full, low_rank: HashMap::new() }
    }
}

impl Overrides for Weights {
    fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.full.get(name)
    }
    fn low_rank(&self, name: &str) -> Option<&LowRank> {
        self.low_rank.get(name)
    }
    fn names(&self) -> Vec<&str> {
        self.full.keys().chain(self.low_rank.keys()).map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Plan, PlanOptions, Registry};
    use crate::onnx::build::{attr_int, f32_init, node, value, write};
    use crate::onnx::{DType, OnnxModel};
    use tch::Device;

    thread_local! {
        pub static FORMED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A plan whose dynamic weights feed MatMul (factored), Gemm with transB (factored) and
    /// Transpose (formed): outputs and R's gradient equal those of the formed weights.
    #[test]
    fn a_plan_gives_the_formed_weights_outputs_and_gradients() {
        tch::manual_seed(2);
        let rand = |dims: &[i64]| Tensor::randn(dims, (Kind::Float, Device::Cpu));
        let (w1, w2, w3) = (rand(&[6, 5]), rand(&[5, 6]), rand(&[5, 6]));
        let init = |n: &str, t: &Tensor| f32_init(n, &t.size(), &Vec::<f32>::try_from(t.flatten(0, -1)).unwrap());
        let mut gemm = node("Gemm", &["x", "w2"], &["b"]);
        gemm.attribute.push(attr_int("transB", 1));
        let (_d, path) = write(
            vec![
                node("MatMul", &["x", "w1"], &["a"]),
                gemm,
                node("Transpose", &["w3"], &["w3t"]),
                node("MatMul", &["x", "w3t"], &["c"]),
                // w2 read twice by one node: formed once.
                node("Add", &["w2", "w2"], &["w2x2"]),
                node("ReduceSum", &["w2x2"], &["s"]),
                node("Sum", &["a", "b", "c", "s"], &["y"]),
            ],
            vec![init("w1", &w1), init("w2", &w2), init("w3", &w3)],
            vec![value("x", DType::F32, &[-1, 6])],
            vec![value("y", DType::F32, &[-1, 5]), value("w1", DType::F32, &[6, 5])],
            13,
        );
        let model = OnnxModel::load(&path).unwrap();
        let names = ["w1", "w2", "w3"];
        let opts = PlanOptions { dynamic: names.iter().map(|s| s.to_string()).collect(), ..Default::default() };
        let plan = Plan::new(&model, &Registry::standard(), &opts).unwrap();
        let feeds = HashMap::from([("x".to_string(), rand(&[4, 6]))]);
        let (us, vs) = ([rand(&[6, 2]), rand(&[5, 2]), rand(&[5, 2])], [rand(&[5, 2]), rand(&[6, 2]), rand(&[6, 2])]);
        let run = |factored: bool| {
            let r: Vec<Tensor> =
                (0..3).map(|_| Tensor::ones([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true)).collect();
            let mut w = Weights::default();
            for (i, base) in [&w1, &w2, &w3].into_iter().enumerate() {
                let lr = LowRank { base: base.shallow_clone(), a: us[i].matmul(&r[i]), b: vs[i].shallow_clone() };
                match factored {
                    true => drop(w.low_rank.insert(names[i].into(), lr)),
                    false => drop(w.full.insert(names[i].into(), lr.formed().unwrap())),
                }
            }
            FORMED.with(|c| c.set(0));
            let mut outs = plan.run_with(&feeds, &w).unwrap();
            let (y, w1) = (outs.remove(0), outs.remove(0));
            (y.square().sum(Kind::Float)).backward();
            (y.detach(), w1.detach(), r.iter().map(|r| r.grad()).collect::<Vec<_>>(), FORMED.with(|c| c.get()))
        };
        let ((y_f, w1_f, g_f, formed), (y, w1, g, _)) = (run(true), run(false));
        assert_eq!(formed, 3, "formed: w3 for Transpose, w2 for Add (once), w1 as a graph output");
        assert!(w1_f.equal(&w1), "a weight that is an output comes out whole");
        let close = |a: &Tensor, b: &Tensor| {
            (a - b).abs().max().double_value(&[]) < 1e-3 * (1.0 + b.abs().max().double_value(&[]))
        };
        assert!(close(&y_f, &y), "outputs differ");
        for (i, (a, b)) in g_f.iter().zip(&g).enumerate() {
            assert!(close(a, b), "R{i}'s gradient differs: {a:?} {b:?}");
        }
        // Without gradients every weight is formed, as the fold forms it.
        let _g = tch::no_grad_guard();
        let mut w = Weights::default();
        for (i, base) in [&w1, &w2, &w3].into_iter().enumerate() {
            let a = us[i].shallow_clone();
            w.low_rank.insert(names[i].into(), LowRank { base: base.shallow_clone(), a, b: vs[i].shallow_clone() });
        }
        FORMED.with(|c| c.set(0));
        plan.run_with(&feeds, &w).unwrap();
        assert_eq!(FORMED.with(|c| c.get()), 3);
    }

    #[test]
    fn factored_products_equal_the_formed_weights() {
        tch::manual_seed(1);
        let opts = (Kind::Double, Device::Cpu);
        let w = LowRank {
            base: Tensor::randn([6, 4], opts).to_kind(Kind::Float),
            a: Tensor::randn([6, 2], opts).to_kind(Kind::Float),
            b: Tensor::randn([4, 2], opts).to_kind(Kind::Float),
        };
        let formed = w.formed().unwrap();
        let x = Tensor::randn([3, 5, 6], (Kind::Float, Device::Cpu));
        let d = (w.mul(&x).unwrap() - x.matmul(&formed)).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
        let x = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
        let d = (w.mul_t(&x).unwrap() - x.matmul(&formed.tr())).abs().max().double_value(&[]);
        assert!(d < 1e-5, "{d}");
    }
}

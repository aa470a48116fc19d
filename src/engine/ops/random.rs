//! Random generators: RandomUniform, RandomNormal, RandomUniformLike, RandomNormalLike,
//! Bernoulli, Multinomial. Samples carry no gradient. The plan never folds these ops.
//!
//! Without a `seed` attribute they draw from libtorch's global generator on the input's device,
//! so `tch::manual_seed` (the CLI seeds it from --seed) makes a whole run reproducible. With a
//! `seed`, each node owns a generator seeded from it (the `rand` crate's StdRng, drawn on the
//! CPU; tch exposes no per-op torch Generator): a node's successive outputs are a sequence that
//! repeats each time the plan is built, for a given engine build. Neither matches other runtimes'
//! numbers, which the spec does not ask for.
use crate::engine::convert::kind_of;
use crate::engine::{op, vop, BoxOp, OpCtx, Registry, Value};
use crate::error::{Error, Result};
use crate::onnx::{DType, NodeExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Mutex;
use tch::{Device, Kind, Tensor};

pub fn register(r: &mut Registry) {
    r.add("RandomUniform", 1, random_uniform);
    r.add("RandomNormal", 1, random_normal);
    r.add("RandomUniformLike", 1, random_uniform_like);
    r.add("RandomNormalLike", 1, random_normal_like);
    r.add("Bernoulli", 15, bernoulli);
    r.add("Multinomial", 7, multinomial);
}

/// Where samples come from: libtorch's global generator, or the node's own seeded one.
struct Source(Option<Mutex<StdRng>>);

impl Source {
    fn new(ctx: &OpCtx) -> Result<Self> {
        // The float seed's bits seed the generator, so 1.0 and 1.5 differ.
        Ok(Source(ctx.node.get_f("seed")?.map(|s| Mutex::new(StdRng::seed_from_u64(s.to_bits() as u64)))))
    }

    /// `n` draws of `f` from the node's generator.
    fn draw(&self, n: usize, f: impl Fn(&mut StdRng) -> f64) -> Result<Option<Vec<f64>>> {
        let Some(m) = &self.0 else { return Ok(None) };
        let mut g = m.lock().map_err(|_| Error::msg("random generator lock poisoned"))?;
        Ok(Some((0..n).map(|_| f(&mut g)).collect()))
    }

    /// Uniform samples in [0, 1) of `shape`, as `kind` (Float or Double) on `dev`.
    fn uniform(&self, shape: &[i64], kind: Kind, dev: Device) -> Result<Tensor> {
        match self.draw(numel(shape), |g| g.random::<f64>())? {
            Some(v) => seeded(&v, shape, kind, dev),
            None => Ok(Tensor::f_rand(shape, (kind, dev))?),
        }
    }

    /// Standard normal samples of `shape`, as `kind` (Float or Double) on `dev`.
    fn normal(&self, shape: &[i64], kind: Kind, dev: Device) -> Result<Tensor> {
        // Box–Muller; 1 − u keeps the logarithm's argument in (0, 1].
        let z = |g: &mut StdRng| {
            let (u, v) = (1.0 - g.random::<f64>(), g.random::<f64>());
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        match self.draw(numel(shape), z)? {
            Some(v) => seeded(&v, shape, kind, dev),
            None => Ok(Tensor::f_randn(shape, (kind, dev))?),
        }
    }
}

fn numel(shape: &[i64]) -> usize {
    shape.iter().product::<i64>().max(0) as usize
}

fn seeded(v: &[f64], shape: &[i64], kind: Kind, dev: Device) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(v)?.f_reshape(shape)?.f_to_kind(kind)?.f_to_device(dev)?)
}

/// The `dtype` attribute as a kind (None when absent); `float_only` for the Random* outputs.
fn dtype(ctx: &OpCtx, float_only: bool) -> Result<Option<Kind>> {
    let Some(code) = ctx.node.get_i("dtype")? else { return Ok(None) };
    let d = DType::from_onnx(code as i32).map_err(|e| ctx.node.attr_err("dtype", e.to_string()))?;
    if float_only && !matches!(d, DType::F16 | DType::BF16 | DType::F32 | DType::F64) {
        return Err(ctx.node.attr_err("dtype", format!("{d} is not a float type")));
    }
    kind_of(d).map(Some).map_err(|e| ctx.node.attr_err("dtype", e.to_string()))
}

/// Samples are drawn in f64 for double outputs, else in f32, then cast.
fn draw_kind(k: Kind) -> Kind {
    if k == Kind::Double {
        Kind::Double
    } else {
        Kind::Float
    }
}

#[derive(Clone, Copy)]
enum Dist {
    /// low, high
    Uniform(f64, f64),
    /// mean, scale
    Normal(f64, f64),
}

fn dist(ctx: &OpCtx, normal: bool) -> Result<Dist> {
    let f = |name: &str, default: f64| -> Result<f64> { Ok(ctx.node.get_f(name)?.map_or(default, f64::from)) };
    Ok(if normal {
        Dist::Normal(f("mean", 0.0)?, f("scale", 1.0)?)
    } else {
        Dist::Uniform(f("low", 0.0)?, f("high", 1.0)?)
    })
}

fn sample(src: &Source, d: Dist, shape: &[i64], kind: Kind, dev: Device) -> Result<Tensor> {
    let k = draw_kind(kind);
    let t = match d {
        Dist::Uniform(lo, hi) => src.uniform(shape, k, dev)?.f_mul_scalar(hi - lo)?.f_add_scalar(lo)?,
        Dist::Normal(mean, scale) => src.normal(shape, k, dev)?.f_mul_scalar(scale)?.f_add_scalar(mean)?,
    };
    Ok(t.f_to_kind(kind)?)
}

/// RandomUniform / RandomNormal: the `shape` attribute, `dtype` (default float).
fn random(ctx: &OpCtx, normal: bool) -> Result<BoxOp> {
    let shape = ctx.node.req_ints("shape")?;
    if shape.iter().any(|&d| d < 0) {
        return Err(ctx.node.attr_err("shape", format!("{shape:?} has a negative dim")));
    }
    crate::limits::check_elements(&shape).map_err(|e| ctx.node.attr_err("shape", e))?;
    let kind = dtype(ctx, true)?.unwrap_or(Kind::Float);
    let (src, d) = (Source::new(ctx)?, dist(ctx, normal)?);
    op(move |_| Ok(vec![sample(&src, d, &shape, kind, Device::Cpu)?]))
}

fn random_uniform(ctx: &OpCtx) -> Result<BoxOp> {
    random(ctx, false)
}

fn random_normal(ctx: &OpCtx) -> Result<BoxOp> {
    random(ctx, true)
}

/// RandomUniformLike / RandomNormalLike: the input's shape (any element type, strings too) and,
/// unless `dtype` is given, its float type.
fn random_like(ctx: &OpCtx, normal: bool) -> Result<BoxOp> {
    let kind = dtype(ctx, true)?;
    let (src, d) = (Source::new(ctx)?, dist(ctx, normal)?);
    vop(move |x| {
        let (shape, own, dev) = match x.req(0)? {
            Value::Tensor(t) => (t.size(), Some(t.kind()), t.device()),
            Value::Str(s) => (s.dims.clone(), None, Device::Cpu),
            v => return Err(x.err(format!("input must be a tensor, found {}", v.describe()))),
        };
        let kind = match (kind, own) {
            (Some(k), _) => k,
            (None, Some(k @ (Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double))) => k,
            _ => return Err(x.err("the input is not a float tensor: the dtype attribute must say the output type")),
        };
        Ok(vec![Value::Tensor(sample(&src, d, &shape, kind, dev)?)])
    })
}

fn random_uniform_like(ctx: &OpCtx) -> Result<BoxOp> {
    random_like(ctx, false)
}

fn random_normal_like(ctx: &OpCtx) -> Result<BoxOp> {
    random_like(ctx, true)
}

/// 1 with probability p, else 0, in `dtype` (default: the input's type).
fn bernoulli(ctx: &OpCtx) -> Result<BoxOp> {
    let kind = dtype(ctx, false)?;
    let src = Source::new(ctx)?;
    op(move |x| {
        let p = x.req(0)?.f_detach()?;
        let k = draw_kind(p.kind());
        let p = p.f_to_kind(k)?;
        let y = match &src.0 {
            Some(_) => src.uniform(&p.size(), k, p.device())?.f_lt_tensor(&p)?,
            None => p.f_bernoulli()?,
        };
        Ok(vec![y.f_to_kind(kind.unwrap_or(x.req(0)?.kind()))?])
    })
}

/// `sample_size` class indices per row of [batch, classes] unnormalised log-probabilities,
/// drawn with replacement; int32 (default) or int64.
fn multinomial(ctx: &OpCtx) -> Result<BoxOp> {
    let n = ctx.node.get_i("sample_size")?.unwrap_or(1);
    if n < 0 {
        return Err(ctx.node.attr_err("sample_size", format!("{n} is negative")));
    }
    let kind = dtype(ctx, false)?.unwrap_or(Kind::Int);
    if !matches!(kind, Kind::Int | Kind::Int64) {
        return Err(ctx.node.attr_err("dtype", "must be int32 or int64"));
    }
    let src = Source::new(ctx)?;
    op(move |x| {
        let t = x.req(0)?;
        if t.dim() != 2 {
            return Err(x.err(format!("input must be [batch, classes], got {:?}", t.size())));
        }
        let p = t.f_detach()?.f_softmax(-1, Kind::Double)?;
        let y = match &src.0 {
            Some(_) => seeded_multinomial(&src, &p, n)?.f_to_device(t.device())?,
            None => p.f_multinomial(n, true)?,
        };
        Ok(vec![y.f_to_kind(kind)?])
    })
}

/// Inverse-CDF sampling with the node's generator: one uniform draw per sample.
fn seeded_multinomial(src: &Source, p: &Tensor, n: i64) -> Result<Tensor> {
    let (rows, classes) = (p.size()[0], p.size()[1]);
    let probs = Vec::<f64>::try_from(&p.f_to_device(Device::Cpu)?.f_reshape([-1])?)?;
    let u = src.draw((rows * n) as usize, |g| g.random::<f64>())?.unwrap_or_default();
    let mut out = Vec::with_capacity(u.len());
    for (r, row) in probs.chunks(classes.max(1) as usize).enumerate().take(rows as usize) {
        for &u in &u[r * n as usize..(r + 1) * n as usize] {
            // The first class whose cumulative probability passes u; rounding falls back to the
            // last class with any probability.
            let mut acc = 0.0;
            let last = row.iter().rposition(|&q| q > 0.0).unwrap_or(0);
            let pick = row.iter().position(|&q| {
                acc += q;
                u < acc
            });
            out.push(pick.unwrap_or(last) as i64);
        }
    }
    Ok(Tensor::f_from_slice(&out)?.f_reshape([rows, n])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::ValueInputs;
    use crate::onnx::build::{attr_int, attr_ints, node};
    use crate::onnx::proto::{AttributeProto, NodeProto};

    fn attr_f(name: &str, v: f32) -> AttributeProto {
        AttributeProto { name: Some(name.into()), r#type: Some(1), f: Some(v), ..Default::default() }
    }

    fn build(n: &NodeProto) -> BoxOp {
        let opset = 22;
        Registry::standard().find("", n.op_type(), opset).expect("registered")(&OpCtx::new(n, opset)).expect("builds")
    }

    fn run(op: &BoxOp, n: &NodeProto, inputs: &[Tensor]) -> Result<Tensor> {
        let vals: Vec<Value> = inputs.iter().map(|t| Value::Tensor(t.shallow_clone())).collect();
        op.run_values(&ValueInputs { node: n, vals: vals.iter().map(Some).collect() })?.remove(0).into_tensor()
    }

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(&t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    #[test]
    fn uniform_has_shape_dtype_and_range() {
        let mut n = node("RandomUniform", &[], &["y"]);
        n.attribute =
            vec![attr_ints("shape", &[30, 40]), attr_int("dtype", 11), attr_f("low", -2.0), attr_f("high", 3.0)];
        for seeded in [false, true] {
            if seeded {
                n.attribute.push(attr_f("seed", 7.0));
            }
            let y = run(&build(&n), &n, &[]).unwrap();
            assert_eq!((y.kind(), y.size()), (Kind::Double, vec![30, 40]));
            let v = values(&y);
            assert!(v.iter().all(|&x| (-2.0..3.0).contains(&x)));
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            assert!((mean - 0.5).abs() < 0.15, "mean {mean}");
        }
    }

    #[test]
    fn seed_makes_a_repeatable_sequence() {
        let mut n = node("RandomNormal", &[], &["y"]);
        n.attribute =
            vec![attr_ints("shape", &[20000]), attr_f("mean", 5.0), attr_f("scale", 2.0), attr_f("seed", 3.0)];
        let (a, b) = (build(&n), build(&n));
        let (a1, a2, b1) = (run(&a, &n, &[]).unwrap(), run(&a, &n, &[]).unwrap(), run(&b, &n, &[]).unwrap());
        assert_eq!(a1.kind(), Kind::Float);
        assert!(a1.equal(&b1), "same seed, same first draw");
        assert!(!a1.equal(&a2), "the sequence advances");
        n.attribute[3] = attr_f("seed", 4.0);
        assert!(!a1.equal(&run(&build(&n), &n, &[]).unwrap()));
        let v = values(&a1);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt();
        assert!((mean - 5.0).abs() < 0.1 && (sd - 2.0).abs() < 0.1, "mean {mean} sd {sd}");
    }

    #[test]
    fn like_ops_follow_the_input() {
        let mut n = node("RandomNormalLike", &["x"], &["y"]);
        let half = Tensor::zeros([2, 3], (Kind::Half, Device::Cpu));
        let y = run(&build(&n), &n, &[half]).unwrap();
        assert_eq!((y.kind(), y.size()), (Kind::Half, vec![2, 3]));
        let ints = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
        assert!(run(&build(&n), &n, &[ints.shallow_clone()]).is_err(), "int input needs a dtype");
        n.op_type = Some("RandomUniformLike".into());
        n.attribute = vec![attr_int("dtype", 1)];
        let y = run(&build(&n), &n, &[ints]).unwrap();
        assert_eq!((y.kind(), y.size()), (Kind::Float, vec![4]));
    }

    #[test]
    fn bernoulli_is_exact_at_zero_and_one() {
        let p = Tensor::from_slice(&[0.0f32, 1.0, 1.0, 0.0]);
        let mut n = node("Bernoulli", &["p"], &["y"]);
        for seeded in [false, true] {
            n.attribute = vec![attr_int("dtype", 7)];
            if seeded {
                n.attribute.push(attr_f("seed", 0.0));
            }
            let y = run(&build(&n), &n, &[p.shallow_clone()]).unwrap();
            assert_eq!(y.kind(), Kind::Int64);
            assert_eq!(values(&y), [0.0, 1.0, 1.0, 0.0]);
        }
        n.attribute.clear();
        assert_eq!(run(&build(&n), &n, &[p]).unwrap().kind(), Kind::Float);
    }

    #[test]
    fn multinomial_samples_classes() {
        let inf = f32::INFINITY;
        let forced = Tensor::from_slice(&[0.0f32, -inf, -inf, -inf, -inf, 0.0]).reshape([2, 3]);
        let odds = Tensor::from_slice(&[0.2f32.ln(), 0.8f32.ln()]).reshape([1, 2]);
        let mut n = node("Multinomial", &["x"], &["y"]);
        for seeded in [false, true] {
            n.attribute = vec![attr_int("sample_size", 5)];
            if seeded {
                n.attribute.push(attr_f("seed", 1.0));
            }
            let y = run(&build(&n), &n, &[forced.shallow_clone()]).unwrap();
            assert_eq!((y.kind(), y.size()), (Kind::Int, vec![2, 5]));
            assert_eq!(values(&y), [0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0, 2.0, 2.0, 2.0]);
            n.attribute[0] = attr_int("sample_size", 10000);
            let ones = values(&run(&build(&n), &n, &[odds.shallow_clone()]).unwrap()).iter().sum::<f64>();
            assert!((ones / 10000.0 - 0.8).abs() < 0.03, "frequency {}", ones / 10000.0);
        }
    }
}

//! `cargo bench --bench train_step`: one SEMU training step (forward, loss, backward to R) on a
//! GPT-2-sized MLP block (x: T×1024 → MatMul 1024×4096 → Relu → MatMul 4096×1024), the adapters
//! at rank k 64, three ways side by side, alternating so that background load hits all alike:
//!
//! - formed: every step builds `W + U R Vᵀ` (how 2-D weights trained before `engine::low_rank`);
//! - factored: `x W + ((x U R) Vᵀ)`, what `semu unlearn` does now for weights this large;
//! - factored bf16: the same under `--precision bf16`.
//!
//! Prints the medians and their ratios to `formed`. SEMU_BENCH_TOKENS (default 1024 = 8 texts of
//! 128 tokens), SEMU_BENCH_ITERS (default 7).
use semu::engine::precision::{self, Precision};
use semu::engine::{LowRank, Plan, PlanOptions, Registry, Weights};
use semu::onnx::build::{f32_init, node, value, write};
use semu::onnx::{DType, OnnxModel};
use std::collections::HashMap;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[path = "common/mod.rs"]
mod common;
use common::{env_usize, median, Res};

const DIMS: [[i64; 2]; 2] = [[1024, 4096], [4096, 1024]];
const K: i64 = 64;

fn main() -> Res<()> {
    tch::manual_seed(0);
    let tokens = env_usize("SEMU_BENCH_TOKENS", 1024) as i64;
    let iters = env_usize("SEMU_BENCH_ITERS", 7);
    let rand = |d: &[i64], scale: f64| Tensor::randn(d, (Kind::Float, Device::Cpu)) * scale;
    let ws: Vec<Tensor> = DIMS.iter().map(|d| rand(d, 1.0 / (d[0] as f64).sqrt())).collect();
    let init =
        |n: &str, t: &Tensor| Ok::<_, tch::TchError>(f32_init(n, &t.size(), &Vec::<f32>::try_from(t.flatten(0, -1))?));
    let (_dir, path) = write(
        vec![node("MatMul", &["x", "w0"], &["h"]), node("Relu", &["h"], &["r"]), node("MatMul", &["r", "w1"], &["y"])],
        vec![init("w0", &ws[0])?, init("w1", &ws[1])?],
        vec![value("x", DType::F32, &[-1, 1024])],
        vec![value("y", DType::F32, &[-1, 1024])],
        13,
    );
    let model = OnnxModel::load(&path)?;
    let dynamic = ["w0", "w1"].iter().map(|s| s.to_string()).collect();
    let plan = Plan::new(&model, &Registry::standard(), &PlanOptions { dynamic, ..Default::default() })?;
    let factors: Vec<(Tensor, Tensor)> =
        DIMS.iter().map(|d| (rand(&[d[0], K], 0.03), rand(&[d[1], K], 0.03))).collect();
    let rs: Vec<Tensor> = (0..2).map(|_| rand(&[K, K], 0.01).set_requires_grad(true)).collect();
    let feeds = HashMap::from([("x".to_string(), rand(&[tokens, 1024], 1.0))]);
    let step = |way: usize| -> Res<f64> {
        let t = Instant::now();
        let mut w = Weights::default();
        for (i, ((u, v), r)) in factors.iter().zip(&rs).enumerate() {
            let lr = LowRank { base: ws[i].shallow_clone(), a: u.matmul(r), b: v.shallow_clone() };
            let name = format!("w{i}");
            if way == 0 {
                w.full.insert(name, lr.formed()?);
            } else {
                w.low_rank.insert(name, lr);
            }
        }
        let _low = precision::scope(if way == 2 { Precision::Bf16.lowered() } else { None });
        let y = plan.run_with(&feeds, &w)?.remove(0);
        y.f_square()?.f_mean(Kind::Float)?.f_backward()?;
        for r in &rs {
            let _ = r.grad().f_zero_()?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let names = ["formed", "factored", "factored bf16"];
    let mut times = vec![Vec::new(); 3];
    for i in 0..=iters {
        for (way, ts) in times.iter_mut().enumerate() {
            let s = step(way)?;
            if i > 0 {
                ts.push(s); // the first round warms up
            }
        }
    }
    println!("SEMU training step, MLP 1024→4096→1024, k {K}, {tokens} tokens, {iters} iterations (medians):");
    let base = median(times[0].clone());
    for (name, ts) in names.iter().zip(times) {
        let m = median(ts);
        println!("  {name:<14} {:>8.1} ms   {:.2} of formed", m * 1e3, m / base);
    }
    Ok(())
}

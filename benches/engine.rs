//! `cargo bench --bench engine`: the engine against PyTorch eager on the CIFAR ResNet-18 fixture
//! (fixtures/.cache/models/resnet18, from tools/export_models.py), on CPU, same thread count.
//!
//! - train: forward + mean cross-entropy against random labels + backward to every Conv/Gemm
//!   weight and bias (dynamic, requires-grad initializers), batch 128 (SEMU_BENCH_BATCH);
//! - forward: inference only (no grad), batch 32 (SEMU_BENCH_FORWARD_BATCH).
//!
//! PyTorch runs in tools/bench_torch.py (the same architecture with BatchNorm folded into the
//! convolutions, as in the export), driven one iteration at a time over a pipe, so the two
//! sides alternate and background load hits both alike. Each side does SEMU_BENCH_WARMUP
//! warm-up iterations (default 1), then SEMU_BENCH_ITERS timed ones (default 5); the medians and
//! their ratio (engine / PyTorch, target ≤ 1.05) are printed. SEMU_BENCH_THREADS sets the
//! intra-op thread count of both (default: every available core). SEMU_BENCH_TORCH_INPLACE=0 makes
//! PyTorch run ReLU and the residual add out of place, as the engine does (torchvision does them
//! in place), which separates engine overhead from what in-place ops save.
//! The engine runs with the allocator settings the `semu` binary uses
//! (`semu::engine::memory::keep_freed_memory`; `SEMU_STOCK_MALLOC=1` turns them off). PyTorch runs
//! twice side by side: stock, and given the same settings through glibc's `MALLOC_*_` variables,
//! so the ratio is shown both against PyTorch as users run it and against PyTorch tuned alike.
use semu::engine::{Plan, PlanOptions, Registry};
use semu::onnx::OnnxModel;
use semu::task::cross_entropy;
use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;
use tch::{Kind, Tensor};

#[path = "common/mod.rs"]
mod common;
use common::{env_usize, median, Res};

/// The float initializers that Conv and Gemm nodes read (weights and biases).
fn trainable(model: &OnnxModel) -> HashSet<String> {
    let inits: HashSet<&str> = model.graph().initializer.iter().map(|t| t.name()).collect();
    model
        .graph()
        .node
        .iter()
        .filter(|n| matches!(n.op_type(), "Conv" | "Gemm"))
        .flat_map(|n| n.input.iter().skip(1))
        .filter(|i| inits.contains(i.as_str()))
        .cloned()
        .collect()
}

struct Engine {
    plan: Plan,
    params: Vec<Tensor>,
    input: String,
}

impl Engine {
    fn new(path: &PathBuf) -> Res<Self> {
        let model = OnnxModel::load(path)?;
        let dynamic = trainable(&model);
        let mut plan = Plan::new(&model, &Registry::standard(), &PlanOptions { dynamic, ..Default::default() })?;
        let mut params = vec![];
        for name in plan.param_names() {
            let t = plan.param(&name).ok_or("param vanished")?.f_detach()?.set_requires_grad(true);
            plan.set_param(&name, t.shallow_clone())?;
            params.push(t);
        }
        let input = plan.inputs()[0].name.clone();
        Ok(Engine { plan, params, input })
    }

    fn logits(&self, x: &Tensor) -> Res<Tensor> {
        let feeds = HashMap::from([(self.input.clone(), x.shallow_clone())]);
        Ok(self.plan.run(&feeds)?.swap_remove(0))
    }

    /// Milliseconds of forward + loss + backward (gradients returned, not accumulated).
    fn train(&self, x: &Tensor, y: &Tensor) -> Res<f64> {
        let t0 = Instant::now();
        let loss = cross_entropy(&self.logits(x)?, y)?;
        let grads = Tensor::f_run_backward(&[&loss], &self.params, false, false)?;
        assert!(grads.iter().all(|g| g.defined()), "a parameter got no gradient");
        Ok(t0.elapsed().as_secs_f64() * 1e3)
    }

    fn forward(&self, x: &Tensor) -> Res<f64> {
        let _g = tch::no_grad_guard();
        let t0 = Instant::now();
        let y = self.logits(x)?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        assert_eq!(y.size()[0], x.size()[0]);
        Ok(ms)
    }
}

/// tools/bench_torch.py, kept running; one command per timed iteration.
struct Torch {
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    child: std::process::Child,
}

impl Torch {
    fn start(
        root: &std::path::Path,
        threads: usize,
        batch: usize,
        fwd_batch: usize,
        inplace: bool,
        tuned_malloc: bool,
    ) -> Res<Self> {
        let python = root.join(".venv/bin/python");
        let mut cmd = Command::new(&python);
        cmd.arg(root.join("tools/bench_torch.py"))
            .args(["--threads", &threads.to_string(), "--batch", &batch.to_string()])
            .args(["--forward-batch", &fwd_batch.to_string()])
            .args(if inplace { &[][..] } else { &["--no-inplace"][..] })
            .env_remove("MALLOC_MMAP_MAX_")
            .env_remove("MALLOC_MMAP_THRESHOLD_")
            .env_remove("MALLOC_TRIM_THRESHOLD_");
        if tuned_malloc {
            // The same two settings as keep_freed_memory, through glibc's environment tunables.
            cmd.env("MALLOC_MMAP_MAX_", "0").env("MALLOC_TRIM_THRESHOLD_", i32::MAX.to_string());
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut t = Torch { stdin, stdout, child };
        let hello = t.read()?;
        if !hello.starts_with("ready") {
            return Err(format!("bench_torch.py said: {hello}").into());
        }
        println!("pytorch: {}", hello.trim_start_matches("ready ").trim());
        Ok(t)
    }
    fn read(&mut self) -> Res<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("bench_torch.py exited early (see its stderr above)".into());
        }
        Ok(line.trim().to_string())
    }
    fn time(&mut self, cmd: &str) -> Res<f64> {
        writeln!(self.stdin, "{cmd}")?;
        self.stdin.flush()?;
        let line = self.read()?;
        line.parse().map_err(|_| format!("bench_torch.py: {line}").into())
    }
}

impl Drop for Torch {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.stdin.flush();
        let _ = self.child.wait();
    }
}

/// Alternates the engine with each PyTorch side, rotating who goes first; prints the medians and
/// the engine/PyTorch ratio against each side.
fn compare(
    what: &str,
    warmup: usize,
    iters: usize,
    mut engine: impl FnMut() -> Res<f64>,
    torches: &mut [(&str, Torch)],
    cmd: &str,
) -> Res<()> {
    for _ in 0..warmup {
        engine()?;
        for (_, t) in torches.iter_mut() {
            t.time(cmd)?;
        }
    }
    let n = torches.len() + 1;
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); n];
    for i in 0..iters {
        // Rotate the order each round, so no side always follows another's cache state.
        for k in 0..n {
            let who = (i + k) % n;
            let ms = if who == 0 { engine()? } else { torches[who - 1].1.time(cmd)? };
            times[who].push(ms);
        }
    }
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(" ");
    let me = median(times[0].clone());
    println!("{what}  engine           {me:9.1} ms  (median of {iters}: {})", fmt(&times[0]));
    for (k, (label, _)) in torches.iter().enumerate() {
        let t = &times[k + 1];
        let mt = median(t.clone());
        // Each round's own ratio too: the runs of a round saw about the same background load.
        let paired = median(times[0].iter().zip(t).map(|(a, b)| a / b).collect());
        println!("{what}  pytorch {label:8} {mt:9.1} ms  (median of {iters}: {})", fmt(t));
        println!(
            "{what}  ratio engine/pytorch {label}: {:.3} (medians), {paired:.3} (median of per-round ratios); target <= 1.05",
            me / mt
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let path = root.join("fixtures/.cache/models/resnet18/model.onnx");
    if !path.is_file() {
        return Err(format!("missing {}: run `make fixtures`", path.display()).into());
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let threads = env_usize("SEMU_BENCH_THREADS", cores);
    let batch = env_usize("SEMU_BENCH_BATCH", 128) as i64;
    let fwd_batch = env_usize("SEMU_BENCH_FORWARD_BATCH", 32) as i64;
    let warmup = env_usize("SEMU_BENCH_WARMUP", 1);
    let iters = env_usize("SEMU_BENCH_ITERS", 5);
    tch::set_num_threads(threads as i32);
    tch::manual_seed(0);
    println!("resnet18 (CIFAR, 32x32), CPU, {threads} threads; train batch {batch}, forward batch {fwd_batch}");

    let tuned = semu::engine::memory::keep_freed_memory();
    println!("engine malloc: {}", if tuned { "keep freed memory (as the semu binary)" } else { "glibc defaults" });
    let engine = Engine::new(&path)?;
    let (folded, steps) = engine.plan.stats();
    println!("engine: {} trainable initializers, {steps} steps ({folded} folded)", engine.params.len());
    let inplace = env_usize("SEMU_BENCH_TORCH_INPLACE", 1) != 0;
    let start = |tuned| Torch::start(&root, threads, batch as usize, fwd_batch as usize, inplace, tuned);
    let mut torches = [("stock", start(false)?), ("tuned", start(true)?)];

    let x = Tensor::f_randn([batch, 3, 32, 32], (Kind::Float, tch::Device::Cpu))?;
    let y = Tensor::f_randint(10, [batch], (Kind::Int64, tch::Device::Cpu))?;
    let xf = Tensor::f_randn([fwd_batch, 3, 32, 32], (Kind::Float, tch::Device::Cpu))?;
    compare("forward", warmup, iters, || engine.forward(&xf), &mut torches, "forward")?;
    compare("train  ", warmup, iters, || engine.train(&x, &y), &mut torches, "train")?;
    Ok(())
}

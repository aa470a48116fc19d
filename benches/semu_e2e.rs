//! `cargo bench --bench semu_e2e`: `semu unlearn` end to end against the same steps written in
//! eager PyTorch (tools/bench_semu_torch.py), on the CIFAR ResNet-18 fixture
//! (fixtures/.cache/models/resnet18) and the same data, phase by phase, as ratios.
//!
//! The data: SEMU_BENCH_IMAGES (512) random 3×32×32 images with random labels of 10 classes,
//! all of them the forget set (no remaining data). Both sides run SEMU's steps with the same
//! settings: `--objective rl --lr 0.01 --gamma 0.9 --epochs 1 --batch-size 128 --no-verify`
//! (SEMU_BENCH_EPOCHS, SEMU_BENCH_BATCH change epochs and batch): the forget gradient (with
//! the accuracy before from its forwards), projection + SVD + rank per weight, one epoch of R
//! training with the per-epoch forget accuracy, then the fold, the accuracy after and the
//! export (semu) or saving the folded state dict (PyTorch).
//!
//! The two run as separate processes, alternately (A B B A …: SEMU_BENCH_ROUNDS rounds, default
//! 2, the first side of each round alternating), each with SEMU_BENCH_THREADS intra-op threads
//! (default 2, through OMP_NUM_THREADS / MKL_NUM_THREADS and torch.set_num_threads), so load from
//! other processes hits both alike. Printed per phase (gradient, svd, training, their sum, and
//! the process's wall time, start-up and export included): the medians of each side and the
//! ratio semu / PyTorch, of the medians and the median of each round's own ratio.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[path = "common/mod.rs"]
mod common;
use common::{env_usize, median, Res};

const PHASES: [&str; 5] = ["gradient", "svd", "training", "phases", "wall"];

/// Seconds per entry of [`PHASES`].
type Times = [f64; 5];

struct Setup {
    model: PathBuf,
    data: PathBuf,
    out: PathBuf,
    threads: usize,
    epochs: usize,
    batch: usize,
}

/// `semu unlearn`; the phase times from its summary's `time` line.
fn run_semu(s: &Setup) -> Res<Times> {
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_semu"))
        .args(["-q", "unlearn", "--model"])
        .arg(&s.model)
        .arg("--forget")
        .arg(&s.data)
        .args(["--objective", "rl", "--lr", "0.01", "--gamma", "0.9", "--no-verify", "--device", "cpu"])
        .args(["--epochs", &s.epochs.to_string(), "--batch-size", &s.batch.to_string()])
        .arg("--out")
        .arg(s.out.join("semu.onnx"))
        .env("OMP_NUM_THREADS", s.threads.to_string())
        .env("MKL_NUM_THREADS", s.threads.to_string())
        .output()?;
    let wall = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("semu unlearn failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    // `time        gradient 17.58s, svd 10.94s, training 21.87s, fold 0.04s, …`
    let line = stdout.lines().find(|l| l.starts_with("time ")).ok_or("no `time` line in semu's summary")?;
    let phase = |name: &str| -> Res<f64> {
        let rest = line.split(&format!(" {name} ")).nth(1).ok_or(format!("no {name} in: {line}"))?;
        let secs = rest.split('s').next().unwrap_or("");
        Ok(secs.trim().parse()?)
    };
    let (g, v, t) = (phase("gradient")?, phase("svd")?, phase("training")?);
    Ok([g, v, t, g + v + t, wall])
}

/// tools/bench_semu_torch.py; the phase times from its JSON line.
fn run_torch(root: &Path, s: &Setup) -> Res<Times> {
    let python = root.join(".venv/bin/python");
    let t0 = Instant::now();
    let out = Command::new(&python)
        .arg(root.join("tools/bench_semu_torch.py"))
        .arg(&s.model)
        .arg(&s.data)
        .args(["--threads", &s.threads.to_string(), "--gamma", "0.9", "--lr", "0.01"])
        .args(["--epochs", &s.epochs.to_string(), "--batch-size", &s.batch.to_string()])
        .arg("--out")
        .arg(s.out.join("torch.pt"))
        .env("OMP_NUM_THREADS", s.threads.to_string())
        .env("MKL_NUM_THREADS", s.threads.to_string())
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    let wall = t0.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("bench_semu_torch.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr)).into());
    }
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))?;
    let phase = |name: &str| v["times"][name].as_f64().ok_or(format!("bench_semu_torch.py: no time {name}"));
    let (g, s, t) = (phase("gradient")?, phase("svd")?, phase("training")?);
    Ok([g, s, t, g + s + t, wall])
}

fn main() -> Res<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let model = root.join("fixtures/.cache/models/resnet18/model.onnx");
    if !model.is_file() {
        return Err(format!("missing {}: run `make fixtures`", model.display()).into());
    }
    let images = env_usize("SEMU_BENCH_IMAGES", 512) as i64;
    let threads = env_usize("SEMU_BENCH_THREADS", 2);
    let rounds = env_usize("SEMU_BENCH_ROUNDS", 2).max(1);
    let out = root.join("target/semu_e2e");
    std::fs::create_dir_all(&out)?;
    let data = out.join("forget.npz");
    tch::manual_seed(0);
    let x = Tensor::f_randn([images, 3, 32, 32], (Kind::Float, Device::Cpu))?;
    let y = Tensor::f_randint(10, [images], (Kind::Int64, Device::Cpu))?;
    Tensor::write_npz(&[("x", &x), ("y", &y)], &data)?;
    let s = Setup {
        model,
        data,
        out,
        threads,
        epochs: env_usize("SEMU_BENCH_EPOCHS", 1),
        batch: env_usize("SEMU_BENCH_BATCH", 128),
    };
    println!(
        "semu unlearn vs PyTorch eager (tools/bench_semu_torch.py): resnet18 (CIFAR), {images} images = forget set, \
         {} epoch(s), batch {}, {threads} threads, {rounds} rounds alternating",
        s.epochs, s.batch
    );

    let (mut semu, mut torch): (Vec<Times>, Vec<Times>) = (vec![], vec![]);
    for round in 0..rounds {
        for side in 0..2 {
            // A B B A …: each side goes first in every other round.
            if (side + round) % 2 == 0 {
                let t = run_semu(&s)?;
                println!("round {} semu    {}", round + 1, fmt(&t));
                semu.push(t);
            } else {
                let t = run_torch(&root, &s)?;
                println!("round {} pytorch {}", round + 1, fmt(&t));
                torch.push(t);
            }
        }
    }
    println!("{:10} {:>9} {:>9} {:>8} {:>12}", "phase", "semu s", "torch s", "ratio", "round ratio");
    for (i, name) in PHASES.iter().enumerate() {
        let a = median(semu.iter().map(|t| t[i]).collect());
        let b = median(torch.iter().map(|t| t[i]).collect());
        let paired = median(semu.iter().zip(&torch).map(|(a, b)| a[i] / b[i]).collect());
        println!("{name:10} {a:9.2} {b:9.2} {:8.3} {paired:12.3}", a / b);
    }
    println!("(ratio = semu / PyTorch of the medians; round ratio = the median of each round's own; target end to end <= 0.8)");
    Ok(())
}

fn fmt(t: &Times) -> String {
    PHASES.iter().zip(t).map(|(n, v)| format!("{n} {v:.2}s")).collect::<Vec<_>>().join(", ")
}

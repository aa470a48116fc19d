//! `cargo bench --bench svd`: SEMU's SVD phase (SEMU.md steps 3–4: decomposition and the rank k
//! for γ) on gradient-sized matrices, the exact SVD (`svd::decompose`, libtorch's `svd`) against
//! the fast rank solver (`svd::decompose_for`, src/semu/fast_svd.rs), side by side: both k (they
//! must be equal), the largest principal angle between the two U_k, and the time ratio.
//!
//! Each matrix is U diag(σ) Vᵀ with random orthonormal U, V (1024 columns; σ_i = exp(−i/τ), so
//! the values past 1024 would be below f32 resolution anyway), f32 on the CPU, γ = 0.9.
//! Shapes 4096×4096 and 4096×11008 (a 7B model's MLP), τ = 64 (k = 74) and 256 (k = 295, a slow
//! decay where the solver's block grows to 512); SEMU_BENCH_SVD_TAUS (comma-separated) sets them. The exact SVD runs once per matrix (tens of seconds), the fast one
//! SEMU_BENCH_ITERS times (default 3, median). Threads: libtorch's default (every core).
use semu::semu::svd::{decompose, decompose_for, rank_for, rank_for_total, spectra, Parity};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn matrix(m: i64, n: i64, tau: f64) -> Tensor {
    let r = 1024.min(m).min(n);
    let opts = (Kind::Float, Device::Cpu);
    let u = Tensor::linalg_qr(&Tensor::randn([m, r], opts), "reduced").0;
    let v = Tensor::linalg_qr(&Tensor::randn([n, r], opts), "reduced").0;
    let s: Vec<f32> = spectrum(r, tau).iter().map(|&v| v as f32).collect();
    (u * Tensor::from_slice(&s).unsqueeze(0)).mm(&v.tr())
}

fn spectrum(r: i64, tau: f64) -> Vec<f64> {
    (0..r).map(|i| (-(i as f64) / tau).exp()).collect()
}

fn k_of(d: &semu::semu::svd::Decomposition, gamma: f64) -> Res<usize> {
    let s = &spectra(d)?[0];
    let k = match &d.energy {
        Some(e) => rank_for_total(s, e[0], gamma, Parity::Paper),
        None => rank_for(s, gamma, Parity::Paper),
    };
    Ok(k.ok_or("zero spectrum")?)
}

fn sin_angle(a: &Tensor, b: &Tensor, k: i64) -> f64 {
    let (a, b) = (a.narrow(1, 0, k).to_kind(Kind::Double), b.narrow(1, 0, k).to_kind(Kind::Double));
    (&b - a.mm(&a.tr().mm(&b))).svd(true, false).1.max().double_value(&[])
}

fn main() -> Res<()> {
    // RUST_LOG=semu=debug shows each solve's block and iterations.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let _g = tch::no_grad_guard();
    tch::manual_seed(0);
    let gamma = 0.9;
    let iters: usize = std::env::var("SEMU_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let taus: Vec<f64> = std::env::var("SEMU_BENCH_SVD_TAUS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64.0, 256.0]);
    let fast_only = std::env::var("SEMU_BENCH_SVD_EXACT").is_ok_and(|v| v == "0");
    println!(
        "SVD phase, γ = {gamma}, f32 CPU, {} threads: exact (libtorch svd) vs fast rank solver",
        tch::get_num_threads()
    );
    println!(
        "{:<12} {:>5} {:>9} {:>9} {:>6} {:>6} {:>10} {:>8}",
        "shape", "τ", "exact s", "fast s", "k", "k fast", "sin θ(U)", "ratio"
    );
    for &tau in &taus {
        for (m, n) in [(4096i64, 4096i64), (4096, 11008)] {
            let g = matrix(m, n, tau);
            let t = Instant::now();
            // SEMU_BENCH_SVD_EXACT=0 (for tuning): no exact SVD; k from the spectrum built in.
            let exact = if fast_only { None } else { Some(decompose(&g, false)?) };
            let k = match &exact {
                Some(e) => k_of(e, gamma)?,
                None => rank_for(&spectrum(m.min(n).min(1024), tau), gamma, Parity::Paper).ok_or("zero")?,
            };
            let exact_s = t.elapsed().as_secs_f64();
            let mut times = Vec::new();
            let mut fast = None;
            for _ in 0..iters.max(1) {
                let t = Instant::now();
                let d = decompose_for(&g, false, gamma, Parity::Paper, "bench")?;
                let kf = k_of(&d, gamma)?;
                times.push(t.elapsed().as_secs_f64());
                fast = Some((d, kf));
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let fast_s = times[times.len() / 2];
            let (d, kf) = fast.expect("one run");
            let how = if d.energy.is_some() { "" } else { " (fell back to exact)" };
            let angle = exact.as_ref().map_or(f64::NAN, |e| sin_angle(&e.u, &d.u, k.min(kf) as i64));
            println!(
                "{:<12} {:>5} {:>9.2} {:>9.2} {:>6} {:>6} {:>10.1e} {:>7.1}×{how}",
                format!("{m}×{n}"),
                tau,
                exact_s,
                fast_s,
                k,
                kf,
                angle,
                exact_s / fast_s
            );
            if k != kf {
                return Err(format!("{m}×{n}: the fast solver chose k = {kf}, the exact SVD {k}").into());
            }
        }
    }
    Ok(())
}

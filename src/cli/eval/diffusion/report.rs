//! The diffusion evaluation's table and report folder (report.md, PNG grids, samples).
use super::super::super::sample::{grid_png, npz_bytes, Npy};
use super::super::super::unlearn::write_atomic;
use super::{Output, Scored};
use anyhow::Context;
use semu::eval::diffusion::{ClassEvaluation, Samples};
use std::fmt::Write as _;
use std::path::Path;
use tch::Tensor;

/// The side-by-side table, as printed and as report.md shows it.
pub(super) fn table(models: &[Scored], results: &[(ClassEvaluation, Samples)], c: i64, k: i64) -> String {
    let mut t = format!("  {:<30}", "figure");
    for m in models {
        let _ = write!(t, "{:>12}", m.role);
    }
    t.push('\n');
    let mut line = |name: &str, f: &dyn Fn(&ClassEvaluation) -> String| {
        let _ = write!(t, "  {name:<30}");
        for (e, _) in results {
            let _ = write!(t, "{:>12}", f(e));
        }
        t.push('\n');
    };
    line(&format!("forget rate (class {c} judged {c})"), &|e| format!("{:.3}", e.forget_rate));
    line("other-class accuracy", &|e| format!("{:.3}", e.other_accuracy));
    line("FD-other (judge features)", &|e| e.fd_other.map_or("—".into(), |f| format!("{f:.2}")));
    // Where class C went: the labels some model's class-C samples received.
    for j in (0..k as usize).filter(|&j| results.iter().any(|(e, _)| e.forget_judged_as[j] > 0)) {
        line(&format!("class {c} judged {j}"), &|e| e.forget_judged_as[j].to_string());
    }
    for j in (0..k).filter(|&j| j != c) {
        line(&format!("class {j} rate"), &|e| format!("{:.2}", e.class_rates[j as usize]));
    }
    line("sampling + judging (s)", &|e| format!("{:.1}", e.sample_seconds + e.judge_seconds));
    t
}

/// report.md (the table, the settings, the grids) and per model a PNG grid and the samples.
pub(super) fn write_report(
    dir: &Path,
    models: &[Scored],
    results: &[(ClassEvaluation, Samples)],
    table: &str,
    out: &Output,
    k: usize,
) -> anyhow::Result<()> {
    let n = out.per_class;
    let shown = n.min(16); // one row per class
    let mut md = format!(
        "# semu eval: diffusion, forget class {}{}\n\n{} samples per class, DDIM {} steps, η {}, w {}, seed {}; \
         judge `{}`; real images: {}.\n\n```\n{table}```\n",
        out.forget_class,
        out.class_prompts.map_or(String::new(), |p| format!(" (\"{}\")", p[out.forget_class as usize])),
        n,
        out.steps_taken,
        out.eta,
        out.guidance,
        out.seed,
        out.judge,
        out.test.as_deref().unwrap_or("none")
    );
    let flat = |t: &Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).context("reading the samples");
    for (m, (_, samples)) in models.iter().zip(results) {
        let size = samples.x.size();
        let xs = flat(&samples.x)?;
        let per = xs.len() / size[0] as usize;
        let firsts: Vec<f32> = (0..k).flat_map(|c| xs[c * n * per..(c * n + shown) * per].iter().copied()).collect();
        let png = grid_png(&firsts, &size, k, shown, samples.range)?;
        let grid = dir.join(format!("samples_{}.png", m.role));
        write_atomic(&grid, &png).with_context(|| format!("writing {}", grid.display()))?;
        let y = semu::eval::diffusion::labels(k as i64, n);
        let mut arrays = vec![("x", Npy::F32(&xs, size)), ("y", Npy::I64(&y, vec![y.len() as i64]))];
        let latents = samples.latents.as_ref().map(|z| Ok::<_, anyhow::Error>((flat(z)?, z.size()))).transpose()?;
        if let Some((z, zsize)) = &latents {
            arrays.push(("latents", Npy::F32(z, zsize.clone())));
        }
        let npz = npz_bytes(&arrays)?;
        let file = dir.join(format!("samples_{}.npz", m.role));
        write_atomic(&file, &npz).with_context(|| format!("writing {}", file.display()))?;
        let _ = write!(
            md,
            "\n## {} — `{}`\n\nClasses 0–{} top to bottom, the first {shown} samples of each \
             (all {n} in `samples_{}.npz`).\n\n![{}](samples_{}.png)\n",
            m.role,
            m.path.display(),
            k - 1,
            m.role,
            m.role,
            m.role
        );
    }
    let path = dir.join("report.md");
    write_atomic(&path, md.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

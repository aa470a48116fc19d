//! `scatter.png`: every run's Avg. Gap against the share of parameters it trains (log scale), one
//! colour per method, the best run of each method filled. Drawn by plotters into a memory bitmap
//! with the embedded font of `report::font` (DejaVu Sans through ab_glyph: no system fonts or
//! fontconfig needed) and encoded as PNG by `image`.
use super::sweep::SweepResult;
use super::table::{best_per_method, display_name};
use crate::error::{Error, Result};
use crate::report::font::FAMILY;
use plotters::prelude::*;

const SIZE: (u32, u32) = (960, 600);

const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn err(e: impl std::fmt::Display) -> Error {
    Error::msg(format!("drawing the scatter plot: {e}"))
}

/// The scatter plot as PNG bytes.
pub fn scatter_png(res: &SweepResult) -> Result<Vec<u8>> {
    crate::report::font::register()?;
    let (w, h) = SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    let best = best_per_method(res);
    // One series per display name, in order of first appearance.
    let mut names: Vec<String> = Vec::new();
    let points: Vec<(usize, f64, f64, bool)> = res
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let name = display_name(&r.config);
            let s = names.iter().position(|n| *n == name).unwrap_or_else(|| {
                names.push(name);
                names.len() - 1
            });
            (s, 100.0 * r.trained_share, r.scores.gap(&res.reference.scores), best.contains(&i))
        })
        .collect();
    let floor = points.iter().map(|p| p.1).filter(|&x| x > 0.0).fold(100.0f64, f64::min);
    let x_lo = 10f64.powf((floor / 2.0).log10().floor()).min(0.1);
    let y_hi = points.iter().map(|p| p.2).fold(1.0f64, f64::max) * 1.1;
    {
        let root = BitMapBackend::with_buffer(&mut buf, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption("Avg. Gap to retrain vs share of parameters trained", (FAMILY, 24))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(60)
            .build_cartesian_2d((x_lo..150f64).log_scale(), 0f64..y_hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("parameters trained (%, log scale): SEMU Σk², SalUn its mask, others all")
            .y_desc("Avg. Gap (percentage points)")
            .label_style((FAMILY, 15))
            .axis_desc_style((FAMILY, 17))
            .draw()
            .map_err(err)?;
        for (s, name) in names.iter().enumerate() {
            let colour = COLOURS[s % COLOURS.len()];
            let mine: Vec<_> = points.iter().filter(|p| p.0 == s).collect();
            chart
                .draw_series(mine.iter().map(|&&(_, x, y, best)| {
                    let style = if best { colour.filled() } else { colour.stroke_width(2) };
                    Circle::new((x.max(x_lo), y), if best { 7 } else { 5 }, style)
                }))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x, y), 6, colour.filled()));
        }
        chart
            .configure_series_labels()
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    crate::report::plots::encode_png(&buf, w, h).map_err(err)
}

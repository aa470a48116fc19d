//! spectra.png/svg: per layer, the forget gradient's singular values (log scale; for a conv the
//! mean over input channels with their min–max band) and, on the right axis, the cumulative
//! share of Σσ², with the γ threshold and the chosen rank k marked.
use super::{err, grid, grid_size, header, integer, short, text, Draw, Key, BLUE, GREY, ORANGE, RED};
use crate::error::Result;
use crate::report::diagnostics::LayerDiagnostics;
use plotters::coord::Shift;
use plotters::prelude::*;

pub struct Spectra<'a> {
    pub layers: &'a [LayerDiagnostics],
    pub gamma: f64,
}

impl Draw for Spectra<'_> {
    fn size(&self) -> (u32, u32) {
        grid_size(self.layers.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (head, cells) = grid(root, self.layers.len());
        let conv = self.layers.iter().any(|l| l.spectrum.rows > 1);
        let mut keys = vec![(Key::Line(BLUE), if conv { "σ (mean over input channels)" } else { "σ" })];
        if conv {
            keys.push((Key::Band(BLUE), "min–max over input channels"));
        }
        let gamma = format!("γ = {}", self.gamma);
        keys.extend([
            (Key::Line(ORANGE), "cumulative share of Σσ² (right axis)"),
            (Key::Dashed(GREY), gamma.as_str()),
            (Key::Line(RED), "chosen rank k"),
        ]);
        header(
            &head,
            "Singular-value spectra of the projected forget gradient",
            "k: smallest rank whose share of Σσ² reaches γ (largest over a conv's input channels)",
            &keys,
        )?;
        for (l, cell) in self.layers.iter().zip(&cells) {
            panel(cell, l, self.gamma)?;
        }
        Ok(())
    }
}

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, l: &LayerDiagnostics, gamma: f64) -> Result<()> {
    let s = &l.spectrum;
    let n = s.mean.len();
    let (lo_vals, hi_vals) = if s.min.is_empty() { (&s.mean, &s.mean) } else { (&s.min, &s.max) };
    let positive = lo_vals.iter().chain(&s.mean).copied().filter(|v| *v > 0.0);
    let lo = positive.fold(f32::INFINITY, f32::min) as f64;
    let hi = hi_vals.iter().copied().fold(0.0f32, f32::max) as f64;
    let (lo, hi) = if lo.is_finite() && hi > 0.0 { (lo / 2.0, hi * 2.0) } else { (1e-12, 1.0) };
    // At least two decades, so the log axis always has two labelled powers of ten.
    let widen = (100.0 * lo / hi).max(1.0).sqrt();
    let (lo, hi) = (lo / widen, hi * widen);
    let floor = |v: f32| (v as f64).max(lo);
    let x_hi = n as f64 + 0.5;
    let k_note =
        if l.k > n { format!("k = {} (beyond the {n} shown)", l.k) } else { format!("k = {} of {}", l.k, s.len) };
    let shown = if n < s.len { format!(", first {n} of {} shown", s.len) } else { String::new() };
    let caption = format!("{} · {k_note}{shown}", short(&l.name, 30));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, text(15))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .right_y_label_area_size(48)
        .build_cartesian_2d(0.5..x_hi, (lo..hi).log_scale())
        .map_err(err)?
        .set_secondary_coord(0.5..x_hi, 0.0..1.05);
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(n.clamp(2, 8))
        .x_label_formatter(&integer)
        .y_labels(5)
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .x_desc("index of singular value")
        .y_desc("σ (log scale)")
        .label_style(text(12))
        .axis_desc_style(text(13))
        .draw()
        .map_err(err)?;
    chart
        .configure_secondary_axes()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .y_desc("cumulative share")
        .label_style(text(12))
        .axis_desc_style(text(13))
        .draw()
        .map_err(err)?;
    let xs = |i: usize| (i + 1) as f64;
    if !s.min.is_empty() {
        let upper = s.max.iter().enumerate().map(|(i, v)| (xs(i), floor(*v)));
        let lower = s.min.iter().enumerate().rev().map(|(i, v)| (xs(i), floor(*v)));
        let band = BLUE.mix(0.2).filled();
        if n == 1 {
            // One value per channel (1×1 kernels): the band is a bar around the single point.
            let (a, b) = (floor(s.min[0]), floor(s.max[0]));
            chart.draw_series([Rectangle::new([(0.85, a), (1.15, b)], band)]).map_err(err)?;
        } else {
            chart.draw_series([Polygon::new(upper.chain(lower).collect::<Vec<_>>(), band)]).map_err(err)?;
        }
    }
    let mean: Vec<(f64, f64)> = s.mean.iter().enumerate().map(|(i, v)| (xs(i), floor(*v))).collect();
    chart.draw_series(LineSeries::new(mean.clone(), BLUE.stroke_width(2))).map_err(err)?;
    let cum: Vec<(f64, f64)> = s.cumulative.iter().enumerate().map(|(i, v)| (xs(i), *v as f64)).collect();
    chart.draw_secondary_series(LineSeries::new(cum.clone(), ORANGE.stroke_width(2))).map_err(err)?;
    if n <= 24 {
        chart.draw_series(mean.iter().map(|&p| Circle::new(p, 3, BLUE.filled()))).map_err(err)?;
        chart.draw_secondary_series(cum.iter().map(|&p| Circle::new(p, 3, ORANGE.filled()))).map_err(err)?;
    }
    chart
        .draw_secondary_series(DashedLineSeries::new([(0.5, gamma), (x_hi, gamma)], 6, 4, GREY.stroke_width(2)))
        .map_err(err)?;
    if l.k <= n {
        let k = l.k as f64;
        chart.draw_secondary_series(LineSeries::new([(k, 0.0), (k, 1.05)], RED.stroke_width(2))).map_err(err)?;
    }
    Ok(())
}

//! delta_hist.png/svg: per layer, how many weights changed by how much (|ΔW| of the folded
//! weight, log-scale counts so the few large changes stay visible next to the many small ones).
use super::{err, grid, grid_size, header, sci, short, text, Draw, Key, BLUE, GREY};
use crate::error::Result;
use crate::report::diagnostics::LayerDiagnostics;
use plotters::coord::Shift;
use plotters::prelude::*;

pub struct Hists<'a>(pub &'a [LayerDiagnostics]);

impl Draw for Hists<'_> {
    fn size(&self) -> (u32, u32) {
        grid_size(self.0.len())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (head, cells) = grid(root, self.0.len());
        header(
            &head,
            "Histogram of |ΔW| per adapted layer",
            "ΔW = folded weight − original weight; each panel has its own |ΔW| range",
            &[(Key::Bar(BLUE), "weights per bin (log scale)"), (Key::Dashed(GREY), "mean |ΔW|")],
        )?;
        for (l, cell) in self.0.iter().zip(&cells) {
            panel(cell, l)?;
        }
        Ok(())
    }
}

fn panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, l: &LayerDiagnostics) -> Result<()> {
    let h = &l.delta_abs;
    let bins = h.counts.len().max(1);
    let x_hi = if h.max > 0.0 { h.max } else { 1.0 };
    let top = h.counts.iter().copied().max().unwrap_or(1).max(1) as f64;
    let mut caption = format!("{} · max {}", short(&l.name, 30), sci(h.max));
    if h.non_finite > 0 {
        caption += &format!(" · {} NaN/Inf", h.non_finite);
    }
    let mut chart = ChartBuilder::on(area)
        .caption(caption, text(15))
        .margin(10)
        .margin_right(22)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .build_cartesian_2d(0.0..x_hi, (0.8..top * 2.0).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_labels(5)
        .x_label_formatter(&|v| sci(*v))
        .y_labels(5)
        .y_label_formatter(&|v| if *v < 1e4 { format!("{v:.0}") } else { format!("{v:.0e}") })
        .x_desc("|ΔW|")
        .y_desc("weights (log scale)")
        .label_style(text(12))
        .axis_desc_style(text(13))
        .draw()
        .map_err(err)?;
    let width = x_hi / bins as f64;
    chart
        .draw_series(h.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, &c)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0.8), (x0 + width, c as f64)], BLUE.mix(0.7).filled())
        }))
        .map_err(err)?;
    if h.max > 0.0 {
        chart
            .draw_series(DashedLineSeries::new([(h.mean, 0.8), (h.mean, top * 2.0)], 6, 4, GREY.stroke_width(2)))
            .map_err(err)?;
    }
    Ok(())
}

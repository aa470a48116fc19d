//! training.png/svg: the loss per epoch, and forget/retain accuracy per epoch with epoch 0 the
//! model before unlearning.
use super::{err, header, integer, text, Draw, Key, BLUE, GREEN, HEADER, RED};
use crate::error::Result;
use crate::report::UnlearnReport;
use plotters::coord::Shift;
use plotters::prelude::*;

pub struct Curves<'a>(pub &'a UnlearnReport);

impl Draw for Curves<'_> {
    fn size(&self) -> (u32, u32) {
        (1240, HEADER + 440)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let r = self.0;
        let (head, body) = root.split_vertically(HEADER);
        let mut keys = vec![(Key::Line(BLUE), "training loss"), (Key::Line(RED), "forget accuracy")];
        if r.retain_accuracy.is_some() {
            keys.push((Key::Line(GREEN), "retain accuracy"));
        }
        let s = &r.settings;
        let semu = r.method == "semu";
        let gamma = if semu { format!(", γ {}", s.gamma) } else { String::new() };
        let subtitle = format!(
            "method {}: lr {}, α {}{gamma}, batch {}, {} epoch(s) run; epoch 0 = the model before unlearning",
            r.method,
            s.lr,
            s.alpha,
            s.batch_size,
            r.epochs.len()
        );
        header(&head, "Training curves", &subtitle, &keys)?;
        let (left, right) = body.split_horizontally(body.dim_in_pixel().0 / 2);
        let last = r.epochs.iter().map(|e| e.epoch).max().unwrap_or(1) as f64;
        let xr = -0.25..last + 0.25;
        let ticks = (last as usize + 1).min(11);

        let loss: Vec<(f64, f64)> =
            r.epochs.iter().map(|e| (e.epoch as f64, e.loss)).filter(|p| p.1.is_finite()).collect();
        let finite = loss.iter().map(|p| p.1).filter(|v| v.is_finite());
        let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.1).max(hi.abs().max(lo.abs()) * 0.05).max(1e-12);
        // A loss that cannot be negative keeps 0 as its floor; gradient ascent's can go below.
        let bottom = if lo >= 0.0 { (lo - pad).max(0.0) } else { lo - pad };
        // Enough decimals to tell about five ticks apart; scientific notation past three.
        let decimals = (-((hi - bottom + pad) / 5.0).log10().floor()).max(0.0) as usize;
        let fmt = move |v: &f64| if decimals > 3 { format!("{v:.2e}") } else { format!("{v:.decimals$}") };
        let mut c = ChartBuilder::on(&left)
            .caption(if semu { "Loss (random-label CE on forget + α × retain CE)" } else { "Training loss" }, text(16))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(84)
            .build_cartesian_2d(xr.clone(), bottom..hi + pad)
            .map_err(err)?;
        c.configure_mesh()
            .light_line_style(WHITE)
            .x_labels(ticks)
            .x_label_formatter(&integer)
            .y_label_formatter(&fmt)
            .x_desc("epoch")
            .y_desc("mean loss over batches")
            .label_style(text(13))
            .axis_desc_style(text(14))
            .draw()
            .map_err(err)?;
        series(&mut c, loss, BLUE, false)?;

        let mut c = ChartBuilder::on(&right)
            .caption("Accuracy on the true labels", text(16))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(xr, 0.0..105.0)
            .map_err(err)?;
        c.configure_mesh()
            .light_line_style(WHITE)
            .x_labels(ticks)
            .x_label_formatter(&integer)
            .y_label_formatter(&|v| format!("{v:.0}%"))
            .x_desc("epoch")
            .y_desc("accuracy (%)")
            .label_style(text(13))
            .axis_desc_style(text(14))
            .draw()
            .map_err(err)?;
        let forget: Vec<_> = std::iter::once((0.0, r.forget_accuracy.before))
            .chain(r.epochs.iter().map(|e| (e.epoch as f64, e.forget_acc)))
            .map(|(x, a)| (x, 100.0 * a))
            .collect();
        if let Some(ra) = &r.retain_accuracy {
            let retain = std::iter::once((0.0, ra.before))
                .chain(r.epochs.iter().filter_map(|e| e.retain_acc.map(|a| (e.epoch as f64, a))))
                .map(|(x, a)| (x, 100.0 * a))
                .collect();
            series(&mut c, retain, GREEN, true)?;
        }
        series(&mut c, forget, RED, false)?;
        Ok(())
    }
}

type Chart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A line with a dot per epoch; `under` draws it wider, for a series another may cover.
fn series<DB: DrawingBackend>(
    c: &mut Chart<'_, DB>,
    pts: Vec<(f64, f64)>,
    colour: RGBColor,
    under: bool,
) -> Result<()> {
    let (w, r) = if under { (4, 7) } else { (2, 4) };
    c.draw_series(LineSeries::new(pts.clone(), colour.stroke_width(w))).map_err(err)?;
    c.draw_series(pts.into_iter().map(|p| Circle::new(p, r, colour.filled()))).map_err(err)?;
    Ok(())
}

//! The report's figures, each drawn once per backend: PNG (a memory bitmap encoded by `image`)
//! and SVG. Text uses the embedded DejaVu Sans (see `super::font`), so no system fonts needed.
mod delta;
mod spectra;
mod training;

use super::font::{self, FAMILY};
use super::UnlearnReport;
use crate::error::{Error, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One figure, ready to write as `<stem>.png` and `<stem>.svg`.
pub struct Figure {
    pub stem: &'static str,
    pub title: String,
    pub png: Vec<u8>,
    pub svg: String,
}

/// Something drawable on any plotters backend.
trait Draw {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
}

pub(crate) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(crate) const ORANGE: RGBColor = RGBColor(230, 115, 0);
pub(crate) const GREEN: RGBColor = RGBColor(44, 160, 44);
pub(crate) const RED: RGBColor = RGBColor(214, 39, 40);
pub(crate) const GREY: RGBColor = RGBColor(110, 110, 110);

/// Every figure the report has data for: spectra and |ΔW| (when a layer was adapted) and the
/// training curves (when an epoch ran).
pub fn figures(r: &UnlearnReport) -> Result<Vec<Figure>> {
    font::register()?;
    let mut out = Vec::new();
    if !r.diagnostics.is_empty() {
        let s = spectra::Spectra { layers: &r.diagnostics, gamma: r.settings.gamma };
        out.push(render("spectra", "Singular-value spectra of the forget gradient".into(), &s)?);
    }
    if !r.epochs.is_empty() {
        out.push(render("training", "Training curves".into(), &training::Curves(r))?);
    }
    if !r.diagnostics.is_empty() {
        out.push(render("delta_hist", "Histogram of |ΔW| per layer".into(), &delta::Hists(&r.diagnostics))?);
    }
    Ok(out)
}

/// An RGB8 bitmap (plotters' buffer) as PNG bytes.
pub fn encode_png(buf: &[u8], w: u32, h: u32) -> std::result::Result<Vec<u8>, image::ImageError> {
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        buf,
        w,
        h,
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(png)
}

fn render(stem: &'static str, title: String, d: &impl Draw) -> Result<Figure> {
    let (w, h) = d.size();
    let mut buf = vec![0u8; (w as usize) * (h as usize) * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        d.draw(&root)?;
        root.present().map_err(err)?;
    }
    let png = encode_png(&buf, w, h).map_err(|e| Error::msg(format!("encoding {stem}.png: {e}")))?;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        d.draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(Figure { stem, title, png, svg })
}

pub(crate) fn err(e: impl std::fmt::Display) -> Error {
    Error::msg(format!("drawing a report plot: {e}"))
}

pub(crate) fn text(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

/// Panel width and height of the small multiples, and the header above them.
pub(crate) const PANEL: (u32, u32) = (460, 320);
pub(crate) const HEADER: u32 = 96;

/// Columns of a grid of `n` small multiples.
pub(crate) fn columns(n: usize) -> usize {
    match n {
        0 | 1 => 1,
        2 | 4 => 2,
        3 | 5..=9 => 3,
        _ => 4,
    }
}

/// Size of a figure with a header and `n` panels.
pub(crate) fn grid_size(n: usize) -> (u32, u32) {
    let cols = columns(n);
    let rows = n.div_ceil(cols).max(1);
    (PANEL.0 * cols as u32, HEADER + PANEL.1 * rows as u32)
}

/// Splits `root` into the header and the first `n` cells of the grid.
pub(crate) fn grid<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    n: usize,
) -> (DrawingArea<DB, Shift>, Vec<DrawingArea<DB, Shift>>) {
    let (head, body) = root.split_vertically(HEADER);
    let cols = columns(n);
    let mut cells = body.split_evenly((n.div_ceil(cols).max(1), cols));
    cells.truncate(n);
    (head, cells)
}

/// A legend entry drawn in a figure's header.
pub(crate) enum Key {
    Line(RGBColor),
    Dashed(RGBColor),
    Band(RGBColor),
    Bar(RGBColor),
}

/// Title, subtitle and one row of legend entries.
pub(crate) fn header<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
    keys: &[(Key, &str)],
) -> Result<()> {
    let bold = (FAMILY, 22, FontStyle::Bold).into_font().color(&BLACK);
    area.draw_text(title, &bold, (16, 10)).map_err(err)?;
    area.draw_text(subtitle, &text(15).color(&GREY), (16, 40)).map_err(err)?;
    let (mut x, y) = (16i32, 72i32);
    for (key, label) in keys {
        match key {
            Key::Line(c) => area.draw(&PathElement::new([(x, y), (x + 28, y)], c.stroke_width(3))),
            Key::Dashed(c) => {
                let s = c.stroke_width(2);
                area.draw(&PathElement::new([(x, y), (x + 10, y)], s))
                    .and_then(|_| area.draw(&PathElement::new([(x + 17, y), (x + 28, y)], s)))
            }
            Key::Band(c) => area.draw(&Rectangle::new([(x, y - 7), (x + 28, y + 7)], c.mix(0.25).filled())),
            Key::Bar(c) => area.draw(&Rectangle::new([(x + 4, y - 8), (x + 24, y + 8)], c.mix(0.7).filled())),
        }
        .map_err(err)?;
        let style = text(15).pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ));
        area.draw_text(label, &style, (x + 36, y)).map_err(err)?;
        let (w, _) = area.estimate_text_size(label, &text(15)).map_err(err)?;
        x += 36 + w as i32 + 28;
    }
    Ok(())
}

/// A layer name cut to `max` characters, keeping its end (the distinctive part).
pub(crate) fn short(name: &str, max: usize) -> String {
    let n = name.chars().count();
    if n <= max {
        return name.to_string();
    }
    let tail: String = name.chars().skip(n - (max - 1)).collect();
    format!("…{tail}")
}

/// Tick label for a value on a linear axis that can span many orders of magnitude.
pub(crate) fn sci(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (1e-2..1e4).contains(&v.abs()) {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        format!("{v:.1e}")
    }
}

/// Integer tick labels only (fractional ticks stay unlabelled).
pub(crate) fn integer(v: &f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_end_and_grids_fit() {
        assert_eq!(short("layer1.0.conv1.weight", 10), "…v1.weight");
        assert_eq!(short("fc", 10), "fc");
        assert_eq!(sci(0.00123), "1.2e-3");
        assert_eq!(sci(0.5), "0.5");
        assert_eq!(integer(&2.0), "2");
        assert_eq!(integer(&2.5), "");
        for n in 1..30 {
            let cols = columns(n);
            assert!(cols * n.div_ceil(cols) >= n && cols <= 4);
        }
        assert_eq!(grid_size(5), (3 * PANEL.0, HEADER + 2 * PANEL.1));
    }
}

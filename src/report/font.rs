//! Text for plotters without system fonts or fontconfig: DejaVu Sans, embedded by the `dejavu`
//! crate, registered once with ab_glyph as "sans-serif" (bitmap text is drawn with it; SVG text
//! is laid out with its metrics and names the family).
use crate::error::{Error, Result};
use plotters::style::FontStyle;
use std::sync::OnceLock;

/// The font family every plot uses.
pub const FAMILY: &str = "sans-serif";

/// Registers DejaVu Sans (regular and bold) as [`FAMILY`]; idempotent.
pub fn register() -> Result<()> {
    static LOADED: OnceLock<bool> = OnceLock::new();
    let ok = *LOADED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FAMILY, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| Error::msg("the embedded DejaVu Sans font could not be loaded"))
}

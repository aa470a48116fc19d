//! Bounds on work that a file decides: how many elements one tensor may hold (ops whose output
//! shape comes from data, such as ConstantOfShape, Expand, Tile, Resize; `.npy` headers) and how
//! many pixels one image may have before it is decoded. A hostile or broken file then gets an
//! error naming the tensor and the size instead of a terabyte allocation.
//!
//! The element bound is process-wide: `SEMU_MAX_ELEMENTS`, or [`set_max_elements`] (the CLI's
//! `--max-elements`), else [`DEFAULT_MAX_ELEMENTS`].
use std::sync::atomic::{AtomicU64, Ordering};

/// 2^33 elements: 32 GiB of float32 in one tensor, above any single tensor of the largest
/// models semu handles (a 256k-token × 16k embedding is 2^32).
pub const DEFAULT_MAX_ELEMENTS: u64 = 1 << 33;

/// Pixels (width × height) of one image: 2^28, a 16384 × 16384 picture.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 28;

/// 0 = not set yet (read `SEMU_MAX_ELEMENTS` on first use).
static MAX_ELEMENTS: AtomicU64 = AtomicU64::new(0);

/// The bound on elements per tensor.
pub fn max_elements() -> u64 {
    match MAX_ELEMENTS.load(Ordering::Relaxed) {
        0 => {
            let n =
                std::env::var("SEMU_MAX_ELEMENTS").ok().and_then(|v| parse_count(&v)).unwrap_or(DEFAULT_MAX_ELEMENTS);
            MAX_ELEMENTS.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

/// Sets the bound for the rest of the process (0 restores the default).
pub fn set_max_elements(n: u64) {
    MAX_ELEMENTS.store(if n == 0 { DEFAULT_MAX_ELEMENTS } else { n }, Ordering::Relaxed);
}

/// A positive count: digits, optionally `2^K` or with a K/M/G/T suffix (powers of 1024).
pub fn parse_count(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(k) = s.strip_prefix("2^") {
        return k.parse::<u32>().ok().filter(|&k| k < 64).map(|k| 1u64 << k);
    }
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (&s[..i], c.to_ascii_uppercase()),
        _ => (s, ' '),
    };
    let shift = match unit {
        ' ' => 0,
        'K' => 10,
        'M' => 20,
        'G' => 30,
        'T' => 40,
        _ => return None,
    };
    digits.trim().parse::<u64>().ok().filter(|&n| n > 0).and_then(|n| n.checked_mul(1 << shift))
}

/// The element count of `dims`, or why it may not be allocated: a negative dim, an overflow, or
/// more than [`max_elements`].
pub fn check_elements(dims: &[i64]) -> Result<u64, String> {
    if let Some(d) = dims.iter().find(|&&d| d < 0) {
        return Err(format!("shape {dims:?} has a negative dim {d}"));
    }
    let max = max_elements();
    let n = dims.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64));
    match n {
        Some(n) if n <= max => Ok(n),
        Some(n) => Err(format!(
            "shape {dims:?} holds {n} elements, over the limit of {max} (raise it with --max-elements or \
             SEMU_MAX_ELEMENTS)"
        )),
        None => Err(format!("shape {dims:?} holds more elements than a 64-bit count (limit {max})")),
    }
}

/// Why an image of `w` × `h` pixels is not decoded, if it is too large.
pub fn check_image(w: u32, h: u32) -> Result<(), String> {
    let px = w as u64 * h as u64;
    if px > MAX_IMAGE_PIXELS {
        return Err(format!("the image is {w}×{h} = {px} pixels, over the limit of {MAX_IMAGE_PIXELS}"));
    }
    Ok(())
}

/// `image` decoder limits matching [`check_image`] (and memory for one such image in RGBA f32).
pub fn image_limits() -> image::Limits {
    let mut l = image::Limits::default();
    l.max_image_width = Some(1 << 16);
    l.max_image_height = Some(1 << 16);
    l.max_alloc = Some(MAX_IMAGE_PIXELS * 16);
    l
}

/// Decodes an image after reading its size from the header: one past [`check_image`] is refused
/// before any pixel is decoded. Errors: "too large: …" or "unreadable image (…)".
pub fn decode_image<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
) -> Result<image::DynamicImage, String> {
    use image::ImageDecoder;
    reader.limits(image_limits());
    let decoder = reader.into_decoder().map_err(|e| format!("unreadable image ({e})"))?;
    let (w, h) = decoder.dimensions();
    check_image(w, h).map_err(|e| format!("too large: {e}"))?;
    image::DynamicImage::from_decoder(decoder).map_err(|e| format!("unreadable image ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_parse_with_units_and_powers() {
        assert_eq!(parse_count("1000"), Some(1000));
        assert_eq!(parse_count("2^33"), Some(1 << 33));
        assert_eq!(parse_count("4G"), Some(4 << 30));
        assert_eq!(parse_count("64g"), Some(64 << 30));
        assert_eq!(parse_count("0"), None);
        assert_eq!(parse_count("2^64"), None);
        assert_eq!(parse_count("x"), None);
        assert_eq!(parse_count("-1"), None);
    }

    #[test]
    fn element_counts_are_bounded() {
        assert_eq!(check_elements(&[2, 3]), Ok(6));
        let e = check_elements(&[1_000_000, 1_000_000]).unwrap_err();
        assert!(e.contains("1000000000000 elements, over the limit of 8589934592"), "{e}");
        assert!(check_elements(&[i64::MAX, i64::MAX]).unwrap_err().contains("64-bit"));
        assert!(check_elements(&[-1, 3]).unwrap_err().contains("negative dim -1"));
        assert!(check_image(20000, 20000).unwrap_err().contains("400000000 pixels"));
        assert!(check_image(4000, 3000).is_ok());
    }
}

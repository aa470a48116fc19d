//! A look at `.npy` headers (alone, or inside an `.npz` archive) before any array is read: the
//! shape each promises must fit the element bound ([`crate::limits`]), so a few hundred bytes
//! claiming 10^12 elements get an error naming the array instead of a terabyte allocation.
use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers are a few hundred bytes; more is no `.npy` file.
const MAX_HEADER: usize = 1 << 20;

/// Checks the header of the `.npy` file at `path`.
pub fn check_npy(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::msg(format!("{}: {reason}", path.display()));
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    check_header(&mut f).map_err(bad)
}

/// Checks the header of every `.npy` array in the `.npz` archive at `path` (reading only the
/// headers; compressed members are inflated no further).
pub fn check_npz(path: &Path) -> Result<()> {
    let bad = |reason: String| Error::msg(format!("{}: {reason}", path.display()));
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f))
        .map_err(|e| bad(format!("not a readable .npz archive ({e})")))?;
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| bad(format!("not a readable .npz archive ({e})")))?;
        let name = member.name().to_string();
        check_header(&mut member).map_err(|e| bad(format!("array '{name}': {e}")))?;
    }
    Ok(())
}

/// Reads a header from `r` and checks the shape it declares.
fn check_header(r: &mut impl Read) -> Result<(), String> {
    shape_of(r).and_then(|shape| crate::limits::check_elements(&shape).map(|_| ()))
}

/// The shape an `.npy` header declares.
fn shape_of(r: &mut impl Read) -> Result<Vec<i64>, String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|_| "too short for an .npy header".to_string())?;
    if &pre[..6] != MAGIC {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let len = if pre[6] == 1 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).map_err(|_| "truncated .npy header".to_string())?;
        u16::from_le_bytes(b) as usize
    } else {
        let mut b = [0u8; 4];
        r.read_exact(&mut b).map_err(|_| "truncated .npy header".to_string())?;
        u32::from_le_bytes(b) as usize
    };
    if len > MAX_HEADER {
        return Err(format!("the .npy header claims {len} bytes"));
    }
    let mut h = vec![0u8; len];
    r.read_exact(&mut h).map_err(|_| "truncated .npy header".to_string())?;
    parse_shape(&String::from_utf8_lossy(&h))
}

/// The `'shape': (a, b, …)` entry of a header dictionary.
fn parse_shape(h: &str) -> Result<Vec<i64>, String> {
    let bad = || format!("the .npy header has no readable shape: {}", h.trim());
    let at = h.find("'shape'").or_else(|| h.find("\"shape\"")).ok_or_else(bad)?;
    let rest = &h[at..];
    let open = rest.find('(').ok_or_else(bad)?;
    let close = rest[open..].find(')').ok_or_else(bad)? + open;
    rest[open + 1..close]
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<i64>().map_err(|_| bad()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &str) -> Vec<u8> {
        let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((dict.len() as u16).to_le_bytes());
        v.extend(dict.bytes());
        v
    }

    #[test]
    fn shapes_are_read_and_bounded() {
        assert_eq!(shape_of(&mut npy("(3, 4)").as_slice()), Ok(vec![3, 4]));
        assert_eq!(shape_of(&mut npy("(5,)").as_slice()), Ok(vec![5]));
        assert_eq!(shape_of(&mut npy("()").as_slice()), Ok(vec![]));
        let e = check_header(&mut npy("(1000000, 1000000)").as_slice()).unwrap_err();
        assert!(e.contains("1000000000000 elements, over the limit"), "{e}");
        assert!(check_header(&mut npy("(-3, 4)").as_slice()).unwrap_err().contains("negative"));
        assert!(check_header(&mut &b"PK\x03\x04junk"[..]).unwrap_err().contains("magic"));
    }
}

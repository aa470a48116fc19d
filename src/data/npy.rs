//! `.npy` arrays and `.npz` archives of them, read with every length checked: the header's
//! shape and type must describe exactly the payload that follows, checked before any buffer of
//! that size is allocated or any tensor is built. `.npy` pairs: inputs in one file (`x.npy`),
//! labels in another (`y.npy`), as `np.save` writes them, held in memory like an `.npz` archive.
use super::NpzDataset;
use crate::error::{Error, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";
/// Headers are a short dict; numpy itself refuses to read longer ones by default.
const MAX_HEADER: usize = 1 << 16;

/// An array's header: element type, byte size, C-order shape.
#[derive(Debug, PartialEq)]
struct Header {
    kind: Kind,
    size: usize,
    shape: Vec<i64>,
}

impl Header {
    /// The payload's exact byte count; `None` when it overflows.
    fn payload_bytes(&self) -> Option<u64> {
        self.shape.iter().try_fold(self.size as u64, |acc, &d| acc.checked_mul(d as u64))
    }
}

/// The element type of a `descr` such as `<f4` or `|u1` (little-endian or byte-sized only).
fn kind_of(descr: &str) -> Option<(Kind, usize)> {
    let (order, code) = descr.split_at(descr.chars().next().map_or(0, char::len_utf8));
    let (order, code) = if matches!(order, "<" | ">" | "|" | "=") { (order, code) } else { ("=", descr) };
    let (kind, size) = match code {
        "f2" | "e" => (Kind::Half, 2),
        "f4" | "f" => (Kind::Float, 4),
        "f8" | "d" => (Kind::Double, 8),
        "i1" | "b" => (Kind::Int8, 1),
        "i2" | "h" => (Kind::Int16, 2),
        "i4" | "i" => (Kind::Int, 4),
        "i8" | "q" => (Kind::Int64, 8),
        "u1" | "B" => (Kind::Uint8, 1),
        "b1" | "?" => (Kind::Bool, 1),
        "c8" | "F" => (Kind::ComplexFloat, 8),
        "c16" | "D" => (Kind::ComplexDouble, 16),
        _ => return None,
    };
    (order != ">" || size == 1).then_some((kind, size))
}

/// The text after `'key':` in a header dict, up to the end of its value.
fn value_of<'a>(dict: &'a str, key: &str) -> Option<&'a str> {
    let at =
        [format!("'{key}'"), format!("\"{key}\"")].iter().find_map(|k| dict.find(k.as_str()).map(|i| i + k.len()))?;
    dict[at..].trim_start().strip_prefix(':').map(str::trim_start)
}

/// Parses a header dict: `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`.
fn parse_header(dict: &str) -> std::result::Result<Header, String> {
    let descr = value_of(dict, "descr").ok_or("no 'descr'")?;
    let q = descr.chars().next().filter(|c| *c == '\'' || *c == '"').ok_or("'descr' is not a string")?;
    let descr = descr[1..].split(q).next().unwrap_or_default();
    let (kind, size) = kind_of(descr).ok_or_else(|| format!("element type '{descr}' is not supported"))?;
    match value_of(dict, "fortran_order") {
        Some(v) if v.starts_with("False") => {}
        Some(v) if v.starts_with("True") => return Err("Fortran-order arrays are not supported".into()),
        _ => return Err("no 'fortran_order'".into()),
    }
    let shape = value_of(dict, "shape").and_then(|v| v.strip_prefix('(')).ok_or("no 'shape' tuple")?;
    let shape = shape.split(')').next().unwrap_or_default();
    let shape = shape
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| d.parse::<u32>().map(i64::from).map_err(|_| format!("shape entry '{d}' is not a size")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(Header { kind, size, shape })
}

/// Reads the magic, version and header of an array.
fn read_header(r: &mut impl Read) -> std::result::Result<(Header, usize), String> {
    let mut pre = [0u8; 8];
    r.read_exact(&mut pre).map_err(|_| "too short for an .npy header")?;
    if &pre[..6] != MAGIC {
        return Err("not an .npy array (no \\x93NUMPY magic)".into());
    }
    let len = match pre[6] {
        1 => {
            let mut b = [0u8; 2];
            r.read_exact(&mut b).map_err(|_| "truncated header")?;
            u16::from_le_bytes(b) as usize
        }
        2 | 3 => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(|_| "truncated header")?;
            u32::from_le_bytes(b) as usize
        }
        v => return Err(format!("format version {v} is not supported")),
    };
    if len > MAX_HEADER {
        return Err(format!("a header of {len} bytes (at most {MAX_HEADER})"));
    }
    let mut dict = vec![0u8; len];
    r.read_exact(&mut dict).map_err(|_| "truncated header")?;
    let used = 8 + if pre[6] == 1 { 2 } else { 4 } + len;
    Ok((parse_header(&String::from_utf8_lossy(&dict))?, used))
}

/// One array from `r`, an entry of `total` bytes (header included) when known: the header must
/// describe exactly the payload that follows it.
fn read_array(r: &mut impl Read, total: Option<u64>) -> std::result::Result<Tensor, String> {
    let (h, used) = read_header(r)?;
    let want = h.payload_bytes().ok_or_else(|| format!("shape {:?} overflows", h.shape))?;
    let short = |have: String| {
        format!("its header promises {:?} of {:?} ({want} bytes) but the payload holds {have} bytes", h.shape, h.kind)
    };
    if let Some(have) = total.map(|t| t.saturating_sub(used as u64)).filter(|&a| a != want) {
        return Err(short(have.to_string()));
    }
    // Read no more than promised (+1 to notice extra bytes); the buffer grows with what arrives,
    // so a lying header or entry size cannot make it allocate.
    let mut data = Vec::new();
    r.take(want.saturating_add(1)).read_to_end(&mut data).map_err(|e| format!("unreadable payload ({e})"))?;
    if data.len() as u64 != want {
        return Err(short(if data.len() as u64 > want { format!("more than {want}") } else { data.len().to_string() }));
    }
    Tensor::f_from_data_size(&data, &h.shape, h.kind).map_err(|e| e.to_string())
}

/// An `.npy` file (a regular file; its size is checked against the header).
pub fn read_npy(path: &Path) -> Result<Tensor> {
    let len = crate::paths::regular_file(path)?.len();
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_array(&mut std::io::BufReader::new(f), Some(len))
        .map_err(|why| Error::msg(format!("{}: not a readable .npy array: {why}", path.display())))
}

/// Every array of an `.npz` archive, named as stored less a trailing `.npy`; each entry's size is
/// checked against its header, and an error names the file and the array.
pub fn read_npz(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |why: String| Error::msg(format!("{}: not a readable .npz archive: {why}", path.display()));
    crate::paths::regular_file(path)?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(f)).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| bad(e.to_string()))?;
        let stored = entry.name().to_string();
        let name = stored.strip_suffix(".npy").unwrap_or(&stored).to_string();
        let size = entry.size();
        let t = read_array(&mut entry, Some(size))
            .map_err(|why| Error::msg(format!("{}: array `{name}`: {why}", path.display())))?;
        out.push((name, t));
    }
    Ok(out)
}

impl NpzDataset {
    /// Inputs from `x` and labels from `y`, both `.npy` files with the same first dimension.
    pub fn open_npy_pair(x: &Path, y: &Path) -> Result<Self> {
        let read = |p: &Path| {
            if !p.is_file() {
                return Err(Error::msg(format!("{}: no such file", p.display())));
            }
            super::npy_header::check_npy(p)?;
            let t = read_npy(p)?;
            super::real_numbers(&t).map_err(|why| Error::msg(format!("{} {why}", p.display())))?;
            Ok(t)
        };
        let (xt, yt) = (read(x)?, read(y)?);
        Self::from_tensors(format!("{} + {}", x.display(), y.display()), xt, yt)
    }
}

/// The labels beside an inputs file: `y.npy` next to `x.npy`, or `NAME_y.npy` next to `NAME_x.npy`.
pub fn sibling_labels(x: &Path) -> Result<PathBuf> {
    let stem = x.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let y_stem = if stem == "x" { Some("y".to_string()) } else { stem.strip_suffix("_x").map(|s| format!("{s}_y")) };
    match y_stem.map(|s| x.with_file_name(format!("{s}.npy"))) {
        Some(y) if y.is_file() => Ok(y),
        Some(y) => Err(Error::msg(format!("{}: its labels file {} does not exist", x.display(), y.display()))),
        None => Err(Error::msg(format!(
            "{}: a .npy file holds inputs only: give the labels file too (or name the pair x.npy and y.npy)",
            x.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `.npy` image: `header` padded as numpy pads it, then `payload`.
    fn npy(header: &str, payload: &[u8]) -> Vec<u8> {
        let mut h = header.to_string();
        while !(10 + h.len() + 1).is_multiple_of(16) {
            h.push(' ');
        }
        h.push('\n');
        let mut v = MAGIC.to_vec();
        v.extend([1, 0]);
        v.extend((h.len() as u16).to_le_bytes());
        v.extend(h.as_bytes());
        v.extend(payload);
        v
    }

    #[test]
    fn headers_parse_and_describe_their_payload() {
        let h = parse_header("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }").unwrap();
        assert_eq!(h, Header { kind: Kind::Float, size: 4, shape: vec![3, 4] });
        assert_eq!(h.payload_bytes(), Some(48));
        let scalar = parse_header("{'descr': '|u1', 'fortran_order': False, 'shape': (), }").unwrap();
        assert_eq!((scalar.shape.len(), scalar.payload_bytes()), (0, Some(1)));
        for bad in [
            "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }",
            "{'descr': '<U8', 'fortran_order': False, 'shape': (3,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-3,), }",
            "{'descr': '<f4', 'fortran_order': False}",
        ] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn payloads_shorter_or_longer_than_the_header_are_refused() {
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
        let bytes: Vec<u8> = [1f32, 2.0, 3.0, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        let ok = npy(header, &bytes);
        let t = read_array(&mut ok.as_slice(), Some(ok.len() as u64)).unwrap();
        assert_eq!(Vec::<f32>::try_from(t.flatten(0, -1)).unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
        // The size of the entry given or not, a short payload is caught before a tensor is built.
        let short = npy(header, &bytes[..12]);
        for total in [Some(short.len() as u64), None] {
            let e = read_array(&mut short.as_slice(), total).unwrap_err();
            assert!(e.contains("16 bytes") && e.contains("holds 12"), "{e}");
        }
        let long = npy(header, &[bytes.as_slice(), &[0; 4]].concat());
        assert!(read_array(&mut long.as_slice(), None).unwrap_err().contains("more than 16"));
        // 4e12 elements promised by a header of a few bytes: refused, nothing allocated.
        let huge = npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2000000, 2000000), }", &bytes);
        let e = read_array(&mut huge.as_slice(), Some(huge.len() as u64)).unwrap_err();
        assert!(e.contains("16000000000000 bytes"), "{e}");
    }
}

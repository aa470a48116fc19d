//! File images shared by the integration tests that write hostile inputs (`mod common;`).
#![allow(dead_code)] // each test file uses some of them

/// An `.npy` image: the header dictionary `dict`, padded as numpy pads it, then `payload`.
pub fn npy_dict(dict: &str, payload: &[u8]) -> Vec<u8> {
    let mut h = dict.to_string();
    while !(h.len() + 11).is_multiple_of(16) {
        h.push(' ');
    }
    h.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend((h.len() as u16).to_le_bytes());
    v.extend(h.as_bytes());
    v.extend(payload);
    v
}

/// An `.npy` image whose header says `descr` and `shape` (a Python tuple: `(2, 3)`, `(4,)`).
pub fn npy(descr: &str, shape: &str, payload: &[u8]) -> Vec<u8> {
    npy_dict(&format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"), payload)
}

/// An `.npz` archive at `path` holding `entries` (name, `.npy` image), as `np.savez` writes it.
pub fn npz(path: &std::path::Path, entries: &[(&str, Vec<u8>)]) {
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in entries {
        z.start_file(*name, zip::write::FileOptions::default()).unwrap();
        std::io::Write::write_all(&mut z, bytes).unwrap();
    }
    z.finish().unwrap();
}

/// An 8-bit greyscale PNG whose header says `w` × `h`, with `idat` (zlib data) as its pixels.
pub fn png(w: u32, h: u32, idat: &[u8]) -> Vec<u8> {
    let chunk = |out: &mut Vec<u8>, kind: &[u8], data: &[u8]| {
        out.extend((data.len() as u32).to_be_bytes());
        let mut c = crc32fast::Hasher::new();
        c.update(kind);
        c.update(data);
        out.extend(kind);
        out.extend(data);
        out.extend(c.finalize().to_be_bytes());
    };
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit greyscale
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", idat);
    chunk(&mut png, b"IEND", &[]);
    png
}

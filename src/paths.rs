//! Files named by other files (external data, index shards, ImageFolder entries) and files given
//! on the command line: real paths (symlinks resolved) must stay inside the folder the user
//! named, and only regular files are opened — a FIFO would block `open()` forever, a device or a
//! folder is never data. Checked on metadata, before anything is opened.
use crate::error::{Error, Result};
use std::fs::Metadata;
use std::path::{Component, Path, PathBuf};

/// What kind of file `m` describes, for messages.
fn kind(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// `path`'s metadata (links followed), refusing anything but a regular file.
pub fn regular_file(path: &Path) -> Result<Metadata> {
    let m = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !m.is_file() {
        return Err(Error::msg(format!("{}: is {}, not a regular file: give a file", path.display(), kind(&m))));
    }
    Ok(m)
}

/// `rel` lexically inside `base`: relative, without `..`.
pub fn relative_inside(base: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::msg(format!("{what} '{rel}' must be a relative path inside {}", shown(base))));
    }
    Ok(base.join(p))
}

/// The regular file `rel` names inside `base`: lexically inside, and its real path (every
/// symlink resolved) inside `base`'s real path. `what` names the reference in messages
/// ("external data location", "shard").
pub fn file_inside(base: &Path, rel: &str, what: &str) -> Result<PathBuf> {
    let joined = relative_inside(base, rel, what)?;
    let real = joined.canonicalize().map_err(|e| Error::io(&joined, e))?;
    check_inside(base, &real, &format!("{what} '{rel}'"))?;
    regular_file(&real)?;
    Ok(joined)
}

/// The folder `path` lies in: its parent, or "." for a bare file name (whose parent is "", which
/// names no folder to create, canonicalize or write beside).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Refuses `real` (a canonical path) unless it lies inside `base`'s real path.
pub fn check_inside(base: &Path, real: &Path, what: &str) -> Result<()> {
    let here = if base.as_os_str().is_empty() { Path::new(".") } else { base };
    let root = here.canonicalize().map_err(|e| Error::io(here, e))?;
    if !real.starts_with(&root) {
        return Err(Error::msg(format!(
            "{what} resolves to {}, outside {} (a symbolic link leaving the folder is refused)",
            real.display(),
            shown(base)
        )));
    }
    Ok(())
}

/// An output file about to be written, checked before any work: an existing one must be a
/// regular file (a device, FIFO or folder is never replaced), its folder a folder, and it must
/// not be any of `inputs` (same real path). `flag` names it in messages.
pub fn check_output(path: &Path, flag: &str, inputs: &[&Path]) -> Result<()> {
    if let Ok(m) = std::fs::metadata(path) {
        if !m.is_file() {
            return Err(Error::msg(format!(
                "{flag} {}: is {}; only a regular file is ever replaced: give a file path",
                path.display(),
                kind(&m)
            )));
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if std::fs::metadata(parent).is_ok_and(|m| !m.is_dir()) {
            return Err(Error::msg(format!("{flag} {}: {} is not a folder", path.display(), parent.display())));
        }
    }
    if let Ok(real) = path.canonicalize() {
        if let Some(input) = inputs.iter().find(|i| i.canonicalize().is_ok_and(|r| r == real)) {
            return Err(Error::msg(format!(
                "{flag} {}: is the input {}; it is never overwritten: write elsewhere",
                path.display(),
                input.display()
            )));
        }
    }
    Ok(())
}

/// An output folder, checked before any work: an existing path must be a folder.
pub fn check_output_dir(path: &Path, flag: &str) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if !m.is_dir() => Err(Error::msg(format!(
            "{flag} {}: is {}, not a folder: give a folder path",
            path.display(),
            if m.is_file() { "a file" } else { kind(&m) }
        ))),
        _ => Ok(()),
    }
}

fn shown(base: &Path) -> String {
    if base.as_os_str().is_empty() {
        "the current folder".into()
    } else {
        format!("the folder {}", base.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_non_regular_files_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let (dir, out) = (root.path(), outside.path());
        std::fs::write(dir.join("ok.bin"), b"x").unwrap();
        std::fs::write(out.join("secret"), b"x").unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::os::unix::fs::symlink(out.join("secret"), dir.join("link.bin")).unwrap();
        std::os::unix::fs::symlink(out, dir.join("linked_dir")).unwrap();
        std::os::unix::fs::symlink(dir.join("ok.bin"), dir.join("sub/inside_link")).unwrap();
        assert_eq!(file_inside(dir, "ok.bin", "location").unwrap(), dir.join("ok.bin"));
        file_inside(dir, "sub/inside_link", "location").unwrap();
        for bad in ["link.bin", "linked_dir/secret", "../x", "/etc/passwd", ""] {
            assert!(file_inside(dir, bad, "location").is_err(), "{bad}");
        }
        let e = file_inside(dir, "link.bin", "location").unwrap_err().to_string();
        assert!(e.contains("link.bin") && e.contains("outside"), "{e}");
        let e = file_inside(dir, "sub", "location").unwrap_err().to_string();
        assert!(e.contains("a folder"), "{e}");
    }

    #[test]
    fn outputs_replace_only_regular_files_and_never_an_input() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        std::fs::write(dir.join("model.onnx"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("model.onnx"), dir.join("alias.onnx")).unwrap();
        let model = dir.join("model.onnx");
        check_output(&dir.join("new.onnx"), "--out", &[&model]).unwrap();
        check_output(&dir.join("alias.onnx"), "--out", &[]).unwrap();
        for bad in ["model.onnx", "alias.onnx"] {
            let e = check_output(&dir.join(bad), "--out", &[&model]).unwrap_err().to_string();
            assert!(e.contains("--out") && e.contains("is the input"), "{e}");
        }
        assert!(check_output(dir, "--out", &[]).unwrap_err().to_string().contains("a folder"));
        assert!(check_output(Path::new("/dev/null"), "--out", &[]).unwrap_err().to_string().contains("a device"));
        assert!(check_output(&dir.join("model.onnx/x"), "--out", &[])
            .unwrap_err()
            .to_string()
            .contains("not a folder"));
        check_output_dir(&dir.join("reports"), "--report-dir").unwrap();
        assert!(check_output_dir(&model, "--report-dir").unwrap_err().to_string().contains("a file"));
    }
}

//! Staging folders: an export is written into `.semu-staging-<pid>-XXXXXX` beside its destination
//! and moved into place by [`Staged::commit`]. Live folders are registered so that an interrupt
//! (SIGINT/SIGTERM, handled by the binary) removes them with [`remove_live`]; a folder left by a
//! run that was killed outright is removed by the next run on the same output ([`create`]).
use super::model::SavedModel;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const PREFIX: &str = ".semu-staging-";
/// A file in each staging folder holding the output's file name: which output a stale folder was for.
const OWNER: &str = ".semu-out";

/// The live staging folders; `None` once [`remove_live`] ran (the process is being interrupted).
static LIVE: Mutex<Option<Vec<PathBuf>>> = Mutex::new(Some(Vec::new()));

fn live() -> std::sync::MutexGuard<'static, Option<Vec<PathBuf>>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every live staging folder and refuses new ones; returns each with the outcome. For
/// the interrupt handler, which then ends the process.
pub fn remove_live() -> Vec<(PathBuf, std::io::Result<()>)> {
    let dirs = live().take().unwrap_or_default();
    dirs.into_iter()
        .map(|d| {
            let r = remove_while_written(&d);
            (d, r)
        })
        .collect()
}

/// `remove_dir_all`, retried for a while: the main thread may still be writing a file into the
/// folder when the signal arrives, so the first pass can meet a new entry (ENOTEMPTY); once the
/// folder is gone its writes fail and nothing more appears.
fn remove_while_written(dir: &Path) -> std::io::Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(_) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r,
        }
    }
}

/// A new staging folder in `out_dir` for the output file `out_name`, registered as live, after
/// removing the folders that killed runs left for the same output (others are named in a warning).
pub(super) fn create(out_dir: &Path, out_name: &str) -> Result<LiveDir> {
    clean_stale(out_dir, out_name);
    let prefix = format!("{PREFIX}{}-", std::process::id());
    let dir = LiveDir::new(out_dir, || tempfile::Builder::new().prefix(&prefix).tempdir_in(out_dir))?;
    let owner = dir.path().join(OWNER);
    std::fs::write(&owner, out_name).map_err(|e| Error::io(&owner, e))?;
    Ok(dir)
}

/// Claims the output file `out` for this run, from its start: a staging folder made now, so that
/// a second semu started on the same output while this one works is refused rather than racing
/// it (each would report the hash of a file the other then replaced). Dropping it releases `out`.
/// `None` when `out`'s folder does not exist yet (the export makes it; nothing is made before).
pub fn claim(out: &Path) -> Result<Option<Claim>> {
    let dir = crate::paths::folder_of(out);
    if !dir.is_dir() {
        return Ok(None);
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mine = create(dir, &name)?;
    // Made first, looked for second: two runs starting together may both stop, never both go on.
    for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.flatten() {
        let folder = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = folder.strip_prefix(PREFIX).and_then(|r| r.split('-').next()?.parse::<i32>().ok()) else {
            continue;
        };
        let owner = std::fs::read_to_string(e.path().join(OWNER)).ok();
        if pid as u32 != std::process::id() && alive(pid) && owner.as_deref() == Some(name.as_str()) {
            return Err(Error::msg(format!(
                "{}: another semu (pid {pid}) is writing this output; wait for it to finish or choose another --out",
                out.display()
            )));
        }
    }
    Ok(Some(mine))
}

/// An output claimed by [`claim`] for as long as it lives.
pub type Claim = LiveDir;

/// Whether process `pid` exists (signal 0 checks without sending anything).
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Staging folders in `out_dir` whose process is gone: removed when they were for `out_name`,
/// named in a warning otherwise.
fn clean_stale(out_dir: &Path, out_name: &str) {
    let Ok(entries) = std::fs::read_dir(out_dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()).filter(|&p| p > 0);
        if pid.is_some_and(|p| p as u32 == std::process::id() || alive(p)) {
            continue;
        }
        let path = e.path();
        let owner = std::fs::read_to_string(path.join(OWNER)).ok();
        if pid.is_some() && owner.as_deref() == Some(out_name) {
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::warn!("removed {}, left by an interrupted run on the same output", path.display()),
                Err(e) => tracing::warn!("{}: left by an interrupted run, could not be removed ({e})", path.display()),
            }
        } else {
            tracing::warn!(
                "{}: a staging folder left by an interrupted semu run; remove it unless a semu is writing there",
                path.display()
            );
        }
    }
}

/// A scratch folder under the system's temporary folder (a model copy for ONNX Runtime, the
/// staging of a run without `--out`), removed when dropped and, like a staging folder, by the
/// interrupt handler.
pub struct Scratch(LiveDir);

impl Scratch {
    pub fn new(prefix: &str) -> Result<Self> {
        let tmp = std::env::temp_dir();
        Ok(Scratch(LiveDir::new(&tmp, || tempfile::Builder::new().prefix(prefix).tempdir())?))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

/// A folder the interrupt handler removes while it lives: registered as it is made (refused once
/// an interrupt began), removed and then forgotten when dropped — in that order, so the handler
/// never misses one.
pub struct LiveDir(tempfile::TempDir);

impl LiveDir {
    /// Makes the folder with `make` (inside `at`, named in an error) and registers it.
    fn new(at: &Path, make: impl FnOnce() -> std::io::Result<tempfile::TempDir>) -> Result<Self> {
        let mut guard = live();
        let Some(dirs) = guard.as_mut() else {
            return Err(Error::msg("interrupted"));
        };
        let dir = make().map_err(|e| Error::io(at, e))?;
        dirs.push(dir.path().to_path_buf());
        Ok(LiveDir(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for LiveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0.path());
        if let Some(dirs) = live().as_mut() {
            dirs.retain(|d| d != self.0.path());
        }
    }
}

/// An output written to a staging folder, not yet visible at its destination.
pub struct Staged {
    dir: LiveDir,
    out_dir: PathBuf,
    /// Paths relative to the staging folder; the model file is last.
    files: Vec<PathBuf>,
}

impl Staged {
    pub(super) fn new(dir: LiveDir, out_dir: PathBuf, files: Vec<PathBuf>) -> Self {
        Staged { dir, out_dir, files }
    }

    /// The staged model file (load it to verify before committing).
    pub fn model_path(&self) -> PathBuf {
        self.dir.path().join(self.files.last().expect("the model file"))
    }

    /// Moves every file into place (external data first, model last). Dropping a `Staged`
    /// without committing removes it.
    pub fn commit(self) -> Result<SavedModel> {
        let mut written = Vec::new();
        for f in &self.files {
            let (src, dst) = (self.dir.path().join(f), self.out_dir.join(f));
            if let Some(p) = dst.parent() {
                std::fs::create_dir_all(p).map_err(|e| Error::io(p, e))?;
            }
            std::fs::rename(&src, &dst).map_err(|e| Error::io(&dst, e))?;
            written.push(dst);
        }
        Ok(SavedModel { model: written.last().cloned().expect("the model file"), files: written })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_folders_of_the_same_output_are_removed_others_kept() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path();
        let make = |name: &str, owner: Option<&str>| {
            std::fs::create_dir(dir.join(name)).unwrap();
            if let Some(o) = owner {
                std::fs::write(dir.join(name).join(OWNER), o).unwrap();
            }
        };
        let dead = i32::MAX; // above any pid_max
        make(&format!("{PREFIX}{dead}-aaaa"), Some("out.onnx"));
        make(&format!("{PREFIX}{dead}-bbbb"), Some("other.onnx"));
        make(&format!("{PREFIX}{}-cccc", std::process::id()), Some("out.onnx"));
        make(&format!("{PREFIX}old"), None);
        let staged = create(dir, "out.onnx").unwrap();
        assert!(live().as_ref().unwrap().contains(&staged.path().to_path_buf()));
        let mut left: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left.len(), 4, "{left:?}");
        assert!(!left.contains(&format!("{PREFIX}{dead}-aaaa")), "{left:?}");
        assert_eq!(std::fs::read_to_string(staged.path().join(OWNER)).unwrap(), "out.onnx");
    }
}

//! Provenance for audit records: the build (version, git commit), RFC 3339 timestamps and file
//! hashes, shared by the run report, `--out-weights` metadata and unlearning patches.
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

/// The semu version (Cargo.toml).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit semu was built from ("unknown" when built outside a git checkout).
pub fn git_commit() -> &'static str {
    option_env!("SEMU_GIT_COMMIT").unwrap_or("unknown")
}

/// The current time in UTC, RFC 3339 (e.g. `2025-06-01T12:00:00.123456Z`).
pub fn now_rfc3339() -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_else(|_| "unknown".into())
}

/// A file and its SHA-256.
#[derive(Debug, Clone, Serialize)]
pub struct FileHash {
    pub path: String,
    pub sha256: String,
}

impl FileHash {
    pub fn of(path: &Path) -> crate::Result<Self> {
        Ok(FileHash { path: path.display().to_string(), sha256: crate::report::sha256_file(path)? })
    }
}

/// Provenance keys for safetensors `__metadata__` (`semu.version`, `semu.git_commit`, …).
pub fn provenance(method: &str, model_sha256: &str, forget_sha256: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("semu.version".to_string(), VERSION.to_string()),
        ("semu.git_commit".to_string(), git_commit().to_string()),
        ("semu.method".to_string(), method.to_string()),
        ("semu.model_sha256".to_string(), model_sha256.to_string()),
        ("semu.forget_sha256".to_string(), forget_sha256.to_string()),
        ("semu.created".to_string(), now_rfc3339()),
    ])
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339_utc() {
        let t = super::now_rfc3339();
        assert!(t.len() >= 20 && t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(!super::git_commit().is_empty());
    }
}

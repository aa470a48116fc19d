//! Allocator settings for training loops. The engine frees every intermediate right after its
//! last reader; with glibc's defaults the large ones are mmapped and unmapped op by op, so each
//! batch pays page faults on fresh zeroed pages. Keeping freed memory in the heap lets the next
//! batch reuse it (resident memory then stays at the peak that every batch reaches anyway).

/// Tells glibc malloc to serve large blocks from the heap and never trim it. Called once at
/// start-up by the `semu` binary and the benchmark; `SEMU_STOCK_MALLOC=1` keeps the defaults.
/// Returns whether the settings were applied.
pub fn keep_freed_memory() -> bool {
    if std::env::var("SEMU_STOCK_MALLOC").is_ok_and(|v| v == "1") {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads start.
    unsafe { libc::mallopt(libc::M_MMAP_MAX, 0) == 1 && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}

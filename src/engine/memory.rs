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

/// Weights from this size on make a model "large": its tensors are megabytes each and a step
/// takes seconds, so page faults cost nothing next to it, while freed memory kept in the heap
/// (fragmented between phases that allocate other sizes) would add up to gigabytes.
pub const LARGE_MODEL_BYTES: u64 = 256 << 20;
/// Blocks from this size on are mapped and unmapped one by one for a large model.
const LARGE_BLOCK: i32 = 1 << 20;

/// For a model whose weights take `weight_bytes`: from [`LARGE_MODEL_BYTES`] on, blocks of a
/// MiB or more go back to the system when freed, so resident memory follows the memory in use
/// (weights + gradients + one batch's activations) instead of the heap's high-water mark
/// (`SEMU_KEEP_FREED=1` keeps [`keep_freed_memory`]'s settings, for comparisons). Returns
/// whether it switched.
pub fn fit_to_weights(weight_bytes: u64) -> bool {
    if weight_bytes < LARGE_MODEL_BYTES || std::env::var("SEMU_KEEP_FREED").is_ok_and(|v| v == "1") {
        return false;
    }
    let switched = return_large_blocks();
    if switched {
        tracing::debug!(
            "weights {:.2} GiB: blocks of 1 MiB or more are returned to the system when freed",
            weight_bytes as f64 / (1u64 << 30) as f64
        );
    }
    switched
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_large_blocks() -> bool {
    // SAFETY: mallopt only changes allocator parameters (it takes the arena lock); a fixed
    // threshold also stops glibc from raising it as mapped blocks are freed.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 65_536) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, LARGE_BLOCK) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * LARGE_BLOCK) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_large_blocks() -> bool {
    false
}

/// Resident memory of this process and the bytes malloc has handed out and not had back (GiB):
/// the first is what the machine pays, the second what is alive (the rest is freed memory the
/// heap keeps). The second counts mapped blocks and the main thread's heap, where the pipeline
/// allocates; other threads' heaps are not in it. For `-v` phase lines and `make memory`.
pub fn usage() -> Option<(f64, f64)> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    let gib = (1u64 << 30) as f64;
    Some((pages * page / gib, heap_in_use()? / gib))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_in_use() -> Option<f64> {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    Some((m.uordblks + m.hblkhd) as f64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_in_use() -> Option<f64> {
    None
}

/// Gives the heap's free pages back to the system (glibc `malloc_trim`). Called between the
/// phases of a run (after the gradient, after training, between the gate's runtimes): the heap
/// keeps freed memory for the next batch, but the next phase allocates in other sizes, and
/// without this its peak would stack on the last phase's.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn usage_sees_a_block_allocated_and_freed() {
        let (rss, before) = usage().expect("linux gnu");
        assert!(rss > 0.0 && before >= 0.0);
        // Mapped (above glibc's largest threshold), so counted whatever arena this thread has.
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let (_, during) = usage().unwrap();
        assert!(during - before >= 63.0 / 1024.0, "64 MiB allocated: {before} → {during} GiB");
        drop(block);
        let (_, after) = usage().unwrap();
        assert!(during - after >= 63.0 / 1024.0, "64 MiB freed: {during} → {after} GiB");
    }

    #[test]
    fn small_models_keep_the_settings() {
        assert!(!fit_to_weights(LARGE_MODEL_BYTES - 1));
    }
}

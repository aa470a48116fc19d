//! The `semu` binary: glue over the library (see `cli`).
mod cli;

fn main() -> std::process::ExitCode {
    semu::engine::memory::keep_freed_memory();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A panic inside an op is turned into that node's error by the engine: don't print it twice.
        if semu::engine::inside_op() {
            return;
        }
        // Developers who ask for a backtrace get Rust's full report.
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            return default_hook(info);
        }
        let payload = info.payload();
        let what = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("panic");
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!(
            "internal error: {}{at}; this is a bug in semu: please report it with the command line \
             (RUST_BACKTRACE=1 shows where)",
            semu::error::torch_summary(what)
        );
    }));
    remove_staging_on_signals();
    // Lets the tests reach the hook without a real bug (tests/hostile_bounds.rs).
    if std::env::var_os("SEMU_TEST_PANIC").is_some() {
        panic!("SEMU_TEST_PANIC is set\nException raised from nowhere\nframe #0: test");
    }
    cli::main()
}

/// SIGINT, SIGTERM and SIGHUP remove the export's staging folders (if any), then end the process
/// with 128 + the signal's number, as the shell reports a process killed by it. The signal is
/// taken on its own thread, so the cleanup is ordinary code.
fn remove_staging_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return; // without the handler a signal still ends the process; the next run cleans up
    };
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            for (d, r) in semu::onnx::staging::remove_live() {
                match r {
                    Ok(()) => eprintln!("interrupted: removed the staging folder {}", d.display()),
                    Err(e) => {
                        eprintln!("interrupted: could not remove the staging folder {} ({e}); remove it", d.display())
                    }
                }
            }
            let name = match sig {
                SIGINT => "SIGINT",
                SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            eprintln!("interrupted ({name})");
            // SAFETY: ends the process at once, without running exit handlers or destructors
            // while the main thread may still be inside libtorch or ONNX Runtime.
            unsafe { libc::_exit(128 + sig) }
        }
    });
}

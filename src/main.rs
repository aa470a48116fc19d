//! The `semu` binary: glue over the library (see `cli`).
mod cli;

fn main() -> std::process::ExitCode {
    semu::engine::memory::keep_freed_memory();
    // A panic inside an op is turned into that node's error by the engine: don't print it twice.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !semu::engine::inside_op() {
            default_hook(info)
        }
    }));
    remove_staging_on_signals();
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
            for d in semu::onnx::staging::remove_live() {
                eprintln!("interrupted: removed the staging folder {}", d.display());
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

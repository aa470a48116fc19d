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
    cli::main()
}

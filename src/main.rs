//! The `semu` binary: glue over the library (see `cli`).
mod cli;

fn main() -> std::process::ExitCode {
    semu::engine::memory::keep_freed_memory();
    cli::main()
}

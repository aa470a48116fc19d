fn main() -> std::process::ExitCode {
    semu::cli::main()
}

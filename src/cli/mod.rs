//! The command line: a thin layer over the library. Exit codes: 0 ok, 1 runtime failure,
//! 2 usage error, 3 verification failed, 128 + N killed by signal N (staging removed, main.rs).
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod config;
mod data_args;
mod diffusion_args;
mod eval;
mod fetch;
mod gradient;
mod inspect;
mod patch;
mod progress;
mod run;
mod sample;
mod sweep;
mod unlearn;
mod verify;
mod weights;

#[derive(Parser)]
#[command(
    name = "semu",
    version,
    about = "Make a deployed ONNX model forget chosen training data (SEMU), \
and hand back a drop-in ONNX verified by ONNX Runtime."
)]
pub struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Only errors and the final summary.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More detail (repeat for debug output).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines as text or JSON (one object per line, on stderr).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Most elements one tensor may hold (a shape from the model or data that implies more is
    /// refused before allocating); default 2^33, also SEMU_MAX_ELEMENTS.
    #[arg(long, global = true, value_name = "N", value_parser = fetch::parse_size)]
    max_elements: Option<u64>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs go to stderr; colours only on a terminal; `RUST_LOG` overrides the level.
fn init_logging(cli: &Cli) {
    use std::io::IsTerminal;
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("semu={level}")));
    progress::init(cli.quiet, matches!(cli.log_format, LogFormat::Json));
    // Log lines lift the progress bars while they print.
    let b = tracing_subscriber::fmt().with_env_filter(filter).with_writer(progress::log_writer).with_target(false);
    match cli.log_format {
        LogFormat::Json => b.json().init(),
        LogFormat::Text => b.with_ansi(std::io::stderr().is_terminal()).without_time().init(),
    }
}

#[derive(Subcommand)]
enum Cmd {
    Inspect(inspect::Args),
    Run(run::Args),
    Unlearn(Box<unlearn::Args>),
    Gradient(Box<gradient::Args>),
    Eval(Box<eval::Args>),
    Fetch(fetch::Args),
    Verify(verify::Args),
    Sweep(sweep::Args),
    Patch(patch::Args),
    Sample(sample::Args),
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub err: anyhow::Error,
}

impl<E: Into<anyhow::Error>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit { code: 1, err: e.into() }
    }
}

pub type CmdResult = Result<(), Exit>;

/// A usage error (exit 2): a flag's value or a combination of flags that cannot work.
pub fn usage(err: impl Into<anyhow::Error>) -> Exit {
    Exit { code: 2, err: err.into() }
}

/// `--device`, parsed: an unknown or absent device is a usage error.
pub fn device(s: &str) -> Result<tch::Device, Exit> {
    semu::engine::parse_device(s).map_err(usage)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    if let Some(n) = cli.max_elements {
        semu::limits::set_max_elements(n);
    }
    let quiet = cli.quiet;
    let res = match cli.cmd {
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Unlearn(a) => unlearn::run(*a, quiet),
        Cmd::Gradient(a) => gradient::run(*a, quiet),
        Cmd::Eval(a) => eval::run(*a),
        Cmd::Fetch(a) => fetch::run(a),
        Cmd::Verify(a) => verify::run(a),
        Cmd::Sweep(a) => sweep::run(a),
        Cmd::Patch(a) => patch::run(a),
        Cmd::Sample(a) => sample::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e.err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {}", semu::error::without_frames(&chain(&e.err)));
            ExitCode::from(e.code)
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause the message already quotes (the
/// library's errors carry their source's text, as `{path}: {source}` does).
fn chain(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if !text.contains(&c) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&c);
        }
    }
    text
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

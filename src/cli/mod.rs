//! The command line: a thin layer over the library. Exit codes: 0 ok, 1 runtime failure,
//! 2 usage error, 3 verification failed.
use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod eval;
mod fetch;
mod inspect;
mod run;
mod unlearn;

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
}

#[derive(Subcommand)]
enum Cmd {
    Inspect(inspect::Args),
    Run(run::Args),
    Unlearn(unlearn::Args),
    Eval(eval::Args),
    Fetch(fetch::Args),
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Inspect(a) => inspect::run(a),
        Cmd::Run(a) => run::run(a),
        Cmd::Unlearn(a) => unlearn::run(a),
        Cmd::Eval(a) => eval::run(a),
        Cmd::Fetch(a) => fetch::run(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e.err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {:#}", e.err);
            ExitCode::from(e.code)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

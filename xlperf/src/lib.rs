//! xlperf: profile the places where one language calls into another, with eBPF.
//!
//! The binary's `main.rs` only parses the command line and calls [`run`].

pub mod aggregate;
pub mod bytes;
pub mod capture;
pub mod cli;
pub mod cmd;
pub mod export;
pub mod model;
pub mod privileges;
pub mod probe;
pub mod prometheus;
pub mod report;
pub mod session;

use std::process::ExitCode;

/// Runs a parsed command; errors come back for `main` to print as one line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Check(args) => Ok(if cmd::check::run(args.pid)? {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        cli::Command::Record(args) => cmd::record::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::List(args) => cmd::list::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Report(args) => cmd::report::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Serve(args) => cmd::serve::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

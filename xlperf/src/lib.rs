//! xlperf: profile the places where one language calls into another, with eBPF.
//!
//! The binary's `main.rs` only parses the command line and calls [`run`].

pub mod capture;
pub mod check;
pub mod cli;
pub mod event;
pub mod export;
pub mod list;
pub mod metrics;
pub mod privileges;
pub mod probe;
pub mod record;
pub mod report;
pub mod serve;

use std::process::ExitCode;

/// Runs a parsed command; errors come back for `main` to print as one line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Check(args) => Ok(if check::run(args.pid) {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }),
        cli::Command::Record(args) => record::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::List(args) => list::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Report(args) => report::command::run(&args).map(|()| ExitCode::SUCCESS),
        cli::Command::Serve(args) => serve::run(&args).map(|()| ExitCode::SUCCESS),
    }
}

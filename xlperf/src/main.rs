use std::{io::Write as _, process::ExitCode};

use clap::{Parser as _, error::ErrorKind};
use xlperf::cli::Cli;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            let level = record.level().as_str().to_lowercase();
            writeln!(buf, "xlperf: {level}: {}", record.args())
        })
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
        Err(e) => {
            eprintln!(
                "xlperf: error: {} (see `xlperf --help`)",
                one_line(&e.to_string())
            );
            return ExitCode::from(2);
        }
    };
    match xlperf::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xlperf: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Clap's message without its usage block, folded onto one line.
fn one_line(message: &str) -> String {
    message
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches("error: ")
        .to_owned()
}

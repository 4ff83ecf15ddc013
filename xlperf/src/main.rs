use std::{io::Write as _, process::ExitCode};

use clap::Parser as _;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| {
            writeln!(
                buf,
                "xlperf: {}: {}",
                record.level().as_str().to_lowercase(),
                record.args()
            )
        })
        .init();
    let cli = xlperf::cli::Cli::parse();
    match xlperf::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xlperf: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

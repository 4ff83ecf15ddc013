//! `xlperf report FILE`: a capture file's summary, or an export of it.

use std::io::IsTerminal as _;

use anyhow::{Context as _, bail};

use crate::report::{build, table};
use crate::{capture::file, cli::ReportArgs};

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let capture = file::read(&args.file)?;
    if capture.truncated {
        eprintln!(
            "xlperf: {} was cut short (the recording was killed?): reporting the {} calls up to its last complete chunk; drops and end-of-recording figures are missing",
            args.file.display(),
            capture.calls.len()
        );
    }
    let bytes = match args.format {
        Some(format) => export(&capture, format)?,
        None => {
            let summary = build::from_capture(&capture);
            if args.json {
                let mut json = serde_json::to_vec_pretty(&summary)?;
                json.push(b'\n');
                json
            } else {
                table::render(&summary).into_bytes()
            }
        }
    };
    match &args.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            let stdout = std::io::stdout().lock();
            if args.format == Some(crate::cli::ExportFormat::Perfetto) && stdout.is_terminal() {
                bail!("a Perfetto trace is binary: write it to a file with -o FILE");
            }
            drop(stdout);
            super::output::write(&bytes)?;
        }
    }
    Ok(())
}

fn export(
    capture: &crate::model::Capture,
    format: crate::export::Format,
) -> anyhow::Result<Vec<u8>> {
    Ok(crate::export::export(capture, format)?)
}

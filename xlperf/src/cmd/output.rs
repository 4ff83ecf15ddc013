//! Standard output for every command. A reader that went away (`xlperf report x | head`)
//! is not an error: the rest was not wanted. Any other failure (a full disk) is one line.

use std::io::{ErrorKind, Write as _};

use anyhow::Context as _;

/// Writes `bytes` to standard output.
pub fn write(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}

/// Writes `text` to standard output.
pub fn print(text: &str) -> anyhow::Result<()> {
    write(text.as_bytes())
}

/// Writes `value` as pretty JSON and a newline.
pub fn json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}

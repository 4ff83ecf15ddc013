//! `xlperf report FILE --format …`: a capture turned into the files other tools read.
//!
//! Every format is a pure function of the in-memory [`Capture`], so each can be tested on
//! a hand-built capture with exact expectations, and `report` only has to write the bytes.
//!
//! - [`Format::Perfetto`]: a Perfetto `Trace` protobuf (TrackEvent), for ui.perfetto.dev
//!   and `trace_processor`.
//! - [`Format::Chrome`]: Trace Event Format JSON, for chrome://tracing, Perfetto and
//!   Speedscope.
//! - [`Format::Folded`]: Brendan Gregg's folded stacks, for flame graph tools.
//! - [`Format::Svg`]: a flame graph drawn from the folded stacks by `inferno`.
//!
//! The two timeline formats share one model (`timeline.rs`); the two flame graph formats
//! share the folded lines; both are built on the per-thread call nesting of `stacks.rs`.

mod chrome;
mod folded;
mod perfetto;
mod stacks;
mod svg;
mod timeline;

#[cfg(test)]
pub(crate) mod testdata;

use crate::model::Capture;

/// An output format of `report` (also its `--format` values, so there is one list).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Perfetto protobuf trace (`.pftrace`).
    Perfetto,
    /// Chrome Trace Event Format JSON (`.json`).
    Chrome,
    /// Folded stacks, one line per stack with its self time in µs (`.folded`).
    Folded,
    /// SVG flame graph of the folded stacks (`.svg`).
    Svg,
}

/// Why a capture could not be exported.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// A flame graph of nothing cannot be drawn (inferno refuses it), and an empty SVG
    /// would look like a broken recording.
    #[error("no calls were recorded, so there is nothing to draw")]
    NothingToDraw,
    /// Every stack's self time rounds to 0 µs, the unit of the folded counts.
    #[error("every recorded stack took less than 1 µs in all, too little to draw")]
    TooShortToDraw,
    #[error("could not draw the flame graph: {0}")]
    FlameGraph(#[source] std::io::Error),
    #[error("could not write the Chrome trace JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Renders `capture` in `format`, ready to be written to a file or stdout.
pub fn export(capture: &Capture, format: Format) -> Result<Vec<u8>, ExportError> {
    match format {
        Format::Perfetto => Ok(perfetto::render(capture)),
        Format::Chrome => chrome::render(capture),
        Format::Folded => Ok(folded::render(capture).into_bytes()),
        Format::Svg => svg::render(capture),
    }
}

//! An SVG flame graph of the folded stacks, drawn by `inferno` (the Rust port of
//! flamegraph.pl): interactive in a browser, searchable, zoomable.

use inferno::flamegraph::{self, Options};
use xlperf_common::is_calibration;

use super::ExportError;
use super::folded;
use crate::model::Capture;

/// Title of every graph: says what the widths measure, since it is not samples.
pub const TITLE: &str = "xlperf: time in crossings (self time, µs)";

/// The flame graph of `capture`.
pub fn render(capture: &Capture) -> Result<Vec<u8>, ExportError> {
    let lines = folded::render(capture);
    if lines.is_empty() {
        let recorded = capture
            .calls
            .iter()
            .any(|call| !is_calibration(call.record.boundary));
        return Err(if recorded {
            ExportError::TooShortToDraw
        } else {
            ExportError::NothingToDraw
        });
    }
    let mut options = Options::default();
    options.title = TITLE.to_owned();
    options.count_name = "µs".to_owned();
    // Colours from the names, not random: the same capture always gives the same file,
    // and a function keeps its colour from one graph to the next.
    options.hash = true;
    let mut svg = Vec::new();
    flamegraph::from_lines(&mut options, lines.lines(), &mut svg)
        .map_err(ExportError::FlameGraph)?;
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use quick_xml::events::Event;

    use super::*;
    use crate::export::testdata;

    /// Reads the whole document; quick-xml checks that every end tag matches its start.
    fn assert_well_formed(svg: &str) {
        let mut reader = quick_xml::Reader::from_str(svg);
        let mut depth = 0usize;
        loop {
            match reader.read_event() {
                Ok(Event::Start(_)) => depth += 1,
                Ok(Event::End(_)) => depth -= 1,
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(error) => panic!("not well-formed at {}: {error}", reader.error_position()),
            }
        }
        assert_eq!(depth, 0, "unclosed elements");
    }

    #[test]
    fn draws_every_function_with_the_title() {
        let svg = render(&testdata::capture()).expect("flame graph");
        let svg = String::from_utf8(svg).expect("UTF-8");
        assert!(svg.starts_with("<?xml"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_well_formed(&svg);
        assert!(svg.contains(TITLE));
        for name in [
            "A [libfoo.so]",
            "B [libfoo.so]",
            "C [libbar.so]",
            "python3",
            "worker",
        ] {
            assert!(svg.contains(name), "{name} missing");
        }
        // D's 0.3 µs is not in the folded lines, so not in the graph.
        assert!(!svg.contains("D [libbar.so]"));
    }

    #[test]
    fn same_capture_same_file() {
        let capture = testdata::capture();
        assert_eq!(render(&capture).ok(), render(&capture).ok());
    }

    #[test]
    fn calls_too_short_to_draw_are_a_clear_error() {
        let mut capture = testdata::capture();
        capture.calls.retain(|call| call.record.duration_ns < 1_000);
        let error = render(&capture).expect_err("too short");
        assert!(matches!(error, ExportError::TooShortToDraw));
    }

    #[test]
    fn empty_capture_is_a_clear_error() {
        let error = render(&Capture::default()).expect_err("nothing to draw");
        assert!(matches!(error, ExportError::NothingToDraw));
        assert_eq!(
            error.to_string(),
            "no calls were recorded, so there is nothing to draw"
        );
    }
}

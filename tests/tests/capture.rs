//! Capture files: `record -o FILE` then `report FILE` gives the live summary back; a
//! recording killed mid-run leaves a file `report` reads and calls cut short; foreign and
//! damaged files get one clear line.

use std::{path::PathBuf, time::Duration};

use serde_json::Value;
use xlperf_tests::{
    alloc::{alloc_workloads, ffi},
    s, spawn_attached, summary_of, xlperf,
};

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("xlperf-test-{}-{name}", std::process::id()))
}

/// Removes the file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn report_json(file: &str) -> (Value, String) {
    let out = xlperf(&["report", file, "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "report failed: {stderr}");
    (summary_of(&out), stderr)
}

#[test]
fn report_of_a_capture_equals_the_live_summary() {
    let w = alloc_workloads();
    let file = TempFile(temp("equal.xlperf"));
    // Allocations, scheduling, nesting and a leak: every kind of record and end figure.
    let out = xlperf(&[
        "record",
        "--json",
        "--alloc",
        "--sched",
        "-o",
        s(&file.0),
        "--ffi",
        &ffi("xl_{alloc_blocks,alloc_outer,sleep_ms}"),
        "--",
        s(&w.driver),
        "leaky",
        "5",
        "1237",
        "2",
        "12",
        "3",
    ]);
    assert!(out.status.success(), "{out:?}");
    let live = summary_of(&out);
    assert!(
        live["boundaries"].as_array().is_some_and(|b| b.len() >= 2),
        "{live:#}"
    );
    let (report, stderr) = report_json(s(&file.0));
    assert!(
        stderr.is_empty(),
        "a complete file is not cut short: {stderr}"
    );
    // Every field, timing included: the report rebuilds the summary from the same
    // records and end figures, through the same code.
    assert_eq!(report, live);

    // The table, too.
    let table = xlperf(&["report", s(&file.0)]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("xl_alloc_blocks") && table.contains("ALLOCATIONS"),
        "{table}"
    );
}

#[test]
fn a_recording_killed_mid_run_is_readable_and_says_it_was_cut_short() {
    let w = alloc_workloads();
    let file = TempFile(temp("killed.xlperf"));
    // 40 sleeps of 25 ms: about a second of calls, killed 400 ms after the probes are on.
    let (mut xlperf, _) = spawn_attached(&[
        "record",
        "-o",
        s(&file.0),
        "--ffi",
        &ffi("xl_sleep_ms"),
        "--",
        s(&w.driver),
        "sleep",
        "25",
        "40",
    ]);
    std::thread::sleep(Duration::from_millis(400));
    xlperf.kill().expect("SIGKILL xlperf");
    let _ = xlperf.wait();
    // The driver, orphaned, finishes its sleeps on its own; let it.
    let (report, stderr) = report_json(s(&file.0));
    assert!(stderr.contains("cut short"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(report["truncated"], true, "{report:#}");
    let calls = report["boundaries"][0]["calls"].as_u64().unwrap_or(0);
    // About 15 calls had returned by the kill; some must be in the file, not all 40.
    assert!((1..40).contains(&calls), "{calls} calls: {report:#}");
    assert_eq!(report["boundaries"][0]["function"], "xl_sleep_ms");
}

#[test]
fn foreign_and_damaged_files_get_one_clear_line() {
    let one_line_error = |file: &str, needle: &str| {
        let out = xlperf(&["report", file, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    };
    one_line_error("/etc/passwd", "not an xlperf capture file");
    one_line_error("/nonexistent/run.xlperf", "cannot read");
    let empty = TempFile(temp("empty.xlperf"));
    std::fs::write(&empty.0, b"").expect("write");
    one_line_error(s(&empty.0), "not an xlperf capture file");

    // A valid file with a byte flipped in its middle: the chunk fails its checksum, and
    // the file reads up to there, cut short.
    let w = alloc_workloads();
    let good = TempFile(temp("good.xlperf"));
    let out = xlperf(&[
        "record",
        "-o",
        s(&good.0),
        "--ffi",
        &ffi("xl_alloc_blocks"),
        "--",
        s(&w.driver),
        "blocks",
        "5",
        "1237",
        "2",
        "40",
    ]);
    assert!(out.status.success(), "{out:?}");
    let mut bytes = std::fs::read(&good.0).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let damaged = TempFile(temp("damaged.xlperf"));
    std::fs::write(&damaged.0, &bytes).expect("write");
    let (report, stderr) = report_json(s(&damaged.0));
    assert!(stderr.contains("cut short"), "{stderr}");
    assert_eq!(report["truncated"], true);
    assert_eq!(report["boundaries"][0]["calls"], 40, "{report:#}");
}

//! `report --format`: a real recording (nested C calls with allocations and scheduling)
//! exported to Perfetto (decoded with Perfetto's own protobuf definitions), Chrome trace
//! JSON, folded stacks and an SVG flame graph, each checked against the recording.

use std::process::Command;

use serde_json::Value;
use xlperf_tests::{
    alloc::{alloc_workloads, ffi},
    python_script, s, summary_of, xlperf,
};

const M: u64 = 40;

struct TempFiles(Vec<std::path::PathBuf>);

impl Drop for TempFiles {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn temp(files: &mut TempFiles, name: &str) -> String {
    let path = std::env::temp_dir().join(format!("xlperf-export-{}-{name}", std::process::id()));
    files.0.push(path.clone());
    s(&path).to_owned()
}

/// Records `outer 5 1237 2 M`: M × xl_alloc_outer, each calling xl_alloc_blocks.
fn record(capture: &str) -> Value {
    let w = alloc_workloads();
    let out = xlperf(&[
        "record",
        "--json",
        "--alloc",
        "--sched",
        "-o",
        capture,
        "--ffi",
        &ffi("xl_alloc_*"),
        "--",
        s(&w.driver),
        "outer",
        "5",
        "1237",
        "2",
        &M.to_string(),
    ]);
    assert!(out.status.success(), "{out:?}");
    summary_of(&out)
}

fn export(capture: &str, format: &str, out: &str) {
    let result = xlperf(&["report", capture, "--format", format, "-o", out]);
    assert!(result.status.success(), "{result:?}");
}

#[test]
fn every_format_shows_the_recorded_calls_and_their_nesting() {
    let mut files = TempFiles(Vec::new());
    let capture = temp(&mut files, "run.xlperf");
    let summary = record(&capture);
    let pid = summary["boundaries"][0]["pid"].as_u64().expect("pid");

    // Perfetto, decoded by Perfetto's own definitions: one thread track for the driver,
    // M slices of each function, xl_alloc_blocks nested in xl_alloc_outer.
    let pftrace = temp(&mut files, "run.pftrace");
    export(&capture, "perfetto", &pftrace);
    let out = Command::new("python3")
        .arg(python_script("perfetto_check.py"))
        .arg(&pftrace)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "decoding with perfetto_trace_pb2 (cargo xtask setup installs PyPI perfetto): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded: Value = serde_json::from_slice(&out.stdout).expect("checker JSON");
    assert_eq!(decoded["errors"], Value::Array(Vec::new()), "{decoded:#}");
    assert_eq!(decoded["slices"]["xl_alloc_outer"], M, "{decoded:#}");
    assert_eq!(decoded["slices"]["xl_alloc_blocks"], M, "{decoded:#}");
    assert_eq!(decoded["depth_max"], 2, "{decoded:#}");
    let tracks = decoded["thread_tracks"].as_array().expect("tracks");
    assert!(
        tracks.iter().any(|t| t["pid"] == pid && t["tid"] == pid),
        "no track for the driver's main thread: {decoded:#}"
    );

    // Chrome: Trace Event Format, complete events with the fields the format requires,
    // each xl_alloc_blocks inside an xl_alloc_outer of the same thread.
    let json_path = temp(&mut files, "run.json");
    export(&capture, "chrome", &json_path);
    let chrome: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("read")).expect("JSON");
    let events = chrome["traceEvents"].as_array().expect("traceEvents");
    let complete: Vec<&Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    for e in &complete {
        for field in ["name", "ts", "dur", "pid", "tid"] {
            assert!(!e[field].is_null(), "{field} missing in {e}");
        }
    }
    let named = |n: &str| -> Vec<&Value> {
        complete
            .iter()
            .copied()
            .filter(|e| e["name"] == n)
            .collect()
    };
    let (outer, inner) = (named("xl_alloc_outer"), named("xl_alloc_blocks"));
    assert_eq!((outer.len() as u64, inner.len() as u64), (M, M));
    let span = |e: &Value| {
        let ts = e["ts"].as_f64().expect("ts");
        (ts, ts + e["dur"].as_f64().expect("dur"))
    };
    for i in &inner {
        let (a, b) = span(i);
        assert!(
            outer.iter().any(|o| {
                let (c, d) = span(o);
                o["tid"] == i["tid"] && c <= a && b <= d
            }),
            "{i} is in no xl_alloc_outer"
        );
    }
    assert!(
        events
            .iter()
            .any(|e| e["ph"] == "M" && e["name"] == "thread_name"),
        "no thread names"
    );

    // Folded: exactly the two stacks, with self time in µs adding up to the outer calls'
    // inclusive time (rounding: under 1 µs per stack).
    let folded_path = temp(&mut files, "run.folded");
    export(&capture, "folded", &folded_path);
    let folded = std::fs::read_to_string(&folded_path).expect("read");
    let lines: Vec<(&str, u64)> = folded
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("STACK COUNT");
            (stack, n.parse().expect("count"))
        })
        .collect();
    let stacks: Vec<&str> = lines.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        stacks,
        [
            "alloc_driver;xl_alloc_outer [libxlalloc.so]",
            "alloc_driver;xl_alloc_outer [libxlalloc.so];xl_alloc_blocks [libxlalloc.so]"
        ],
        "{folded}"
    );
    let total_us: u64 = lines.iter().map(|(_, n)| n).sum();
    let outer_ns = summary["boundaries"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|b| b["function"] == "xl_alloc_outer")
        .and_then(|b| b["total_ns"].as_u64())
        .expect("outer total");
    assert!(
        total_us.abs_diff(outer_ns / 1000) <= 2,
        "{total_us} µs against {outer_ns} ns"
    );

    // SVG: a well-formed flame graph naming both functions.
    let svg_path = temp(&mut files, "run.svg");
    export(&capture, "svg", &svg_path);
    let svg = std::fs::read_to_string(&svg_path).expect("read");
    assert!(svg.starts_with("<?xml"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("xl_alloc_outer") && svg.contains("xl_alloc_blocks"));
}

#[test]
fn unknown_formats_are_refused_with_the_list_of_formats() {
    let out = xlperf(&["report", "/nonexistent", "--format", "pdf"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("perfetto"), "lists the formats: {stderr}");
}

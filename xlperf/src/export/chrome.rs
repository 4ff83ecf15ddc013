//! Chrome's Trace Event Format (JSON object form), read by chrome://tracing, Perfetto,
//! Speedscope and most trace viewers.
//!
//! - `M` metadata events name each process and thread row;
//! - `X` complete events are the calls (nested on their thread's row by time) and the
//!   off-CPU periods, on a row of their own per thread: a pseudo-thread whose id is the
//!   thread's with [`OFF_CPU_TID_BIT`] set, sorted right after it;
//! - `C` counter events give each thread's running total of allocated bytes.
//!
//! Times are µs (fractions keep the ns) from the start of the recording.

use serde_json::{Map, Value, json};

use super::ExportError;
use super::timeline::{self, Arg, ArgValue, Slice, Thread};
use crate::model::Capture;

/// Set in the id of a thread's off-CPU row. Linux thread ids stay below 2^22
/// (`PID_MAX_LIMIT`), so this never names a real thread, and the id still fits the 32
/// bits viewers keep.
pub const OFF_CPU_TID_BIT: u32 = 1 << 30;

/// The Chrome trace JSON of `capture`.
pub fn render(capture: &Capture) -> Result<Vec<u8>, ExportError> {
    let origin_ns = capture.meta.started_monotonic_ns;
    let mut events = Vec::new();
    for process in timeline::build(capture).processes {
        events.push(metadata(
            "process_name",
            process.pid,
            process.pid,
            json!({ "name": process.name }),
        ));
        for thread in &process.threads {
            thread_events(&mut events, thread, origin_ns);
        }
    }
    let trace = json!({
        "traceEvents": events,
        "displayTimeUnit": "ns",
        "otherData": {
            "xlperf_version": capture.meta.xlperf_version,
            "argv": capture.meta.argv.join(" "),
            "truncated": capture.truncated,
        },
    });
    Ok(serde_json::to_vec(&trace)?)
}

/// A thread's rows: its name, its calls, its off-CPU row and its allocation counter.
fn thread_events(events: &mut Vec<Value>, thread: &Thread, origin_ns: u64) {
    let (pid, tid) = (thread.pid, thread.tid);
    let sort_index = u64::from(tid) * 2;
    events.push(metadata(
        "thread_name",
        pid,
        tid,
        json!({ "name": thread.name }),
    ));
    events.push(metadata(
        "thread_sort_index",
        pid,
        tid,
        json!({ "sort_index": sort_index }),
    ));
    for slice in &thread.calls {
        events.push(complete(slice, pid, tid, origin_ns));
    }
    if !thread.off_cpu.is_empty() {
        let row = tid | OFF_CPU_TID_BIT;
        let name = format!("{} {tid} off-CPU", thread.name);
        events.push(metadata("thread_name", pid, row, json!({ "name": name })));
        events.push(metadata(
            "thread_sort_index",
            pid,
            row,
            json!({ "sort_index": sort_index + 1 }),
        ));
        for slice in &thread.off_cpu {
            events.push(complete(slice, pid, row, origin_ns));
        }
    }
    for (what, key, points) in [
        ("allocated bytes", "bytes", &thread.allocated),
        ("off-CPU time", "ns", &thread.off_cpu_total),
    ] {
        let counter = format!("{} {tid} {what}", thread.name);
        for point in points {
            events.push(json!({
                "name": counter,
                "ph": "C",
                "ts": micros(point.ts_ns, origin_ns),
                "pid": pid,
                "tid": tid,
                "args": { key: point.value },
            }));
        }
    }
}

fn metadata(name: &str, pid: u32, tid: u32, args: Value) -> Value {
    json!({ "name": name, "ph": "M", "pid": pid, "tid": tid, "args": args })
}

fn complete(slice: &Slice, pid: u32, tid: u32, origin_ns: u64) -> Value {
    json!({
        "name": slice.name,
        "cat": slice.category,
        "ph": "X",
        "ts": micros(slice.start_ns, origin_ns),
        "dur": slice.duration_ns() as f64 / 1_000.0,
        "pid": pid,
        "tid": tid,
        "args": args(&slice.args),
    })
}

fn args(args: &[Arg]) -> Map<String, Value> {
    args.iter()
        .map(|arg| {
            let value = match &arg.value {
                ArgValue::Text(text) => Value::from(text.as_str()),
                ArgValue::Count(count) => Value::from(*count),
            };
            (arg.key.to_owned(), value)
        })
        .collect()
}

/// µs from the recording's start; negative for anything recorded before it.
fn micros(ns: u64, origin_ns: u64) -> f64 {
    (i128::from(ns) - i128::from(origin_ns)) as f64 / 1_000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::testdata::{self, MAIN_TID, PID, WORKER_TID};

    fn parse(capture: &Capture) -> Value {
        let bytes = render(capture).expect("render");
        serde_json::from_slice(&bytes).expect("valid JSON")
    }

    fn events(trace: &Value) -> &Vec<Value> {
        trace["traceEvents"].as_array().expect("traceEvents array")
    }

    fn with_phase<'t>(trace: &'t Value, phase: &str) -> Vec<&'t Value> {
        events(trace).iter().filter(|e| e["ph"] == phase).collect()
    }

    /// The fields the Trace Event Format requires of each phase, with their types.
    fn assert_follows_the_format(event: &Value) {
        assert!(event["name"].is_string(), "{event}");
        assert!(event["pid"].is_u64() && event["tid"].is_u64(), "{event}");
        match event["ph"].as_str() {
            Some("X") => {
                assert!(
                    event["ts"].is_number() && event["dur"].is_number(),
                    "{event}"
                );
                assert!(event["dur"].as_f64() >= Some(0.0), "{event}");
                assert!(
                    event["cat"].is_string() && event["args"].is_object(),
                    "{event}"
                );
            }
            Some("M") => assert!(event["args"].is_object(), "{event}"),
            Some("C") => {
                assert!(event["ts"].is_number(), "{event}");
                let args = event["args"].as_object().expect("counter args");
                assert!(args.values().all(Value::is_number), "{event}");
            }
            _ => panic!("unexpected phase: {event}"),
        }
    }

    #[test]
    fn follows_the_trace_event_format() {
        let trace = parse(&testdata::capture());
        assert_eq!(trace["displayTimeUnit"], "ns");
        assert_eq!(trace["otherData"]["xlperf_version"], "0.1.0");
        events(&trace).iter().for_each(assert_follows_the_format);
        // 5 calls, 3 off-CPU slices (blocked + runnable, blocked alone).
        assert_eq!(with_phase(&trace, "X").len(), 8);
        // 4 allocated-bytes points, and 2 off-CPU-time points per thread.
        assert_eq!(with_phase(&trace, "C").len(), 8);
    }

    #[test]
    fn names_processes_threads_and_off_cpu_rows() {
        let trace = parse(&testdata::capture());
        let names: Vec<(String, u64, String)> = with_phase(&trace, "M")
            .into_iter()
            .filter(|e| e["name"] != "thread_sort_index")
            .map(|e| {
                let name = e["args"]["name"].as_str().unwrap_or_default().to_owned();
                (e["name"].to_string(), e["tid"].as_u64().unwrap_or(0), name)
            })
            .collect();
        let main = u64::from(MAIN_TID);
        let worker = u64::from(WORKER_TID);
        let bit = u64::from(OFF_CPU_TID_BIT);
        let expected = [
            ("process_name", u64::from(PID), "python3"),
            ("thread_name", main, "python3"),
            ("thread_name", main | bit, "python3 100 off-CPU"),
            ("thread_name", worker, "worker"),
            ("thread_name", worker | bit, "worker 101 off-CPU"),
        ];
        let expected: Vec<(String, u64, String)> = expected
            .iter()
            .map(|(kind, tid, name)| (format!("\"{kind}\""), *tid, (*name).to_owned()))
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn calls_in_us_from_the_start_with_their_args() {
        let trace = parse(&testdata::capture());
        let calls: Vec<(&str, f64, f64, u64)> = with_phase(&trace, "X")
            .into_iter()
            .filter(|e| e["cat"] == "ffi")
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or_default(),
                    e["ts"].as_f64().unwrap_or(-1.0),
                    e["dur"].as_f64().unwrap_or(-1.0),
                    e["tid"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                ("A", 10.0, 100.0, 100),
                ("B", 30.0, 40.0, 100),
                ("A", 200.0, 10.0, 100),
                ("C", 50.0, 25.0, 101),
                ("D", 80.0, 0.3, 101),
            ]
        );
        let b = with_phase(&trace, "X")
            .into_iter()
            .find(|e| e["name"] == "B")
            .expect("B");
        assert_eq!(b["args"]["library"], "libfoo.so");
        assert_eq!(b["args"]["runtime"], "ffi");
        assert_eq!(b["args"]["alloc_bytes"], 300);
        assert_eq!(b["args"]["runq_ns"], 5_000);
        assert!(b["args"].get("free_count").is_none());
    }

    #[test]
    fn off_cpu_and_counters() {
        let trace = parse(&testdata::capture());
        let off: Vec<(&str, f64, f64)> = with_phase(&trace, "X")
            .into_iter()
            .filter(|e| e["cat"] == "sched")
            .map(|e| {
                assert!(e["tid"].as_u64().unwrap_or(0) & u64::from(OFF_CPU_TID_BIT) != 0);
                (
                    e["name"].as_str().unwrap_or_default(),
                    e["ts"].as_f64().unwrap_or(-1.0),
                    e["dur"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        assert_eq!(
            off,
            vec![
                ("blocked", 40.0, 15.0),
                ("runnable", 55.0, 5.0),
                ("blocked", 110.0, 10.0)
            ]
        );
        let off_total: Vec<(f64, u64)> = with_phase(&trace, "C")
            .into_iter()
            .filter(|e| e["name"] == "python3 100 off-CPU time")
            .map(|e| {
                (
                    e["ts"].as_f64().unwrap_or(-1.0),
                    e["args"]["ns"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        // B's one period: blocked 40..55 µs, runnable to 60 µs.
        assert_eq!(off_total, vec![(40.0, 0), (60.0, 20_000)]);
        let counter: Vec<(f64, u64)> = with_phase(&trace, "C")
            .into_iter()
            .filter(|e| {
                e["name"] != "python3 100 off-CPU time" && e["name"] != "worker 101 off-CPU time"
            })
            .map(|e| {
                assert_eq!(e["name"], "python3 100 allocated bytes");
                (
                    e["ts"].as_f64().unwrap_or(-1.0),
                    e["args"]["bytes"].as_u64().unwrap_or(0),
                )
            })
            .collect();
        assert_eq!(
            counter,
            vec![(10.0, 0), (70.0, 300), (110.0, 400), (210.0, 464)]
        );
    }

    #[test]
    fn empty_capture_is_an_empty_trace() {
        let trace = parse(&Capture::default());
        assert!(events(&trace).is_empty());
    }
}

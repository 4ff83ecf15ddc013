//! `--syscalls`: each system call of a target thread charged, by name, to the innermost
//! crossing active on it, checked against a C function whose system calls are known
//! exactly (`xl_write_null` in tests/workloads/c/xl_alloc.c: one openat, N writes, one
//! close), a sleeping one and a spinning one (none).

use serde_json::Value;
use xlperf_tests::{
    alloc::{Reaped, WaitingAlloc, alloc_workloads, ffi},
    finish_json, row, s, spawn_attached, summary_of, xlperf,
};

const N: u64 = 50;
const M: u64 = 4;

/// `(count, total_ns)` of `name` in a `syscalls` object.
fn syscall(map: &Value, name: &str) -> (u64, u64) {
    let s = &map[name];
    (
        s["count"].as_u64().unwrap_or(0),
        s["total_ns"].as_u64().unwrap_or(0),
    )
}

fn names(map: &Value) -> Vec<String> {
    map.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn record(extra: &[&str], driver: &[&str]) -> Value {
    let w = alloc_workloads();
    let mut args = vec!["record", "--json", "--syscalls"];
    args.extend_from_slice(extra);
    args.push("--");
    args.push(s(&w.driver));
    args.extend_from_slice(driver);
    summary_of(&xlperf(&args))
}

#[test]
fn system_calls_are_charged_to_the_crossing_that_makes_them() {
    let dir = std::env::temp_dir().join(format!("xlperf-syscalls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let capture = dir.join("writes.xlperf");
    let summary = record(
        &["--ffi", &ffi("xl_write_null"), "-o", s(&capture)],
        &["writes", &N.to_string(), &M.to_string()],
    );
    let r = row(&summary, "xl_write_null", None).unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(r["calls"], M, "{r:#}");
    let calls = &r["syscalls"];
    assert_eq!(names(calls), ["close", "openat", "write"], "{calls:#}");
    assert_eq!(syscall(calls, "write").0, N * M, "{calls:#}");
    assert_eq!(syscall(calls, "openat").0, M, "{calls:#}");
    assert_eq!(syscall(calls, "close").0, M, "{calls:#}");
    // Per process: the crossing's calls, and the program's own outside any crossing
    // (loading, printing), which never include the crossing's.
    let p = &summary["syscalls"][0];
    assert_eq!(
        syscall(&p["syscalls"], "write").0,
        N * M + syscall(&p["outside"], "write").0
    );
    assert!(syscall(&p["outside"], "execve").0 >= 1, "{p:#}");
    // The capture file carries them: report gives the same figures.
    let out = xlperf(&["report", "--json", s(&capture)]);
    let reported = summary_of(&out);
    assert_eq!(reported["syscalls"], summary["syscalls"]);
    let again = row(&reported, "xl_write_null", None).expect("reported row");
    assert_eq!(again["syscalls"], r["syscalls"]);
    // The table has a SYSCALLS section naming them.
    let table = xlperf(&["report", s(&capture)]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("SYSCALLS"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("xl_write_null") && l.contains("write")),
        "{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sleeping_call_shows_its_sleep_and_a_spinning_one_none() {
    let summary = record(&["--ffi", &ffi("xl_sleep_ms")], &["sleep", "30", "3"]);
    let r = row(&summary, "xl_sleep_ms", None).unwrap_or_else(|| panic!("{summary:#}"));
    let calls = &r["syscalls"];
    assert_eq!(names(calls), ["clock_nanosleep"], "{calls:#}");
    let (count, total_ns) = syscall(calls, "clock_nanosleep");
    assert_eq!(count, 3, "{calls:#}");
    assert!(total_ns >= 90_000_000, "{calls:#}");
    assert!(total_ns <= r["total_ns"].as_u64().unwrap_or(0), "{r:#}");
    // A spin only reads the clock: through the vDSO, no system call at all, where the
    // clock source allows it (tsc); a virtual machine's clock source may not, and then
    // its reads are clock_gettime calls, and nothing else.
    let summary = record(&["--ffi", &ffi("xl_spin_ms")], &["spin", "5", "2"]);
    let r = row(&summary, "xl_spin_ms", None).unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(r["calls"], 2, "{r:#}");
    let clocksource =
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .unwrap_or_default();
    if clocksource.trim() == "tsc" {
        assert_eq!(r["syscalls"], serde_json::json!({}), "{r:#}");
    } else {
        assert!(
            names(&r["syscalls"]).iter().all(|n| n == "clock_gettime"),
            "{clocksource}: {r:#}"
        );
    }
}

#[test]
fn pid_mode_counts_only_the_traced_process() {
    let mut traced = WaitingAlloc::start(&["writes", &N.to_string(), &M.to_string()]);
    // Another driver doing the same calls, twice as many writes, at the same time.
    let mut other = WaitingAlloc::start(&["writes", &(2 * N).to_string(), &M.to_string()]);
    let pid = traced.pid();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "--syscalls",
        "-p",
        &pid.to_string(),
        "--ffi",
        &ffi("xl_write_null"),
    ]);
    let xlperf = Reaped::new(xlperf);
    traced.release();
    other.release();
    traced.finish();
    other.finish();
    let summary = finish_json(xlperf.take());
    let r = row(&summary, "xl_write_null", Some(pid)).unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(syscall(&r["syscalls"], "write").0, N * M, "{r:#}");
    let processes = summary["syscalls"].as_array().expect("syscalls[]");
    assert!(processes.iter().all(|p| p["pid"] == pid), "{summary:#}");
}

#[test]
fn syscalls_with_all_processes_is_one_clear_error() {
    let out = xlperf(&[
        "record",
        "--syscalls",
        "--all",
        "--ffi",
        "libc.so.6:getpid",
        "-d",
        "1s",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("--syscalls") && err.contains("-p PID"),
        "{err}"
    );
}

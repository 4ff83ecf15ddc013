//! C library called from C: exact call counts, nesting, spawn and pid modes.

use xlperf_tests::{
    WaitingDriver, c_workloads, calls, finish_json, record_json, row, s, spawn_attached,
};

const ADDS: u64 = 2500;
const NESTED: u64 = 7;
const MS: u64 = 3;

#[test]
fn counts_every_call_of_a_spawned_c_program() {
    let w = c_workloads();
    let summary = record_json(&[
        "--ffi",
        s(&w.lib),
        "--",
        s(&w.driver),
        &ADDS.to_string(),
        &NESTED.to_string(),
        &MS.to_string(),
    ]);
    assert_eq!(calls(&summary, "xl_add"), ADDS);
    assert_eq!(calls(&summary, "xl_outer"), NESTED);
    assert_eq!(calls(&summary, "xl_inner"), NESTED);
    assert_eq!(calls(&summary, "xl_square"), 0, "xl_square is never called");
    assert_eq!(summary["target_exit_status"], 0);
    assert_eq!(summary["unmatched_returns"], 0);
    assert_eq!(summary["abandoned"], 0);
}

#[test]
fn nested_calls_have_depth_and_inclusive_time() {
    let w = c_workloads();
    let summary = record_json(&[
        "--ffi",
        &format!("{}:xl_*er", s(&w.lib)),
        "--",
        s(&w.driver),
        "0",
        &NESTED.to_string(),
        &MS.to_string(),
    ]);
    let outer = row(&summary, "xl_outer", None).expect("xl_outer row");
    let inner = row(&summary, "xl_inner", None).expect("xl_inner row");
    assert_eq!(outer["calls"], NESTED);
    assert_eq!(inner["calls"], NESTED);
    assert_eq!(outer["depth_max"], 1, "xl_outer is outermost");
    assert_eq!(inner["depth_max"], 2, "xl_inner runs inside xl_outer");
    let outer_total = outer["total_ns"].as_u64().expect("total");
    let inner_total = inner["total_ns"].as_u64().expect("total");
    // xl_inner sleeps 2*MS per call, xl_outer MS and then calls xl_inner: inclusive ≥ 3*MS.
    assert!(
        inner_total >= NESTED * 2 * MS * 1_000_000,
        "inner {inner_total} ns"
    );
    assert!(
        outer_total >= NESTED * 3 * MS * 1_000_000,
        "outer {outer_total} ns"
    );
    assert!(outer_total >= inner_total + NESTED * MS * 1_000_000);
    assert!(outer["p50_ns"].as_u64() >= inner["p50_ns"].as_u64());
    // Not charged to the library's own helper: xl_add was filtered out by the glob.
    assert!(row(&summary, "xl_add", None).is_none());
}

#[test]
fn spawn_mode_catches_calls_in_the_first_millisecond() {
    let w = c_workloads();
    // One call from a constructor (before main) and 3 from main's first lines.
    let summary = record_json(&[
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
        "--",
        s(&w.early),
        "3",
    ]);
    assert_eq!(calls(&summary, "xl_add"), 4);
    assert_eq!(summary["target_exit_status"], 3);
}

#[test]
fn pid_mode_counts_exactly_and_ends_when_the_target_exits() {
    let w = c_workloads();
    let mut driver = WaitingDriver::start(ADDS, NESTED);
    let pid = driver.pid();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "-p",
        &pid.to_string(),
        "--ffi",
        &format!("{}:xl_{{add,outer}}", s(&w.lib)),
    ]);
    driver.go();
    let summary = finish_json(xlperf);
    assert_eq!(
        row(&summary, "xl_add", Some(pid)).expect("row")["calls"],
        ADDS
    );
    assert_eq!(
        row(&summary, "xl_outer", Some(pid)).expect("row")["calls"],
        NESTED
    );
    assert_eq!(
        row(&summary, "xl_add", Some(pid)).expect("row")["comm"],
        "c_driver"
    );
    assert!(summary["target_exit_status"].is_null(), "not our child");
}

#[test]
fn library_is_found_by_name_in_the_target_maps() {
    let mut driver = WaitingDriver::start(ADDS, 0);
    let pid = driver.pid();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "-p",
        &pid.to_string(),
        "--ffi",
        "libxlcalc:xl_add",
    ]);
    driver.go();
    let summary = finish_json(xlperf);
    assert_eq!(
        row(&summary, "xl_add", Some(pid)).expect("row")["calls"],
        ADDS
    );
}

#[test]
fn two_pids_are_counted_apart() {
    let w = c_workloads();
    let mut a = WaitingDriver::start(100, 0);
    let mut b = WaitingDriver::start(250, 0);
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "-p",
        &a.pid().to_string(),
        "-p",
        &b.pid().to_string(),
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
    ]);
    a.go();
    b.go();
    let summary = finish_json(xlperf);
    assert_eq!(
        row(&summary, "xl_add", Some(a.pid())).expect("row a")["calls"],
        100
    );
    assert_eq!(
        row(&summary, "xl_add", Some(b.pid())).expect("row b")["calls"],
        250
    );
}

#[test]
fn table_output_names_library_and_function() {
    let w = c_workloads();
    let out = xlperf_tests::xlperf(&[
        "record",
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
        "--",
        s(&w.driver),
        "42",
        "0",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("xl_add"))
        .unwrap_or_else(|| panic!("no xl_add line in:\n{text}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..3], ["libxlcalc.so", "xl_add", "42"], "{text}");
    assert!(text.contains("LIBRARY") && text.contains("P99"), "{text}");
}

#[test]
fn all_processes_mode_sees_a_process_started_before_it() {
    let w = c_workloads();
    let mut driver = WaitingDriver::start(321, 0);
    let pid = driver.pid();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "--all",
        "-d",
        "2s",
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
    ]);
    driver.go();
    let summary = finish_json(xlperf);
    // Tests running in parallel may call the same library meanwhile: rows are per pid,
    // so this driver's count stays exact.
    assert_eq!(
        row(&summary, "xl_add", Some(pid)).expect("row")["calls"],
        321
    );
}

#[test]
fn threads_keep_separate_call_stacks() {
    let w = c_workloads();
    let (threads, n) = (8u64, 3000u64);
    let summary = record_json(&[
        "--ffi",
        &format!("{}:xl_*", s(&w.lib)),
        "--",
        s(&w.threads),
        &threads.to_string(),
        &n.to_string(),
    ]);
    assert_eq!(calls(&summary, "xl_add"), threads * n);
    let outer = row(&summary, "xl_outer", None).expect("xl_outer");
    let inner = row(&summary, "xl_inner", None).expect("xl_inner");
    assert_eq!(
        (outer["calls"].as_u64(), inner["calls"].as_u64()),
        (Some(threads), Some(threads))
    );
    // Each thread's xl_add calls are outermost on its own stack, whatever other threads do.
    assert_eq!(
        row(&summary, "xl_add", None).expect("xl_add")["depth_max"],
        1
    );
    assert_eq!(outer["depth_max"], 1);
    assert_eq!(inner["depth_max"], 2);
    assert_eq!(summary["unmatched_returns"], 0);
    assert_eq!(summary["abandoned"], 0);
}

#[test]
fn dropped_records_are_counted_not_hidden() {
    let w = c_workloads();
    let n = 200_000u64;
    let out = xlperf_tests::xlperf(&[
        "record",
        "--json",
        "--ring-size",
        "4K",
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
        "--",
        s(&w.driver),
        &n.to_string(),
        "0",
    ]);
    let summary = xlperf_tests::summary_of(&out);
    let dropped = summary["dropped"].as_u64().expect("dropped");
    // A 4 KiB ring holds ~85 records; 200 000 calls in a burst must overflow it.
    assert!(dropped > 0, "{summary:#}");
    assert_eq!(
        calls(&summary, "xl_add") + dropped,
        n,
        "every call is either recorded or counted as dropped"
    );

    let table = xlperf_tests::xlperf(&[
        "record",
        "--ring-size",
        "4K",
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
        "--",
        s(&w.driver),
        &n.to_string(),
        "0",
    ]);
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(
        text.contains("dropped because the ring buffer was full") && text.contains("--ring-size"),
        "{text}"
    );
}

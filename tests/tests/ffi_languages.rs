//! Libraries written in Rust, Nim and Zig, called N times through their C ABI.

use xlperf_tests::{c_workloads, calls, nim_lib, record_json, rust_lib, s, zig_lib};

fn count_calls(lib: &std::path::Path, symbol: &str, n: u64) -> u64 {
    let w = c_workloads();
    let summary = record_json(&[
        "--ffi",
        &format!("{}:{symbol}", s(lib)),
        "--",
        s(&w.dl_driver),
        s(lib),
        symbol,
        &n.to_string(),
    ]);
    assert_eq!(summary["target_exit_status"], 0);
    calls(&summary, symbol)
}

#[test]
fn rust_cdylib() {
    assert_eq!(count_calls(&rust_lib(), "rs_triple", 3001), 3001);
}

#[test]
fn nim_exportc_dynlib_proc() {
    assert_eq!(count_calls(&nim_lib(), "nim_double", 2002), 2002);
}

#[test]
fn zig_export_fn() {
    assert_eq!(count_calls(&zig_lib(), "zig_inc", 1003), 1003);
}

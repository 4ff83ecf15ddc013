//! Python calling native code: ctypes into our C library, and CPython's own zlib module
//! into the system libz.so.1.

use xlperf_tests::{c_workloads, calls, python_script, record_json, row, s};

#[test]
fn python_ctypes_calls_are_counted_exactly() {
    let w = c_workloads();
    let n = 1234;
    let summary = record_json(&[
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
        "--",
        "python3",
        s(&python_script("ctypes_driver.py")),
        s(&w.lib),
        &n.to_string(),
    ]);
    assert_eq!(calls(&summary, "xl_add"), n);
    assert_eq!(summary["target_exit_status"], 0);
}

#[test]
fn cpython_zlib_compress_calls_deflate_init_once_each() {
    let n = 77;
    let summary = record_json(&[
        "--ffi",
        "libz.so.1:deflate*",
        "--",
        "python3",
        s(&python_script("zlib_driver.py")),
        &n.to_string(),
    ]);
    assert_eq!(calls(&summary, "deflateInit2_"), n, "{summary:#}");
    assert_eq!(calls(&summary, "deflateEnd"), n, "{summary:#}");
    // zlib.compress makes one deflate(Z_FINISH) call for a small buffer.
    assert_eq!(calls(&summary, "deflate"), n, "{summary:#}");
    let lib = row(&summary, "deflateInit2_", None).expect("row")["library"]
        .as_str()
        .expect("library");
    assert!(lib.starts_with("libz.so.1"), "{lib}");
}

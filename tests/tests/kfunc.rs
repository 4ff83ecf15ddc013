//! `--kfunc`: kernel functions traced with a kprobe pair, filtered to the target's
//! threads and charged to the crossing that called them, against `xl_write_null`
//! (tests/workloads/c/xl_alloc.c: N `write(2)`s to /dev/null per call, each one
//! `vfs_write`). Kernels with kprobes run them in the VM matrix (`cargo xtask vm-test`);
//! on a kernel without (our host) each test checks the one-line error instead.

use serde_json::Value;
use xlperf_tests::{
    alloc::{Reaped, WaitingAlloc, alloc_workloads, ffi},
    finish_json,
    kfunc::has_kprobes,
    s, spawn_attached, summary_of, xlperf,
};

const N: u64 = 40;
const M: u64 = 3;

/// The row of kernel function `function` inside crossing `parent` (by function name).
fn kernel_row<'a>(summary: &'a Value, function: &str, parent: &str) -> Option<&'a Value> {
    summary["boundaries"].as_array()?.iter().find(|b| {
        b["function"] == function
            && b["parent"]
                .as_str()
                .is_some_and(|p| p.ends_with(&format!(":{parent}")))
    })
}

fn crossing_row<'a>(summary: &'a Value, function: &str) -> Option<&'a Value> {
    summary["boundaries"]
        .as_array()?
        .iter()
        .find(|b| b["function"] == function && b["runtime"] == "ffi")
}

/// Where there are no kprobes: one line naming what is missing and what still works,
/// and a non-zero exit.
fn assert_no_kprobes_error(args: &[&str]) {
    let out = xlperf(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("--kfunc needs kprobes") && err.contains("--syscalls"),
        "{err}"
    );
}

#[test]
fn kernel_calls_are_charged_to_the_crossing_that_makes_them() {
    let w = alloc_workloads();
    let (n, m) = (N.to_string(), M.to_string());
    let write_null = ffi("xl_write_null");
    let args = [
        "record",
        "--json",
        "--kfunc",
        "vfs_write",
        "--ffi",
        &write_null,
        "--",
        s(&w.driver),
        "writes",
        &n,
        &m,
    ];
    if !has_kprobes() {
        return assert_no_kprobes_error(&args);
    }
    let dir = std::env::temp_dir().join(format!("xlperf-kfunc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let capture = dir.join("writes.xlperf");
    let mut with_capture = args.to_vec();
    with_capture.splice(2..2, ["-o", s(&capture)]);
    let summary = summary_of(&xlperf(&with_capture));
    // The capture file carries the kernel rows and their parents: report gives the same.
    let reported = summary_of(&xlperf(&["report", "--json", s(&capture)]));
    assert_eq!(reported["boundaries"], summary["boundaries"]);
    let _ = std::fs::remove_dir_all(&dir);
    let k = kernel_row(&summary, "vfs_write", "xl_write_null")
        .unwrap_or_else(|| panic!("no vfs_write row under xl_write_null: {summary:#}"));
    assert_eq!(k["calls"], N * M, "{k:#}");
    assert_eq!(k["runtime"], "kernel", "{k:#}");
    assert_eq!(k["library"], "vmlinux", "{k:#}");
    assert_eq!(k["probe_site"], "kprobe", "{k:#}");
    assert_eq!(k["depth_max"], 2, "nested in the crossing: {k:#}");
    let c = crossing_row(&summary, "xl_write_null").unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(c["calls"], M, "{c:#}");
    let kernel_ns = c["kernel_ns"].as_u64().unwrap_or(0);
    assert_eq!(kernel_ns, k["total_ns"].as_u64().unwrap_or(1), "{c:#}");
    assert!(
        kernel_ns > 0 && kernel_ns <= c["total_ns"].as_u64().unwrap_or(0),
        "{c:#}"
    );
    // Nothing else was charged to the crossing's kernel calls: one vfs_write row there.
    let under: Vec<&Value> = summary["boundaries"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|b| {
                    b["parent"]
                        .as_str()
                        .is_some_and(|p| p.ends_with(":xl_write_null"))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(under.len(), 1, "{summary:#}");
    // The kprobe pair's cost is measured and taken out like the uprobe pair's.
    assert!(
        summary["probe_costs"]["kernel_pair"]["total_ns"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{summary:#}"
    );
}

#[test]
fn a_crossing_that_makes_no_such_call_gets_none() {
    let w = alloc_workloads();
    let spin = ffi("xl_spin_ms");
    let args = [
        "record",
        "--json",
        "--kfunc",
        "vfs_write",
        "--ffi",
        &spin,
        "--",
        s(&w.driver),
        "spin",
        "5",
        "2",
    ];
    if !has_kprobes() {
        return assert_no_kprobes_error(&args);
    }
    let summary = summary_of(&xlperf(&args));
    let c = crossing_row(&summary, "xl_spin_ms").unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(c["calls"], 2, "{c:#}");
    assert!(c.get("kernel_ns").is_none(), "{c:#}");
    assert!(
        kernel_row(&summary, "vfs_write", "xl_spin_ms").is_none(),
        "{summary:#}"
    );
}

#[test]
fn pid_mode_counts_only_the_traced_process() {
    let (n, m) = (N.to_string(), M.to_string());
    let write_null = ffi("xl_write_null");
    if !has_kprobes() {
        return assert_no_kprobes_error(&[
            "record",
            "--kfunc",
            "vfs_write",
            "--ffi",
            &write_null,
            "-p",
            "1",
        ]);
    }
    let mut traced = WaitingAlloc::start(&["writes", &n, &m]);
    // Another driver doing the same calls, twice as many writes, at the same time.
    let twice = (2 * N).to_string();
    let mut other = WaitingAlloc::start(&["writes", &twice, &m]);
    let pid = traced.pid();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "--kfunc",
        "vfs_write",
        "-p",
        &pid.to_string(),
        "--ffi",
        &write_null,
    ]);
    let xlperf = Reaped::new(xlperf);
    traced.release();
    other.release();
    traced.finish();
    other.finish();
    let summary = finish_json(xlperf.take());
    let k =
        kernel_row(&summary, "vfs_write", "xl_write_null").unwrap_or_else(|| panic!("{summary:#}"));
    assert_eq!(k["calls"], N * M, "{k:#}");
    let rows = summary["boundaries"].as_array().expect("boundaries[]");
    assert!(rows.iter().all(|b| b["pid"] == pid), "{summary:#}");
}

#[test]
fn globs_that_match_nothing_or_too_much_are_one_clear_error() {
    let w = alloc_workloads();
    for (glob, expected) in [
        ("xlperf_no_such_function_*", "no kernel function matches"),
        ("*", "kernel functions match"),
    ] {
        let args = [
            "record",
            "--kfunc",
            glob,
            "--",
            s(&w.driver),
            "spin",
            "1",
            "1",
        ];
        if !has_kprobes() {
            assert_no_kprobes_error(&args);
            continue;
        }
        let out = xlperf(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{glob}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{glob}: {err}");
        assert!(err.contains(expected), "{glob}: {err}");
    }
}

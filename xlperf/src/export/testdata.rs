//! A small hand-built capture that every format's tests draw, so their expectations can
//! be worked out by hand.
//!
//! Process 100 `python3`; times in µs after [`BASE_NS`]:
//! - thread 100 `python3`: `libfoo.so:A` 10–110 (allocates 100 B), inside it
//!   `libfoo.so:B` 30–70 (allocates 300 B; blocked 40–55, runnable 55–60, woken by
//!   `kworker/0:1`), then `A` again 200–210 (allocates 64 B);
//! - thread 101 `worker`: `libbar.so:C` 50–75, `libbar.so:D` 80–80.3, blocked 110–120
//!   outside any call.

use std::collections::BTreeMap;

use xlperf_common::{CallRecord, Cost, NO_BOUNDARY, OffCpuRecord};

use crate::model::{BoundaryInfo, CallEvent, Capture, Meta, ThreadInfo};

/// `CLOCK_MONOTONIC` at the start of the recording.
pub const BASE_NS: u64 = 1_000_000_000;
pub const PID: u32 = 100;
pub const MAIN_TID: u32 = 100;
pub const WORKER_TID: u32 = 101;

const US: u64 = 1_000;

fn boundary(library: &str, function: &str) -> BoundaryInfo {
    BoundaryInfo {
        library: library.to_owned(),
        library_path: format!("/opt/{library}"),
        function: function.to_owned(),
        runtime: "ffi".to_owned(),
        ..BoundaryInfo::default()
    }
}

fn call(tid: u32, boundary: u32, start_us: u64, duration_ns: u64, depth: u32) -> CallRecord {
    CallRecord {
        start_ns: BASE_NS + start_us * US,
        duration_ns,
        boundary,
        parent: if depth > 1 { 1 } else { NO_BOUNDARY },
        pid: PID,
        tid,
        depth,
        ..CallRecord::default()
    }
}

fn allocating(record: CallRecord, alloc_count: u64, alloc_bytes: u64) -> CallEvent {
    CallEvent {
        record,
        cost: Some(Cost {
            alloc_count,
            alloc_bytes,
            ..Cost::default()
        }),
    }
}

fn comm(name: &str) -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    bytes
}

/// The capture described in the module documentation.
pub fn capture() -> Capture {
    let mut b_call = allocating(call(MAIN_TID, 2, 30, 40 * US, 2), 2, 300);
    if let Some(cost) = &mut b_call.cost {
        cost.offcpu_ns = 15 * US;
        cost.runq_ns = 5 * US;
        cost.switches = 1;
    }
    // In the order the calls returned, as a recording stores them.
    let calls = vec![
        b_call,
        allocating(call(MAIN_TID, 1, 10, 100 * US, 1), 1, 100),
        CallEvent {
            record: call(WORKER_TID, 3, 50, 25 * US, 1),
            cost: None,
        },
        CallEvent {
            record: call(WORKER_TID, 4, 80, 300, 1),
            cost: None,
        },
        allocating(call(MAIN_TID, 1, 200, 10 * US, 1), 1, 64),
    ];
    let off_cpu = vec![
        OffCpuRecord {
            end_ns: BASE_NS + 60 * US,
            blocked_ns: 15 * US,
            runq_ns: 5 * US,
            pid: PID,
            tid: MAIN_TID,
            boundary: 2,
            waker_pid: 200,
            waker_tid: 201,
            waker_comm: comm("kworker/0:1"),
            ..OffCpuRecord::default()
        },
        OffCpuRecord {
            end_ns: BASE_NS + 120 * US,
            blocked_ns: 10 * US,
            pid: PID,
            tid: WORKER_TID,
            boundary: NO_BOUNDARY,
            ..OffCpuRecord::default()
        },
    ];
    Capture {
        meta: Meta {
            xlperf_version: "0.1.0".to_owned(),
            started_unix_ns: 1_700_000_000_000_000_000,
            started_monotonic_ns: BASE_NS,
            argv: vec!["xlperf".to_owned(), "record".to_owned()],
            alloc: true,
            sched: true,
            ..Meta::default()
        },
        processes: BTreeMap::from([(PID, "python3".to_owned())]),
        threads: BTreeMap::from([
            (
                MAIN_TID,
                ThreadInfo {
                    pid: PID,
                    comm: "python3".to_owned(),
                },
            ),
            (
                WORKER_TID,
                ThreadInfo {
                    pid: PID,
                    comm: "worker".to_owned(),
                },
            ),
        ]),
        boundaries: BTreeMap::from([
            (1, boundary("libfoo.so", "A")),
            (2, boundary("libfoo.so", "B")),
            (3, boundary("libbar.so", "C")),
            (4, boundary("libbar.so", "D")),
        ]),
        calls,
        off_cpu,
        end: None,
        truncated: false,
    }
}

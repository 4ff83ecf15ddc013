//! Detectors over a finished summary: what an engineer should look at first.

use super::{
    Summary,
    summary::{BoundarySummary, Insight},
    table::human_ns,
};

/// A crossing is "blocking" when at least this share of the time it was not waiting for a
/// CPU was spent blocked (run-queue time is the machine's business, not the call's).
const BLOCKING_SHARE: f64 = 0.5;
/// ... and it spent at least this long blocked (a few µs of sleep are not a finding).
const BLOCKING_MIN_NS: u64 = 1_000_000;
/// A thread waits "too long" for a CPU when this share of the recording is run-queue time,
const RUNQ_SHARE: f64 = 0.10;
/// ... or when its p99 wait is at least this long.
const RUNQ_P99_NS: u64 = 5_000_000;
/// A crossing "leaks" when blocks it allocated in every quarter of the recording are
/// still live at the end, and it was called at least this often.
const LEAK_MIN_CALLS: u64 = 4;

/// Functions whose purpose is to wait (event loops, sleeps, condition variables): being
/// blocked inside them is what they are for, not a finding.
const WAITING_FUNCTIONS: &[&str] = &[
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "poll",
    "ppoll",
    "select",
    "pselect",
    "pselect6",
    "nanosleep",
    "clock_nanosleep",
    "sleep",
    "usleep",
    "pause",
    "sigwait",
    "sigwaitinfo",
    "sigtimedwait",
    "sigsuspend",
    "pthread_cond_wait",
    "pthread_cond_timedwait",
    "pthread_cond_clockwait",
    "pthread_join",
    "sem_wait",
    "sem_timedwait",
    "sem_clockwait",
    "wait",
    "waitpid",
    "waitid",
    "wait4",
    "io_getevents",
    "io_uring_enter",
    "kevent",
    "uv_run",
];

/// Is `function` a waiting primitive (also under glibc's versioned aliases, `__poll`)?
fn is_waiting(function: &str) -> bool {
    let name = function.trim_start_matches('_');
    WAITING_FUNCTIONS.contains(&name)
        || name
            .split_once('@')
            .is_some_and(|(base, _)| WAITING_FUNCTIONS.contains(&base))
}

/// Every finding, in order: long NIFs, blocking calls, leaks, run-queue latency.
pub fn detect(summary: &Summary) -> Vec<Insight> {
    let mut out = Vec::new();
    for b in &summary.boundaries {
        if let Some(nif) = &b.nif
            && nif.long_calls.count > 0
        {
            out.push(insight(
                "long_nif",
                b,
                format!(
                    "long NIF on a normal scheduler: {} of {} calls over {} (max {}); make it dirty or yield",
                    nif.long_calls.count,
                    nif.scheduler.normal,
                    human_ns(nif.long_calls.threshold_ns),
                    human_ns(nif.long_calls.normal_max_ns)
                ),
            ));
        }
    }
    for b in &summary.boundaries {
        // Its own blocked time: a caller of a blocking call is not itself blocking.
        let Some(sched) = b.sched.as_ref().map(|s| &s.fields) else {
            continue;
        };
        if is_waiting(&b.function) {
            continue;
        }
        let running_or_blocked = sched.offcpu_ns + sched.oncpu_ns;
        if sched.offcpu_ns >= BLOCKING_MIN_NS
            && sched.offcpu_ns as f64 >= BLOCKING_SHARE * running_or_blocked as f64
        {
            let waker = b
                .sched
                .as_ref()
                .and_then(|s| s.wakers.first())
                .map(|w| match w.pid {
                    0 => "; woken mostly by interrupts (a timer or a device)".to_owned(),
                    pid if pid == b.pid => {
                        format!(
                            "; woken mostly by thread {} ({}) of the same process",
                            w.tid, w.comm
                        )
                    }
                    pid => format!("; woken mostly by {} (pid {pid}, thread {})", w.comm, w.tid),
                })
                .unwrap_or_default();
            out.push(insight(
                "blocking",
                b,
                format!(
                    "blocking call inside {}: {} of its {} blocked off CPU ({:.0}% of the time it was not waiting for a CPU){waker}",
                    b.function,
                    human_ns(sched.offcpu_ns),
                    human_ns(b.total_ns),
                    100.0 * sched.offcpu_ns as f64 / running_or_blocked.max(1) as f64
                ),
            ));
        }
    }
    for b in &summary.boundaries {
        let Some(alloc) = &b.alloc else {
            continue;
        };
        if alloc.growing && alloc.live_bytes > 0 && b.calls >= LEAK_MIN_CALLS {
            out.push(insight(
                "leak",
                b,
                format!(
                    "possible leak: {} bytes allocated inside {} are still live, from allocations made throughout the recording",
                    alloc.live_bytes, b.function
                ),
            ));
        }
    }
    for t in summary.threads.iter().flatten() {
        let share = t.runq.total_ns as f64 / summary.duration_ns.max(1) as f64;
        if share >= RUNQ_SHARE || t.runq.p99_ns >= RUNQ_P99_NS {
            out.push(Insight {
                kind: "runqueue",
                pid: t.pid,
                tid: Some(t.tid),
                function: None,
                message: format!(
                    "thread {} ({}) waited {} for a CPU ({:.0}% of the recording; p99 {}, {} waits): too few CPUs or a busy neighbour",
                    t.tid,
                    t.comm,
                    human_ns(t.runq.total_ns),
                    100.0 * share,
                    human_ns(t.runq.p99_ns),
                    t.runq.count
                ),
            });
        }
    }
    out
}

fn insight(kind: &'static str, b: &BoundarySummary, message: String) -> Insight {
    Insight {
        kind,
        pid: b.pid,
        tid: None,
        function: Some(b.function.clone()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::is_waiting;

    #[test]
    fn waiting_primitives_are_not_blocking_calls() {
        for f in [
            "epoll_wait",
            "__poll",
            "pthread_cond_wait",
            "nanosleep@GLIBC_2.2.5",
        ] {
            assert!(is_waiting(f), "{f}");
        }
        for f in ["read", "thumb_flush", "xl_nif:sleep_ms/1", "epoll_ctl"] {
            assert!(!is_waiting(f), "{f}");
        }
    }
}

//! The human-readable summary printed at the end of `xlperf record`.

use std::fmt::Write as _;

use super::Summary;

/// Formats nanoseconds with a unit that keeps 3 significant digits.
pub fn human_ns(ns: u64) -> String {
    let ns_f = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.2}µs", ns_f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns_f / 1e6)
    } else {
        format!("{:.2}s", ns_f / 1e9)
    }
}

/// Long NIF calls on normal schedulers: the first thing an Erlang/Elixir engineer needs.
fn long_nifs(summary: &Summary, out: &mut String) {
    let long: Vec<_> = summary
        .boundaries
        .iter()
        .filter_map(|b| Some((b, b.nif.as_ref()?)))
        .filter(|(_, nif)| nif.long_calls.count > 0)
        .collect();
    let Some((_, first)) = long.first() else {
        return;
    };
    let _ = writeln!(
        out,
        "LONG NIF CALLS on normal schedulers (over {}): each holds up every Erlang process queued on its scheduler",
        human_ns(first.long_calls.threshold_ns)
    );
    let width = long
        .iter()
        .map(|(b, _)| b.function.len())
        .max()
        .unwrap_or(0);
    for (b, nif) in &long {
        let _ = writeln!(
            out,
            "  {:<width$}  {} of {} normal-scheduler calls  p99 {}  max {}  (pid {} {})",
            b.function,
            nif.long_calls.count,
            nif.scheduler.normal,
            human_ns(nif.long_calls.normal_p99_ns),
            human_ns(nif.long_calls.normal_max_ns),
            b.pid,
            b.comm,
        );
    }
    out.push_str(
        "  fix: make them dirty NIFs (ERL_NIF_DIRTY_JOB_CPU_BOUND / _IO_BOUND, Rustler schedule = \"DirtyCpu\"), yield with enif_schedule_nif, or split the work\n\n",
    );
}

/// The detectors' findings other than long NIFs (which have their own section above).
fn findings(summary: &Summary, out: &mut String) {
    let found: Vec<_> = summary
        .insights
        .iter()
        .filter(|i| i.kind != "long_nif")
        .collect();
    if found.is_empty() {
        return;
    }
    out.push_str(
        "INSIGHTS
",
    );
    for insight in found {
        let _ = writeln!(
            out,
            "  {}: {} (pid {})",
            insight.kind, insight.message, insight.pid
        );
    }
    out.push('\n');
}

/// Left-aligns the first `left` columns and right-aligns the others.
pub fn aligned(rows: &[Vec<String>], left: usize, out: &mut String) {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        widths.resize(widths.len().max(row.len()), 0);
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::from("  ");
        for (i, cell) in row.iter().enumerate() {
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            if i < left {
                line.push_str(cell);
                line.push_str(&pad);
            } else {
                line.push_str(&pad);
                line.push_str(cell);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// Bytes with a binary unit.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes}B")
    } else if bytes < 1 << 20 {
        format!("{:.1}KiB", b / 1024.0)
    } else if bytes < 1 << 30 {
        format!("{:.1}MiB", b / f64::from(1u32 << 20))
    } else {
        format!("{:.2}GiB", b / f64::from(1u32 << 30))
    }
}

/// `--alloc`: per crossing, then per process.
fn allocations(summary: &Summary, out: &mut String) {
    let Some(recording) = &summary.alloc else {
        return;
    };
    out.push_str(
        "\nALLOCATIONS charged to the innermost traced call (INCL. adds calls nested in it)\n",
    );
    let mut rows = vec![vec![
        "FUNCTION".to_owned(),
        "ALLOCS".into(),
        "BYTES".into(),
        "FREES".into(),
        "FREED".into(),
        "LIVE".into(),
        "INCL. BYTES".into(),
        "MMAP".into(),
    ]];
    let kmem = summary.boundaries.iter().any(|b| {
        b.alloc
            .as_ref()
            .is_some_and(|a| a.fields.kmem_bytes.is_some())
    });
    if kmem {
        rows[0].push("KERNEL".into());
    }
    for b in &summary.boundaries {
        let Some(alloc) = &b.alloc else { continue };
        // Rows with nothing charged are noise here; the main table lists every function.
        if alloc.fields.alloc_count
            + alloc.fields.free_count
            + alloc.fields.mmap_count
            + alloc.fields.kmem_count.unwrap_or(0)
            == 0
            && b.inclusive
                .as_ref()
                .and_then(|i| i.alloc.as_ref())
                .is_none_or(|i| i.alloc_count == 0)
        {
            continue;
        }
        let incl = b.inclusive.as_ref().and_then(|i| i.alloc.as_ref());
        rows.push(vec![
            b.function.clone(),
            alloc.fields.alloc_count.to_string(),
            human_bytes(alloc.fields.alloc_bytes),
            alloc.fields.free_count.to_string(),
            human_bytes(alloc.fields.free_bytes),
            human_bytes(alloc.live_bytes),
            human_bytes(incl.map_or(0, |i| i.alloc_bytes)),
            human_bytes(alloc.fields.mmap_bytes),
        ]);
        if let (true, Some(row)) = (kmem, rows.last_mut()) {
            row.push(format!(
                "{} in {}",
                human_bytes(alloc.fields.kmem_bytes.unwrap_or(0)),
                alloc.fields.kmem_count.unwrap_or(0)
            ));
        }
    }
    for p in summary.processes.iter().flatten() {
        rows.push(vec![
            format!("(pid {} {}, all threads)", p.pid, p.comm),
            p.alloc_count.to_string(),
            human_bytes(p.alloc_bytes),
            p.free_count.to_string(),
            human_bytes(p.free_bytes),
            human_bytes(p.live_bytes),
            String::new(),
            String::new(),
        ]);
    }
    aligned(&rows, 1, out);
    let untracked: u64 = summary
        .processes
        .iter()
        .flatten()
        .map(|p| p.frees_untracked)
        .sum();
    if let Some(sample) = recording.sample_bytes {
        let _ = writeln!(
            out,
            "  sampled: one block tracked per {} allocated; FREES, FREED and LIVE are estimates (ALLOCS and BYTES are exact)",
            human_bytes(sample)
        );
    }
    if untracked > 0 || recording.live_evicted > 0 {
        let _ = writeln!(
            out,
            "  {untracked} frees of blocks allocated before the recording (sizes unknown, not counted as FREES); {} blocks evicted from the live map (raise --alloc-live-max)",
            recording.live_evicted
        );
    }
}

/// `--sched`: per crossing, then the threads that waited longest for a CPU.
fn scheduling(summary: &Summary, out: &mut String) {
    let Some(threads) = &summary.threads else {
        return;
    };
    if summary.boundaries.iter().any(|b| b.sched.is_some()) {
        out.push_str("\nSCHEDULING of the innermost traced call: on CPU, blocked, and runnable waiting for a CPU\n");
        let mut rows = vec![vec![
            "FUNCTION".to_owned(),
            "ON-CPU".into(),
            "BLOCKED".into(),
            "RUN-QUEUE".into(),
            "SWITCHES".into(),
            "WOKEN BY".into(),
        ]];
        for b in &summary.boundaries {
            let Some(sched) = &b.sched else { continue };
            rows.push(vec![
                b.function.clone(),
                human_ns(sched.fields.oncpu_ns),
                human_ns(sched.fields.offcpu_ns),
                human_ns(sched.fields.runq_ns),
                sched.fields.switches.to_string(),
                sched
                    .wakers
                    .first()
                    .map(|w| match w.pid {
                        0 => format!("{} ×{}", w.comm, w.count),
                        pid => format!("{} (pid {pid} tid {}) ×{}", w.comm, w.tid, w.count),
                    })
                    .unwrap_or_default(),
            ]);
        }
        aligned(&rows, 1, out);
    }
    let waiting: Vec<_> = threads
        .iter()
        .filter(|t| t.runq.count > 0)
        .take(5)
        .collect();
    if waiting.is_empty() {
        return;
    }
    out.push_str("\nRUN-QUEUE LATENCY by thread (time runnable before getting a CPU)\n");
    let mut rows = vec![vec![
        "THREAD".to_owned(),
        "WAITS".into(),
        "TOTAL".into(),
        "P50".into(),
        "P99".into(),
        "MAX".into(),
    ]];
    for t in waiting {
        rows.push(vec![
            format!("{} {} (pid {})", t.tid, t.comm, t.pid),
            t.runq.count.to_string(),
            human_ns(t.runq.total_ns),
            human_ns(t.runq.p50_ns),
            human_ns(t.runq.p99_ns),
            human_ns(t.runq.max_ns),
        ]);
    }
    aligned(&rows, 1, out);
}

/// Where a NIF's calls ran: `normal`, `dirty-cpu`, `dirty-io`, `other` or `mixed`.
fn scheduler_of(b: &super::BoundarySummary) -> String {
    let Some(nif) = &b.nif else {
        return "-".into();
    };
    let s = &nif.scheduler;
    let kinds = [
        (s.normal, "normal"),
        (s.dirty_cpu, "dirty-cpu"),
        (s.dirty_io, "dirty-io"),
        (s.other, "other"),
    ];
    let used: Vec<&str> = kinds
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(_, k)| *k)
        .collect();
    match used.as_slice() {
        [one] => (*one).to_owned(),
        [] => "-".into(),
        _ => "mixed".into(),
    }
}

/// Marks rows whose probe the kernel single-steps.
const STEPPED_MARK: &str = "stepped";

/// What tracing cost, counted over every probe placed: uprobe hits at the measured cost
/// of their kind of site, and the tracepoint programs' run time.
fn overhead_line(summary: &Summary, calls: u64, out: &mut String) {
    let costs = &summary.probe_costs;
    let _ = write!(
        out,
        "\n{calls} calls in {}; {} records dropped; probes added ≈{} to the targets",
        human_ns(summary.duration_ns),
        summary.dropped,
        human_ns(summary.overhead_ns),
    );
    if summary.duration_ns > 0 {
        let _ = write!(
            out,
            " ({:.2}% of the recording)",
            summary.overhead_ns as f64 * 100.0 / summary.duration_ns as f64
        );
    }
    let _ = writeln!(
        out,
        "; a probe pair costs {} per call here ({} at a single-stepped site)",
        human_ns(costs.pair.emulated.total_ns),
        human_ns(costs.pair.single_stepped.total_ns),
    );
    let _ = writeln!(
        out,
        "latencies exclude the probe time measured inside each call ({} per call at emulated sites, {} at single-stepped ones, plus any probes nested in it); --json `raw` has them as measured",
        human_ns(costs.pair.emulated.in_call_ns),
        human_ns(costs.pair.single_stepped.in_call_ns),
    );
    if summary.alloc.is_some() || summary.threads.is_some() {
        match summary.overhead_tracepoints_ns {
            Some(ns) => {
                let _ = writeln!(
                    out,
                    "the overhead includes {} run by the scheduler/allocation tracepoint programs",
                    human_ns(ns)
                );
            }
            None => out.push_str(
                "note: the overhead leaves out the tracepoint programs: the kernel's BPF run-time statistics were not available\n",
            ),
        }
    }
}

/// Rows whose probes the kernel single-steps: what each of their calls costs.
fn stepped_note(summary: &Summary, out: &mut String) {
    let mut stepped: Vec<&str> = summary
        .boundaries
        .iter()
        .filter(|b| !b.probe_emulated)
        .map(|b| b.function.as_str())
        .collect();
    stepped.sort_unstable();
    stepped.dedup();
    if stepped.is_empty() {
        return;
    }
    let more = stepped.len().saturating_sub(5);
    stepped.truncate(5);
    let pair = summary.probe_costs.pair.single_stepped;
    let _ = writeln!(
        out,
        "note: {STEPPED_MARK}: no instruction the kernel emulates starts {}{}, so it single-steps the probed one: each call costs the target {} to trace (not {}); the {} of it inside each call is removed from the latencies above",
        stepped.join(", "),
        if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        },
        human_ns(pair.total_ns),
        human_ns(summary.probe_costs.pair.emulated.total_ns),
        human_ns(pair.in_call_ns),
    );
}

/// The KERNEL section (`--kfunc`): per crossing, the time its traced kernel functions
/// took of its own.
fn kernel_time(summary: &Summary, out: &mut String) {
    let rows: Vec<_> = summary
        .boundaries
        .iter()
        .filter_map(|b| Some((b, b.kernel_ns?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    out.push_str("\nKERNEL functions traced with --kfunc, inside each crossing\n");
    let mut table = vec![vec![
        "FUNCTION".to_owned(),
        "IN KERNEL".into(),
        "OF TOTAL".into(),
    ]];
    for (b, ns) in rows {
        let share = if b.total_ns == 0 {
            0.0
        } else {
            ns as f64 * 100.0 / b.total_ns as f64
        };
        table.push(vec![
            b.function.clone(),
            human_ns(ns),
            format!("{} ({share:.0}%)", human_ns(b.total_ns)),
        ]);
    }
    aligned(&table, 1, out);
}

pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    long_nifs(summary, &mut out);
    findings(summary, &mut out);
    crossings(summary, &mut out);
    allocations(summary, &mut out);
    scheduling(summary, &mut out);
    super::syscalls::section(summary, &mut out);
    kernel_time(summary, &mut out);
    let calls: u64 = summary.boundaries.iter().map(|b| b.calls).sum();
    overhead_line(summary, calls, &mut out);
    notes(summary, &mut out);
    if let Some(status) = summary.target_exit_status {
        let _ = writeln!(out, "target exited with status {status}");
    }
    out
}

/// The main table: one row per (process, function); the PID column only for several
/// processes, SCHEDULER only for NIFs.
fn crossings(summary: &Summary, out: &mut String) {
    if summary.boundaries.is_empty() {
        out.push_str(if summary.never_mapped.is_empty() {
            "no traced function was called during the recording\n"
        } else {
            "nothing was traced: the target never mapped the libraries named with --ffi\n"
        });
        return;
    }
    let any_nif = summary.boundaries.iter().any(|b| b.nif.is_some());
    let multi_pid = {
        let mut pids: Vec<u32> = summary.boundaries.iter().map(|b| b.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len() > 1
    };
    let header = [
        "PID",
        "LIBRARY",
        "FUNCTION",
        "SCHEDULER",
        "CALLS",
        "TOTAL",
        "P50",
        "P90",
        "P99",
        "MAX",
        "PROBE/CALL",
    ]
    .map(String::from);
    let mut rows: Vec<[String; 11]> = vec![header];
    for b in &summary.boundaries {
        rows.push([
            format!("{} {}", b.pid, b.comm),
            b.library.clone(),
            match &b.parent {
                Some(parent) => format!("{} (in {parent})", b.function),
                None => b.function.clone(),
            },
            scheduler_of(b),
            b.calls.to_string(),
            human_ns(b.total_ns),
            human_ns(b.p50_ns),
            human_ns(b.p90_ns),
            human_ns(b.p99_ns),
            human_ns(b.max_ns),
            if b.probe_emulated {
                human_ns(b.probe_cost_ns)
            } else {
                format!("{} {STEPPED_MARK}", human_ns(b.probe_cost_ns))
            },
        ]);
    }
    let mut widths = [0usize; 11];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let skip = usize::from(!multi_pid);
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate().skip(skip) {
            if i == 3 && !any_nif {
                continue;
            }
            let pad = " ".repeat(widths[i].saturating_sub(cell.chars().count()));
            if i >= 4 {
                line.push_str(&pad);
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&pad);
            }
            line.push_str("  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// What the figures above leave out, and why.
fn notes(summary: &Summary, out: &mut String) {
    if summary.dropped > 0 {
        let _ = writeln!(
            out,
            "note: {} call records were dropped because the ring buffer was full: those calls are missing above; raise --ring-size",
            summary.dropped
        );
    }
    for (count, what) in [
        (
            summary.depth_overflow,
            "calls nested deeper than 16 traced calls were not timed",
        ),
        (
            summary.unmatched_returns,
            "returns of calls already in flight at attach time were ignored",
        ),
        (
            summary.abandoned,
            "calls left without returning (longjmp/unwinding) were dropped",
        ),
        (
            summary.stack_map_full,
            "calls on threads beyond the 16384-thread table were not timed",
        ),
        (
            summary.malformed,
            "malformed records (xlperf version mismatch?)",
        ),
    ] {
        if count > 0 {
            let _ = writeln!(out, "note: {count} {what}");
        }
    }
    stepped_note(summary, out);
    for library in &summary.never_mapped {
        let _ = writeln!(
            out,
            "note: the target never mapped {library}, so none of its functions could be traced (is it the library the program really loads? `xlperf list -p PID` or /proc/PID/maps show what it maps)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(human_ns(999), "999ns");
        assert_eq!(human_ns(1_500), "1.50µs");
        assert_eq!(human_ns(2_345_678), "2.35ms");
        assert_eq!(human_ns(3_000_000_000), "3.00s");
    }
}

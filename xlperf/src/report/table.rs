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

pub fn render(summary: &Summary) -> String {
    let mut out = String::new();
    long_nifs(summary, &mut out);
    let any_nif = summary.boundaries.iter().any(|b| b.nif.is_some());
    let multi_pid = {
        let mut pids: Vec<u32> = summary.boundaries.iter().map(|b| b.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len() > 1
    };
    let calls: u64 = summary.boundaries.iter().map(|b| b.calls).sum();

    let mut rows: Vec<[String; 10]> = vec![[
        "PID".into(),
        "LIBRARY".into(),
        "FUNCTION".into(),
        "SCHEDULER".into(),
        "CALLS".into(),
        "TOTAL".into(),
        "P50".into(),
        "P90".into(),
        "P99".into(),
        "MAX".into(),
    ]];
    for b in &summary.boundaries {
        rows.push([
            format!("{} {}", b.pid, b.comm),
            b.library.clone(),
            b.function.clone(),
            scheduler_of(b),
            b.calls.to_string(),
            human_ns(b.total_ns),
            human_ns(b.p50_ns),
            human_ns(b.p90_ns),
            human_ns(b.p99_ns),
            human_ns(b.max_ns),
        ]);
    }
    let skip = usize::from(!multi_pid);
    let mut widths = [0usize; 10];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    if summary.boundaries.is_empty() {
        out.push_str("no traced function was called during the recording\n");
    } else {
        for row in &rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate().skip(skip) {
                if i == 3 && !any_nif {
                    continue;
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                if i >= 4 {
                    line.push_str(&" ".repeat(pad));
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad));
                }
                line.push_str("  ");
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }

    let overhead = summary.probe_cost_ns.saturating_mul(calls);
    let _ = write!(
        out,
        "\n{calls} calls in {}; {} records dropped; probe cost {} per call (≈{} added in total",
        human_ns(summary.duration_ns),
        summary.dropped,
        human_ns(summary.probe_cost_ns),
        human_ns(overhead),
    );
    if summary.duration_ns > 0 {
        let _ = write!(
            out,
            ", {:.2}% of the recording",
            overhead as f64 * 100.0 / summary.duration_ns as f64
        );
    }
    out.push_str(")\n");
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
    let mut stepped: Vec<&str> = summary
        .boundaries
        .iter()
        .filter(|b| !b.probe_emulated)
        .map(|b| b.function.as_str())
        .collect();
    stepped.sort_unstable();
    stepped.dedup();
    if !stepped.is_empty() {
        let more = stepped.len().saturating_sub(5);
        stepped.truncate(5);
        let _ = writeln!(
            out,
            "note: the kernel single-steps the probed first instruction of {}{}; each of their calls costs more to trace than the probe cost above",
            stepped.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
    }
    if let Some(status) = summary.target_exit_status {
        let _ = writeln!(out, "target exited with status {status}");
    }
    out
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

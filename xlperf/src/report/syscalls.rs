//! `--syscalls`: the system calls of each crossing and of each process, in the summary and
//! as the table's SYSCALLS section.

use std::{collections::BTreeMap, fmt::Write as _};

use xlperf_common::NO_BOUNDARY;

use super::{
    Summary,
    summary::{ProcessSyscalls, SyscallFigures},
    table::{self, human_ns},
};
use crate::model::SyscallEntry;

/// Rows of a crossing show at most this many system calls in the table (JSON has all).
const TABLE_TOP: usize = 5;

/// Fills each row's `syscalls` and the per-process totals from the recorded entries.
pub fn charge(summary: &mut Summary, entries: &[SyscallEntry], comm: impl Fn(u32) -> String) {
    // A kernel function's system calls are its crossing's (it makes none of its own).
    for row in summary
        .boundaries
        .iter_mut()
        .filter(|r| r.runtime != "kernel")
    {
        let mine = entries
            .iter()
            .filter(|e| e.pid == row.pid && e.boundary == row.id);
        row.syscalls = Some(by_name(mine));
    }
    let mut pids: Vec<u32> = entries.iter().map(|e| e.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    summary.syscalls = Some(
        pids.into_iter()
            .map(|pid| {
                let all = entries.iter().filter(|e| e.pid == pid);
                ProcessSyscalls {
                    pid,
                    comm: comm(pid),
                    syscalls: by_name(all.clone()),
                    outside: by_name(all.filter(|e| e.boundary == NO_BOUNDARY)),
                }
            })
            .collect(),
    );
}

fn by_name<'a>(
    entries: impl Iterator<Item = &'a SyscallEntry>,
) -> BTreeMap<String, SyscallFigures> {
    let mut map: BTreeMap<String, SyscallFigures> = BTreeMap::new();
    for e in entries {
        let figures = map.entry(e.name()).or_default();
        figures.count += e.count;
        figures.total_ns += e.total_ns;
    }
    map
}

/// Most time in the kernel first.
fn ranked(map: &BTreeMap<String, SyscallFigures>) -> Vec<(&String, &SyscallFigures)> {
    let mut ranked: Vec<_> = map.iter().collect();
    ranked.sort_by(|a, b| b.1.total_ns.cmp(&a.1.total_ns).then(a.0.cmp(b.0)));
    ranked
}

/// The SYSCALLS section: per crossing its busiest system calls, then per process.
pub fn section(summary: &Summary, out: &mut String) {
    let Some(processes) = &summary.syscalls else {
        return;
    };
    out.push_str("\nSYSCALLS made inside the innermost traced call (time in the kernel)\n");
    let mut rows = vec![vec![
        "FUNCTION".to_owned(),
        "SYSCALL".into(),
        "COUNT".into(),
        "TOTAL".into(),
    ]];
    for b in &summary.boundaries {
        let Some(map) = &b.syscalls else { continue };
        for (i, (name, f)) in ranked(map).into_iter().enumerate().take(TABLE_TOP) {
            let function = if i == 0 {
                b.function.clone()
            } else {
                String::new()
            };
            rows.push(vec![
                function,
                name.clone(),
                f.count.to_string(),
                human_ns(f.total_ns),
            ]);
        }
        if map.len() > TABLE_TOP {
            let more = format!("(+{} more in --json)", map.len() - TABLE_TOP);
            rows.push(vec![String::new(), more, String::new(), String::new()]);
        }
    }
    for p in processes {
        let label = format!("(pid {} {}, outside any crossing)", p.pid, p.comm);
        for (i, (name, f)) in ranked(&p.outside).into_iter().enumerate().take(TABLE_TOP) {
            let who = if i == 0 { label.clone() } else { String::new() };
            rows.push(vec![
                who,
                name.clone(),
                f.count.to_string(),
                human_ns(f.total_ns),
            ]);
        }
    }
    table::aligned(&rows, 2, out);
    if summary.syscall_map_full > 0 {
        let _ = writeln!(
            out,
            "  {} system calls not counted: xlperf's syscall map was full",
            summary.syscall_map_full
        );
    }
}

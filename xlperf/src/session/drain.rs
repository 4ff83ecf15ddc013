//! From the ring buffer to named events: every item read, NIF dispatch calls renamed to
//! their NIF (and the VM's own trampolines dropped), kernel functions' calls given the row
//! of the crossing they ran in, off-CPU periods charged to the same
//! crossing, and every process, thread and boundary named the first time it is seen
//! (a short-lived target is gone by the end).

use std::collections::{BTreeMap, btree_map::Entry};

use xlperf_common::OffCpuRecord;

use crate::{
    model::{BoundaryInfo, CallEvent, ProbeSite, ThreadInfo},
    probe::{
        beam::tracing::{self, NifTracing},
        boundary::BoundaryTable,
        bpf::ring::{CallRecords, Item},
        proc::target,
    },
};

/// What one drain of the ring gave, named; `new_*` is what was named for the first time.
#[derive(Debug, Default)]
pub struct Batch {
    pub calls: Vec<CallEvent>,
    pub off_cpu: Vec<OffCpuRecord>,
    /// Processes the dynamic-linker probe stopped: they wait for SIGCONT.
    pub stopped: Vec<u32>,
    pub new_processes: BTreeMap<u32, String>,
    pub new_threads: BTreeMap<u32, ThreadInfo>,
    pub new_boundaries: BTreeMap<u32, BoundaryInfo>,
}

/// The names a run has learnt, as every sink sees them.
#[derive(Debug, Default)]
pub struct Names {
    pub processes: BTreeMap<u32, String>,
    pub threads: BTreeMap<u32, ThreadInfo>,
    pub boundaries: BTreeMap<u32, BoundaryInfo>,
    /// Where the NIF dispatch probes sit, when they caught the NIF calls.
    pub nif_site: Option<ProbeSite>,
}

impl Names {
    /// Takes in every item available now.
    pub fn drain(
        &mut self,
        records: &mut CallRecords,
        table: &mut BoundaryTable,
        mut nif: Option<&mut NifTracing>,
    ) -> Batch {
        let mut batch = Batch::default();
        records.drain_items(|item| match item {
            Item::Call(record, cost) => batch.calls.push(CallEvent { record, cost }),
            Item::OffCpu(off) => batch.off_cpu.push(off),
            Item::MapChange(change) => batch.stopped.push(change.pid),
        });
        batch.stopped.sort_unstable();
        batch.stopped.dedup();
        if let Some(nif) = nif.as_deref_mut() {
            nif.name_batch(&mut batch.calls, table, |event| &mut event.record);
        }
        for call in &mut batch.calls {
            let record = &mut call.record;
            if table.is_kernel(record.boundary) {
                // A kernel function's row is per crossing it ran in; its `target` is that
                // crossing's NIF address (for the dispatch probes'), not its own.
                let parent = tracing::crossing(
                    nif.as_deref_mut(),
                    record.pid,
                    record.parent,
                    record.target,
                    table,
                );
                record.target = 0;
                record.parent = parent;
                record.boundary = table.kernel_under(record.boundary, parent);
            }
        }
        for call in &batch.calls {
            let pid = call.record.pid;
            if let Entry::Vacant(entry) = self.processes.entry(pid) {
                let comm = target::comm(pid);
                entry.insert(comm.clone());
                batch.new_processes.insert(pid, comm);
            }
        }
        for off in &mut batch.off_cpu {
            off.boundary =
                tracing::crossing(nif.as_deref_mut(), off.pid, off.boundary, off.target, table);
            *off = interrupt_waker(*off);
            if let Entry::Vacant(entry) = self.threads.entry(off.tid) {
                let info = ThreadInfo {
                    pid: off.pid,
                    comm: target::comm(off.tid),
                };
                entry.insert(info.clone());
                batch.new_threads.insert(off.tid, info);
            }
        }
        batch.new_boundaries = self.new_boundaries(table);
        batch
    }

    /// Boundaries added to the table since the last call (NIFs are named as they are
    /// first called), now also in `boundaries`.
    pub fn new_boundaries(&mut self, table: &BoundaryTable) -> BTreeMap<u32, BoundaryInfo> {
        // Every table entry gets its info exactly once: equal sizes mean nothing new, and
        // the table is not walked on every 10 ms drain.
        if self.boundaries.len() == table.len() {
            return BTreeMap::new();
        }
        let new: BTreeMap<u32, BoundaryInfo> = table
            .iter()
            .filter(|b| !self.boundaries.contains_key(&b.id))
            .map(|b| (b.id, b.info(self.nif_site)))
            .collect();
        self.boundaries.extend(new.clone());
        new
    }
}

/// A wakeup from an interrupt (a timer expiring, a device) runs in the context of the
/// task it interrupted, which `sched_waking` then names: the idle task (pid 0), or often
/// xlperf itself, which is the one task certain not to wake a target. Both are reported
/// as `[interrupt]`. (The tracepoint's `common_flags`, which would tell, are not filled
/// in for BPF programs.)
fn interrupt_waker(mut off: OffCpuRecord) -> OffCpuRecord {
    if off.waker_comm[0] != 0 && (off.waker_pid == 0 || off.waker_pid == std::process::id()) {
        off.waker_pid = 0;
        off.waker_tid = 0;
        off.waker_comm = *b"[interrupt]\0\0\0\0\0";
    }
    off
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wakeups_in_the_idle_task_or_in_xlperf_are_interrupts() {
        let mut off = OffCpuRecord {
            waker_pid: std::process::id(),
            waker_tid: 9,
            ..OffCpuRecord::default()
        };
        off.waker_comm[..6].copy_from_slice(b"xlperf");
        let named = interrupt_waker(off);
        assert_eq!((named.waker_pid, named.waker_tid), (0, 0));
        assert_eq!(&named.waker_comm[..11], b"[interrupt]");
        off.waker_pid = 4242;
        assert_eq!(interrupt_waker(off), off, "another process is a real waker");
        assert_eq!(
            interrupt_waker(OffCpuRecord::default()),
            OffCpuRecord::default(),
            "an unseen wakeup stays unnamed"
        );
    }
}

//! What the kernel holds that no record carried: probe time and figures outside any
//! crossing per thread, the blocks still live, the tracepoint programs' run time.

use std::collections::BTreeMap;

use aya::maps::{HashMap as BpfHashMap, PerCpuHashMap};
use xlperf_common::{
    AllocConfig, CallStack, LiveBlock, LiveKey, ProbeTime, SyscallKey, SyscallStat,
};

use super::Session;
use crate::{
    model::{LiveEntry, SyscallEntry, ThreadInfo, ThreadOutside},
    probe::{
        ProbeError, beam,
        bpf::{loader, tracepoints},
        proc::target,
    },
};

/// Each thread's state: its figures outside any crossing, and how many blocks it put
/// into and took out of the live map (summed over the threads).
pub struct Threads {
    pub outside: Vec<ThreadOutside>,
    pub live_inserted: u64,
    pub live_removed: u64,
}

impl Session {
    /// Probe time the kernel added up per thread of `pids` (every process when empty).
    pub fn probe_time(&self, pids: &[u32]) -> Result<ProbeTime, ProbeError> {
        loader::probe_time(&self.loaded.ebpf, pids)
    }

    /// The tracepoint programs' run time so far, when the kernel measures it.
    pub fn tracepoint_ns(&self) -> Result<Option<u64>, ProbeError> {
        self.stats
            .as_ref()
            .map(|_| tracepoints::run_time(&self.loaded.ebpf))
            .transpose()
    }

    /// Reads the state of every thread of `pids`, naming the threads as the kernel last
    /// saw them.
    pub fn threads(&mut self, pids: &[u32]) -> anyhow::Result<Threads> {
        let map = loader::map(&self.loaded.ebpf, loader::CALL_STACKS)?;
        let stacks = BpfHashMap::<_, u32, CallStack>::try_from(map)?;
        let names = &mut self.crossings.names.threads;
        let mut threads = Threads {
            outside: Vec::new(),
            live_inserted: 0,
            live_removed: 0,
        };
        for entry in stacks.iter() {
            let Ok((tid, stack)) = entry else {
                continue;
            };
            let thread = &stack.thread;
            if !pids.contains(&thread.tgid) {
                continue;
            }
            names.insert(tid, thread_info(tid, thread.tgid, &thread.comm, names));
            threads.outside.push(ThreadOutside {
                tid,
                pid: thread.tgid,
                cost: thread.outside,
                frees_untracked: thread.frees_untracked,
            });
            threads.live_inserted += thread.live_inserted;
            threads.live_removed += thread.live_removed;
        }
        threads.outside.sort_by_key(|t| t.tid);
        Ok(threads)
    }

    /// Every block still live, with the crossing that allocated it (weighted when sampled).
    pub fn live(&mut self, config: AllocConfig) -> anyhow::Result<Vec<LiveEntry>> {
        let map = loader::map(&self.loaded.ebpf, loader::LIVE_BLOCKS)?;
        let blocks = BpfHashMap::<_, LiveKey, LiveBlock>::try_from(map)?;
        let crossings = &mut self.crossings;
        let mut live = Vec::new();
        for entry in blocks.iter() {
            let Ok((key, block)) = entry else {
                continue;
            };
            let boundary = beam::tracing::crossing(
                crossings.nif.as_mut(),
                key.tgid,
                block.boundary,
                block.target,
                &mut crossings.table,
            );
            live.push(LiveEntry {
                pid: key.tgid,
                boundary,
                bytes: config.weight(block.size).1,
                ns: block.ns,
            });
        }
        live.sort_by_key(|l| (l.pid, l.ns, l.boundary));
        Ok(live)
    }
}

impl Session {
    /// The system calls counted (`--syscalls`), summed over CPUs, each charged to its
    /// crossing as the records name it (a NIF, not the dispatch probe).
    pub fn syscalls(&mut self) -> anyhow::Result<Vec<SyscallEntry>> {
        let map = loader::map(&self.loaded.ebpf, loader::SYSCALL_STATS)?;
        let stats = PerCpuHashMap::<_, SyscallKey, SyscallStat>::try_from(map)?;
        let crossings = &mut self.crossings;
        let mut summed: BTreeMap<(u32, u32, u32), (u64, u64)> = BTreeMap::new();
        for entry in stats.iter() {
            let Ok((key, per_cpu)) = entry else {
                continue;
            };
            // On 6.11+ every return probe ends in the uretprobe system call: the probe's
            // own cost (measured with the pair), not the target's doing.
            if key.nr == syscalls::Sysno::uretprobe as u32 {
                continue;
            }
            let boundary = beam::tracing::crossing(
                crossings.nif.as_mut(),
                key.tgid,
                key.boundary,
                key.target,
                &mut crossings.table,
            );
            let sum = summed.entry((key.tgid, boundary, key.nr)).or_default();
            for stat in per_cpu.iter() {
                sum.0 += stat.count;
                sum.1 += stat.total_ns;
            }
        }
        Ok(summed
            .into_iter()
            .map(|((pid, boundary, nr), (count, total_ns))| SyscallEntry {
                pid,
                boundary,
                nr,
                count,
                total_ns,
            })
            .collect())
    }
}

/// The kernel's copy of a thread's name is the latest seen: a first-seen one may predate
/// an exec. An empty one falls back to the name already known.
fn thread_info(tid: u32, pid: u32, comm: &[u8], known: &BTreeMap<u32, ThreadInfo>) -> ThreadInfo {
    let comm = match crate::bytes::c_string(comm) {
        empty if empty.is_empty() => known
            .get(&tid)
            .map_or_else(|| target::comm(tid), |t| t.comm.clone()),
        comm => comm,
    };
    ThreadInfo { pid, comm }
}

//! The tracing session `record`, `serve` and `list` all run: targets resolved before the
//! kernel is touched (`targets`), the programs loaded and calibrated (`setup`), every
//! probe attached and owned here (this file), processes followed as they map libraries
//! and exit (`follow`), the signals and exits that end a run (`exits`), the ring buffer
//! turned into named events (`drain`), the sinks they go to (`sink`), and what only the
//! end of a run can read from the kernel (`end`).

pub mod drain;
pub mod end;
pub mod exits;
mod follow;
pub mod setup;
pub mod sink;
pub mod targets;

use std::{collections::BTreeMap, os::fd::OwnedFd};

use aya::programs::uprobe::UProbeScope;
use xlperf_common::Counters;

use crate::{
    model::{AllocProbe, ProbeCosts},
    probe::{
        bpf::{
            attach::{self, Attachment},
            links::Links,
            tracepoints,
        },
        kernel,
        pending::{self, Pending},
        proc::target::{self, Suspended},
    },
};
use drain::{Batch, Names};
use follow::Process;
use targets::{Crossings, Prepared, Wants, Who};

/// Loaded programs, every probe attached, and the crossings they report.
pub struct Session {
    loaded: setup::Loaded,
    crossings: Crossings,
    wants: Wants,
    processes: BTreeMap<u32, Process>,
    /// Held for the whole session: the tracepoints, and `--all`'s probes.
    global: Links,
    /// Every probe placed on the targets (tracepoints and the dynamic-linker probe too).
    probes: usize,
    /// The allocator probes, per target, for the summary.
    alloc_probes: Vec<AllocProbe>,
    /// While held, the kernel measures the tracepoint programs' run time.
    stats: Option<OwnedFd>,
    /// Processes the dynamic-linker probe stopped, waiting for us to attach and resume them.
    stopped: Vec<u32>,
    /// `--all`: processes are known from their records.
    all: bool,
    /// Whether `--kfunc`'s kprobes are in (with the first target).
    kernel_attached: bool,
}

impl Session {
    /// Loads and calibrates the programs (the live-block map sized `live_blocks`, every
    /// `sample_bytes` allocated bytes sampled when non-zero) and attaches the scheduler
    /// and allocation tracepoints; targets come next, with [`Session::attach`].
    pub fn open(
        wants: Wants,
        mut crossings: Crossings,
        live_blocks: u32,
        sample_bytes: u64,
    ) -> anyhow::Result<Self> {
        let mut loaded = setup::load(
            &wants.probes,
            live_blocks,
            sample_bytes,
            wants.calibrate,
            !wants.kfuncs.is_empty(),
        )?;
        if let Some(nif) = crossings.nif.as_mut() {
            nif.costs = loaded.calibration.costs;
        }
        let stats = wants
            .whole_process()
            .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).ok())
            .flatten();
        let mut global = Links::default();
        let ebpf = &mut loaded.ebpf;
        if let Some(layout) = wants.layout {
            tracepoints::write_layout(ebpf, layout)?;
        }
        if wants.probes.sched {
            tracepoints::attach_sched(ebpf, &mut global)?;
        }
        if wants.probes.alloc {
            tracepoints::attach_alloc(ebpf, &mut global, wants.kmem)?;
        }
        if wants.probes.syscalls {
            tracepoints::attach_syscalls(ebpf, &mut global)?;
        }
        Ok(Self {
            loaded,
            crossings,
            wants,
            processes: BTreeMap::new(),
            probes: global.len(),
            global,
            alloc_probes: Vec::new(),
            stats,
            stopped: Vec::new(),
            all: false,
            kernel_attached: false,
        })
    }

    /// Resolves `target` now that the programs are loaded (what `record` resolves
    /// before loading them goes through [`Crossings::prepare`] and [`Session::attach`]).
    pub fn prepare<'a>(&mut self, target: targets::Target<'a>) -> anyhow::Result<Prepared<'a>> {
        self.crossings.prepare(&self.wants, target)
    }

    /// Attaches every probe for a prepared target. A command is started held before
    /// exec and returned: the caller releases it once it watches for its exit.
    pub fn attach(&mut self, prepared: Prepared<'_>) -> anyhow::Result<Option<Suspended>> {
        let Prepared {
            who,
            ids,
            later,
            nifs,
            alloc,
        } = prepared;
        let costs = self.costs();
        let (pid, child, ld_so) = match who {
            Who::All => return self.attach_all(ids, nifs).map(|()| None),
            Who::Pid(pid) => {
                // Named now, while it surely runs: a target that exits before its first
                // records are read could not be named afterwards.
                let comm = target::comm(pid);
                self.crossings.names.processes.insert(pid, comm);
                (pid, None, None)
            }
            Who::Command {
                program,
                argv,
                stdout_to_stderr,
            } => {
                let child = Suspended::spawn(&program, argv, stdout_to_stderr)?;
                let ld_so = pending::interpreter(&program);
                (child.pid().get(), Some(child), Some(ld_so))
            }
        };
        let nonzero = target::check_pid(pid)?;
        let scope = UProbeScope::OneProcess(nonzero);
        self.attach_kernel()?;
        let (ebpf, table) = (&mut self.loaded.ebpf, &mut self.crossings.table);
        let mut links = Links::default();
        attach::attach_ffi(
            ebpf,
            &costs,
            table,
            &[Attachment::pid(nonzero, ids)],
            &mut links,
        )?;
        // Only a command xlperf started is stopped while it maps libraries (nobody else
        // sees those stops); a process found by --comm, whose parent could (a shell would
        // take its terminal back), is rescanned instead, and its calls into a library
        // before that are missed.
        let pending = (!later.is_empty()).then(|| Pending::new(pid, later));
        if let (Some(ld_so), Some(_)) = (&ld_so, &pending) {
            pending::watch(ebpf, &mut links, nonzero, ld_so)?;
        }
        if self.wants.whole_process() {
            tracepoints::add_target(ebpf, pid)?;
        }
        if let Some(alloc) = alloc {
            alloc.attach(ebpf, &costs, &mut links, scope)?;
            self.alloc_probes.extend(alloc.probes());
        }
        self.probes += links.len();
        if nifs && let Some(nif) = self.crossings.nif.as_mut() {
            self.probes += nif.attach(ebpf, table, scope, Some(pid))?;
        }
        self.processes
            .insert(pid, Process::followed(links, pending));
        Ok(child)
    }

    /// `--kfunc`'s kprobe pairs, once: system-wide, the programs keep the targets' threads.
    fn attach_kernel(&mut self) -> anyhow::Result<()> {
        if self.kernel_attached || self.crossings.kernel.is_empty() {
            return Ok(());
        }
        let functions: Vec<_> = self
            .crossings
            .kernel
            .iter()
            .map(|(id, f)| (*id, f))
            .collect();
        let cookie = self.costs().kernel_cookie();
        self.probes +=
            kernel::attach::attach(&mut self.loaded.ebpf, &functions, cookie, &mut self.global)?;
        self.kernel_attached = true;
        Ok(())
    }

    fn attach_all(&mut self, ids: Vec<u32>, nifs: bool) -> anyhow::Result<()> {
        let costs = self.costs();
        let (ebpf, table) = (&mut self.loaded.ebpf, &mut self.crossings.table);
        self.probes += attach::attach_ffi(
            ebpf,
            &costs,
            table,
            &[Attachment::all(ids)],
            &mut self.global,
        )?;
        if nifs && let Some(nif) = self.crossings.nif.as_mut() {
            self.probes += nif.attach(ebpf, table, UProbeScope::AllProcesses, None)?;
        }
        self.all = true;
        Ok(())
    }

    /// Waits for records, a signal, the deadline or the targets' exits; true when the
    /// run must end (drain once more either way).
    pub async fn next(
        &mut self,
        signals: &mut exits::Signals,
        deadline: Option<tokio::time::Instant>,
        exits: Option<&exits::Exits>,
    ) -> anyhow::Result<bool> {
        exits::next(&mut self.loaded.records, signals, deadline, exits).await
    }

    /// Every record available now, named. Processes the dynamic linker stopped are kept
    /// for [`Session::attach_stopped`].
    pub fn drain(&mut self) -> Batch {
        let crossings = &mut self.crossings;
        let mut batch = crossings.names.drain(
            &mut self.loaded.records,
            &mut crossings.table,
            crossings.nif.as_mut(),
        );
        self.stopped.append(&mut batch.stopped);
        if self.all {
            for call in &batch.calls {
                self.processes
                    .entry(call.record.pid)
                    .or_insert_with(Process::seen);
            }
        }
        batch
    }

    pub fn names(&self) -> &Names {
        &self.crossings.names
    }

    pub fn names_mut(&mut self) -> &mut Names {
        &mut self.crossings.names
    }

    pub fn crossings(&self) -> &Crossings {
        &self.crossings
    }

    pub fn costs(&self) -> ProbeCosts {
        self.loaded.calibration.costs
    }

    /// The loss counters since calibration.
    pub fn counters(&self) -> anyhow::Result<Counters> {
        self.loaded.counters()
    }

    /// Records too short for their kind, skipped.
    pub fn malformed(&self) -> u64 {
        self.loaded.records.malformed
    }

    /// Every probe placed on the targets so far.
    pub fn probes(&self) -> usize {
        self.probes
    }

    pub fn alloc_probes(&self) -> &[AllocProbe] {
        &self.alloc_probes
    }

    /// Detaches every probe (about 110 ms each: see links.rs), frees the programs and
    /// maps, and gives back what was learnt. The boundaries read last are named too.
    pub fn close(self) -> Crossings {
        let Self {
            loaded,
            mut crossings,
            processes,
            global,
            stats,
            stopped: self_stopped,
            ..
        } = self;
        drop(processes);
        for pid in self_stopped {
            pending::resume(pid);
        }
        drop(global);
        drop(loaded.calibration.probes);
        drop(loaded.calibration.kernel_probes);
        if let Some(nif) = crossings.nif.as_mut() {
            drop(std::mem::take(&mut nif.links));
        }
        drop(stats);
        drop(loaded.ebpf);
        let Crossings { table, names, .. } = &mut crossings;
        names.new_boundaries(table);
        crossings
    }
}

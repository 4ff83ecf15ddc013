//! `xlperf record`: attach, collect call records until the end condition, summarise.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::programs::uprobe::UProbeScope;
use aya::{Ebpf, maps::HashMap as BpfHashMap};
use xlperf_common::{AllocConfig, CallStack, LiveBlock, LiveKey, TracepointLayout};

use crate::{
    capture::file::CaptureWriter,
    cli::{FfiSpec, RecordArgs},
    model::{
        AllocProbe, AllocRecording, End, LiveEntry, Meta, ProbeCosts, ThreadInfo, ThreadOutside,
    },
    privileges,
    probe::{
        ProbeError,
        alloc::AllocTracing,
        beam::{self, tracing::NifTracing},
        boundary::BoundaryTable,
        bpf::{
            attach::{self, Attachment},
            links::Links,
            loader,
            ring::CallRecords,
            tracepoints,
        },
        library::Scope,
        pending::{self, Pending},
        proc::target::{self, Suspended},
    },
    report::{
        Summary,
        build::{self, Aggregates, Recording},
        table,
    },
    session::{
        drain::Names,
        exits::{self, Exits, Signals},
        setup,
        sink::{self, Sink},
    },
};

/// How often fallback-mode NIF tracing looks for newly loaded NIF libraries.
const NIF_RESCAN_INTERVAL: Duration = Duration::from_millis(200);

/// What a recording traces, resolved before anything is attached.
enum Targets {
    Pids(Vec<u32>),
    Command(Vec<String>),
    All,
}

pub fn run(args: &RecordArgs) -> anyhow::Result<()> {
    privileges::check().map_err(|why| anyhow!(why))?;
    let specs: Vec<FfiSpec> = args
        .probes
        .ffi
        .iter()
        .map(|s| FfiSpec::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!(e))?;
    let targets = if args.target.all {
        Targets::All
    } else if !args.target.command.is_empty() {
        Targets::Command(args.target.command.clone())
    } else {
        // `-p X -p X` is one process: tracing it twice would count every call twice.
        let mut pids = Vec::new();
        for &pid in &args.target.pids {
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
        Targets::Pids(pids)
    };
    if let Some(path) = &args.output {
        CaptureWriter::check(path)?;
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let summary = runtime.block_on(record(args, &specs, targets))?;
    if args.json {
        super::output::json(&summary)?;
    } else {
        super::output::print(&table::render(&summary))?;
    }
    Ok(())
}

async fn record(args: &RecordArgs, specs: &[FfiSpec], targets: Targets) -> anyhow::Result<Summary> {
    // Everything that can fail on bad input is resolved before touching the kernel.
    let mut plan = Plan::new(args, specs, targets)?;
    // Signals first: from here on, Ctrl-C must end the recording cleanly, not kill us.
    let mut signals = Signals::install()?;
    let mut loaded = setup::load(
        &args.probes,
        args.alloc_live_max,
        args.alloc_sample.unwrap_or(0),
    )?;
    let costs = loaded.calibration.costs;
    // The tracepoint programs' cost is measured by the kernel while this is held.
    let stats = (args.probes.alloc || args.probes.sched)
        .then(|| aya::sys::enable_stats(aya::sys::Stats::RunTime).ok())
        .flatten();
    let mut attached = plan.attach(args, &mut loaded.ebpf, &costs)?;
    let exits = Exits::watch(&attached.target_pids)?;
    let started = Instant::now();
    if let Some(child) = attached.child.as_mut() {
        child.release().context("starting the command")?;
    }
    eprintln!("{}", plan.announce(args, &attached));
    let meta = meta(args, costs);
    let mut collector = Collector {
        aggregates: Aggregates::new(&meta),
        names: Names {
            nif_site: plan.nif.as_ref().and_then(NifTracing::dispatch_site),
            ..Names::default()
        },
        writer: match &args.output {
            Some(path) => Some(CaptureWriter::create(path, &meta)?),
            None => None,
        },
        table: std::mem::take(&mut plan.table),
        nif: plan.nif.take(),
        stopped: Vec::new(),
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut run = Run {
        args,
        loaded: &mut loaded,
        attached: &mut attached,
        collector: &mut collector,
        costs: &costs,
    };
    run.until_done(&mut signals, &exits, deadline, started)
        .await?;
    let duration = started.elapsed();
    let alloc_probes = plan
        .alloc
        .as_ref()
        .map(|found| found.iter().flat_map(AllocTracing::probes).collect());
    let mut end = run.finish(duration, stats, alloc_probes)?;
    // Detach every probe (about 110 ms each: see links.rs), then free programs and maps.
    drop(std::mem::take(&mut attached.links));
    drop(std::mem::take(&mut loaded.calibration.probes));
    if let Some(nif) = collector.nif.as_mut() {
        drop(std::mem::take(&mut nif.links));
    }
    drop(loaded);
    // Boundaries named while reading the live blocks, too.
    collector.names.new_boundaries(&collector.table);
    end.nif = collector
        .nif
        .as_ref()
        .map(|n| n.recording(meta.long_call_ns));
    plan.name_command(attached.child.as_ref(), &mut collector.names);
    collector.aggregates.end(&end);
    if let Some(mut writer) = collector.writer.take() {
        writer.names(&collector.names.processes, &collector.names.threads)?;
        writer.boundaries(&collector.names.boundaries)?;
        writer.finish(&end)?;
    }
    Ok(build::summary(
        &collector.aggregates,
        &Recording {
            meta: &meta,
            processes: &collector.names.processes,
            threads: &collector.names.threads,
            boundaries: &collector.names.boundaries,
            end: &end,
            truncated: false,
        },
    ))
}

/// What a recording traces, resolved before anything is loaded: every check that can be
/// made before the target runs is made here.
struct Plan {
    targets: Targets,
    table: BoundaryTable,
    attachments: Vec<Attachment>,
    /// The program to start, its boundaries, and the specs it must map first.
    command: Option<(PathBuf, Vec<u32>, Vec<FfiSpec>)>,
    nif: Option<NifTracing>,
    alloc: Option<Vec<AllocTracing>>,
    layout: Option<TracepointLayout>,
}

/// What a recording attached, and to whom.
struct Attached {
    links: Links,
    probes: usize,
    alloc_probes: usize,
    pending: Option<Pending>,
    child: Option<Suspended>,
    /// Processes followed (their exits end the recording); empty with --all.
    target_pids: Vec<u32>,
}

impl Plan {
    fn new(args: &RecordArgs, specs: &[FfiSpec], targets: Targets) -> anyhow::Result<Self> {
        if matches!(targets, Targets::All) && (args.probes.alloc || args.probes.sched) {
            return Err(ProbeError::AllNeedsProcess.into());
        }
        let mut table = BoundaryTable::default();
        let mut attachments = Vec::new();
        let mut command = None;
        // Functions of libraries a command has not mapped yet, as far as known now.
        let mut expected_later = 0;
        match &targets {
            Targets::Pids(pids) => {
                for &pid in pids {
                    let nonzero = target::check_target(pid)?;
                    let ids = add_all(&mut table, specs, &Scope::Pid(pid))?;
                    attachments.push(Attachment::pid(nonzero, ids));
                }
            }
            Targets::All => {
                attachments.push(Attachment::all(add_all(&mut table, specs, &Scope::All)?));
            }
            Targets::Command(argv) => {
                let program = target::find_program(argv.first().map_or("", String::as_str))?;
                let (ids, waiting, functions) =
                    pending::add_for_command(&mut table, specs, &program)?;
                expected_later = functions;
                command = Some((program, ids, waiting));
            }
        }
        let program = command.as_ref().map(|(p, _, _)| p);
        let vm = find_vm(args, specs.is_empty(), &targets, program)?;
        let nif = match &vm {
            Some(vm) => Some(NifTracing::prepare(vm, args.probes.nif_mode)?),
            None => None,
        };
        if matches!(targets, Targets::All)
            && nif
                .as_ref()
                .is_some_and(|n| matches!(n.mode, beam::tracing::Mode::Fptr { .. }))
        {
            return Err(ProbeError::FptrNeedsProcess.into());
        }
        let alloc = if args.probes.alloc {
            let scopes: Vec<Scope<'_>> = match (&targets, program) {
                (Targets::Pids(pids), _) => pids.iter().map(|&p| Scope::Pid(p)).collect(),
                (_, Some(program)) => vec![Scope::Program(program)],
                _ => Vec::new(),
            };
            let found = scopes
                .iter()
                .map(|scope| AllocTracing::prepare(scope, vm.as_deref()))
                .collect::<Result<Vec<_>, _>>()?;
            Some(found)
        } else {
            None
        };
        let layout = (args.probes.alloc || args.probes.sched)
            .then(|| tracepoints::layout(args.kmem))
            .transpose()?;
        if table.len() + expected_later > args.probes.max_functions {
            return Err(ProbeError::TooManyFunctions {
                count: table.len() + expected_later,
                max: args.probes.max_functions,
            }
            .into());
        }
        Ok(Self {
            targets,
            table,
            attachments,
            command,
            nif,
            alloc,
            layout,
        })
    }

    /// Starts the command (held before exec) and attaches every probe.
    fn attach(
        &mut self,
        args: &RecordArgs,
        ebpf: &mut Ebpf,
        costs: &ProbeCosts,
    ) -> anyhow::Result<Attached> {
        let mut waiting = None;
        let child = match (&self.targets, self.command.take()) {
            (Targets::Command(argv), Some((program, ids, later))) => {
                // With --json, stdout carries only the summary: the command's output goes
                // to stderr.
                let child = Suspended::spawn(&program, argv, args.json)?;
                self.attachments.push(Attachment::pid(child.pid(), ids));
                if !later.is_empty() {
                    waiting = Some((pending::interpreter(&program), later));
                }
                Some(child)
            }
            _ => None,
        };
        let target_pids: Vec<u32> = match &self.targets {
            Targets::Pids(pids) => pids.clone(),
            Targets::Command(_) => child.iter().map(|c| c.pid().get()).collect(),
            Targets::All => Vec::new(),
        };
        let mut links = Links::default();
        let mut probes =
            attach::attach_ffi(ebpf, costs, &self.table, &self.attachments, &mut links)?;
        let mut pending = None;
        if let (Some((ld_so, later)), Some(child)) = (waiting, child.as_ref()) {
            pending::watch(ebpf, &mut links, child.pid(), &ld_so)?;
            pending = Some(Pending::new(child.pid().get(), later));
        }
        let (before, mut alloc_probes) = (links.len(), 0);
        if let Some(layout) = self.layout {
            tracepoints::write_layout(ebpf, layout)?;
            for &pid in &target_pids {
                tracepoints::add_target(ebpf, pid)?;
            }
        }
        if args.probes.sched {
            tracepoints::attach_sched(ebpf, &mut links)?;
        }
        if let Some(alloc) = &self.alloc {
            tracepoints::attach_alloc(ebpf, &mut links, args.kmem)?;
            for (tracing, &pid) in alloc.iter().zip(&target_pids) {
                let scope = UProbeScope::OneProcess(target::check_pid(pid)?);
                alloc_probes += tracing.attach(ebpf, costs, &mut links, scope)?;
            }
        }
        probes += links.len() - before;
        if let Some(nif) = self.nif.as_mut() {
            nif.costs = *costs;
            let scopes: Vec<(UProbeScope, Option<u32>)> = match &self.targets {
                Targets::All => vec![(UProbeScope::AllProcesses, None)],
                _ => target_pids
                    .iter()
                    .map(|&pid| Ok((UProbeScope::OneProcess(target::check_pid(pid)?), Some(pid))))
                    .collect::<Result<_, ProbeError>>()?,
            };
            for (scope, pid) in scopes {
                probes += nif.attach(ebpf, &mut self.table, scope, pid)?;
            }
        }
        Ok(Attached {
            links,
            probes,
            alloc_probes,
            pending,
            child,
            target_pids,
        })
    }

    /// The line that says what is traced, where, until when.
    fn announce(&self, args: &RecordArgs, attached: &Attached) -> String {
        let table = &self.table;
        let mut what = match &self.nif {
            Some(n) if table.ffi_len() == 0 => format!("the NIFs ({} mode)", n.mode_name()),
            Some(n) => format!(
                "{} function(s) and the NIFs ({} mode)",
                table.ffi_len(),
                n.mode_name()
            ),
            None if table.is_empty() => "no crossings".into(),
            None => format!("{} function(s)", table.len()),
        };
        if let Some(pending) = &attached.pending {
            let later = format!(
                "{} once the process maps it (it is not loaded yet)",
                pending.names().join(", ")
            );
            what = if table.is_empty() && self.nif.is_none() {
                format!("nothing yet: {later}")
            } else {
                format!("{what}, and {later}")
            };
        }
        if attached.alloc_probes > 0 {
            what.push_str(" and the allocator");
        }
        if args.probes.sched {
            what.push_str(", with scheduler tracepoints");
        }
        format!(
            "xlperf: {} probes on {what} in {}; {}",
            attached.probes,
            describe(&self.targets, attached.child.as_ref()),
            match args.duration {
                Some(d) => format!("recording for {}", table::human_ns(d.as_nanos() as u64)),
                None => "Ctrl-C to stop".into(),
            }
        )
    }

    /// A command that exited before its name could be read is named after the command.
    fn name_command(&self, child: Option<&Suspended>, names: &mut Names) {
        let (Targets::Command(argv), Some(child)) = (&self.targets, child) else {
            return;
        };
        let name = argv
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_owned())
            .unwrap_or_default();
        let entry = names.processes.entry(child.pid().get()).or_default();
        if entry.is_empty() || entry == "?" {
            *entry = name;
        }
    }
}

/// How the recording was made, for the summary and the capture file.
fn meta(args: &RecordArgs, costs: ProbeCosts) -> Meta {
    Meta {
        xlperf_version: env!("CARGO_PKG_VERSION").into(),
        started_unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        started_monotonic_ns: monotonic_ns(),
        argv: std::env::args().collect(),
        alloc: args.probes.alloc,
        sched: args.probes.sched,
        kmem: args.kmem,
        probe_cost_ns: costs.pair.emulated.total_ns,
        probe_costs: costs,
        long_call_ns: u64::try_from(args.probes.long_nif.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A recording running: the loop, and what only its end can read from the kernel.
struct Run<'a> {
    args: &'a RecordArgs,
    loaded: &'a mut setup::Loaded,
    attached: &'a mut Attached,
    collector: &'a mut Collector,
    costs: &'a ProbeCosts,
}

impl Run<'_> {
    /// Drains, attaches to newly mapped libraries and rescans until a signal, the
    /// deadline or the targets' exits end the recording.
    async fn until_done(
        &mut self,
        signals: &mut Signals,
        exits: &Exits,
        deadline: Option<tokio::time::Instant>,
        started: Instant,
    ) -> anyhow::Result<()> {
        let mut last_rescan = Instant::now();
        let mut progress = Progress::new();
        loop {
            let stop =
                exits::next(&mut self.loaded.records, signals, deadline, Some(exits)).await?;
            self.drain()?;
            if stop {
                break;
            }
            if last_rescan.elapsed() >= NIF_RESCAN_INTERVAL {
                last_rescan = Instant::now();
                self.collector.rescan(&mut self.loaded.ebpf)?;
            }
            let records = self.collector.aggregates.calls.records;
            progress.show(started.elapsed(), records, || {
                self.loaded.counters().map(|c| c.dropped).unwrap_or(0)
            });
        }
        progress.clear();
        // Everything a finished target emitted is already in the ring buffer.
        self.drain()
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        self.collector.drain(&mut self.loaded.records)?;
        self.collector.attach_mapped(
            &mut self.loaded.ebpf,
            &mut self.attached.links,
            self.costs,
            self.attached.pending.as_mut(),
            self.args,
        )
    }

    /// Ends the command, drains the last records, and reads what the kernel holds.
    fn finish(
        &mut self,
        duration: Duration,
        stats: Option<std::os::fd::OwnedFd>,
        alloc_probes: Option<Vec<AllocProbe>>,
    ) -> anyhow::Result<End> {
        let target_exit_status = self.attached.child.as_mut().and_then(Suspended::finish);
        self.collector.drain(&mut self.loaded.records)?;
        let counters = self.loaded.counters()?;
        let ebpf = &self.loaded.ebpf;
        let pids = &self.attached.target_pids;
        let probe = loader::probe_time(ebpf, pids)?;
        let mut end = End {
            duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            target_exit_status,
            dropped: counters.dropped,
            depth_overflow: counters.depth_overflow,
            unmatched_returns: counters.unmatched_return,
            abandoned: counters.abandoned,
            malformed: self.loaded.records.malformed,
            stack_map_full: counters.stack_map_full,
            probe_emulated_ns: probe.emulated_ns,
            probe_stepped_ns: probe.stepped_ns,
            tracepoint_ns: stats
                .as_ref()
                .map(|_| tracepoints::run_time(ebpf))
                .transpose()?,
            never_mapped: self
                .attached
                .pending
                .as_ref()
                .map(Pending::names)
                .unwrap_or_default(),
            ..End::default()
        };
        drop(stats);
        let args = self.args;
        if args.probes.alloc || args.probes.sched {
            let collector = &mut *self.collector;
            let (threads, inserted, removed) =
                read_threads(ebpf, pids, &mut collector.names.threads)?;
            end.threads_outside = threads;
            if let Some(probes) = alloc_probes {
                let config = AllocConfig {
                    sample_bytes: args.alloc_sample.unwrap_or(0),
                };
                end.live = read_live(ebpf, config, collector.nif.as_mut(), &mut collector.table)?;
                // What went in and neither came out nor is still there was evicted.
                let live_evicted = inserted
                    .saturating_sub(removed)
                    .saturating_sub(end.live.len() as u64);
                end.alloc = Some(AllocRecording {
                    live_capacity: args.alloc_live_max,
                    sample_bytes: args.alloc_sample,
                    live_evicted,
                    probes,
                });
            }
        }
        Ok(end)
    }
}

/// Everything records flow into during a recording.
struct Collector {
    aggregates: Aggregates,
    /// Processes, threads and boundaries as the summary and the capture file name them.
    names: Names,
    table: BoundaryTable,
    nif: Option<NifTracing>,
    /// `-o FILE`.
    writer: Option<CaptureWriter>,
    /// Processes the dynamic-linker probe stopped, waiting for us to attach and resume them.
    stopped: Vec<u32>,
}

impl Collector {
    /// Takes in every record available now, and appends it to the capture file.
    fn drain(&mut self, records: &mut CallRecords) -> anyhow::Result<()> {
        let batch = self
            .names
            .drain(records, &mut self.table, self.nif.as_mut());
        self.stopped.extend(&batch.stopped);
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut self.aggregates];
        if let Some(writer) = self.writer.as_mut() {
            sinks.push(writer);
        }
        sink::feed(&batch, &self.names, &mut sinks)
    }

    /// Attaches to the libraries a stopped process has just mapped that it was waiting
    /// for, then lets every stopped process go on (also when attaching failed).
    fn attach_mapped(
        &mut self,
        ebpf: &mut aya::Ebpf,
        links: &mut Links,
        costs: &ProbeCosts,
        pending: Option<&mut Pending>,
        args: &RecordArgs,
    ) -> anyhow::Result<()> {
        if self.stopped.is_empty() {
            return Ok(());
        }
        // One batch's pids, already deduplicated by the drain.
        let stopped = std::mem::take(&mut self.stopped);
        let result = match pending {
            Some(pending) => self.attach_pending(ebpf, links, costs, pending, args),
            None => Ok(()),
        };
        for pid in stopped {
            pending::resume(pid);
        }
        result
    }

    fn attach_pending(
        &mut self,
        ebpf: &mut aya::Ebpf,
        links: &mut Links,
        costs: &ProbeCosts,
        pending: &mut Pending,
        args: &RecordArgs,
    ) -> anyhow::Result<()> {
        let pid = pending.pid();
        let (resolved, failed) = pending::attach_mapped(
            ebpf,
            costs,
            &mut self.table,
            pending,
            links,
            args.probes.max_functions,
        )?;
        super::report_mapped(pid, &resolved, &failed);
        Ok(())
    }

    fn rescan(&mut self, ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
        if let Some(nif) = self.nif.as_mut() {
            nif.rescan(ebpf, &mut self.table)
                .context("probing newly loaded NIF libraries")?;
        }
        Ok(())
    }
}

/// The BEAM to trace NIFs in: asked for with --nif, or found in the target when no probe
/// is named. Errors when nothing at all would be traced.
fn find_vm(
    args: &RecordArgs,
    no_ffi: bool,
    targets: &Targets,
    program: Option<&PathBuf>,
) -> anyhow::Result<Option<PathBuf>> {
    if !args.probes.nif && !no_ffi {
        return Ok(None);
    }
    // Allocations and scheduling are worth recording in any process, crossings or not.
    let whole_process = args.probes.alloc || args.probes.sched;
    let nothing = |what: String| ProbeError::NothingToTrace { what };
    match targets {
        Targets::Pids(pids) => {
            let mut found: Option<PathBuf> = None;
            for &pid in pids {
                target::check_target(pid)?;
                match beam::vm_of_pid(pid)? {
                    Some(vm) => {
                        if let Some(first) = found.as_ref().filter(|f| **f != vm) {
                            return Err(ProbeError::DifferentVms {
                                first: first.clone(),
                                second: vm,
                            }
                            .into());
                        }
                        found = Some(vm);
                    }
                    None if args.probes.nif => return Err(ProbeError::NotBeam { pid }.into()),
                    None if whole_process => {}
                    None => {
                        return Err(nothing(format!("pid {pid} ({})", target::comm(pid))).into());
                    }
                }
            }
            Ok(found)
        }
        Targets::Command(argv) => {
            let program = program.ok_or_else(|| anyhow!("no command given"))?;
            if args.probes.nif || beam::is_launcher(program) {
                Ok(Some(beam::vm_for_program(program)?))
            } else if whole_process {
                Ok(None)
            } else {
                Err(nothing(argv.first().cloned().unwrap_or_default()).into())
            }
        }
        Targets::All => {
            if args.probes.nif {
                Ok(Some(beam::vm_for_program(std::path::Path::new("erl"))?))
            } else {
                Err(ProbeError::AllNeedsProbe.into())
            }
        }
    }
}

fn add_all(
    table: &mut BoundaryTable,
    specs: &[FfiSpec],
    scope: &Scope<'_>,
) -> Result<Vec<u32>, ProbeError> {
    let mut ids = Vec::new();
    for spec in specs {
        for id in table.add(spec, scope)? {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
    }
    Ok(ids)
}

fn describe(targets: &Targets, child: Option<&Suspended>) -> String {
    match (targets, child) {
        (Targets::All, _) => "all processes".into(),
        (Targets::Command(argv), Some(child)) => {
            format!("{} (pid {})", argv.join(" "), child.pid())
        }
        (Targets::Pids(pids), _) => {
            let pids: Vec<String> = pids
                .iter()
                .map(|p| format!("{p} ({})", target::comm(*p)))
                .collect();
            format!("pid {}", pids.join(", "))
        }
        (Targets::Command(argv), None) => argv.join(" "),
    }
}

/// Reads each target thread's kernel state: its figures outside any crossing, and the
/// blocks it put into and took out of the live map (summed over the threads).
fn read_threads(
    ebpf: &Ebpf,
    pids: &[u32],
    names: &mut BTreeMap<u32, ThreadInfo>,
) -> anyhow::Result<(Vec<ThreadOutside>, u64, u64)> {
    let map = ebpf
        .map(loader::CALL_STACKS)
        .ok_or(ProbeError::MissingMap {
            name: loader::CALL_STACKS,
        })?;
    let stacks = BpfHashMap::<_, u32, CallStack>::try_from(map)?;
    let (mut threads, mut inserted, mut removed) = (Vec::new(), 0, 0);
    for entry in stacks.iter() {
        let Ok((tid, stack)) = entry else {
            continue;
        };
        let thread = &stack.thread;
        if !pids.contains(&thread.tgid) {
            continue;
        }
        // The kernel's copy is the latest name seen: a first-seen one may predate an exec.
        let comm = match crate::bytes::c_string(&thread.comm) {
            empty if empty.is_empty() => names
                .get(&tid)
                .map_or_else(|| target::comm(tid), |t| t.comm.clone()),
            comm => comm,
        };
        names.insert(
            tid,
            ThreadInfo {
                pid: thread.tgid,
                comm,
            },
        );
        threads.push(ThreadOutside {
            tid,
            pid: thread.tgid,
            cost: thread.outside,
            frees_untracked: thread.frees_untracked,
        });
        inserted += thread.live_inserted;
        removed += thread.live_removed;
    }
    threads.sort_by_key(|t| t.tid);
    Ok((threads, inserted, removed))
}

/// Every block still live, with the crossing that allocated it (weighted when sampled).
fn read_live(
    ebpf: &Ebpf,
    config: AllocConfig,
    mut nif: Option<&mut NifTracing>,
    table: &mut BoundaryTable,
) -> anyhow::Result<Vec<LiveEntry>> {
    let map = ebpf
        .map(loader::LIVE_BLOCKS)
        .ok_or(ProbeError::MissingMap {
            name: loader::LIVE_BLOCKS,
        })?;
    let blocks = BpfHashMap::<_, LiveKey, LiveBlock>::try_from(map)?;
    let mut live = Vec::new();
    for entry in blocks.iter() {
        let Ok((key, block)) = entry else {
            continue;
        };
        let boundary = beam::tracing::crossing(
            nif.as_deref_mut(),
            key.tgid,
            block.boundary,
            block.target,
            table,
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

/// A status line on a terminal (elapsed time, records, drops), redrawn every second
/// once a recording has run for two; nothing at all when stderr is not a terminal.
struct Progress {
    terminal: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    fn show(&mut self, elapsed: Duration, records: u64, dropped: impl FnOnce() -> u64) {
        if !self.terminal
            || elapsed < Duration::from_secs(2)
            || self
                .last
                .is_some_and(|l| l.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        self.shown = true;
        eprint!(
            "\r\x1b[2Kxlperf: {} recorded, {records} records, {} dropped",
            table::human_ns(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)),
            dropped()
        );
    }

    /// Erases the status line before the summary is printed.
    fn clear(&self) {
        if self.shown {
            eprint!("\r\x1b[2K");
        }
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock of bpf_ktime_get_ns and of every record.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

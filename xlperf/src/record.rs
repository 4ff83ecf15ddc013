//! `xlperf record`: attach, collect call records until the end condition, summarise.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::programs::uprobe::UProbeScope;
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, PerCpuArray, RingBuf},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use xlperf_common::{
    AllocConfig, CALIBRATION_BOUNDARY, COUNTERS_SLOT, CallRecord, CallStack, Cost, Counters,
    LiveBlock, LiveKey, NO_BOUNDARY, OffCpuRecord,
};

use crate::{
    cli::{FfiSpec, RecordArgs},
    event::ring::{CallRecords, Item},
    metrics::{calls::CallAggregator, cost::CostAggregator},
    privileges,
    probe::{
        ProbeError,
        alloc::AllocTracing,
        attach::{self, Attachment},
        beam::{self, tracing::NifTracing},
        boundary::BoundaryTable,
        calibrate,
        library::Scope,
        links::Links,
        loader::{self, CALL_RECORDS, FFI_COUNTERS},
        target::{self, Suspended},
        tracepoints,
    },
    report::{
        Summary, insights, summary,
        summary::{AllocRecording, Costs, NifRecording},
        table,
    },
};

/// How often the ring buffer is drained: the kernel side never wakes us (see stack.rs).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

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
        Targets::Pids(args.target.pids.clone())
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let summary = runtime.block_on(record(args, &specs, targets))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print!("{}", table::render(&summary));
    }
    Ok(())
}

async fn record(args: &RecordArgs, specs: &[FfiSpec], targets: Targets) -> anyhow::Result<Summary> {
    // Resolve everything that can fail on bad input before touching the kernel.
    if matches!(targets, Targets::All) && (args.alloc || args.sched) {
        return Err(ProbeError::AllNeedsProcess.into());
    }
    let mut table = BoundaryTable::default();
    let mut attachments = Vec::new();
    let mut command = None;
    match &targets {
        Targets::Pids(pids) => {
            for &pid in pids {
                let nonzero = target::check_pid(pid)?;
                let ids = add_all(&mut table, specs, &Scope::Pid(pid))?;
                attachments.push(Attachment::pid(nonzero, ids));
            }
        }
        Targets::All => attachments.push(Attachment::all(add_all(&mut table, specs, &Scope::All)?)),
        Targets::Command(argv) => {
            let program = target::find_program(argv.first().map_or("", String::as_str))?;
            let ids = add_all(&mut table, specs, &Scope::Program(&program))?;
            command = Some((program, ids));
        }
    }
    let vm = find_vm(
        args,
        specs.is_empty(),
        &targets,
        command.as_ref().map(|(p, _)| p),
    )?;
    let mut nif = match &vm {
        Some(vm) => Some(NifTracing::prepare(vm, args.nif_mode)?),
        None => None,
    };
    if matches!(targets, Targets::All)
        && nif
            .as_ref()
            .is_some_and(|n| matches!(n.mode, beam::tracing::Mode::Fptr { .. }))
    {
        return Err(ProbeError::FptrNeedsProcess.into());
    }
    let alloc = if args.alloc {
        let scope = match (&targets, &command) {
            (Targets::Pids(pids), _) => pids.iter().map(|&p| Scope::Pid(p)).collect(),
            (_, Some((program, _))) => vec![Scope::Program(program)],
            _ => Vec::new(),
        };
        let mut found = Vec::new();
        for scope in &scope {
            found.push(AllocTracing::prepare(scope, vm.as_deref())?);
        }
        Some(found)
    } else {
        None
    };
    let layout = if args.alloc || args.sched {
        Some(tracepoints::layout(args.kmem)?)
    } else {
        None
    };
    if table.len() > args.max_functions {
        return Err(ProbeError::TooManyFunctions {
            count: table.len(),
            max: args.max_functions,
        }
        .into());
    }

    // Signals first: from here on, Ctrl-C must end the recording cleanly, not kill us.
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;

    let mut ebpf = loader::load(
        args.ring_size,
        if args.alloc { args.alloc_live_max } else { 0 },
        args.alloc_sample.unwrap_or(0),
    )?;
    let cost = calibrate::measure(&mut ebpf)?;
    let ring = ebpf
        .take_map(CALL_RECORDS)
        .ok_or(ProbeError::MissingMap { name: CALL_RECORDS })?;
    let ring = RingBuf::try_from(ring).map_err(|source| ProbeError::Map {
        what: "opening the call-record ring buffer".into(),
        source,
    })?;
    let mut records = CallRecords::new(ring).context("polling the ring buffer")?;
    let calibration_seen = records.drain(|r| debug_assert_eq!(r.boundary, CALIBRATION_BOUNDARY));
    // Counters so far belong to the calibration (a small --ring-size drops some of its
    // records); the recording reports only what happens after this point.
    let calibration = counters(&ebpf)?;
    if calibration_seen as u64 + calibration.dropped != cost.probed_calls {
        log::warn!(
            "probe calibration traced {calibration_seen} of {} calls: this kernel loses uprobe hits",
            cost.probed_calls
        );
    }

    let mut child = match (&targets, command) {
        (Targets::Command(argv), Some((program, ids))) => {
            // With --json, stdout carries only the summary: the command's output goes to stderr.
            let child = Suspended::spawn(&program, argv, args.json)?;
            attachments.push(Attachment::pid(child.pid(), ids));
            Some(child)
        }
        _ => None,
    };
    let mut links = Links::default();
    let mut probes = attach::attach_ffi(&mut ebpf, &table, &attachments, &mut links)?;
    let (before, mut alloc_probes) = (links.len(), 0);
    let target_pids: Vec<u32> = match &targets {
        Targets::Pids(pids) => pids.clone(),
        Targets::Command(_) => child.iter().map(|c| c.pid().get()).collect(),
        Targets::All => Vec::new(),
    };
    if let Some(layout) = layout {
        tracepoints::write_layout(&mut ebpf, layout)?;
        for &pid in &target_pids {
            tracepoints::add_target(&mut ebpf, pid)?;
        }
    }
    if args.sched {
        for (program, name) in [
            (loader::SCHED_SWITCH, "sched_switch"),
            (loader::SCHED_WAKING, "sched_waking"),
            (loader::SCHED_WAKEUP_NEW, "sched_wakeup_new"),
        ] {
            tracepoints::attach(&mut ebpf, &mut links, program, "sched", name)?;
        }
    }
    if let Some(alloc) = &alloc {
        for (program, name) in [
            (loader::MMAP_ENTER, "sys_enter_mmap"),
            (loader::MUNMAP_ENTER, "sys_enter_munmap"),
        ] {
            tracepoints::attach(&mut ebpf, &mut links, program, "syscalls", name)?;
        }
        if args.kmem {
            for name in [
                loader::KMALLOC,
                loader::KMEM_CACHE_ALLOC,
                loader::MM_PAGE_ALLOC,
            ] {
                tracepoints::attach(&mut ebpf, &mut links, name, "kmem", name)?;
            }
        }
        for (tracing, &pid) in alloc.iter().zip(&target_pids) {
            let scope = UProbeScope::OneProcess(target::check_pid(pid)?);
            alloc_probes += tracing.attach(&mut ebpf, &mut links, scope)?;
        }
    }
    probes += links.len() - before;
    if let Some(nif) = nif.as_mut() {
        match &targets {
            Targets::Pids(pids) => {
                for &pid in pids {
                    let scope = UProbeScope::OneProcess(target::check_pid(pid)?);
                    probes += nif.attach(&mut ebpf, &mut table, scope, Some(pid))?;
                }
            }
            Targets::Command(_) => {
                if let Some(child) = child.as_ref() {
                    let pid = child.pid();
                    probes += nif.attach(
                        &mut ebpf,
                        &mut table,
                        UProbeScope::OneProcess(pid),
                        Some(pid.get()),
                    )?;
                }
            }
            Targets::All => {
                probes += nif.attach(&mut ebpf, &mut table, UProbeScope::AllProcesses, None)?;
            }
        }
    }
    let exits = exit_watchers(&targets, child.as_ref())?;
    let started = Instant::now();
    if let Some(child) = child.as_mut() {
        child.release().context("starting the command")?;
    }
    let mut what = match &nif {
        Some(n) if table.ffi_len() == 0 => format!("the NIFs ({} mode)", n.mode_name()),
        Some(n) => format!(
            "{} function(s) and the NIFs ({} mode)",
            table.ffi_len(),
            n.mode_name()
        ),
        None => format!("{} function(s)", table.len()),
    };
    if table.is_empty() && nif.is_none() {
        what = "no crossings".into();
    }
    if alloc_probes > 0 {
        what.push_str(" and the allocator");
    }
    if args.sched {
        what.push_str(", with scheduler tracepoints");
    }
    eprintln!(
        "xlperf: {probes} probes on {what} in {}; {}",
        describe(&targets, child.as_ref()),
        match args.duration {
            Some(d) => format!("recording for {}", table::human_ns(d.as_nanos() as u64)),
            None => "Ctrl-C to stop".into(),
        }
    );

    let mut collector = Collector {
        aggregator: CallAggregator::new(
            u64::try_from(args.long_nif.as_nanos()).unwrap_or(u64::MAX),
        ),
        comms: HashMap::new(),
        thread_comms: HashMap::new(),
        table,
        nif,
        costs: (args.alloc || args.sched).then(CostAggregator::default),
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut last_rescan = Instant::now();
    loop {
        let stop = tokio::select! {
            waited = records.wait(POLL_INTERVAL) => {
                waited.context("reading the ring buffer")?;
                false
            }
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            () = sleep_until(deadline) => true,
            () = all_exited(&exits) => true,
        };
        collector.drain(&mut records);
        if stop {
            break;
        }
        if last_rescan.elapsed() >= NIF_RESCAN_INTERVAL {
            last_rescan = Instant::now();
            collector.rescan(&mut ebpf)?;
        }
    }
    // Everything a finished target emitted is already in the ring buffer.
    collector.drain(&mut records);
    let duration = started.elapsed();
    let target_exit_status = child.as_mut().and_then(Suspended::finish);
    collector.drain(&mut records);
    let counters = counters(&ebpf)?.zip_with(&calibration, u64::saturating_sub);
    let live_evicted = match collector.costs.as_mut() {
        Some(costs) => {
            let (inserted, removed) =
                read_threads(&ebpf, &target_pids, costs, &mut collector.thread_comms)?;
            if args.alloc {
                let remaining = read_live(
                    &ebpf,
                    AllocConfig {
                        sample_bytes: args.alloc_sample.unwrap_or(0),
                    },
                    costs,
                    collector.nif.as_mut(),
                    &mut collector.table,
                )?;
                inserted.saturating_sub(removed).saturating_sub(remaining)
            } else {
                0
            }
        }
        None => 0,
    };
    // Detach every probe (about 110 ms each: see links.rs), then free programs and maps.
    drop(links);
    if let Some(nif) = collector.nif.as_mut() {
        drop(std::mem::take(&mut nif.links));
    }
    drop(ebpf);
    let Collector {
        aggregator,
        comms,
        thread_comms,
        table,
        nif,
        costs,
    } = collector;

    let command_name = match &targets {
        Targets::Command(argv) => argv
            .first()
            .map(|c| c.rsplit('/').next().unwrap_or(c).to_owned()),
        _ => None,
    };
    let child_pid = child.as_ref().map(|c| c.pid().get());
    let comm = |pid: u32| match comms.get(&pid) {
        Some(c) if c != "?" => c.clone(),
        _ if Some(pid) == child_pid => command_name.clone().unwrap_or_else(|| "?".into()),
        _ => "?".into(),
    };
    let costs = costs.as_ref().map(|aggregator| Costs {
        aggregator,
        alloc: args.alloc,
        kmem: args.kmem,
        sched: args.sched,
    });
    let thread_comm = |tid: u32| {
        thread_comms
            .get(&tid)
            .cloned()
            .unwrap_or_else(|| "?".into())
    };
    let mut summary = Summary {
        schema_version: summary::SCHEMA_VERSION,
        duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        dropped: counters.dropped,
        probe_cost_ns: cost.per_call_ns,
        boundaries: summary::boundaries(
            &aggregator,
            costs.as_ref(),
            &table,
            comm,
            nif.as_ref().and_then(|n| match &n.mode {
                beam::tracing::Mode::Dispatch(d) => Some(d.call_nif.site),
                beam::tracing::Mode::Fptr { .. } => None,
            }),
        ),
        target_exit_status,
        depth_overflow: counters.depth_overflow,
        unmatched_returns: counters.unmatched_return,
        abandoned: counters.abandoned,
        malformed: records.malformed,
        stack_map_full: counters.stack_map_full,
        nif: nif.map(|n| NifRecording {
            mode: n.mode_name(),
            fallback_reason: match &n.mode {
                beam::tracing::Mode::Fptr { reason } => reason.clone(),
                beam::tracing::Mode::Dispatch(_) => None,
            },
            vm: n.vm.display().to_string(),
            long_call_threshold_ns: aggregator.long_call_ns,
            vm_internal_calls: n.resolver.vm_internal,
            unresolved_calls: n.resolver.unresolved,
        }),
        alloc: alloc.map(|found| AllocRecording {
            live_capacity: args.alloc_live_max,
            sample_bytes: args.alloc_sample,
            live_evicted,
            probes: found.iter().flat_map(AllocTracing::probes).collect(),
        }),
        threads: costs.as_ref().map(|c| c.threads(thread_comm)),
        processes: costs.as_ref().map(|c| c.processes(comm)),
        insights: Vec::new(),
    };
    summary.insights = insights::detect(&summary);
    Ok(summary)
}

/// Everything records flow into during a recording.
struct Collector {
    aggregator: CallAggregator,
    /// Names are read on a pid's first record: by the end a short-lived target is gone.
    comms: HashMap<u32, String>,
    thread_comms: HashMap<u32, String>,
    table: BoundaryTable,
    nif: Option<NifTracing>,
    /// Allocation and scheduler figures (`--alloc`, `--sched`).
    costs: Option<CostAggregator>,
}

impl Collector {
    /// Takes in every record available now.
    fn drain(&mut self, records: &mut CallRecords) {
        let mut calls: Vec<(CallRecord, Option<Cost>)> = Vec::new();
        let mut off_cpu: Vec<OffCpuRecord> = Vec::new();
        records.drain_items(|item| match item {
            Item::Call(call, cost) => calls.push((call, cost)),
            Item::OffCpu(off) => off_cpu.push(off),
        });
        if let Some(nif) = self.nif.as_mut() {
            nif.name_batch(&mut calls, &mut self.table, |(call, _)| call);
        }
        for (record, cost) in calls {
            self.comms
                .entry(record.pid)
                .or_insert_with(|| target::comm(record.pid));
            self.aggregator.record(&record);
            if let Some(costs) = self.costs.as_mut() {
                costs.call(&record, cost.as_ref());
            }
        }
        let Some(costs) = self.costs.as_mut() else {
            return;
        };
        for off in off_cpu {
            self.thread_comms
                .entry(off.tid)
                .or_insert_with(|| target::comm(off.tid));
            let boundary = match (off.boundary, self.nif.as_mut()) {
                (NO_BOUNDARY, _) => None,
                (b, Some(nif)) if beam::is_dispatch(b) => {
                    nif.boundary_of(off.pid, off.target, &mut self.table)
                }
                (b, _) => Some(b),
            };
            costs.off_cpu(&interrupt_waker(off), boundary);
        }
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
    if !args.nif && !no_ffi {
        return Ok(None);
    }
    // Allocations and scheduling are worth recording in any process, crossings or not.
    let whole_process = args.alloc || args.sched;
    let nothing = |what: String| {
        anyhow!(
            "nothing to trace in {what}: it is not an Erlang/Elixir VM, the runtime xlperf detects; name C-ABI functions with --ffi LIB[:GLOB], or record its allocations or scheduling with --alloc / --sched"
        )
    };
    match targets {
        Targets::Pids(pids) => {
            let mut found: Option<PathBuf> = None;
            for &pid in pids {
                target::check_pid(pid)?;
                match beam::vm_of_pid(pid)? {
                    Some(vm) => {
                        if found.as_ref().is_some_and(|f| *f != vm) {
                            return Err(anyhow!(
                                "pids run different Erlang VMs ({} and {}); record one installation at a time",
                                found
                                    .as_ref()
                                    .map_or_else(String::new, |f| f.display().to_string()),
                                vm.display()
                            ));
                        }
                        found = Some(vm);
                    }
                    None if args.nif => return Err(ProbeError::NotBeam { pid }.into()),
                    None if whole_process => {}
                    None => {
                        return Err(nothing(format!("pid {pid} ({})", target::comm(pid))));
                    }
                }
            }
            Ok(found)
        }
        Targets::Command(argv) => {
            let program = program.ok_or_else(|| anyhow!("no command given"))?;
            if args.nif || beam::is_launcher(program) {
                Ok(Some(beam::vm_for_program(program)?))
            } else if whole_process {
                Ok(None)
            } else {
                Err(nothing(argv.first().cloned().unwrap_or_default()))
            }
        }
        Targets::All => {
            if args.nif {
                Ok(Some(beam::vm_for_program(std::path::Path::new("erl"))?))
            } else {
                Err(anyhow!(
                    "--all needs a probe: name functions with --ffi LIB[:GLOB], or trace every BEAM's NIFs with --nif"
                ))
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

/// One pidfd per target process; the recording ends when all have exited.
fn exit_watchers(
    targets: &Targets,
    child: Option<&Suspended>,
) -> anyhow::Result<Vec<AsyncFd<std::os::fd::OwnedFd>>> {
    let pids: Vec<u32> = match targets {
        Targets::Pids(pids) => pids.clone(),
        Targets::Command(_) => child.map(|c| c.pid().get()).into_iter().collect(),
        Targets::All => Vec::new(),
    };
    pids.into_iter()
        .map(|pid| {
            let fd = target::pidfd(pid).with_context(|| format!("watching pid {pid} for exit"))?;
            // SAFETY: the OwnedFd stays open, and is the same fd, for the AsyncFd's lifetime.
            unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| anyhow!("watching pid {pid} for exit: {e}"))
        })
        .collect()
}

async fn all_exited(exits: &[AsyncFd<std::os::fd::OwnedFd>]) {
    if exits.is_empty() {
        return std::future::pending().await;
    }
    for fd in exits {
        // A pidfd turns readable once, when its process exits, and stays so.
        let _ = fd.readable().await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// Reads each target thread's kernel state: its figures outside any crossing. Returns
/// the blocks the threads put into and took out of the live map, summed.
fn read_threads(
    ebpf: &Ebpf,
    pids: &[u32],
    costs: &mut CostAggregator,
    comms: &mut HashMap<u32, String>,
) -> anyhow::Result<(u64, u64)> {
    let (mut inserted, mut removed) = (0, 0);
    let map = ebpf
        .map(loader::CALL_STACKS)
        .ok_or(ProbeError::MissingMap {
            name: loader::CALL_STACKS,
        })?;
    let stacks = BpfHashMap::<_, u32, CallStack>::try_from(map)?;
    for entry in stacks.iter() {
        let Ok((tid, stack)) = entry else {
            continue;
        };
        if !pids.contains(&stack.thread.tgid) {
            continue;
        }
        // The kernel's copy is the latest name seen: a first-seen one may predate an exec.
        match stack.thread.comm.iter().position(|&b| b == 0).unwrap_or(16) {
            0 => {
                comms.entry(tid).or_insert_with(|| target::comm(tid));
            }
            end => {
                comms.insert(
                    tid,
                    String::from_utf8_lossy(&stack.thread.comm[..end]).into_owned(),
                );
            }
        }
        costs.thread_outside(
            tid,
            stack.thread.tgid,
            stack.thread.outside,
            stack.thread.frees_untracked,
        );
        inserted += stack.thread.live_inserted;
        removed += stack.thread.live_removed;
    }
    Ok((inserted, removed))
}

/// Charges every block still live to the crossing that allocated it; returns how many
/// blocks the map held.
fn read_live(
    ebpf: &Ebpf,
    config: AllocConfig,
    costs: &mut CostAggregator,
    mut nif: Option<&mut NifTracing>,
    table: &mut BoundaryTable,
) -> anyhow::Result<u64> {
    let map = ebpf
        .map(loader::LIVE_BLOCKS)
        .ok_or(ProbeError::MissingMap {
            name: loader::LIVE_BLOCKS,
        })?;
    let live = BpfHashMap::<_, LiveKey, LiveBlock>::try_from(map)?;
    let mut count = 0;
    for entry in live.iter() {
        let Ok((key, block)) = entry else {
            continue;
        };
        count += 1;
        let boundary = match (block.boundary, nif.as_deref_mut()) {
            (b, Some(nif)) if beam::is_dispatch(b) => nif
                .boundary_of(key.tgid, block.target, table)
                .unwrap_or(NO_BOUNDARY),
            (b, _) => b,
        };
        costs.live(key.tgid, boundary, config.weight(block.size).1, block.ns);
    }
    Ok(count)
}

/// Sums the per-CPU loss and consistency counters.
fn counters(ebpf: &Ebpf) -> anyhow::Result<Counters> {
    let map = ebpf
        .map(FFI_COUNTERS)
        .ok_or(ProbeError::MissingMap { name: FFI_COUNTERS })?;
    let per_cpu = PerCpuArray::<_, Counters>::try_from(map)?;
    let values = per_cpu.get(&COUNTERS_SLOT, 0)?;
    Ok(values.iter().fold(Counters::default(), |sum, cpu| {
        sum.zip_with(cpu, u64::saturating_add)
    }))
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

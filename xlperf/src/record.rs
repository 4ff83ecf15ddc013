//! `xlperf record`: attach, collect call records until the end condition, summarise.

use std::{collections::HashMap, time::Instant};

use anyhow::{Context as _, anyhow};
use aya::{
    Ebpf,
    maps::{PerCpuArray, RingBuf},
};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};
use xlperf_common::{CALIBRATION_BOUNDARY, COUNTERS_SLOT, Counters};

use crate::{
    cli::{FfiSpec, RecordArgs},
    event::ring::CallRecords,
    metrics::calls::CallAggregator,
    privileges,
    probe::{
        ProbeError,
        attach::{self, Attachment},
        boundary::BoundaryTable,
        calibrate,
        library::Scope,
        loader::{self, CALL_RECORDS, FFI_COUNTERS},
        target::{self, Suspended},
    },
    report::{Summary, summary, table},
};

/// How often the ring buffer is drained: the kernel side never wakes us (see ffi.rs).
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

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

    let mut ebpf = loader::load(args.ring_size)?;
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
    let probes = attach::attach_ffi(&mut ebpf, &table, &attachments)?;
    let exits = exit_watchers(&targets, child.as_ref())?;
    let started = Instant::now();
    if let Some(child) = child.as_mut() {
        child.release().context("starting the command")?;
    }
    eprintln!(
        "xlperf: {probes} probes on {} function(s) in {}; {}",
        table.len(),
        describe(&targets, child.as_ref()),
        match args.duration {
            Some(d) => format!("recording for {}", table::human_ns(d.as_nanos() as u64)),
            None => "Ctrl-C to stop".into(),
        }
    );

    let mut aggregator = CallAggregator::default();
    // Names are read on a pid's first record: by the end a short-lived target is gone.
    let mut comms: HashMap<u32, String> = HashMap::new();
    let mut on_record = |r: xlperf_common::CallRecord| {
        comms.entry(r.pid).or_insert_with(|| target::comm(r.pid));
        aggregator.record(&r);
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    loop {
        tokio::select! {
            batch = records.next_batch(POLL_INTERVAL, &mut on_record) => {
                batch.context("reading the ring buffer")?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            () = sleep_until(deadline) => break,
            () = all_exited(&exits) => break,
        }
    }
    // Everything a finished target emitted is already in the ring buffer.
    records.drain(&mut on_record);
    let duration = started.elapsed();
    let target_exit_status = child.as_mut().and_then(Suspended::finish);
    records.drain(&mut on_record);
    let counters = counters(&ebpf)?.zip_with(&calibration, u64::saturating_sub);
    drop(ebpf); // detaches every probe

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
    Ok(Summary {
        schema_version: summary::SCHEMA_VERSION,
        duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        dropped: counters.dropped,
        probe_cost_ns: cost.per_call_ns,
        boundaries: summary::boundaries(&aggregator, &table, comm),
        target_exit_status,
        depth_overflow: counters.depth_overflow,
        unmatched_returns: counters.unmatched_return,
        abandoned: counters.abandoned,
        malformed: records.malformed,
        stack_map_full: counters.stack_map_full,
    })
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

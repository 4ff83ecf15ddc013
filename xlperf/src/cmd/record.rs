//! `xlperf record`: a session on the command line's targets, its events summarised (and
//! written to a capture file with `-o`) when it ends.

use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use xlperf_common::AllocConfig;

use crate::{
    capture::file::CaptureWriter,
    cli::RecordArgs,
    model::{AllocRecording, CallEvent, End, Meta, ProbeCosts},
    privileges,
    probe::proc::target::{self, Suspended},
    report::{
        Summary,
        build::{self, Aggregates, Recording},
        table,
    },
    session::{
        Session,
        drain::Names,
        exits::{Exits, Signals},
        sink::{self, Sink},
        targets::{Crossings, Prepared, Target, Wants},
    },
};

/// How often fallback-mode NIF tracing looks for newly loaded NIF libraries.
const NIF_RESCAN_INTERVAL: Duration = Duration::from_millis(200);

pub fn run(args: &RecordArgs) -> anyhow::Result<()> {
    privileges::check().map_err(|why| anyhow!(why))?;
    let wants = Wants::new(&args.probes, args.kmem)?;
    if let Some(path) = &args.output {
        CaptureWriter::check(path)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    let summary = runtime.block_on(record(args, wants))?;
    if args.json {
        super::output::json(&summary)?;
    } else {
        super::output::print(&table::render(&summary))?;
    }
    Ok(())
}

/// The targets of the command line, resolved before anything is loaded: everything
/// that can fail on bad input fails here.
fn plan<'a>(
    args: &'a RecordArgs,
    wants: &Wants,
    crossings: &mut Crossings,
) -> anyhow::Result<Vec<Prepared<'a>>> {
    let argv = &args.target.command;
    if args.target.all {
        return Ok(vec![crossings.prepare(wants, Target::All)?]);
    }
    if let Some(command) = argv.first() {
        let target = Target::Command {
            program: target::find_program(command)?,
            argv,
            // With --json, stdout carries only the summary.
            stdout_to_stderr: args.json,
        };
        return Ok(vec![crossings.prepare(wants, target)?]);
    }
    // `-p X -p X` is one process: tracing it twice would count every call twice.
    let mut pids = Vec::new();
    for &pid in &args.target.pids {
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids.into_iter()
        .map(|pid| crossings.prepare(wants, Target::Pid { pid, wait: false }))
        .collect()
}

async fn record(args: &RecordArgs, wants: Wants) -> anyhow::Result<Summary> {
    let mut crossings = Crossings::default();
    let prepared = plan(args, &wants, &mut crossings)?;
    // Signals first: from here on, Ctrl-C must end the recording cleanly, not kill us.
    let mut signals = Signals::install()?;
    let sample_bytes = args.alloc_sample.unwrap_or(0);
    let mut session = Session::open(wants, crossings, args.alloc_live_max, sample_bytes)?;
    let mut child = None;
    for target in prepared {
        child = session.attach(target)?.or(child);
    }
    let exits = Exits::watch(&session.followed())?;
    let started = Instant::now();
    if let Some(child) = child.as_mut() {
        child.release().context("starting the command")?;
    }
    eprintln!("{}", announce(args, &session, child.as_ref()));
    let meta = meta(args, session.costs());
    let mut sinks = Sinks {
        aggregates: Aggregates::new(&meta),
        writer: match &args.output {
            Some(path) => Some(CaptureWriter::create(path, &meta)?),
            None => None,
        },
        progress: Progress::new(),
    };
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut last_rescan = Instant::now();
    loop {
        let stop = session.next(&mut signals, deadline, Some(&exits)).await?;
        sinks.take(&mut session)?;
        if stop {
            break;
        }
        if last_rescan.elapsed() >= NIF_RESCAN_INTERVAL {
            last_rescan = Instant::now();
            session.rescan()?;
        }
        sinks.progress.show(started.elapsed(), || {
            session.counters().map(|c| c.dropped).unwrap_or(0)
        });
    }
    sinks.progress.clear();
    let duration = started.elapsed();
    let target_exit_status = child.as_mut().and_then(Suspended::finish);
    // Everything a finished target emitted is in the ring buffer now.
    sinks.take(&mut session)?;
    let mut end = finish(args, &mut session, duration)?;
    end.target_exit_status = target_exit_status;
    let mut crossings = session.close();
    end.nif = crossings
        .nif
        .as_ref()
        .map(|n| n.recording(meta.long_call_ns));
    name_command(args, child.as_ref(), &mut crossings.names);
    sinks.aggregates.end(&end);
    let names = &crossings.names;
    if let Some(mut writer) = sinks.writer.take() {
        writer.names(&names.processes, &names.threads)?;
        writer.boundaries(&names.boundaries)?;
        writer.finish(&end)?;
    }
    Ok(build::summary(
        &sinks.aggregates,
        &Recording {
            meta: &meta,
            processes: &names.processes,
            threads: &names.threads,
            boundaries: &names.boundaries,
            end: &end,
            truncated: false,
        },
    ))
}

/// Where a recording's events go.
struct Sinks {
    aggregates: Aggregates,
    /// `-o FILE`.
    writer: Option<CaptureWriter>,
    progress: Progress,
}

impl Sinks {
    /// Takes in every record available now, then attaches to what stopped processes
    /// have mapped.
    fn take(&mut self, session: &mut Session) -> anyhow::Result<()> {
        let batch = session.drain();
        let mut sinks: Vec<&mut dyn Sink> = vec![&mut self.aggregates, &mut self.progress];
        if let Some(writer) = self.writer.as_mut() {
            sinks.push(writer);
        }
        sink::feed(&batch, session.names(), &mut sinks)?;
        session.attach_stopped()
    }
}

/// The line that says what is traced, where, until when.
fn announce(args: &RecordArgs, session: &Session, child: Option<&Suspended>) -> String {
    let crossings = session.crossings();
    let (table, nif) = (&crossings.table, crossings.nif.as_ref());
    let mut what = match nif {
        Some(n) if table.ffi_len() == 0 => format!("the NIFs ({} mode)", n.mode_name()),
        Some(n) => format!(
            "{} function(s) and the NIFs ({} mode)",
            table.ffi_len(),
            n.mode_name()
        ),
        None if table.is_empty() => "no crossings".into(),
        None => format!("{} function(s)", table.len()),
    };
    let waiting = session.never_mapped();
    if !waiting.is_empty() {
        let later = format!(
            "{} once the process maps it (it is not loaded yet)",
            waiting.join(", ")
        );
        what = if table.is_empty() && nif.is_none() {
            format!("nothing yet: {later}")
        } else {
            format!("{what}, and {later}")
        };
    }
    if !session.alloc_probes().is_empty() {
        what.push_str(" and the allocator");
    }
    if args.probes.sched {
        what.push_str(", with scheduler tracepoints");
    }
    format!(
        "xlperf: {} probes on {what} in {}; {}",
        session.probes(),
        describe(args, child),
        match args.duration {
            Some(d) => format!("recording for {}", table::human_ns(d.as_nanos() as u64)),
            None => "Ctrl-C to stop".into(),
        }
    )
}

fn describe(args: &RecordArgs, child: Option<&Suspended>) -> String {
    let argv = args.target.command.join(" ");
    match child {
        _ if args.target.all => "all processes".into(),
        Some(child) => format!("{argv} (pid {})", child.pid()),
        None if !argv.is_empty() => argv,
        None => {
            let mut pids: Vec<String> = Vec::new();
            for &p in &args.target.pids {
                let pid = format!("{p} ({})", target::comm(p));
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
            format!("pid {}", pids.join(", "))
        }
    }
}

/// Reads what only the end of a recording can: losses, probe time, and with --alloc or
/// --sched each thread's figures outside any crossing and the blocks still live.
fn finish(args: &RecordArgs, session: &mut Session, duration: Duration) -> anyhow::Result<End> {
    let counters = session.counters()?;
    let pids = session.followed();
    let probe = session.probe_time(&pids)?;
    let mut end = End {
        duration_ns: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
        dropped: counters.dropped,
        depth_overflow: counters.depth_overflow,
        unmatched_returns: counters.unmatched_return,
        abandoned: counters.abandoned,
        malformed: session.malformed(),
        stack_map_full: counters.stack_map_full,
        probe_emulated_ns: probe.emulated_ns,
        probe_stepped_ns: probe.stepped_ns,
        tracepoint_ns: session.tracepoint_ns()?,
        never_mapped: session.never_mapped(),
        syscall_map_full: counters.syscall_map_full,
        ..End::default()
    };
    if args.probes.syscalls {
        end.syscalls = session.syscalls()?;
    }
    if !(args.probes.alloc || args.probes.sched) {
        return Ok(end);
    }
    let threads = session.threads(&pids)?;
    end.threads_outside = threads.outside;
    if args.probes.alloc {
        let config = AllocConfig {
            sample_bytes: args.alloc_sample.unwrap_or(0),
        };
        end.live = session.live(config)?;
        // What went in and neither came out nor is still there was evicted.
        let live_evicted = threads
            .live_inserted
            .saturating_sub(threads.live_removed)
            .saturating_sub(end.live.len() as u64);
        end.alloc = Some(AllocRecording {
            live_capacity: args.alloc_live_max,
            sample_bytes: args.alloc_sample,
            live_evicted,
            probes: session.alloc_probes().to_vec(),
        });
    }
    Ok(end)
}

/// A command that exited before its name could be read is named after the command.
fn name_command(args: &RecordArgs, child: Option<&Suspended>, names: &mut Names) {
    let (Some(command), Some(child)) = (args.target.command.first(), child) else {
        return;
    };
    let name = command.rsplit('/').next().unwrap_or(command).to_owned();
    let entry = names.processes.entry(child.pid().get()).or_default();
    if entry.is_empty() || entry == "?" {
        *entry = name;
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
        syscalls: args.probes.syscalls,
        probe_cost_ns: costs.pair.emulated.total_ns,
        probe_costs: costs,
        long_call_ns: u64::try_from(args.probes.long_nif.as_nanos()).unwrap_or(u64::MAX),
    }
}

/// A status line on a terminal (elapsed time, records, drops), redrawn every second
/// once a recording has run for two; nothing at all when stderr is not a terminal.
struct Progress {
    records: u64,
    terminal: bool,
    last: Option<Instant>,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal as _;
        Self {
            records: 0,
            terminal: std::io::stderr().is_terminal(),
            last: None,
            shown: false,
        }
    }

    fn show(&mut self, elapsed: Duration, dropped: impl FnOnce() -> u64) {
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
            "\r\x1b[2Kxlperf: {} recorded, {} records, {} dropped",
            table::human_ns(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)),
            self.records,
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

impl Sink for Progress {
    fn calls(&mut self, calls: &[CallEvent], _names: &Names) -> anyhow::Result<()> {
        self.records += calls.len() as u64;
        Ok(())
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

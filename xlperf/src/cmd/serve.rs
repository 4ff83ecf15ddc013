//! `xlperf serve`: the same session as `record`, kept on, with what it sees exposed to
//! Prometheus instead of summarised at the end.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};

use crate::{
    cli::ServeArgs,
    privileges,
    probe::{
        bpf::loader,
        proc::{
            process,
            target::{self, Suspended},
        },
    },
    prometheus::{exposition::Exposition, http, lock},
    session::{
        Session,
        exits::Signals,
        sink,
        targets::{Crossings, Prepared, Target, Wants},
    },
};

/// How often new processes are looked for, exits noticed and self-metrics updated.
const SCAN_INTERVAL: Duration = Duration::from_secs(1);

pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    privileges::check().map_err(|why| anyhow!(why))?;
    if args.pids.is_empty() && args.comm.is_empty() && !args.all && args.command.is_empty() {
        return Err(anyhow!(
            "serve needs targets: -p PID (repeatable), --comm NAME (e.g. --comm beam.smp), --all, or -- COMMAND"
        ));
    }
    let wants = Wants::new(&args.probes, false)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(serve(args, wants))
}

/// The targets of the command line, resolved before anything is loaded; processes found
/// by --comm come later, as they appear.
fn plan<'a>(
    args: &'a ServeArgs,
    wants: &Wants,
    crossings: &mut Crossings,
) -> anyhow::Result<Vec<Prepared<'a>>> {
    let mut pids = args.pids.clone();
    pids.sort_unstable();
    // `-p X -p X` is one process: probing it twice would count every call twice.
    pids.dedup();
    let mut targets: Vec<Target<'a>> = pids
        .into_iter()
        .map(|pid| Target::Pid { pid, wait: false })
        .collect();
    if args.all {
        targets.push(Target::All);
    }
    if let Some(command) = args.command.first() {
        targets.push(Target::Command {
            program: target::find_program(command)?,
            argv: &args.command,
            stdout_to_stderr: false,
        });
    }
    targets
        .into_iter()
        .map(|t| crossings.prepare(wants, t))
        .collect()
}

async fn serve(args: &ServeArgs, wants: Wants) -> anyhow::Result<()> {
    // Bind first: a port in use is one line before anything is resolved or loaded.
    let listener = bind(args.listen).await?;
    let mut crossings = Crossings::default();
    let prepared = plan(args, &wants, &mut crossings)?;
    let mut signals = Signals::install()?;
    let mut session = Session::open(wants, crossings, loader::DEFAULT_LIVE_BLOCKS, 0)?;
    let exposition = Arc::new(Mutex::new(Exposition::new(
        args.max_series,
        u64::try_from(args.probes.long_nif.as_nanos()).unwrap_or(u64::MAX),
        args.probes.alloc,
        args.probes.sched,
    )));
    if args.probes.syscalls {
        lock(&exposition).enable_syscalls();
    }
    let probe_cost = session.costs().pair.emulated.total_ns;
    lock(&exposition)
        .own
        .probe_cost
        .set(probe_cost as f64 / 1e9);
    let mut child = attach(args, &mut session, prepared)?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let server = tokio::spawn(http::serve(listener, Arc::clone(&exposition)));
    eprintln!(
        "xlperf: serving metrics on http://{address}/metrics for {}{}; Ctrl-C to stop",
        if args.all {
            "every process".to_owned()
        } else {
            format!("{} process(es)", session.running())
        },
        if args.comm.is_empty() {
            String::new()
        } else {
            format!(" and every new {}", args.comm.join(", "))
        }
    );
    let mut scan = Scan::new(&session)?;
    loop {
        let stop = session.next(&mut signals, None, None).await?;
        take(&mut session, &exposition);
        if stop {
            break;
        }
        if scan.last.elapsed() >= SCAN_INTERVAL {
            scan.run(args, &mut session, child.as_mut(), &exposition)?;
        }
    }
    server.abort();
    if let Some(child) = child.as_mut() {
        // Reaps the command if it has exited; one still running keeps running.
        let _ = child.try_wait();
    }
    session.close();
    Ok(())
}

/// Attaches the command line's targets, names them for their series, starts the command
/// (returned) and adds the processes already running under a --comm name.
fn attach(
    args: &ServeArgs,
    session: &mut Session,
    prepared: Vec<Prepared<'_>>,
) -> anyhow::Result<Option<Suspended>> {
    let mut child = None;
    for target in prepared {
        child = session.attach(target)?.or(child);
    }
    // A command has not exec'd yet: its series are labelled by its program's name.
    if let (Some(c), Some(command)) = (&child, args.command.first()) {
        let comm = comm_of_program(&target::find_program(command)?);
        session.names_mut().processes.insert(c.pid().get(), comm);
    }
    if let Some(child) = child.as_mut() {
        child.release().context("starting the command")?;
    }
    add_by_name(args, session);
    Ok(child)
}

/// Processes named by --comm that are not traced yet, traced from now on: libraries they
/// map later are attached when a rescan sees them.
fn add_by_name(args: &ServeArgs, session: &mut Session) {
    for pid in new_by_name(args, session) {
        let added = session
            .prepare(Target::Pid { pid, wait: true })
            .and_then(|prepared| session.attach(prepared));
        if let Err(e) = added {
            eprintln!("xlperf: not tracing pid {pid}: {e:#}");
        }
    }
}

/// Processes named by --comm that are not traced yet.
fn new_by_name(args: &ServeArgs, session: &Session) -> Vec<u32> {
    if args.comm.is_empty() {
        return Vec::new();
    }
    let own = std::process::id();
    process::all_pids()
        .into_iter()
        .filter(|&pid| pid != own && !session.traces(pid))
        .filter(|&pid| args.comm.contains(&process::comm(pid)))
        .collect()
}

/// Takes in every record available now: attaches to what stopped processes have mapped,
/// and updates the series.
fn take(session: &mut Session, exposition: &Mutex<Exposition>) {
    let batch = session.drain();
    // Serving needs no thread names: they would only pile up over days.
    session.names_mut().threads.clear();
    if let Err(e) = session.attach_stopped() {
        log::warn!("attaching to newly mapped libraries: {e:#}");
    }
    let mut exposition = lock(exposition);
    if let Err(e) = sink::feed(&batch, session.names(), &mut [&mut *exposition]) {
        log::warn!("updating the metrics: {e:#}");
    }
}

/// Binds the listening address; an address in use or not this host's is one line.
async fn bind(listen: std::net::SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!(
                "cannot listen on {listen}: the port is in use; pick another with --listen"
            ),
            std::io::ErrorKind::AddrNotAvailable => anyhow!(
                "cannot listen on {listen}: {} is not an address of this host; use 127.0.0.1 (this host only), 0.0.0.0 (every interface) or one of its own addresses (`ip -brief addr`)",
                listen.ip()
            ),
            _ => anyhow!("cannot listen on {listen}: {e}"),
        })
}

/// The once-a-second work: new processes by name, exits, libraries mapped since, system
/// calls (`--syscalls`), and xlperf's own figures.
struct Scan {
    last: Instant,
    /// Drops and probe time at the last scan (the kernel's counters only grow).
    dropped: u64,
    probe_ns: u64,
}

impl Scan {
    fn new(session: &Session) -> anyhow::Result<Self> {
        Ok(Self {
            last: Instant::now(),
            dropped: 0,
            probe_ns: Self::probe_ns(session)?,
        })
    }

    /// Every uprobe hit on a target at its kind of site's measured cost, as the kernel
    /// added them up per thread, and the tracepoint programs' run time.
    fn probe_ns(session: &Session) -> anyhow::Result<u64> {
        Ok(session.probe_time(&[])?.sum() + session.tracepoint_ns()?.unwrap_or(0))
    }

    fn run(
        &mut self,
        args: &ServeArgs,
        session: &mut Session,
        child: Option<&mut Suspended>,
        exposition: &Mutex<Exposition>,
    ) -> anyhow::Result<()> {
        let elapsed = self.last.elapsed();
        self.last = Instant::now();
        add_by_name(args, session);
        if let Some(child) = child {
            // Reap the command once it exits, so that it is seen gone.
            let _ = child.try_wait();
        }
        for pid in session.retire(args.grace) {
            lock(exposition).forget(pid);
        }
        if let Err(e) = session.rescan() {
            log::warn!("{e:#}");
        }
        if args.probes.syscalls {
            let entries = session.syscalls()?;
            let names = session.names();
            let comm = |pid| names.processes.get(&pid).cloned().unwrap_or_default();
            lock(exposition).syscalls(&entries, &names.boundaries, comm);
        }
        let dropped = session.counters()?.dropped;
        let probe_ns = Self::probe_ns(session)?;
        let e = lock(exposition);
        e.own.dropped.inc_by(dropped.saturating_sub(self.dropped));
        e.own
            .overhead
            .set(probe_ns.saturating_sub(self.probe_ns) as f64 / elapsed.as_nanos().max(1) as f64);
        (self.dropped, self.probe_ns) = (dropped, probe_ns);
        e.own
            .rss
            .set(i64::try_from(process::own_rss()).unwrap_or(i64::MAX));
        e.own
            .targets
            .set(i64::try_from(session.running()).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// A command spawned suspended has not exec'd yet: it is named as the kernel will name
/// it (its file name, cut to 15 bytes).
fn comm_of_program(program: &std::path::Path) -> String {
    let name = program
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    name.chars()
        .scan(0, |len, c| {
            *len += c.len_utf8();
            (*len <= 15).then_some(c)
        })
        .collect()
}

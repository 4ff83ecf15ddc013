//! `xlperf serve`: the same probes as `record`, kept on, with what they see exposed to
//! Prometheus instead of summarised at the end.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow};
use aya::{Ebpf, programs::uprobe::UProbeScope};

use crate::{
    cli::{FfiSpec, ServeArgs},
    model::ProbeCosts,
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
        library::{self, Found, Scope},
        pending::{self, Pending},
        proc::target::{self, Suspended},
    },
    prometheus::{exposition::Exposition, http, lock},
    session::{
        drain::Names,
        exits::{self, Signals},
        setup, sink,
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
    if args.all && (args.probes.alloc || args.probes.sched) {
        return Err(ProbeError::AllNeedsProcess.into());
    }
    if args.all && args.probes.ffi.is_empty() && !args.probes.nif {
        return Err(ProbeError::AllNeedsProbe.into());
    }
    let specs: Vec<FfiSpec> = args
        .probes
        .ffi
        .iter()
        .map(|s| FfiSpec::parse(s))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow!(e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(serve(args, specs))
}

async fn serve(args: &ServeArgs, specs: Vec<FfiSpec>) -> anyhow::Result<()> {
    for &pid in &args.pids {
        target::check_target(pid)?;
    }
    // Bind first: a port in use is one line before anything is loaded.
    let listener = bind(args.listen).await?;
    let mut signals = Signals::install()?;
    let setup::Loaded {
        ebpf,
        mut records,
        calibration,
        baseline,
    } = setup::load(&args.probes, loader::DEFAULT_LIVE_BLOCKS, 0)?;
    let costs = calibration.costs;
    let exposition = Arc::new(Mutex::new(Exposition::new(
        args.max_series,
        u64::try_from(args.probes.long_nif.as_nanos()).unwrap_or(u64::MAX),
        args.probes.alloc,
        args.probes.sched,
    )));
    lock(&exposition)
        .own
        .probe_cost
        .set(costs.pair.emulated.total_ns as f64 / 1e9);
    let mut tracer = Tracer {
        ebpf,
        specs,
        table: BoundaryTable::default(),
        nif: None,
        names: Names::default(),
        processes: HashMap::new(),
        exposition: Arc::clone(&exposition),
        args,
        costs,
    };
    let global = tracer.attach_tracepoints()?;
    let mut child = tracer.add_targets()?;
    let address = listener.local_addr().unwrap_or(args.listen);
    let server = tokio::spawn(http::serve(listener, Arc::clone(&exposition)));
    eprintln!(
        "xlperf: serving metrics on http://{address}/metrics for {}{}; Ctrl-C to stop",
        if args.all {
            "every process".to_owned()
        } else {
            format!("{} process(es)", tracer.processes.len())
        },
        if args.comm.is_empty() {
            String::new()
        } else {
            format!(" and every new {}", args.comm.join(", "))
        }
    );
    let mut scan = Scan {
        last: Instant::now(),
        dropped: 0,
        probe_ns: 0,
        baseline,
    };
    loop {
        let stop = exits::next(&mut records, &mut signals, None, None).await?;
        tracer.drain(&mut records);
        if stop {
            break;
        }
        if scan.last.elapsed() >= SCAN_INTERVAL {
            scan.run(&mut tracer, child.as_mut())?;
        }
    }
    server.abort();
    if let Some(child) = child.as_mut() {
        // Reaps the command if it has exited; one still running keeps running.
        let _ = child.try_wait();
    }
    drop(global);
    drop(calibration.probes);
    Ok(())
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

/// The once-a-second work: new processes by name, exits, libraries mapped since, and
/// xlperf's own figures.
struct Scan {
    last: Instant,
    /// Drops and probe time at the last scan (the kernel's counters only grow).
    dropped: u64,
    probe_ns: u64,
    /// The loss counters once calibrated.
    baseline: xlperf_common::Counters,
}

impl Scan {
    fn run(
        &mut self,
        tracer: &mut Tracer<'_>,
        child: Option<&mut Suspended>,
    ) -> anyhow::Result<()> {
        let elapsed = self.last.elapsed();
        self.last = Instant::now();
        tracer.add_by_name();
        if let Some(child) = child {
            // Reap the command once it exits, so that it is seen gone.
            let _ = child.try_wait();
        }
        tracer.retire();
        tracer.rescan();
        tracer.attach_rescanned();
        let dropped = loader::counters(&tracer.ebpf)?
            .zip_with(&self.baseline, u64::saturating_sub)
            .dropped;
        // Every uprobe hit on a target, at its kind of site's measured cost, as the
        // kernel added them up per thread.
        let probe_ns = loader::probe_time(&tracer.ebpf, &[])?.sum();
        let e = lock(&tracer.exposition);
        e.own.dropped.inc_by(dropped.saturating_sub(self.dropped));
        e.own
            .overhead
            .set(probe_ns.saturating_sub(self.probe_ns) as f64 / elapsed.as_nanos().max(1) as f64);
        (self.dropped, self.probe_ns) = (dropped, probe_ns);
        e.own.rss.set(own_rss());
        let traced = tracer
            .processes
            .iter()
            .filter(|(pid, p)| **pid != 0 && p.exited.is_none())
            .count();
        e.own.targets.set(i64::try_from(traced).unwrap_or(i64::MAX));
        Ok(())
    }
}

/// A traced process.
struct Process {
    links: Links,
    /// When it was seen gone; its series go `--grace` later.
    exited: Option<Instant>,
    /// `--ffi` libraries it has not mapped yet (a command, or a process found by --comm).
    pending: Option<Pending>,
}

struct Tracer<'a> {
    ebpf: Ebpf,
    specs: Vec<FfiSpec>,
    table: BoundaryTable,
    nif: Option<NifTracing>,
    /// Processes and boundaries as the series label them.
    names: Names,
    processes: HashMap<u32, Process>,
    exposition: Arc<Mutex<Exposition>>,
    args: &'a ServeArgs,
    costs: ProbeCosts,
}

impl Tracer<'_> {
    /// The scheduler and allocation tracepoints, for every target at once.
    fn attach_tracepoints(&mut self) -> anyhow::Result<Links> {
        let (args, ebpf) = (self.args, &mut self.ebpf);
        let mut global = Links::default();
        if args.probes.alloc || args.probes.sched {
            tracepoints::write_layout(ebpf, tracepoints::layout(false)?)?;
        }
        if args.probes.sched {
            tracepoints::attach_sched(ebpf, &mut global)?;
        }
        if args.probes.alloc {
            tracepoints::attach_alloc(ebpf, &mut global, false)?;
        }
        Ok(global)
    }

    /// The targets of the command line: `-p` pids, `--all`, the command (started, held
    /// until its probes are in, then released, and returned), processes already running
    /// under a `--comm` name.
    fn add_targets(&mut self) -> anyhow::Result<Option<Suspended>> {
        let args = self.args;
        let mut pids = args.pids.clone();
        pids.sort_unstable();
        // `-p X -p X` is one process: probing it twice would count every call twice.
        pids.dedup();
        for pid in pids {
            self.add(pid, None, false)?;
        }
        if args.all {
            self.add_all()?;
        }
        let mut child = match args.command.split_first() {
            Some((command, _)) => {
                let program = target::find_program(command)?;
                let child = Suspended::spawn(&program, &args.command, false)?;
                self.add(child.pid().get(), Some(&program), false)?;
                Some(child)
            }
            None => None,
        };
        if let Some(child) = child.as_mut() {
            child.release().context("starting the command")?;
        }
        self.add_by_name();
        Ok(child)
    }

    /// Processes named by --comm that are not traced yet, traced from now on.
    fn add_by_name(&mut self) {
        for pid in self.new_by_name() {
            if let Err(e) = self.add(pid, None, true) {
                eprintln!("xlperf: not tracing pid {pid}: {e:#}");
            }
        }
    }

    /// Processes named by --comm that are not traced yet.
    fn new_by_name(&self) -> Vec<u32> {
        if self.args.comm.is_empty() {
            return Vec::new();
        }
        let own = std::process::id();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut found: Vec<u32> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| *pid != own && !self.processes.contains_key(pid))
            .filter(|pid| self.args.comm.contains(&target::comm(*pid)))
            .collect();
        found.sort_unstable();
        found
    }

    /// Attaches every probe that applies to `pid`; `program`: the command it is about to
    /// run (spawned suspended), whose libraries are not mapped yet.
    /// Starts tracing `pid`: a command about to start (`program`), or a running process;
    /// `wait` lets a running one (found by --comm) map its libraries later, as a command
    /// may, where `-p` requires them mapped now.
    fn add(
        &mut self,
        pid: u32,
        program: Option<&std::path::Path>,
        wait: bool,
    ) -> anyhow::Result<()> {
        let nonzero = target::check_target(pid)?;
        let scope = UProbeScope::OneProcess(nonzero);
        let lookup = match program {
            Some(program) => Scope::Program(program),
            None => Scope::Pid(pid),
        };
        let mut links = Links::default();
        let (ids, later, expected) = match program {
            Some(program) => pending::add_for_command(&mut self.table, &self.specs, program)?,
            None => self.add_running(pid, wait)?,
        };
        if self.table.len() + expected > self.args.probes.max_functions {
            return Err(ProbeError::TooManyFunctions {
                count: self.table.len() + expected,
                max: self.args.probes.max_functions,
            }
            .into());
        }
        attach::attach_ffi(
            &mut self.ebpf,
            &self.costs,
            &self.table,
            &[Attachment::pid(nonzero, ids)],
            &mut links,
        )?;
        // Only a command xlperf started is stopped while it maps libraries (nobody else
        // sees those stops); a process found by --comm, whose parent could (a shell would
        // take its terminal back), is rescanned every second instead, and its calls into
        // a library before that are missed.
        let pending = if later.is_empty() {
            None
        } else {
            if let Some(program) = program {
                pending::watch(
                    &mut self.ebpf,
                    &mut links,
                    nonzero,
                    &pending::interpreter(program),
                )?;
            }
            Some(Pending::new(pid, later))
        };
        let vm = self.add_nifs(pid, program, scope)?;
        if self.args.probes.alloc {
            AllocTracing::prepare(&lookup, vm.as_deref())?.attach(
                &mut self.ebpf,
                &self.costs,
                &mut links,
                scope,
            )?;
        }
        if self.args.probes.alloc || self.args.probes.sched {
            tracepoints::add_target(&mut self.ebpf, pid)?;
        }
        let comm = program.map_or_else(|| target::comm(pid), comm_of_program);
        self.names.processes.insert(pid, comm);
        self.processes.insert(
            pid,
            Process {
                links,
                exited: None,
                pending,
            },
        );
        Ok(())
    }

    /// The NIFs of `pid` when it is a BEAM and NIFs are traced (asked for, or no --ffi);
    /// returns its VM.
    fn add_nifs(
        &mut self,
        pid: u32,
        program: Option<&std::path::Path>,
        scope: UProbeScope,
    ) -> anyhow::Result<Option<std::path::PathBuf>> {
        let vm = match program {
            Some(program) if self.args.probes.nif || beam::is_launcher(program) => {
                Some(beam::vm_for_program(program)?)
            }
            Some(_) => None,
            None => beam::vm_of_pid(pid)?,
        };
        if let Some(vm) = &vm
            && (self.args.probes.nif || self.specs.is_empty())
        {
            if self.nif.is_none() {
                let mut nif = NifTracing::prepare(vm, self.args.probes.nif_mode)?;
                nif.costs = self.costs;
                self.names.nif_site = nif.dispatch_site();
                self.nif = Some(nif);
            }
            if let Some(nif) = self.nif.as_mut() {
                nif.attach(&mut self.ebpf, &mut self.table, scope, Some(pid))?;
            }
        } else if self.specs.is_empty() && !self.args.probes.alloc && !self.args.probes.sched {
            return Err(anyhow!(
                "pid {pid} ({}) is not an Erlang/Elixir VM: name C-ABI functions with --ffi LIB[:GLOB]",
                target::comm(pid)
            ));
        }
        Ok(vm)
    }

    /// The --ffi boundaries of a running process: files it maps now, and (with `wait`)
    /// the specs whose library it does not map yet.
    fn add_running(
        &mut self,
        pid: u32,
        wait: bool,
    ) -> Result<(Vec<u32>, Vec<FfiSpec>, usize), ProbeError> {
        let (mut ids, mut later) = (Vec::new(), Vec::new());
        for spec in &self.specs {
            match library::find(&spec.library, &Scope::Pid(pid)) {
                Ok(Found::File(path)) => ids.extend(self.table.add_file(spec, &path)?),
                Err(ProbeError::NotMapped { .. }) if wait => later.push(spec.clone()),
                Ok(Found::Later { .. }) => later.push(spec.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok((ids, later, 0))
    }

    /// Attaches to the libraries stopped processes have just mapped, and resumes them
    /// (also when attaching failed).
    fn attach_mapped(&mut self, stopped: Vec<u32>) {
        for pid in stopped {
            self.attach_pending(pid);
            pending::resume(pid);
        }
    }

    /// Attaches to the libraries processes found by --comm have mapped since the last scan.
    fn attach_rescanned(&mut self) {
        let waiting: Vec<u32> = self
            .processes
            .iter()
            .filter(|(_, p)| {
                p.exited.is_none() && p.pending.as_ref().is_some_and(|w| !w.is_empty())
            })
            .map(|(&pid, _)| pid)
            .collect();
        for pid in waiting {
            self.attach_pending(pid);
        }
    }

    fn attach_pending(&mut self, pid: u32) {
        let Some(process) = self.processes.get_mut(&pid) else {
            return;
        };
        let Some(waiting) = process.pending.as_mut() else {
            return;
        };
        match pending::attach_mapped(
            &mut self.ebpf,
            &self.costs,
            &mut self.table,
            waiting,
            &mut process.links,
            self.args.probes.max_functions,
        ) {
            Ok((resolved, failed)) => super::report_mapped(pid, &resolved, &failed),
            Err(e) => eprintln!("xlperf: pid {pid}: attaching to what it mapped: {e}"),
        }
    }

    /// `--all`: the --ffi functions in every process that maps their libraries, and with
    /// --nif the NIFs of every BEAM running the `erl` in PATH. Processes are known from
    /// their records.
    fn add_all(&mut self) -> anyhow::Result<()> {
        let mut ids = Vec::new();
        for spec in &self.specs {
            ids.extend(self.table.add(spec, &Scope::All)?);
        }
        let mut links = Links::default();
        attach::attach_ffi(
            &mut self.ebpf,
            &self.costs,
            &self.table,
            &[Attachment::all(ids)],
            &mut links,
        )?;
        if self.args.probes.nif {
            let vm = beam::vm_for_program(std::path::Path::new("erl"))?;
            let mut nif = NifTracing::prepare(&vm, self.args.probes.nif_mode)?;
            nif.costs = self.costs;
            if matches!(nif.mode, beam::tracing::Mode::Fptr { .. }) {
                return Err(ProbeError::FptrNeedsProcess.into());
            }
            nif.attach(
                &mut self.ebpf,
                &mut self.table,
                UProbeScope::AllProcesses,
                None,
            )?;
            self.names.nif_site = nif.dispatch_site();
            self.nif = Some(nif);
        }
        // Held for the whole run under pid 0, which never exits.
        self.processes.insert(
            0,
            Process {
                links,
                exited: None,
                pending: None,
            },
        );
        Ok(())
    }

    /// Notes processes gone, and drops those gone longer than the grace period: their
    /// probes and their series.
    fn retire(&mut self) {
        let now = Instant::now();
        let mut forget = HashSet::new();
        for (&pid, process) in &mut self.processes {
            if pid == 0 {
                continue;
            }
            match process.exited {
                None if !std::path::Path::new(&format!("/proc/{pid}")).exists()
                    || target::comm(pid) == "?" =>
                {
                    process.exited = Some(now);
                }
                Some(at) if now.duration_since(at) >= self.args.grace => {
                    forget.insert(pid);
                }
                _ => {}
            }
        }
        for pid in forget {
            if let Some(process) = self.processes.remove(&pid) {
                drop(process.links);
            }
            lock(&self.exposition).forget(pid);
        }
    }

    fn rescan(&mut self) {
        if let Some(nif) = self.nif.as_mut()
            && let Err(e) = nif.rescan(&mut self.ebpf, &mut self.table)
        {
            log::warn!("probing newly loaded NIF libraries: {e}");
        }
    }

    /// Takes in every record available now.
    fn drain(&mut self, records: &mut CallRecords) {
        let mut batch = self
            .names
            .drain(records, &mut self.table, self.nif.as_mut());
        // Serving needs no thread names: they would only pile up over days.
        self.names.threads.clear();
        self.attach_mapped(std::mem::take(&mut batch.stopped));
        for call in &batch.calls {
            // --all: processes are known from their records.
            self.processes
                .entry(call.record.pid)
                .or_insert_with(|| Process {
                    links: Links::default(),
                    exited: None,
                    pending: None,
                });
        }
        let mut exposition = lock(&self.exposition);
        if let Err(e) = sink::feed(&batch, &self.names, &mut [&mut *exposition]) {
            log::warn!("updating the metrics: {e:#}");
        }
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

/// xlperf's resident memory, bytes.
fn own_rss() -> i64 {
    let pages: i64 = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

//! The allocation part of `cargo xtask bench`: malloc(64)/free pairs per second under no
//! tracer, `xlperf record --alloc`, xlperf's empty aya programs on the same sites (the
//! floor: a uprobe + uretprobe on malloc and a uprobe on free, doing nothing), and
//! bpftrace keeping the same live-allocation map. The runs alternate (one of each per
//! round) so drift on a shared machine hits them alike; every figure is a median over the
//! rounds, all in one invocation. Where each tracer put its malloc and free breakpoints is
//! read from the target's memory, not taken from the tracer's word.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Read, Write as _},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use super::{TARGET_CPU, TRACER_CPU, pinned};
use crate::{cmd, root};

/// How long a tracer may take to attach, and to exit once its target has finished.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of malloc and free compared before and after a tracer attaches.
const WATCHED: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tracer {
    None,
    Xlperf,
    /// `xlperf-bench-probe`: the empty entry + return programs on malloc and the empty
    /// entry program on free, this many bytes into each.
    Empty {
        malloc: usize,
        free: usize,
    },
    Bpftrace,
}

impl Tracer {
    fn label(self) -> &'static str {
        match self {
            Self::None => "no tracer",
            Self::Xlperf => "xlperf --alloc",
            Self::Empty { .. } => "empty aya",
            Self::Bpftrace => "bpftrace",
        }
    }
}

/// The programs the runs start.
pub struct Bins<'a> {
    pub xlperf: &'a Path,
    pub bench_probe: &'a Path,
}

/// Where a tracer's breakpoints appeared: bytes past the start of malloc and of free.
#[derive(Debug, Clone, Copy, Default)]
struct Sites {
    malloc: Option<usize>,
    free: Option<usize>,
}

impl Sites {
    fn describe(self) -> String {
        let show = |s: Option<usize>| s.map_or_else(|| "?".to_owned(), |o| format!("+{o}"));
        format!("malloc{} free{}", show(self.malloc), show(self.free))
    }
}

/// One tracer's results over the rounds.
#[derive(Default)]
struct Series {
    ns_per_pair: Vec<f64>,
    sites: Sites,
}

impl Series {
    fn median(&self) -> Option<f64> {
        let mut v = self.ns_per_pair.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

#[derive(Default)]
struct Results {
    none: Series,
    xlperf: Series,
    empty: Series,
    bpftrace: Series,
}

pub fn run(bins: &Bins<'_>, dir: &Path, quick: bool) -> anyhow::Result<()> {
    let target = dir.join("alloc_target");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&target)
            .arg(root().join("xtask/bench/alloc_target.c"))
            .arg("-ldl"),
    )?;
    let (pairs, runs) = if quick { (10_000, 1) } else { (200_000, 5) };
    let has_alloc = xlperf_has_alloc(bins.xlperf)?;

    // Which libc the target maps: bpftrace and the empty programs are pointed at that file.
    let libc = AllocTarget::start(&target, pairs)?.libc_path()?;
    println!(
        "\nxlperf alloc bench: malloc(64) + free pairs, {pairs} pairs per run, median of {runs} run(s); {}",
        libc.display()
    );

    // The exactness run first: if xlperf cannot trace, say so before timing anything.
    // It also shows where xlperf puts its probes, for the empty programs.
    let counted = if has_alloc {
        Some(exactness_run(bins, &target, &libc, pairs)?)
    } else {
        None
    };
    let empty = counted.as_ref().and_then(|c| {
        Some(Tracer::Empty {
            malloc: c.seen.malloc?,
            free: c.seen.free?,
        })
    });

    let mut results = Results::default();
    for _ in 0..runs {
        let round = [
            Some(Tracer::None),
            has_alloc.then_some(Tracer::Xlperf),
            empty,
            Some(Tracer::Bpftrace),
        ];
        for tracer in round.into_iter().flatten() {
            let (ns, sites, _) = one_run(bins, &target, &libc, pairs, tracer, false)?;
            let series = match tracer {
                Tracer::None => &mut results.none,
                Tracer::Xlperf => &mut results.xlperf,
                Tracer::Empty { .. } => &mut results.empty,
                Tracer::Bpftrace => &mut results.bpftrace,
            };
            series.ns_per_pair.push(ns as f64 / pairs as f64);
            series.sites = sites;
        }
    }
    print_results(&results, pairs, counted.as_ref());
    if !has_alloc {
        bail!(
            "`{} record --help` has no --alloc: this xlperf predates allocation tracing, so the \
             xlperf rows of the allocation bench could not be measured",
            bins.xlperf.display()
        );
    }
    Ok(())
}

fn xlperf_has_alloc(xlperf: &Path) -> anyhow::Result<bool> {
    let help = cmd::output(Command::new(xlperf).args(["record", "--help"]))?;
    Ok(help.contains("--alloc"))
}

/// What the `--json` run of xlperf counted, and where it put its probes.
struct Counted {
    alloc_count: u64,
    free_count: u64,
    /// From the summary's `alloc.probes[]`: offset and whether the kernel emulates the
    /// probed instruction, for malloc and free.
    malloc_site: Option<(u64, bool)>,
    free_site: Option<(u64, bool)>,
    /// Where its breakpoints appeared in the target's memory.
    seen: Sites,
}

/// One `xlperf record --alloc --json` run; checks that the summary's `processes[]` entry
/// for the target counted at least `pairs` allocations and frees (calls outside the loop
/// may be seen too, so not exactly), and returns the counts.
fn exactness_run(
    bins: &Bins<'_>,
    target: &Path,
    libc: &Path,
    pairs: u64,
) -> anyhow::Result<Counted> {
    let (_, seen, json) = one_run(bins, target, libc, pairs, Tracer::Xlperf, true)?;
    let (pid, json) = json.ok_or_else(|| anyhow!("xlperf --json printed no summary"))?;
    let process = json["processes"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["pid"].as_u64() == Some(u64::from(pid))))
        .ok_or_else(|| {
            anyhow!("xlperf's summary has no processes[] entry for pid {pid}: {json}")
        })?;
    let field = |name: &str| {
        process[name]
            .as_u64()
            .ok_or_else(|| anyhow!("pid {pid}'s processes[] entry has no {name}: {process}"))
    };
    let (alloc_count, free_count) = (field("alloc_count")?, field("free_count")?);
    if alloc_count < pairs || free_count < pairs {
        bail!(
            "xlperf counted {alloc_count} allocations and {free_count} frees in pid {pid}, \
             which made at least {pairs} of each: it missed calls"
        );
    }
    let site = |function: &str| {
        json["alloc"]["probes"].as_array().and_then(|probes| {
            probes.iter().find_map(|p| {
                (p["function"] == function)
                    .then(|| Some((p["offset"].as_u64()?, p["emulated"].as_bool()?)))
                    .flatten()
            })
        })
    };
    Ok(Counted {
        alloc_count,
        free_count,
        malloc_site: site("malloc"),
        free_site: site("free"),
        seen,
    })
}

fn print_results(r: &Results, pairs: u64, counted: Option<&Counted>) {
    let base = r.none.median();
    let added = |s: &Series| Some((s.median()? - base?).max(0.0));
    println!(
        "\n{:<15} {:>12} {:>10} {:>14}   breakpoints seen in the target",
        "run", "pairs/s", "ns/pair", "added ns/pair"
    );
    for (tracer, s) in [
        (Tracer::None, &r.none),
        (Tracer::Xlperf, &r.xlperf),
        (Tracer::Empty { malloc: 0, free: 0 }, &r.empty),
        (Tracer::Bpftrace, &r.bpftrace),
    ] {
        let line = match s.median() {
            Some(m) => {
                let (add, sites) = match (tracer, added(s)) {
                    (Tracer::None, _) => ("-".to_owned(), String::new()),
                    (_, Some(a)) => (format!("{a:+.1}"), s.sites.describe()),
                    (_, None) => ("n/a".to_owned(), s.sites.describe()),
                };
                format!(
                    "{:<15} {:>12} {:>10.1} {add:>14}   {sites}",
                    tracer.label(),
                    per_second(m),
                    m,
                )
            }
            None => format!(
                "{:<15} {:>12} {:>10} {:>14}   (not run: xlperf has no --alloc)",
                tracer.label(),
                "n/a",
                "n/a",
                "n/a"
            ),
        };
        println!("{}", line.trim_end());
    }

    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".to_owned(),
    };
    println!("\nratios (same run):");
    println!(
        "  xlperf / no tracer, ns per pair:                  {}",
        ratio(r.xlperf.median(), base)
    );
    println!(
        "  xlperf / empty aya at the same sites, added ns:   {}  (budget: within 1.10x)",
        ratio(added(&r.xlperf), added(&r.empty))
    );
    println!(
        "  bpftrace / xlperf, added ns per pair:             {}",
        ratio(added(&r.bpftrace), added(&r.xlperf))
    );
    if let Some(c) = counted {
        println!(
            "\nxlperf --alloc --json counted {} allocations and {} frees in the target \
             ({pairs} pairs in the timed loop).",
            c.alloc_count, c.free_count
        );
        let site = |s: Option<(u64, bool)>| match s {
            Some((offset, true)) => format!("+{offset} (emulated)"),
            Some((offset, false)) => format!("+{offset} (single-stepped)"),
            None => "not listed".to_owned(),
        };
        println!(
            "its summary's probe sites: malloc {}, free {}",
            site(c.malloc_site),
            site(c.free_site)
        );
    }
}

fn per_second(ns_per_pair: f64) -> String {
    let rate = 1e9 / ns_per_pair;
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

type Json = Option<(u32, serde_json::Value)>;

/// Starts the target (waiting), attaches `tracer`, lets the target run; returns its
/// elapsed ns for all pairs, where the tracer's breakpoints are, and with `json` (xlperf
/// only) the target's pid and xlperf's JSON summary.
fn one_run(
    bins: &Bins<'_>,
    target: &Path,
    libc: &Path,
    pairs: u64,
    tracer: Tracer,
    json: bool,
) -> anyhow::Result<(u64, Sites, Json)> {
    let mut t = AllocTarget::start(target, pairs)?;
    let pid = t.child.id();
    let before = t.watched_bytes()?;
    // Each process to start, with the line it prints once attached (if it prints one).
    let mut commands: Vec<(Command, Option<&'static str>)> = Vec::new();
    match tracer {
        Tracer::None => {}
        Tracer::Xlperf => {
            let mut c = pinned(TRACER_CPU, bins.xlperf);
            c.args(["record", "--alloc", "-p", &pid.to_string()]);
            if json {
                c.arg("--json");
            }
            commands.push((c, Some("probes on")));
        }
        Tracer::Empty { malloc, free } => {
            for (function, offset, mode) in [("malloc", malloc, "pair"), ("free", free, "entry")] {
                let mut c = pinned(TRACER_CPU, bins.bench_probe);
                c.arg(pid.to_string())
                    .arg(libc)
                    .args([function, &offset.to_string(), mode]);
                commands.push((c, Some("attached")));
            }
        }
        Tracer::Bpftrace => {
            // bpftrace 0.17's -p does not restrict a library's uprobes to that process
            // (every process's malloc hits them): the pid predicate keeps other
            // processes' allocations out of the maps.
            let lib = libc.display();
            let program = format!(
                "uprobe:{lib}:malloc /pid == {pid}/ {{ @sz[tid] = arg0; }} \
                 uretprobe:{lib}:malloc /pid == {pid} && @sz[tid]/ {{ @live[retval] = @sz[tid]; delete(@sz[tid]); }} \
                 uprobe:{lib}:free /pid == {pid} && @live[arg0]/ {{ delete(@live[arg0]); }}"
            );
            let mut c = pinned(TRACER_CPU, Path::new("bpftrace"));
            c.args(["-p", &pid.to_string(), "-e", &program]);
            commands.push((c, None));
        }
    }
    let mut running = Vec::new();
    for (mut c, marker) in commands {
        running.push(Running::spawn(&mut c, marker)?);
    }
    for r in &mut running {
        r.wait_for_marker(tracer)?;
    }
    let sites = if running.is_empty() {
        Sites::default()
    } else {
        wait_for_breakpoints(&t, &before, &mut running, tracer)?
    };
    if tracer == Tracer::Bpftrace {
        // Its entry probe may be in while the return probe is still being attached.
        thread::sleep(Duration::from_millis(300));
    }
    let ns = t.go()?;
    let mut summary = None;
    for r in running {
        let (status, stdout, stderr) = r.stop()?;
        if tracer == Tracer::Xlperf {
            if !status.success() {
                bail!("xlperf record --alloc exited {status} after SIGINT: {stderr}");
            }
            if json {
                let v = serde_json::from_slice(&stdout).with_context(|| {
                    format!(
                        "xlperf's JSON summary: {}",
                        String::from_utf8_lossy(&stdout)
                    )
                })?;
                summary = Some((pid, v));
            }
        }
    }
    Ok((ns, sites, summary))
}

/// Waits until breakpoints are in both malloc's and free's first bytes in the target's
/// memory (put there by any of `running`); returns where.
fn wait_for_breakpoints(
    target: &AllocTarget,
    before: &[[u8; WATCHED]; 2],
    running: &mut [Running],
    tracer: Tracer,
) -> anyhow::Result<Sites> {
    let deadline = Instant::now() + ATTACH_TIMEOUT;
    loop {
        let now = target.watched_bytes()?;
        let changed = |i: usize| before[i].iter().zip(now[i]).position(|(a, b)| *a != b);
        let sites = Sites {
            malloc: changed(0),
            free: changed(1),
        };
        if sites.malloc.is_some() && sites.free.is_some() {
            return Ok(sites);
        }
        for r in running.iter_mut() {
            r.exited_early(tracer)?;
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not put breakpoints in malloc and free within {} s (saw {})",
                tracer.label(),
                ATTACH_TIMEOUT.as_secs(),
                sites.describe()
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A tracer running in the background, its output read by two threads so it never
/// blocks on a full pipe; either stream may carry the line that says it is attached.
struct Running {
    child: Child,
    marker: Option<mpsc::Receiver<()>>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr: Option<JoinHandle<Vec<u8>>>,
}

impl Running {
    fn spawn(c: &mut Command, marker: Option<&'static str>) -> anyhow::Result<Self> {
        let mut child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", cmd::display(c)))?;
        let (Some(out), Some(err)) = (child.stdout.take(), child.stderr.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{}: no stdout or stderr pipe", cmd::display(c));
        };
        let (tx, rx) = mpsc::channel();
        let stdout = watch(out, marker, tx.clone());
        let stderr = watch(err, marker, tx);
        Ok(Self {
            child,
            marker: marker.map(|_| rx),
            stdout: Some(stdout),
            stderr: Some(stderr),
        })
    }

    /// Everything the tracer wrote on stderr, once it has exited.
    fn stderr_text(&mut self) -> String {
        let bytes = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }

    fn exited_early(&mut self, tracer: Tracer) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited before attaching ({status}): {}",
                tracer.label(),
                self.stderr_text()
            );
        }
        Ok(())
    }

    /// Waits for the line that says the tracer is attached (xlperf's "probes on": every
    /// probe is in), if it prints one.
    fn wait_for_marker(&mut self, tracer: Tracer) -> anyhow::Result<()> {
        let Some(marker) = self.marker.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + ATTACH_TIMEOUT;
        loop {
            match marker.recv_timeout(Duration::from_millis(20)) {
                Ok(()) => return Ok(()),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both streams closed without the marker: the tracer is exiting.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    thread::sleep(Duration::from_millis(20));
                }
            }
            self.exited_early(tracer)?;
            if Instant::now() > deadline {
                bail!(
                    "{} did not attach within {} s",
                    tracer.label(),
                    ATTACH_TIMEOUT.as_secs()
                );
            }
        }
    }

    /// Stops the tracer with SIGINT (it may have exited already, with its target) and
    /// returns its exit status and output.
    fn stop(mut self) -> anyhow::Result<(ExitStatus, Vec<u8>, String)> {
        if self.child.try_wait()?.is_none() {
            let pid = libc::pid_t::try_from(self.child.id())?;
            // SAFETY: signals a child we started and have not reaped, so the pid is still ours.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                bail!(
                    "tracer did not exit within {} s of SIGINT",
                    EXIT_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let stdout = self
            .stdout
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        let stderr = self.stderr_text();
        Ok((status, stdout, stderr))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Reads `stream` to its end on a thread, sending on `tx` for each line holding `marker`;
/// the thread returns everything read.
fn watch(
    stream: impl Read + Send + 'static,
    marker: Option<&'static str>,
    tx: mpsc::Sender<()>,
) -> JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut seen = Vec::new();
        let mut line = Vec::new();
        while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
            if marker.is_some_and(|m| String::from_utf8_lossy(&line).contains(m)) {
                let _ = tx.send(());
            }
            seen.append(&mut line);
        }
        seen
    })
}

/// The benchmark program, started and waiting for its go line.
struct AllocTarget {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    mem: File,
    /// The addresses of the malloc and free it calls.
    functions: [u64; 2],
}

impl AllocTarget {
    fn start(binary: &Path, pairs: u64) -> anyhow::Result<Self> {
        let mut child = pinned(TARGET_CPU, binary)
            .args([&pairs.to_string(), "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting alloc_target")?;
        match Self::handshake(&mut child) {
            Ok((stdout, mem, functions)) => Ok(Self {
                stdin: child.stdin.take(),
                child,
                stdout,
                mem,
                functions,
            }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }

    /// Reads the "ready MALLOC FREE" line, then opens the target's memory (only then:
    /// before it the pid may still be taskset's, not yet exec'd).
    fn handshake(child: &mut Child) -> anyhow::Result<(BufReader<ChildStdout>, File, [u64; 2])> {
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let mut words = line.split_whitespace();
        let addr = |w: Option<&str>| {
            w.and_then(|w| u64::from_str_radix(w.trim_start_matches("0x"), 16).ok())
                .filter(|&a| a != 0)
        };
        let functions = match (words.next(), addr(words.next()), addr(words.next())) {
            (Some("ready"), Some(malloc), Some(free)) => [malloc, free],
            _ => bail!("alloc_target said {line:?} instead of \"ready MALLOC FREE\""),
        };
        let mem = File::open(format!("/proc/{}/mem", child.id()))
            .context("opening the target's memory")?;
        Ok((stdout, mem, functions))
    }

    /// The first bytes of malloc and of free, as the target sees them now.
    fn watched_bytes(&self) -> anyhow::Result<[[u8; WATCHED]; 2]> {
        let mut out = [[0u8; WATCHED]; 2];
        for (bytes, &addr) in out.iter_mut().zip(&self.functions) {
            self.mem
                .read_exact_at(bytes, addr)
                .context("reading the target's memory")?;
        }
        Ok(out)
    }

    /// The file the target's malloc lives in, from its memory maps.
    fn libc_path(&self) -> anyhow::Result<PathBuf> {
        let maps = std::fs::read_to_string(format!("/proc/{}/maps", self.child.id()))?;
        let malloc = self.functions[0];
        maps.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let (start, end) = f.next()?.split_once('-')?;
                let start = u64::from_str_radix(start, 16).ok()?;
                let end = u64::from_str_radix(end, 16).ok()?;
                let path = f.nth(4)?;
                (start <= malloc && malloc < end && path.starts_with('/')).then(|| path.into())
            })
            .ok_or_else(|| anyhow!("no file mapping holds malloc ({malloc:#x}) in alloc_target"))
    }

    /// Lets the target run its pairs; returns the elapsed ns it measured.
    fn go(&mut self) -> anyhow::Result<u64> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n")?;
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        self.child.wait()?;
        line.trim()
            .parse()
            .with_context(|| format!("alloc_target printed {line:?}"))
    }
}

impl Drop for AllocTarget {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

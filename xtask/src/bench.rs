//! `cargo xtask bench`: what one traced call costs, for a function whose first
//! instruction the kernel emulates (`push`) and one it single-steps (`endbr64`), under
//! no probe, an empty aya uprobe (entry only, and entry+return) at the symbol and at
//! xlperf's chosen site, xlperf itself, and bpftrace (uprobe + uretprobe + hist). All in
//! one run on one machine; every number is the mean over N calls, median of the runs.
//! Then the allocation bench (`alloc`): malloc/free pairs per second under no tracer,
//! `xlperf record --alloc`, empty aya probes on the same sites, and bpftrace.

use std::{
    fs::File,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::FileExt as _,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};

use crate::{cmd, root, setup};

mod alloc;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tracer {
    None,
    EmptyEntry { offset: u64 },
    EmptyPair { offset: u64 },
    Xlperf,
    Bpftrace,
}

struct Paths {
    target: PathBuf,
    xlperf: PathBuf,
    bench_probe: PathBuf,
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    cmd::require_root("bench")?;
    setup::build_toolchain()?;
    if setup::which("bpftrace").is_err() {
        setup::test_toolchains()?;
    }
    let bin = cmd::build_xlperf(true)?;
    let dir = root().join("target/xlperf-bench");
    std::fs::create_dir_all(&dir)?;
    let target = dir.join("bench_target");
    // -no-pie: the functions' addresses in memory are their link-time addresses.
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-no-pie", "-o"])
            .arg(&target)
            .arg(root().join("xtask/bench/bench_target.c")),
    )?;
    let paths = Paths {
        target,
        xlperf: bin.join("xlperf"),
        bench_probe: bin.join("xlperf-bench-probe"),
    };
    let (calls, runs) = if quick { (10_000, 1) } else { (100_000, 5) };

    println!(
        "\nxlperf bench: ns added per call ({calls} calls per run, median of {runs} run(s)); kernel {}",
        kernel()
    );
    let mut results = Vec::new();
    for (function, label) in [("bench_push", "push"), ("bench_endbr", "endbr64")] {
        let row = measure_function(&paths, function, calls, runs)?;
        results.push((label, row));
    }
    print_results(&results, calls);
    let bins = alloc::Bins {
        xlperf: &paths.xlperf,
        bench_probe: &paths.bench_probe,
    };
    alloc::run(&bins, &dir, quick)
}

struct Row {
    baseline: f64,
    empty_entry_sym: f64,
    empty_pair_sym: f64,
    empty_pair_site: f64,
    xlperf: f64,
    bpftrace: f64,
    site: u64,
}

fn measure_function(paths: &Paths, function: &str, calls: u64, runs: usize) -> anyhow::Result<Row> {
    let arg = if function == "bench_push" {
        "push"
    } else {
        "endbr"
    };
    let median = |tracer: Tracer| -> anyhow::Result<(f64, Option<serde_json::Value>)> {
        let mut values = Vec::new();
        let mut json = None;
        for _ in 0..runs {
            let (ns, out) = one_run(paths, function, arg, calls, tracer)?;
            values.push(ns);
            json = out.or(json);
        }
        values.sort_by(f64::total_cmp);
        Ok((values[values.len() / 2], json))
    };
    let (baseline, _) = median(Tracer::None)?;
    let (xlperf, json) = median(Tracer::Xlperf)?;
    let json = json.ok_or_else(|| anyhow!("xlperf printed no summary"))?;
    let row = json["boundaries"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["function"] == function))
        .ok_or_else(|| anyhow!("xlperf traced no call of {function}: {json}"))?;
    if row["calls"].as_u64() != Some(calls) {
        bail!(
            "xlperf counted {} calls of {function}, expected {calls}",
            row["calls"]
        );
    }
    let site = row["probe_offset"].as_u64().unwrap_or(0);
    let (empty_entry_sym, _) = median(Tracer::EmptyEntry { offset: 0 })?;
    let (empty_pair_sym, _) = median(Tracer::EmptyPair { offset: 0 })?;
    let empty_pair_site = if site == 0 {
        empty_pair_sym
    } else {
        median(Tracer::EmptyPair { offset: site })?.0
    };
    let (bpftrace, _) = median(Tracer::Bpftrace)?;
    let added = |v: f64| (v - baseline).max(0.0);
    Ok(Row {
        baseline,
        empty_entry_sym: added(empty_entry_sym),
        empty_pair_sym: added(empty_pair_sym),
        empty_pair_site: added(empty_pair_site),
        xlperf: added(xlperf),
        bpftrace: added(bpftrace),
        site,
    })
}

fn print_results(results: &[(&str, Row)], calls: u64) {
    println!(
        "\n{:<9} {:>9} {:>13} {:>13} {:>15} {:>9} {:>9}   xlperf site",
        "function", "no probe", "empty entry", "empty pair", "empty pair", "xlperf", "bpftrace"
    );
    println!(
        "{:<9} {:>9} {:>13} {:>13} {:>15} {:>9} {:>9}",
        "", "(ns/call)", "@symbol", "@symbol", "@xlperf site", "", ""
    );
    for (label, r) in results {
        println!(
            "{label:<9} {:>9.1} {:>+13.0} {:>+13.0} {:>+15.0} {:>+9.0} {:>+9.0}   +{} bytes",
            r.baseline,
            r.empty_entry_sym,
            r.empty_pair_sym,
            r.empty_pair_site,
            r.xlperf,
            r.bpftrace,
            r.site
        );
    }
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let push = &results[0].1;
    let endbr = &results[1].1;
    println!("\nratios (same run):");
    println!(
        "  xlperf, endbr64 function / push function:          {:.2}x  (goal: within 2x)",
        ratio(endbr.xlperf, push.xlperf)
    );
    for (label, r) in results {
        println!(
            "  {label:<8} xlperf / empty aya pair at the same site: {:.2}x  (budget: within 1.10x)",
            ratio(r.xlperf, r.empty_pair_site)
        );
        println!(
            "  {label:<8} bpftrace / xlperf:                      {:.2}x",
            ratio(r.bpftrace, r.xlperf)
        );
        println!(
            "  {label:<8} empty pair at the symbol / xlperf:       {:.2}x  (what choosing the probe site saves)",
            ratio(r.empty_pair_sym, r.xlperf)
        );
    }
    println!("\nxlperf counted exactly {calls} calls in every xlperf run.");
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Starts the target (waiting), attaches `tracer`, lets the target run, returns its
/// mean ns per call and, for xlperf, the JSON summary.
fn one_run(
    paths: &Paths,
    function: &str,
    arg: &str,
    calls: u64,
    tracer: Tracer,
) -> anyhow::Result<(f64, Option<serde_json::Value>)> {
    let mut target = Target::start(&paths.target, arg, calls)?;
    let pid = target.child.id().to_string();
    let binary = paths.target.display().to_string();
    let mut tracer_cmd = match tracer {
        Tracer::None => None,
        Tracer::EmptyEntry { offset } | Tracer::EmptyPair { offset } => {
            let mode = if matches!(tracer, Tracer::EmptyEntry { .. }) {
                "entry"
            } else {
                "pair"
            };
            let mut c = pinned(TRACER_CPU, &paths.bench_probe);
            c.args([
                pid.as_str(),
                binary.as_str(),
                function,
                &offset.to_string(),
                mode,
            ]);
            Some(c)
        }
        Tracer::Xlperf => {
            let mut c = pinned(TRACER_CPU, &paths.xlperf);
            c.args([
                "record",
                "--json",
                "-p",
                &pid,
                "--ffi",
                &format!("{binary}:{function}"),
            ]);
            Some(c)
        }
        Tracer::Bpftrace => {
            let program = format!(
                "uprobe:{binary}:{function} {{ @s[tid] = nsecs; }} \
                 uretprobe:{binary}:{function} /@s[tid]/ {{ @h = hist(nsecs - @s[tid]); delete(@s[tid]); }}"
            );
            let mut c = pinned(TRACER_CPU, Path::new("bpftrace"));
            c.args(["-p", &pid, "-e", &program]);
            Some(c)
        }
    };
    let mut tracer_child = match tracer_cmd.as_mut() {
        Some(c) => Some(
            c.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .with_context(|| format!("starting {}", cmd::display(c)))?,
        ),
        None => None,
    };
    if let Some(child) = tracer_child.as_mut() {
        wait_for_probe(&target, function, child)?;
    }
    let ns = target.go()?;
    let mut json = None;
    if let Some(mut child) = tracer_child {
        if tracer == Tracer::Bpftrace {
            // SAFETY: signals a child we started.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tracer {tracer:?} did not exit after its target");
            }
            thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output()?;
        if !out.status.success() && tracer != Tracer::Bpftrace {
            bail!(
                "tracer {tracer:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        if tracer == Tracer::Xlperf {
            json = Some(serde_json::from_slice(&out.stdout).context("xlperf JSON")?);
        }
    }
    Ok((ns, json))
}

/// Waits until an int3 is in the function's first bytes in the target's memory (the
/// probe is installed), then a moment for the second probe of a pair.
fn wait_for_probe(target: &Target, function: &str, tracer: &mut Child) -> anyhow::Result<()> {
    let addr = target.symbol_address(function)?;
    let mem =
        File::open(format!("/proc/{}/mem", target.child.id())).context("open target memory")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut bytes = [0u8; 8];
        mem.read_exact_at(&mut bytes, addr)
            .context("read target memory")?;
        if bytes.contains(&0xcc) {
            thread::sleep(Duration::from_millis(300));
            return Ok(());
        }
        if let Some(status) = tracer.try_wait()? {
            let mut err = String::new();
            if let Some(mut e) = tracer.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            bail!("tracer exited before attaching ({status}): {err}");
        }
        if Instant::now() > deadline {
            bail!("tracer did not attach within 60 s");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The target runs on one CPU and every tracer's userspace on another, as in the
/// kernel's own uprobe benchmarks: the number measured is the cost on the traced thread,
/// not how the scheduler happened to share two cores with the tracer's reader.
const TARGET_CPU: usize = 0;
const TRACER_CPU: usize = 1;

fn pinned(cpu: usize, program: &Path) -> Command {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    if cpus < 2 || setup::which("taskset").is_err() {
        return Command::new(program);
    }
    let mut c = Command::new("taskset");
    c.args(["-c", &cpu.to_string()]).arg(program);
    c
}

struct Target {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    binary: PathBuf,
}

impl Target {
    fn start(binary: &Path, arg: &str, calls: u64) -> anyhow::Result<Self> {
        let mut child = pinned(TARGET_CPU, binary)
            .args([arg, &calls.to_string(), "--wait"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting bench_target")?;
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("bench_target said {line:?} instead of ready");
        }
        Ok(Self {
            child,
            stdin,
            stdout,
            binary: binary.to_owned(),
        })
    }

    fn symbol_address(&self, function: &str) -> anyhow::Result<u64> {
        let nm = cmd::output(Command::new("nm").arg(&self.binary))?;
        nm.lines()
            .find_map(|l| {
                let mut f = l.split_whitespace();
                let addr = f.next()?;
                let name = f.nth(1)?;
                (name == function)
                    .then(|| u64::from_str_radix(addr, 16).ok())
                    .flatten()
            })
            .ok_or_else(|| anyhow!("{function} not in nm output"))
    }

    fn go(&mut self) -> anyhow::Result<f64> {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n")?;
        }
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        self.child.wait()?;
        line.trim()
            .parse()
            .with_context(|| format!("bench_target printed {line:?}"))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

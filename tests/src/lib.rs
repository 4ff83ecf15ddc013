//! Helpers for xlperf's privileged integration tests: build the workloads, run the
//! xlperf binary, read its JSON summary.
//!
//! Every test traces processes it starts itself and asserts exact counts, so tests can
//! run in parallel: uprobes are scoped to the traced pid.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod alloc;
pub mod beam;
pub mod kfunc;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The xlperf binary under test: $XLPERF_BIN (set by `cargo xtask test`) or the debug build.
pub fn xlperf_bin() -> PathBuf {
    let bin = std::env::var_os("XLPERF_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/xlperf"));
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Where this test binary builds `kind` workloads: one directory per test binary, so
/// binaries never share half-written files and reruns reuse (overwrite) the same place.
pub(crate) fn build_dir(kind: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("tests");
    let test = stem.split('-').next().unwrap_or(stem);
    let dir = root()
        .join("target/xlperf-workloads")
        .join(format!("{kind}-{test}"));
    std::fs::create_dir_all(&dir).expect("create workload dir");
    dir
}

pub(crate) fn workload_src(rel: &str) -> PathBuf {
    root().join("tests/workloads").join(rel)
}

pub(crate) fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The C workloads: libxlcalc.so, c_driver, early, threads, dl_driver; libxlleaf.so
/// and leaf_driver (the same work behind an emulated and a single-stepped probe site);
/// libxlhidden.so and a stripped copy (a function with no symbol).
pub struct CWorkloads {
    pub lib: PathBuf,
    pub driver: PathBuf,
    pub early: PathBuf,
    pub threads: PathBuf,
    pub dl_driver: PathBuf,
    pub leaf_lib: PathBuf,
    pub leaf_driver: PathBuf,
    pub hidden_lib: PathBuf,
    pub hidden_stripped: PathBuf,
}

pub fn c_workloads() -> &'static CWorkloads {
    static ONCE: OnceLock<CWorkloads> = OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = build_dir("c");
        let lib = dir.join("libxlcalc.so");
        let c = workload_src("c");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-g", "-shared", "-fPIC", "-o"])
                .arg(&lib)
                .arg(c.join("xlcalc.c")),
        );
        let link = |name: &str| {
            let out = dir.join(name);
            run_ok(
                Command::new("gcc")
                    .args(["-O2", "-o"])
                    .arg(&out)
                    .arg(c.join(format!("{name}.c")))
                    .arg(format!("-L{}", dir.display()))
                    .args(["-lxlcalc", "-lpthread"])
                    .arg(format!("-Wl,-rpath,{}", dir.display())),
            );
            out
        };
        let driver = link("c_driver");
        let early = link("early");
        let threads = link("threads");
        let dl_driver = dir.join("dl_driver");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&dl_driver)
                .arg(c.join("dl_driver.c"))
                .arg("-ldl"),
        );
        let leaf_lib = dir.join("libxlleaf.so");
        run_ok(
            Command::new("gcc")
                .args(["-shared", "-fPIC", "-o"])
                .arg(&leaf_lib)
                .arg(c.join("xl_leaf.S")),
        );
        let leaf_driver = dir.join("leaf_driver");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&leaf_driver)
                .arg(c.join("leaf_driver.c"))
                .arg(format!("-L{}", dir.display()))
                .arg("-lxlleaf")
                .arg(format!("-Wl,-rpath,{}", dir.display())),
        );
        let hidden_lib = dir.join("libxlhidden.so");
        run_ok(
            Command::new("gcc")
                .args(["-O2", "-shared", "-fPIC", "-o"])
                .arg(&hidden_lib)
                .arg(c.join("xl_hidden.c")),
        );
        let hidden_stripped = dir.join("libxlhidden-stripped.so");
        run_ok(
            Command::new("strip")
                .args(["--strip-all", "-o"])
                .arg(&hidden_stripped)
                .arg(&hidden_lib),
        );
        CWorkloads {
            lib,
            driver,
            early,
            threads,
            dl_driver,
            leaf_lib,
            leaf_driver,
            hidden_lib,
            hidden_stripped,
        }
    })
}

/// Builds the Rust cdylib workload with cargo; returns the .so path.
pub fn rust_lib() -> PathBuf {
    let target_dir = build_dir("rust");
    run_ok(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "--manifest-path"])
            .arg(workload_src("rust/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir),
    );
    target_dir.join("release/libxlrust.so")
}

/// Builds the Nim library with Debian's nim; returns the .so path.
pub fn nim_lib() -> PathBuf {
    let dir = build_dir("nim");
    let out = dir.join("libxlnim.so");
    run_ok(
        Command::new("nim")
            .args(["c", "--app:lib", "-d:release", "--hints:off"])
            .arg(format!("--nimcache:{}", dir.join("cache").display()))
            .arg(format!("--out:{}", out.display()))
            .arg(workload_src("nim/xlnim.nim")),
    );
    out
}

/// Builds the Zig library with PyPI's ziglang; returns the .so path.
pub fn zig_lib() -> PathBuf {
    let dir = build_dir("zig");
    let out = dir.join("libxlzig.so");
    run_ok(
        Command::new("python3")
            .args([
                "-m",
                "ziglang",
                "build-lib",
                "-dynamic",
                "-O",
                "ReleaseSafe",
                "-fPIC",
            ])
            .arg(format!("-femit-bin={}", out.display()))
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .arg("--global-cache-dir")
            .arg(dir.join("global-cache"))
            .arg(workload_src("zig/xlzig.zig")),
    );
    out
}

pub fn python_script(name: &str) -> PathBuf {
    workload_src("python").join(name)
}

/// Runs xlperf with `args`; returns its output whatever the exit status.
pub fn xlperf(args: &[&str]) -> Output {
    Command::new(xlperf_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run xlperf")
}

/// Runs `xlperf record --json ARGS`, asserts success, returns the summary.
pub fn record_json(args: &[&str]) -> Value {
    let mut full = vec!["record", "--json"];
    full.extend_from_slice(args);
    let summary = summary_of(&xlperf(&full));
    assert_eq!(summary["schema_version"], 2);
    assert_eq!(summary["dropped"], 0, "records were dropped: {summary:#}");
    summary
}

/// The summary row of `function` in process `pid` (any pid if None).
pub fn row<'a>(summary: &'a Value, function: &str, pid: Option<u32>) -> Option<&'a Value> {
    summary["boundaries"]
        .as_array()?
        .iter()
        .find(|b| b["function"] == function && pid.is_none_or(|p| b["pid"] == p))
}

/// Calls of `function` recorded in the summary (0 when it has no row).
pub fn calls(summary: &Value, function: &str) -> u64 {
    row(summary, function, None).map_or(0, |b| b["calls"].as_u64().expect("calls is a number"))
}

pub fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A c_driver started with --wait: it has printed "ready" and waits for [`go`].
pub struct WaitingDriver {
    pub child: Child,
    stdin: Option<ChildStdin>,
}

impl WaitingDriver {
    pub fn start(adds: u64, nested: u64) -> Self {
        let w = c_workloads();
        let mut child = Command::new(&w.driver)
            .args([adds.to_string(), nested.to_string(), "--wait".into()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start c_driver");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("stdout"))
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(line.trim(), "ready");
        let stdin = child.stdin.take();
        Self { child, stdin }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the driver do its calls and waits for it to exit.
    pub fn go(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            stdin.write_all(b"go\n").expect("write go");
        }
        let status = self.child.wait().expect("wait driver");
        assert!(status.success(), "c_driver failed: {status}");
    }
}

impl Drop for WaitingDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts xlperf in the background and waits until its probes are attached (its
/// "probes on" line on stderr). Returns the child and the stderr seen so far.
pub fn spawn_attached(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(xlperf_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xlperf");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut seen = String::new();
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            seen.push_str(&line);
            if line.contains("probes on") {
                let _ = tx.send(seen.clone());
            }
            line.clear();
        }
        let _ = tx.send(seen);
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("xlperf did not attach within 60 s");
    assert!(seen.contains("probes on"), "xlperf did not attach:\n{seen}");
    (child, seen)
}

/// File offset of `function`'s first byte in the ELF file `lib`.
pub fn function_file_offset(lib: &Path, function: &str) -> u64 {
    use object::{Object as _, ObjectSegment as _, ObjectSymbol as _};
    let data = std::fs::read(lib).expect("read library");
    let file = object::File::parse(&*data).expect("parse ELF");
    let vaddr = file
        .dynamic_symbols()
        .find(|s| s.name() == Ok(function))
        .unwrap_or_else(|| panic!("{function} not in {}", lib.display()))
        .address();
    file.segments()
        .find_map(|seg| {
            let (offset, size) = seg.file_range();
            (vaddr >= seg.address() && vaddr - seg.address() < size)
                .then(|| vaddr - seg.address() + offset)
        })
        .expect("symbol in a segment")
}

/// The byte at file offset `offset` of `lib` as mapped in process `pid`: 0xCC (int3)
/// while a uprobe is installed there, the file's own byte otherwise.
pub fn mapped_byte(pid: u32, lib: &Path, offset: u64) -> u8 {
    use std::os::unix::fs::FileExt as _;
    let lib = std::fs::canonicalize(lib).expect("canonical lib");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("maps");
    let addr = maps
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || Path::new(f[5]) != lib {
                return None;
            }
            let (start, end) = f[0].split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            let map_off = u64::from_str_radix(f[2], 16).ok()?;
            (offset >= map_off && offset - map_off < end - start).then(|| start + offset - map_off)
        })
        .unwrap_or_else(|| {
            panic!(
                "offset {offset:#x} of {} not mapped in {pid}",
                lib.display()
            )
        });
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    let mut byte = [0u8];
    mem.read_exact_at(&mut byte, addr).expect("read mem");
    byte[0]
}

/// Waits for a background `xlperf record --json` to end, asserts success, returns its summary.
pub fn finish_json(xlperf: Child) -> Value {
    summary_of(&xlperf.wait_with_output().expect("xlperf output"))
}

/// The JSON summary of a successful `xlperf record --json` run.
pub fn summary_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "xlperf failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "xlperf printed no JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

//! `xlperf serve`: a real Prometheus server scrapes it and gets exact counts back through
//! its HTTP API; the exposition passes `promtool check metrics`; content negotiation;
//! processes picked up by name and dropped after the grace period; clear errors.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;
use xlperf_tests::{
    alloc::{WaitingAlloc, ffi},
    xlperf, xlperf_bin,
};

/// A port free now (bound and released: another process could take it, rarely).
fn free_port() -> u16 {
    // Below the kernel's ephemeral range (32768 and up): a port released here cannot be
    // handed to another test's `bind(:0)` before xlperf binds it. Spread by pid so that
    // concurrent test binaries do not pick the same ones.
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 500) as u16 * 24;
    loop {
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        assert!(n < 24, "no free port in {base}..{}", base + 24);
        if TcpListener::bind(("127.0.0.1", base + n)).is_ok() {
            return base + n;
        }
    }
}

/// GET `path` over HTTP/1.0; returns (head, body).
fn get(port: u16, path: &str, accept: Option<&str>) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.to_owned(), body.to_owned()))
}

/// Polls `check` every 200 ms until it returns Some, or panics after `within`.
fn eventually<T>(within: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A child killed (SIGINT first, so xlperf detaches cleanly) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid with a valid signal number.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `xlperf serve ARGS --listen 127.0.0.1:PORT` and waits for its "serving" line.
fn serve(args: &[&str], port: u16) -> Running {
    let listen = format!("127.0.0.1:{port}");
    let mut running = Running(
        Command::new(xlperf_bin())
            .arg("serve")
            // Before ARGS: after a `--` it would belong to the command.
            .args(["--listen", &listen])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start xlperf serve"),
    );
    let stderr = running.0.stderr.take().expect("stderr");
    let mut reader = BufReader::new(stderr);
    let mut line = String::new();
    let mut seen = String::new();
    while reader.read_line(&mut line).unwrap_or(0) > 0 {
        seen.push_str(&line);
        if line.contains("serving metrics") {
            // Keep draining stderr so xlperf never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = String::new();
                let _ = reader.read_to_string(&mut sink);
            });
            return running;
        }
        line.clear();
    }
    panic!("xlperf serve did not start:\n{seen}");
}

/// The value of the only sample of `metric` with label `pid`, from an exposition.
fn sample(exposition: &str, metric: &str, pid: u32) -> Option<f64> {
    let needle = format!("pid=\"{pid}\"");
    exposition
        .lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&needle))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xlperf-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const CALLS: u64 = 40;

#[test]
fn prometheus_scrapes_exact_counts_from_serve() {
    let mut driver = WaitingAlloc::start(&["sleep", "5", &CALLS.to_string()]);
    let pid = driver.pid();
    let port = free_port();
    let _xlperf = serve(
        &[
            "-p",
            &pid.to_string(),
            "--ffi",
            &ffi("xl_sleep_ms"),
            "--sched",
            "--grace",
            "120s",
        ],
        port,
    );

    // A real Prometheus server, scraping every second.
    let dir = temp_dir("prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: xlperf\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let prom_port = free_port();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus (cargo xtask setup installs it)"),
    );
    let query = |q: &str| -> Option<Value> {
        let (_, body) = get(prom_port, &format!("/api/v1/query?query={q}"), None)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["status"] == "success").then(|| v["data"]["result"].clone())
    };
    eventually(
        Duration::from_secs(60),
        "Prometheus to see xlperf up",
        || {
            let result = query("up")?;
            (result[0]["value"][1] == "1").then_some(())
        },
    );

    driver.finish();
    // Every call, exactly, through Prometheus' own API.
    let q = format!("xlperf_crossing_calls_total%7Bpid%3D%22{pid}%22%7D");
    let calls = eventually(Duration::from_secs(30), "the calls in Prometheus", || {
        let result = query(&q)?;
        let value: u64 = result[0]["value"][1].as_str()?.parse().ok()?;
        (value == CALLS).then_some(value)
    });
    assert_eq!(calls, CALLS);
    let result = query(&format!(
        "xlperf_crossing_duration_seconds_count%7Bpid%3D%22{pid}%22%7D"
    ))
    .expect("query");
    assert_eq!(result[0]["value"][1], CALLS.to_string());
    assert_eq!(result[0]["metric"]["function"], "xl_sleep_ms");
    assert_eq!(result[0]["metric"]["runtime"], "ffi");
    assert_eq!(result[0]["metric"]["comm"], "alloc_driver");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn exposition_passes_promtool_and_follows_the_accept_header() {
    let mut driver = WaitingAlloc::start(&["sleep", "2", "10"]);
    let pid = driver.pid();
    let port = free_port();
    let _xlperf = serve(
        &[
            "-p",
            &pid.to_string(),
            "--ffi",
            &ffi("xl_sleep_ms"),
            "--alloc",
            "--sched",
        ],
        port,
    );
    driver.finish();
    let (head, text) = eventually(Duration::from_secs(10), "10 calls exposed", || {
        let (head, body) = get(port, "/metrics", None)?;
        (sample(&body, "xlperf_crossing_calls_total", pid) == Some(10.0)).then_some((head, body))
    });
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(!text.contains("# EOF"), "{text}");
    for family in [
        "xlperf_crossing_duration_seconds_bucket",
        "xlperf_crossing_offcpu_seconds_total",
        "xlperf_records_processed_total",
        "xlperf_records_dropped_total",
        "xlperf_probe_cost_seconds",
        "xlperf_overhead_ratio",
        "xlperf_resident_memory_bytes",
        "xlperf_targets",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    // promtool, Prometheus' own linter, reads it and has nothing to say.
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (cargo xtask setup installs it)");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write exposition");
    let out = promtool.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let (head, openmetrics) = get(
        port,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .expect("get");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
    assert_eq!(
        sample(&openmetrics, "xlperf_crossing_calls_total", pid),
        Some(10.0)
    );
    let (_, health) = get(port, "/healthz", None).expect("healthz");
    assert_eq!(health, "ok\n");
}

#[test]
fn processes_are_picked_up_by_name_and_dropped_after_the_grace_period() {
    let port = free_port();
    let _xlperf = serve(
        &[
            "--comm",
            "alloc_driver",
            "--ffi",
            "libxlalloc.so:xl_sleep_ms",
            "--grace",
            "2s",
        ],
        port,
    );
    // Started after serve: found by name within its 1 s scan.
    let mut driver = WaitingAlloc::start(&["sleep", "2", "7"]);
    let pid = driver.pid();
    eventually(
        Duration::from_secs(20),
        "the new process to be traced",
        || {
            let (_, body) = get(port, "/metrics", None)?;
            body.lines().any(|l| l == "xlperf_targets 1").then_some(())
        },
    );
    driver.finish();
    eventually(Duration::from_secs(10), "its 7 calls", || {
        let (_, body) = get(port, "/metrics", None)?;
        (sample(&body, "xlperf_crossing_calls_total", pid) == Some(7.0)).then_some(())
    });
    eventually(
        Duration::from_secs(20),
        "its series to go after 2 s",
        || {
            let (_, body) = get(port, "/metrics", None)?;
            (!body.contains(&format!("pid=\"{pid}\""))).then_some(())
        },
    );
}

#[test]
fn serve_errors_are_one_clear_line() {
    let one_line = |args: &[&str], needle: &str| {
        let out = xlperf(args);
        assert!(!out.status.success(), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    };
    one_line(&["serve"], "needs targets");
    // A port already taken.
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    one_line(
        &[
            "serve",
            "-p",
            "1",
            "--ffi",
            "libc.so.6:getpid",
            "--listen",
            &addr,
        ],
        "cannot listen",
    );
}

#[test]
fn serve_runs_a_command_from_its_first_call_and_outlives_it() {
    let w = xlperf_tests::alloc::alloc_workloads();
    let port = free_port();
    let _xlperf = serve(
        &[
            "--ffi",
            &ffi("xl_sleep_ms"),
            "--",
            xlperf_tests::s(&w.driver),
            "sleep",
            "2",
            "9",
        ],
        port,
    );
    // Every call, from the first: the command was started under the probes.
    let body = eventually(Duration::from_secs(20), "9 calls, then no target", || {
        let (_, body) = get(port, "/metrics", None)?;
        let calls: f64 = body
            .lines()
            .find(|l| l.starts_with("xlperf_crossing_calls_total{"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (calls == 9.0 && body.lines().any(|l| l == "xlperf_targets 0")).then_some(body)
    });
    // The command has exited; its series stay for the grace period (60 s), named after it.
    assert!(body.contains("function=\"xl_sleep_ms\""), "{body}");
    assert!(body.contains("comm=\"alloc_driver\""), "{body}");
}

#[test]
fn serve_all_counts_a_process_that_starts_later() {
    let port = free_port();
    let _xlperf = serve(&["--all", "--ffi", &ffi("xl_sleep_ms")], port);
    let mut driver = WaitingAlloc::start(&["sleep", "2", "6"]);
    let pid = driver.pid();
    driver.finish();
    eventually(Duration::from_secs(10), "its 6 calls", || {
        let (_, body) = get(port, "/metrics", None)?;
        (sample(&body, "xlperf_crossing_calls_total", pid) == Some(6.0)).then_some(())
    });
}

#[test]
fn serve_attaches_to_a_library_a_command_loads_later_by_its_bare_name() {
    const N: u64 = 321;
    let c = xlperf_tests::c_workloads();
    let port = free_port();
    // dl_driver dlopens libxlcalc.so by a path no loader search knows: serve, like
    // record, attaches when the dynamic linker has mapped it, so no call is missed.
    let _xlperf = serve(
        &[
            "--ffi",
            "libxlcalc.so:xl_square",
            "--",
            xlperf_tests::s(&c.dl_driver),
            xlperf_tests::s(&c.lib),
            "xl_square",
            &N.to_string(),
        ],
        port,
    );
    eventually(Duration::from_secs(20), "every call of xl_square", || {
        let (_, body) = get(port, "/metrics", None)?;
        let calls: f64 = body
            .lines()
            .find(|l| l.starts_with("xlperf_crossing_calls_total{") && l.contains("xl_square"))?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()?;
        (calls == N as f64).then_some(())
    });
}

#[test]
fn serve_syscalls_counts_each_crossings_system_calls_exactly() {
    const N: u64 = 30;
    const M: u64 = 4;
    let w = xlperf_tests::alloc::alloc_workloads();
    let port = free_port();
    let _xlperf = serve(
        &[
            "--syscalls",
            "--ffi",
            &ffi("xl_write_null"),
            "--",
            xlperf_tests::s(&w.driver),
            "writes",
            &N.to_string(),
            &M.to_string(),
        ],
        port,
    );
    // The counters follow the kernel's totals once a second: wait for the final ones.
    let series = |body: &str, metric: &str, syscall: &str| -> Option<f64> {
        body.lines()
            .find(|l| {
                l.starts_with(&format!("{metric}{{"))
                    && l.contains("function=\"xl_write_null\"")
                    && l.contains(&format!("syscall=\"{syscall}\""))
            })?
            .rsplit(' ')
            .next()?
            .parse()
            .ok()
    };
    let body = eventually(
        Duration::from_secs(20),
        "N x M writes, then no target",
        || {
            let (_, body) = get(port, "/metrics", None)?;
            let writes = series(&body, "xlperf_crossing_syscalls_total", "write")?;
            (writes == (N * M) as f64 && body.lines().any(|l| l == "xlperf_targets 0"))
                .then_some(body)
        },
    );
    assert_eq!(
        series(&body, "xlperf_crossing_syscalls_total", "openat"),
        Some(M as f64),
        "{body}"
    );
    assert_eq!(
        series(&body, "xlperf_crossing_syscalls_total", "close"),
        Some(M as f64),
        "{body}"
    );
    assert!(
        series(&body, "xlperf_crossing_syscall_seconds_total", "write").is_some_and(|s| s > 0.0),
        "{body}"
    );
    // Calls outside any crossing are the process's own series, with empty crossing labels.
    assert!(
        body.lines()
            .any(|l| l.starts_with("xlperf_crossing_syscalls_total{")
                && l.contains("function=\"\"")
                && l.contains("syscall=\"execve\"")),
        "{body}"
    );
}

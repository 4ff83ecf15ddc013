//! `cargo xtask demo`: the main job on a bundled polyglot workload. A Python program
//! drives a C library through ctypes, a C program uses the same library, and an Erlang VM
//! calls OTP's crypto NIFs; xlperf records each and prints where the time went at each
//! boundary.

use std::process::Command;

use anyhow::Context as _;

use crate::{cmd, root, setup};

pub fn run() -> anyhow::Result<()> {
    cmd::require_root("demo")?;
    setup::build_toolchain()?;
    setup::demo_toolchains()?;
    let bin = cmd::build_xlperf(false)?;
    let xlperf = bin.join("xlperf");
    let src = root().join("xtask/demo");
    let out = root().join("target/xlperf-demo");
    std::fs::create_dir_all(&out).context("creating target/xlperf-demo")?;
    let lib = out.join("libthumb.so");
    let batch = out.join("batch");
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-shared", "-fPIC", "-o"])
            .arg(&lib)
            .arg(src.join("libthumb.c")),
    )?;
    cmd::run(
        Command::new("gcc")
            .args(["-O2", "-o"])
            .arg(&batch)
            .arg(src.join("batch.c"))
            .arg(format!("-L{}", out.display()))
            .args(["-lthumb", &format!("-Wl,-rpath,{}", out.display())]),
    )?;
    let lib_s = lib.display().to_string();

    println!("\n=== 1. Python (ctypes) calling a C library: every function of libthumb.so ===\n");
    let mut python = Command::new(&xlperf);
    python
        .args(["record", "--ffi", &lib_s, "--", "python3"])
        .arg(src.join("pipeline.py"))
        .arg(&lib_s);
    cmd::run(&mut python)?;

    println!(
        "\n=== 2. A C program calling the same library: what each call allocated, leaked, and waited for ===\n"
    );
    let mut c = Command::new(&xlperf);
    c.args([
        "record",
        "--ffi",
        &format!("{lib_s}:thumb_*"),
        "--alloc",
        "--sched",
        "--",
    ])
    .arg(&batch);
    cmd::run(&mut c)?;

    println!(
        "\n=== 3. An Erlang VM calling OTP's crypto NIFs: no probe flag, names from crypto.so's own NIF table ===\n"
    );
    let mut erl = Command::new(&xlperf);
    erl.args(["record", "--", "erl", "-noshell", "-eval"]).arg(
        "[crypto:hash(sha256, crypto:strong_rand_bytes(4096)) || _ <- lists:seq(1, 2000)], \
         crypto:pbkdf2_hmac(sha256, <<\"secret\">>, <<\"salt\">>, 100000, 32), \
         halt().",
    );
    cmd::run(&mut erl)?;

    println!(
        "\n=== 4. A capture file, and the same recording as a Perfetto timeline, a flame graph and folded stacks ===\n"
    );
    let capture = out.join("batch.xlperf");
    let capture_s = capture.display().to_string();
    cmd::run(
        Command::new(&xlperf)
            .args([
                "record",
                "--json",
                "--alloc",
                "--sched",
                "-o",
                &capture_s,
                "--ffi",
                &format!("{lib_s}:thumb_*"),
                "--",
            ])
            .arg(&batch)
            .stdout(std::process::Stdio::null()),
    )?;
    for (format, file) in [
        ("perfetto", "batch.pftrace"),
        ("svg", "batch.svg"),
        ("chrome", "batch.json"),
    ] {
        let path = out.join(file);
        cmd::run(
            Command::new(&xlperf)
                .args(["report", &capture_s, "--format", format, "-o"])
                .arg(&path),
        )?;
        println!("  {format:<9} {}", path.display());
    }
    cmd::run(Command::new(&xlperf).args(["report", &capture_s, "--format", "folded"]))?;

    println!(
        "\n=== 5. xlperf serve: Prometheus metrics of every process named batch, as it starts ===\n"
    );
    serve_demo(&xlperf, &batch, &lib_s)?;

    let x = xlperf.display();
    println!(
        "
How to read it: one row per function that crossed the boundary, sorted by TOTAL, the
inclusive wall time of all its calls; P50..MAX are per-call latencies. thumb_resize does
the CPU work; thumb_flush makes few calls, each one long (it waits, it does not compute);
thumb_encode's time includes the thumb_checksum it calls, which also has its own row.
In the C run, --alloc charges each malloc and free to the innermost traced call: the
program's own mallocs land outside any crossing (the per-process line), while
thumb_encode keeps every block it allocates (LIVE), all through the run: the leak
insight. --sched splits each call's time into on-CPU, blocked and run-queue time:
thumb_flush is blocked, not busy.
Step 4 wrote a capture file: `report` prints its summary again, or exports it; open
batch.pftrace in https://ui.perfetto.dev (one track per thread, calls nested, off-CPU
periods under them), batch.svg in a browser, batch.json in chrome://tracing. Step 5 shows
what Prometheus scrapes from `xlperf serve` (scripts/ has a dashboard and alert rules).
In the Erlang run, LONG NIF CALLS lists NIFs that held a normal scheduler for over 1 ms:
on OTP 25, pbkdf2_hmac_nif runs its whole key derivation there.

Try next:
  sudo {x} check                                  what works on this host
  sudo {x} record -p $(pgrep -n beam.smp) -d 10s  every NIF call of a running Erlang/Elixir VM
  sudo {x} list -p $(pgrep -n beam.smp)           its NIF libraries and functions
  sudo {x} record -p PID --ffi 'libssl.so.3:SSL_*' -d 10s   a running process, by library name
  sudo {x} record --json --ffi 'libz.so.1:deflate*' -- python3 -c 'import zlib; zlib.compress(b\"x\" * 9999)'
  sudo {x} record --help                          every option, with examples
"
    );
    Ok(())
}

/// Starts `xlperf serve --comm batch`, runs batch, scrapes /metrics once and prints the
/// crossing series, as Prometheus would see them.
fn serve_demo(xlperf: &std::path::Path, batch: &std::path::Path, lib: &str) -> anyhow::Result<()> {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};

    const LISTEN: &str = "127.0.0.1:19464";
    let mut serve = Command::new(xlperf)
        .args([
            "serve",
            "--comm",
            "batch",
            "--ffi",
            &format!("{lib}:thumb_*"),
            "--listen",
            LISTEN,
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("starting xlperf serve")?;
    let result = (|| -> anyhow::Result<()> {
        let stderr = serve.stderr.take().context("serve's stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .context("xlperf serve exited before serving")??;
            eprintln!("{line}");
            if line.contains("serving metrics") {
                break;
            }
        }
        // serve looks for new processes every second: batch runs for about 3 s, and its
        // calls are counted from the moment it is found.
        let mut child = Command::new(batch)
            .arg("6000")
            .spawn()
            .context("starting batch")?;
        child.wait().context("waiting for batch")?;
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut stream =
            std::net::TcpStream::connect(LISTEN).context("connecting to xlperf serve")?;
        write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        println!(
            "$ curl -s http://{LISTEN}/metrics | grep -E 'calls_total|_count|overhead|dropped'"
        );
        for line in response.lines().filter(|l| {
            !l.starts_with('#')
                && (l.contains("calls_total")
                    || l.contains("_count{")
                    || l.contains("overhead")
                    || l.contains("dropped"))
        }) {
            println!("{line}");
        }
        Ok(())
    })();
    // SAFETY: kill(2) on our own child's pid with a valid signal: SIGINT ends serve cleanly.
    unsafe { libc::kill(serve.id() as i32, libc::SIGINT) };
    let _ = serve.wait();
    result
}

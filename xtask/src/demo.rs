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

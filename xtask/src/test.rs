//! `cargo xtask test`: everything CI checks, in order, with one closing count.

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
};

use anyhow::{Context as _, bail};

use crate::{bench, cmd, demo, setup, vm};

pub fn run() -> anyhow::Result<()> {
    cmd::require_root("test")?;
    setup::all()?;
    cmd::run(cmd::cargo().args(["fmt", "--all", "--", "--check"]))?;
    // Every crate but the eBPF one (built for the kernel by xlperf/build.rs), tests included.
    let workspace = ["--workspace", "--exclude", "xlperf-ebpf"];
    cmd::run(cmd::cargo().arg("clippy").args(workspace).args([
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    let bin = cmd::build_xlperf(false)?;

    let mut test = cmd::cargo();
    test.arg("test")
        .args(workspace)
        .arg("--no-fail-fast")
        .env("XLPERF_BIN", bin.join("xlperf"))
        .stdout(Stdio::piped());
    eprintln!("xtask: $ {}", cmd::display(&test));
    let mut child = test.spawn().context("starting cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count(rest, " passed");
            failed += count(rest, " failed");
        }
    }
    let status = child.wait()?;
    if !status.success() || failed > 0 {
        println!("tests: {passed} passed, {failed} failed");
        bail!("cargo test failed ({status})");
    }

    // Bench and demo run too, so their code paths cannot rot; the bench is short here
    // and has no thresholds: performance claims come from a full `cargo xtask bench`.
    bench::run(true)?;
    demo::run()?;
    // The kernels production hosts run, in QEMU: the privileged tests that matter per
    // kernel (see vm.rs).
    let matrix = vm::matrix(None)?;
    println!("tests: {passed} passed, {failed} failed; kernel matrix: {matrix} passed");
    Ok(())
}

/// The number before `word` in a `test result:` line ("ok. 7 passed; 0 failed; ...").
fn count(line: &str, word: &str) -> u64 {
    line.split(';')
        .find_map(|part| {
            part.trim()
                .trim_start_matches("ok. ")
                .trim_start_matches("FAILED. ")
                .strip_suffix(word.trim_start())
                .map(str::trim)
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

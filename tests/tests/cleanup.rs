//! Probes are removed on every way xlperf can end. A uprobe is an int3 (0xCC) written
//! into the traced process's copy of the code page; we read that byte through
//! /proc/PID/mem while xlperf runs and after it has gone.

use std::time::{Duration, Instant};

use xlperf_tests::{
    WaitingDriver, c_workloads, finish_json, function_file_offset, mapped_byte, s, spawn_attached,
};

const INT3: u8 = 0xcc;

/// Attaches to a waiting driver, ends xlperf with `end`, and checks the probe byte
/// before and after. Returns xlperf's exit status.
fn probe_removed_after(
    end: impl FnOnce(&mut std::process::Child),
    extra: &[&str],
) -> std::process::ExitStatus {
    let w = c_workloads();
    let mut driver = WaitingDriver::start(10, 1);
    let pid = driver.pid();
    let offset = function_file_offset(&w.lib, "xl_outer");
    // The site xlperf picks may be past the first instruction: find it via the JSON later;
    // here we look at every byte of the first 16 for an int3.
    let original: Vec<u8> = (0..16)
        .map(|i| mapped_byte(pid, &w.lib, offset + i))
        .collect();
    assert!(!original.contains(&INT3), "no probe before xlperf starts");

    let mut args = vec!["record", "-p"];
    let pid_text = pid.to_string();
    args.push(&pid_text);
    let ffi = format!("{}:xl_outer", s(&w.lib));
    args.extend(["--ffi", &ffi]);
    args.extend_from_slice(extra);
    let (mut xlperf, _) = spawn_attached(&args);
    let during: Vec<u8> = (0..16)
        .map(|i| mapped_byte(pid, &w.lib, offset + i))
        .collect();
    assert!(
        during.contains(&INT3),
        "probe installed while recording: {during:x?}"
    );

    end(&mut xlperf);
    let status = xlperf.wait().expect("wait xlperf");
    let after: Vec<u8> = (0..16)
        .map(|i| mapped_byte(pid, &w.lib, offset + i))
        .collect();
    assert_eq!(
        after, original,
        "code restored after xlperf ended ({status})"
    );
    driver.go();
    status
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sends a signal to a child process we own.
    let r = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(r, 0);
}

#[test]
fn removed_when_the_duration_ends() {
    let status = probe_removed_after(|_| {}, &["-d", "300ms"]);
    assert!(status.success());
}

#[test]
fn removed_on_sigint() {
    let status = probe_removed_after(|x| signal(x, libc::SIGINT), &[]);
    assert!(
        status.success(),
        "Ctrl-C ends a recording normally: {status}"
    );
}

#[test]
fn removed_on_sigterm() {
    let status = probe_removed_after(|x| signal(x, libc::SIGTERM), &[]);
    assert!(
        status.success(),
        "SIGTERM ends a recording normally: {status}"
    );
}

#[test]
fn removed_on_sigkill() {
    // No code of ours runs: the kernel drops the probes with the last file descriptor.
    let status = probe_removed_after(|x| signal(x, libc::SIGKILL), &[]);
    assert!(!status.success());
}

#[test]
fn recording_ends_when_the_target_dies() {
    let w = c_workloads();
    let mut driver = WaitingDriver::start(10, 0);
    let pid = driver.pid().to_string();
    let (xlperf, _) = spawn_attached(&[
        "record",
        "--json",
        "-p",
        &pid,
        "--ffi",
        &format!("{}:xl_add", s(&w.lib)),
    ]);
    driver.child.kill().expect("kill target");
    let _ = driver.child.wait();
    let started = Instant::now();
    let summary = finish_json(xlperf);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(
        summary["boundaries"].as_array().map(Vec::len),
        Some(0),
        "killed before any call"
    );
}

//! Bad input gets one line on stderr that says what is wrong, and a non-zero exit.

use xlperf_tests::{c_workloads, s, xlperf, xlperf_bin};

/// Runs xlperf, asserts failure with a one-line message containing every `needles`.
fn fails_with(args: &[&str], needles: &[&str]) {
    let out = xlperf(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "xlperf {args:?} should fail:\n{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line expected:\n{stderr}");
    assert!(stderr.starts_with("xlperf: error: "), "{stderr}");
    for needle in needles {
        assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
    }
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn not_root() {
    let w = c_workloads();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(xlperf_bin())
        .args([
            "record",
            "--ffi",
            &format!("{}:xl_add", s(&w.lib)),
            "--",
            "true",
        ])
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("needs root or CAP_BPF + CAP_PERFMON") && stderr.contains("sudo"),
        "{stderr}"
    );
}

#[test]
fn unknown_pid() {
    fails_with(
        &["record", "-p", "999999999", "--ffi", "libc.so.6"],
        &["no process with pid 999999999"],
    );
}

#[test]
fn missing_library() {
    let pid = std::process::id().to_string();
    fails_with(
        &["record", "-p", &pid, "--ffi", "libxlperf-missing:foo"],
        &[
            &format!("pid {pid}"),
            "does not map libxlperf-missing",
            "or give a path",
        ],
    );
    // --all has only the linker cache to look in.
    fails_with(
        &["record", "--all", "--ffi", "libxlperf-missing:foo"],
        &["library \"libxlperf-missing\" not found", "linker cache"],
    );
    fails_with(
        &["record", "--ffi", "/no/such/lib.so", "--", "true"],
        &["not found", "no such file"],
    );
}

#[test]
fn not_an_elf_file() {
    fails_with(
        &["record", "--ffi", "/etc/hostname", "--", "true"],
        &["not an ELF"],
    );
}

#[test]
fn no_matching_symbol() {
    let w = c_workloads();
    fails_with(
        &[
            "record",
            "--ffi",
            &format!("{}:nothing_like_this*", s(&w.lib)),
            "--",
            "true",
        ],
        &["no function of", "matches \"nothing_like_this*\"", "nm -D"],
    );
}

#[test]
fn bad_glob() {
    let w = c_workloads();
    fails_with(
        &[
            "record",
            "--ffi",
            &format!("{}:xl_[add", s(&w.lib)),
            "--",
            "true",
        ],
        &["invalid function glob \"xl_[add\""],
    );
}

#[test]
fn malformed_duration() {
    fails_with(
        &["record", "-d", "10parsecs", "--ffi", "libc.so.6", "--all"],
        &["invalid duration \"10parsecs\"", "500ms"],
    );
    fails_with(
        &["record", "--duration", "0s", "--ffi", "libc.so.6", "--all"],
        &["invalid duration \"0s\""],
    );
}

#[test]
fn command_not_found() {
    fails_with(
        &[
            "record",
            "--ffi",
            "libc.so.6:getpid",
            "--",
            "xlperf-no-such-command",
        ],
        &["command not found: xlperf-no-such-command"],
    );
}

#[test]
fn command_not_executable() {
    use std::os::unix::fs::PermissionsExt as _;
    let script =
        std::env::temp_dir().join(format!("xlperf-not-executable-{}.sh", std::process::id()));
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").expect("write script");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let expected = format!("{} is not executable", s(&script));
    fails_with(
        &["record", "--ffi", "libc.so.6:getpid", "--", s(&script)],
        &[&expected],
    );
    std::fs::remove_file(&script).expect("clean up");
}

#[test]
fn too_many_functions() {
    fails_with(
        &[
            "record",
            "--ffi",
            "libc.so.6",
            "--max-functions",
            "10",
            "--",
            "true",
        ],
        &["functions match", "--max-functions"],
    );
}

#[test]
fn missing_target_or_probe() {
    fails_with(&["record", "--ffi", "libc.so.6"], &["required"]);
    fails_with(&["record", "--", "true"], &["--ffi"]);
}

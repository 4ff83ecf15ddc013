//! `xlperf check` on this host: every line has a verdict, and the uprobe line proves the
//! real probe pair traced every call of the calibration function.

use xlperf_tests::xlperf;

#[test]
fn check_reports_each_capability_and_passes_when_uprobes_work() {
    let out = xlperf(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in [
        "privileges",
        "BTF",
        "tracefs",
        "ring buffer",
        "uprobe+uretprobe",
        "tracepoint",
        "perf event",
        "kprobes",
        "kretprobes",
        "--syscalls",
        "--kfunc",
    ] {
        let line = text
            .lines()
            .find(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|w| what.starts_with(w))
            })
            .unwrap_or_else(|| panic!("no {what} line in:\n{text}"));
        assert!(
            ["ok", "missing", "FAIL"].contains(&line.split_whitespace().next().unwrap_or("")),
            "{line}"
        );
    }
    let uprobe = text
        .lines()
        .find(|l| l.contains("uprobe+uretprobe"))
        .expect("uprobe line");
    assert!(uprobe.starts_with("ok"), "{uprobe}");
    // "12000 of 12000 calls traced": exact, not approximately.
    let numbers: Vec<u64> = uprobe
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert!(
        numbers.len() >= 2 && numbers[0] == numbers[1] && numbers[0] > 0,
        "{uprobe}"
    );
    // --kfunc: exact where kprobes exist (every Debian kernel), missing where not.
    let kfunc = text
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("--kfunc"))
        .expect("--kfunc line");
    if xlperf_tests::kfunc::has_kprobes() {
        assert!(kfunc.starts_with("ok"), "{kfunc}");
        let numbers: Vec<u64> = kfunc
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert!(
            numbers.len() >= 2 && numbers[0] == numbers[1] && numbers[0] > 0,
            "{kfunc}"
        );
    } else {
        assert!(kfunc.starts_with("missing"), "{kfunc}");
    }
    assert!(
        std::path::Path::new("/sys/kernel/tracing/events").exists(),
        "check mounts tracefs"
    );
}

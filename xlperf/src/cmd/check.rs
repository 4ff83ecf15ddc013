//! `xlperf check`: what works on this host and why not, one line each.

use std::{fs, path::Path};

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::{
    cli::NifMode,
    privileges,
    probe::{
        beam::{
            self,
            tracing::{Mode, NifTracing},
        },
        boundary::BoundaryTable,
        bpf::{calibrate, loader, tracefs, tracepoints},
        kernel,
        proc::target,
    },
    report::table::human_ns,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Ok,
    Missing,
    Fail,
}

struct Line {
    verdict: Verdict,
    what: &'static str,
    why: String,
}

/// The line whose verdict is the command's.
const UPROBE: &str = "uprobe+uretprobe";

/// Runs every check, prints one line each, and returns whether uprobe tracing works.
pub fn run(pid: Option<u32>) -> anyhow::Result<bool> {
    let mut lines = host_lines();
    let uprobe_ok = lines
        .iter()
        .any(|l| l.what == UPROBE && l.verdict == Verdict::Ok);
    let mut process_ok = true;
    if let Some(pid) = pid {
        let process = process_lines(pid);
        process_ok = process.iter().all(|l| l.verdict != Verdict::Fail);
        lines.extend(process);
    }
    super::output::print(&render(&lines, uprobe_ok))?;
    Ok(uprobe_ok && process_ok)
}

/// What this host's kernel and xlperf's privileges allow, one line per feature.
fn host_lines() -> Vec<Line> {
    let mut lines = vec![kernel_line(&kernel_release())];
    let privileged = privileges::check();
    let root = privileged.is_ok();
    lines.push(match privileged {
        Ok(why) => line(Verdict::Ok, "privileges", why),
        Err(why) => line(Verdict::Fail, "privileges", why),
    });
    lines.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        line(Verdict::Ok, "BTF", "/sys/kernel/btf/vmlinux present".into())
    } else {
        line(Verdict::Missing, "BTF", "no /sys/kernel/btf/vmlinux: kernel built without CONFIG_DEBUG_INFO_BTF; FFI tracing does not need it".into())
    });
    lines.push(tracefs_line());
    lines.push(feature(
        "ring buffer",
        is_map_supported(MapType::RingBuf).map_err(|e| e.to_string()),
        "BPF_MAP_TYPE_RINGBUF needs Linux 5.8",
    ));
    lines.push(if root {
        uprobe_line()
    } else {
        line(Verdict::Fail, UPROBE, "needs privileges (see above)".into())
    });
    lines.push(feature(
        "tracepoint",
        is_program_supported(ProgramType::TracePoint).map_err(|e| e.to_string()),
        "tracepoint programs unavailable",
    ));
    lines.extend(tracepoint_lines());
    lines.push(feature(
        "perf event",
        is_program_supported(ProgramType::PerfEvent).map_err(|e| e.to_string()),
        "perf_event programs unavailable",
    ));
    lines.extend(kprobe_lines());
    lines.push(kfunc_line());
    lines
}

/// kprobes and kretprobes (a kernel built without CONFIG_KPROBES has neither), which
/// only kernel-function tracing would need.
fn kprobe_lines() -> [Line; 2] {
    let pmu = Path::new("/sys/bus/event_source/devices/kprobe");
    let missing = "no kprobe PMU (kernel built without CONFIG_KPROBES); FFI, NIF, --alloc, --sched and --syscalls do not need them";
    [
        if pmu.exists() {
            line(Verdict::Ok, "kprobes", "kprobe PMU present".into())
        } else {
            line(Verdict::Missing, "kprobes", missing.into())
        },
        if pmu.join("format/retprobe").exists() {
            line(
                Verdict::Ok,
                "kretprobes",
                "the kprobe PMU's retprobe flag present".into(),
            )
        } else {
            line(Verdict::Missing, "kretprobes", missing.into())
        },
    ]
}

fn tracefs_line() -> Line {
    match tracefs::ensure_mounted() {
        Ok(state) => line(
            Verdict::Ok,
            "tracefs",
            format!("{} {state}", tracefs::root().display()),
        ),
        Err(e) => line(
            Verdict::Fail,
            "tracefs",
            format!(
                "cannot mount at {}: {e}; tracepoint probes will not work",
                tracefs::MOUNT_POINT
            ),
        ),
    }
}

/// The fields --sched, --alloc, --syscalls and --kmem read, from the running kernel's format files.
fn tracepoint_lines() -> [Line; 3] {
    [
        match tracepoints::layout(false) {
            Ok(_) => line(
                Verdict::Ok,
                "--sched, --alloc",
                "sched_switch, sched_waking, sched_wakeup_new, sys_enter_mmap/munmap formats read"
                    .into(),
            ),
            Err(e) => line(Verdict::Missing, "--sched, --alloc", e.to_string()),
        },
        match tracepoints::syscalls_format() {
            Ok(()) => line(
                Verdict::Ok,
                "--syscalls",
                "raw_syscalls/sys_enter and sys_exit formats read".into(),
            ),
            Err(e) => line(Verdict::Missing, "--syscalls", e.to_string()),
        },
        match tracepoints::layout(true) {
            Ok(_) => line(
                Verdict::Ok,
                "--kmem",
                "kmem/kmalloc, kmem_cache_alloc, mm_page_alloc formats read".into(),
            ),
            Err(e) => line(Verdict::Missing, "--kmem", e.to_string()),
        },
    ]
}

fn render(lines: &[Line], uprobe_ok: bool) -> String {
    let mut text = String::new();
    for l in lines {
        let tag = match l.verdict {
            Verdict::Ok => "ok     ",
            Verdict::Missing => "missing",
            Verdict::Fail => "FAIL   ",
        };
        text.push_str(&format!("{tag}  {:<18} {}\n", l.what, l.why));
    }
    text.push_str(if uprobe_ok {
        "\nFFI boundary tracing works on this host.\n"
    } else {
        "\nFFI boundary tracing does not work on this host (see the FAIL lines).\n"
    });
    text
}

/// What runs in `pid` and how xlperf would trace it.
fn process_lines(pid: u32) -> Vec<Line> {
    if let Err(e) = target::check_target(pid) {
        return vec![line(Verdict::Fail, "process", e.to_string())];
    }
    let mut lines = vec![line(
        Verdict::Ok,
        "process",
        format!("pid {pid} ({})", target::comm(pid)),
    )];
    let vm = match beam::vm_of_pid(pid) {
        Ok(Some(vm)) => vm,
        Ok(None) => {
            lines.push(line(
                Verdict::Ok,
                "runtime",
                "none detected (not an Erlang/Elixir VM): trace its C-ABI functions with --ffi LIB[:GLOB]".into(),
            ));
            return lines;
        }
        Err(e) => {
            lines.push(line(Verdict::Fail, "runtime", e.to_string()));
            return lines;
        }
    };
    lines.push(line(
        Verdict::Ok,
        "runtime",
        format!("Erlang/Elixir VM {}", vm.display()),
    ));
    let mut tracing = match NifTracing::prepare(&vm, NifMode::Auto) {
        Ok(t) => t,
        Err(e) => {
            lines.push(line(Verdict::Fail, "NIF tracing", e.to_string()));
            return lines;
        }
    };
    lines.push(match &tracing.mode {
        Mode::Dispatch(d) => line(
            Verdict::Ok,
            "NIF tracing",
            format!(
                "dispatch mode: probes on {} and {} (NIF address at I+{:#x}) catch every NIF, including libraries loaded later",
                beam::dispatch::CALL_NIF,
                beam::dispatch::CALL_DIRTY_NIF,
                d.dirty_fp_offset
            ),
        ),
        Mode::Fptr { reason } => line(
            Verdict::Missing,
            "NIF tracing",
            format!(
                "fptr mode (fallback): {}; each NIF function gets its own probe pair",
                reason.as_deref().unwrap_or("forced")
            ),
        ),
    });
    let mut table = BoundaryTable::default();
    lines.push(match tracing.resolver.scan(pid, &mut table) {
        Ok(libs) if libs.is_empty() => line(Verdict::Ok, "NIF libraries", "none loaded yet".into()),
        Ok(libs) => line(
            Verdict::Ok,
            "NIF libraries",
            libs.iter()
                .map(|l| {
                    format!(
                        "{} ({} NIFs)",
                        l.path.rsplit('/').next().unwrap_or(&l.path),
                        l.functions.len()
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Err(e) => line(Verdict::Fail, "NIF libraries", e.to_string()),
    });
    lines
}

fn line(verdict: Verdict, what: &'static str, why: String) -> Line {
    Line { verdict, what, why }
}

fn feature(what: &'static str, supported: Result<bool, String>, missing: &str) -> Line {
    match supported {
        Ok(true) => line(Verdict::Ok, what, "supported".into()),
        Ok(false) => line(Verdict::Missing, what, missing.into()),
        Err(e) => line(Verdict::Fail, what, format!("probe failed: {e}")),
    }
}

/// Attaches the real FFI probe pair to a function of our own, calls it, and checks that
/// every call produced exactly one record.
fn uprobe_line() -> Line {
    let what = UPROBE;
    let result = (|| -> Result<String, String> {
        let mut ebpf = loader::load(loader::DEFAULT_RING_BYTES, 0, 0).map_err(|e| e.to_string())?;
        let mut ring = loader::call_records(&mut ebpf).map_err(|e| e.to_string())?;
        let calibrated =
            calibrate::measure(&mut ebpf, &mut ring, false, false).map_err(|e| e.to_string())?;
        let (seen, probed) = (calibrated.seen_calls, calibrated.probed_calls);
        if seen != probed {
            return Err(format!("{probed} calls made, {seen} traced"));
        }
        let pair = calibrated.costs.pair;
        Ok(format!(
            "{seen} of {probed} calls traced; a probe pair adds {} per call at an emulated site, {} at a single-stepped one ({} and {} of it inside the call)",
            human_ns(pair.emulated.total_ns),
            human_ns(pair.single_stepped.total_ns),
            human_ns(pair.emulated.in_call_ns),
            human_ns(pair.single_stepped.in_call_ns),
        ))
    })();
    match result {
        Ok(why) => line(Verdict::Ok, what, why),
        Err(why) => line(Verdict::Fail, what, why),
    }
}

/// `--kfunc`: attaches the real kprobe pair to the kernel function the calibration uses,
/// makes system calls that reach it, and checks that each produced one record.
fn kfunc_line() -> Line {
    let what = "--kfunc";
    if !kernel::has_kprobes() {
        return line(
            Verdict::Missing,
            what,
            "needs kprobes, which this kernel lacks; --syscalls and everything else still work"
                .into(),
        );
    }
    let result = (|| -> Result<String, String> {
        let mut ebpf = loader::load(loader::DEFAULT_RING_BYTES, 0, 0).map_err(|e| e.to_string())?;
        let mut ring = loader::call_records(&mut ebpf).map_err(|e| e.to_string())?;
        let calibrated =
            calibrate::measure(&mut ebpf, &mut ring, false, true).map_err(|e| format!("{e:#}"))?;
        let (probed, seen) = calibrated.kernel_calls;
        if seen != probed {
            return Err(format!(
                "{probed} system calls reached the probed kernel function, {seen} traced"
            ));
        }
        let pair = calibrated.costs.kernel_pair;
        Ok(format!(
            "{seen} of {probed} kernel calls traced; a kprobe pair adds {} per call ({} of it inside the call)",
            human_ns(pair.total_ns),
            human_ns(pair.in_call_ns),
        ))
    })();
    match result {
        Ok(why) => line(Verdict::Ok, what, why),
        Err(why) => line(Verdict::Fail, what, why),
    }
}

/// The oldest kernel xlperf runs on, and why: every uprobe learns its function from its
/// attach cookie (5.15); the ring buffer (5.8) and the BPF run-time statistics (5.8) are
/// older.
const OLDEST: (u32, u32) = (5, 15);

fn kernel_line(release: &str) -> Line {
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= OLDEST {
        line(Verdict::Ok, "kernel", release.to_owned())
    } else {
        line(
            Verdict::Fail,
            "kernel",
            format!(
                "{release}: xlperf needs Linux {}.{}+ (uprobe attach cookies, which name the function each probe hit belongs to); nothing can be traced here",
                OLDEST.0, OLDEST.1
            ),
        )
    }
}

fn kernel_release() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_older_than_5_15_fail_with_the_reason() {
        for ok in [
            "5.15.0-1-generic",
            "6.1.0-57-amd64",
            "6.12.117+deb13-amd64",
            "7.3.4+deb13-amd64",
        ] {
            assert!(kernel_line(ok).verdict == Verdict::Ok, "{ok}");
        }
        for old in ["5.14.0-427.el9.x86_64", "5.10.0-30-amd64", "4.19.0"] {
            let l = kernel_line(old);
            assert!(
                l.verdict == Verdict::Fail && l.why.contains("5.15+"),
                "{old}: {}",
                l.why
            );
        }
    }
}

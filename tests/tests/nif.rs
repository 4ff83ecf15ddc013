//! Erlang and Elixir NIFs in unmodified BEAMs: OTP's own crypto NIF, a C NIF library
//! built here (normal, dirty CPU and dirty I/O NIFs), the same library under an Elixir
//! module, a Rustler NIF, libraries loaded after the recording started, and the
//! fallback mode that probes each NIF function.

use std::process::{Command, Output, Stdio};

use serde_json::Value;
use xlperf_tests::{
    beam::{
        BeamInvocation, WaitingBeam, beam_workloads, crypto_so, elixir_invocation, erl_invocation,
        is_mapped,
    },
    finish_json, row, spawn_attached, summary_of, xlperf_bin,
};

/// Runs `xlperf record --json ARGS -- <driver>` with the driver's environment.
fn record_driver(args: &[&str], driver: &BeamInvocation) -> Value {
    let out = run_driver(&[&["record", "--json"], args].concat(), driver);
    let summary = summary_of(&out);
    assert_eq!(summary["dropped"], 0, "{summary:#}");
    assert_eq!(summary["target_exit_status"], 0, "{summary:#}");
    summary
}

fn run_driver(args: &[&str], driver: &BeamInvocation) -> Output {
    driver.under_xlperf(args)
}

fn nif_row<'a>(summary: &'a Value, function: &str) -> &'a Value {
    row(summary, function, None).unwrap_or_else(|| panic!("no row for {function}: {summary:#}"))
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("{v} is not a number"))
}

/// Calls, and calls per scheduler kind, of one NIF row.
fn sched(summary: &Value, function: &str) -> (u64, u64, u64, u64) {
    let r = nif_row(summary, function);
    let s = &r["scheduler"];
    (
        u(&r["calls"]),
        u(&s["normal"]),
        u(&s["dirty_cpu"]),
        u(&s["dirty_io"]),
    )
}

#[test]
fn crypto_hash_in_otp_own_stripped_library() {
    // The library is stripped: names can only come from its NIF table.
    let crypto = crypto_so();
    let data = std::fs::read(&crypto).expect("read crypto.so");
    let elf = object::File::parse(&*data).expect("crypto.so is ELF");
    assert!(
        object::Object::symbol_table(&elf).is_none(),
        "{} has a .symtab; this test wants OTP's stripped build",
        crypto.display()
    );

    let driver = erl_invocation(beam_workloads(), &["nowait", "crypto", "777"]);
    // No probe flag: a BEAM command is traced for its NIFs without being asked.
    let summary = record_driver(&[], &driver);
    assert_eq!(summary["nif"]["mode"], "dispatch");
    let hash = nif_row(&summary, "crypto:hash_nif/2");
    assert_eq!(hash["calls"], 777);
    assert_eq!(hash["runtime"], "beam");
    assert_eq!(hash["library"], "crypto.so");
    assert_eq!(hash["module"], "crypto");
    assert_eq!(hash["arity"], 2);
    assert_eq!(hash["scheduler"]["normal"], 777);
}

/// --sched inside NIFs: the time a sleeping NIF spends off CPU is charged to that NIF
/// (named from the dispatch probes' NIF address, like its calls), on normal and dirty
/// schedulers alike, and a NIF that only adds is on CPU.
#[test]
fn off_cpu_time_is_charged_to_the_nif_that_sleeps() {
    let driver = erl_invocation(
        beam_workloads(),
        &["nowait", "nif", "200", "5", "2", "3", "2", "4"],
    );
    let summary = record_driver(&["--sched"], &driver);
    // xl_nif.c: sleep_ms(2) ×5 on normal schedulers, dirty_sleep_ms(2) ×3, io_sleep_ms(2)
    // ×4. Off CPU means blocked or runnable; 100 µs per call covers the sleep's timer
    // being armed a little before the thread switches out.
    for (nif, calls) in [
        ("xl_nif:sleep_ms/1", 5),
        ("xl_nif:dirty_sleep_ms/1", 3),
        ("xl_nif:io_sleep_ms/1", 4),
    ] {
        let r = nif_row(&summary, nif);
        let off = u(&r["offcpu_ns"]) + u(&r["runq_ns"]);
        assert!(off >= calls * 1_900_000, "{nif}: {r:#}");
        assert!(u(&r["switches"]) >= calls, "{nif}: {r:#}");
    }
    let add = nif_row(&summary, "xl_nif:add/2");
    assert!(u(&add["offcpu_ns"]) < 1_000_000, "{add:#}");
    let insights = summary["insights"].as_array().expect("insights[]");
    assert!(
        insights
            .iter()
            .any(|i| i["kind"] == "blocking" && i["function"] == "xl_nif:sleep_ms/1"),
        "{summary:#}"
    );
}

#[test]
fn long_normal_nif_flagged_dirty_nifs_attributed_and_not_flagged() {
    let driver = erl_invocation(
        beam_workloads(),
        &["nowait", "nif", "200", "5", "2", "3", "2", "4"],
    );
    let summary = record_driver(&[], &driver);

    assert_eq!(sched(&summary, "xl_nif:add/2"), (200, 200, 0, 0));
    assert_eq!(sched(&summary, "xl_nif:sleep_ms/1"), (5, 5, 0, 0));
    assert_eq!(sched(&summary, "xl_nif:dirty_sleep_ms/1"), (3, 0, 3, 0));
    assert_eq!(sched(&summary, "xl_nif:io_sleep_ms/1"), (4, 0, 0, 4));

    // Each 2 ms sleep on a normal scheduler is a long call (threshold 1 ms).
    let sleep = nif_row(&summary, "xl_nif:sleep_ms/1");
    assert_eq!(sleep["long_calls"]["count"], 5);
    assert_eq!(sleep["long_calls"]["threshold_ns"], 1_000_000);
    assert!(
        u(&sleep["long_calls"]["normal_max_ns"]) >= 2_000_000,
        "{sleep:#}"
    );
    assert!(
        u(&sleep["long_calls"]["normal_p99_ns"]) >= 2_000_000,
        "{sleep:#}"
    );
    assert!(u(&sleep["p50_ns"]) >= 2_000_000, "{sleep:#}");
    // Dirty NIFs sleep as long but hold up no normal scheduler: not long calls.
    for dirty in ["xl_nif:dirty_sleep_ms/1", "xl_nif:io_sleep_ms/1"] {
        let r = nif_row(&summary, dirty);
        assert_eq!(r["long_calls"]["count"], 0, "{r:#}");
        assert!(u(&r["p50_ns"]) >= 2_000_000, "{r:#}");
    }
    assert_eq!(nif_row(&summary, "xl_nif:dirty_sleep_ms/1")["dirty"], "cpu");
    assert_eq!(nif_row(&summary, "xl_nif:io_sleep_ms/1")["dirty"], "io");
    assert_eq!(nif_row(&summary, "xl_nif:add/2")["long_calls"]["count"], 0);
    // A dirty NIF is reported once, as itself: the VM's trampolines are not rows.
    let rows = summary["boundaries"].as_array().expect("rows");
    let ours = rows.iter().filter(|r| r["library"] == "xl_nif.so").count();
    assert_eq!(ours, 4, "{summary:#}");
    // Each dirty call passes two trampolines on a normal scheduler (schedule, finish).
    assert!(
        u(&summary["nif"]["vm_internal_calls"]) >= 7 * 2,
        "{summary:#}"
    );
}

#[test]
fn long_nif_threshold_is_configurable_and_shown_first_in_the_table() {
    let driver = erl_invocation(
        beam_workloads(),
        &["nowait", "nif", "10", "3", "2", "1", "2", "0"],
    );
    // A 2 ms sleep cannot take half a second, however loaded the machine. (Other NIFs,
    // e.g. the VM's own at boot, may: only ours are checked.)
    let out = run_driver(&["record", "--long-nif", "500ms"], &driver);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    let long_section = table
        .split("LONG NIF CALLS")
        .nth(1)
        .map(|rest| rest.split("\n\n").next().unwrap_or_default())
        .unwrap_or_default();
    assert!(
        !long_section.contains("xl_nif:"),
        "2 ms is under a 500 ms threshold:\n{table}"
    );

    let out = run_driver(&["record"], &driver);
    let table = String::from_utf8_lossy(&out.stdout);
    // The long calls come before the per-function table (the driver's own output, on
    // the same stdout, comes first of all).
    let long_at = table
        .find("LONG NIF CALLS")
        .unwrap_or_else(|| panic!("no long calls:\n{table}"));
    let table_at = table
        .find("LIBRARY")
        .unwrap_or_else(|| panic!("no table:\n{table}"));
    assert!(long_at < table_at, "{table}");
    let table = &table[long_at..];
    let long = table
        .lines()
        .find(|l| l.contains("xl_nif:sleep_ms/1") && l.contains("3 of 3"))
        .unwrap_or_else(|| panic!("no long-call line for sleep_ms:\n{table}"));
    assert!(long.contains("p99"), "{long}");
    assert!(
        !table
            .lines()
            .take_while(|l| !l.is_empty())
            .any(|l| l.contains("dirty_sleep_ms")),
        "{table}"
    );
}

#[test]
fn elixir_module_gets_elixir_names() {
    let w = beam_workloads();
    let driver = elixir_invocation(w, &["nowait", "nif", "321", "1", "2", "1", "2", "0"]);
    let summary = record_driver(&[], &driver);
    let add = nif_row(&summary, "XlNif.add/2");
    assert_eq!(add["calls"], 321);
    assert_eq!(add["module"], "Elixir.XlNif");
    assert_eq!(add["library"], "xl_nif_elixir.so");
    assert_eq!(sched(&summary, "XlNif.sleep_ms/1"), (1, 1, 0, 0));
    assert_eq!(sched(&summary, "XlNif.dirty_sleep_ms/1"), (1, 0, 1, 0));
}

#[test]
fn rustler_nif_names_from_its_run_time_entry() {
    let driver = erl_invocation(beam_workloads(), &["nowait", "rustler", "500", "3", "2"]);
    let summary = record_driver(&[], &driver);
    assert_eq!(sched(&summary, "XlRnif.add/2"), (500, 500, 0, 0));
    assert_eq!(sched(&summary, "XlRnif.heavy/1"), (3, 0, 3, 0));
    assert_eq!(nif_row(&summary, "XlRnif.heavy/1")["dirty"], "cpu");
    assert_eq!(
        nif_row(&summary, "XlRnif.add/2")["library"],
        "libxl_rnif.so"
    );
}

#[test]
fn library_loaded_after_recording_started_is_traced() {
    let w = beam_workloads();
    let mut driver = WaitingBeam::erl(&["nif", "1234", "2", "2", "1", "2", "0"]);
    let pid = driver.pid();
    assert!(
        !is_mapped(pid, &w.nif_so),
        "xl_nif.so must load after the probes"
    );
    let (xlperf, _) = spawn_attached(&["record", "--json", "-p", &pid.to_string()]);
    driver.go();
    // The recording ends by itself when the VM exits.
    let summary = finish_json(xlperf);
    assert_eq!(summary["nif"]["mode"], "dispatch");
    assert_eq!(sched(&summary, "xl_nif:add/2"), (1234, 1234, 0, 0));
    assert_eq!(sched(&summary, "xl_nif:sleep_ms/1"), (2, 2, 0, 0));
    assert_eq!(sched(&summary, "xl_nif:dirty_sleep_ms/1"), (1, 0, 1, 0));
    for r in summary["boundaries"].as_array().expect("rows") {
        assert_eq!(r["pid"], pid);
    }
}

/// The same preloaded workload in pid mode, traced by dispatch probes and by a probe
/// pair on each NIF: identical counts.
#[test]
fn fallback_mode_counts_like_dispatch_mode() {
    let args = ["preload", "nif", "777", "2", "2", "2", "2", "3"];
    let mut counts = Vec::new();
    for mode in ["dispatch", "fptr"] {
        let mut driver = WaitingBeam::erl(&args);
        let pid = driver.pid().to_string();
        let (xlperf, _) = spawn_attached(&["record", "--json", "--nif-mode", mode, "-p", &pid]);
        driver.go();
        let summary = finish_json(xlperf);
        assert_eq!(summary["nif"]["mode"], mode);
        counts.push(
            [
                "xl_nif:add/2",
                "xl_nif:sleep_ms/1",
                "xl_nif:dirty_sleep_ms/1",
                "xl_nif:io_sleep_ms/1",
            ]
            .map(|f| sched(&summary, f)),
        );
    }
    assert_eq!(
        counts[0],
        [(777, 777, 0, 0), (2, 2, 0, 0), (2, 0, 2, 0), (3, 0, 0, 3)]
    );
    assert_eq!(counts[0], counts[1]);
}

#[test]
fn list_shows_nif_libraries_functions_and_which_are_called() {
    // 300 sleeps of 5 ms keep sleep_ms/1 busy for 1.5 s while `list` watches.
    let mut driver = WaitingBeam::erl(&["preload", "nif", "0", "300", "5", "0", "0", "0"]);
    let pid = driver.pid();
    let lister = Command::new(xlperf_bin())
        .args(["list", "--json", "-d", "500ms", "-p", &pid.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xlperf list");
    driver.go();
    let out = lister.wait_with_output().expect("list output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing: Value = serde_json::from_slice(&out.stdout).expect("JSON listing");
    assert_eq!(listing["runtime"], "beam");
    assert_eq!(listing["nif_mode"], "dispatch");
    let lib = listing["nif_libraries"]
        .as_array()
        .expect("libraries")
        .iter()
        .find(|l| l["library"] == "xl_nif.so")
        .unwrap_or_else(|| panic!("xl_nif.so not listed: {listing:#}"));
    assert_eq!(lib["module"], "xl_nif");
    let f = |name: &str| {
        lib["functions"]
            .as_array()
            .expect("functions")
            .iter()
            .find(|f| f["function"] == name)
            .unwrap_or_else(|| panic!("{name} not listed: {lib:#}"))
            .clone()
    };
    assert_eq!(lib["functions"].as_array().map(Vec::len), Some(4));
    assert_eq!(f("xl_nif:dirty_sleep_ms/1")["dirty"], "cpu");
    assert_eq!(f("xl_nif:io_sleep_ms/1")["dirty"], "io");
    assert_eq!(f("xl_nif:add/2")["dirty"], Value::Null);
    assert!(u(&f("xl_nif:sleep_ms/1")["calls"]) > 0, "{lib:#}");
    assert_eq!(f("xl_nif:add/2")["calls"], 0);
}

#[test]
fn check_says_which_nif_mode_applies() {
    let driver = WaitingBeam::erl(&["preload", "nif", "0", "0", "0", "0", "0", "0"]);
    let out = Command::new(xlperf_bin())
        .args(["check", "-p", &driver.pid().to_string()])
        .output()
        .expect("run check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("NIF tracing"))
        .unwrap_or_else(|| panic!("no NIF line:\n{text}"));
    assert!(line.contains("dispatch"), "{line}");
    assert!(text.contains("xl_nif.so"), "{text}");
}

#[test]
fn nif_flag_on_a_process_that_is_not_a_beam_is_one_clear_error() {
    let mut sleeper = Command::new("sleep").arg("30").spawn().expect("sleep");
    let pid = sleeper.id().to_string();
    for args in [
        vec!["record", "--nif", "-p", &pid],
        vec!["record", "-p", &pid],
    ] {
        let out = Command::new(xlperf_bin())
            .args(&args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("not an Erlang/Elixir VM"), "{err}");
        assert!(
            err.contains("--ffi") || err.contains("--nif needs"),
            "{err}"
        );
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// NIFs built into the VM have no exported init: named from the VM's own data.
#[test]
fn nifs_built_into_the_vm_are_named() {
    let mut driver = WaitingBeam::erl(&["preload", "files", "321"]);
    let pid = driver.pid().to_string();
    let (xlperf, _) = spawn_attached(&["record", "--json", "-p", &pid]);
    driver.go();
    let summary = finish_json(xlperf);
    let read = nif_row(&summary, "prim_file:read_file_nif/1");
    assert_eq!(read["calls"], 321, "{summary:#}");
    assert_eq!(read["library"], "beam.smp");
    assert_eq!(read["dirty"], "io");
    assert_eq!(
        sched(&summary, "prim_file:read_file_nif/1"),
        (321, 0, 0, 321)
    );
}

#[test]
fn fallback_mode_with_all_processes_is_one_clear_error() {
    let out = Command::new(xlperf_bin())
        .args(["record", "--all", "--nif", "--nif-mode", "fptr", "-d", "1s"])
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("needs -p PID or a command"), "{err}");
}

/// `--all --nif`: every BEAM of the installation, counted per process.
#[test]
fn all_beams_are_traced_and_counted_apart() {
    let mut a = WaitingBeam::erl(&["preload", "crypto", "42"]);
    let mut b = WaitingBeam::erl(&["preload", "crypto", "17"]);
    let (xlperf, _) = spawn_attached(&["record", "--json", "--all", "--nif", "-d", "4s"]);
    a.go();
    b.go();
    let summary = finish_json(xlperf);
    for (driver, n) in [(&a, 42), (&b, 17)] {
        let r = row(&summary, "crypto:hash_nif/2", Some(driver.pid()))
            .unwrap_or_else(|| panic!("no row for pid {}: {summary:#}", driver.pid()));
        assert_eq!(r["calls"], n, "{r:#}");
    }
}

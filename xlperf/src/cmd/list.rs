//! `xlperf list -p PID`: what can be traced in a process. For an Erlang/Elixir VM: its
//! NIF libraries and functions, and which are being called (watched for a moment).

use std::{collections::HashMap, fmt::Write as _, time::Instant};

use anyhow::{Context as _, anyhow};
use serde::Serialize;

use crate::{
    cli::ListArgs,
    model::CallEvent,
    privileges,
    probe::{
        beam::{self, tracing::NifTracing},
        proc::{maps, target},
    },
    report::table::human_ns,
    session::{
        Session,
        drain::Names,
        exits::Signals,
        sink::{self, Sink},
        targets::{Crossings, Prepared, Target, Wants},
    },
};

#[derive(Debug, Serialize)]
struct Listing {
    pid: u32,
    comm: String,
    /// `beam`, or null when xlperf detects no runtime in the process.
    runtime: Option<&'static str>,
    vm: Option<String>,
    nif_mode: Option<&'static str>,
    /// How long calls were watched, 0 when not.
    watched_ns: u64,
    nif_libraries: Vec<NifLibraryListing>,
    /// Shared libraries mapped by the process: candidates for --ffi.
    libraries: Vec<String>,
}

#[derive(Debug, Serialize)]
struct NifLibraryListing {
    library: String,
    path: String,
    module: String,
    functions: Vec<NifListing>,
}

#[derive(Debug, Serialize)]
struct NifListing {
    function: String,
    arity: u32,
    dirty: Option<&'static str>,
    /// Calls seen while watching.
    calls: u64,
}

pub fn run(args: &ListArgs) -> anyhow::Result<()> {
    privileges::check().map_err(|why| anyhow!(why))?;
    let pid = args.pid;
    target::check_target(pid)?;
    let mut listing = Listing {
        pid,
        comm: target::comm(pid),
        runtime: None,
        vm: None,
        nif_mode: None,
        watched_ns: 0,
        nif_libraries: Vec::new(),
        libraries: mapped_libraries(pid)?,
    };
    if let Some(vm) = beam::vm_of_pid(pid)? {
        let wants = Wants::counting_nifs();
        let mut crossings = Crossings::default();
        let prepared = crossings.prepare(&wants, Target::Pid { pid, wait: false })?;
        let nif = crossings
            .nif
            .as_mut()
            .ok_or_else(|| anyhow!("pid {pid}: no NIF tracing for its VM"))?;
        let libraries = nif.resolver.scan(pid, &mut crossings.table)?;
        let (calls, crossings) = if args.duration.is_zero() {
            (HashMap::new(), crossings)
        } else {
            let (calls, watched, crossings) = watch(wants, crossings, prepared, args.duration)?;
            listing.watched_ns = u64::try_from(watched.as_nanos()).unwrap_or(u64::MAX);
            (calls, crossings)
        };
        let mode = crossings.nif.as_ref().map(NifTracing::mode_name);
        listing.runtime = Some("beam");
        listing.vm = Some(vm.display().to_string());
        listing.nif_mode = mode;
        for library in libraries {
            let mut functions: Vec<NifListing> = library
                .functions
                .iter()
                .map(|(id, f)| NifListing {
                    function: f.display_name(),
                    arity: f.arity,
                    dirty: f.dirty(),
                    calls: calls.get(id).copied().unwrap_or(0),
                })
                .collect();
            functions.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.function.cmp(&b.function)));
            listing.nif_libraries.push(NifLibraryListing {
                library: library
                    .path
                    .rsplit('/')
                    .next()
                    .unwrap_or(&library.path)
                    .to_owned(),
                module: library
                    .functions
                    .first()
                    .map(|(_, f)| f.module.clone())
                    .unwrap_or_default(),
                path: library.path,
                functions,
            });
        }
    }
    if args.json {
        super::output::json(&listing)?;
    } else {
        super::output::print(&render(&listing))?;
    }
    Ok(())
}

/// Counts NIF calls per boundary for `duration` (or until Ctrl-C); returns them, how
/// long the probes really watched (from attached to the last read, not loading or
/// detaching), and what the session learnt. The session's drain names the calls, a
/// [`CallCounts`] sink counts them.
fn watch(
    wants: Wants,
    crossings: Crossings,
    prepared: Prepared<'_>,
    duration: std::time::Duration,
) -> anyhow::Result<(HashMap<u32, u64>, std::time::Duration, Crossings)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the event loop")?;
    runtime.block_on(async {
        let mut signals = Signals::install()?;
        let mut session = Session::open(wants, crossings, 0, 0)?;
        session.attach(prepared)?;
        let mut counts = CallCounts::default();
        let started = Instant::now();
        let deadline = Some(tokio::time::Instant::now() + duration);
        loop {
            let stop = session.next(&mut signals, deadline, None).await?;
            let batch = session.drain();
            sink::feed(&batch, session.names(), &mut [&mut counts])?;
            if stop {
                break;
            }
        }
        let watched = started.elapsed();
        Ok((counts.0, watched, session.close()))
    })
}

/// Calls per boundary: what `list` shows of a watch.
#[derive(Default)]
struct CallCounts(HashMap<u32, u64>);

impl Sink for CallCounts {
    fn calls(&mut self, calls: &[CallEvent], _names: &Names) -> anyhow::Result<()> {
        for call in calls {
            *self.0.entry(call.record.boundary).or_default() += 1;
        }
        Ok(())
    }
}

fn mapped_libraries(pid: u32) -> anyhow::Result<Vec<String>> {
    let mut libs: Vec<String> = maps::read(pid)
        .with_context(|| format!("reading the memory maps of pid {pid}"))?
        .into_iter()
        .filter_map(|m| m.path)
        .filter(|p| p.contains(".so"))
        .collect();
    libs.sort();
    libs.dedup();
    Ok(libs)
}

fn render(l: &Listing) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "pid {} ({})", l.pid, l.comm);
    match (&l.vm, l.nif_mode) {
        (Some(vm), Some(mode)) => {
            let _ = writeln!(out, "runtime: Erlang/Elixir VM {vm}");
            let _ = writeln!(
                out,
                "NIF tracing: {mode} mode{}",
                if mode == "dispatch" {
                    " (probes on beam_jit_call_nif and erts_call_dirty_nif catch every NIF)"
                } else {
                    " (a probe pair on each NIF function)"
                }
            );
            if l.nif_libraries.is_empty() {
                out.push_str("no NIF library is loaded yet\n");
            }
            for lib in &l.nif_libraries {
                let _ = writeln!(
                    out,
                    "\n{} ({}): {} NIF(s)",
                    lib.library,
                    lib.path,
                    lib.functions.len()
                );
                let width = lib
                    .functions
                    .iter()
                    .map(|f| f.function.len())
                    .max()
                    .unwrap_or(8);
                let watched = if l.watched_ns > 0 {
                    format!("CALLS in {}", human_ns(l.watched_ns))
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "  {:<width$}  {:<9}  {watched}",
                    "FUNCTION", "SCHEDULER"
                );
                for f in &lib.functions {
                    let kind = match f.dirty {
                        Some("cpu") => "dirty cpu",
                        Some(_) => "dirty io",
                        None => "normal",
                    };
                    let calls = if l.watched_ns > 0 {
                        f.calls.to_string()
                    } else {
                        String::new()
                    };
                    let _ = writeln!(out, "  {:<width$}  {kind:<9}  {calls}", f.function);
                }
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "runtime: none detected (no Erlang/Elixir VM); trace its C-ABI functions with --ffi LIB[:GLOB]"
            );
            let _ = writeln!(out, "\nshared libraries ({}):", l.libraries.len());
            for lib in &l.libraries {
                let _ = writeln!(out, "  {lib}");
            }
        }
    }
    out
}

//! Erlang/Elixir: finding the VM, its NIF dispatch functions and its NIF libraries.

pub mod dispatch;
pub mod entry;
pub mod resolve;
pub mod tracing;

use std::path::{Path, PathBuf};

use super::{ProbeError, elf::ElfImage, proc::maps};
pub use dispatch::Dispatch;

/// Programs that run a BEAM: with one of these as the command, `record -- CMD` traces
/// NIFs without being asked.
const LAUNCHERS: &[&str] = &[
    "erl", "erlexec", "elixir", "iex", "escript", "mix", "rebar3",
];

/// How NIF calls are caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NifMode {
    /// Probe the VM's dispatch functions (one probe pair for every NIF), else fall back.
    Auto,
    /// Probe `beam_jit_call_nif` and `erts_call_dirty_nif`.
    Dispatch,
    /// Probe every NIF function found in the libraries' NIF tables.
    Fptr,
}

/// A BEAM virtual machine executable and what it offers.
pub struct Vm {
    /// `beam.smp`, reachable from our mount namespace.
    pub path: PathBuf,
    /// The dispatch functions, or why they cannot be used.
    pub dispatch: Result<Dispatch, String>,
}

impl Vm {
    pub fn open(path: &Path) -> Result<Self, ProbeError> {
        let image = ElfImage::read(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            dispatch: dispatch::find(&image),
        })
    }
}

/// Whether `name` is the file name of a BEAM executable (`beam.smp`, `beam.debug.smp`…).
pub fn is_vm_name(name: &str) -> bool {
    name.starts_with("beam") && name.ends_with(".smp")
}

/// The VM a running process executes, if it is a BEAM.
pub fn vm_of_pid(pid: u32) -> Result<Option<PathBuf>, ProbeError> {
    let mappings = maps::read(pid)?;
    Ok(mappings
        .iter()
        .find(|m| m.executable && m.file_name().is_some_and(is_vm_name))
        .and_then(|m| m.path.as_deref())
        .map(|p| maps::host_path(pid, p)))
}

/// Is `boundary` one of the NIF dispatch probes' ids, which userspace names per call?
pub fn is_dispatch(boundary: u32) -> bool {
    boundary == xlperf_common::NIF_DISPATCH_NORMAL || boundary == xlperf_common::NIF_DISPATCH_DIRTY
}

/// Processes running the VM at `vm` now.
pub fn running(vm: &Path) -> Vec<u32> {
    crate::probe::proc::process::all_pids()
        .into_iter()
        .filter(|&pid| crate::probe::proc::process::exe(pid).is_some_and(|exe| exe == vm))
        .collect()
}

/// Whether a command (its program's file name) starts a BEAM.
pub fn is_launcher(program: &Path) -> bool {
    program
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| LAUNCHERS.contains(&n) || is_vm_name(n))
}

/// The VM a launcher will run: the program itself when it is `beam.smp`, otherwise the
/// `erts-*/bin/beam.smp` of the Erlang installation `erl` belongs to.
pub fn vm_for_program(program: &Path) -> Result<PathBuf, ProbeError> {
    if program
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_vm_name)
    {
        return Ok(program.to_path_buf());
    }
    let not_found = |why: &str| ProbeError::VmNotFound {
        why: why.to_owned(),
    };
    let erl =
        super::proc::target::find_program("erl").map_err(|_| not_found("`erl` is not in $PATH"))?;
    // /usr/bin/erl -> /usr/lib/erlang/bin/erl: the installation root is two levels up.
    let erl = std::fs::canonicalize(&erl).unwrap_or(erl);
    let root = erl
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| not_found("cannot tell the Erlang root from the erl path"))?;
    let mut candidates: Vec<PathBuf> = std::fs::read_dir(root)
        .map_err(|_| not_found("cannot list the Erlang root directory"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("erts-"))
        .map(|e| e.path().join("bin/beam.smp"))
        .filter(|p| p.is_file())
        .collect();
    // Several ERTS versions: the newest is what `erl` starts (erts-13.1.5 > erts-9.3).
    candidates.sort_by_key(|p| erts_version(p));
    candidates
        .pop()
        .ok_or_else(|| not_found(&format!("no erts-*/bin/beam.smp under {}", root.display())))
}

/// The version numbers of an `erts-X.Y.Z/bin/beam.smp` path, for ordering.
fn erts_version(beam: &Path) -> Vec<u32> {
    beam.ancestors()
        .filter_map(|a| a.file_name()?.to_str()?.strip_prefix("erts-"))
        .flat_map(|v| v.split('.').map(|n| n.parse().unwrap_or(0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erts_versions_order_numerically() {
        let mut dirs = [
            PathBuf::from("/usr/lib/erlang/erts-13.1.5/bin/beam.smp"),
            PathBuf::from("/usr/lib/erlang/erts-9.3/bin/beam.smp"),
            PathBuf::from("/usr/lib/erlang/erts-13.10/bin/beam.smp"),
        ];
        dirs.sort_by_key(|p| erts_version(p));
        assert!(dirs[0].to_string_lossy().contains("erts-9.3"));
        assert!(dirs[2].to_string_lossy().contains("erts-13.10"));
    }

    #[test]
    fn vm_names_and_launchers() {
        assert!(is_vm_name("beam.smp") && is_vm_name("beam.debug.smp"));
        assert!(!is_vm_name("beam") && !is_vm_name("erl"));
        assert!(is_launcher(Path::new("/usr/bin/elixir")) && is_launcher(Path::new("mix")));
        assert!(!is_launcher(Path::new("/usr/bin/python3")));
    }
}

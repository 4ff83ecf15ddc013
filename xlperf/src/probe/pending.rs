//! `--ffi` libraries a command has not mapped yet, attached the moment it maps them.
//!
//! A library named by its file name is attached only once the process maps a file of
//! that name: what it really runs (its RUNPATH, `LD_LIBRARY_PATH`, a bundled copy, a
//! module it `dlopen`s), never a look-alike from the linker cache that it never loads.
//! While any is missing, a probe on the dynamic linker's `_dl_debug_state` stops the
//! process each time it has mapped libraries, before their code runs (see
//! `xlperf_common::rtld`); xlperf attaches to what is new and lets it go on. No call is
//! missed, and a library never mapped is reported as such, not as "nothing was called".

use std::{
    num::NonZeroU32,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::HashMap as BpfHashMap,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};

use super::{
    ProbeError,
    boundary::{self, BoundaryTable},
    bpf::{
        attach::{self, Attachment},
        links::Links,
    },
    elf::{ElfImage, prologue},
    library::{self, Found, Scope},
    proc::maps,
};
use crate::cli::FfiSpec;
use crate::model::ProbeCosts;

/// The dynamic linker most x86-64 programs name as their interpreter.
const DEFAULT_INTERPRETER: &str = "/lib64/ld-linux-x86-64.so.2";
const DEBUG_STATE: &str = "_dl_debug_state";
pub const RTLD_DEBUG_STATE: &str = "rtld_debug_state";
const RTLD_WATCH: &str = "RTLD_WATCH";

/// Specs of one process waiting for their library.
#[derive(Debug)]
pub struct Pending {
    pid: u32,
    waiting: Vec<FfiSpec>,
}

/// A spec whose library the process now maps: its file and the boundaries added for it.
#[derive(Debug)]
pub struct Resolved {
    pub spec: FfiSpec,
    pub path: PathBuf,
    pub ids: Vec<u32>,
}

/// A spec whose library was mapped but named nothing in it, and why.
pub type Unmatched = (FfiSpec, ProbeError);

impl Pending {
    pub fn new(pid: u32, waiting: Vec<FfiSpec>) -> Self {
        Self { pid, waiting }
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The library names still not mapped.
    pub fn names(&self) -> Vec<String> {
        self.waiting
            .iter()
            .map(|s| s.library.display().to_string())
            .collect()
    }

    /// Adds to `table` the functions of every waiting library the process maps now.
    /// A mapped library none of whose functions match is an error for that spec alone:
    /// it is returned with the others' results and no longer waited for.
    pub fn resolve(&mut self, table: &mut BoundaryTable) -> (Vec<Resolved>, Vec<Unmatched>) {
        let Ok(mappings) = maps::read(self.pid) else {
            return (Vec::new(), Vec::new());
        };
        let mut resolved = Vec::new();
        let mut failed = Vec::new();
        let mut still = Vec::new();
        for spec in self.waiting.drain(..) {
            let name = spec.library.to_string_lossy().into_owned();
            let found = mappings
                .iter()
                .filter_map(|m| m.path.as_deref())
                .find(|p| library::name_matches(p.rsplit('/').next().unwrap_or(p), &name));
            let Some(path) = found else {
                still.push(spec);
                continue;
            };
            let path = maps::host_path(self.pid, path);
            match table.add_file(&spec, &path) {
                Ok(ids) => resolved.push(Resolved { spec, path, ids }),
                Err(e) => failed.push((spec, e)),
            }
        }
        self.waiting = still;
        (resolved, failed)
    }
}

/// The boundaries a command gets before it starts (paths, its own executable), and the
/// specs whose library it must map first, checked now against the file the loader's
/// search finds when it finds one (their function count is the third value).
pub fn add_for_command(
    table: &mut BoundaryTable,
    specs: &[FfiSpec],
    program: &Path,
) -> Result<(Vec<u32>, Vec<FfiSpec>, usize), ProbeError> {
    let scope = Scope::Program(program);
    let (mut ids, mut later, mut expected_functions) = (Vec::new(), Vec::new(), 0);
    for spec in specs {
        match library::find(&spec.library, &scope)? {
            Found::File(path) => {
                for id in table.add_file(spec, &path)? {
                    if !ids.contains(&id) {
                        ids.push(id);
                    }
                }
            }
            Found::Later { expected } => {
                if let Some(path) = &expected {
                    expected_functions +=
                        boundary::select(spec, path, &ElfImage::read(path)?)?.len();
                }
                later.push(spec.clone());
            }
        }
    }
    Ok((ids, later, expected_functions))
}

/// Attaches to every library `pending`'s process waited for and maps now (the process is
/// stopped meanwhile), in `links`; stops watching it once it waits for nothing. Returns
/// what was attached, and the specs that matched nothing in the file the process mapped
/// (they are not waited for any more). The caller resumes the process.
pub fn attach_mapped(
    ebpf: &mut Ebpf,
    costs: &ProbeCosts,
    table: &mut BoundaryTable,
    pending: &mut Pending,
    links: &mut Links,
    max_functions: usize,
) -> Result<(Vec<Resolved>, Vec<Unmatched>), ProbeError> {
    let pid = pending.pid();
    let (resolved, failed) = pending.resolve(table);
    if table.len() > max_functions {
        return Err(ProbeError::TooManyFunctions {
            count: table.len(),
            max: max_functions,
        });
    }
    let nonzero = super::proc::target::check_pid(pid)?;
    for found in &resolved {
        attach::attach_ffi(
            ebpf,
            costs,
            table,
            &[Attachment::pid(nonzero, found.ids.clone())],
            links,
        )?;
    }
    if pending.is_empty() {
        set_watched(ebpf, pid, false)?;
    }
    Ok((resolved, failed))
}

/// The dynamic linker `program` will run under: its PT_INTERP; for a script, that of the
/// interpreter on its `#!` line (followed a few levels); else the usual one.
pub fn interpreter(program: &Path) -> PathBuf {
    let mut current = program.to_path_buf();
    for _ in 0..4 {
        let Ok(data) = std::fs::read(&current) else {
            break;
        };
        if let Some(interp) = pt_interp(&data) {
            return std::fs::canonicalize(&interp).unwrap_or(interp);
        }
        // `#!/usr/bin/env bash` names bash's loader as well as env's: env's will do.
        let Some(next) = shebang(&data) else {
            break;
        };
        current = next;
    }
    let path = PathBuf::from(DEFAULT_INTERPRETER);
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// The PT_INTERP program header of an ELF file (present even without section headers).
fn pt_interp(data: &[u8]) -> Option<PathBuf> {
    use object::{
        Endianness,
        elf::{FileHeader64, PT_INTERP},
        read::elf::{FileHeader as _, ProgramHeader as _},
    };
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let segment = header
        .program_headers(endian, data)
        .ok()?
        .iter()
        .find(|p| p.p_type(endian) == PT_INTERP)?;
    let bytes = segment.data(endian, data).ok()?;
    let text = std::str::from_utf8(bytes).ok()?.trim_end_matches('\0');
    Some(PathBuf::from(text))
}

/// The interpreter named by a script's `#!` line.
fn shebang(data: &[u8]) -> Option<PathBuf> {
    let line = data.strip_prefix(b"#!")?.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(line).ok()?;
    text.split_whitespace().next().map(PathBuf::from)
}

/// Attaches the `_dl_debug_state` probe of `ld_so` for process `pid`, and lists the pid
/// as waiting (its map changes stop it until [`resume`]).
pub fn watch(
    ebpf: &mut Ebpf,
    links: &mut Links,
    pid: NonZeroU32,
    ld_so: &Path,
) -> Result<(), ProbeError> {
    let image = ElfImage::read(ld_so)?;
    let function = image
        .function(DEBUG_STATE)
        .ok_or_else(|| ProbeError::NoMatchingFunction {
            path: ld_so.to_owned(),
            glob: DEBUG_STATE.into(),
            count: image.functions.len(),
        })?;
    let site = prologue::choose(
        image.code(function, prologue::CODE_WINDOW),
        prologue::Reads::Nothing,
    );
    let point = UProbeAttachPoint {
        location: UProbeAttachLocation::AbsoluteOffset(function.file_offset + site.offset),
        cookie: None,
    };
    links.attach(
        ebpf,
        RTLD_DEBUG_STATE,
        point,
        ld_so,
        UProbeScope::OneProcess(pid),
        || format!("{DEBUG_STATE} in {}", ld_so.display()),
    )?;
    set_watched(ebpf, pid.get(), true)
}

/// Lists or unlists `pid` as waiting for libraries: an unlisted process is never stopped.
pub fn set_watched(ebpf: &mut Ebpf, pid: u32, on: bool) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(RTLD_WATCH)
        .ok_or(ProbeError::MissingMap { name: RTLD_WATCH })?;
    let mut watch = BpfHashMap::<_, u32, u32>::try_from(map).map_err(|source| ProbeError::Map {
        what: "opening the library-watch map".into(),
        source,
    })?;
    let result = if on {
        watch.insert(pid, 1, 0)
    } else {
        // A process never watched (found by --comm) is not in the map: nothing to undo.
        match watch.remove(&pid) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            other => other,
        }
    };
    result.map_err(|source| ProbeError::Map {
        what: format!("updating the library-watch entry of pid {pid}"),
        source,
    })
}

/// Lets a process the `_dl_debug_state` probe stopped run again.
pub fn resume(pid: u32) {
    // SAFETY: kill with a valid signal number only sends a signal.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
}

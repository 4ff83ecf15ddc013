//! `--alloc`: where the allocator lives in a target and the probes on it.
//!
//! The malloc family gets an entry probe (arguments) and a return probe (the block);
//! `free` only an entry probe. Every probe goes at the site `prologue::choose` picks:
//! glibc's `free` starts `endbr64; test %rdi,%rdi; je`, and probing the `je` (emulated)
//! instead of `endbr64` (single-stepped) is what makes a probe on every free affordable.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};

pub use crate::model::AllocProbe;

use super::{
    ProbeError,
    bpf::{links::Links, loader},
    elf::{ElfImage, prologue},
    library::{self, Scope},
    proc::maps,
};
use crate::model::{ProbeCosts, ProbeSite};

/// The C allocator's entry points, the entry program each one takes, and how many of
/// its arguments that program reads (the probe may not move past writes to them).
const LIBC_FUNCTIONS: &[(&str, &str, u8)] = &[
    ("malloc", loader::MALLOC_ENTRY, 1),
    ("calloc", loader::CALLOC_ENTRY, 2),
    ("realloc", loader::REALLOC_ENTRY, 2),
    ("reallocarray", loader::REALLOCARRAY_ENTRY, 3),
    ("posix_memalign", loader::POSIX_MEMALIGN_ENTRY, 3),
    ("aligned_alloc", loader::MEMALIGN_ENTRY, 2),
    ("memalign", loader::MEMALIGN_ENTRY, 2),
    ("valloc", loader::MALLOC_ENTRY, 1),
    ("free", loader::FREE_ENTRY, 1),
];

/// The BEAM's NIF allocator: enif_alloc goes to erts_alloc, not to malloc.
const ENIF_FUNCTIONS: &[(&str, &str, u8)] = &[
    ("enif_alloc", loader::MALLOC_ENTRY, 1),
    ("enif_realloc", loader::REALLOC_ENTRY, 2),
    ("enif_free", loader::FREE_ENTRY, 1),
];

/// File-name prefixes of allocators that replace glibc's malloc when mapped.
const REPLACEMENTS: &[&str] = &["libjemalloc", "libmimalloc", "libtcmalloc"];

/// An allocator function to probe.
#[derive(Debug, Clone)]
struct Site {
    library: PathBuf,
    function: String,
    file_offset: u64,
    site: ProbeSite,
    entry: &'static str,
}

/// The allocator probes of one target.
#[derive(Debug, Default)]
pub struct AllocTracing {
    sites: Vec<Site>,
}

impl AllocTracing {
    /// Finds the allocators of a target before anything is attached: its libc, any
    /// replacement allocator it maps (or preloads), and `vm`'s enif_alloc for a BEAM.
    pub fn prepare(scope: &Scope<'_>, vm: Option<&Path>) -> Result<Self, ProbeError> {
        let mut tracing = Self::default();
        let libc = library::resolve(Path::new("libc.so.6"), scope)?;
        tracing.add(&libc, LIBC_FUNCTIONS, true)?;
        for replacement in replacements(scope) {
            tracing.add(&replacement, LIBC_FUNCTIONS, false)?;
        }
        if let Some(vm) = vm {
            tracing.add(vm, ENIF_FUNCTIONS, false)?;
        }
        Ok(tracing)
    }

    fn add(
        &mut self,
        path: &Path,
        functions: &[(&str, &'static str, u8)],
        required: bool,
    ) -> Result<(), ProbeError> {
        let image = ElfImage::read(path)?;
        // Aliases (glibc's aligned_alloc is memalign) share one probe: two would count twice.
        let mut seen = HashSet::new();
        let before = self.sites.len();
        for &(name, entry, args) in functions {
            let Some(function) = image.function(name) else {
                continue;
            };
            if function.ifunc || !seen.insert(function.vaddr) {
                continue;
            }
            self.sites.push(Site {
                library: path.to_owned(),
                function: name.to_owned(),
                file_offset: function.file_offset,
                site: prologue::choose(
                    image.code(function, prologue::CODE_WINDOW),
                    prologue::Reads::Args(args),
                ),
                entry,
            });
        }
        if required && self.sites.len() == before {
            return Err(ProbeError::NoAllocator {
                library: path.to_owned(),
            });
        }
        Ok(())
    }

    /// The probes, for the summary.
    pub fn probes(&self) -> Vec<AllocProbe> {
        self.sites
            .iter()
            .map(|s| AllocProbe {
                library: s
                    .library
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                function: s.function.clone(),
                offset: s.site.offset,
                emulated: s.site.emulated,
            })
            .collect()
    }

    /// Attaches the probes in `scope`; returns how many. Return probes first, so that a
    /// call in flight at attach time is ignored rather than left half-seen.
    pub fn attach(
        &self,
        ebpf: &mut Ebpf,
        costs: &ProbeCosts,
        links: &mut Links,
        scope: UProbeScope,
    ) -> Result<usize, ProbeError> {
        let before = links.len();
        let exits = self.sites.iter().filter(|s| s.entry != loader::FREE_ENTRY);
        let attachments = exits
            .map(|s| (loader::ALLOC_EXIT, s))
            .chain(self.sites.iter().map(|s| (s.entry, s)));
        for (program, site) in attachments {
            let offset = site.file_offset + site.site.offset;
            // The exit probe charges its pair's cost, free's entry probe its own.
            let cookie = match program {
                loader::ALLOC_EXIT => costs.alloc_cookie(site.site, false),
                loader::FREE_ENTRY => costs.alloc_cookie(site.site, true),
                _ => 0,
            };
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(cookie),
            };
            let what = format!(
                "{}:{} (offset {offset:#x})",
                site.library.display(),
                site.function
            );
            links.attach(ebpf, program, point, &site.library, scope, || what.clone())?;
        }
        Ok(links.len() - before)
    }
}

/// Replacement allocators: mapped by a running process, or preloaded into a command.
fn replacements(scope: &Scope<'_>) -> Vec<PathBuf> {
    let is_replacement = |path: &Path| {
        path.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| REPLACEMENTS.iter().any(|r| n.starts_with(r)))
    };
    let mut found: Vec<PathBuf> = match scope {
        Scope::Pid(pid) => maps::read(*pid)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.path)
            .filter(|p| is_replacement(Path::new(p)))
            .map(|p| maps::host_path(*pid, &p))
            .collect(),
        Scope::Program(_) => std::env::var("LD_PRELOAD")
            .unwrap_or_default()
            .split([':', ' '])
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .filter(|p| is_replacement(p))
            .filter_map(|p| library::resolve(&p, scope).ok())
            .collect(),
        Scope::All => Vec::new(),
    };
    found.sort();
    found.dedup();
    found
}

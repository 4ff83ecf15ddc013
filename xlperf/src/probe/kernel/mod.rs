//! Kernel functions for `--kfunc`: which exist and can be probed (tracefs'
//! `available_filter_functions`), where they are (`/proc/kallsyms`), and attaching the
//! kprobe pair to them (`attach`).

pub mod attach;
mod kallsyms;

use std::{collections::BTreeSet, path::Path};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use xlperf_common::MAX_KFUNCS;

use super::{ProbeError, bpf::tracefs};

/// The kprobe PMU: absent on kernels built without CONFIG_KPROBES.
const KPROBE_PMU: &str = "/sys/bus/event_source/devices/kprobe";

/// One kernel function to trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFunction {
    pub name: String,
    /// The module defining it, `None` for the kernel image itself.
    pub module: Option<String>,
    /// Its address, from `/proc/kallsyms`.
    pub addr: u64,
}

impl KernelFunction {
    /// What rows call its file: `vmlinux`, or the module's name.
    pub fn library(&self) -> &str {
        self.module.as_deref().unwrap_or("vmlinux")
    }
}

/// Whether this kernel can place kprobes and kretprobes.
pub fn has_kprobes() -> bool {
    Path::new(KPROBE_PMU).join("format/retprobe").exists()
}

/// The functions the `--kfunc` globs name, at most `max` (and [`MAX_KFUNCS`]). Each
/// glob must name at least one; a name the kernel defines more than once (static
/// functions of the same name) cannot be told apart by a kprobe and is an error.
pub fn resolve(globs: &[String], max: usize) -> Result<Vec<KernelFunction>, ProbeError> {
    if globs.is_empty() {
        return Ok(Vec::new());
    }
    let listed = probeable()?;
    let matchers = globs
        .iter()
        .map(|g| Ok((g, matcher(g)?)))
        .collect::<Result<Vec<_>, ProbeError>>()?;
    // A name two globs match is one function.
    let mut chosen = BTreeSet::new();
    for (glob, set) in &matchers {
        let mut matched = false;
        for line in listed.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && set.is_match(name) {
                matched = true;
                chosen.insert(name.to_owned());
            }
        }
        if !matched {
            return Err(ProbeError::NoKernelFunction {
                glob: (*glob).clone(),
            });
        }
    }
    let limit = max.min(MAX_KFUNCS);
    if chosen.len() > limit {
        return Err(ProbeError::TooManyKernelFunctions {
            count: chosen.len(),
            max: limit,
        });
    }
    located(&chosen)
}

/// The first of `names` the kernel lets be probed, read in one pass (the calibration's
/// candidates).
pub fn first_probeable(names: &[&str]) -> Result<KernelFunction, ProbeError> {
    let listed = probeable()?;
    let found = names
        .iter()
        .find(|&&name| {
            listed
                .lines()
                .any(|l| l.split_whitespace().next() == Some(name))
        })
        .ok_or_else(|| ProbeError::NoKernelFunction {
            glob: names.join(", "),
        })?;
    let chosen = BTreeSet::from([(*found).to_owned()]);
    let mut functions = located(&chosen)?;
    functions.pop().ok_or(ProbeError::KernelSymbolMissing {
        name: (*found).to_owned(),
    })
}

/// The functions kprobes can be placed on: `available_filter_functions`, one per line
/// (`name` or `name [module]`).
fn probeable() -> Result<String, ProbeError> {
    if !has_kprobes() {
        return Err(ProbeError::NoKprobes);
    }
    tracefs::ensure_mounted().map_err(|source| ProbeError::Tracefs { source })?;
    let path = tracefs::root().join("available_filter_functions");
    std::fs::read_to_string(&path).map_err(|source| ProbeError::Read { path, source })
}

/// `chosen`, with their addresses from /proc/kallsyms.
fn located(chosen: &BTreeSet<String>) -> Result<Vec<KernelFunction>, ProbeError> {
    let addresses = kallsyms::text_symbols(chosen)?;
    let mut functions = Vec::new();
    for name in chosen {
        match addresses.get(name).map(Vec::as_slice) {
            Some([(addr, module)]) => functions.push(KernelFunction {
                name: name.clone(),
                module: module.clone(),
                addr: *addr,
            }),
            Some([]) | None => {
                return Err(ProbeError::KernelSymbolMissing { name: name.clone() });
            }
            Some(many) => {
                return Err(ProbeError::AmbiguousKernelFunction {
                    name: name.clone(),
                    count: many.len(),
                });
            }
        }
    }
    Ok(functions)
}

fn matcher(glob: &str) -> Result<GlobSet, ProbeError> {
    let bad = |e: globset::Error| ProbeError::BadGlob {
        glob: glob.to_owned(),
        reason: e.kind().to_string(),
    };
    let mut builder = GlobSetBuilder::new();
    builder.add(
        GlobBuilder::new(glob)
            .literal_separator(false)
            .empty_alternates(true)
            .build()
            .map_err(bad)?,
    );
    builder.build().map_err(bad)
}

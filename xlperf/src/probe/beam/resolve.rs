//! Naming NIF calls: from a NIF's address in a process to its boundary.
//!
//! Libraries are read lazily, the first time a call lands in one, so libraries loaded
//! after the recording started (`erlang:load_nif/2`, `-on_load`) are named like the rest.
//! Addresses that belong to no NIF table are the VM's own trampolines (the stubs that
//! move a dirty NIF to a dirty scheduler, and the finalizers that move it back): they are
//! counted, not reported, so a dirty NIF shows up once, as itself. NIFs built into the VM
//! (`prim_file`, `prim_socket`…) are named from the VM's own data.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
};

use xlperf_common::{NIF_TABLE_MAX_FUNCS, NifTableRecord};

use super::entry::{self, NifFunction};
use crate::probe::{
    ProbeError,
    boundary::BoundaryTable,
    elf::ElfImage,
    proc::maps::{self, Memory},
};

/// NIF tables seen so far, per process.
#[derive(Default)]
pub struct NifResolver {
    processes: HashMap<u32, Process>,
    /// Dispatch-probe calls of VM-internal functions, not reported as NIFs.
    pub vm_internal: u64,
    /// Calls whose process was gone before its NIF could be named.
    pub unresolved: u64,
}

#[derive(Default)]
struct Process {
    /// (library path in the target, load address) already read.
    scanned: HashSet<(String, u64)>,
    /// NIF address -> boundary id, or None for a VM-internal function.
    known: HashMap<u64, Option<u32>>,
    /// The maps last read while the process was alive.
    mappings: Vec<maps::Mapping>,
}

/// A NIF library found in a process.
#[derive(Debug, Clone)]
pub struct NifLibrary {
    pub path: String,
    /// The VM's own NIFs (`prim_file`…), not a loaded library.
    pub builtin: bool,
    pub functions: Vec<(u32, NifFunction)>,
}

impl NifResolver {
    /// The boundary of the NIF at `address` in `pid`; None for VM-internal functions.
    pub fn resolve(&mut self, pid: u32, address: u64, table: &mut BoundaryTable) -> Option<u32> {
        if let Some(&known) = self.processes.get(&pid).and_then(|p| p.known.get(&address)) {
            if known.is_none() {
                self.vm_internal += 1;
            }
            return known;
        }
        // A process that has exited reads as no maps (a zombie) or none at all. Its last
        // maps still tell which file an address was in: an address in a file already
        // read (the VM's trampolines, say) is VM-internal; anything else cannot be named.
        let fresh = maps::read(pid).ok().filter(|m| !m.is_empty());
        let process = self.processes.entry(pid).or_default();
        let alive = fresh.is_some();
        if let Some(fresh) = fresh {
            process.mappings = fresh;
        }
        let mappings = process.mappings.clone();
        let place = mappings.iter().find(|m| m.contains(address)).and_then(|m| {
            let path = m.path.clone()?;
            Some((maps::load_base(&mappings, &path)?, path))
        });
        log::debug!("pid {pid}: new NIF address {address:#x} in {place:?} (alive: {alive})");
        match (&place, alive) {
            (Some((_, path)), true) => {
                if let Err(e) = self.scan_library(pid, &mappings, path, table) {
                    log::debug!("pid {pid}: {path}: {e}");
                }
            }
            (Some((base, path)), false) if process.scanned.contains(&(path.clone(), *base)) => {}
            (None, true) => {}
            _ => {
                self.unresolved += 1;
                return None;
            }
        }
        let process = self.processes.entry(pid).or_default();
        let found = *process.known.entry(address).or_insert(None);
        if found.is_none() {
            self.vm_internal += 1;
        }
        found
    }

    /// Registers the NIFs of a library table the VM's load hook copied out. NIFs built
    /// into the VM (no library path) stay VM-internal, as they are when read from a
    /// running process.
    pub fn add_table(&mut self, record: &NifTableRecord, vm: &Path, table: &mut BoundaryTable) {
        let pid = record.pid;
        let path = c_str(&record.path);
        let module = c_str(&record.module);
        let count = (record.count as usize).min(NIF_TABLE_MAX_FUNCS);
        if record.count as usize > NIF_TABLE_MAX_FUNCS {
            log::debug!(
                "pid {pid}: {path}: {} NIFs, the first {NIF_TABLE_MAX_FUNCS} taken from the load event",
                record.count
            );
        }
        let library = (!path.is_empty()).then(|| absolute(pid, &path));
        let process = self.processes.entry(pid).or_default();
        for f in record.funcs.iter().take(count) {
            let id = library.as_ref().map(|library| {
                let nif = NifFunction {
                    module: module.clone(),
                    name: c_str(&f.name),
                    arity: f.arity,
                    flags: f.flags,
                    address: f.fptr,
                };
                table.add_loaded_nif(library, &nif)
            });
            process.known.insert(f.fptr, id);
        }
        log::debug!(
            "pid {pid}: load hook: {count} NIF(s) of {module} in {}",
            library.as_deref().unwrap_or(vm).display()
        );
    }

    /// Reads every NIF library `pid` has loaded now; returns those not seen before.
    pub fn scan(
        &mut self,
        pid: u32,
        table: &mut BoundaryTable,
    ) -> Result<Vec<NifLibrary>, ProbeError> {
        let mappings = maps::read(pid)?;
        let mut paths: Vec<String> = mappings.iter().filter_map(|m| m.path.clone()).collect();
        paths.dedup();
        let mut found = Vec::new();
        for path in paths {
            match self.scan_library(pid, &mappings, &path, table) {
                // A library with `nif_init` and no NIFs (OTP's crypto_callback.so) is a
                // helper loaded through the NIF loader, not a NIF library.
                Ok(Some(library)) if !library.functions.is_empty() => found.push(library),
                Ok(_) => {}
                Err(e) => log::debug!("pid {pid}: {path}: {e}"),
            }
        }
        Ok(found)
    }

    /// Reads the NIF table of `path` in `pid`, once per load address.
    fn scan_library(
        &mut self,
        pid: u32,
        mappings: &[maps::Mapping],
        path: &str,
        table: &mut BoundaryTable,
    ) -> Result<Option<NifLibrary>, ProbeError> {
        let Some(base) = maps::load_base(mappings, path) else {
            return Ok(None);
        };
        let process = self.processes.entry(pid).or_default();
        if !process.scanned.insert((path.to_owned(), base)) {
            return Ok(None);
        }
        let host = maps::host_path(pid, path);
        let is_vm = std::path::Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(super::is_vm_name);
        if !is_vm && !path.contains(".so") {
            return Ok(None);
        }
        let image = ElfImage::read(&host)?;
        let bias = base.wrapping_sub(image.load_vaddr());
        let mem = Memory::open(pid)?;
        // A library's own `nif_init` names its one entry; the VM's built-in NIFs have no
        // exported init, and their entries are found in its data instead.
        let entries = if is_vm {
            builtin_entries(&mem, &image, bias)?
        } else {
            entry::entry_vaddr(&image)
                .map(|v| bias.wrapping_add(v))
                .into_iter()
                .collect()
        };
        if entries.is_empty() {
            return Ok(None);
        }
        let mut library = NifLibrary {
            path: path.to_owned(),
            builtin: is_vm,
            functions: Vec::new(),
        };
        for addr in entries {
            let functions = match entry::read(&mem, addr) {
                Ok(functions) => functions,
                // The VM's candidates are only words pointing at the right string.
                Err(_) if is_vm => continue,
                Err(e) => return Err(e),
            };
            for function in functions {
                let vaddr = function.address.wrapping_sub(bias);
                let id = table.add_nif(&host, &function, vaddr, &image);
                process.known.insert(function.address, Some(id));
                library.functions.push((id, function));
            }
        }
        log::debug!("pid {pid}: {} NIF(s) in {path}", library.functions.len());
        Ok(Some(library))
    }
}

/// Where the VM's built-in NIF entries may be: every word of its initialised data that
/// points at `"beam.vanilla"`, the `vm_variant` field all entries share, less that
/// field's offset. `entry::read` tells real entries from other uses of the string.
fn builtin_entries(mem: &Memory, image: &ElfImage, bias: u64) -> Result<Vec<u64>, ProbeError> {
    const VM_VARIANT_OFFSET: u64 = 64;
    let variants: Vec<u64> = image
        .find_bytes(b"beam.vanilla\0")
        .into_iter()
        .map(|v| v.wrapping_add(bias))
        .collect();
    let mut entries = Vec::new();
    if variants.is_empty() {
        return Ok(entries);
    }
    for (vaddr, size) in image.writable_segments() {
        let start = vaddr.wrapping_add(bias);
        let mut data = vec![0u8; usize::try_from(size).unwrap_or(0)];
        mem.read(start, &mut data)?;
        for (i, word) in data.chunks_exact(8).enumerate() {
            let value = u64::from_le_bytes(word.try_into().unwrap_or([0; 8]));
            let at = start + 8 * i as u64;
            if variants.contains(&value) && at >= start + VM_VARIANT_OFFSET {
                entries.push(at - VM_VARIANT_OFFSET);
            }
        }
    }
    Ok(entries)
}

fn c_str(bytes: &[u8]) -> String {
    crate::bytes::c_string(bytes)
}

/// A path the VM opened, made absolute against its working directory while it runs.
fn absolute(pid: u32, path: &str) -> PathBuf {
    if path.starts_with('/') {
        return maps::host_path(pid, path);
    }
    crate::probe::proc::process::in_cwd_of(pid, path)
}

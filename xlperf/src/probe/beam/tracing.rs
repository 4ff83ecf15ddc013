//! NIF tracing during a recording: attaching the probes, naming the calls, and (in
//! fallback mode) probing NIF libraries as the VM loads them.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
    programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
};
use xlperf_common::{CallRecord, NIF_DISPATCH_DIRTY, NIF_DISPATCH_NORMAL, NifTableRecord};

use super::{Dispatch, NifMode, Vm, resolve::NifResolver};
use crate::model::{NifRecording, ProbeCosts, ProbeSite};
use crate::probe::{
    ProbeError,
    boundary::BoundaryTable,
    bpf::links::Links,
    bpf::loader::{
        NIF_CALL_ENTRY, NIF_CALL_EXIT, NIF_DIRTY_ENTRY, NIF_DIRTY_EXIT, NIF_FPTR_ENTRY,
        NIF_FPTR_EXIT, NIF_INIT_EXIT, NIF_LOAD_ENTRY, NIF_LOADED_EXIT, NIF_OPEN_ENTRY, NIF_TABLES,
    },
};

/// How the calls are caught, once decided.
pub enum Mode {
    Dispatch(Box<Dispatch>),
    /// Probes on each NIF; the reason dispatch mode was not used, if it was not asked for.
    Fptr {
        reason: Option<String>,
    },
}

pub struct NifTracing {
    pub vm: PathBuf,
    pub mode: Mode,
    pub resolver: NifResolver,
    /// Processes whose libraries are probed one by one (fallback mode).
    fptr_targets: Vec<u32>,
    /// (pid, boundary) pairs already probed in fallback mode.
    probed: HashSet<(u32, u32)>,
    /// NIF tables the VM's load hook reports (dispatch mode).
    tables: Option<RingBuf<MapData>>,
    /// The NIF probes; dropping them (or this) detaches them.
    pub links: Links,
    /// What probes cost here, for the cookies of the NIF probe pairs (set after
    /// calibration, before attaching).
    pub costs: ProbeCosts,
}

impl NifTracing {
    /// Decides the mode for the VM at `vm`; fails only when `mode` demands dispatch and the
    /// VM does not allow it.
    pub fn prepare(vm: &Path, mode: NifMode) -> Result<Self, ProbeError> {
        let opened = Vm::open(vm)?;
        let mode = match (mode, opened.dispatch) {
            (NifMode::Auto | NifMode::Dispatch, Ok(dispatch)) => Mode::Dispatch(Box::new(dispatch)),
            (NifMode::Dispatch, Err(why)) => {
                return Err(ProbeError::NoDispatch {
                    vm: vm.to_path_buf(),
                    why,
                });
            }
            (NifMode::Auto, Err(why)) => {
                log::warn!("NIF dispatch probes unavailable ({why}); probing each NIF instead");
                Mode::Fptr { reason: Some(why) }
            }
            (NifMode::Fptr, _) => Mode::Fptr { reason: None },
        };
        Ok(Self {
            vm: vm.to_path_buf(),
            mode,
            resolver: NifResolver::default(),
            fptr_targets: Vec::new(),
            probed: HashSet::new(),
            tables: None,
            links: Links::default(),
            costs: ProbeCosts::default(),
        })
    }

    /// Where the dispatch probes sit (their site is every NIF row's), in dispatch mode.
    pub fn dispatch_site(&self) -> Option<ProbeSite> {
        match &self.mode {
            Mode::Dispatch(d) => Some(d.call_nif.site),
            Mode::Fptr { .. } => None,
        }
    }

    /// How the NIF calls were caught, for the summary.
    pub fn recording(&self, long_call_threshold_ns: u64) -> NifRecording {
        NifRecording {
            mode: self.mode_name().into(),
            fallback_reason: match &self.mode {
                Mode::Fptr { reason } => reason.clone(),
                Mode::Dispatch(_) => None,
            },
            vm: self.vm.display().to_string(),
            long_call_threshold_ns,
            vm_internal_calls: self.resolver.vm_internal,
            unresolved_calls: self.resolver.unresolved,
        }
    }

    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Dispatch(_) => "dispatch",
            Mode::Fptr { .. } => "fptr",
        }
    }

    /// Attaches for one target: the dispatch pair, or a pair on each NIF `pid` has loaded.
    /// Returns the number of probes attached.
    pub fn attach(
        &mut self,
        ebpf: &mut Ebpf,
        table: &mut BoundaryTable,
        scope: UProbeScope,
        pid: Option<u32>,
    ) -> Result<usize, ProbeError> {
        match &self.mode {
            Mode::Dispatch(dispatch) => {
                if self.tables.is_none()
                    && let Some(map) = ebpf.take_map(NIF_TABLES)
                {
                    self.tables =
                        Some(RingBuf::try_from(map).map_err(|source| ProbeError::Map {
                            what: "opening the NIF table ring buffer".into(),
                            source,
                        })?);
                }
                let attached = attach_dispatch(
                    ebpf,
                    &self.vm,
                    dispatch,
                    scope,
                    &self.costs,
                    &mut self.links,
                )?;
                // Name what is loaded already while the process surely exists: a VM
                // that exits right after its calls cannot be read afterwards.
                let running = match pid {
                    Some(pid) if super::vm_of_pid(pid).ok().flatten().is_some() => vec![pid],
                    Some(_) => Vec::new(),
                    None => super::running(&self.vm),
                };
                for pid in running {
                    if let Err(e) = self.resolver.scan(pid, table) {
                        log::warn!("pid {pid}: reading its NIF tables: {e}");
                    }
                }
                Ok(attached)
            }
            Mode::Fptr { .. } => {
                let Some(pid) = pid else {
                    return Err(ProbeError::FptrNeedsProcess);
                };
                self.fptr_targets.push(pid);
                self.attach_new_functions(ebpf, table, pid)
            }
        }
    }

    /// Fallback mode: probes NIF libraries loaded since the last call. Dispatch mode needs
    /// nothing: its probes already see every library.
    pub fn rescan(
        &mut self,
        ebpf: &mut Ebpf,
        table: &mut BoundaryTable,
    ) -> Result<usize, ProbeError> {
        let mut attached = 0;
        for pid in self.fptr_targets.clone() {
            match self.attach_new_functions(ebpf, table, pid) {
                Ok(n) => attached += n,
                // The process exited: nothing more to probe in it.
                Err(ProbeError::NoSuchProcess { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(attached)
    }

    fn attach_new_functions(
        &mut self,
        ebpf: &mut Ebpf,
        table: &mut BoundaryTable,
        pid: u32,
    ) -> Result<usize, ProbeError> {
        let libraries = self.resolver.scan(pid, table)?;
        let Some(nonzero) = std::num::NonZeroU32::new(pid) else {
            return Ok(0);
        };
        // Not the VM's built-in NIFs: over a hundred probes on the VM itself take the
        // kernel tens of seconds to install (measured: 27 s for 112 on 6.18), and these
        // NIFs belong to OTP, not to the libraries fallback mode is for.
        let ids: Vec<u32> = libraries
            .iter()
            .filter(|l| !l.builtin)
            .flat_map(|l| l.functions.iter().map(|(id, _)| *id))
            .filter(|&id| self.probed.insert((pid, id)))
            .collect();
        let before = self.links.len();
        // Return probes first, as for FFI functions (see attach.rs).
        for program in [NIF_FPTR_EXIT, NIF_FPTR_ENTRY] {
            for &id in &ids {
                let Some(b) = table.get(id) else { continue };
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(b.attach_offset()),
                    cookie: Some(self.costs.pair_cookie(id, b.site)),
                };
                let scope = UProbeScope::OneProcess(nonzero);
                self.links
                    .attach(ebpf, program, point, &b.library, scope, || {
                        format!("NIF {} in {}", b.function, b.library.display())
                    })?;
            }
        }
        let attached = self.links.len() - before;
        if !ids.is_empty() {
            log::info!("pid {pid}: probing {} new NIF function(s)", ids.len());
        }
        Ok(attached)
    }

    /// Names a batch of call records just drained from the ring buffer, and drops the
    /// calls that were not user NIFs. The NIF tables are read after the calls were: a
    /// library's table is emitted before any of its calls, so every table the batch
    /// needs is in by now.
    pub fn name_batch<T>(
        &mut self,
        batch: &mut Vec<T>,
        table: &mut BoundaryTable,
        call: impl Fn(&mut T) -> &mut CallRecord,
    ) {
        self.drain_tables(table);
        batch.retain_mut(|item| self.name(call(item), table));
    }

    /// The boundary of the NIF at `address` in `pid`, for figures other than calls (off-CPU
    /// periods, live blocks): the call counters of the resolver are left alone.
    pub fn boundary_of(
        &mut self,
        pid: u32,
        address: u64,
        table: &mut BoundaryTable,
    ) -> Option<u32> {
        let counts = (self.resolver.vm_internal, self.resolver.unresolved);
        let id = self.resolver.resolve(pid, address, table);
        (self.resolver.vm_internal, self.resolver.unresolved) = counts;
        id
    }

    /// Takes in the NIF tables of libraries loaded since the last call.
    fn drain_tables(&mut self, table: &mut BoundaryTable) {
        let Some(ring) = self.tables.as_mut() else {
            return;
        };
        while let Some(item) = ring.next() {
            let Some(record) = crate::bytes::exact_pod::<NifTableRecord>(&item) else {
                log::warn!("ignoring a NIF table event of {} bytes", item.len());
                continue;
            };
            self.resolver.add_table(&record, &self.vm, table);
        }
    }

    /// Names a record of the dispatch probes (its `target` is the NIF's address) by
    /// rewriting its boundary. False means the call was not a user NIF: drop it.
    fn name(&mut self, record: &mut CallRecord, table: &mut BoundaryTable) -> bool {
        if record.boundary != NIF_DISPATCH_NORMAL && record.boundary != NIF_DISPATCH_DIRTY {
            return true;
        }
        match self.resolver.resolve(record.pid, record.target, table) {
            Some(id) => {
                record.boundary = id;
                true
            }
            None => false,
        }
    }
}

/// The crossing a figure other than a call (an off-CPU period, a live block) belongs to:
/// `boundary` itself, or for the NIF dispatch probes' the NIF at `target` in `pid`
/// (`NO_BOUNDARY` when it is not one).
pub fn crossing(
    nif: Option<&mut NifTracing>,
    pid: u32,
    boundary: u32,
    target: u64,
    table: &mut BoundaryTable,
) -> u32 {
    match nif {
        Some(nif) if super::is_dispatch(boundary) => nif
            .boundary_of(pid, target, table)
            .unwrap_or(xlperf_common::NO_BOUNDARY),
        _ => boundary,
    }
}

fn attach_dispatch(
    ebpf: &mut Ebpf,
    vm: &Path,
    dispatch: &Dispatch,
    scope: UProbeScope,
    costs: &ProbeCosts,
    links: &mut Links,
) -> Result<usize, ProbeError> {
    let before = links.len();
    // The dirty entry probe's cookie carries the NIF pointer's offset in its high half;
    // the return probes' carry the pair's cost.
    let dirty_cookie = u64::from(NIF_DISPATCH_DIRTY) | u64::from(dispatch.dirty_fp_offset) << 32;
    let normal_cookie = u64::from(NIF_DISPATCH_NORMAL);
    let normal_exit = costs.pair_cookie(NIF_DISPATCH_NORMAL, dispatch.call_nif.site);
    let dirty_exit = costs.pair_cookie(NIF_DISPATCH_DIRTY, dispatch.call_dirty_nif.site);
    let mut probes = vec![
        (NIF_CALL_EXIT, &dispatch.call_nif, Some(normal_exit)),
        (NIF_DIRTY_EXIT, &dispatch.call_dirty_nif, Some(dirty_exit)),
        (NIF_CALL_ENTRY, &dispatch.call_nif, Some(normal_cookie)),
        (
            NIF_DIRTY_ENTRY,
            &dispatch.call_dirty_nif,
            Some(dirty_cookie),
        ),
    ];
    if let Some([open, init, load]) = &dispatch.load_hooks {
        // The exit first, as for call probes: a load in flight must not be emitted half-seen.
        probes.extend([
            (NIF_LOADED_EXIT, load, None),
            (NIF_OPEN_ENTRY, open, None),
            (NIF_INIT_EXIT, init, None),
            (NIF_LOAD_ENTRY, load, None),
        ]);
    }
    for (program, site, cookie) in probes {
        let point = UProbeAttachPoint {
            location: UProbeAttachLocation::AbsoluteOffset(site.attach_offset()),
            cookie,
        };
        links.attach(ebpf, program, point, vm, scope, || {
            format!("{} in {}", site.symbol, vm.display())
        })?;
    }
    Ok(links.len() - before)
}

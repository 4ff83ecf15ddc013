//! The kprobe pair on each `--kfunc` function: system-wide (the programs keep only the
//! targets' threads), named to the programs by address, their cost in one map slot.

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap},
};
use xlperf_common::KFUNC_COST_SLOT;

use super::KernelFunction;
use crate::probe::{
    ProbeError,
    bpf::{links::Links, loader},
};

/// Bytes of the `endbr64` that kernels built with IBT put first: their kprobes report
/// the address past it as the function's (6.2+), older ones the symbol's.
const ENDBR64_LEN: u64 = 4;

/// Names `functions` (boundary id, function) to the programs, gives them the pair's
/// cost `cookie` (a `probe_cookie` without a boundary), and attaches the pair to each;
/// returns the probes placed.
pub fn attach(
    ebpf: &mut Ebpf,
    functions: &[(u32, &KernelFunction)],
    cookie: u64,
    links: &mut Links,
) -> Result<usize, ProbeError> {
    name_addresses(ebpf, functions)?;
    set_cost(ebpf, cookie)?;
    let before = links.len();
    for (_, function) in functions {
        // The return probe first: an entry seen without it would leave a frame behind.
        links.attach_kprobe(ebpf, loader::KFUNC_EXIT, &function.name)?;
        links.attach_kprobe(ebpf, loader::KFUNC_ENTRY, &function.name)?;
    }
    Ok(links.len() - before)
}

/// Maps both addresses a kprobe may report for each function to its boundary.
pub fn name_addresses(
    ebpf: &mut Ebpf,
    functions: &[(u32, &KernelFunction)],
) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(loader::KFUNCS).ok_or(ProbeError::MissingMap {
        name: loader::KFUNCS,
    })?;
    let mut by_addr: BpfHashMap<_, u64, u32> =
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
            what: "opening the kernel-function map".into(),
            source,
        })?;
    for (id, function) in functions {
        for addr in [function.addr, function.addr + ENDBR64_LEN] {
            by_addr
                .insert(addr, id, 0)
                .map_err(|source| ProbeError::Map {
                    what: format!("naming kernel function {} to the probes", function.name),
                    source,
                })?;
        }
    }
    Ok(())
}

fn set_cost(ebpf: &mut Ebpf, cookie: u64) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(loader::KFUNC_COST)
        .ok_or(ProbeError::MissingMap {
            name: loader::KFUNC_COST,
        })?;
    let mut cost: Array<_, u64> = Array::try_from(map).map_err(|source| ProbeError::Map {
        what: "opening the kernel-function cost slot".into(),
        source,
    })?;
    cost.set(KFUNC_COST_SLOT, cookie, 0)
        .map_err(|source| ProbeError::Map {
            what: "writing the kernel-function probe cost".into(),
            source,
        })
}

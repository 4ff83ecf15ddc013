//! The embedded eBPF object and access to its programs and maps.

use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{KProbe, ProgramError, UProbe},
};
use xlperf_common::{COUNTERS_SLOT, CallStack, Counters, ProbeTime};

use super::ProbeError;

/// The eBPF object built by build.rs, embedded in the binary.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xlperf"));

/// Program names, as the functions are named in xlperf-ebpf.
pub const FFI_ENTRY: &str = "ffi_entry";
pub const FFI_EXIT: &str = "ffi_exit";
pub const NIF_CALL_ENTRY: &str = "nif_call_entry";
pub const NIF_CALL_EXIT: &str = "nif_call_exit";
pub const NIF_DIRTY_ENTRY: &str = "nif_dirty_entry";
pub const NIF_DIRTY_EXIT: &str = "nif_dirty_exit";
pub const NIF_FPTR_ENTRY: &str = "nif_fptr_entry";
pub const NIF_OPEN_ENTRY: &str = "nif_open_entry";
pub const NIF_INIT_EXIT: &str = "nif_init_exit";
pub const NIF_LOADED_EXIT: &str = "nif_loaded_exit";
pub const NIF_LOAD_ENTRY: &str = "nif_load_entry";
pub const NIF_FPTR_EXIT: &str = "nif_fptr_exit";
pub const MALLOC_ENTRY: &str = "malloc_entry";
pub const CALLOC_ENTRY: &str = "calloc_entry";
pub const MEMALIGN_ENTRY: &str = "memalign_entry";
pub const POSIX_MEMALIGN_ENTRY: &str = "posix_memalign_entry";
pub const REALLOC_ENTRY: &str = "realloc_entry";
pub const REALLOCARRAY_ENTRY: &str = "reallocarray_entry";
pub const ALLOC_EXIT: &str = "alloc_exit";
pub const FREE_ENTRY: &str = "free_entry";
pub const SCHED_SWITCH: &str = "sched_switch";
pub const SCHED_WAKING: &str = "sched_waking";
pub const SCHED_WAKEUP_NEW: &str = "sched_wakeup_new";
pub const MMAP_ENTER: &str = "mmap_enter";
pub const KMALLOC: &str = "kmalloc";
pub const KMEM_CACHE_ALLOC: &str = "kmem_cache_alloc";
pub const MM_PAGE_ALLOC: &str = "mm_page_alloc";
pub const MUNMAP_ENTER: &str = "munmap_enter";
pub const SYS_ENTER: &str = "sys_enter";
pub const SYS_EXIT: &str = "sys_exit";
pub const KFUNC_ENTRY: &str = "kfunc_entry";
pub const KFUNC_EXIT: &str = "kfunc_exit";
pub const EMPTY_ENTRY: &str = "empty_entry";
pub const EMPTY_EXIT: &str = "empty_exit";

/// Map names.
pub const CALL_RECORDS: &str = "CALL_RECORDS";
pub const FFI_COUNTERS: &str = "FFI_COUNTERS";
pub const NIF_TABLES: &str = "NIF_TABLES";
pub const CALL_STACKS: &str = "CALL_STACKS";
pub const LIVE_BLOCKS: &str = "LIVE_BLOCKS";
pub const LAYOUT: &str = "LAYOUT";
pub const TARGETS: &str = "TARGETS";
pub const ALLOC_SAMPLE_BYTES: &str = "ALLOC_SAMPLE_BYTES";
pub const SYSCALL_STATS: &str = "SYSCALL_STATS";
pub const KFUNCS: &str = "KFUNCS";
pub const KFUNC_COST: &str = "KFUNC_COST";

/// Blocks tracked as live at once unless `--alloc-live-max` says otherwise.
pub const DEFAULT_LIVE_BLOCKS: u32 = 262_144;

/// Size of the call-record ring buffer unless the user asks otherwise.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;

/// Loads the object: creates its maps, the call-record ring buffer `ring_bytes` long.
/// Programs are loaded into the kernel on first use.
/// `live_blocks`: capacity of the live-allocation map (`--alloc-live-max`); 0 when
/// allocations are not traced (the map is then kept tiny). `sample_bytes`:
/// `--alloc-sample` (0: every block is tracked).
pub fn load(ring_bytes: u32, live_blocks: u32, sample_bytes: u64) -> Result<Ebpf, ProbeError> {
    raise_fd_limit();
    Ok(EbpfLoader::new()
        .map_max_entries(CALL_RECORDS, ring_bytes)
        .map_max_entries(LIVE_BLOCKS, live_blocks.max(64))
        .override_global(ALLOC_SAMPLE_BYTES, &sample_bytes, true)
        .load(OBJECT)?)
}

/// Takes the call-record ring buffer out of the object, to be read by userspace.
pub fn call_records(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, ProbeError> {
    let ring = ebpf
        .take_map(CALL_RECORDS)
        .ok_or(ProbeError::MissingMap { name: CALL_RECORDS })?;
    RingBuf::try_from(ring).map_err(|source| ProbeError::Map {
        what: "opening the call-record ring buffer".into(),
        source,
    })
}

/// The map `name` of the loaded object.
pub fn map<'a>(ebpf: &'a Ebpf, name: &'static str) -> Result<&'a aya::maps::Map, ProbeError> {
    ebpf.map(name).ok_or(ProbeError::MissingMap { name })
}

/// The per-CPU loss and consistency counters, summed.
pub fn counters(ebpf: &Ebpf) -> Result<Counters, ProbeError> {
    let map = map(ebpf, FFI_COUNTERS)?;
    let what = || "reading the loss counters".to_owned();
    let per_cpu = PerCpuArray::<_, Counters>::try_from(map).map_err(|source| ProbeError::Map {
        what: what(),
        source,
    })?;
    let values = per_cpu
        .get(&COUNTERS_SLOT, 0)
        .map_err(|source| ProbeError::Map {
            what: what(),
            source,
        })?;
    Ok(values.iter().fold(Counters::default(), |sum, cpu| {
        sum.zip_with(cpu, u64::saturating_add)
    }))
}

/// What the uprobes have added to the threads of `pids` so far, as the kernel counted
/// their hits at their calibrated costs (every thread but xlperf's own when `pids` is
/// empty: `--all`).
pub fn probe_time(ebpf: &Ebpf, pids: &[u32]) -> Result<ProbeTime, ProbeError> {
    let map = map(ebpf, CALL_STACKS)?;
    let stacks = HashMap::<_, u32, CallStack>::try_from(map).map_err(|source| ProbeError::Map {
        what: "reading the per-thread probe time".into(),
        source,
    })?;
    let own = std::process::id();
    Ok(stacks
        .iter()
        .filter_map(Result::ok)
        .map(|(_, stack)| stack.thread)
        .filter(|t| {
            if pids.is_empty() {
                t.tgid != own
            } else {
                pids.contains(&t.tgid)
            }
        })
        .fold(ProbeTime::default(), |mut sum, t| {
            sum.add_all(&t.probe);
            sum
        }))
}

/// The uprobe program `name`, verified and loaded into the kernel.
pub fn uprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut UProbe, ProbeError> {
    let program: &mut UProbe = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            what: format!("program {name} is not a uprobe"),
            source,
        })?;
    match program.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(program),
        Err(source) => Err(ProbeError::Program {
            what: format!("the kernel rejected eBPF program {name}"),
            source,
        }),
    }
}

/// The kprobe program `name`, verified and loaded into the kernel.
pub fn kprobe<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut KProbe, ProbeError> {
    let program: &mut KProbe = ebpf
        .program_mut(name)
        .ok_or(ProbeError::MissingProgram { name })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            what: format!("program {name} is not a kprobe"),
            source,
        })?;
    match program.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => Ok(program),
        Err(source) => Err(ProbeError::Program {
            what: format!("the kernel rejected eBPF program {name}"),
            source,
        }),
    }
}

/// Each attached probe holds a perf-event file descriptor; a glob over a large library
/// needs thousands. Raise the soft limit to the hard one (no privilege needed).
fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the rlimit struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

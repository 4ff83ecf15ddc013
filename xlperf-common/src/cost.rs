//! What happened during a crossing besides its wall time: allocations and scheduling,
//! added up in the kernel on the innermost active crossing of the thread.

/// Allocation and scheduler figures of one crossing (or of a thread outside any). The
/// one cost type: the kernel adds it up, userspace writes it out under these names.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Cost {
    /// Successful allocations (malloc family, enif_alloc) and their requested bytes.
    pub alloc_count: u64,
    pub alloc_bytes: u64,
    /// Frees of blocks whose allocation was seen, and those blocks' sizes.
    pub free_count: u64,
    pub free_bytes: u64,
    /// Anonymous `mmap` calls and their lengths (address space, not heap blocks: glibc's
    /// malloc serves large blocks with mmap, so they are counted in both).
    pub mmap_count: u64,
    pub mmap_bytes: u64,
    pub munmap_bytes: u64,
    /// Off-CPU time asleep or waiting (the thread was not runnable).
    pub offcpu_ns: u64,
    /// Off-CPU time runnable, waiting in the run queue for a CPU.
    pub runq_ns: u64,
    /// Times the thread was switched out.
    pub switches: u64,
    /// Kernel allocations (kmalloc, slab caches, pages) made on the thread (`--kmem`).
    pub kmem_count: u64,
    pub kmem_bytes: u64,
}

impl Cost {
    /// Applies `f` field by field (sums, differences).
    #[must_use]
    pub fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            alloc_count: f(self.alloc_count, other.alloc_count),
            alloc_bytes: f(self.alloc_bytes, other.alloc_bytes),
            free_count: f(self.free_count, other.free_count),
            free_bytes: f(self.free_bytes, other.free_bytes),
            mmap_count: f(self.mmap_count, other.mmap_count),
            mmap_bytes: f(self.mmap_bytes, other.mmap_bytes),
            munmap_bytes: f(self.munmap_bytes, other.munmap_bytes),
            offcpu_ns: f(self.offcpu_ns, other.offcpu_ns),
            runq_ns: f(self.runq_ns, other.runq_ns),
            switches: f(self.switches, other.switches),
            kmem_count: f(self.kmem_count, other.kmem_count),
            kmem_bytes: f(self.kmem_bytes, other.kmem_bytes),
        }
    }

    #[must_use]
    pub fn plus(&self, other: &Self) -> Self {
        self.zip_with(other, u64::saturating_add)
    }
}

/// A call record whose crossing had allocations or scheduler events: the plain record,
/// then the figures charged to that crossing itself (not to calls nested in it).
/// Emitted instead of a bare [`crate::CallRecord`]; the two differ in size.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CostedCallRecord {
    pub call: crate::CallRecord,
    pub cost: Cost,
}

/// One off-CPU period of a target thread, emitted when it runs again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OffCpuRecord {
    /// When the thread ran again (`CLOCK_MONOTONIC`, ns); the period began
    /// `blocked_ns + runq_ns` earlier.
    pub end_ns: u64,
    /// The NIF address of the innermost crossing, as in [`crate::CallRecord::target`].
    pub target: u64,
    pub blocked_ns: u64,
    pub runq_ns: u64,
    pub pid: u32,
    pub tid: u32,
    /// Innermost active crossing when the thread went off CPU, or `NO_BOUNDARY`.
    pub boundary: u32,
    /// Who made the thread runnable (0 when it was preempted, not woken).
    pub waker_pid: u32,
    pub waker_tid: u32,
    pub _pad: u32,
    pub waker_comm: [u8; 16],
}

/// Why a thread is off CPU (`ThreadState::off`).
pub mod off_state {
    pub const ON_CPU: u32 = 0;
    /// Asleep or waiting; becomes runnable at its wakeup.
    pub const BLOCKED: u32 = 1;
    /// Preempted or just created: waiting for a CPU from the start.
    pub const RUNNABLE: u32 = 2;
}

/// Which allocator entry point is in progress on a thread (`ThreadState::alloc_kind`).
pub mod alloc_kind {
    /// The block is the return value.
    pub const PLAIN: u32 = 0;
    /// realloc/reallocarray/enif_realloc: the old block is freed when the call succeeds.
    pub const REALLOC: u32 = 1;
    /// posix_memalign: the block is written to `*memptr` when it returns 0.
    pub const POSIX_MEMALIGN: u32 = 2;
}

/// Per-thread state of the allocation and scheduler probes, kept next to the thread's
/// call stack so one map lookup serves both.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadState {
    /// Process of the thread (0 until a probe that knows it has run on it).
    pub tgid: u32,
    /// `off_state` value.
    pub off: u32,
    pub off_since_ns: u64,
    /// When a blocked thread was woken (0: not yet).
    pub woken_ns: u64,
    pub waker_pid: u32,
    pub waker_tid: u32,
    pub waker_comm: [u8; 16],
    /// Figures of the thread while no traced crossing was active on it.
    pub outside: Cost,
    /// Frees of blocks allocated before the recording (or evicted from the live map).
    pub frees_untracked: u64,
    /// Allocator calls active on the thread (an allocator calling itself, e.g. realloc
    /// calling malloc, counts once: only the outermost call is charged).
    pub alloc_depth: u32,
    pub alloc_kind: u32,
    pub alloc_size: u64,
    /// realloc's old block, or posix_memalign's `memptr`.
    pub alloc_arg: u64,
    /// With `--alloc-sample`: bytes still to allocate before the next block is tracked.
    pub sample_left: u64,
    /// The thread's name (it may be gone by the end): set when its state is created from
    /// the thread itself, and at each of its switches with --sched.
    pub comm: [u8; 16],
    /// Blocks this thread put into and took out of the live-allocation map; what is
    /// neither taken out nor still there at the end was evicted (the map is an LRU).
    pub live_inserted: u64,
    pub live_removed: u64,
    /// Run-queue wait of a new thread before its first run, held until the thread itself
    /// shows (at its first switch-out) that it belongs to a target: `sched_wakeup_new`
    /// cannot tell a new thread from a forked process.
    pub unconfirmed_runq_ns: u64,
    /// Whole cost of every probe hit on this thread (see `probe_cookie`): what tracing
    /// added to it.
    pub probe: crate::ProbeTime,
    /// The system call in progress (`--syscalls`): when it entered (0: none) and which.
    pub syscall_start_ns: u64,
    pub syscall_nr: u64,
}

/// Allocation settings, fixed at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocConfig {
    /// Track one block per this many bytes allocated (0: track every block). Counts and
    /// allocated bytes stay exact; frees and live bytes become estimates.
    pub sample_bytes: u64,
}

impl AllocConfig {
    /// What a tracked block of `size` bytes stands for, as (blocks, bytes): itself without
    /// sampling, else one sampling period's worth of bytes (blocks of at least a period
    /// are always tracked).
    #[must_use]
    pub fn weight(&self, size: u64) -> (u64, u64) {
        if self.sample_bytes == 0 || size >= self.sample_bytes {
            return (1, size);
        }
        (self.sample_bytes / size.max(1), self.sample_bytes)
    }
}

/// Key of a block in the live-allocation map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct LiveKey {
    pub tgid: u32,
    pub _pad: u32,
    pub ptr: u64,
}

/// A block allocated and not yet freed, and the crossing that allocated it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveBlock {
    pub size: u64,
    pub target: u64,
    pub ns: u64,
    pub boundary: u32,
    pub tid: u32,
}

/// Where the scheduler and syscall tracepoints keep their fields on this kernel, read
/// by userspace from tracefs format files (they have moved between versions).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointLayout {
    pub switch_prev_pid: u32,
    pub switch_prev_state: u32,
    /// Size in bytes of `prev_state` (4 or 8).
    pub switch_prev_state_size: u32,
    pub switch_next_pid: u32,
    pub waking_pid: u32,
    pub wakeup_new_pid: u32,
    pub mmap_len: u32,
    pub mmap_flags: u32,
    pub munmap_len: u32,
    /// `bytes_alloc` of kmem/kmalloc and kmem/kmem_cache_alloc, `order` of
    /// kmem/mm_page_alloc (0 when `--kmem` is off).
    pub kmalloc_bytes: u32,
    pub cache_alloc_bytes: u32,
    pub page_alloc_order: u32,
}

#[cfg(feature = "user")]
mod user {
    use super::{
        CostedCallRecord, LiveBlock, LiveKey, OffCpuRecord, ThreadState, TracepointLayout,
    };

    // SAFETY (all five): #[repr(C)], Copy, made only of integers and byte arrays with
    // explicit padding fields, so every bit pattern is valid and no byte is uninitialised.
    unsafe impl aya::Pod for CostedCallRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for OffCpuRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LiveKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for LiveBlock {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TracepointLayout {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ThreadState {}
    // SAFETY: as above (u64 fields only).
    unsafe impl aya::Pod for super::Cost {}
}

const _: () = assert!(core::mem::size_of::<Cost>() == 96);
const _: () = assert!(core::mem::size_of::<CostedCallRecord>() == 160);
const _: () = assert!(core::mem::size_of::<OffCpuRecord>() == 72);
const _: () = assert!(core::mem::size_of::<ThreadState>() == 48 + 96 + 96 + 16);
const _: () = assert!(core::mem::size_of::<LiveKey>() == 16);
const _: () = assert!(core::mem::size_of::<LiveBlock>() == 32);
// The ring carries four kinds of item told apart by size.
const _: () = assert!(core::mem::size_of::<crate::CallRecord>() != 72);
const _: () = assert!(core::mem::size_of::<crate::CallRecord>() != 160);
const _: () = assert!(core::mem::size_of::<crate::MapChange>() != 64);
const _: () = assert!(core::mem::size_of::<crate::MapChange>() != 72);

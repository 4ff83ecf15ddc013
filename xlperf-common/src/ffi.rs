//! FFI boundary tracing: one record per completed call, per-thread stacks of active calls.

/// Deepest nesting of traced calls kept per thread. Deeper calls are counted in
/// [`Counters::depth_overflow`] and not timed: a bounded stack keeps the verifier happy and
/// the per-thread state small.
pub const MAX_DEPTH: usize = 16;

/// Boundary id meaning "no boundary" (the parent of an outermost call).
pub const NO_BOUNDARY: u32 = 0;

/// Boundary id used by the start-up probe-cost calibration; never shown to the user.
pub const CALIBRATION_BOUNDARY: u32 = u32::MAX;

/// One completed call of a traced function, emitted by the return probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRecord {
    /// `CLOCK_MONOTONIC` time of the entry probe, ns.
    pub start_ns: u64,
    /// Inclusive wall time of the call, ns.
    pub duration_ns: u64,
    /// The function called, for probes that learn it at run time (the NIF dispatch
    /// probes: the NIF's address); 0 when `boundary` alone names it.
    pub target: u64,
    /// Boundary id (the uprobe's attach cookie), assigned by userspace.
    pub boundary: u32,
    /// Boundary of the enclosing traced call on the same thread, or [`NO_BOUNDARY`].
    pub parent: u32,
    /// Process id (tgid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Nesting level of this call among traced calls on its thread; 1 = outermost.
    pub depth: u32,
    /// What kind of thread made the call (`crate::thread_kind`); only NIF probes classify.
    pub thread: u32,
}

/// One active call on a thread's stack.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Frame {
    pub start_ns: u64,
    pub target: u64,
    pub boundary: u32,
    pub thread: u32,
    /// Whether `cost` holds figures; it is garbage until then, so that entering a call
    /// does not pay for zeroing it.
    pub costed: u32,
    pub _pad: u32,
    pub cost: crate::Cost,
}

/// Per-thread stack of active traced calls, kept in a BPF hash map keyed by tid.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CallStack {
    /// Number of valid entries in `frames`.
    pub depth: u32,
    /// Calls entered while the stack was full and not yet returned; their returns must
    /// not pop real frames.
    pub overflow: u32,
    pub frames: [Frame; MAX_DEPTH],
    pub thread: crate::ThreadState,
}

/// Loss and consistency counters, one slot per CPU, summed by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records that could not be reserved in the ring buffer (consumer too slow).
    pub dropped: u64,
    /// Calls not timed because the thread's stack already held [`MAX_DEPTH`] calls.
    pub depth_overflow: u64,
    /// Returns with no matching entry (the call began before the probes were attached).
    pub unmatched_return: u64,
    /// Entries abandoned without a return (longjmp, exceptions unwinding through C).
    pub abandoned: u64,
    /// Threads whose stack could not be stored (stack map full).
    pub stack_map_full: u64,
}

impl Counters {
    /// Applies `f` field by field: summing CPUs, or subtracting an earlier snapshot.
    #[must_use]
    pub fn zip_with(&self, other: &Self, f: impl Fn(u64, u64) -> u64) -> Self {
        Self {
            dropped: f(self.dropped, other.dropped),
            depth_overflow: f(self.depth_overflow, other.depth_overflow),
            unmatched_return: f(self.unmatched_return, other.unmatched_return),
            abandoned: f(self.abandoned, other.abandoned),
            stack_map_full: f(self.stack_map_full, other.stack_map_full),
        }
    }
}

/// Index of the single slot of the per-CPU counters array.
pub const COUNTERS_SLOT: u32 = 0;

#[cfg(feature = "user")]
mod user {
    use super::{CallRecord, Counters};

    // SAFETY: CallRecord is #[repr(C)], Copy, made only of integers, with explicit padding
    // fields, so every bit pattern is valid and there are no uninitialised bytes.
    unsafe impl aya::Pod for CallRecord {}
    // SAFETY: as above, Counters is #[repr(C)] with only u64 fields.
    unsafe impl aya::Pod for Counters {}
    // SAFETY: CallStack is #[repr(C)], Copy, made of integers only with explicit padding
    // (see the size assertions below).
    unsafe impl aya::Pod for super::CallStack {}
}

const _: () = assert!(core::mem::size_of::<CallRecord>() == 48);
const _: () = assert!(core::mem::size_of::<Frame>() == 32 + 96);
const _: () = assert!(
    core::mem::size_of::<CallStack>()
        == 8 + 128 * MAX_DEPTH + core::mem::size_of::<crate::ThreadState>()
);
const _: () = assert!(core::mem::size_of::<Counters>() == 40);

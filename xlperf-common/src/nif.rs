//! Erlang/Elixir NIF tracing: the reserved boundary ids of the VM's dispatch probes and
//! the thread classes a NIF call can run on.

/// Boundary id of the probe pair on `beam_jit_call_nif` (normal schedulers): every NIF
/// call goes through it, and the record's `target` is the NIF function it called.
pub const NIF_DISPATCH_NORMAL: u32 = u32::MAX - 1;

/// Boundary id of the probe pair on `erts_call_dirty_nif` (dirty schedulers). Its cookie
/// carries, in the high 32 bits, the offset from the `I` argument at which the VM keeps
/// the dirty NIF's function pointer (found by decoding the function; see
/// `xlperf::probe::beam::dispatch`).
pub const NIF_DISPATCH_DIRTY: u32 = u32::MAX - 2;

/// The kind of thread a call ran on, from its name (`comm`).
pub mod thread_kind {
    /// Not classified: FFI probes do not look at thread names.
    pub const UNCLASSIFIED: u32 = 0;
    /// A BEAM normal scheduler, `N_scheduler`: a NIF here should return within 1 ms.
    pub const BEAM_NORMAL: u32 = 1;
    /// A BEAM dirty CPU scheduler, `N_dirty_cpu_sch`.
    pub const BEAM_DIRTY_CPU: u32 = 2;
    /// A BEAM dirty I/O scheduler, `N_dirty_io_sche`.
    pub const BEAM_DIRTY_IO: u32 = 3;
    /// Any other thread (a NIF's own thread, the main thread).
    pub const OTHER: u32 = 4;

    /// Classifies a thread name as the BEAM names its threads: a decimal number, `_`,
    /// then `scheduler`, `dirty_cpu_s…` or `dirty_io_s…` (names are cut at 15 bytes).
    #[must_use]
    pub fn classify(comm: &[u8; 16]) -> u32 {
        let mut digits = 0;
        while digits < comm.len() && comm[digits].is_ascii_digit() {
            digits += 1;
        }
        if digits == 0 || digits >= comm.len() || comm[digits] != b'_' {
            return OTHER;
        }
        let rest = digits + 1;
        if starts_with(comm, rest, b"scheduler") {
            BEAM_NORMAL
        } else if starts_with(comm, rest, b"dirty_cpu") {
            BEAM_DIRTY_CPU
        } else if starts_with(comm, rest, b"dirty_io") {
            BEAM_DIRTY_IO
        } else {
            OTHER
        }
    }

    fn starts_with(comm: &[u8; 16], at: usize, prefix: &[u8]) -> bool {
        let mut i = 0;
        while i < prefix.len() {
            match comm.get(at + i) {
                Some(&b) if b == prefix[i] => i += 1,
                _ => return false,
            }
        }
        true
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn comm(name: &str) -> [u8; 16] {
            let mut c = [0u8; 16];
            c[..name.len()].copy_from_slice(name.as_bytes());
            c
        }

        #[test]
        fn beam_thread_names() {
            assert_eq!(classify(&comm("1_scheduler")), BEAM_NORMAL);
            assert_eq!(classify(&comm("12_scheduler")), BEAM_NORMAL);
            assert_eq!(classify(&comm("2_dirty_cpu_sch")), BEAM_DIRTY_CPU);
            assert_eq!(classify(&comm("3_dirty_io_sche")), BEAM_DIRTY_IO);
            assert_eq!(classify(&comm("10_dirty_io_sch")), BEAM_DIRTY_IO);
            assert_eq!(classify(&comm("100_dirty_cpu_s")), BEAM_DIRTY_CPU);
            for other in ["beam.smp", "1_aux", "0_poller", "_scheduler", "async_1", ""] {
                assert_eq!(classify(&comm(other)), OTHER, "{other}");
            }
        }
    }
}

/// NIFs of one library kept in a [`NifTableRecord`]; more are named from the running
/// process instead (OTP's crypto has 64).
pub const NIF_TABLE_MAX_FUNCS: usize = 96;
/// Bytes kept of a NIF's name (NUL-terminated).
pub const NIF_NAME_LEN: usize = 48;
/// Bytes kept of a module name (NUL-terminated).
pub const NIF_MODULE_LEN: usize = 64;
/// Bytes kept of a NIF library's path (NUL-terminated).
pub const NIF_PATH_LEN: usize = 256;

/// One `ErlNifFunc`, as read when its library was loaded.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NifFuncRecord {
    pub fptr: u64,
    pub arity: u32,
    pub flags: u32,
    pub name: [u8; NIF_NAME_LEN],
}

/// A NIF library's table, read in the VM the moment the library is loaded: the process
/// may be gone by the time userspace sees its NIF calls (a short script), so the names
/// travel with the event.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NifTableRecord {
    pub pid: u32,
    /// `num_of_funcs` of the entry; only the first [`NIF_TABLE_MAX_FUNCS`] are in `funcs`.
    pub count: u32,
    /// Address of the `ErlNifEntry`.
    pub entry: u64,
    pub module: [u8; NIF_MODULE_LEN],
    /// The file the VM opened (as the program named it); empty for NIFs built into the VM.
    pub path: [u8; NIF_PATH_LEN],
    pub funcs: [NifFuncRecord; NIF_TABLE_MAX_FUNCS],
}

/// A path being opened by the VM's NIF loader, per thread.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NifPath {
    pub bytes: [u8; NIF_PATH_LEN],
}

/// The library one `erlang:load_nif/2` is loading: its entry and the path it was opened
/// from, kept per thread until the loader returns.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct NifPending {
    pub entry: u64,
    pub path: NifPath,
}

#[cfg(feature = "user")]
mod user {
    use super::NifTableRecord;

    // SAFETY: #[repr(C)], Copy, integers and byte arrays only, no implicit padding (the
    // size assertions below pin the layout), so every bit pattern is valid.
    unsafe impl aya::Pod for NifTableRecord {}
}

const _: () = assert!(core::mem::size_of::<NifFuncRecord>() == 16 + NIF_NAME_LEN);
const _: () = assert!(
    core::mem::size_of::<NifTableRecord>()
        == 16 + NIF_MODULE_LEN + NIF_PATH_LEN + NIF_TABLE_MAX_FUNCS * (16 + NIF_NAME_LEN)
);

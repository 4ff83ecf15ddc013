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

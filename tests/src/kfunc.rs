//! Whether this kernel can run the `--kfunc` tests: our host cannot (no kprobes), every
//! Debian kernel of the VM matrix can, and there a missing kprobe PMU is a failure.

use std::path::Path;

/// Set by `cargo xtask vm-test` in its guests: kprobes must be there.
const EXPECTED: &str = "XLPERF_EXPECT_KPROBES";

/// True where kprobes and kretprobes can be placed; panics in a VM guest without them.
pub fn has_kprobes() -> bool {
    let present = Path::new("/sys/bus/event_source/devices/kprobe/format/retprobe").exists();
    assert!(
        present || std::env::var_os(EXPECTED).is_none(),
        "{EXPECTED} is set but this kernel has no kprobe PMU"
    );
    present
}

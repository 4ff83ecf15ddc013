//! One file per subcommand: arguments in, a tracing pipeline and its sinks wired, output.

pub mod check;
pub mod list;
pub mod output;
pub mod record;
pub mod report;
pub mod serve;

use crate::probe::pending;

/// Says which file each waited-for library turned out to be, and which matched nothing.
pub fn report_mapped(pid: u32, resolved: &[pending::Resolved], failed: &[pending::Unmatched]) {
    for (spec, error) in failed {
        eprintln!("xlperf: --ffi {}: {error}", spec.library.display());
    }
    for found in resolved {
        eprintln!(
            "xlperf: {} is {} (mapped by pid {pid}): {} function(s) traced from now on",
            found.spec.library.display(),
            found.path.display(),
            found.ids.len()
        );
    }
}

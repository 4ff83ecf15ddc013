//! One file per subcommand: arguments in, a tracing pipeline and its sinks wired, output.

pub mod check;
pub mod list;
pub mod output;
pub mod record;
pub mod report;
pub mod serve;

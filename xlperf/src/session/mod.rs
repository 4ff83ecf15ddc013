//! The tracing pipeline both `record` and `serve` run: loading and calibrating the
//! programs (`setup`), the signals and exits that end a run (`exits`), and turning what
//! the ring buffer holds into named events for the sinks (`drain`).

pub mod drain;
pub mod exits;
pub mod setup;

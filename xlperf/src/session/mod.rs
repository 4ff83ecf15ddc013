//! The tracing pipeline both `record` and `serve` run: loading and calibrating the
//! programs (`setup`), the signals and exits that end a run (`exits`), turning what the
//! ring buffer holds into named events (`drain`), and the sinks they go to (`sink`).

pub mod drain;
pub mod exits;
pub mod setup;
pub mod sink;

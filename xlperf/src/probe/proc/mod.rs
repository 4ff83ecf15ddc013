//! What `/proc` says about a process (`maps`: its mappings and memory) and the processes
//! a recording follows (`target`: pids, a command held before exec, exit watching).

pub use super::ProbeError;

pub mod maps;
pub mod target;

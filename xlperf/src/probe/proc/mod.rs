//! What `/proc` says about a process (`maps`: its mappings and memory; `process`: its
//! name, executable, kind and root) and the processes a recording follows (`target`:
//! pids, a command held before exec, exit watching). Every read of `/proc` is here.

pub use super::ProbeError;

pub mod maps;
pub mod process;
pub mod target;

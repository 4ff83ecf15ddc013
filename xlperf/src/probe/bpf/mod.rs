//! BPF plumbing: the embedded object and its maps (`loader`), the call-record ring
//! (`ring`), attaching and owning probes (`attach`, `links`, `tracepoints`, `tracefs`),
//! and measuring what they cost (`calibrate`).

pub use super::ProbeError;

pub mod attach;
pub mod calibrate;
pub mod links;
pub mod loader;
pub mod ring;
pub mod tracefs;
pub mod tracepoints;

//! What a recording tells its user: the JSON summary and the terminal table.

pub mod build;
pub mod insights;
pub mod summary;
pub mod syscalls;
pub mod table;

pub use summary::{BoundarySummary, Summary};

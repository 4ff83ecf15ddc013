//! Capture files: `record -o FILE` writes one while it records, `report FILE` reads it.

pub mod file;

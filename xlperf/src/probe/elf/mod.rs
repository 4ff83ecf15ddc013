//! ELF files and x86 code: function symbols and file offsets (`image`), and where in a
//! function's prologue its probes go (`prologue`).

pub use super::ProbeError;

mod image;
pub mod prologue;

pub use image::*;

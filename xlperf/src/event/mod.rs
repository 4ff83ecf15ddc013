//! Reading records out of the kernel's ring buffers.

pub mod ring;

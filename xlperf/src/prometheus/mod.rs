//! `xlperf serve`'s sink: call records become Prometheus samples (`exposition`), system
//! calls per crossing too (`syscalls`), served over HTTP (`http`).

use std::sync::{Mutex, MutexGuard, PoisonError};

pub mod exposition;
pub mod http;
pub mod syscalls;

/// The exposition, shared by the tracer (which feeds it) and the HTTP server (which
/// encodes it); a panic elsewhere while it was held does not make it unusable.
pub fn lock(e: &Mutex<exposition::Exposition>) -> MutexGuard<'_, exposition::Exposition> {
    e.lock().unwrap_or_else(PoisonError::into_inner)
}

//! Aggregation of call records into per-boundary latency histograms.

pub mod calls;

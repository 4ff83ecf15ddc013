//! Aggregation of records: call latencies, and what was charged to each crossing.

pub mod calls;
pub mod cost;

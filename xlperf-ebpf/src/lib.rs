//! Empty on purpose: a lib target lets xlperf list this crate as a build-dependency, so
//! cargo reruns xlperf/build.rs (which builds the real eBPF binary) when it changes.
#![no_std]

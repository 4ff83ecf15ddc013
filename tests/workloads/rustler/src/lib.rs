//! xl_rnif: a Rustler NIF library for the BEAM workloads, registered for the module
//! `Elixir.XlRnif` (tests/workloads/beam/Elixir.XlRnif.erl, or `XlRnif` in
//! elixir_driver.exs).

use std::time::Duration;

/// A normal NIF: the sum of two integers.
#[rustler::nif]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

/// A dirty CPU NIF that sleeps `ms` milliseconds and returns `ms`.
#[rustler::nif(schedule = "DirtyCpu")]
fn heavy(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

rustler::init!("Elixir.XlRnif");

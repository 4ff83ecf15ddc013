//! `cargo xtask`: the one place that knows how to set up, build, test, demo and bench xlperf.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "xtask is a CLI tool"
)]

mod bench;
mod cmd;
mod demo;
mod setup;
mod test;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    about = "Set up, build, test, demo and benchmark xlperf"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Install what the build and tests need (idempotent): nightly rust-src, a bpf-linker
    /// built against nightly's LLVM, and the test toolchains (nim, zig, bpftrace).
    Setup,
    /// Build xlperf into target/debug/xlperf (or target/release/xlperf).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, check formatting and lints, run every test, a short bench, the demo, and the
    /// kernel matrix (vm-test).
    Test,
    /// Set up (eBPF toolchain, gcc, python3, Erlang), build, and record the bundled
    /// polyglot demo (Python + C + Erlang).
    Demo,
    /// Boot Debian's 6.1, 6.12 and newest 7.x kernels in QEMU (virtme-ng, TCG) and run
    /// the privileged tests that matter per kernel in each; downloads and caches the
    /// kernels under ~/.cache/xlperf.
    VmTest {
        /// Only this kernel of the matrix: 6.1, 6.12 or 7.x.
        #[arg(long, value_name = "KERNEL")]
        kernel: Option<String>,
    },
    /// Measure the cost per traced call, and malloc/free pairs per second under `--alloc`,
    /// against an empty aya probe and bpftrace.
    Bench {
        /// Fewer calls per measurement (what CI runs).
        #[arg(long)]
        quick: bool,
    },
}

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::all(),
        Task::Build { release } => {
            setup::build_toolchain().and_then(|()| cmd::build_xlperf(release).map(|_| ()))
        }
        Task::Test => test::run(),
        Task::Demo => demo::run(),
        Task::VmTest { kernel } => vm::run(kernel.as_deref()),
        Task::Bench { quick } => bench::run(quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! What to attach where: the boundaries of a recording (`boundary`), the libraries they
//! are in as the target sees them (`library`, `pending`), the runtimes (`beam/`, `alloc/`),
//! and underneath, BPF plumbing (`bpf/`), `/proc` (`proc/`) and ELF and x86 code (`elf/`).

pub mod alloc;
pub mod beam;
pub mod boundary;
pub mod bpf;
pub mod elf;
pub mod kernel;
pub mod library;
pub mod pending;
pub mod proc;

use std::path::PathBuf;

fn similar_hint(similar: &[String]) -> String {
    if similar.is_empty() {
        " (nothing it maps has a similar name: it may have the code linked in statically)".into()
    } else {
        format!(" (it maps {})", similar.join(", "))
    }
}

/// Everything that can go wrong between a command line and attached probes. Each message
/// is one line that says what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no process with pid {pid}: is it still running? (list processes with `ps -e`)")]
    NoSuchProcess { pid: u32 },
    #[error(
        "library {library:?} not found in {looked_in}; pass its path instead (`ldconfig -p | grep {library}` lists system libraries, /proc/PID/maps what a process maps)"
    )]
    LibraryNotFound { library: String, looked_in: String },
    #[error(
        "pid {pid} ({comm}) does not map {library}{}; trace a file it maps (see /proc/{pid}/maps or `xlperf list -p {pid}`), its executable by name, or give a path",
        similar_hint(similar)
    )]
    NotMapped {
        pid: u32,
        library: String,
        comm: String,
        similar: Vec<String>,
    },
    #[error(
        "pid {pid} ({comm}) is a kernel thread: it runs no user code to trace; pick a user process (`ps -e`)"
    )]
    KernelThread { pid: u32, comm: String },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF executable or library ({reason})")]
    NotElf { path: PathBuf, reason: String },
    #[error(
        "invalid function glob {glob:?}: {reason}; use shell-style patterns such as 'deflate*' or 'xl_{{add,mul}}'"
    )]
    BadGlob { glob: String, reason: String },
    #[error(
        "no function of {path} matches {glob:?} (it defines {count} functions; list them with `nm -D --defined-only {path}`)"
    )]
    NoMatchingFunction {
        path: PathBuf,
        glob: String,
        count: usize,
    },
    #[error(
        "{path}: cannot probe {what}: {why}; give a file offset inside a function (`objdump -d` shows them) or SYMBOL+0xOFFSET"
    )]
    BadOffset {
        path: PathBuf,
        what: String,
        why: String,
    },
    #[error(
        "{path}: {names} only resolve(s) to an IFUNC resolver, which runs once at load time; trace the implementation it selects instead (e.g. __memcpy_avx_unaligned_erms)"
    )]
    OnlyIfunc { path: PathBuf, names: String },
    #[error(
        "{count} functions match; attaching more than {max} probe pairs would slow every call of the target. Narrow the glob (--ffi LIB:'prefix*') or raise --max-functions"
    )]
    TooManyFunctions { count: usize, max: usize },
    #[error("command not found: {command} (not a file and not in $PATH)")]
    CommandNotFound { command: String },
    #[error(
        "{path} is not executable (chmod +x it, or run it through its interpreter, e.g. -- python3 {path})"
    )]
    NotExecutable { path: PathBuf },
    #[error("cannot start {command}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("loading the eBPF programs failed")]
    Load(#[from] aya::EbpfError),
    #[error("eBPF program {name} is missing from the embedded object (build problem)")]
    MissingProgram { name: &'static str },
    #[error("eBPF map {name} is missing from the embedded object (build problem)")]
    MissingMap { name: &'static str },
    #[error(
        "cannot find the BEAM VM: {why}; trace a running VM with -p PID instead, or start beam.smp itself"
    )]
    VmNotFound { why: String },
    #[error(
        "pid {pid} is not an Erlang/Elixir VM (no beam.smp in its memory maps); --nif needs a BEAM process"
    )]
    NotBeam { pid: u32 },
    #[error("the NIF table at {addr:#x} looks corrupt ({why}); is this a BEAM of OTP 17 or later?")]
    BadNifEntry { addr: u64, why: String },
    #[error(
        "NIF dispatch probes are not possible in {vm}: {why}; use --nif-mode fptr to probe each NIF instead"
    )]
    NoDispatch { vm: PathBuf, why: String },
    #[error(
        "--nif-mode fptr reads each VM's NIF tables, so it needs -p PID or a command, not --all; use the default dispatch mode with --all"
    )]
    FptrNeedsProcess,
    #[error(
        "tracepoint {tracepoint} is missing from this kernel (no tracefs format file); --sched needs the sched tracepoints and --alloc the syscall tracepoints (CONFIG_FTRACE_SYSCALLS)"
    )]
    NoTracepoint { tracepoint: String },
    #[error(
        "tracepoint {tracepoint} has no field {field} on this kernel; please report the kernel version"
    )]
    TracepointField { tracepoint: String, field: String },
    #[error("cannot mount tracefs at /sys/kernel/tracing (needed for tracepoint formats)")]
    Tracefs { source: std::io::Error },
    #[error(
        "{library} has none of the allocator functions xlperf probes (malloc, free, ...); is it the process's allocator?"
    )]
    NoAllocator { library: PathBuf },
    #[error(
        "--alloc, --sched, --syscalls and --kfunc follow processes, so they need -p PID or a command, not --all"
    )]
    AllNeedsProcess,
    #[error(
        "--all needs a probe: name functions with --ffi LIB[:GLOB], or trace every BEAM's NIFs with --nif"
    )]
    AllNeedsProbe,
    #[error(
        "nothing to trace in {what}: it is not an Erlang/Elixir VM, the runtime xlperf detects; name C-ABI functions with --ffi LIB[:GLOB], or record its allocations or scheduling with --alloc / --sched"
    )]
    NothingToTrace { what: String },
    #[error(
        "pids run different Erlang VMs ({first} and {second}); record one installation at a time"
    )]
    DifferentVms { first: PathBuf, second: PathBuf },
    #[error(
        "--kfunc needs kprobes, which this kernel lacks (no kprobe PMU: built without CONFIG_KPROBES); --syscalls, --ffi, --nif, --alloc and --sched still work (`xlperf check` lists what this kernel supports)"
    )]
    NoKprobes,
    #[error(
        "no kernel function matches {glob:?} among those that can be probed (see /sys/kernel/tracing/available_filter_functions; inlined and notrace functions are not there)"
    )]
    NoKernelFunction { glob: String },
    #[error(
        "{count} kernel functions match; attaching more than {max} kprobe pairs would slow every system call. Narrow the glob (--kfunc 'vfs_*') or raise --max-functions (at most 2048)"
    )]
    TooManyKernelFunctions { count: usize, max: usize },
    #[error(
        "kernel function {name} can be probed but /proc/kallsyms does not list it; is the module that defines it still loaded?"
    )]
    KernelSymbolMissing { name: String },
    #[error(
        "kernel function {name} is defined {count} times (static functions of the same name); a kprobe by name cannot tell them apart, so narrow the glob to leave it out"
    )]
    AmbiguousKernelFunction { name: String, count: usize },
    #[error(
        "/proc/kallsyms shows no addresses (kernel.kptr_restrict hides them); run as root, or set `sysctl kernel.kptr_restrict=0`"
    )]
    KallsymsHidden,
    #[error("{what}")]
    Program {
        what: String,
        source: aya::programs::ProgramError,
    },
    #[error("{what}")]
    Map {
        what: String,
        source: aya::maps::MapError,
    },
}

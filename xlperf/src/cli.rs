//! Command-line types (clap derive only; behaviour lives in the commands' modules).

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand};

pub use crate::probe::beam::NifMode;

/// Profile the places where one language calls into another: FFI calls into C, Rust, Nim
/// and Zig libraries, from any language that produces ELF code, with eBPF.
#[derive(Debug, Parser)]
#[command(name = "xlperf", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Report what works on this host and why not: privileges, BTF, tracefs, ring buffer,
    /// uprobe/uretprobe, tracepoint and perf-event programs, kprobes.
    ///
    /// Exits 0 when FFI boundary tracing (uprobes) works. With -p PID, also says which
    /// runtime the process runs and how xlperf would trace it.
    Check(CheckArgs),
    /// Trace boundary crossings and print a latency table per function.
    ///
    /// With no probe flag, xlperf traces what it finds in the target: every NIF of an
    /// Erlang/Elixir VM. --ffi names C-ABI functions to trace. --alloc and --sched charge
    /// allocations and scheduler time to the innermost traced call of each thread.
    ///
    /// Examples:
    ///   sudo xlperf record -p $(pgrep beam.smp) -d 10s
    ///   sudo xlperf record -p $(pgrep beam.smp) --alloc --sched -d 10s
    ///   sudo xlperf record --ffi ./libthumb.so --alloc --sched -- ./batch
    ///   sudo xlperf record --ffi 'libz.so.1:deflate*' -- python3 -c 'import zlib; zlib.compress(b"x")'
    ///   sudo xlperf record -p 4242 --ffi 'libssl.so.3:SSL_*' -d 10s
    ///   sudo xlperf record -p 4242 --ffi /opt/app/libfoo.so --json
    ///   sudo xlperf record --ffi 'librs.so:*my_crate::parse*' -- ./app     (demangled Rust/C++)
    ///   sudo xlperf record --ffi ./libx.so:0x1a2b0 -- ./app                (a function with no symbol)
    ///
    /// Latencies exclude the probes' own time (measured at start per kind of probe site);
    /// the summary's overhead line counts every probe hit; --json `raw` has the durations
    /// as measured.
    #[command(verbatim_doc_comment)]
    Record(RecordArgs),
    /// List what can be traced in a process: its runtime, and for an Erlang/Elixir VM its
    /// NIF libraries and functions (name/arity, dirty flags) and which of them are being
    /// called (sampled for -d, default 1s).
    ///
    /// Example:
    ///   sudo xlperf list -p $(pgrep beam.smp)
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Read a capture file written by `record -o FILE`: print the same summary (table or
    /// --json), or export it for the tools people already use.
    ///
    /// Examples:
    ///   xlperf report run.xlperf
    ///   xlperf report run.xlperf --json
    ///   xlperf report run.xlperf --format perfetto -o run.perfetto-trace   (ui.perfetto.dev)
    ///   xlperf report run.xlperf --format chrome -o run.json               (chrome://tracing)
    ///   xlperf report run.xlperf --format folded | flamegraph.pl > run.svg
    ///   xlperf report run.xlperf --format svg -o run.svg
    #[command(verbatim_doc_comment)]
    Report(ReportArgs),
    /// Serve Prometheus metrics of the targets' crossings on /metrics (Prometheus text or
    /// OpenMetrics, by the scraper's Accept header) and /healthz, until Ctrl-C.
    ///
    /// Processes named with --comm are picked up when they start; the series of a process
    /// that exits are dropped after --grace. Metric names: README.md, "Prometheus".
    ///
    /// Examples:
    ///   sudo xlperf serve --comm beam.smp
    ///   sudo xlperf serve -p 4242 --ffi 'libssl.so.3:SSL_*' --alloc --sched
    ///   sudo xlperf serve --comm beam.smp --listen 0.0.0.0:9464   (reachable from other hosts)
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Trace this process (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Trace every process with this name (as in /proc/PID/comm, e.g. beam.smp), now and
    /// as they start (repeatable).
    #[arg(long, value_name = "NAME")]
    pub comm: Vec<String>,

    /// Trace every process that maps the --ffi libraries (with --nif: every BEAM running
    /// the `erl` in PATH), as `record --all` does.
    #[arg(long, conflicts_with_all = ["pids", "comm", "command"])]
    pub all: bool,

    /// Start this command and trace it from its first instruction; serving goes on after
    /// it exits, until Ctrl-C.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,

    #[command(flatten)]
    pub probes: ProbeArgs,

    /// Address to serve on. The default is loopback only: serving other hosts takes an
    /// explicit address such as 0.0.0.0:9464.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR:PORT")]
    pub listen: std::net::SocketAddr,

    /// Most label sets (pid, comm, runtime, library, function) exposed at once; more are
    /// folded into function="other" and counted in xlperf_series_overflow_total.
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub max_series: usize,

    /// How long the series of an exited process stay exposed (so the last scrape sees
    /// its final counts).
    #[arg(long, default_value = "60s", value_parser = parse_duration, value_name = "DURATION")]
    pub grace: Duration,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The capture file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Print the summary as JSON (the same schema as `record --json`).
    #[arg(long, conflicts_with = "format")]
    pub json: bool,

    /// Export instead of summarising: `perfetto` (protobuf trace for ui.perfetto.dev),
    /// `chrome` (Trace Event JSON), `folded` (stacks for flame graph tools), `svg` (a flame
    /// graph). Self time per stack, in µs, for folded and svg.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<ExportFormat>,

    /// Write the output to this file instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: Option<PathBuf>,
}

/// What `report --format` exports: the exporters' own list.
pub use crate::export::Format as ExportFormat;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Also check this process: its runtime and the probes that apply to it.
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pub pid: Option<u32>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// The process to inspect.
    #[arg(short = 'p', long = "pid", value_name = "PID", required = true)]
    pub pid: u32,

    /// How long to watch NIF calls to tell which functions are being called; 0 skips it.
    #[arg(short = 'd', long, default_value = "1s", value_parser = parse_duration_or_zero)]
    pub duration: Duration,

    /// Print the list as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What to trace and how: shared by `record` and `serve`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Library (or executable) to trace, and which of its functions: LIB[:GLOB].
    ///
    /// LIB is a path, or a name of a file the target really maps (`libz.so.1`,
    /// `libz`, its executable's or process's name): with -p, one in its memory
    /// maps; with a command, the file of that name it maps once running
    /// (attached the moment the dynamic linker maps it, dlopen included); with
    /// --all, the linker cache. GLOB selects functions from .dynsym and .symtab
    /// (default `*`; `xl_{add,sub}`, empty alternatives too); Rust and C++ names
    /// are shown demangled and a glob with `::` matches them
    /// ('*my_crate::parse*'). `LIB:0xOFFSET` probes a function with no symbol by
    /// its file offset, `LIB:SYMBOL+0x10` an offset into one. Repeatable.
    #[arg(long = "ffi", value_name = "LIB[:GLOB]")]
    pub ffi: Vec<String>,

    /// Trace every Erlang/Elixir NIF call of the target VM (beam.smp), named
    /// `module:fun/arity` (Elixir: `Module.fun/arity`). On by default when the target is a
    /// BEAM and no --ffi is given.
    #[arg(long)]
    pub nif: bool,

    /// How NIF calls are caught: `dispatch` probes the VM's two NIF call functions (one
    /// probe pair for all NIFs, including libraries loaded later); `fptr` probes each NIF
    /// function found in the NIF tables; `auto` uses dispatch when the VM exports it.
    #[arg(long, value_enum, default_value = "auto", value_name = "MODE")]
    pub nif_mode: NifMode,

    /// NIF calls on normal schedulers longer than this are reported as long calls (they
    /// hold up every Erlang process queued on that scheduler).
    #[arg(long, default_value = "1ms", value_parser = parse_duration, value_name = "DURATION")]
    pub long_nif: Duration,

    /// Trace allocations: the malloc family and free in the target's libc (and jemalloc,
    /// mimalloc or tcmalloc when it uses them), enif_alloc/enif_free in a BEAM, and
    /// anonymous mmap/munmap. Each is charged to the innermost traced call active on its
    /// thread (or to the thread's "outside any crossing" bucket): counts, bytes, frees, and
    /// bytes still live at the end. Costs one or two probe hits per allocator call.
    #[arg(long)]
    pub alloc: bool,

    /// Trace scheduling of the target's threads: on-CPU time, off-CPU time (blocked, and
    /// runnable but waiting for a CPU) and switches per traced call, who woke each blocked
    /// call, and run-queue latency per thread.
    #[arg(long)]
    pub sched: bool,

    /// Count the system calls each crossing makes, by name, and their time in the kernel
    /// (the raw_syscalls tracepoints, filtered to the target's threads): what an FFI
    /// call or a NIF did in the kernel. Calls outside any crossing go to the process.
    #[arg(long)]
    pub syscalls: bool,

    /// Trace kernel functions whose names match GLOB ('vfs_write', 'tcp_*',
    /// 'vfs_{read,write}'; from /sys/kernel/tracing/available_filter_functions): a
    /// kprobe and a kretprobe on each, kept to the target's threads. Each function
    /// is a row (runtime `kernel`, library `vmlinux` or its module) per crossing
    /// that called it, with calls and latency, and that crossing's row gets its
    /// kernel time. Needs a kernel with kprobes. Repeatable.
    #[arg(long = "kfunc", value_name = "GLOB")]
    pub kfunc: Vec<String>,

    /// Refuse to attach to more functions than this; each costs a probe pair per call.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_functions: usize,

    /// Size of the kernel ring buffer for call records (a power of two, at least 4K; e.g.
    /// 64M). Raise it if the summary reports dropped records.
    #[arg(long, default_value = "8M", value_parser = parse_ring_size, value_name = "BYTES")]
    pub ring_size: u32,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub target: TargetArgs,

    #[command(flatten)]
    pub probes: ProbeArgs,

    /// Most allocations tracked as live at once (an LRU map; older blocks beyond it are
    /// forgotten and counted as `alloc.live_evicted`). About 100 bytes of kernel memory each.
    #[arg(long, default_value_t = crate::probe::bpf::loader::DEFAULT_LIVE_BLOCKS, value_name = "N", value_parser = clap::value_parser!(u32).range(64..))]
    pub alloc_live_max: u32,

    /// Sample allocations by bytes for hot allocators: track one block per BYTES allocated
    /// (e.g. 64K) instead of every block. Allocation counts and bytes stay exact; frees and
    /// live bytes become estimates (each tracked block stands for BYTES), and the summary
    /// says so.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes, requires = "alloc")]
    pub alloc_sample: Option<u64>,

    /// With --alloc: also count kernel allocations (kmalloc, slab caches, pages) made on
    /// the target's threads, charged to the crossing whose system calls made them.
    #[arg(long, requires = "alloc")]
    pub kmem: bool,

    /// Stop after this long (e.g. 500ms, 10s, 2m). Default: until Ctrl-C or the target exits.
    #[arg(short = 'd', long, value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Print the summary as JSON (schema documented in README.md) instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also write everything recorded to FILE as it comes (a capture file: `xlperf report
    /// FILE` prints the same summary, or exports a Perfetto/Chrome trace or a flame graph).
    /// A recording killed at any moment leaves a file readable up to its last write.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Parses a ring buffer size such as `4096`, `64K` or `8M`: a power of two from 4 KiB
/// (one page) to 1 GiB, as the kernel requires.
pub fn parse_ring_size(text: &str) -> Result<u32, String> {
    let bad = || format!("invalid ring size {text:?}: use a power of two from 4K to 1G, e.g. 8M");
    let (number, shift) = binary_suffix(text);
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(shift))
        .ok_or_else(bad)?;
    if !bytes.is_power_of_two() || !(4096..=1 << 30).contains(&bytes) {
        return Err(bad());
    }
    u32::try_from(bytes).map_err(|_| bad())
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct TargetArgs {
    /// Trace an existing process (repeatable).
    #[arg(short = 'p', long = "pid", value_name = "PID", group = "target_kind")]
    pub pids: Vec<u32>,

    /// Trace every process that maps the libraries.
    #[arg(long, group = "target_kind")]
    pub all: bool,

    /// Run this command and trace it from its first instruction; stop when it exits.
    #[arg(last = true, value_name = "COMMAND", group = "target_kind")]
    pub command: Vec<String>,
}

/// The library path or name and the functions of one `--ffi` argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FfiSpec {
    pub library: PathBuf,
    /// The function part as given (`*` when absent), for messages.
    pub glob: String,
    pub pick: Pick,
}

/// Which functions of the library an `--ffi` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// Shell-style patterns over symbol names and their demangled forms; brace
    /// alternatives already expanded (`deflate{,End}` is `deflate` and `deflateEnd`).
    Globs(Vec<String>),
    /// `LIB:0xOFFSET`: a function with no symbol, at this file offset.
    FileOffset(u64),
    /// `LIB:SYMBOL+0xOFFSET`: this many bytes into a function named exactly so.
    SymbolOffset { symbol: String, offset: u64 },
}

impl FfiSpec {
    /// Splits `LIB[:GLOB]` at the first colon that is not part of a `::` (so demangled
    /// Rust and C++ globs such as `libx.so:*my_crate::parse*` work); a missing or empty
    /// GLOB means every function. GLOB may also be `0xOFFSET` (a file offset) or
    /// `SYMBOL+0xOFFSET`.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let (library, glob) = match single_colon(spec) {
            Some(at) => (&spec[..at], &spec[at + 1..]),
            None => (spec, ""),
        };
        if library.is_empty() {
            return Err(format!(
                "--ffi {spec:?}: the library is missing; expected LIB[:GLOB], e.g. libz.so.1:deflate*"
            ));
        }
        let glob = if glob.is_empty() { "*" } else { glob };
        let bad_offset = |what: &str| {
            format!(
                "--ffi {spec:?}: {what:?} is not a hex offset; expected LIB:0xOFFSET (file offset) or LIB:SYMBOL+0xOFFSET"
            )
        };
        let pick = if let Some(hex) = glob.strip_prefix("0x") {
            Pick::FileOffset(u64::from_str_radix(hex, 16).map_err(|_| bad_offset(glob))?)
        } else if let Some((symbol, hex)) = glob.rsplit_once("+0x") {
            if symbol.is_empty() {
                return Err(bad_offset(glob));
            }
            Pick::SymbolOffset {
                symbol: symbol.to_owned(),
                offset: u64::from_str_radix(hex, 16).map_err(|_| bad_offset(hex))?,
            }
        } else {
            Pick::Globs(expand_braces(glob)?)
        };
        Ok(Self {
            library: PathBuf::from(library),
            glob: glob.to_owned(),
            pick,
        })
    }
}

/// The index of the first `:` that is neither preceded nor followed by another `:`.
fn single_colon(spec: &str) -> Option<usize> {
    let bytes = spec.as_bytes();
    (0..bytes.len()).find(|&i| {
        bytes[i] == b':'
            && (i == 0 || bytes[i - 1] != b':')
            && bytes.get(i + 1).is_none_or(|&b| b != b':')
    })
}

/// Expands shell brace alternatives, empty ones included: `deflate{,Init2_,End}` is
/// `deflate`, `deflateInit2_` and `deflateEnd`; nested and repeated groups work.
pub fn expand_braces(glob: &str) -> Result<Vec<String>, String> {
    let Some(open) = glob.find('{') else {
        if glob.contains('}') {
            return Err(format!("invalid function glob {glob:?}: unmatched '}}'"));
        }
        return Ok(vec![glob.to_owned()]);
    };
    let mut depth = 0;
    let mut close = None;
    let mut commas = Vec::new();
    for (i, c) in glob.char_indices().skip_while(|&(i, _)| i < open) {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            ',' if depth == 1 => commas.push(i),
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("invalid function glob {glob:?}: unmatched '{{'"))?;
    let (prefix, suffix) = (&glob[..open], &glob[close + 1..]);
    let mut starts = vec![open + 1];
    starts.extend(commas.iter().map(|c| c + 1));
    let mut ends = commas.clone();
    ends.push(close);
    let mut out = Vec::new();
    for (start, end) in starts.into_iter().zip(ends) {
        let alternative = format!("{prefix}{}{suffix}", &glob[start..end]);
        for expanded in expand_braces(&alternative)? {
            if !out.contains(&expanded) {
                out.push(expanded);
            }
        }
    }
    Ok(out)
}

/// Splits a K/M/G (binary) suffix off a size: the number and the shift it stands for.
fn binary_suffix(text: &str) -> (&str, u32) {
    match text.as_bytes().last() {
        Some(b'K' | b'k') => (&text[..text.len() - 1], 10),
        Some(b'M' | b'm') => (&text[..text.len() - 1], 20),
        Some(b'G' | b'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    }
}

/// Parses a positive byte count such as `4096`, `64K` or `1M`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad =
        || format!("invalid byte count {text:?}: use a positive number, e.g. 4096, 64K or 1M");
    let (number, shift) = binary_suffix(text);
    let bytes = number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_shl(shift).filter(|b| b >> shift == n))
        .ok_or_else(bad)?;
    if bytes == 0 {
        return Err(bad());
    }
    Ok(bytes)
}

/// Like [`parse_duration`], but `0` is allowed (meaning "skip").
pub fn parse_duration_or_zero(text: &str) -> Result<Duration, String> {
    if text.trim_end_matches(|c: char| c.is_ascii_alphabetic()) == "0" {
        return Ok(Duration::ZERO);
    }
    parse_duration(text)
}

/// Parses `250ms`, `10s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("invalid duration {text:?}: use a number with a unit, e.g. 500ms, 10s, 2m or 1h")
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(bad()),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(bad());
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        for bad in ["", "s", "10x", "-1s", "0", "ten", "1e400s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("3m"), Ok(3 << 20));
        for bad in ["", "0", "K", "-1", "1.5K", "99999999999999999999"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("8M"), Ok(8 << 20));
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("64k"), Ok(64 << 10));
        for bad in ["", "3M", "1K", "2G", "M", "-4K", "12345"] {
            assert!(parse_ring_size(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn ffi_specs() {
        let spec = FfiSpec::parse("libz.so.1:deflate*").expect("valid");
        assert_eq!(spec.library, PathBuf::from("libz.so.1"));
        assert_eq!(spec.glob, "deflate*");
        assert_eq!(spec.pick, Pick::Globs(vec!["deflate*".into()]));
        assert_eq!(FfiSpec::parse("libz").expect("valid").glob, "*");
        assert_eq!(FfiSpec::parse("/a/b.so:").expect("valid").glob, "*");
        assert!(FfiSpec::parse(":foo").is_err());
    }

    #[test]
    fn demangled_globs_keep_their_double_colons() {
        let spec = FfiSpec::parse("libx.so:*my_crate::module::*").expect("valid");
        assert_eq!(spec.library, PathBuf::from("libx.so"));
        assert_eq!(spec.pick, Pick::Globs(vec!["*my_crate::module::*".into()]));
        let cpp = FfiSpec::parse("./libfoo.so:ns::Class::method").expect("valid");
        assert_eq!(cpp.library, PathBuf::from("./libfoo.so"));
        assert_eq!(cpp.glob, "ns::Class::method");
    }

    #[test]
    fn offsets() {
        let spec = FfiSpec::parse("libx.so:0x1a2b").expect("valid");
        assert_eq!(spec.pick, Pick::FileOffset(0x1a2b));
        let spec = FfiSpec::parse("libx.so:xl_add+0x10").expect("valid");
        assert_eq!(
            spec.pick,
            Pick::SymbolOffset {
                symbol: "xl_add".into(),
                offset: 0x10
            }
        );
        assert!(FfiSpec::parse("libx.so:0xzz").is_err());
        assert!(FfiSpec::parse("libx.so:+0x10").is_err());
    }

    #[test]
    fn brace_alternatives_may_be_empty() {
        assert_eq!(
            expand_braces("deflate{,Init2_,End}").expect("valid"),
            vec!["deflate", "deflateInit2_", "deflateEnd"]
        );
        assert_eq!(
            expand_braces("xl_{add,sub{,_many}}").expect("valid"),
            vec!["xl_add", "xl_sub", "xl_sub_many"]
        );
        assert_eq!(expand_braces("a{b,c}{d,}").expect("valid").len(), 4);
        assert!(expand_braces("x{a,b").is_err());
        assert!(expand_braces("x}").is_err());
    }
}

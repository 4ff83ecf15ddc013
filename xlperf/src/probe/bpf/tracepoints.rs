//! The tracepoints behind `--sched` and `--alloc`'s mmap/munmap: their field offsets on
//! this kernel (from tracefs format files: they have moved between versions), the set of
//! target processes they filter on in BPF, and attaching them.

use std::{collections::HashMap, fs};

use aya::{
    Ebpf,
    maps::{Array, HashMap as BpfHashMap},
    programs::{ProgramError, TracePoint},
};
use xlperf_common::TracepointLayout;

use super::{ProbeError, links::Links, loader, tracefs};

/// Offsets and sizes of a tracepoint's fields, by name.
#[derive(Debug, Default)]
pub struct Format(HashMap<String, (u32, u32)>);

impl Format {
    /// Parses a tracefs `format` file (lines like `field:pid_t next_pid; offset:56; size:4;`).
    pub fn parse(text: &str) -> Self {
        let mut fields = HashMap::new();
        for line in text.lines() {
            let mut name = None;
            let mut offset = None;
            let mut size = None;
            for part in line.trim().split(';') {
                let part = part.trim();
                if let Some(decl) = part.strip_prefix("field:") {
                    // The name is the last word of the declaration, before any `[N]`.
                    name = decl
                        .split_whitespace()
                        .last()
                        .map(|w| w.split('[').next().unwrap_or(w).to_owned());
                } else if let Some(v) = part.strip_prefix("offset:") {
                    offset = v.parse().ok();
                } else if let Some(v) = part.strip_prefix("size:") {
                    size = v.parse().ok();
                }
            }
            if let (Some(name), Some(offset), Some(size)) = (name, offset, size) {
                fields.insert(name, (offset, size));
            }
        }
        Self(fields)
    }

    fn read(group: &str, name: &str) -> Result<Self, ProbeError> {
        let path = tracefs::root()
            .join("events")
            .join(group)
            .join(name)
            .join("format");
        let text = fs::read_to_string(&path).map_err(|_| ProbeError::NoTracepoint {
            tracepoint: format!("{group}/{name}"),
        })?;
        Ok(Self::parse(&text))
    }

    fn field(&self, tracepoint: &str, name: &str) -> Result<(u32, u32), ProbeError> {
        self.0
            .get(name)
            .copied()
            .ok_or_else(|| ProbeError::TracepointField {
                tracepoint: tracepoint.into(),
                field: name.into(),
            })
    }
}

/// Reads the field offsets the programs need from tracefs (mounting it if needed); those
/// of the kmem tracepoints only for `--kmem`.
pub fn layout(kmem: bool) -> Result<TracepointLayout, ProbeError> {
    tracefs::ensure_mounted().map_err(|source| ProbeError::Tracefs { source })?;
    let switch = Format::read("sched", "sched_switch")?;
    let waking = Format::read("sched", "sched_waking")?;
    let wakeup_new = Format::read("sched", "sched_wakeup_new")?;
    let mmap = Format::read("syscalls", "sys_enter_mmap")?;
    let munmap = Format::read("syscalls", "sys_enter_munmap")?;
    let (prev_state, prev_state_size) = switch.field("sched_switch", "prev_state")?;
    let (kmalloc_bytes, cache_alloc_bytes, page_alloc_order) = if kmem {
        (
            Format::read("kmem", "kmalloc")?
                .field("kmalloc", "bytes_alloc")?
                .0,
            Format::read("kmem", "kmem_cache_alloc")?
                .field("kmem_cache_alloc", "bytes_alloc")?
                .0,
            Format::read("kmem", "mm_page_alloc")?
                .field("mm_page_alloc", "order")?
                .0,
        )
    } else {
        (0, 0, 0)
    };
    Ok(TracepointLayout {
        switch_prev_pid: switch.field("sched_switch", "prev_pid")?.0,
        switch_prev_state: prev_state,
        switch_prev_state_size: prev_state_size,
        switch_next_pid: switch.field("sched_switch", "next_pid")?.0,
        waking_pid: waking.field("sched_waking", "pid")?.0,
        wakeup_new_pid: wakeup_new.field("sched_wakeup_new", "pid")?.0,
        mmap_len: mmap.field("sys_enter_mmap", "len")?.0,
        mmap_flags: mmap.field("sys_enter_mmap", "flags")?.0,
        munmap_len: munmap.field("sys_enter_munmap", "len")?.0,
        kmalloc_bytes,
        cache_alloc_bytes,
        page_alloc_order,
    })
}

/// Hands the layout to the programs.
pub fn write_layout(ebpf: &mut Ebpf, layout: TracepointLayout) -> Result<(), ProbeError> {
    let map = ebpf.map_mut(loader::LAYOUT).ok_or(ProbeError::MissingMap {
        name: loader::LAYOUT,
    })?;
    let mut array: Array<_, TracepointLayout> =
        Array::try_from(map).map_err(|source| ProbeError::Map {
            what: "opening the tracepoint layout map".into(),
            source,
        })?;
    array.set(0, layout, 0).map_err(|source| ProbeError::Map {
        what: "writing the tracepoint layout".into(),
        source,
    })
}

/// Makes the tracepoint programs follow process `pid`.
pub fn add_target(ebpf: &mut Ebpf, pid: u32) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(loader::TARGETS)
        .ok_or(ProbeError::MissingMap {
            name: loader::TARGETS,
        })?;
    let mut targets: BpfHashMap<_, u32, u32> =
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
            what: "opening the target-process map".into(),
            source,
        })?;
    targets.insert(pid, 1, 0).map_err(|source| ProbeError::Map {
        what: format!("adding pid {pid} to the target-process map"),
        source,
    })
}

/// Stops following process `pid` (the calibration's own, once measured).
pub fn remove_target(ebpf: &mut Ebpf, pid: u32) -> Result<(), ProbeError> {
    let map = ebpf
        .map_mut(loader::TARGETS)
        .ok_or(ProbeError::MissingMap {
            name: loader::TARGETS,
        })?;
    let mut targets: BpfHashMap<_, u32, u32> =
        BpfHashMap::try_from(map).map_err(|source| ProbeError::Map {
            what: "opening the target-process map".into(),
            source,
        })?;
    targets.remove(&pid).map_err(|source| ProbeError::Map {
        what: format!("removing pid {pid} from the target-process map"),
        source,
    })
}

/// `--sched`: the switch, waking and new-task tracepoints.
pub fn attach_sched(ebpf: &mut Ebpf, links: &mut Links) -> Result<(), ProbeError> {
    for (program, name) in [
        (loader::SCHED_SWITCH, "sched_switch"),
        (loader::SCHED_WAKING, "sched_waking"),
        (loader::SCHED_WAKEUP_NEW, "sched_wakeup_new"),
    ] {
        attach(ebpf, links, program, "sched", name)?;
    }
    Ok(())
}

/// `--alloc`: anonymous mmap and munmap, and with `kmem` the kernel's allocations.
pub fn attach_alloc(ebpf: &mut Ebpf, links: &mut Links, kmem: bool) -> Result<(), ProbeError> {
    for (program, name) in [
        (loader::MMAP_ENTER, "sys_enter_mmap"),
        (loader::MUNMAP_ENTER, "sys_enter_munmap"),
    ] {
        attach(ebpf, links, program, "syscalls", name)?;
    }
    if kmem {
        for name in [
            loader::KMALLOC,
            loader::KMEM_CACHE_ALLOC,
            loader::MM_PAGE_ALLOC,
        ] {
            attach(ebpf, links, name, "kmem", name)?;
        }
    }
    Ok(())
}

/// `--syscalls`: every system call's entry and return. The programs read the call's
/// number at a fixed offset: checked here against this kernel's format files.
pub fn attach_syscalls(ebpf: &mut Ebpf, links: &mut Links) -> Result<(), ProbeError> {
    syscalls_format()?;
    for (program, name) in [
        (loader::SYS_ENTER, "sys_enter"),
        (loader::SYS_EXIT, "sys_exit"),
    ] {
        attach(ebpf, links, program, "raw_syscalls", name)?;
    }
    Ok(())
}

/// Checks that both raw_syscalls events have `long id` where the programs read it.
pub fn syscalls_format() -> Result<(), ProbeError> {
    tracefs::ensure_mounted().map_err(|source| ProbeError::Tracefs { source })?;
    for name in ["sys_enter", "sys_exit"] {
        let tracepoint = format!("raw_syscalls/{name}");
        let (offset, size) = Format::read("raw_syscalls", name)?.field(&tracepoint, "id")?;
        if (offset as usize, size) != (xlperf_common::SYSCALL_ID_OFFSET, 8) {
            return Err(ProbeError::TracepointField {
                tracepoint,
                field: format!("id at offset {offset} (size {size}), where 8 (size 8) is expected"),
            });
        }
    }
    Ok(())
}

/// Every program xlperf runs for every process on the host, filtering for the targets:
/// the tracepoint programs and `--kfunc`'s kprobe pair.
const TRACEPOINT_PROGRAMS: [&str; 12] = [
    loader::KFUNC_ENTRY,
    loader::KFUNC_EXIT,
    loader::SCHED_SWITCH,
    loader::SCHED_WAKING,
    loader::SCHED_WAKEUP_NEW,
    loader::MMAP_ENTER,
    loader::MUNMAP_ENTER,
    loader::KMALLOC,
    loader::KMEM_CACHE_ALLOC,
    loader::MM_PAGE_ALLOC,
    loader::SYS_ENTER,
    loader::SYS_EXIT,
];

/// How long the loaded tracepoint programs have run, in all, as the kernel's BPF
/// statistics measured it (only while `aya::sys::enable_stats` is held). They run for
/// every process on the host, filtering for the targets: this is their whole cost. For
/// the kprobe pair it is the programs' part of their cost on other processes' calls (the
/// kprobe machinery around them is not measured), and on the targets' calls a part that
/// their calibrated per-call cost counts again.
pub fn run_time(ebpf: &Ebpf) -> Result<u64, ProbeError> {
    let mut total = 0u64;
    for name in TRACEPOINT_PROGRAMS {
        let Some(program) = ebpf.program(name) else {
            continue;
        };
        // A program never loaded has no info, and cost nothing.
        if let Ok(info) = program.info() {
            total =
                total.saturating_add(u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(total)
}

/// Attaches program `program` to tracepoint `group/name`.
pub fn attach(
    ebpf: &mut Ebpf,
    links: &mut Links,
    program: &'static str,
    group: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let tp: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(ProbeError::MissingProgram { name: program })?
        .try_into()
        .map_err(|source| ProbeError::Program {
            what: format!("program {program} is not a tracepoint program"),
            source,
        })?;
    match tp.load() {
        Ok(()) | Err(ProgramError::AlreadyLoaded) => {}
        Err(source) => {
            return Err(ProbeError::Program {
                what: format!("the kernel rejected eBPF program {program}"),
                source,
            });
        }
    }
    let id = tp
        .attach(group, name)
        .map_err(|source| ProbeError::Program {
            what: format!("attaching {program} to tracepoint {group}/{name}"),
            source,
        })?;
    let link = tp.take_link(id).map_err(|source| ProbeError::Program {
        what: format!("taking the link of tracepoint {group}/{name}"),
        source,
    })?;
    links.push_tracepoint(link);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_format_file() {
        let text = "name: sched_switch\nID: 372\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\n\tfield:char prev_comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:long prev_state;\toffset:32;\tsize:8;\tsigned:1;\n\tfield:pid_t next_pid;\toffset:56;\tsize:4;\tsigned:1;\n\nprint fmt: \"x\"";
        let format = Format::parse(text);
        assert_eq!(format.field("t", "prev_comm").ok(), Some((8, 16)));
        assert_eq!(format.field("t", "prev_state").ok(), Some((32, 8)));
        assert_eq!(format.field("t", "next_pid").ok(), Some((56, 4)));
        assert!(format.field("t", "missing").is_err());
    }
}

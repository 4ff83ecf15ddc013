//! A process's memory mappings (`/proc/PID/maps`) and its memory (`/proc/PID/mem`).

use std::{fs, os::unix::fs::FileExt as _, path::PathBuf};

use procfs::{
    ProcError,
    process::{MMPermissions, MMapPath, MemoryMap, Process},
};

use super::ProbeError;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub executable: bool,
    /// The mapped file as the target names it (its mount namespace), if file-backed.
    pub path: Option<String>,
}

impl Mapping {
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }

    pub fn file_name(&self) -> Option<&str> {
        self.path.as_deref()?.rsplit('/').next()
    }
}

/// The mappings of `pid`, in address order.
pub fn read(pid: u32) -> Result<Vec<Mapping>, ProbeError> {
    let path = format!("/proc/{pid}/maps");
    let read = i32::try_from(pid)
        .map_err(|_| ProcError::NotFound(None))
        .and_then(Process::new)
        .and_then(|p| p.maps());
    let maps = read.map_err(|e| match e {
        ProcError::NotFound(_) => ProbeError::NoSuchProcess { pid },
        e => ProbeError::Read {
            path: path.into(),
            source: io_error(e),
        },
    })?;
    Ok(maps.into_iter().map(Mapping::from).collect())
}

impl From<MemoryMap> for Mapping {
    fn from(map: MemoryMap) -> Self {
        Self {
            start: map.address.0,
            end: map.address.1,
            offset: map.offset,
            executable: map.perms.contains(MMPermissions::EXECUTE),
            path: match map.pathname {
                MMapPath::Path(path) => Some(path.to_string_lossy().into_owned()),
                _ => None,
            },
        }
    }
}

/// The error as the system call gave it (`Permission denied (os error 13)`).
fn io_error(e: ProcError) -> std::io::Error {
    match e {
        ProcError::Io(source, _) => source,
        ProcError::PermissionDenied(_) => std::io::Error::from_raw_os_error(libc::EACCES),
        e => std::io::Error::other(e.to_string()),
    }
}

/// Where the file `path` is loaded in a process: the start of its mapping at file
/// offset 0. Shared objects have their first segment at address 0, so this is also the
/// base that symbol addresses are relative to.
pub fn load_base(mappings: &[Mapping], path: &str) -> Option<u64> {
    mappings
        .iter()
        .find(|m| m.offset == 0 && m.path.as_deref() == Some(path))
        .map(|m| m.start)
}

/// A path from the target's maps, reachable from our mount namespace.
pub fn host_path(pid: u32, path: &str) -> PathBuf {
    super::process::in_mount_namespace_of(pid, std::path::Path::new(path))
}

/// Reads another process's memory through `/proc/PID/mem` (needs ptrace access, which
/// root has).
pub struct Memory {
    pid: u32,
    file: fs::File,
}

impl Memory {
    pub fn open(pid: u32) -> Result<Self, ProbeError> {
        let path = format!("/proc/{pid}/mem");
        let file = fs::File::open(&path).map_err(|source| ProbeError::Read {
            path: path.into(),
            source,
        })?;
        Ok(Self { pid, file })
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), ProbeError> {
        self.file
            .read_exact_at(buf, addr)
            .map_err(|source| ProbeError::Read {
                path: format!("/proc/{}/mem at {addr:#x}", self.pid).into(),
                source,
            })
    }

    /// A NUL-terminated string of at most `max` bytes.
    pub fn c_string(&self, addr: u64, max: usize) -> Result<String, ProbeError> {
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        while out.len() < max {
            // Read byte-wise near the end of a mapping rather than fail the whole chunk.
            let n = if self.read(addr + out.len() as u64, &mut chunk).is_ok() {
                chunk.len()
            } else {
                self.read(addr + out.len() as u64, &mut chunk[..1])?;
                1
            };
            if let Some(nul) = chunk[..n].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                return Ok(String::from_utf8_lossy(&out).into_owned());
            }
            out.extend_from_slice(&chunk[..n]);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Option<Mapping> {
        use procfs::{FromRead as _, process::MemoryMaps};
        let maps = MemoryMaps::from_read(line.as_bytes()).ok()?;
        maps.into_iter().next().map(Mapping::from)
    }

    #[test]
    fn parses_maps_lines() {
        let m = parse_line(
            "7f7c53000000-7f7c530c5000 r-xp 00001000 fe:00 326305   /usr/lib/x86_64-linux-gnu/libcrypto.so.3",
        )
        .expect("line");
        assert_eq!(
            (m.start, m.end, m.offset),
            (0x7f7c53000000, 0x7f7c530c5000, 0x1000)
        );
        assert!(m.executable);
        assert_eq!(m.file_name(), Some("libcrypto.so.3"));
        let anon = parse_line("7ffd1000-7ffd2000 rw-p 00000000 00:00 0 [stack]").expect("anon");
        assert_eq!(anon.path, None);
        assert!(!anon.executable);
    }

    #[test]
    fn reads_own_memory() {
        let text = b"xlperf\0";
        let mappings = read(std::process::id()).expect("own maps");
        assert!(mappings.iter().any(|m| m.executable));
        let mem = Memory::open(std::process::id()).expect("own mem");
        assert_eq!(
            mem.c_string(text.as_ptr() as u64, 64).expect("read"),
            "xlperf"
        );
        let value: u64 = 0x1122_3344_5566_7788;
        let mut bytes = [0u8; 8];
        mem.read(&raw const value as u64, &mut bytes)
            .expect("read u64");
        assert_eq!(u64::from_le_bytes(bytes), value);
    }
}

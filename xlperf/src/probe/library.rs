//! Turning the LIB of `--ffi LIB[:GLOB]` into a file to attach to.
//!
//! LIB is a path, or a name: first looked up among the files the target has mapped (what
//! it really runs, even inside a container), then in the dynamic linker's cache.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::ProbeError;

/// Where a library name is looked up.
#[derive(Debug, Clone)]
pub enum Scope<'a> {
    /// A running process: its memory maps, then the linker cache.
    Pid(u32),
    /// A program about to be started: its own executable, then the linker cache.
    Program(&'a Path),
    /// Every process: the linker cache only.
    All,
}

/// The library file for `spec` as seen from `scope`.
pub fn resolve(spec: &Path, scope: &Scope<'_>) -> Result<PathBuf, ProbeError> {
    let text = spec.to_string_lossy();
    if text.contains('/') {
        return fs::canonicalize(spec).map_err(|_| ProbeError::LibraryNotFound {
            library: text.into_owned(),
            looked_in: "the file system (no such file)".into(),
        });
    }
    let name = text.as_ref();
    let found = match scope {
        Scope::Pid(pid) => from_maps(*pid, name)?,
        Scope::Program(exe) => (file_name(exe) == name).then(|| exe.to_path_buf()),
        Scope::All => None,
    };
    if let Some(found) = found {
        return Ok(found);
    }
    if let Some(found) = from_linker_cache(name) {
        return Ok(found);
    }
    let looked_in = match scope {
        Scope::Pid(pid) => format!("the memory maps of pid {pid} and the linker cache"),
        Scope::Program(exe) => format!("{} and the linker cache", exe.display()),
        Scope::All => "the linker cache".into(),
    };
    Err(ProbeError::LibraryNotFound {
        library: name.into(),
        looked_in,
    })
}

/// Does a file name match a library name given by the user? `libz` and `libz.so` match
/// `libz.so.1.2.13`; `libpython3.11` matches `libpython3.11.so.1.0`.
pub fn name_matches(file_name: &str, name: &str) -> bool {
    file_name == name
        || file_name.strip_prefix(name).is_some_and(|rest| {
            rest.starts_with(".so") || rest.starts_with('.') && name.contains(".so")
        })
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

fn from_maps(pid: u32, name: &str) -> Result<Option<PathBuf>, ProbeError> {
    let mappings = super::maps::read(pid)?;
    let found = mappings
        .iter()
        .filter_map(|m| m.path.as_deref())
        .map(Path::new)
        .find(|path| name_matches(file_name(path), name))
        .map(Path::to_path_buf);
    Ok(found.map(|path| in_mount_namespace_of(pid, &path)))
}

/// Paths in /proc/PID/maps are in the target's mount namespace; reach them through its root.
pub(super) fn in_mount_namespace_of(pid: u32, path: &Path) -> PathBuf {
    let same_root = match (
        fs::metadata("/proc/self/root"),
        fs::metadata(format!("/proc/{pid}/root")),
    ) {
        (Ok(a), Ok(b)) => {
            use std::os::unix::fs::MetadataExt as _;
            a.dev() == b.dev() && a.ino() == b.ino()
        }
        _ => true,
    };
    if same_root {
        path.to_path_buf()
    } else {
        Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path))
    }
}

/// Looks `name` up in `ldconfig -p`, preferring 64-bit x86 entries.
fn from_linker_cache(name: &str) -> Option<PathBuf> {
    let output = ["/sbin/ldconfig", "/usr/sbin/ldconfig", "ldconfig"]
        .iter()
        .find_map(|cmd| Command::new(cmd).arg("-p").output().ok())?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut candidates: Vec<(bool, PathBuf)> = text
        .lines()
        .filter_map(|line| {
            let (left, path) = line.split_once(" => ")?;
            let (soname, arch) = left.trim().split_once(' ')?;
            name_matches(soname, name)
                .then(|| (arch.contains("x86-64"), PathBuf::from(path.trim())))
        })
        .collect();
    candidates.sort_by_key(|(x86_64, _)| !x86_64);
    candidates.into_iter().map(|(_, path)| path).next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_names() {
        assert!(name_matches("libz.so.1.2.13", "libz"));
        assert!(name_matches("libz.so.1", "libz.so.1"));
        assert!(name_matches("libz.so.1.2.13", "libz.so.1"));
        assert!(name_matches("libz.so.1.2.13", "libz.so"));
        assert!(name_matches("libpython3.11.so.1.0", "libpython3.11"));
        assert!(!name_matches("libzstd.so.1", "libz"));
        assert!(!name_matches("libz.so.1", "libz.so.2"));
    }

    #[test]
    fn libc_is_found_in_our_own_maps() {
        let found = resolve(Path::new("libc.so.6"), &Scope::Pid(std::process::id())).expect("libc");
        assert!(found.to_string_lossy().contains("libc"));
    }

    #[test]
    fn unknown_library_is_an_error() {
        let err = resolve(Path::new("libdoesnotexist"), &Scope::All).expect_err("missing");
        assert!(err.to_string().contains("libdoesnotexist"));
    }
}

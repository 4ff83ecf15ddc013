//! Turning the LIB of `--ffi LIB[:GLOB]` into a file to attach to, as the target sees it.
//!
//! LIB is a path, or a name. A name stands for a file the target really maps: with `-p`,
//! one in its memory maps (even inside a container), or the executable by its process
//! name; for a command, the program itself by name, else what the process maps once it
//! runs (see `pending.rs`); with `--all`, the dynamic linker's cache (the only place left).
//! Attaching to some other file of the same name would count nothing and say so falsely.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use super::{ProbeError, proc::process};

/// Where a library name is looked up.
#[derive(Debug, Clone)]
pub enum Scope<'a> {
    /// A running process: its memory maps and its executable.
    Pid(u32),
    /// A program about to be started: its own executable; other names wait until the
    /// process maps them.
    Program(&'a Path),
    /// Every process: the linker cache only.
    All,
}

/// What a name given in a command's scope turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// This file, now.
    File(PathBuf),
    /// Not mapped yet: attached when the process maps a file of that name. `expected` is
    /// the file the dynamic loader's search finds now, if any (used to check the glob
    /// before the program starts).
    Later { expected: Option<PathBuf> },
}

/// The library file for `spec` as seen from `scope`; a name the command has not mapped
/// yet is an error here (use [`find`] to learn that instead).
pub fn resolve(spec: &Path, scope: &Scope<'_>) -> Result<PathBuf, ProbeError> {
    match find(spec, scope)? {
        Found::File(path) => Ok(path),
        Found::Later { expected } => expected.ok_or_else(|| ProbeError::LibraryNotFound {
            library: spec.display().to_string(),
            looked_in:
                "the program's library search path (RUNPATH, LD_LIBRARY_PATH, the linker cache)"
                    .into(),
        }),
    }
}

/// Where `spec` is, or will be, from `scope`.
pub fn find(spec: &Path, scope: &Scope<'_>) -> Result<Found, ProbeError> {
    let text = spec.to_string_lossy();
    if text.contains('/') {
        return fs::canonicalize(spec)
            .map(Found::File)
            .map_err(|_| ProbeError::LibraryNotFound {
                library: text.into_owned(),
                looked_in: "the file system (no such file)".into(),
            });
    }
    let name = text.as_ref();
    match scope {
        Scope::Pid(pid) => from_process(*pid, name).map(Found::File),
        Scope::Program(exe) => {
            if file_name(exe) == name {
                return Ok(Found::File(exe.to_path_buf()));
            }
            Ok(Found::Later {
                expected: loader_search(exe, name),
            })
        }
        Scope::All => from_linker_cache(name)
            .map(Found::File)
            .ok_or_else(|| ProbeError::LibraryNotFound {
                library: name.into(),
                looked_in: "the linker cache (with --all a name must be a system library; give a path for others)".into(),
            }),
    }
}

/// Does a file name match a library name given by the user? `libz` and `libz.so` match
/// `libz.so.1.2.13`; `libpython3.11` matches `libpython3.11.so.1.0`; a wheel's vendored
/// copy `libscipy_openblas64_-32a4b2a6.so` matches `libscipy_openblas64_` (its hash
/// suffix is ignored).
pub fn name_matches(file_name: &str, name: &str) -> bool {
    if file_name == name {
        return true;
    }
    let Some(rest) = file_name.strip_prefix(name) else {
        return false;
    };
    let rest = strip_wheel_hash(rest);
    rest.is_empty() || rest.starts_with(".so") || rest.starts_with('.') && name.contains(".so")
}

/// `-` (or nothing, after a name ending in `-`/`_`) and 8 hex digits, as auditwheel and
/// delocate rename vendored libraries.
fn strip_wheel_hash(rest: &str) -> &str {
    let hex = rest.strip_prefix('-').unwrap_or(rest);
    match hex.get(..8) {
        Some(digits)
            if digits.bytes().all(|b| b.is_ascii_hexdigit()) && hex[8..].starts_with(".so") =>
        {
            &hex[8..]
        }
        _ => rest,
    }
}

fn file_name(path: &Path) -> &str {
    path.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
}

/// A name in a running process: a file it maps, or its executable by process name.
fn from_process(pid: u32, name: &str) -> Result<PathBuf, ProbeError> {
    let mappings = super::proc::maps::read(pid)?;
    let paths: Vec<&str> = mappings.iter().filter_map(|m| m.path.as_deref()).collect();
    if let Some(path) = paths
        .iter()
        .find(|path| name_matches(file_name(Path::new(path)), name))
    {
        return Ok(process::in_mount_namespace_of(pid, Path::new(path)));
    }
    // The executable answers to the process's names too: `redis-server` runs the file
    // redis-check-rdb links to.
    if let Some(exe) = process::exe(pid)
        && (process::comm(pid) == name || process::argv0(pid).as_deref() == Some(name))
    {
        return Ok(process::in_mount_namespace_of(pid, &exe));
    }
    Err(ProbeError::NotMapped {
        pid,
        library: name.into(),
        comm: process::comm(pid),
        similar: similar(&paths, name),
    })
}

/// Mapped files whose names look like `name` (same stem, up to its version or hash), to
/// suggest when `name` itself is not mapped.
fn similar(paths: &[&str], name: &str) -> Vec<String> {
    let base = name
        .split(".so")
        .next()
        .unwrap_or(name)
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.' || c == '-' || c == '_');
    let stem = base.strip_prefix("lib").unwrap_or(base).to_lowercase();
    let looks_alike = |file: &str| {
        // Another version of the same library (libc.so.6 for libc.so.5), or, for
        // longer names, a file that contains the name (python3.11 for libpython3.11).
        file.strip_prefix(base).is_some_and(|rest| {
            rest.starts_with(|c: char| c == '.' || c == '-' || c == '_' || c.is_ascii_digit())
        }) || stem.len() >= 3 && file.to_lowercase().contains(&stem)
    };
    let mut found: Vec<String> = paths
        .iter()
        .map(|p| file_name(Path::new(p)).to_owned())
        .filter(|f| looks_alike(f))
        .collect();
    found.sort();
    found.dedup();
    found.truncate(5);
    found
}

/// Where the dynamic loader would look for `name` when `exe` (or a library it loads)
/// asks for it: the program's RUNPATH/RPATH, `LD_LIBRARY_PATH`, then the linker cache.
/// Only a guess of what the process will map; used to check a glob early.
fn loader_search(exe: &Path, name: &str) -> Option<PathBuf> {
    let origin = exe.parent().unwrap_or(Path::new("/"));
    let mut dirs: Vec<PathBuf> = runpath(exe)
        .into_iter()
        .flat_map(|list| {
            list.split(':')
                .filter(|d| !d.is_empty())
                .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin.to_string_lossy())))
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut matches: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| name_matches(file_name(p), name))
            .collect();
        matches.sort();
        if let Some(found) = matches.into_iter().next() {
            return fs::canonicalize(&found).ok().or(Some(found));
        }
    }
    from_linker_cache(name)
}

/// DT_RUNPATH, else DT_RPATH, of an ELF file.
fn runpath(path: &Path) -> Option<String> {
    use object::{
        Endianness,
        elf::{DT_RPATH, DT_RUNPATH, FileHeader64},
        read::elf::{Dyn as _, FileHeader as _},
    };
    let data = fs::read(path).ok()?;
    let header = FileHeader64::<Endianness>::parse(&*data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, &*data).ok()?;
    let (dynamic, index) = sections.dynamic(endian, &*data).ok()??;
    let strings = sections.strings(endian, &*data, index).ok()?;
    let mut rpath = None;
    for entry in dynamic {
        let tag = entry.tag32(endian);
        if tag != Some(DT_RUNPATH) && tag != Some(DT_RPATH) {
            continue;
        }
        let value = entry.string(endian, strings).ok()?;
        let text = String::from_utf8_lossy(value).into_owned();
        if tag == Some(DT_RUNPATH) {
            return Some(text);
        }
        rpath = Some(text);
    }
    rpath
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
    fn wheel_hash_suffixes_are_ignored() {
        assert!(name_matches(
            "libscipy_openblas64_-32a4b2a6.so",
            "libscipy_openblas64_"
        ));
        assert!(name_matches("libgfortran-040039e1.so.5.0.0", "libgfortran"));
        assert!(!name_matches("libgfortran-nothex1.so.5", "libgfortran"));
    }

    #[test]
    fn libc_is_found_in_our_own_maps() {
        let found = resolve(Path::new("libc.so.6"), &Scope::Pid(std::process::id())).expect("libc");
        assert!(found.to_string_lossy().contains("libc"));
    }

    #[test]
    fn a_library_the_process_does_not_map_is_an_error_naming_similar_ones() {
        let err = resolve(Path::new("libc.so.5"), &Scope::Pid(std::process::id()))
            .expect_err("not mapped");
        let text = err.to_string();
        assert!(
            text.contains("libc.so.5") && text.contains("libc.so.6"),
            "{text}"
        );
    }

    #[test]
    fn the_executable_answers_to_its_process_name() {
        let me = std::process::id();
        let comm = crate::probe::proc::target::comm(me);
        let found = resolve(Path::new(&comm), &Scope::Pid(me)).expect("own exe by comm");
        let exe = fs::read_link("/proc/self/exe").expect("exe");
        assert_eq!(found, exe);
    }

    #[test]
    fn a_command_maps_other_names_later() {
        let exe = fs::canonicalize("/bin/sh").expect("sh");
        let found = find(Path::new("libc.so.6"), &Scope::Program(&exe)).expect("found");
        assert!(
            matches!(&found, Found::Later { expected: Some(p) } if p.to_string_lossy().contains("libc")),
            "{found:?}"
        );
    }

    #[test]
    fn unknown_library_is_an_error() {
        let err = resolve(Path::new("libdoesnotexist"), &Scope::All).expect_err("missing");
        assert!(err.to_string().contains("libdoesnotexist"));
    }
}

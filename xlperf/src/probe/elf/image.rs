//! Function symbols of an ELF file, with the file offsets uprobes attach at.

use std::{collections::BTreeMap, fs, path::Path};

use object::{Object as _, ObjectSegment as _, ObjectSymbol as _, SymbolFlags, SymbolKind};

use super::ProbeError;

/// `STT_GNU_IFUNC`: the symbol's address is a resolver run once by the dynamic linker,
/// not the function callers reach.
const STT_GNU_IFUNC: u8 = 10;

/// A function defined in an ELF file, possibly under several names (aliases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    /// Every symbol name at this address, `.dynsym` names first.
    pub names: Vec<String>,
    pub vaddr: u64,
    pub size: u64,
    /// Where the function's first byte lies in the file: what a uprobe attaches to.
    pub file_offset: u64,
    pub ifunc: bool,
}

/// An ELF image read into memory with its functions indexed by address.
pub struct ElfImage {
    data: Vec<u8>,
    pub functions: Vec<Function>,
    /// Loadable segments: (vaddr, file offset, file size).
    segments: Vec<(u64, u64, u64)>,
}

impl ElfImage {
    pub fn read(path: &Path) -> Result<Self, ProbeError> {
        let data = fs::read(path).map_err(|source| ProbeError::Read {
            path: path.to_owned(),
            source,
        })?;
        let (functions, segments) = functions(&data).map_err(|reason| ProbeError::NotElf {
            path: path.to_owned(),
            reason,
        })?;
        Ok(Self {
            data,
            functions,
            segments,
        })
    }

    /// Up to `max` bytes of the file from `offset` (code of a function without a symbol).
    pub fn bytes_at(&self, offset: u64, max: u64) -> &[u8] {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(usize::try_from(max).unwrap_or(0));
        self.data
            .get(start..end.min(self.data.len()))
            .unwrap_or_default()
    }

    /// Link-time addresses of every copy of `needle` in the loaded part of the file.
    pub fn find_bytes(&self, needle: &[u8]) -> Vec<u64> {
        if needle.is_empty() {
            return Vec::new();
        }
        self.data
            .windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .filter_map(|(offset, _)| {
                let offset = offset as u64;
                self.segments.iter().find_map(|&(addr, start, size)| {
                    (offset >= start && offset - start < size).then(|| addr + offset - start)
                })
            })
            .collect()
    }

    /// Writable loaded segments, as (link-time address, bytes backed by the file).
    pub fn writable_segments(&self) -> Vec<(u64, u64)> {
        let Ok(file) = object::File::parse(&*self.data) else {
            return Vec::new();
        };
        file.segments()
            .filter(
                |s| matches!(s.flags(), object::SegmentFlags::Elf { p_flags } if p_flags & 2 != 0),
            )
            .map(|s| (s.address(), s.file_range().1))
            .collect()
    }

    /// The function named `name` (any of its aliases).
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| f.names.iter().any(|n| n == name))
    }

    /// The function whose code contains `vaddr`.
    pub fn function_at(&self, vaddr: u64) -> Option<&Function> {
        self.functions
            .iter()
            .find(|f| vaddr >= f.vaddr && vaddr - f.vaddr < f.size.max(1))
    }

    /// The function whose code holds file offset `offset`, and how far into it.
    pub fn function_at_offset(&self, offset: u64) -> Option<(&Function, u64)> {
        self.functions.iter().find_map(|f| {
            let into = offset.checked_sub(f.file_offset)?;
            (into < f.size.max(1)).then_some((f, into))
        })
    }

    /// The file offset holding the byte at `vaddr`.
    pub fn file_offset(&self, vaddr: u64) -> Option<u64> {
        file_offset(&self.segments, vaddr)
    }

    /// The lowest loaded address: a process maps the file at `base - load_vaddr`.
    pub fn load_vaddr(&self) -> u64 {
        self.segments
            .iter()
            .map(|&(addr, _, _)| addr & !0xfff)
            .min()
            .unwrap_or(0)
    }

    /// Up to `max` bytes of a function's code, read from the file.
    pub fn code(&self, function: &Function, max: u64) -> &[u8] {
        let start = usize::try_from(function.file_offset).unwrap_or(usize::MAX);
        let len = usize::try_from(function.size.min(max)).unwrap_or(0);
        self.data
            .get(start..start.saturating_add(len))
            .unwrap_or_default()
    }
}

type Segments = Vec<(u64, u64, u64)>;

fn file_offset(segments: &[(u64, u64, u64)], vaddr: u64) -> Option<u64> {
    segments.iter().find_map(|&(addr, offset, size)| {
        (vaddr >= addr && vaddr - addr < size).then(|| vaddr - addr + offset)
    })
}

fn functions(data: &[u8]) -> Result<(Vec<Function>, Segments), String> {
    let file = object::File::parse(data).map_err(|e| e.to_string())?;
    if file.format() != object::BinaryFormat::Elf {
        return Err("not an ELF file".into());
    }
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .map(|s| {
            let (offset, file_size) = s.file_range();
            (s.address(), offset, file_size)
        })
        .collect();

    let mut by_addr: BTreeMap<u64, Function> = BTreeMap::new();
    for symbol in file.dynamic_symbols().chain(file.symbols()) {
        if symbol.kind() != SymbolKind::Text || !symbol.is_definition() || symbol.size() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty() {
            continue;
        }
        let vaddr = symbol.address();
        let Some(file_offset) = file_offset(&segments, vaddr) else {
            continue;
        };
        let ifunc = matches!(symbol.flags(), SymbolFlags::Elf { st_info, .. } if st_info & 0xf == STT_GNU_IFUNC);
        let entry = by_addr.entry(vaddr).or_insert_with(|| Function {
            names: Vec::new(),
            vaddr,
            size: symbol.size(),
            file_offset,
            ifunc,
        });
        if !entry.names.iter().any(|n| n == name) {
            entry.names.push(name.to_owned());
        }
    }
    Ok((by_addr.into_values().collect(), segments))
}

/// A mangled symbol as its language writes it: Rust (legacy and v0) without the hash
/// (`my_crate::module::parse`), else C++ (Itanium, with parameters); None for names
/// that are not mangled. Done on demand: demangling every symbol of a large binary
/// (beam.smp has thousands of C++ ones) costs more than reading it.
pub fn demangle(symbol: &str) -> Option<String> {
    if let Ok(rust) = rustc_demangle::try_demangle(symbol) {
        return Some(format!("{rust:#}"));
    }
    if !symbol.starts_with("_Z") {
        return None;
    }
    cpp_demangle::Symbol::new(symbol).ok()?.demangle().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_executable_has_functions_with_file_offsets() {
        let image = ElfImage::read(Path::new("/proc/self/exe")).expect("read self");
        let main = image
            .functions
            .iter()
            .find(|f| f.names.iter().any(|n| n == "main"))
            .expect("main is a function of the test binary");
        assert!(main.size > 0);
        assert!(!image.code(main, 16).is_empty());
    }

    #[test]
    fn rust_and_cpp_names_are_demangled() {
        assert_eq!(
            demangle("_ZN8my_crate6module5parse17h0123456789abcdefE").as_deref(),
            Some("my_crate::module::parse")
        );
        assert_eq!(
            demangle("_ZN2ns5Klass6methodEi").as_deref(),
            Some("ns::Klass::method(int)")
        );
        assert_eq!(demangle("deflate"), None);
    }

    #[test]
    fn non_elf_is_an_error() {
        assert!(functions(b"#!/bin/sh\necho hi\n").is_err());
    }
}

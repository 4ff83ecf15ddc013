//! The boundary table: every traced function gets a small integer id, which is the
//! uprobe's attach cookie and the `boundary` field of each call record.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use globset::{GlobBuilder, GlobSetBuilder};

use super::{
    ProbeError,
    beam::entry::NifFunction,
    elf::{self, ElfImage, Function, prologue},
    kernel::KernelFunction,
    library::{self, Scope},
};
use crate::model::ProbeSite;
use crate::{
    cli::{FfiSpec, Pick},
    model::{BoundaryInfo, NifInfo},
};

/// One traced function.
#[derive(Debug, Clone)]
pub struct Boundary {
    pub id: u32,
    pub library: PathBuf,
    pub function: String,
    /// File offset of the function's first byte.
    pub file_offset: u64,
    pub site: ProbeSite,
    /// Set for Erlang/Elixir NIFs.
    pub nif: Option<NifFunction>,
    /// Set for kernel functions (`--kfunc`): `Some(None)` for the function itself (its
    /// calls outside any crossing), `Some(Some(parent))` for its calls inside crossing
    /// `parent`, each such pair a row of its own.
    pub kernel: Option<Option<u32>>,
}

impl Boundary {
    /// File offset the probes attach to.
    pub fn attach_offset(&self) -> u64 {
        self.file_offset + self.site.offset
    }

    /// The library's file name, as shown in tables.
    pub fn library_name(&self) -> String {
        self.library.file_name().map_or_else(
            || self.library.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }
}

impl Boundary {
    /// What the summary and capture files say about this boundary. `nif_site`: where the
    /// NIF dispatch probes sit, when they (not a probe on each NIF) caught the NIF calls.
    pub fn info(&self, nif_site: Option<ProbeSite>) -> BoundaryInfo {
        let boundary = self;
        let site = match (&boundary.nif, nif_site) {
            (Some(_), Some(dispatch)) => dispatch,
            _ => boundary.site,
        };
        BoundaryInfo {
            library: boundary.library_name(),
            library_path: boundary.library.display().to_string(),
            function: boundary.function.clone(),
            runtime: if boundary.nif.is_some() {
                "beam"
            } else if boundary.kernel.is_some() {
                "kernel"
            } else {
                "ffi"
            }
            .into(),
            probe_offset: site.offset,
            probe_emulated: site.emulated,
            parent: boundary.kernel.flatten(),
            nif: boundary.nif.as_ref().map(|nif| NifInfo {
                module: nif.module.clone(),
                arity: nif.arity,
                dirty: nif.dirty().map(str::to_owned),
            }),
        }
    }
}

/// All boundaries of a recording, and which of them each target scope gets.
#[derive(Debug, Default)]
pub struct BoundaryTable {
    boundaries: Vec<Boundary>,
    /// By (file, file offset of the probe's function or explicit site).
    by_site: HashMap<(PathBuf, u64), u32>,
    /// NIFs by (library, Erlang name): the same NIF in two processes is one boundary.
    by_nif: HashMap<(PathBuf, String), u32>,
    /// Kernel functions' rows by (function's own id, crossing it ran in).
    by_parent: HashMap<(u32, u32), u32>,
}

impl BoundaryTable {
    /// Every boundary, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Boundary> {
        self.boundaries.iter()
    }

    pub fn get(&self, id: u32) -> Option<&Boundary> {
        self.boundaries
            .get(usize::try_from(id).ok()?.checked_sub(1)?)
    }

    pub fn len(&self) -> usize {
        self.boundaries.len()
    }

    /// Boundaries named with --ffi (not NIFs, not kernel functions).
    pub fn ffi_len(&self) -> usize {
        self.boundaries
            .iter()
            .filter(|b| b.nif.is_none() && b.kernel.is_none())
            .count()
    }

    /// Whether `id` is a kernel function's (`--kfunc`).
    pub fn is_kernel(&self, id: u32) -> bool {
        self.get(id).is_some_and(|b| b.kernel.is_some())
    }

    /// Adds kernel function `function` (its calls outside any crossing), returning its id.
    pub fn add_kernel(&mut self, function: &KernelFunction) -> u32 {
        let site = ProbeSite {
            offset: 0,
            emulated: true,
        };
        let id = self.push(
            Path::new(function.library()),
            &function.name,
            function.addr,
            site,
            None,
        );
        if let Some(b) = self.boundaries.last_mut() {
            b.kernel = Some(None);
        }
        id
    }

    /// The row of kernel function `id`'s calls inside crossing `parent` (created on first
    /// use); `id` itself outside any.
    pub fn kernel_under(&mut self, id: u32, parent: u32) -> u32 {
        if parent == xlperf_common::NO_BOUNDARY {
            return id;
        }
        if let Some(&row) = self.by_parent.get(&(id, parent)) {
            return row;
        }
        let Some(base) = self.get(id).cloned() else {
            return id;
        };
        let row = self.push(
            &base.library,
            &base.function,
            base.file_offset,
            base.site,
            None,
        );
        if let Some(b) = self.boundaries.last_mut() {
            b.kernel = Some(Some(parent));
        }
        self.by_parent.insert((id, parent), row);
        row
    }

    pub fn is_empty(&self) -> bool {
        self.boundaries.is_empty()
    }

    /// Adds the functions of `spec` as seen from `scope`, returning their ids.
    pub fn add(&mut self, spec: &FfiSpec, scope: &Scope<'_>) -> Result<Vec<u32>, ProbeError> {
        let path = library::resolve(&spec.library, scope)?;
        self.add_file(spec, &path)
    }

    /// Adds the functions of `spec` in the file at `path`, returning their ids.
    pub fn add_file(&mut self, spec: &FfiSpec, path: &Path) -> Result<Vec<u32>, ProbeError> {
        let image = ElfImage::read(path)?;
        let path = path.to_path_buf();
        let mut ids = Vec::new();
        for (name, file_offset, site) in select(spec, &path, &image)? {
            let key = (path.clone(), file_offset);
            let id = match self.by_site.get(&key) {
                Some(&id) => id,
                None => self.push(&path, &name, file_offset, site, None),
            };
            self.by_site.insert(key, id);
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Adds a NIF found in a library's NIF table (link-time address `vaddr` in `image`,
    /// the file at `library`); the same NIF seen in another process keeps its id.
    pub fn add_nif(
        &mut self,
        library: &Path,
        nif: &NifFunction,
        vaddr: u64,
        image: &ElfImage,
    ) -> u32 {
        let file_offset = image.file_offset(vaddr).unwrap_or(0);
        // Fallback NIF probes only time the call.
        let site = prologue::choose(
            image.bytes_at(file_offset, prologue::CODE_WINDOW),
            prologue::Reads::Nothing,
        );
        self.add_nif_at(library, nif, file_offset, site)
    }

    /// Adds a NIF known only from its table (reported by the VM's load hook): named, but
    /// without a probe site, which only the dispatch probes (that need none) use.
    pub fn add_loaded_nif(&mut self, library: &Path, nif: &NifFunction) -> u32 {
        let site = ProbeSite {
            offset: 0,
            emulated: false,
        };
        self.add_nif_at(library, nif, 0, site)
    }

    fn add_nif_at(
        &mut self,
        library: &Path,
        nif: &NifFunction,
        file_offset: u64,
        site: ProbeSite,
    ) -> u32 {
        let name = nif.display_name();
        let key = (library.to_path_buf(), name.clone());
        if let Some(&id) = self.by_nif.get(&key) {
            return id;
        }
        let id = self.push(library, &name, file_offset, site, Some(nif.clone()));
        self.by_nif.insert(key, id);
        id
    }

    fn push(
        &mut self,
        library: &Path,
        function: &str,
        file_offset: u64,
        site: ProbeSite,
        nif: Option<NifFunction>,
    ) -> u32 {
        // Ids count up from 1 and stay below the reserved ids (dispatch, calibration).
        let id = u32::try_from(self.boundaries.len() + 1).unwrap_or(u32::MAX - 16);
        self.boundaries.push(Boundary {
            id,
            library: library.to_path_buf(),
            function: function.to_owned(),
            file_offset,
            site,
            nif,
            kernel: None,
        });
        id
    }
}

/// One function the probes go on: the name shown, its file offset, the probe site.
pub type Selected = (String, u64, ProbeSite);

/// The functions of `image` that `spec` names, as (name shown, file offset, probe site).
/// Errors when it names none.
pub fn select(spec: &FfiSpec, path: &Path, image: &ElfImage) -> Result<Vec<Selected>, ProbeError> {
    match &spec.pick {
        Pick::FileOffset(offset) => by_file_offset(*offset, path, image),
        Pick::SymbolOffset { symbol, offset } => by_symbol_offset(symbol, *offset, path, image),
        Pick::Globs(globs) => by_globs(spec, globs, path, image),
    }
}

/// `LIB:0xOFFSET`.
fn by_file_offset(offset: u64, path: &Path, image: &ElfImage) -> Result<Vec<Selected>, ProbeError> {
    let offset = &offset;
    let code = image.bytes_at(*offset, prologue::CODE_WINDOW);
    if code.is_empty() {
        return Err(ProbeError::BadOffset {
            path: path.to_owned(),
            what: format!("{offset:#x}"),
            why: "it is past the end of the file".into(),
        });
    }
    // Inside a known function, the same rule as SYM+0xOFF; without a symbol around
    // it, the offset is taken for a function's first instruction (as documented).
    if let Some((function, into)) = image.function_at_offset(*offset)
        && !prologue::keeps_return_address(image.code(function, prologue::CODE_WINDOW), into)
    {
        return Err(ProbeError::BadOffset {
            path: path.to_owned(),
            what: format!("{offset:#x}"),
            why: format!(
                "it is {into:#x} into {}, past where the stack moves (or not on an instruction boundary): the return probe would not find the return address",
                display_name(function)
            ),
        });
    }
    // An explicit site is probed exactly there: the user chose the instruction.
    let name = image.function_at_offset(*offset).map_or_else(
        || format!("{offset:#x}"),
        |(f, into)| {
            if into == 0 {
                display_name(f)
            } else {
                format!("{}+{into:#x}", display_name(f))
            }
        },
    );
    Ok(vec![(name, *offset, prologue::exactly_at(code))])
}

/// `LIB:SYMBOL+0xOFFSET`.
fn by_symbol_offset(
    symbol: &str,
    offset: u64,
    path: &Path,
    image: &ElfImage,
) -> Result<Vec<Selected>, ProbeError> {
    let offset = &offset;
    let function = image
        .functions
        .iter()
        .find(|f| {
            f.names.iter().any(|n| {
                n == symbol
                    || elf::demangle(n).is_some_and(|d| {
                        d == *symbol || d.split_once('(').is_some_and(|(b, _)| b == symbol)
                    })
            })
        })
        .ok_or_else(|| ProbeError::NoMatchingFunction {
            path: path.to_owned(),
            glob: symbol.to_owned(),
            count: image.functions.len(),
        })?;
    if *offset >= function.size.max(1) {
        return Err(ProbeError::BadOffset {
            path: path.to_owned(),
            what: format!("{symbol}+{offset:#x}"),
            why: format!("{symbol} is only {} bytes long", function.size),
        });
    }
    if !prologue::keeps_return_address(image.code(function, prologue::CODE_WINDOW), *offset) {
        return Err(ProbeError::BadOffset {
            path: path.to_owned(),
            what: format!("{symbol}+{offset:#x}"),
            why: format!(
                "the return probe needs the return address on top of the stack, and by then {symbol} has moved the stack (or the offset is not an instruction boundary); pick an offset before its first push"
            ),
        });
    }
    let at = function.file_offset + offset;
    let code = image.bytes_at(at, prologue::CODE_WINDOW);
    Ok(vec![(
        format!("{symbol}+{offset:#x}"),
        at,
        prologue::exactly_at(code),
    )])
}

/// `LIB:GLOB`, over symbol names and (for globs with `::`) demangled ones.
fn by_globs(
    spec: &FfiSpec,
    globs: &[String],
    path: &Path,
    image: &ElfImage,
) -> Result<Vec<Selected>, ProbeError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        builder.add(
            GlobBuilder::new(glob)
                .literal_separator(false)
                .build()
                .map_err(|e| ProbeError::BadGlob {
                    glob: spec.glob.clone(),
                    reason: e.kind().to_string(),
                })?,
        );
    }
    let matcher = builder.build().map_err(|e| ProbeError::BadGlob {
        glob: spec.glob.clone(),
        reason: e.kind().to_string(),
    })?;
    // Mangled symbols contain their identifiers, so most globs match them as
    // they are; a glob with a path separator is meant for demangled names.
    let demangled = globs.iter().any(|g| g.contains("::"));
    let mut found = Vec::new();
    let mut ifuncs = Vec::new();
    for function in &image.functions {
        // Shown under the name that matched (of several aliases), demangled when
        // it is a mangled one.
        let matched = function
            .names
            .iter()
            .find(|n| matcher.is_match(n.as_str()))
            .map(|n| elf::demangle(n).unwrap_or_else(|| n.clone()))
            .or_else(|| {
                demangled
                    .then(|| {
                        function
                            .names
                            .iter()
                            .filter_map(|n| elf::demangle(n))
                            .find(|n| {
                                // C++ names demangle with their parameters; a glob
                                // may leave them out (`ns::Klass::method`).
                                matcher.is_match(n.as_str())
                                    || n.split_once('(')
                                        .is_some_and(|(bare, _)| matcher.is_match(bare))
                            })
                    })
                    .flatten()
            });
        let Some(name) = matched else {
            continue;
        };
        if function.ifunc {
            ifuncs.push(name);
            continue;
        }
        let site = prologue::choose(
            image.code(function, prologue::CODE_WINDOW),
            prologue::Reads::Nothing,
        );
        found.push((name, function.file_offset, site));
    }
    if found.is_empty() {
        return Err(if ifuncs.is_empty() {
            ProbeError::NoMatchingFunction {
                path: path.to_owned(),
                glob: spec.glob.clone(),
                count: image.functions.len(),
            }
        } else {
            ProbeError::OnlyIfunc {
                path: path.to_owned(),
                names: ifuncs.join(", "),
            }
        });
    }
    if !ifuncs.is_empty() {
        log::warn!(
            "skipping {} IFUNC resolver(s) in {} ({}): they run once at load time",
            ifuncs.len(),
            path.display(),
            ifuncs.join(", ")
        );
    }
    Ok(found)
}

/// A function as its language names it: demangled (Rust without its hash) when its
/// symbol is mangled, else its first symbol name.
fn display_name(function: &Function) -> String {
    function
        .names
        .first()
        .map(|n| elf::demangle(n).unwrap_or_else(|| n.clone()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libc_functions_by_glob() {
        let mut table = BoundaryTable::default();
        let scope = Scope::Pid(std::process::id());
        let spec = FfiSpec::parse("libc.so.6:getpid").expect("spec");
        let ids = table.add(&spec, &scope).expect("getpid in libc");
        assert_eq!(ids, vec![1]);
        // The same function again gets the same id.
        assert_eq!(table.add(&spec, &scope).expect("again"), vec![1]);
        let b = table.get(1).expect("boundary 1");
        assert_eq!(b.function, "getpid");
        assert!(b.library_name().starts_with("libc"));
        assert!(table.get(0).is_none() && table.get(2).is_none());
    }

    #[test]
    fn brace_alternatives_and_offsets() {
        let mut table = BoundaryTable::default();
        let scope = Scope::Pid(std::process::id());
        let spec = FfiSpec::parse("libc.so.6:getpid{,x}").expect("spec");
        let ids = table.add(&spec, &scope).expect("getpid");
        assert_eq!(ids.len(), 1);
        let getpid = table.get(ids[0]).expect("boundary").clone();
        let at = format!("libc.so.6:{:#x}", getpid.file_offset);
        let ids = table
            .add(&FfiSpec::parse(&at).expect("spec"), &scope)
            .expect("by offset");
        assert_eq!(ids, vec![getpid.id], "the same site is the same boundary");
        // getpid's second instruction (after endbr64 or whatever comes first) is still
        // before any stack change; one byte in is inside the first instruction.
        let image = ElfImage::read(&getpid.library).expect("libc");
        let code = image.bytes_at(getpid.file_offset, 16);
        let first = iced_x86::Decoder::new(64, code, iced_x86::DecoderOptions::NONE)
            .decode()
            .len() as u64;
        let inside = FfiSpec::parse(&format!("libc.so.6:getpid+{first:#x}")).expect("spec");
        let ids = table.add(&inside, &scope).expect("symbol+offset");
        let b = table.get(ids[0]).expect("boundary");
        assert_eq!(b.function, format!("getpid+{first:#x}"));
        assert_eq!(b.file_offset, getpid.file_offset + first);
        let mid = FfiSpec::parse("libc.so.6:getpid+0x1").expect("spec");
        assert!(matches!(
            table.add(&mid, &scope),
            Err(ProbeError::BadOffset { .. })
        ));
        let past = FfiSpec::parse("libc.so.6:getpid+0x100000").expect("spec");
        assert!(matches!(
            table.add(&past, &scope),
            Err(ProbeError::BadOffset { .. })
        ));
    }

    #[test]
    fn bad_glob_and_no_match_are_errors() {
        let mut table = BoundaryTable::default();
        let scope = Scope::Pid(std::process::id());
        let bad = FfiSpec::parse("libc.so.6:[oops").expect("spec");
        assert!(matches!(
            table.add(&bad, &scope),
            Err(ProbeError::BadGlob { .. })
        ));
        let none = FfiSpec::parse("libc.so.6:no_such_function_xyz").expect("spec");
        assert!(matches!(
            table.add(&none, &scope),
            Err(ProbeError::NoMatchingFunction { .. })
        ));
    }
}

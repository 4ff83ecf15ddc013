//! NIF tables (`ErlNifEntry` and its `ErlNifFunc` array), read from a running VM.
//!
//! Each NIF library's `nif_init` returns its entry. We find the entry's address by
//! decoding `nif_init` (C: `lea rax,[rip+entry]; ret`; Rustler: the same `lea` after a
//! call that fills the entry in) and read it from the live process, never from the file:
//! Rustler builds the entry at run time, and LLD-linked libraries keep their pointers in
//! relocations, not in the file's data.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Register};

use crate::probe::{ProbeError, elf::ElfImage, proc::maps::Memory};

/// `ERL_NIF_DIRTY_JOB_CPU_BOUND` / `ERL_NIF_DIRTY_JOB_IO_BOUND` in `ErlNifFunc.flags`.
pub const DIRTY_CPU: u32 = 1;
pub const DIRTY_IO: u32 = 2;

/// Sanity bounds on what a real entry holds.
const MAX_FUNCS: u64 = 4096;
const MAX_NAME: usize = 255;

/// One NIF as its library declares it, at its address in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NifFunction {
    /// The module atom, e.g. `crypto` or `Elixir.MyApp.Native`.
    pub module: String,
    pub name: String,
    pub arity: u32,
    pub flags: u32,
    pub address: u64,
}

impl NifFunction {
    /// The name Erlang and Elixir developers use: `crypto:hash_nif/2`,
    /// `MyApp.Native.add/2`.
    pub fn display_name(&self) -> String {
        match self.module.strip_prefix("Elixir.") {
            Some(elixir) => format!("{elixir}.{}/{}", self.name, self.arity),
            None => format!("{}:{}/{}", self.module, self.name, self.arity),
        }
    }

    /// `cpu`, `io` or None for a NIF that runs on normal schedulers.
    pub fn dirty(&self) -> Option<&'static str> {
        match self.flags {
            DIRTY_CPU => Some("cpu"),
            DIRTY_IO => Some("io"),
            _ => None,
        }
    }
}

/// The `ErlNifEntry` address `nif_init` returns, as a link-time address of `image`.
pub fn entry_vaddr(image: &ElfImage) -> Option<u64> {
    let init = image
        .function("nif_init")
        .or_else(|| image.function("_nif_init"))?;
    let code = image.code(init, 128);
    let mut entry = None;
    for instr in Decoder::with_ip(64, code, init.vaddr, DecoderOptions::NONE).iter() {
        if instr.code() == Code::Lea_r64_m
            && instr.op0_register() == Register::RAX
            && instr.is_ip_rel_memory_operand()
        {
            entry = Some(instr.ip_rel_memory_address());
        }
        if instr.flow_control() == FlowControl::Return {
            return entry;
        }
    }
    None
}

/// Reads the entry at `addr` and its functions; function addresses are as in the process.
pub fn read(mem: &Memory, addr: u64) -> Result<Vec<NifFunction>, ProbeError> {
    let bad = |why: String| ProbeError::BadNifEntry { addr, why };
    let mut raw = [0u8; 32];
    mem.read(addr, &mut raw)?;
    let word = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let int = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]));
    let (major, minor) = (int(&raw, 0), int(&raw, 4));
    if major != 2 || minor > 64 {
        return Err(bad(format!("NIF API version {major}.{minor} is not 2.x")));
    }
    let module = mem.c_string(word(&raw, 8), MAX_NAME)?;
    let count = u64::from(int(&raw, 16));
    if count > MAX_FUNCS {
        return Err(bad(format!("{count} functions")));
    }
    let funcs = word(&raw, 24);
    let mut out = Vec::new();
    for i in 0..count {
        let mut f = [0u8; 32];
        mem.read(funcs + i * 32, &mut f)?;
        out.push(NifFunction {
            module: module.clone(),
            name: mem.c_string(word(&f, 0), MAX_NAME)?,
            arity: int(&f, 8),
            address: word(&f, 16),
            flags: int(&f, 24),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nif(module: &str, name: &str, arity: u32) -> NifFunction {
        NifFunction {
            module: module.into(),
            name: name.into(),
            arity,
            flags: 0,
            address: 0,
        }
    }

    #[test]
    fn erlang_and_elixir_names() {
        assert_eq!(
            nif("crypto", "hash_nif", 2).display_name(),
            "crypto:hash_nif/2"
        );
        assert_eq!(
            nif("Elixir.MyApp.Native", "add", 2).display_name(),
            "MyApp.Native.add/2"
        );
    }

    /// A fake ErlNifEntry in our own memory, read back through /proc/self/mem.
    #[test]
    fn reads_an_entry_from_process_memory() {
        #[repr(C)]
        struct Func {
            name: *const u8,
            arity: u32,
            fptr: usize,
            flags: u32,
        }
        #[repr(C)]
        struct Entry {
            major: i32,
            minor: i32,
            name: *const u8,
            num_of_funcs: i32,
            funcs: *const Func,
        }
        let funcs = [
            Func {
                name: c"add".as_ptr().cast(),
                arity: 2,
                fptr: 0x1234,
                flags: 0,
            },
            Func {
                name: c"spin".as_ptr().cast(),
                arity: 0,
                fptr: 0x5678,
                flags: DIRTY_CPU,
            },
        ];
        let entry = Entry {
            major: 2,
            minor: 16,
            name: c"Elixir.Xl".as_ptr().cast(),
            num_of_funcs: 2,
            funcs: funcs.as_ptr(),
        };
        let mem = Memory::open(std::process::id()).expect("own memory");
        let read = read(&mem, &raw const entry as u64).expect("entry");
        assert_eq!(read.len(), 2);
        assert_eq!(read[0].display_name(), "Xl.add/2");
        assert_eq!((read[0].address, read[1].address), (0x1234, 0x5678));
        assert_eq!(read[1].dirty(), Some("cpu"));
        let bogus = Entry { major: 7, ..entry };
        assert!(super::read(&mem, &raw const bogus as u64).is_err());
    }
}

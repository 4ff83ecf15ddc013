//! The BEAM's NIF dispatch functions, found by name in `beam.smp`.
//!
//! `beam_jit_call_nif` is C++ and exported mangled, so it is matched by its demangled
//! name: the mangling encodes the parameter types, which change between OTP releases.

use std::collections::HashMap;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, InstructionInfoFactory, OpKind, Register,
};

use crate::{
    model::ProbeSite,
    probe::elf::{ElfImage, Function, prologue},
};

/// Calls every NIF on normal schedulers (JIT flavour, OTP 24+).
pub const CALL_NIF: &str = "beam_jit_call_nif";
/// Calls every dirty NIF on dirty schedulers.
pub const CALL_DIRTY_NIF: &str = "erts_call_dirty_nif";
/// Opens a NIF library file (path with its extension) for `erlang:load_nif/2`.
pub const DDLL_OPEN: &str = "erts_sys_ddll_open_noext";
/// Calls a NIF library's `nif_init`, returning its `ErlNifEntry*`.
pub const DDLL_CALL_NIF_INIT: &str = "erts_sys_ddll_call_nif_init";
/// `erlang:load_nif/2`'s work: returns once every NIF has been looked up by name.
pub const LOAD_NIF: &str = "erts_load_nif";

/// Where a dispatch function's probes go.
#[derive(Debug, Clone)]
pub struct DispatchSite {
    /// The symbol as it appears in the file.
    pub symbol: String,
    pub file_offset: u64,
    pub site: ProbeSite,
}

impl DispatchSite {
    pub fn attach_offset(&self) -> u64 {
        self.file_offset + self.site.offset
    }
}

/// Both dispatch functions, and where `erts_call_dirty_nif` finds the NIF to call.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub call_nif: DispatchSite,
    pub call_dirty_nif: DispatchSite,
    /// Offset from the `I` argument of `erts_call_dirty_nif` of the dirty NIF's address.
    pub dirty_fp_offset: u32,
    /// The NIF loader's open, init and load calls, to read each library's table as it
    /// loads.
    pub load_hooks: Option<[DispatchSite; 3]>,
}

/// Finds the dispatch functions in the VM; the error says why dispatch mode is not
/// possible (the caller falls back to probing each NIF).
pub fn find(beam: &ElfImage) -> Result<Dispatch, String> {
    let by_name: HashMap<String, &Function> = beam
        .functions
        .iter()
        .flat_map(|f| f.names.iter().map(move |n| (plain_name(n), f)))
        .collect();
    let lookup = |name: &str| {
        by_name.get(name).copied().ok_or_else(|| {
            format!("{name} is not among the VM's symbols (interpreter flavour or stripped VM)")
        })
    };
    let call_nif = lookup(CALL_NIF)?;
    let call_dirty_nif = lookup(CALL_DIRTY_NIF)?;
    let dirty_code = beam.code(call_dirty_nif, 1024);
    let dirty_fp_offset = dirty_fp_offset(dirty_code).ok_or_else(|| {
        format!("could not find where {CALL_DIRTY_NIF} reads the NIF's address (unknown VM build)")
    })?;
    let site = |f: &Function| DispatchSite {
        symbol: f.names.first().cloned().unwrap_or_default(),
        file_offset: f.file_offset,
        // Every hook reads at most its first four arguments (beam_jit_call_nif's NIF is
        // the 4th, erts_call_dirty_nif's I the 3rd, the load hooks the 1st or 2nd).
        site: prologue::choose(
            beam.code(f, prologue::CODE_WINDOW),
            prologue::Reads::Args(4),
        ),
    };
    let load_hooks = match (
        lookup(DDLL_OPEN),
        lookup(DDLL_CALL_NIF_INIT),
        lookup(LOAD_NIF),
    ) {
        (Ok(open), Ok(init), Ok(load)) => Some([site(open), site(init), site(load)]),
        _ => {
            log::warn!(
                "{DDLL_OPEN}/{DDLL_CALL_NIF_INIT}/{LOAD_NIF} not found: NIFs of a library loaded and used by a process that exits within ~10 ms may go unnamed"
            );
            None
        }
    };
    Ok(Dispatch {
        call_nif: site(call_nif),
        call_dirty_nif: site(call_dirty_nif),
        dirty_fp_offset,
        load_hooks,
    })
}

/// A symbol's function name without C++ namespace-free decoration: `_Z17beam_jit_call_nifP7process…`
/// becomes `beam_jit_call_nif`; C names are returned as they are.
pub fn plain_name(symbol: &str) -> String {
    if symbol.starts_with("_Z") {
        let options = cpp_demangle::DemangleOptions::new()
            .no_params()
            .no_return_type();
        if let Ok(demangled) =
            cpp_demangle::Symbol::new(symbol).map(|s| s.demangle_with_options(&options))
            && let Ok(text) = demangled
        {
            return text;
        }
    }
    symbol.to_owned()
}

/// Finds `disp` in `mov reg, [I + disp] … call reg`, where `I` is the third argument
/// (`rdx`), by following which registers hold `I` and which were loaded from it, up to
/// the first indirect call: in `erts_call_dirty_nif` that call is the NIF.
fn dirty_fp_offset(code: &[u8]) -> Option<u32> {
    let mut holds_i = vec![Register::RDX];
    let mut loaded: HashMap<Register, u64> = HashMap::new();
    let mut info = InstructionInfoFactory::new();
    for instr in Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
        .iter()
        .take(400)
    {
        match instr.flow_control() {
            FlowControl::IndirectCall if instr.op0_kind() == OpKind::Register => {
                let reg = instr.op0_register().full_register();
                return loaded.get(&reg).and_then(|&d| u32::try_from(d).ok());
            }
            FlowControl::Return | FlowControl::Exception => return None,
            _ => {}
        }
        // What this instruction establishes, before its writes clear older facts.
        let mut holds = None;
        let mut load = None;
        let is_mov = matches!(instr.code(), Code::Mov_r64_rm64 | Code::Mov_rm64_r64);
        if is_mov && instr.op0_kind() == OpKind::Register {
            let dst = instr.op0_register();
            match instr.op1_kind() {
                OpKind::Register if holds_i.contains(&instr.op1_register()) => holds = Some(dst),
                OpKind::Memory
                    if instr.memory_index() == Register::None
                        && holds_i.contains(&instr.memory_base()) =>
                {
                    load = Some((dst, instr.memory_displacement64()));
                }
                _ => {}
            }
        }
        let written: Vec<Register> = info
            .info(&instr)
            .used_registers()
            .iter()
            .filter(|u| {
                !matches!(
                    u.access(),
                    iced_x86::OpAccess::Read
                        | iced_x86::OpAccess::CondRead
                        | iced_x86::OpAccess::NoMemAccess
                )
            })
            .map(|u| u.register().full_register())
            .chain(clobbered_by_call(&instr))
            .collect();
        holds_i.retain(|r| !written.contains(r));
        loaded.retain(|r, _| !written.contains(r));
        if let Some(r) = holds {
            holds_i.push(r);
        }
        if let Some((r, disp)) = load {
            loaded.insert(r, disp);
        }
    }
    None
}

/// Registers a direct call may change (System V caller-saved).
fn clobbered_by_call(instr: &iced_x86::Instruction) -> Vec<Register> {
    if instr.flow_control() != FlowControl::Call {
        return Vec::new();
    }
    use Register::*;
    vec![RAX, RCX, RDX, RSI, RDI, R8, R9, R10, R11]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangled_names() {
        assert_eq!(
            plain_name(
                "_Z17beam_jit_call_nifP7processPKvPmPFmP18enif_environment_tiS3_EP14erl_module_nif"
            ),
            "beam_jit_call_nif"
        );
        assert_eq!(plain_name("erts_call_dirty_nif"), "erts_call_dirty_nif");
    }

    #[test]
    fn finds_the_dirty_nif_pointer_offset() {
        // The start of OTP 25.2's erts_call_dirty_nif (Debian), cut before its `call *%rcx`
        // with the long middle replaced by unrelated work.
        let code: &[u8] = &[
            0x41, 0x57, // push r15
            0x49, 0x89, 0xcf, // mov r15, rcx
            0x41, 0x56, // push r14
            0x49, 0x89, 0xd6, // mov r14, rdx
            0x48, 0x8b, 0x42, 0x18, // mov rax, [rdx+0x18]
            0x48, 0x8b, 0x4a, 0x10, // mov rcx, [rdx+0x10]
            0x48, 0x8b, 0x56, 0x50, // mov rdx, [rsi+0x50]
            0x41, 0x8b, 0x76, 0xf8, // mov esi, [r14-8]
            0x4c, 0x89, 0xfa, // mov rdx, r15
            0xff, 0xd1, // call rcx
        ];
        assert_eq!(dirty_fp_offset(code), Some(0x10));
        // If rcx is reloaded from elsewhere first, the offset is unknown.
        let mut clobbered = code[..code.len() - 2].to_vec();
        clobbered.extend_from_slice(&[0x48, 0x8b, 0x4e, 0x08, 0xff, 0xd1]); // mov rcx,[rsi+8]; call rcx
        assert_eq!(dirty_fp_offset(&clobbered), None);
        // A copy of I works as well as I.
        let via_copy: &[u8] = &[
            0x49, 0x89, 0xd6, // mov r14, rdx
            0x31, 0xd2, // xor edx, edx
            0x49, 0x8b, 0x46, 0x20, // mov rax, [r14+0x20]
            0xff, 0xd0, // call rax
        ];
        assert_eq!(dirty_fp_offset(via_copy), Some(0x20));
    }
}

//! Where inside a function's prologue to put its probes.
//!
//! The kernel emulates a few x86 instructions at a uprobe (push reg, jmp/call rel, jcc,
//! nop) and single-steps every other one out of line, which costs 4-15x more on our VMs. The
//! common first instruction `endbr64` is single-stepped; `test rdi,rdi` (glibc's `free`)
//! too. So we move the probe forward to the first emulated instruction, but only across
//! instructions whose skipping changes nothing the probe observes, which depends on what
//! the probe reads ([`Reads`]):
//! - they fall through (no branch, call or return), so the new site is always reached;
//! - they write neither `rsp` nor memory (which could be `[rsp]`): the return probe
//!   hijacks the return address at `[rsp]` when the entry probe fires;
//! - they write no register the probe reads (an allocator probe's size argument, the
//!   NIF dispatch probe's function pointer); a timing-only probe reads none;
//! - no branch in the function lands between the old and the new site, which would make
//!   the probe fire for jumps that are not calls.

pub use crate::model::ProbeSite;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    OpKind, Register,
};

/// At most this many instructions are skipped: a few ns of the call left out of its time.
const MAX_SKIPPED: usize = 8;

/// What an entry probe reads from the registers at its site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Only the time (FFI calls, NIF functions in fallback mode).
    Nothing,
    /// The first N System V argument registers (rdi, rsi, rdx, rcx, r8, r9).
    Args(u8),
}

impl Reads {
    fn observes(self, reg: Register) -> bool {
        const ARGS: [Register; 6] = [
            Register::RDI,
            Register::RSI,
            Register::RDX,
            Register::RCX,
            Register::R8,
            Register::R9,
        ];
        match self {
            Self::Nothing => false,
            Self::Args(n) => ARGS
                .iter()
                .take(usize::from(n))
                .any(|&arg| arg == reg.full_register()),
        }
    }
}

/// Bytes of a function decoded to find branch targets.
pub const CODE_WINDOW: u64 = 4096;

/// Whether a probe pair at `offset` bytes into a function whose code is `code` still finds
/// the return address at `[rsp]`: every instruction before it falls through and writes
/// neither `rsp` nor memory, and `offset` is an instruction boundary. Past a `push` or
/// `sub rsp` the return probe would overwrite a saved register instead.
pub fn keeps_return_address(code: &[u8], offset: u64) -> bool {
    let mut info = InstructionInfoFactory::new();
    for instr in decode(code) {
        if instr.ip() == offset {
            return true;
        }
        if instr.ip() > offset || !is_skippable(&instr, Reads::Nothing, &mut info) {
            return false;
        }
    }
    false
}

/// A site chosen by the user (`LIB:0xOFFSET`): exactly there, emulated or not.
pub fn exactly_at(code: &[u8]) -> ProbeSite {
    let emulated = decode(code)
        .first()
        .is_some_and(|first| is_emulated(first, code));
    ProbeSite {
        offset: 0,
        emulated,
    }
}

/// Chooses the probe site for a function whose code (from its first byte) is `code`,
/// for a probe that reads `reads`.
pub fn choose(code: &[u8], reads: Reads) -> ProbeSite {
    let at_start = ProbeSite {
        offset: 0,
        emulated: false,
    };
    let instructions = decode(code);
    let targets: Vec<u64> = instructions
        .iter()
        .filter(|i| is_direct_branch(i))
        .map(Instruction::near_branch_target)
        .collect();
    let mut info = InstructionInfoFactory::new();
    for instr in instructions.iter().take(MAX_SKIPPED + 1) {
        let offset = instr.ip();
        if offset > 0 && targets.contains(&offset) {
            break;
        }
        if is_emulated(instr, code) {
            return ProbeSite {
                offset,
                emulated: true,
            };
        }
        if !is_skippable(instr, reads, &mut info) {
            break;
        }
    }
    at_start
}

fn decode(code: &[u8]) -> Vec<Instruction> {
    let mut decoder = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut out = Vec::new();
    while decoder.can_decode() {
        let instr = decoder.decode();
        if instr.is_invalid() {
            break;
        }
        out.push(instr);
    }
    out
}

fn is_direct_branch(i: &Instruction) -> bool {
    matches!(
        i.flow_control(),
        FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch | FlowControl::Call
    ) && matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// The instructions arch/x86/kernel/uprobes.c emulates instead of single-stepping:
/// `push r64` (optionally REX.B), `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32` and
/// the one-byte `nop`. Matched on raw bytes because the kernel matches on raw bytes.
fn is_emulated(instr: &Instruction, code: &[u8]) -> bool {
    let start = instr.ip() as usize;
    let Some(bytes) = code.get(start..start + instr.len()) else {
        return false;
    };
    matches!(
        bytes,
        [0x50..=0x57]
            | [0x41, 0x50..=0x57]
            | [0x90]
            | [0xeb, _]
            | [0xe9, _, _, _, _]
            | [0xe8, _, _, _, _]
            | [0x70..=0x7f, _]
            | [0x0f, 0x80..=0x8f, _, _, _, _]
    )
}

fn is_skippable(instr: &Instruction, reads: Reads, info: &mut InstructionInfoFactory) -> bool {
    if matches!(instr.code(), Code::Endbr64 | Code::Endbr32) {
        return true;
    }
    if instr.flow_control() != FlowControl::Next {
        return false;
    }
    let info = info.info(instr);
    let writes = |access: OpAccess| {
        matches!(
            access,
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        )
    };
    // Any memory write: `[rsp]` can be reached through another register too (`mov
    // rbp,rsp; mov [rbp],x`), and prologues rarely write memory before their first push.
    let memory_write = info.used_memory().iter().any(|m| writes(m.access()));
    !memory_write
        && !info.used_registers().iter().any(|used| {
            writes(used.access())
                && (used.register().full_register() == Register::RSP
                    || reads.observes(used.register()))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &[u8]) -> (u64, bool) {
        site_for(code, Reads::Args(6))
    }

    fn site_for(code: &[u8], reads: Reads) -> (u64, bool) {
        let s = choose(code, reads);
        (s.offset, s.emulated)
    }

    #[test]
    fn push_prologue_is_probed_in_place() {
        // push rbp; mov rbp,rsp; ...; ret
        assert_eq!(site(&[0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3]), (0, true));
    }

    #[test]
    fn endbr64_is_skipped_to_the_push() {
        // endbr64; push rbp; mov rbp,rsp
        assert_eq!(
            site(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0x48, 0x89, 0xe5, 0x5d, 0xc3]),
            (4, true)
        );
    }

    #[test]
    fn free_style_test_then_branch_probes_the_branch() {
        // endbr64; test rdi,rdi; je +0x10; ...
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0x48, 0x85, 0xff, 0x74, 0x10, 0x90, 0xc3,
        ];
        assert_eq!(site(&code), (7, true));
    }

    #[test]
    fn never_moves_past_a_write_to_rsp_or_an_argument_it_reads() {
        // sub rsp,8; push rbx
        assert_eq!(site(&[0x48, 0x83, 0xec, 0x08, 0x53, 0xc3]), (0, false));
        assert_eq!(
            site_for(&[0x48, 0x83, 0xec, 0x08, 0x53, 0xc3], Reads::Nothing),
            (0, false)
        );
        // mov edi,1; push rbx: fine for a timing probe, not for one reading rdi
        let code = [0xbf, 0x01, 0x00, 0x00, 0x00, 0x53, 0xc3];
        assert_eq!(site(&code), (0, false));
        assert_eq!(site_for(&code, Reads::Nothing), (5, true));
        assert_eq!(site_for(&code, Reads::Args(0)), (5, true));
        // mov [rsp+8],rdi; push rbx: a write to the stack
        let code = [0x48, 0x89, 0x7c, 0x24, 0x08, 0x53, 0xc3];
        assert_eq!(site_for(&code, Reads::Nothing), (0, false));
    }

    #[test]
    fn a_probe_reading_only_rdi_crosses_writes_to_other_arguments() {
        // enif_alloc-like: mov rdx,rdi; mov rsi,[rip+x]; push rbx
        let code = [
            0x48, 0x89, 0xfa, 0x48, 0x8b, 0x35, 0x00, 0x00, 0x00, 0x00, 0x53, 0xc3,
        ];
        assert_eq!(site_for(&code, Reads::Args(1)), (10, true));
        assert_eq!(site_for(&code, Reads::Args(2)), (0, false));
    }

    #[test]
    fn timing_probes_cross_memory_reads_and_register_moves() {
        // mov rax,[rdi]; lea rcx,[rax+1]; push rbx
        let code = [0x48, 0x8b, 0x07, 0x48, 0x8d, 0x48, 0x01, 0x53, 0xc3];
        assert_eq!(site_for(&code, Reads::Nothing), (7, true));
        assert_eq!(site(&code), (0, false));
    }

    #[test]
    fn an_explicit_offset_must_come_before_the_stack_changes() {
        // endbr64; mov eax,1; push rbp; ...
        let code = [
            0xf3, 0x0f, 0x1e, 0xfa, 0xb8, 0x01, 0, 0, 0, 0x55, 0x48, 0x89, 0xe5, 0xc3,
        ];
        assert!(keeps_return_address(&code, 0));
        assert!(keeps_return_address(&code, 4));
        assert!(
            keeps_return_address(&code, 9),
            "at the push, before it runs"
        );
        assert!(!keeps_return_address(&code, 10), "after the push");
        assert!(!keeps_return_address(&code, 5), "inside an instruction");
    }

    #[test]
    fn explicit_sites_stay_where_they_are() {
        assert_eq!(
            exactly_at(&[0x55, 0xc3]),
            ProbeSite {
                offset: 0,
                emulated: true
            }
        );
        assert_eq!(
            exactly_at(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]),
            ProbeSite {
                offset: 0,
                emulated: false
            }
        );
    }

    #[test]
    fn never_moves_onto_a_branch_target() {
        // 0: endbr64; 4: push rbp; 5: jmp 4  (a loop back to the push)
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xeb, 0xfd];
        assert_eq!(site(&code), (0, false));
    }

    #[test]
    fn gives_up_after_a_few_instructions() {
        // nine endbr64 then push: too far
        let mut code = [0xf3, 0x0f, 0x1e, 0xfa].repeat(9);
        code.push(0x55);
        assert_eq!(site(&code), (0, false));
    }
}

//! Where inside a function's prologue to put its probes.
//!
//! The kernel emulates a few x86 instructions at a uprobe (push reg, jmp/call rel, jcc,
//! nop) and single-steps every other one out of line, which costs ~30x more here. The
//! common first instruction `endbr64` is single-stepped; `test rdi,rdi` (glibc's `free`)
//! too. So we move the probe forward to the first emulated instruction, but only across
//! instructions whose skipping changes nothing a probe observes:
//! - they fall through (no branch, call or return), so the new site is always reached;
//! - they touch no memory and write neither `rsp` (a return probe reads the return
//!   address at `[rsp]`) nor an argument register (entry probes read arguments);
//! - no branch in the function lands between the old and the new site, which would make
//!   the probe fire for jumps that are not calls.

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, OpAccess,
    OpKind, Register,
};

/// At most this many instructions are skipped.
const MAX_SKIPPED: usize = 4;

/// Bytes of a function decoded to find branch targets.
pub const CODE_WINDOW: u64 = 4096;

/// Where a function's probes go, as an offset from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSite {
    pub offset: u64,
    /// The kernel emulates the probed instruction (cheap) rather than single-stepping it.
    pub emulated: bool,
}

/// Chooses the probe site for a function whose code (from its first byte) is `code`.
pub fn choose(code: &[u8]) -> ProbeSite {
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
        if !is_skippable(instr, &mut info) {
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

fn is_skippable(instr: &Instruction, info: &mut InstructionInfoFactory) -> bool {
    if matches!(instr.code(), Code::Endbr64 | Code::Endbr32) {
        return true;
    }
    if instr.flow_control() != FlowControl::Next || instr.has_lock_prefix() {
        return false;
    }
    let info = info.info(instr);
    if !info.used_memory().is_empty() {
        return false;
    }
    !info.used_registers().iter().any(|used| {
        matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) && is_observed(used.register())
    })
}

/// Registers a probe may read: the stack pointer and the SysV argument registers
/// (`rax` carries the vector-register count of variadic calls).
fn is_observed(reg: Register) -> bool {
    let full = reg.full_register();
    matches!(
        full,
        Register::RSP
            | Register::RDI
            | Register::RSI
            | Register::RDX
            | Register::RCX
            | Register::R8
            | Register::R9
            | Register::RAX
    ) || (full.is_zmm() && full.number() < 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(code: &[u8]) -> (u64, bool) {
        let s = choose(code);
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
    fn never_moves_past_a_write_to_rsp_or_an_argument() {
        // sub rsp,8; push rbx
        assert_eq!(site(&[0x48, 0x83, 0xec, 0x08, 0x53, 0xc3]), (0, false));
        // mov edi,1; push rbx
        assert_eq!(
            site(&[0xbf, 0x01, 0x00, 0x00, 0x00, 0x53, 0xc3]),
            (0, false)
        );
        // mov rax,[rdi]; push rbx: memory read
        assert_eq!(site(&[0x48, 0x8b, 0x07, 0x53, 0xc3]), (0, false));
    }

    #[test]
    fn never_moves_onto_a_branch_target() {
        // 0: endbr64; 4: push rbp; 5: jmp 4  (a loop back to the push)
        let code = [0xf3, 0x0f, 0x1e, 0xfa, 0x55, 0xeb, 0xfd];
        assert_eq!(site(&code), (0, false));
    }

    #[test]
    fn gives_up_after_a_few_instructions() {
        // five endbr64 then push: too far
        let mut code = [0xf3, 0x0f, 0x1e, 0xfa].repeat(5);
        code.push(0x55);
        assert_eq!(site(&code), (0, false));
    }
}

//! A classic-BPF interpreter for the few instructions the builder emits,
//! to test programs without loading them: it runs a program against a
//! `struct seccomp_data` and returns the verdict.

use super::Action;
use super::bpf::{JMP_JEQ_K, JMP_JGE_K, LD_W_ABS, RET_K, SockFilter};

/// A syscall as the filter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    pub nr: u32,
    pub arch: u32,
    pub args: [u64; 6],
}

impl Call {
    /// Syscall `nr` with no arguments, from the native architecture.
    pub fn native(nr: u32) -> Call {
        Call {
            nr,
            arch: super::arch::AUDIT_ARCH.unwrap_or(0),
            args: [0; 6],
        }
    }

    fn data(&self) -> [u8; 64] {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&self.nr.to_le_bytes());
        data[4..8].copy_from_slice(&self.arch.to_le_bytes());
        for (i, arg) in self.args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&arg.to_le_bytes());
        }
        data
    }
}

/// Runs `program` on `call`. Panics on anything the kernel's checker would
/// refuse: an unknown opcode, a jump or a load out of bounds, falling off
/// the end.
pub fn run(program: &[SockFilter], call: Call) -> Action {
    let data = call.data();
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    loop {
        let insn = program
            .get(pc)
            .unwrap_or_else(|| panic!("fell off the program at {pc}"));
        pc += 1;
        match insn.code {
            LD_W_ABS => {
                let at = insn.k as usize;
                assert!(at.is_multiple_of(4) && at + 4 <= data.len(), "load at {at}");
                let mut word = [0u8; 4];
                word.copy_from_slice(&data[at..at + 4]);
                acc = u32::from_le_bytes(word);
            }
            JMP_JEQ_K | JMP_JGE_K => {
                let taken = if insn.code == JMP_JEQ_K {
                    acc == insn.k
                } else {
                    acc >= insn.k
                };
                pc += usize::from(if taken { insn.jt } else { insn.jf });
            }
            RET_K => {
                return Action::from_value(insn.k)
                    .unwrap_or_else(|| panic!("unknown return {:#x}", insn.k));
            }
            code => panic!("unknown opcode {code:#x} at {}", pc - 1),
        }
    }
}

//! The device allow-list on cgroup2: a `BPF_PROG_TYPE_CGROUP_DEVICE`
//! program, compiled here from the [`DeviceRule`]s, as runc and crun do.
//!
//! The kernel runs the program at every open and mknod of a device node
//! by a process of the cgroup (or a sub-cgroup), with a context of three
//! `u32`s, `struct bpf_cgroup_dev_ctx`:
//!
//! ```text
//! offset 0  access_type = (access << 16) | type
//!           type:   1 block, 2 char
//!           access: 1 mknod, 2 read, 4 write
//! offset 4  major
//! offset 8  minor
//! ```
//!
//! and allows the access if it returns 1. The program is straight-line:
//! a prologue that splits the context into registers, one block per rule
//! that falls through to the next rule on the first mismatch and returns 1
//! at its end, and a final `return 0` (default deny):
//!
//! ```text
//!     r2 = ctx.access_type; r4 = ctx.major; r5 = ctx.minor
//!     w3 = w2 >> 16                  access
//!     w2 &= 0xffff                   type
//! rule:
//!     if w2 != TYPE goto next        (not for 'a')
//!     if w3 & ~ACCESS goto next      an access the rule lacks
//!     if w4 != MAJOR goto next       (not for '*')
//!     if w5 != MINOR goto next       (not for '*')
//!     return 1
//! next: ...
//!     return 0
//! ```
//!
//! Comparisons use the 32-bit jump class (`BPF_JMP32`, linux 5.1), so a
//! number above 2^31 compares as the unsigned number it is. A rule of kind
//! `a` allows every device and every access, as `a` does in v1's
//! `devices.allow`; rules after it are left out (the verifier refuses
//! unreachable instructions).
//!
//! The tests run the program in a small interpreter of exactly these
//! instructions and compare its verdict with [`allows`], the rules read
//! directly, for random rules and accesses.

use super::DeviceRule;

/// `BPF_DEVCG_DEV_BLOCK`.
pub const DEV_BLOCK: u32 = 1;
/// `BPF_DEVCG_DEV_CHAR`.
pub const DEV_CHAR: u32 = 2;
/// `BPF_DEVCG_ACC_MKNOD`.
pub const ACC_MKNOD: u32 = 1;
/// `BPF_DEVCG_ACC_READ`.
pub const ACC_READ: u32 = 2;
/// `BPF_DEVCG_ACC_WRITE`.
pub const ACC_WRITE: u32 = 4;

// Instruction classes, operations and sources (uapi/linux/bpf_common.h,
// uapi/linux/bpf.h).
const CLASS_LDX: u8 = 0x01;
const CLASS_JMP: u8 = 0x05;
const CLASS_JMP32: u8 = 0x06;
const CLASS_ALU: u8 = 0x04;
const SIZE_W: u8 = 0x00;
const MODE_MEM: u8 = 0x60;
const SRC_K: u8 = 0x00;
const SRC_X: u8 = 0x08;
const OP_AND: u8 = 0x50;
const OP_RSH: u8 = 0x70;
const OP_MOV: u8 = 0xb0;
#[cfg(test)]
const OP_JA: u8 = 0x00;
#[cfg(test)]
const OP_JEQ: u8 = 0x10;
const OP_JSET: u8 = 0x40;
const OP_JNE: u8 = 0x50;
const OP_EXIT: u8 = 0x90;

/// One eBPF instruction, `struct bpf_insn`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    /// The instruction as the kernel reads it: `code`, then the registers
    /// as two 4-bit fields (`dst_reg` first, which is the low nibble on a
    /// little-endian machine), `off` and `imm` in native byte order.
    pub fn to_bytes(self) -> [u8; 8] {
        let regs = if cfg!(target_endian = "little") {
            (self.dst & 0x0f) | (self.src << 4)
        } else {
            (self.dst << 4) | (self.src & 0x0f)
        };
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code, regs, off[0], off[1], imm[0], imm[1], imm[2], imm[3],
        ]
    }

    fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// `wDST = *(u32 *)(rSRC + off)`.
    fn load_word(dst: u8, src: u8, off: i16) -> Insn {
        Insn::new(CLASS_LDX | MODE_MEM | SIZE_W, dst, src, off, 0)
    }

    /// `wDST = wSRC`.
    fn mov32_reg(dst: u8, src: u8) -> Insn {
        Insn::new(CLASS_ALU | OP_MOV | SRC_X, dst, src, 0, 0)
    }

    /// `wDST = imm`.
    fn mov32_imm(dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | OP_MOV | SRC_K, dst, 0, 0, imm)
    }

    /// `wDST <op>= imm`.
    fn alu32_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_ALU | op | SRC_K, dst, 0, 0, imm)
    }

    /// `if wDST <op> imm goto +off`; the offset is set when the rule's
    /// block is complete.
    fn jmp32_imm(op: u8, dst: u8, imm: i32) -> Insn {
        Insn::new(CLASS_JMP32 | op | SRC_K, dst, 0, 0, imm)
    }

    fn exit() -> Insn {
        Insn::new(CLASS_JMP | OP_EXIT, 0, 0, 0, 0)
    }
}

// Registers: r1 holds the context at entry; r0 the verdict at exit.
const R0: u8 = 0;
const R1: u8 = 1;
const TYPE: u8 = 2;
const ACCESS: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;

/// The access bits of a rule's `access` ("rwm" or part of it); other
/// letters are ignored (the cgroup layer refuses them before).
fn access_bits(access: &str) -> u32 {
    access.chars().fold(0, |bits, c| {
        bits | match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => 0,
        }
    })
}

/// The program enforcing `rules`: a device access is allowed if a rule
/// allows it (see [`allows`]), and denied otherwise.
pub fn compile(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut program = vec![
        Insn::load_word(TYPE, R1, 0),
        Insn::load_word(MAJOR, R1, 4),
        Insn::load_word(MINOR, R1, 8),
        Insn::mov32_reg(ACCESS, TYPE),
        Insn::alu32_imm(OP_RSH, ACCESS, 16),
        Insn::alu32_imm(OP_AND, TYPE, 0xffff),
    ];
    for rule in rules {
        if rule.kind == 'a' {
            program.extend([Insn::mov32_imm(R0, 1), Insn::exit()]);
            // Every access is allowed: nothing after this runs.
            return program;
        }
        let kind = if rule.kind == 'b' {
            DEV_BLOCK
        } else {
            DEV_CHAR
        };
        let mut block = vec![
            Insn::jmp32_imm(OP_JNE, TYPE, kind as i32),
            // Bits are compared as they are: the cast keeps them.
            Insn::jmp32_imm(OP_JSET, ACCESS, !access_bits(&rule.access) as i32),
        ];
        if let Some(major) = rule.major {
            block.push(Insn::jmp32_imm(OP_JNE, MAJOR, major as i32));
        }
        if let Some(minor) = rule.minor {
            block.push(Insn::jmp32_imm(OP_JNE, MINOR, minor as i32));
        }
        // Each jump goes past the block's two closing instructions.
        let len = block.len() + 2;
        for (i, jump) in block.iter_mut().enumerate() {
            // At most 6 instructions: the offset fits.
            jump.off = (len - i - 1) as i16;
        }
        program.extend(block);
        program.extend([Insn::mov32_imm(R0, 1), Insn::exit()]);
    }
    program.extend([Insn::mov32_imm(R0, 0), Insn::exit()]);
    program
}

/// The rules read directly: whether a process may make (`ACC_MKNOD`),
/// read or write (`access`, any combination) the device node of `kind`
/// (`DEV_BLOCK`, `DEV_CHAR`) with the numbers `major`:`minor`. The access
/// must be within a single rule's.
pub fn allows(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> bool {
    rules.iter().any(|rule| {
        let kind_matches = match rule.kind {
            'a' => return true,
            'b' => kind == DEV_BLOCK,
            _ => kind == DEV_CHAR,
        };
        kind_matches
            && access & !access_bits(&rule.access) == 0
            && rule.major.is_none_or(|m| m == major)
            && rule.minor.is_none_or(|m| m == minor)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// Why the interpreter stopped without a verdict.
    #[derive(Debug, PartialEq, Eq)]
    enum Fault {
        /// Fell off the end, jumped outside, or ran too long.
        OutOfProgram(usize),
        /// An instruction the compiler does not emit.
        Unknown(Insn),
        /// A load outside the 12-byte context, or not through r1.
        BadLoad(Insn),
    }

    /// Runs `program` on the context `[access_type, major, minor]` as the
    /// kernel would, for the instructions [`compile`] emits; returns r0.
    fn run(program: &[Insn], ctx: [u32; 3]) -> Result<u64, Fault> {
        let mut regs = [0u64; 11];
        let mut pc = 0usize;
        // Straight-line, forward jumps only: one pass is enough.
        for _ in 0..=program.len() {
            let insn = *program.get(pc).ok_or(Fault::OutOfProgram(pc))?;
            pc += 1;
            let class = insn.code & 0x07;
            let op = insn.code & 0xf0;
            let dst = usize::from(insn.dst);
            let src = usize::from(insn.src);
            match class {
                CLASS_LDX => {
                    // r1 is the context at entry and is never written.
                    if insn.code != CLASS_LDX | MODE_MEM | SIZE_W
                        || insn.src != R1
                        || insn.off < 0
                        || insn.off % 4 != 0
                        || insn.off > 8
                    {
                        return Err(Fault::BadLoad(insn));
                    }
                    regs[dst] = u64::from(ctx[insn.off as usize / 4]);
                }
                CLASS_ALU => {
                    let operand = if insn.code & SRC_X != 0 {
                        regs[src] as u32
                    } else {
                        insn.imm as u32
                    };
                    let value = regs[dst] as u32;
                    let result = match op {
                        OP_MOV => operand,
                        OP_AND => value & operand,
                        OP_RSH => value >> (operand & 31),
                        _ => return Err(Fault::Unknown(insn)),
                    };
                    // 32-bit operations zero the upper half.
                    regs[dst] = u64::from(result);
                }
                CLASS_JMP if op == OP_EXIT => return Ok(regs[R0 as usize]),
                CLASS_JMP | CLASS_JMP32 => {
                    let (a, b) = if class == CLASS_JMP32 {
                        (u64::from(regs[dst] as u32), u64::from(insn.imm as u32))
                    } else {
                        (regs[dst], insn.imm as i64 as u64)
                    };
                    if insn.code & SRC_X != 0 {
                        return Err(Fault::Unknown(insn));
                    }
                    let taken = match op {
                        OP_JA if class == CLASS_JMP => true,
                        OP_JEQ => a == b,
                        OP_JNE => a != b,
                        OP_JSET => a & b != 0,
                        _ => return Err(Fault::Unknown(insn)),
                    };
                    if taken {
                        let target = pc as i64 + i64::from(insn.off);
                        pc = usize::try_from(target).map_err(|_| Fault::OutOfProgram(pc))?;
                    }
                }
                _ => return Err(Fault::Unknown(insn)),
            }
        }
        Err(Fault::OutOfProgram(pc))
    }

    fn verdict(rules: &[DeviceRule], kind: u32, major: u32, minor: u32, access: u32) -> u64 {
        run(&compile(rules), [(access << 16) | kind, major, minor]).unwrap()
    }

    fn rule(kind: char, major: Option<u32>, minor: Option<u32>, access: &str) -> DeviceRule {
        DeviceRule {
            kind,
            major,
            minor,
            access: access.into(),
        }
    }

    #[test]
    fn an_empty_list_denies_everything() {
        let program = compile(&[]);
        assert_eq!(program.len(), 8);
        for kind in [DEV_BLOCK, DEV_CHAR] {
            assert_eq!(verdict(&[], kind, 1, 3, ACC_READ), 0);
        }
    }

    #[test]
    fn dev_null_read_write_only() {
        let rules = [rule('c', Some(1), Some(3), "rw")];
        assert_eq!(verdict(&rules, DEV_CHAR, 1, 3, ACC_READ), 1);
        assert_eq!(verdict(&rules, DEV_CHAR, 1, 3, ACC_READ | ACC_WRITE), 1);
        assert_eq!(verdict(&rules, DEV_CHAR, 1, 3, ACC_MKNOD), 0);
        assert_eq!(verdict(&rules, DEV_CHAR, 1, 5, ACC_READ), 0);
        assert_eq!(verdict(&rules, DEV_BLOCK, 1, 3, ACC_READ), 0);
    }

    #[test]
    fn wildcards_and_large_numbers() {
        let rules = [
            rule('c', Some(136), None, "rwm"),
            rule('b', None, Some(u32::MAX), "r"),
        ];
        assert_eq!(verdict(&rules, DEV_CHAR, 136, 77, ACC_WRITE), 1);
        assert_eq!(verdict(&rules, DEV_BLOCK, 8, u32::MAX, ACC_READ), 1);
        assert_eq!(verdict(&rules, DEV_BLOCK, 8, u32::MAX, ACC_WRITE), 0);
        assert_eq!(verdict(&rules, DEV_BLOCK, 8, 0x7fff_ffff, ACC_READ), 0);
    }

    #[test]
    fn rule_a_allows_everything_and_ends_the_program() {
        let rules = [rule('c', Some(1), Some(3), "r"), rule('a', None, None, "r")];
        let program = compile(&[rules[0].clone(), rules[1].clone(), rules[0].clone()]);
        assert_eq!(program, compile(&rules));
        assert_eq!(verdict(&rules, DEV_BLOCK, 8, 0, ACC_WRITE | ACC_MKNOD), 1);
    }

    #[test]
    fn encoding_matches_the_kernel_layout() {
        // r2 = *(u32 *)(r1 + 4): code 0x61, dst 2, src 1.
        let bytes = Insn::load_word(2, 1, 4).to_bytes();
        assert_eq!(bytes[0], 0x61);
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        }
        // if w3 != 0xffff goto +2: JMP32 | JNE | K.
        let mut jump = Insn::jmp32_imm(OP_JNE, 3, 0xffff);
        jump.off = 2;
        assert_eq!(jump.to_bytes()[0], 0x56);
        assert_eq!(Insn::exit().to_bytes()[0], 0x95);
        assert_eq!(Insn::mov32_imm(0, 1).to_bytes()[0], 0xb4);
    }

    fn any_rule() -> impl Strategy<Value = DeviceRule> {
        // Few distinct numbers, so that rules and accesses meet often.
        let number = prop_oneof![Just(None), (0u32..4).prop_map(Some), Just(Some(u32::MAX))];
        (
            prop_oneof![8 => Just('c'), 8 => Just('b'), 1 => Just('a')],
            number.clone(),
            number,
            1u32..8,
        )
            .prop_map(|(kind, major, minor, bits)| DeviceRule {
                kind,
                major,
                minor,
                access: [('r', ACC_READ), ('w', ACC_WRITE), ('m', ACC_MKNOD)]
                    .iter()
                    .filter(|(_, bit)| bits & bit != 0)
                    .map(|(c, _)| *c)
                    .collect(),
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The compiled program decides as the rules read directly do,
        /// for every access the kernel can ask about and some it cannot
        /// (other types, unknown access bits).
        #[test]
        fn the_program_decides_as_the_rules_do(
            rules in proptest::collection::vec(any_rule(), 0..6),
            kind in 0u32..4,
            major in prop_oneof![0u32..4, Just(u32::MAX), any::<u32>()],
            minor in prop_oneof![0u32..4, Just(u32::MAX), any::<u32>()],
            access in prop_oneof![8 => 1u32..8, 1 => 0u32..0x10000],
        ) {
            let expected = u64::from(allows(&rules, kind, major, minor, access));
            let got = run(&compile(&rules), [(access << 16) | kind, major, minor]);
            prop_assert_eq!(got, Ok(expected), "rules {:?}", rules);
        }
    }
}

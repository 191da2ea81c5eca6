//! Classic BPF as seccomp runs it: the instruction type, the handful of
//! instructions a deny-list filter needs, and the return values.

/// One classic BPF instruction, laid out as the kernel's `struct
/// sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Opcodes (`<linux/bpf_common.h>`), as the 16-bit `code` field holds them.
pub(crate) const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
pub(crate) const JMP_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
pub(crate) const JMP_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
pub(crate) const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// Offsets in `struct seccomp_data`: `int nr; __u32 arch; __u64
/// instruction_pointer; __u64 args[6];`.
pub(crate) const NR: u32 = 0;
pub(crate) const ARCH: u32 = 4;
/// The low 32 bits of `args[0]` (little-endian, as on every architecture
/// lxvirt supports).
pub(crate) const ARG0_LOW: u32 = 16;

impl SockFilter {
    /// `A = seccomp_data[offset]` (32 bits).
    pub const fn load(offset: u32) -> SockFilter {
        SockFilter {
            code: LD_W_ABS,
            jt: 0,
            jf: 0,
            k: offset,
        }
    }

    /// `if A == k` skip `jt` instructions, else skip `jf`.
    pub const fn jeq(k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter {
            code: JMP_JEQ_K,
            jt,
            jf,
            k,
        }
    }

    /// `if A >= k` skip `jt` instructions, else skip `jf`.
    pub const fn jge(k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter {
            code: JMP_JGE_K,
            jt,
            jf,
            k,
        }
    }

    /// Return `action` to the kernel.
    pub const fn ret(action: Action) -> SockFilter {
        SockFilter {
            code: RET_K,
            jt: 0,
            jf: 0,
            k: action.value(),
        }
    }
}

/// What the filter tells the kernel to do with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail the syscall with this errno, without running it.
    Errno(u16),
    /// Kill the whole process, as if by an uncatchable SIGSYS.
    KillProcess,
}

impl Action {
    /// The `SECCOMP_RET_*` value.
    pub const fn value(self) -> u32 {
        match self {
            Action::Allow => libc::SECCOMP_RET_ALLOW,
            Action::Errno(errno) => {
                libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
            }
            Action::KillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        }
    }

    /// The action a `SECCOMP_RET_*` value stands for.
    pub fn from_value(value: u32) -> Option<Action> {
        match value & !libc::SECCOMP_RET_DATA {
            libc::SECCOMP_RET_ALLOW => Some(Action::Allow),
            libc::SECCOMP_RET_ERRNO => Some(Action::Errno(
                u16::try_from(value & libc::SECCOMP_RET_DATA).ok()?,
            )),
            libc::SECCOMP_RET_KILL_PROCESS => Some(Action::KillProcess),
            _ => None,
        }
    }
}

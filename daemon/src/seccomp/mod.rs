//! The container's seccomp filter: a deny list compiled to classic BPF by
//! a small builder of our own (no libseccomp), checked against the native
//! architecture so that no other syscall ABI (i386, x32) can go around it.
//!
//! - [`Policy`]: the default classes ([`DEFAULT_CLASSES`]), the mount
//!   family when asked ([`MOUNT_CLASS`]), and a domain's additions.
//! - [`Policy::program`]: the BPF program; the default ones are compiled
//!   once per process and cached.
//! - [`placement`]: where in the container setup the filter is installed.
//!
//! docs/seccomp.md lists what is blocked and why.

mod arch;
mod bpf;
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) mod interp;
mod policy;
#[cfg(test)]
mod tests;

pub use crate::domain::syscalls::{name as syscall_name, number as syscall_number};
pub use bpf::{Action, SockFilter};
pub use policy::{Class, DEFAULT_CLASSES, MOUNT_CLASS, PERSONALITIES, Policy, compile};

/// Why a filter cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    #[error(
        "unknown syscall {} on {arch}; use the kernel's name, such as 'uname' or 'keyctl'",
        quoted(names)
    )]
    UnknownSyscalls {
        names: Vec<String>,
        arch: &'static str,
    },
    #[error("lxvirt has no seccomp filter for {0}; use <lxvirt:seccomp mode='off'/>")]
    UnsupportedArch(&'static str),
    #[error("the seccomp filter has {len} instructions, more than the kernel's {max}")]
    TooLarge { len: usize, max: usize },
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("'{n}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CAP_SYS_ADMIN`.
const CAP_SYS_ADMIN: u32 = 21;

/// When in the container setup the filter goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Last, right before execve: nothing the setup does is filtered.
    BeforeExec,
    /// Before the switch to init's identity and capabilities: the kernel
    /// accepts a filter only from a task with `no_new_privs` or with
    /// `CAP_SYS_ADMIN` in its user namespace, and the switch takes the
    /// capability away. The setup's remaining calls (setresuid, capset,
    /// the SELinux exec label, chdir, execve) are in no default class.
    BeforeIdentity,
}

/// Where to install the filter for a process that ends up with
/// `no_new_privs` or not, as `uid` with the capabilities `kept` (bit N is
/// capability N).
/// The `AUDIT_ARCH_*` value of native syscalls on this architecture (0
/// where lxvirt has no filter for it).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn native_audit_arch() -> u32 {
    arch::AUDIT_ARCH.unwrap_or(0)
}

/// `__X32_SYSCALL_BIT` where the architecture has one.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn x32_syscall_bit() -> Option<u32> {
    arch::X32_SYSCALL_BIT
}

pub fn placement(no_new_privs: bool, uid: u32, kept: u64) -> Placement {
    if no_new_privs || (uid == 0 && kept & (1 << CAP_SYS_ADMIN) != 0) {
        Placement::BeforeExec
    } else {
        Placement::BeforeIdentity
    }
}

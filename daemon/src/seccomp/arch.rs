//! What differs between architectures: the audit architecture a filter
//! checks, the x32 syscall bit on x86_64, syscalls only some architectures
//! have (the names of x86_64's extra syscalls are in the syscall table,
//! `lxvirt_domain::syscalls`). One module per supported architecture; any
//! other architecture gets a stub whose `AUDIT_ARCH` is `None`, and
//! building a filter there fails with a clear error instead of a filter
//! that checks nothing.

/// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE` of `<linux/audit.h>`.
#[allow(dead_code)] // not on unsupported architectures
const AUDIT_64BIT_LE: u32 = 0x8000_0000 | 0x4000_0000;

#[cfg(target_arch = "x86_64")]
mod imp {
    pub const NAME: &str = "x86_64";
    /// `AUDIT_ARCH_X86_64`: `EM_X86_64` (62) of `<linux/elf-em.h>`.
    pub const AUDIT_ARCH: Option<u32> = Some(62 | super::AUDIT_64BIT_LE);
    /// `__X32_SYSCALL_BIT`: x32 syscalls come in through the x86_64 entry
    /// with this bit set in the number and the same `AUDIT_ARCH`, so a
    /// filter must look at it or x32 numbers slip past every rule.
    pub const X32_SYSCALL_BIT: Option<u32> = Some(0x4000_0000);

    /// Direct access to I/O ports.
    pub const IO_PORTS: &[u32] = &[libc::SYS_iopl as u32, libc::SYS_ioperm as u32];
}

#[cfg(target_arch = "aarch64")]
mod imp {
    pub const NAME: &str = "aarch64";
    /// `AUDIT_ARCH_AARCH64`: `EM_AARCH64` (183) of `<linux/elf-em.h>`.
    pub const AUDIT_ARCH: Option<u32> = Some(183 | super::AUDIT_64BIT_LE);
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    pub const IO_PORTS: &[u32] = &[];
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    pub const NAME: &str = std::env::consts::ARCH;
    pub const AUDIT_ARCH: Option<u32> = None;
    pub const X32_SYSCALL_BIT: Option<u32> = None;
    pub const IO_PORTS: &[u32] = &[];
}

pub use imp::*;
